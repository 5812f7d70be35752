//! The events Tally publishes for the services around it (SPEC section 8),
//! worked out from what one change to one item of the table says happened.
//! `store::changes` reads a stream record into a [`Change`]; this module
//! decides what, if anything, it means to a subscriber. Pure rules: the same
//! change always gives the same events, with the same ids.
//!
//! - A like register gives `Like Added` / `Like Removed` only when its state
//!   flips: a duplicate or superseded operation fails the register's condition
//!   and writes nothing, so it never reaches here.
//! - A counter gives `Like Count Changed` when its count moves: the worker
//!   writes a post's counter once per batch, so at most one per post per
//!   batch; a count reconcile repairs gives one too.
//! - An operation record gives `Points Operation Settled` when it leaves
//!   `pending` (or is written settled at once); later edits of a settled record
//!   (a hold closed, a spend refunded) give nothing.
//! - A ledger entry gives `Points Expired` (kind `expire`), `Hold Expired`
//!   (a `release` the hold's expiry wrote, marked `hold_expired`) or
//!   `Points Erased` (kind `erase`: the account closed by erasure, SPEC
//!   section 9; subscribers erase what they keep on the user).
//! - A finding reconcile recorded gives `Ledger Mismatch Found` or
//!   `Malformed Item Found`.

use serde::Serialize;
use uuid::Uuid;

use super::ids::{OperationId, PostId, Reference, UserId};
use super::points::{Entry, EntryKind, OperationRecord, OperationStatus, WrittenEntry};

pub const LIKES_SOURCE: &str = "tally.likes";
pub const POINTS_SOURCE: &str = "tally.points";
pub const RECONCILE_SOURCE: &str = "tally.reconcile";

pub const LIKE_ADDED: &str = "Like Added";
pub const LIKE_REMOVED: &str = "Like Removed";
pub const LIKE_COUNT_CHANGED: &str = "Like Count Changed";
pub const POINTS_OPERATION_SETTLED: &str = "Points Operation Settled";
pub const POINTS_EXPIRED: &str = "Points Expired";
pub const HOLD_EXPIRED: &str = "Hold Expired";
pub const POINTS_ERASED: &str = "Points Erased";
pub const LEDGER_MISMATCH_FOUND: &str = "Ledger Mismatch Found";
pub const MALFORMED_ITEM_FOUND: &str = "Malformed Item Found";

/// Every (source, detail-type) Tally publishes.
pub const ALL: &[(&str, &str)] = &[
    (LIKES_SOURCE, LIKE_ADDED),
    (LIKES_SOURCE, LIKE_REMOVED),
    (LIKES_SOURCE, LIKE_COUNT_CHANGED),
    (POINTS_SOURCE, POINTS_OPERATION_SETTLED),
    (POINTS_SOURCE, POINTS_EXPIRED),
    (POINTS_SOURCE, HOLD_EXPIRED),
    (POINTS_SOURCE, POINTS_ERASED),
    (RECONCILE_SOURCE, LEDGER_MISMATCH_FOUND),
    (RECONCILE_SOURCE, MALFORMED_ITEM_FOUND),
];

/// The namespace of Tally's event ids (UUID version 5, RFC 9562): an id is
/// the hash of the event's type and the keys of what it reports.
const EVENT_ID_NAMESPACE: Uuid = Uuid::from_u128(0x7a11_e7e0_5eed_4e1d_9c2b_6f1e_a0b5_d3c1);

/// The deterministic id of an event: its type and what it reports, hashed.
pub fn event_id(detail_type: &str, parts: &[&str]) -> String {
    let name = std::iter::once(detail_type)
        .chain(parts.iter().copied())
        .collect::<Vec<_>>()
        .join("\n");
    Uuid::new_v5(&EVENT_ID_NAMESPACE, name.as_bytes()).to_string()
}

/// A like register as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterState {
    pub liked: bool,
    /// The operation the register was last moved by, and when it was accepted.
    pub operation_id: OperationId,
    pub at: String,
}

/// What one change to one item says happened, as `store::changes` reads it.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A like register written: liked before or not, and what it holds now.
    Register {
        post: PostId,
        user: UserId,
        was_liked: bool,
        now: RegisterState,
    },
    /// A post's like counter written.
    Counter {
        post: PostId,
        count_before: i64,
        count: i64,
        revision: u64,
    },
    /// An operation record written: its status before (none if new), and now.
    Operation {
        was: Option<OperationStatus>,
        now: Box<OperationRecord>,
    },
    /// A ledger entry added to `user`'s account.
    Entry { user: UserId, entry: Box<Entry> },
    /// A finding reconcile recorded.
    Finding(ReconcileFinding),
    /// Nothing a subscriber hears of: an item removed, reconcile's own state,
    /// an account's balance (its entries tell), a write that changed nothing.
    Nothing,
}

