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
use super::timestamp::{self, AcceptedAtOutOfRange};

/// Amounts are integers from 1 to this (SPEC section 3).
pub const MAX_AMOUNT: u64 = 1_000_000_000;
/// Longest `description` a write may carry, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 500;
/// The largest balance an account may hold: every balance and signed entry
/// amount then fits an `i64`, so no sum over a ledger can overflow.
pub const MAX_BALANCE: u64 = i64::MAX as u64;

/// How many points an operation moves: 1 to [`MAX_AMOUNT`]. Read from any
/// JSON number that is a whole number (`30`, `30.0`, `3e1`: JSON Schema's
/// `integer`), written as an integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(into = "u64")]
pub struct Amount(u64);

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Whole;
        impl serde::de::Visitor<'_> for Whole {
            type Value = Amount;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                write!(f, "a whole number of points from 1 to {MAX_AMOUNT}")
            }

            fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<Amount, E> {
                Amount::new(value).map_err(E::custom)
            }

            fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<Amount, E> {
                let value = u64::try_from(value)
                    .map_err(|_| E::custom(AmountOutOfRange(value.to_string())))?;
                self.visit_u64(value)
            }

            fn visit_f64<E: serde::de::Error>(self, value: f64) -> Result<Amount, E> {
                if value.fract() != 0.0 {
                    return Err(E::custom(format!(
                        "amount must be a whole number of points, got {value}"
                    )));
                }
                if !(1.0..=MAX_AMOUNT as f64).contains(&value) {
                    return Err(E::custom(AmountOutOfRange(value.to_string())));
                }
                // A whole number within 1..=MAX_AMOUNT converts exactly.
                Ok(Amount(value as u64))
            }
        }
        deserializer.deserialize_any(Whole)
    }
}

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

    /// The amount as a signed entry amount (it is at most [`MAX_AMOUNT`]).
    pub fn signed(self) -> i64 {
        self.0 as i64
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
    /// A date past the calendar's end (year 9999) never comes: `Never`.
    pub fn after(at: OffsetDateTime, lifetime: Option<Duration>) -> Self {
        let due = lifetime.and_then(|lifetime| at.checked_add(lifetime));
        let Some(due) = due.map(|due| due.to_offset(time::UtcOffset::UTC)) else {
            return Expiry::Never;
        };
        let midnight = due.replace_time(Time::MIDNIGHT);
        if midnight == due {
            return Expiry::At(due);
        }
        midnight
            .checked_add(Duration::days(1))
            .map_or(Expiry::Never, Expiry::At)
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

/// A request that breaks a rule of SPEC section 3, wherever it entered (HTTP
/// answers 400 with [`code`](InvalidRequest::code); a queued one ends rejected
/// `invalid_operation` with this text as its detail).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidRequest {
    #[error("description may be at most {MAX_DESCRIPTION_CHARS} characters, got {0}")]
    DescriptionTooLong(usize),
    #[error("point_type {given:?} is not one of {known}")]
    UnknownPointType { given: String, known: String },
    #[error("to_user_id must name another user than the caller")]
    TransferToSelf,
    #[error(transparent)]
    AcceptedAt(#[from] AcceptedAtOutOfRange),
}

impl InvalidRequest {
    pub fn code(&self) -> &'static str {
        match self {
            InvalidRequest::DescriptionTooLong(_) => "description_too_long",
            InvalidRequest::UnknownPointType { .. } => "unknown_point_type",
            InvalidRequest::TransferToSelf => "transfer_to_self",
            InvalidRequest::AcceptedAt(_) => "invalid_accepted_at",
        }
    }
}

impl PointsRequest {
    /// The rules a request obeys beyond its field types (which deserializing
    /// already checked: identifiers, amounts), the same for HTTP and the queue.
    pub fn validate(&self, caller: &UserId, types: &PointTypes) -> Result<(), InvalidRequest> {
        let description = match self {
            PointsRequest::Grant(grant) => {
                if types.lifetime(&grant.point_type).is_none() {
                    return Err(InvalidRequest::UnknownPointType {
                        given: grant.point_type.clone(),
                        known: types.names().collect::<Vec<_>>().join(", "),
                    });
                }
                &grant.description
            }
            PointsRequest::Spend(spend) => &spend.description,
            PointsRequest::Transfer(transfer) => {
                if transfer.to_user_id == *caller {
                    return Err(InvalidRequest::TransferToSelf);
                }
                &transfer.description
            }
        };
        match description.as_deref().map(|text| text.chars().count()) {
            Some(chars) if chars > MAX_DESCRIPTION_CHARS => {
                Err(InvalidRequest::DescriptionTooLong(chars))
            }
            _ => Ok(()),
        }
    }

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

impl PointsOperation {
    /// Everything [`PointsRequest::validate`] checks, and an accept time that is
    /// sane at `now`: what the worker holds a queued operation to.
    pub fn validate(&self, types: &PointTypes, now: OffsetDateTime) -> Result<(), InvalidRequest> {
        timestamp::check_accepted_at(self.accepted_at, now, timestamp::MAX_POINTS_AGE)?;
        self.request.validate(&self.caller, types)
    }
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
    /// A queued message that breaks a rule HTTP would have answered 400 for.
    #[error("the operation breaks a rule of the API")]
    InvalidOperation,
    #[error("the account would hold more than the largest balance Tally keeps")]
    BalanceLimitExceeded,
}

impl Rejection {
    pub fn code(self) -> &'static str {
        match self {
            Rejection::InsufficientPoints => "insufficient_points",
            Rejection::UnknownPointType => "unknown_point_type",
            Rejection::InvalidOperation => "invalid_operation",
            Rejection::BalanceLimitExceeded => "balance_limit_exceeded",
        }
    }
}

/// How one account changes: its state before (`seq` 0 and no item when new),
/// its state after, and the entry that explains the difference. When some of
/// its points had expired without an `expire` entry yet, `expired` is that entry,
/// written just before `entry` in the same transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountChange {
    pub user: UserId,
    pub before: Account,
    pub after: Account,
    pub expired: Option<Entry>,
    pub entry: Entry,
}

