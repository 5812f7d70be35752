//! Planning an operation against the accounts it touches: what time made due
//! settled first, then the rule of each kind (grant, spend, transfer, hold,
//! capture, release, refund, adjustment), each step written as an entry.

use std::collections::HashMap;

use time::OffsetDateTime;

use super::account::{Account, MAX_OPEN_HOLDS, OpenHold, split_latest, split_soonest};
use super::entry::{Entry, EntryKind};
use crate::domain::ids::{OperationId, Reference, UserId};
use crate::domain::points::operation::{OperationRecord, OperationStatus, Rejection};
use crate::domain::points::request::{
    Adjustment, Capture, Grant, Hold, Refund, Release, Spend, Transfer,
};
use crate::domain::points::{Expiry, Lots, PointTypes, PointsOperation, PointsRequest, lots_total};
use crate::domain::timestamp;

/// How one account changes: its state as stored (`seq` 0 and no item when new),
/// its state after, and every entry explaining the difference, oldest first.
/// Entries the passing of time calls for (holds and lots past their expiry)
/// come before the operation's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountChange {
    pub user: UserId,
    pub before: Account,
    pub after: Account,
    pub entries: Vec<Entry>,
    own: Option<usize>,
}

impl AccountChange {
    /// The entry of the operation itself (none for a change only time made).
    pub fn own_entry(&self) -> Option<&Entry> {
        self.own.and_then(|i| self.entries.get(i))
    }
}

/// What an entry is about, beside the numbers the change itself gives.
struct Draft {
    kind: EntryKind,
    operation_id: OperationId,
    at: OffsetDateTime,
    point_type: Option<String>,
    counterparty: Option<UserId>,
    hold_id: Option<OperationId>,
    refund_of: Option<OperationId>,
    reference: Option<Reference>,
    description: Option<String>,
    hold_expired: bool,
}

impl Draft {
    fn new(kind: EntryKind, operation_id: &OperationId, at: OffsetDateTime) -> Self {
        Draft {
            kind,
            operation_id: operation_id.clone(),
            at,
            point_type: None,
            counterparty: None,
            hold_id: None,
            refund_of: None,
            reference: None,
            description: None,
            hold_expired: false,
        }
    }

    fn of(kind: EntryKind, op: &PointsOperation) -> Self {
        Self::new(kind, &op.operation_id, op.accepted_at)
    }
}

/// One account's change being built: each step writes an entry.
struct Ledger {
    user: UserId,
    /// When the ledger takes the change: no entry is booked before it.
    now: OffsetDateTime,
    stored: Account,
    current: Account,
    entries: Vec<Entry>,
    own: Option<usize>,
}

impl Ledger {
    /// The account as an operation at `now` finds it: what time made due is settled first.
    fn open(user: &UserId, stored: Account, now: OffsetDateTime) -> Self {
        let mut ledger = Ledger {
            user: user.clone(),
            now,
            current: stored.clone(),
            stored,
            entries: Vec::new(),
            own: None,
        };
        ledger.settle_due(now);
        ledger
    }

