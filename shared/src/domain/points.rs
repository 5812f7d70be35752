//! The ledger rules.
//!
//! An account holds a balance, the `seq` of its newest ledger entry, and its
//! **lots**: how many of its points expire at each moment. Grants add a lot;
//! spends and outgoing transfers take from the lots that expire soonest; a
//! transfer hands the taken lots, expiry dates included, to the receiver. Every
//! change appends one entry per account whose `seq` is the previous one plus one
//! and whose `balance_before` is the previous `balance_after`.
//!
//! Lot expiries are rounded up to the next UTC midnight, so an account holds at
//! most one lot per day (a year of daily purchases is ~366 lots) and its lots fit
//! in the account item.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime, Time};

use super::ids::{OperationId, UserId};
use super::timestamp;

/// Amounts are integers from 1 to this (SPEC section 3).
pub const MAX_AMOUNT: u64 = 1_000_000_000;
/// Longest `description` a write may carry, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 500;

/// How many points an operation moves: 1 to [`MAX_AMOUNT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct Amount(u64);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("amount must be from 1 to {MAX_AMOUNT}, got {0}")]
pub struct AmountOutOfRange(pub String);

impl Amount {
    pub fn new(value: u64) -> Result<Self, AmountOutOfRange> {
        if (1..=MAX_AMOUNT).contains(&value) {
            Ok(Self(value))
        } else {
            Err(AmountOutOfRange(value.to_string()))
        }
    }

    pub fn get(self) -> u64 {
        self.0
    }
}

impl TryFrom<u64> for Amount {
    type Error = AmountOutOfRange;
    fn try_from(value: u64) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<Amount> for u64 {
    fn from(amount: Amount) -> u64 {
        amount.0
    }
}

/// When a lot's points expire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Expiry {
    At(OffsetDateTime),
    Never,
}

impl Expiry {
    /// Points granted at `at` with this lifetime expire at the first UTC midnight
    /// at or after `at + lifetime`; without a lifetime they never do.
    pub fn after(at: OffsetDateTime, lifetime: Option<Duration>) -> Self {
        match lifetime {
            None => Expiry::Never,
            Some(lifetime) => {
                let due = (at + lifetime).to_offset(time::UtcOffset::UTC);
                let midnight = due.replace_time(Time::MIDNIGHT);
                Expiry::At(if midnight == due {
                    due
                } else {
                    midnight + Duration::days(1)
                })
            }
        }
    }

    /// The stored form: the fixed-width timestamp, or `never`.
    pub fn key(&self) -> String {
        match self {
            Expiry::At(at) => timestamp::format(*at),
            Expiry::Never => "never".to_owned(),
        }
    }

    pub fn from_key(key: &str) -> Option<Self> {
        if key == "never" {
            return Some(Expiry::Never);
        }
        OffsetDateTime::parse(key, &time::format_description::well_known::Rfc3339)
            .ok()
            .map(Expiry::At)
    }
}

/// The point types that ship with the service, from `shared/point-types.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PointTypes(BTreeMap<String, Option<Duration>>);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PointTypeConfig {
    expires_after_days: Option<u16>,
    #[allow(dead_code)]
    description: String,
}

impl PointTypes {
    pub fn shipped() -> Self {
        Self::from_json(include_str!("../../point-types.json"))
            .expect("shared/point-types.json is valid (a unit test checks it)")
    }

    pub fn from_json(json: &str) -> Result<Self, serde_json::Error> {
        let types: BTreeMap<String, PointTypeConfig> = serde_json::from_str(json)?;
        Ok(Self(
            types
                .into_iter()
                .map(|(name, t)| (name, t.expires_after_days.map(|d| Duration::days(d.into()))))
                .collect(),
        ))
    }

    /// The lifetime of a known point type (`Some(None)`: never expires).
    pub fn lifetime(&self, name: &str) -> Option<Option<Duration>> {
        self.0.get(name).copied()
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }
}

/// A points write, as the caller asked for it. Stored with the operation so a
/// retry with the same key can be compared to the original.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PointsRequest {
    Grant(Grant),
    Spend(Spend),
    Transfer(Transfer),
}