impl AccountChange {
    /// Every entry the change writes, oldest first.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.expired.iter().chain(std::iter::once(&self.entry))
    }
}

impl Account {
    fn add_lots(&mut self, lots: &[(Expiry, u64)]) -> Result<(), Rejection> {
        for (expiry, amount) in lots {
            let balance = self
                .balance
                .checked_add(*amount)
                .filter(|balance| *balance <= MAX_BALANCE)
                .ok_or(Rejection::BalanceLimitExceeded)?;
            let lot = self.lots.entry(*expiry).or_default();
            *lot = lot
                .checked_add(*amount)
                .ok_or(Rejection::BalanceLimitExceeded)?;
            self.balance = balance;
        }
        Ok(())
    }

    /// The account as it stands at `now`: lots whose expiry has passed are gone,
    /// whether or not their `expire` entry was written yet (SPEC section 3).
    pub fn as_of(&self, now: OffsetDateTime) -> Account {
        let mut current = self.clone();
        current.remove_due(now);
        current
    }

    /// Removes the lots due at `now`; answers them, soonest first.
    fn remove_due(&mut self, now: OffsetDateTime) -> Vec<(OffsetDateTime, u64)> {
        let due: Vec<(OffsetDateTime, u64)> =
            self.expiring().take_while(|(at, _)| *at <= now).collect();
        for (at, amount) in &due {
            self.lots.remove(&Expiry::At(*at));
            self.balance = self.balance.saturating_sub(*amount);
        }
        due
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

/// An account as an operation finds it: as stored, and at the operation's time
/// (its due lots expired by `expired`, an entry the operation writes first).
struct Found {
    stored: Account,
    expired: Option<Entry>,
    current: Account,
}

impl Found {
    fn at(user: &UserId, stored: Account, now: OffsetDateTime) -> Self {
        match expire_due(user, &stored, now) {
            Some(expiry) => Found {
                stored,
                current: expiry.after,
                expired: Some(expiry.entry),
            },
            None => Found {
                current: stored.clone(),
                stored,
                expired: None,
            },
        }
    }

    fn change(
        self,
        user: &UserId,
        after: Account,
        origin: Origin<'_>,
        draft: EntryDraft<'_>,
    ) -> AccountChange {
        let mut change = change(user, &self.current, after, origin, draft);
        change.before = self.stored;
        change.expired = self.expired;
        change
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
        seq: before.seq.saturating_add(1),
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
        expired: None,
        entry,
    }
}

/// Works out what an operation does to the accounts it touches at `now`
/// (`accounts` holds their stored state; a missing one is empty). Points past
/// their expiry are gone first: each account with due lots gets its `expire`
/// entry in the same change. The first change is the caller's side: its entry
/// is the one the operation status shows.
pub fn plan(
    op: &PointsOperation,
    accounts: &HashMap<UserId, Account>,
    types: &PointTypes,
    now: OffsetDateTime,
) -> Result<Vec<AccountChange>, Rejection> {
    let found =
        |user: &UserId| Found::at(user, accounts.get(user).cloned().unwrap_or_default(), now);
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
            let account = found(user_id);
            let mut after = account.current.clone();
            after.add_lots(&[(Expiry::after(op.accepted_at, lifetime), amount.get())])?;
            Ok(vec![account.change(
                user_id,
                after,
                op.into(),
                EntryDraft {
                    kind: EntryKind::Grant,
                    amount: amount.signed(),
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
            let account = found(&op.caller);
            let mut after = account.current.clone();
            after.take_soonest(amount.get())?;
            Ok(vec![account.change(
                &op.caller,
                after,
                op.into(),
                EntryDraft {
                    kind: EntryKind::Spend,
                    amount: -amount.signed(),
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
            if *to_user_id == op.caller {
                // Validation refuses it first; one account cannot be written twice.
                return Err(Rejection::InvalidOperation);
            }
            let sender = found(&op.caller);
            let mut sender_after = sender.current.clone();
            let lots = sender_after.take_soonest(amount.get())?;
            let receiver = found(to_user_id);
            let mut receiver_after = receiver.current.clone();
            receiver_after.add_lots(&lots)?;
            Ok(vec![
                sender.change(
                    &op.caller,
                    sender_after,
                    op.into(),
                    EntryDraft {
                        kind: EntryKind::TransferOut,
                        amount: -amount.signed(),
                        point_type: None,
                        counterparty: Some(to_user_id),
                        description: description.as_ref(),
                    },
                ),
                receiver.change(
                    to_user_id,
                    receiver_after,
                    op.into(),
                    EntryDraft {
                        kind: EntryKind::TransferIn,
                        amount: amount.signed(),
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
    let mut after = account.clone();
    let due = after.remove_due(now);
    let (latest, _) = *due.last()?;
    // What actually left the balance (lots of a tampered account may not add up to it).
    let total = account.balance - after.balance;
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
            amount: -i64::try_from(total).unwrap_or(i64::MAX),
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
    BalanceMismatch { balance: u64, sum_of_entries: i128 },
    /// The account's `seq` is not the newest entry's.
    SeqMismatch {
        account_seq: u64,
        newest_entry_seq: u64,
    },
    /// The account's lots do not add up to its balance.
    LotsMismatch { balance: u64, sum_of_lots: u128 },
}

/// Checks an account against its entries (oldest first): `seq` gapless from 1,
/// each `balance_before` the previous `balance_after`, each amount the difference,
/// and the balance, `seq` and lots agreeing with the newest entry.
pub fn audit(account: &Account, entries: &[Entry]) -> Vec<Finding> {
    let mut findings = Vec::new();
    let mut previous_after = 0u64;
    // Stored numbers may be anything a hand edit made them: sums are taken wide.
    let mut sum = 0i128;
    for (i, entry) in entries.iter().enumerate() {
        let expected = i as u64 + 1; // a ledger never holds 2^64 entries
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
        if i128::from(entry.balance_after) - i128::from(entry.balance_before)
            != i128::from(entry.amount)
        {
            findings.push(Finding::AmountMismatch {
                seq: entry.seq,
                amount: entry.amount,
                balance_before: entry.balance_before,
                balance_after: entry.balance_after,
            });
        }
        previous_after = entry.balance_after;
        sum += i128::from(entry.amount);
    }
    if sum != i128::from(account.balance) {
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
    let sum_of_lots: u128 = account.lots.values().map(|&lot| u128::from(lot)).sum();
    if sum_of_lots != u128::from(account.balance) {
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
        let changes = plan(op, accounts, &PointTypes::shipped(), op.accepted_at)?;
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
    fn amounts_read_any_whole_json_number_and_write_integers() {
        let read = |json: &str| serde_json::from_str::<Amount>(json).map(Amount::get);
        assert_eq!(read("30").unwrap(), 30);
        assert_eq!(read("30.0").unwrap(), 30);
        assert_eq!(read("3e1").unwrap(), 30);
        assert_eq!(serde_json::to_string(&read("3e1").unwrap()).unwrap(), "30");
        for (json, needle) in [
            ("30.5", "whole number"),
            ("0", "from 1"),
            ("-3", "from 1"),
            ("1e10", "from 1"),
            ("\"30\"", "whole number"),
        ] {
            let err = read(json).unwrap_err().to_string();
            assert!(err.contains(needle), "{json}: {err}");
        }
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