    /// Releases the holds past their expiry, then expires the lots past theirs.
    fn settle_due(&mut self, now: OffsetDateTime) {
        for hold_id in self.current.holds_due(now) {
            let mut next = self.current.clone();
            let Some(hold) = next.holds.remove(&hold_id) else {
                continue;
            };
            next.return_lots(&hold.lots);
            self.write(
                next,
                Draft {
                    hold_id: Some(hold_id.clone()),
                    reference: hold.reference,
                    description: Some("hold expired".to_owned()),
                    hold_expired: true,
                    ..Draft::new(EntryKind::Release, &hold_id, now)
                },
            );
        }
        let mut next = self.current.clone();
        let due = next.remove_due(now);
        let Some((latest, _)) = due.last_key_value() else {
            return;
        };
        let lots: Vec<String> = due
            .iter()
            .map(|(at, amount)| format!("{amount} from {}", timestamp::format(*at)))
            .collect();
        // The same lots always give the same id.
        #[allow(
            clippy::expect_used,
            reason = "a fixed-format timestamp is a valid identifier"
        )]
        let operation_id = OperationId::parse(format!("expire:{}", timestamp::format(*latest)))
            .expect("a fixed-format timestamp is a valid identifier");
        self.write(
            next,
            Draft {
                description: Some(format!("expired: {}", lots.join(", "))),
                ..Draft::new(EntryKind::Expire, &operation_id, now)
            },
        );
    }

    /// Appends the entry that takes the account from its current state to `next`.
    fn write(&mut self, next: Account, draft: Draft) {
        let before = &self.current;
        // Booked when the ledger takes it, never before its own time or the
        // previous entry's: booked times never go back (see `Entry::booked_at`).
        let booked = [Some(self.now), Some(draft.at), before.booked_at]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or(draft.at);
        let difference = i128::from(next.balance) - i128::from(before.balance);
        let entry = Entry {
            seq: before.seq.saturating_add(1),
            kind: draft.kind,
            // Balances are at most MAX_BALANCE (i64::MAX): the difference fits.
            amount: i64::try_from(difference).unwrap_or(if difference < 0 {
                i64::MIN
            } else {
                i64::MAX
            }),
            balance_before: before.balance,
            balance_after: next.balance,
            held_before: before.held(),
            held_after: next.held(),
            operation_id: draft.operation_id,
            point_type: draft.point_type,
            counterparty: draft.counterparty,
            hold_id: draft.hold_id,
            refund_of: draft.refund_of,
            reference: draft.reference,
            description: draft.description,
            hold_expired: draft.hold_expired,
            created_at: timestamp::format(draft.at),
            booked_at: Some(timestamp::format(booked)),
        };
        self.current = Account {
            seq: entry.seq,
            booked_at: Some(booked),
            ..next
        };
        self.entries.push(entry);
    }

    /// [`write`](Self::write), for the operation's own entry.
    fn write_own(&mut self, next: Account, draft: Draft) {
        self.write(next, draft);
        self.own = Some(self.entries.len() - 1);
    }

    fn finish(self) -> AccountChange {
        AccountChange {
            user: self.user,
            before: self.stored,
            after: self.current,
            entries: self.entries,
            own: self.own,
        }
    }
}

/// What an operation finds when it is planned: the stored state of the accounts
/// it touches (a missing one is empty), and for a capture or release the hold's
/// record, for a refund the record of what it refunds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub accounts: HashMap<UserId, Account>,
    pub linked: Option<OperationRecord>,
}

/// A change to another operation's record, made in the same transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkedUpdate {
    /// Whose record (its caller) and which.
    pub user: UserId,
    pub operation_id: OperationId,
    /// A hold's: the operation that closed it.
    pub closed_by: Option<OperationId>,
    /// What refunds may still give back.
    pub refundable: Option<Lots>,
}

/// Everything an operation writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// One per account; the first is the one whose entry the record shows.
    pub changes: Vec<AccountChange>,
    /// What the operation's own record keeps for refunds (a spend's lots).
    pub refundable: Option<Lots>,
    pub linked: Option<LinkedUpdate>,
}

impl Plan {
    fn of(changes: Vec<AccountChange>) -> Self {
        Plan {
            changes,
            refundable: None,
            linked: None,
        }
    }

    /// The entry the operation's record shows.
    pub fn own_entry(&self) -> Option<&Entry> {
        self.changes.first().and_then(AccountChange::own_entry)
    }
}