/// An admin gives `user_id` points of a type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    pub user_id: UserId,
    pub amount: Amount,
    pub point_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// The caller spends points.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spend {
    pub amount: Amount,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// The caller gives points to `to_user_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transfer {
    pub to_user_id: UserId,
    pub amount: Amount,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl PointsRequest {
    /// The account whose operations must apply in order with this one: the
    /// account the points come from (or, for a grant, go to).
    pub fn ordering_account<'a>(&'a self, caller: &'a UserId) -> &'a UserId {
        match self {
            PointsRequest::Grant(grant) => &grant.user_id,
            PointsRequest::Spend(_) | PointsRequest::Transfer(_) => caller,
        }
    }

    /// Every account this request changes.
    pub fn accounts<'a>(&'a self, caller: &'a UserId) -> Vec<&'a UserId> {
        match self {
            PointsRequest::Grant(grant) => vec![&grant.user_id],
            PointsRequest::Spend(_) => vec![caller],
            PointsRequest::Transfer(transfer) => vec![caller, &transfer.to_user_id],
        }
    }
}

/// One accepted points operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PointsOperation {
    pub operation_id: OperationId,
    pub caller: UserId,
    pub request: PointsRequest,
    pub accepted_at: OffsetDateTime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    Grant,
    Spend,
    TransferIn,
    TransferOut,
    Expire,
    Adjust,
}

/// One line of an account's ledger. Never edited, never deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub seq: u64,
    pub kind: EntryKind,
    pub amount: i64,
    pub balance_before: u64,
    pub balance_after: u64,
    pub operation_id: OperationId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub point_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counterparty: Option<UserId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub created_at: String,
}

/// An account's current state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Account {
    pub balance: u64,
    /// `seq` of the newest entry; 0 for an account without entries.
    pub seq: u64,
    pub lots: BTreeMap<Expiry, u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
pub enum Rejection {
    #[error("the account does not hold enough points")]
    InsufficientPoints,
    #[error("the point type is not one this service knows")]
    UnknownPointType,
}

impl Rejection {
    pub fn code(self) -> &'static str {
        match self {
            Rejection::InsufficientPoints => "insufficient_points",
            Rejection::UnknownPointType => "unknown_point_type",
        }
    }
}

/// How one account changes: its state before (`seq` 0 and no item when new),
/// its state after, and the entry that explains the difference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountChange {
    pub user: UserId,
    pub before: Account,
    pub after: Account,
    pub entry: Entry,
}

impl Account {
    fn add_lots(&mut self, lots: &[(Expiry, u64)]) {
        for (expiry, amount) in lots {
            *self.lots.entry(*expiry).or_default() += amount;
            self.balance += amount;
        }
    }

    /// Takes `amount` from the lots that expire soonest.
    fn take_soonest(&mut self, amount: u64) -> Result<Vec<(Expiry, u64)>, Rejection> {
        if self.balance < amount {
            return Err(Rejection::InsufficientPoints);
        }
        let mut left = amount;
        let mut taken = Vec::new();
        for (expiry, held) in self.lots.iter_mut() {
            if left == 0 {
                break;
            }
            let take = left.min(*held);
            *held -= take;
            left -= take;
            taken.push((*expiry, take));
        }
        self.lots.retain(|_, held| *held > 0);
        self.balance -= amount;
        // Lots always sum to the balance; if they ever did not, the debit is still exact.
        Ok(taken)
    }

    /// When the soonest lot expires, if any lot expires at all.
    pub fn next_expiry(&self) -> Option<OffsetDateTime> {
        self.expiring().next().map(|(at, _)| at)
    }

    /// The lots that expire, soonest first (points that never expire are left out).
    pub fn expiring(&self) -> impl Iterator<Item = (OffsetDateTime, u64)> + '_ {
        self.lots
            .iter()
            .filter_map(|(expiry, amount)| match expiry {
                Expiry::At(at) => Some((*at, *amount)),
                Expiry::Never => None,
            })
    }
}

struct EntryDraft<'a> {
    kind: EntryKind,
    amount: i64,
    point_type: Option<&'a str>,
    counterparty: Option<&'a UserId>,
    description: Option<&'a String>,
}

/// Which operation an entry belongs to, and when it was made.
struct Origin<'a> {
    operation_id: &'a OperationId,
    at: OffsetDateTime,
}

impl<'a> From<&'a PointsOperation> for Origin<'a> {
    fn from(op: &'a PointsOperation) -> Self {
        Origin {
            operation_id: &op.operation_id,
            at: op.accepted_at,
        }
    }
}