/// What reconcile found wrong and recorded, once per finding per run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ReconcileFinding {
    pub kind: FindingKind,
    /// The account whose ledger does not add up, or the key of the item.
    pub subject: String,
    pub problem: String,
    pub found_at: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    LedgerMismatch,
    MalformedItem,
}

/// One event, ready for the bus. `detail` carries `event_id`.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub source: &'static str,
    pub detail_type: &'static str,
    pub event_id: String,
    pub detail: serde_json::Value,
}

impl Event {
    fn new<D: Serialize>(source: &'static str, detail_type: &'static str, detail: &D) -> Self {
        let detail = serde_json::to_value(detail).unwrap_or_default();
        let event_id = detail
            .get("event_id")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .to_owned();
        Self {
            source,
            detail_type,
            event_id,
            detail,
        }
    }
}

#[derive(Serialize)]
struct LikeDetail<'a> {
    event_id: String,
    user_id: &'a UserId,
    post_id: &'a PostId,
    at: &'a str,
    operation_id: &'a OperationId,
}

#[derive(Serialize)]
struct CountDetail<'a> {
    event_id: String,
    post_id: &'a PostId,
    count: i64,
    /// Grows with every write of the counter: a consumer keeps the count of
    /// the highest revision it has seen.
    revision: u64,
}

#[derive(Serialize)]
struct SettledDetail<'a> {
    event_id: String,
    operation_id: &'a OperationId,
    caller: &'a UserId,
    /// Absent for a queued message too malformed to read as a request.
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    status: OperationStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reference: Option<&'a Reference>,
    accepted_at: &'a str,
    entries: &'a [WrittenEntry],
}

#[derive(Serialize)]
struct ExpiredDetail<'a> {
    event_id: String,
    user_id: &'a UserId,
    seq: u64,
    amount: i64,
    balance_after: u64,
    held_after: u64,
    operation_id: &'a OperationId,
    at: &'a str,
}

#[derive(Serialize)]
struct HoldExpiredDetail<'a> {
    event_id: String,
    user_id: &'a UserId,
    hold_id: &'a OperationId,
    seq: u64,
    /// The points the hold held, available again.
    released: u64,
    balance_after: u64,
    held_after: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    reference: Option<&'a Reference>,
    at: &'a str,
}

#[derive(Serialize)]
struct FindingDetail<'a> {
    event_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<&'a str>,
    problem: &'a str,
    found_at: &'a str,
}

/// The events one change means: none, or one.
pub fn events_of(change: &Change) -> Option<Event> {
    match change {
        Change::Register {
            post,
            user,
            was_liked,
            now,
        } => {
            let detail_type = match (was_liked, now.liked) {
                (false, true) => LIKE_ADDED,
                (true, false) => LIKE_REMOVED,
                _ => return None,
            };
            let detail = LikeDetail {
                event_id: event_id(
                    detail_type,
                    &[post.as_str(), user.as_str(), now.operation_id.as_str()],
                ),
                user_id: user,
                post_id: post,
                at: &now.at,
                operation_id: &now.operation_id,
            };
            Some(Event::new(LIKES_SOURCE, detail_type, &detail))
        }
        Change::Counter {
            post,
            count_before,
            count,
            revision,
        } => {
            if count_before == count {
                return None;
            }
            let detail = CountDetail {
                event_id: event_id(
                    LIKE_COUNT_CHANGED,
                    &[post.as_str(), &revision.to_string(), &count.to_string()],
                ),
                post_id: post,
                count: *count,
                revision: *revision,
            };
            Some(Event::new(LIKES_SOURCE, LIKE_COUNT_CHANGED, &detail))
        }
        Change::Operation { was, now } => {
            let settled = matches!(
                now.status,
                OperationStatus::Applied | OperationStatus::Rejected
            );
            if !settled
                || matches!(
                    was,
                    Some(OperationStatus::Applied | OperationStatus::Rejected)
                )
            {
                return None;
            }
            let detail = SettledDetail {
                event_id: event_id(
                    POINTS_OPERATION_SETTLED,
                    &[now.caller.as_str(), now.operation_id.as_str()],
                ),
                operation_id: &now.operation_id,
                caller: &now.caller,
                kind: now.request.as_ref().map(|request| request.kind()),
                status: now.status,
                reason: now.reason.map(|reason| reason.code()),
                detail: now.detail.as_deref(),
                // A capture or release without one carries its hold's (its entry's).
                reference: now
                    .request
                    .as_ref()
                    .and_then(|request| request.reference())
                    .or_else(|| now.entry.as_ref()?.reference.as_ref()),
                accepted_at: &now.accepted_at,
                entries: &now.entries,
            };
            Some(Event::new(POINTS_SOURCE, POINTS_OPERATION_SETTLED, &detail))
        }
        Change::Entry { user, entry } => entry_event(user, entry),
        Change::Finding(finding) => {
            let detail_type = match finding.kind {
                FindingKind::LedgerMismatch => LEDGER_MISMATCH_FOUND,
                FindingKind::MalformedItem => MALFORMED_ITEM_FOUND,
            };
            let subject = finding.subject.as_str();
            let detail = FindingDetail {
                event_id: event_id(detail_type, &[subject, &finding.found_at]),
                user_id: (finding.kind == FindingKind::LedgerMismatch).then_some(subject),
                key: (finding.kind == FindingKind::MalformedItem).then_some(subject),
                problem: &finding.problem,
                found_at: &finding.found_at,
            };
            Some(Event::new(RECONCILE_SOURCE, detail_type, &detail))
        }
        Change::Nothing => None,
    }
}