/// Works out what an operation does at `now` to the accounts it touches. Holds
/// and points past their expiry are settled first, with their entries in the
/// same change.
pub fn plan(
    op: &PointsOperation,
    found: &Snapshot,
    types: &PointTypes,
    now: OffsetDateTime,
) -> Result<Plan, Rejection> {
    let open = |user: &UserId| {
        Ledger::open(
            user,
            found.accounts.get(user).cloned().unwrap_or_default(),
            now,
        )
    };
    match &op.request {
        PointsRequest::Grant(Grant {
            user_id,
            amount,
            point_type,
            description,
            reference,
        }) => {
            let lifetime = types
                .lifetime(point_type)
                .ok_or(Rejection::UnknownPointType)?;
            let mut ledger = open(user_id);
            let mut next = ledger.current.clone();
            let lot = (Expiry::after(op.accepted_at, lifetime), amount.get());
            next.add_lots(&Lots::from([lot]))?;
            ledger.write_own(
                next,
                Draft {
                    point_type: Some(point_type.clone()),
                    description: description.clone(),
                    reference: reference.clone(),
                    ..Draft::of(EntryKind::Grant, op)
                },
            );
            Ok(Plan::of(vec![ledger.finish()]))
        }
        PointsRequest::Spend(Spend {
            amount,
            description,
            reference,
        }) => {
            let mut ledger = open(&op.caller);
            let mut next = ledger.current.clone();
            let taken = next.take_available(amount.get())?;
            ledger.write_own(
                next,
                Draft {
                    description: description.clone(),
                    reference: reference.clone(),
                    ..Draft::of(EntryKind::Spend, op)
                },
            );
            Ok(Plan {
                refundable: Some(taken),
                ..Plan::of(vec![ledger.finish()])
            })
        }
        PointsRequest::Transfer(Transfer {
            to_user_id,
            amount,
            description,
            reference,
        }) => {
            if *to_user_id == op.caller {
                // Validation refuses it first; one account cannot be written twice.
                return Err(Rejection::InvalidOperation);
            }
            let mut sender = open(&op.caller);
            let mut sender_next = sender.current.clone();
            let lots = sender_next.take_available(amount.get())?;
            let mut receiver = open(to_user_id);
            let mut receiver_next = receiver.current.clone();
            receiver_next.add_lots(&lots)?;
            let draft = |kind, counterparty: &UserId| Draft {
                counterparty: Some(counterparty.clone()),
                description: description.clone(),
                reference: reference.clone(),
                ..Draft::of(kind, op)
            };
            sender.write_own(sender_next, draft(EntryKind::TransferOut, to_user_id));
            receiver.write_own(receiver_next, draft(EntryKind::TransferIn, &op.caller));
            Ok(Plan::of(vec![sender.finish(), receiver.finish()]))
        }
        PointsRequest::Hold(hold) => plan_hold(op, hold, open(&op.caller)),
        PointsRequest::Capture(capture) => {
            plan_capture(op, capture, open(&capture.user_id), found.linked.as_ref())
        }
        PointsRequest::Release(release) => {
            plan_release(op, release, open(&release.user_id), found.linked.as_ref())
        }
        PointsRequest::Refund(refund) => plan_refund(
            op,
            refund,
            open(&refund.user_id),
            found.linked.as_ref(),
            now,
        ),
        PointsRequest::Adjust(adjustment) => {
            plan_adjustment(op, adjustment, open(&adjustment.user_id), types)
        }
    }
}

fn plan_hold(op: &PointsOperation, hold: &Hold, mut ledger: Ledger) -> Result<Plan, Rejection> {
    if ledger.current.holds.len() >= MAX_OPEN_HOLDS {
        return Err(Rejection::TooManyHolds);
    }
    if ledger.current.holds.contains_key(&op.operation_id) {
        // The record's guard makes this unreachable; a hold is never placed twice.
        return Err(Rejection::InvalidOperation);
    }
    let mut next = ledger.current.clone();
    let lots = next.take_available(hold.amount.get())?;
    // Held points stay in the balance.
    next.balance += hold.amount.get();
    let expires_at = op
        .accepted_at
        .checked_add(hold.lifetime())
        .unwrap_or(op.accepted_at);
    next.holds.insert(
        op.operation_id.clone(),
        OpenHold {
            lots,
            expires_at,
            reference: hold.reference.clone(),
        },
    );
    ledger.write_own(
        next,
        Draft {
            hold_id: Some(op.operation_id.clone()),
            description: hold.description.clone(),
            reference: hold.reference.clone(),
            ..Draft::of(EntryKind::Hold, op)
        },
    );
    Ok(Plan::of(vec![ledger.finish()]))
}