fn change(
    user: &UserId,
    before: &Account,
    after: Account,
    origin: Origin<'_>,
    draft: EntryDraft<'_>,
) -> AccountChange {
    let entry = Entry {
        seq: before.seq + 1,
        kind: draft.kind,
        amount: draft.amount,
        balance_before: before.balance,
        balance_after: after.balance,
        operation_id: origin.operation_id.clone(),
        point_type: draft.point_type.map(str::to_owned),
        counterparty: draft.counterparty.cloned(),
        description: draft.description.cloned(),
        created_at: timestamp::format(origin.at),
    };
    AccountChange {
        user: user.clone(),
        before: before.clone(),
        after: Account {
            seq: entry.seq,
            ..after
        },
        entry,
    }
}

/// Works out what an operation does to the accounts it touches (`accounts`
/// holds their current state; a missing one is empty). The first change is the
/// caller's side: its entry is the one the operation status shows.
pub fn plan(
    op: &PointsOperation,
    accounts: &HashMap<UserId, Account>,
    types: &PointTypes,
) -> Result<Vec<AccountChange>, Rejection> {
    let current = |user: &UserId| accounts.get(user).cloned().unwrap_or_default();
    match &op.request {
        PointsRequest::Grant(Grant {
            user_id,
            amount,
            point_type,
            description,
        }) => {
            let lifetime = types
                .lifetime(point_type)
                .ok_or(Rejection::UnknownPointType)?;
            let before = current(user_id);
            let mut after = before.clone();
            after.add_lots(&[(Expiry::after(op.accepted_at, lifetime), amount.get())]);
            Ok(vec![change(
                user_id,
                &before,
                after,
                op.into(),
                EntryDraft {
                    kind: EntryKind::Grant,
                    amount: amount.get() as i64,
                    point_type: Some(point_type),
                    counterparty: None,
                    description: description.as_ref(),
                },
            )])
        }
        PointsRequest::Spend(Spend {
            amount,
            description,
        }) => {
            let before = current(&op.caller);
            let mut after = before.clone();
            after.take_soonest(amount.get())?;
            Ok(vec![change(
                &op.caller,
                &before,
                after,
                op.into(),
                EntryDraft {
                    kind: EntryKind::Spend,
                    amount: -(amount.get() as i64),
                    point_type: None,
                    counterparty: None,
                    description: description.as_ref(),
                },
            )])
        }
        PointsRequest::Transfer(Transfer {
            to_user_id,
            amount,
            description,
        }) => {
            let sender_before = current(&op.caller);
            let mut sender_after = sender_before.clone();
            let lots = sender_after.take_soonest(amount.get())?;
            let receiver_before = current(to_user_id);
            let mut receiver_after = receiver_before.clone();
            receiver_after.add_lots(&lots);
            Ok(vec![
                change(
                    &op.caller,
                    &sender_before,
                    sender_after,
                    op.into(),
                    EntryDraft {
                        kind: EntryKind::TransferOut,
                        amount: -(amount.get() as i64),
                        point_type: None,
                        counterparty: Some(to_user_id),
                        description: description.as_ref(),
                    },
                ),
                change(
                    to_user_id,
                    &receiver_before,
                    receiver_after,
                    op.into(),
                    EntryDraft {
                        kind: EntryKind::TransferIn,
                        amount: amount.get() as i64,
                        point_type: None,
                        counterparty: Some(&op.caller),
                        description: description.as_ref(),
                    },
                ),
            ])
        }
    }
}

/// Expires every lot of the account that is due at `now`: one `expire` entry
/// taking them all, or `None` when nothing is due. The entry's operation id names
/// the latest expiry it covers, so the same lots always give the same id.
pub fn expire_due(user: &UserId, account: &Account, now: OffsetDateTime) -> Option<AccountChange> {
    let due: Vec<(OffsetDateTime, u64)> = account
        .expiring()
        .take_while(|(at, _)| *at <= now)
        .collect();
    let (latest, _) = *due.last()?;
    let total: u64 = due.iter().map(|(_, amount)| amount).sum();
    let mut after = account.clone();
    for (at, _) in &due {
        after.lots.remove(&Expiry::At(*at));
    }
    after.balance = account.balance.saturating_sub(total);
    let lots: Vec<String> = due
        .iter()
        .map(|(at, amount)| format!("{amount} from {}", timestamp::format(*at)))
        .collect();
    let operation_id = OperationId::parse(format!("expire:{}", timestamp::format(latest)))
        .expect("a fixed-format timestamp is a valid identifier");
    let origin = Origin {
        operation_id: &operation_id,
        at: now,
    };
    Some(change(
        user,
        account,
        after,
        origin,
        EntryDraft {
            kind: EntryKind::Expire,
            amount: -(total as i64),
            point_type: None,
            counterparty: None,
            description: Some(&format!("expired: {}", lots.join(", "))),
        },
    ))
}

