//! Reading the table's stream: what one record (an item's keys, its image
//! before and after) says happened, as a [`Change`] the events rules know.
//! An image that is not an item Tally writes is [`StoreError::Corrupt`].

use time::OffsetDateTime;

use super::keys::{self, PK, SK};
use super::points::from_item;
use super::{Item, StoreError, corrupt, get_bool, get_i64, get_s, required_s};
use crate::domain::events::{Change, ReconcileFinding, RegisterState};
use crate::domain::ids::{OperationId, PostId, UserId};
use crate::domain::points::{Entry, OperationRecord, OperationStatus};
use crate::domain::timestamp;

/// What a stream record says happened: `keys` names the item, `old` and `new`
/// are its images (empty when it did not exist before, or no longer does).
pub fn change_of(keys: &Item, old: &Item, new: &Item) -> Result<Change, StoreError> {
    let pk = required_s(keys, PK)?;
    let sk = required_s(keys, SK)?;
    // Removed (a tombstone's TTL), or an image of the key alone (the emulator
    // records an update that creates an item as two inserts, the first of
    // the key alone): nothing to tell.
    if new.keys().all(|name| name == PK || name == SK) {
        return Ok(Change::Nothing);
    }
    // A copy erasure made under a pseudonym: its events went out when it was
    // first written (the erasure itself is told by its `erase` entry).
    if get_bool(new, super::erasure::PSEUDONYMIZED) == Some(true) {
        return Ok(Change::Nothing);
    }
    if let Some((post, _)) = keys::parse_like_partition_pk(pk) {
        return register_change(post, old, new);
    }
    if sk == keys::COUNTER_SK
        && let Some(post) = pk.strip_prefix("POST#")
    {
        let post = PostId::parse(post).map_err(|_| corrupt(new, "counter of an invalid post"))?;
        let count = get_i64(new, "like_count").ok_or_else(|| corrupt(new, "missing like_count"))?;
        let revision = get_i64(new, "revision").unwrap_or(0);
        return Ok(Change::Counter {
            post,
            count_before: get_i64(old, "like_count").unwrap_or(0),
            count,
            revision: u64::try_from(revision).unwrap_or(0),
        });
    }
    if let Some(user) = pk.strip_prefix("ACCOUNT#") {
        if sk.starts_with("OPERATION#") {
            let was = match get_s(old, "status") {
                None => None,
                Some(status) => Some(
                    serde_json::from_value::<OperationStatus>(status.into())
                        .map_err(|_| corrupt(old, "unknown status"))?,
                ),
            };
            let now: OperationRecord = from_item(new.clone())?;
            return Ok(Change::Operation {
                was,
                now: Box::new(now),
            });
        }
        if sk.starts_with(keys::ENTRY_SK_PREFIX) && old.is_empty() {
            let user = UserId::parse(user).map_err(|_| corrupt(new, "invalid account"))?;
            let entry: Entry = from_item(new.clone())?;
            return Ok(Change::Entry {
                user,
                entry: Box::new(entry),
            });
        }
        return Ok(Change::Nothing);
    }
    if pk == keys::FINDINGS_PK && old.is_empty() {
        let finding: ReconcileFinding = from_item(new.clone())?;
        return Ok(Change::Finding(finding));
    }
    Ok(Change::Nothing)
}

fn register_change(post: PostId, old: &Item, new: &Item) -> Result<Change, StoreError> {
    let user = required_s(new, "user_id")?;
    let user = UserId::parse(user).map_err(|_| corrupt(new, "invalid user_id"))?;
    let operation_id = OperationId::parse(required_s(new, "operation_id")?)
        .map_err(|_| corrupt(new, "invalid operation_id"))?;
    let version = required_s(new, "like_version")?;
    // `{accept time in µs, 20 digits}#{operation id}` (domain::likes::LikeVersion).
    let at = version
        .split_once('#')
        .and_then(|(micros, _)| micros.parse::<i128>().ok())
        .and_then(|micros| OffsetDateTime::from_unix_timestamp_nanos(micros * 1000).ok())
        .ok_or_else(|| corrupt(new, "like_version is not {micros}#{operation}"))?;
    Ok(Change::Register {
        post,
        user,
        was_liked: get_bool(old, "liked").unwrap_or(false),
        now: RegisterState {
            liked: get_bool(new, "liked")
                .ok_or_else(|| corrupt(new, "liked is missing or not a boolean"))?,
            operation_id,
            at: timestamp::format(at),
        },
    })
}