/// Why a capture or release finds no open hold, from the hold's record.
fn closed_hold(record: Option<&OperationRecord>) -> Rejection {
    match record {
        Some(record) if record.is_applied_hold() => match record.closed_by {
            Some(_) => Rejection::HoldClosed,
            // An applied hold leaves its account only when closed or past its expiry.
            None => Rejection::HoldExpired,
        },
        _ => Rejection::HoldNotFound,
    }
}

/// The account (as time left it) without the open hold, and the hold; or why
/// there is no such open hold, from the hold's record.
fn take_hold(
    ledger: &Ledger,
    hold_id: &OperationId,
    hold_record: Option<&OperationRecord>,
) -> Result<(Account, OpenHold), Rejection> {
    let mut next = ledger.current.clone();
    let hold = next
        .holds
        .remove(hold_id)
        .ok_or_else(|| closed_hold(hold_record))?;
    Ok((next, hold))
}

/// The change to a hold's record that `op` closes it with.
fn closes(
    op: &PointsOperation,
    holder: &UserId,
    hold_id: &OperationId,
    refundable: Option<Lots>,
) -> LinkedUpdate {
    LinkedUpdate {
        user: holder.clone(),
        operation_id: hold_id.clone(),
        closed_by: Some(op.operation_id.clone()),
        refundable,
    }
}

fn plan_capture(
    op: &PointsOperation,
    capture: &Capture,
    mut ledger: Ledger,
    hold_record: Option<&OperationRecord>,
) -> Result<Plan, Rejection> {
    let (mut next, mut hold) = take_hold(&ledger, &capture.hold_id, hold_record)?;
    let held = hold.amount();
    let amount = capture.amount.map_or(held, |amount| amount.get());
    if amount == 0 || amount > held {
        return Err(Rejection::CaptureExceedsHold);
    }
    let captured = split_soonest(&mut hold.lots, amount);
    next.return_lots(&hold.lots);
    // A hand-edited account may hold less than its holds say.
    next.balance = next.balance.saturating_sub(amount);
    ledger.write_own(
        next,
        Draft {
            hold_id: Some(capture.hold_id.clone()),
            description: capture.description.clone(),
            reference: capture.reference.clone().or(hold.reference),
            ..Draft::of(EntryKind::Capture, op)
        },
    );
    Ok(Plan {
        linked: Some(closes(
            op,
            &capture.user_id,
            &capture.hold_id,
            Some(captured),
        )),
        ..Plan::of(vec![ledger.finish()])
    })
}

fn plan_release(
    op: &PointsOperation,
    release: &Release,
    mut ledger: Ledger,
    hold_record: Option<&OperationRecord>,
) -> Result<Plan, Rejection> {
    let (mut next, hold) = take_hold(&ledger, &release.hold_id, hold_record)?;
    next.return_lots(&hold.lots);
    ledger.write_own(
        next,
        Draft {
            hold_id: Some(release.hold_id.clone()),
            description: release.description.clone(),
            reference: release.reference.clone().or(hold.reference),
            ..Draft::of(EntryKind::Release, op)
        },
    );
    Ok(Plan {
        linked: Some(closes(op, &release.user_id, &release.hold_id, None)),
        ..Plan::of(vec![ledger.finish()])
    })
}