/// An entry that takes points from the balance on Tally's own account (an
/// expiry, an erasure): the entry is the whole story.
fn balance_entry_event(detail_type: &'static str, user: &UserId, entry: &Entry) -> Event {
    let detail = ExpiredDetail {
        event_id: event_id(detail_type, &[user.as_str(), &entry.seq.to_string()]),
        user_id: user,
        seq: entry.seq,
        amount: entry.amount,
        balance_after: entry.balance_after,
        held_after: entry.held_after,
        operation_id: &entry.operation_id,
        at: &entry.created_at,
    };
    Event::new(POINTS_SOURCE, detail_type, &detail)
}

fn entry_event(user: &UserId, entry: &Entry) -> Option<Event> {
    let seq = entry.seq.to_string();
    match entry.kind {
        EntryKind::Expire => Some(balance_entry_event(POINTS_EXPIRED, user, entry)),
        EntryKind::Erase => Some(balance_entry_event(POINTS_ERASED, user, entry)),
        // The release the hold's expiry wrote (a caller's release is in its
        // operation's settlement).
        EntryKind::Release if entry.hold_expired => {
            let detail = HoldExpiredDetail {
                event_id: event_id(HOLD_EXPIRED, &[user.as_str(), &seq]),
                user_id: user,
                hold_id: &entry.operation_id,
                seq: entry.seq,
                released: entry.held_before.saturating_sub(entry.held_after),
                balance_after: entry.balance_after,
                held_after: entry.held_after,
                reference: entry.reference.as_ref(),
                at: &entry.created_at,
            };
            Some(Event::new(POINTS_SOURCE, HOLD_EXPIRED, &detail))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn register(was_liked: bool, liked: bool, op: &str) -> Change {
        Change::Register {
            post: PostId::parse("p1").unwrap(),
            user: UserId::parse("alice").unwrap(),
            was_liked,
            now: RegisterState {
                liked,
                operation_id: OperationId::parse(op).unwrap(),
                at: "2026-12-04T09:00:00.000000Z".to_owned(),
            },
        }
    }

    #[test]
    fn only_a_flip_is_a_like_event() {
        assert_eq!(events_of(&register(false, false, "a")), None);
        assert_eq!(events_of(&register(true, true, "a")), None);
        let added = events_of(&register(false, true, "a")).unwrap();
        assert_eq!(
            (added.source, added.detail_type),
            (LIKES_SOURCE, LIKE_ADDED)
        );
        assert_eq!(added.detail["user_id"], "alice");
        let removed = events_of(&register(true, false, "b")).unwrap();
        assert_eq!(removed.detail_type, LIKE_REMOVED);
    }

    #[test]
    fn the_same_change_gives_the_same_id_and_another_change_another() {
        let once = events_of(&register(false, true, "a")).unwrap();
        let again = events_of(&register(false, true, "a")).unwrap();
        assert_eq!(once.event_id, again.event_id);
        assert_eq!(once.detail["event_id"], once.event_id.as_str());
        let relike = events_of(&register(false, true, "c")).unwrap();
        assert_ne!(once.event_id, relike.event_id);
        let removed = events_of(&register(true, false, "a")).unwrap();
        assert_ne!(once.event_id, removed.event_id);
    }

    #[test]
    fn a_counter_write_that_keeps_the_count_says_nothing() {
        let counter = |before, after| Change::Counter {
            post: PostId::parse("p1").unwrap(),
            count_before: before,
            count: after,
            revision: 7,
        };
        assert_eq!(events_of(&counter(3, 3)), None);
        let changed = events_of(&counter(3, 4)).unwrap();
        assert_eq!(changed.detail["count"], 4);
        assert_eq!(changed.detail["revision"], 7);
    }

    #[test]
    fn ids_are_uuids_that_do_not_depend_on_part_boundaries() {
        let id = event_id(LIKE_ADDED, &["ab", "c"]);
        assert!(Uuid::parse_str(&id).is_ok());
        assert_ne!(id, event_id(LIKE_ADDED, &["a", "bc"]));
    }
}