/// Something wrong with an account's ledger, found by [`audit`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "finding", rename_all = "snake_case")]
pub enum Finding {
    /// Entry `seq` values skip or repeat.
    SeqGap { expected: u64, found: u64 },
    /// An entry's `balance_before` is not the previous entry's `balance_after`.
    BrokenChain {
        seq: u64,
        balance_before: u64,
        previous_balance_after: u64,
    },
    /// An entry's `amount` is not `balance_after - balance_before`.
    AmountMismatch {
        seq: u64,
        amount: i64,
        balance_before: u64,
        balance_after: u64,
    },
    /// The account's balance is not the sum of its entries.
    BalanceMismatch { balance: u64, sum_of_entries: i64 },
    /// The account's `seq` is not the newest entry's.
    SeqMismatch {
        account_seq: u64,
        newest_entry_seq: u64,
    },
    /// The account's lots do not add up to its balance.
    LotsMismatch { balance: u64, sum_of_lots: u64 },
}

/// Checks an account against its entries (oldest first): `seq` gapless from 1,
/// each `balance_before` the previous `balance_after`, each amount the difference,
/// and the balance, `seq` and lots agreeing with the newest entry.
pub fn audit(account: &Account, entries: &[Entry]) -> Vec<Finding> {
    let mut findings = Vec::new();
    let mut previous_after = 0u64;
    let mut sum = 0i64;
    for (i, entry) in entries.iter().enumerate() {
        let expected = i as u64 + 1;
        if entry.seq != expected {
            findings.push(Finding::SeqGap {
                expected,
                found: entry.seq,
            });
        }
        if entry.balance_before != previous_after {
            findings.push(Finding::BrokenChain {
                seq: entry.seq,
                balance_before: entry.balance_before,
                previous_balance_after: previous_after,
            });
        }
        if entry.balance_after as i64 - entry.balance_before as i64 != entry.amount {
            findings.push(Finding::AmountMismatch {
                seq: entry.seq,
                amount: entry.amount,
                balance_before: entry.balance_before,
                balance_after: entry.balance_after,
            });
        }
        previous_after = entry.balance_after;
        sum += entry.amount;
    }
    if sum != account.balance as i64 {
        findings.push(Finding::BalanceMismatch {
            balance: account.balance,
            sum_of_entries: sum,
        });
    }
    let newest_entry_seq = entries.last().map_or(0, |e| e.seq);
    if account.seq != newest_entry_seq {
        findings.push(Finding::SeqMismatch {
            account_seq: account.seq,
            newest_entry_seq,
        });
    }
    let sum_of_lots: u64 = account.lots.values().sum();
    if sum_of_lots != account.balance {
        findings.push(Finding::LotsMismatch {
            balance: account.balance,
            sum_of_lots,
        });
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn user(name: &str) -> UserId {
        UserId::parse(name).unwrap()
    }

    fn op(caller: &str, request: PointsRequest, at: OffsetDateTime) -> PointsOperation {
        PointsOperation {
            operation_id: OperationId::generate(),
            caller: user(caller),
            request,
            accepted_at: at,
        }
    }

    fn grant(to: &str, amount: u64, point_type: &str) -> PointsRequest {
        PointsRequest::Grant(Grant {
            user_id: user(to),
            amount: Amount::new(amount).unwrap(),
            point_type: point_type.to_owned(),
            description: None,
        })
    }

    fn spend(amount: u64) -> PointsRequest {
        PointsRequest::Spend(Spend {
            amount: Amount::new(amount).unwrap(),
            description: None,
        })
    }

    fn apply(
        accounts: &mut HashMap<UserId, Account>,
        op: &PointsOperation,
    ) -> Result<Vec<AccountChange>, Rejection> {
        let changes = plan(op, accounts, &PointTypes::shipped())?;
        for c in &changes {
            accounts.insert(c.user.clone(), c.after.clone());
        }
        Ok(changes)
    }

    #[test]
    fn the_shipped_point_types_parse_with_their_lifetimes() {
        let types = PointTypes::shipped();
        assert_eq!(types.lifetime("sign_in"), Some(Some(Duration::days(30))));
        assert_eq!(types.lifetime("purchase"), Some(Some(Duration::days(365))));
        assert_eq!(types.lifetime("bonus"), Some(None));
        assert_eq!(types.lifetime("gift"), None);
    }

    #[test]
    fn amounts_are_bounded() {
        assert!(Amount::new(0).is_err());
        assert!(Amount::new(1).is_ok());
        assert!(Amount::new(MAX_AMOUNT).is_ok());
        assert!(Amount::new(MAX_AMOUNT + 1).is_err());
    }

    #[test]
    fn expiry_rounds_up_to_the_next_utc_midnight() {
        let at = datetime!(2026-11-21 05:30 UTC);
        assert_eq!(
            Expiry::after(at, Some(Duration::days(30))),
            Expiry::At(datetime!(2026-12-22 00:00 UTC))
        );
        let midnight = datetime!(2026-11-21 00:00 UTC);
        assert_eq!(
            Expiry::after(midnight, Some(Duration::days(1))),
            Expiry::At(datetime!(2026-11-22 00:00 UTC))
        );
        assert_eq!(Expiry::after(at, None), Expiry::Never);
        assert!(Expiry::At(datetime!(9999-01-01 00:00 UTC)) < Expiry::Never);
        for expiry in [Expiry::Never, Expiry::At(datetime!(2026-12-22 00:00 UTC))] {
            assert_eq!(Expiry::from_key(&expiry.key()), Some(expiry));
        }
    }

    #[test]
    fn spends_take_the_soonest_expiring_lots_first() {
        let t = datetime!(2026-11-21 05:30 UTC);
        let mut accounts = HashMap::new();
        apply(&mut accounts, &op("admin", grant("alice", 50, "bonus"), t)).unwrap();
        apply(
            &mut accounts,
            &op("admin", grant("alice", 40, "purchase"), t),
        )
        .unwrap();
        apply(
            &mut accounts,
            &op("admin", grant("alice", 30, "sign_in"), t),
        )
        .unwrap();
        apply(&mut accounts, &op("alice", spend(45), t)).unwrap();
        let alice = &accounts[&user("alice")];
        assert_eq!(alice.balance, 75);
        let expiring: Vec<_> = alice.expiring().collect();
        assert_eq!(expiring, vec![(datetime!(2027-11-22 00:00 UTC), 25)]);
        assert_eq!(alice.lots[&Expiry::Never], 50);
    }

    #[test]
    fn entries_chain_seq_and_balances() {
        let t = datetime!(2026-11-21 05:30 UTC);
        let mut accounts = HashMap::new();
        let mut entries = Vec::new();
        for request in [grant("alice", 100, "sign_in"), spend(30), spend(70)] {
            let caller = if matches!(request, PointsRequest::Grant(_)) {
                "admin"
            } else {
                "alice"
            };
            entries.push(
                apply(&mut accounts, &op(caller, request, t))
                    .unwrap()
                    .remove(0)
                    .entry,
            );
        }
        for (i, pair) in entries.windows(2).enumerate() {
            assert_eq!(pair[1].seq, pair[0].seq + 1, "entry {i}");
            assert_eq!(pair[1].balance_before, pair[0].balance_after);
        }
        assert_eq!(entries.iter().map(|e| e.amount).sum::<i64>(), 0);
        assert_eq!(entries[0].seq, 1);
    }

    #[test]
    fn overspending_is_rejected_and_changes_nothing() {
        let t = datetime!(2026-11-21 05:30 UTC);
        let mut accounts = HashMap::new();
        apply(&mut accounts, &op("admin", grant("alice", 10, "bonus"), t)).unwrap();
        let before = accounts.clone();
        assert_eq!(
            apply(&mut accounts, &op("alice", spend(11), t)),
            Err(Rejection::InsufficientPoints)
        );
        assert_eq!(accounts, before);
    }

    #[test]
    fn transfers_move_lots_with_their_expiry_and_conserve_points() {
        let t = datetime!(2026-11-21 05:30 UTC);
        let mut accounts = HashMap::new();
        apply(
            &mut accounts,
            &op("admin", grant("alice", 30, "sign_in"), t),
        )
        .unwrap();
        apply(&mut accounts, &op("admin", grant("alice", 30, "bonus"), t)).unwrap();
        let transfer = PointsRequest::Transfer(Transfer {
            to_user_id: user("bob"),
            amount: Amount::new(40).unwrap(),
            description: Some("thanks".into()),
        });
        let changes = apply(&mut accounts, &op("alice", transfer, t)).unwrap();
        assert_eq!(changes[0].entry.kind, EntryKind::TransferOut);
        assert_eq!(changes[0].entry.amount, -40);
        assert_eq!(changes[1].entry.kind, EntryKind::TransferIn);
        assert_eq!(changes[1].entry.counterparty, Some(user("alice")));
        let bob = &accounts[&user("bob")];
        assert_eq!(bob.balance, 40);
        assert_eq!(bob.lots[&Expiry::after(t, Some(Duration::days(30)))], 30);
        assert_eq!(bob.lots[&Expiry::Never], 10);
        assert_eq!(accounts[&user("alice")].balance + bob.balance, 60);
    }

    #[test]
    fn due_lots_expire_as_one_entry_and_later_lots_stay() {
        let t = datetime!(2026-11-21 05:30 UTC);
        let mut accounts = HashMap::new();
        apply(
            &mut accounts,
            &op("admin", grant("alice", 30, "sign_in"), t),
        )
        .unwrap();
        apply(
            &mut accounts,
            &op(
                "admin",
                grant("alice", 40, "sign_in"),
                t + Duration::days(2),
            ),
        )
        .unwrap();
        apply(&mut accounts, &op("admin", grant("alice", 50, "bonus"), t)).unwrap();
        apply(&mut accounts, &op("alice", spend(10), t)).unwrap();
        let alice = accounts[&user("alice")].clone();
        assert_eq!(
            expire_due(&user("alice"), &alice, t + Duration::days(30)),
            None,
            "nothing due yet"
        );
        let change = expire_due(&user("alice"), &alice, t + Duration::days(31)).unwrap();
        assert_eq!(change.entry.kind, EntryKind::Expire);
        assert_eq!((change.entry.amount, change.entry.seq), (-20, 5));
        assert_eq!((change.after.balance, change.after.seq), (90, 5));
        assert_eq!(
            change.after.next_expiry(),
            Some(datetime!(2026-12-24 00:00 UTC))
        );
        assert_eq!(
            audit(&change.after, &[]).len(),
            2,
            "an empty ledger cannot explain a balance"
        );
        let all = expire_due(&user("alice"), &change.after, t + Duration::days(400)).unwrap();
        assert_eq!((all.after.balance, all.entry.amount), (50, -40));
        assert_eq!(all.after.next_expiry(), None);
    }

    #[test]
    fn the_audit_accepts_a_consistent_ledger_and_names_each_inconsistency() {
        let t = datetime!(2026-11-21 05:30 UTC);
        let mut accounts = HashMap::new();
        let mut entries = Vec::new();
        for (caller, request) in [
            ("admin", grant("alice", 100, "bonus")),
            ("alice", spend(30)),
            ("alice", spend(20)),
        ] {
            entries.push(
                apply(&mut accounts, &op(caller, request, t))
                    .unwrap()
                    .remove(0)
                    .entry,
            );
        }
        let alice = accounts[&user("alice")].clone();
        assert_eq!(audit(&alice, &entries), vec![]);

        let mut tampered = entries.clone();
        tampered[1].amount = -25;
        tampered[1].balance_after = 75;
        let findings = audit(&alice, &tampered);
        assert!(
            findings.contains(&Finding::BrokenChain {
                seq: 3,
                balance_before: 70,
                previous_balance_after: 75
            }),
            "{findings:?}"
        );
        assert!(
            findings.contains(&Finding::BalanceMismatch {
                balance: 50,
                sum_of_entries: 55
            }),
            "{findings:?}"
        );

        let edited = Account {
            balance: 500,
            ..alice.clone()
        };
        let findings = audit(&edited, &entries);
        assert!(findings.contains(&Finding::BalanceMismatch {
            balance: 500,
            sum_of_entries: 50
        }));
        assert!(findings.contains(&Finding::LotsMismatch {
            balance: 500,
            sum_of_lots: 50
        }));

        let findings = audit(&alice, &[entries[0].clone(), entries[2].clone()]);
        assert!(
            findings.contains(&Finding::SeqGap {
                expected: 2,
                found: 3
            }),
            "{findings:?}"
        );
    }

    #[test]
    fn an_unknown_point_type_is_rejected() {
        let mut accounts = HashMap::new();
        let t = datetime!(2026-11-21 05:30 UTC);
        assert_eq!(
            apply(&mut accounts, &op("admin", grant("alice", 10, "gift"), t)),
            Err(Rejection::UnknownPointType)
        );
    }
}