fn plan_refund(
    op: &PointsOperation,
    refund: &Refund,
    mut ledger: Ledger,
    original: Option<&OperationRecord>,
    now: OffsetDateTime,
) -> Result<Plan, Rejection> {
    let original = original.ok_or(Rejection::OriginalNotFound)?;
    let refundable = match (&original.status, &original.refundable) {
        (OperationStatus::Applied, Some(lots)) => lots,
        _ => return Err(Rejection::NotRefundable),
    };
    let remaining = u64::try_from(lots_total(refundable)).unwrap_or(u64::MAX);
    let amount = refund.amount.map_or(remaining, |amount| amount.get());
    if amount == 0 || amount > remaining {
        return Err(Rejection::RefundExceedsOriginal);
    }
    let mut left = refundable.clone();
    let given = split_latest(&mut left, amount);
    let mut next = ledger.current.clone();
    next.add_lots(&given)?;
    ledger.write_own(
        next,
        Draft {
            refund_of: Some(refund.operation_id.clone()),
            description: refund.reason.clone(),
            reference: refund.reference.clone(),
            ..Draft::of(EntryKind::Refund, op)
        },
    );
    // Points given back with an expiry already past expire again at once.
    ledger.settle_due(now);
    Ok(Plan {
        linked: Some(LinkedUpdate {
            user: original.caller.clone(),
            operation_id: original.operation_id.clone(),
            closed_by: None,
            refundable: Some(left),
        }),
        ..Plan::of(vec![ledger.finish()])
    })
}

fn plan_adjustment(
    op: &PointsOperation,
    adjustment: &Adjustment,
    mut ledger: Ledger,
    types: &PointTypes,
) -> Result<Plan, Rejection> {
    let mut next = ledger.current.clone();
    let amount = adjustment.amount.magnitude();
    if adjustment.amount.get() > 0 {
        let lifetime = match &adjustment.point_type {
            Some(point_type) => types
                .lifetime(point_type)
                .ok_or(Rejection::UnknownPointType)?,
            None => None,
        };
        let lot = (Expiry::after(op.accepted_at, lifetime), amount);
        next.add_lots(&Lots::from([lot]))?;
    } else {
        next.take_available(amount)?;
    }
    ledger.write_own(
        next,
        Draft {
            point_type: adjustment.point_type.clone(),
            description: adjustment.reason.clone(),
            reference: adjustment.reference.clone(),
            ..Draft::of(EntryKind::Adjust, op)
        },
    );
    Ok(Plan::of(vec![ledger.finish()]))
}

/// What time alone makes due on an account at `now` (holds to release, lots to
/// expire), as one change the expiry run commits; `None` when nothing is due.
/// Each entry's operation id is derived from what it settles, so a rerun that
/// finds the same state writes the same entries.
/// Closes an account for erasure at `now`: what time made due is settled,
/// then every remaining point leaves by one `erase` entry (`operation_id`),
/// so every number stays explained. `None` when there is nothing to write;
/// `Err` with the open holds' count while any is open (they are the
/// checkout's, and erasure waits for them).
pub fn close_for_erasure(
    user: &UserId,
    account: &Account,
    operation_id: &OperationId,
    now: OffsetDateTime,
) -> Result<Option<AccountChange>, usize> {
    let mut ledger = Ledger::open(user, account.clone(), now);
    if !ledger.current.holds.is_empty() {
        return Err(ledger.current.holds.len());
    }
    if ledger.current.balance > 0 {
        let next = Account {
            balance: 0,
            lots: Default::default(),
            ..ledger.current.clone()
        };
        ledger.write_own(next, Draft::new(EntryKind::Erase, operation_id, now));
    }
    let change = ledger.finish();
    Ok((!change.entries.is_empty()).then_some(change))
}

pub fn settle_due(user: &UserId, account: &Account, now: OffsetDateTime) -> Option<AccountChange> {
    let change = Ledger::open(user, account.clone(), now).finish();
    (!change.entries.is_empty()).then_some(change)
}
