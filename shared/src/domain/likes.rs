//! The like rules.
//!
//! A user's likes of one post form a register resolved by **last accepted wins**:
//! every accepted like/unlike carries a [`LikeVersion`] (accept time, then
//! operation id), and the stored state only ever moves to a higher version. A
//! post's count is the number of users whose register says "liked", so each state
//! change moves the count by [`count_delta`], and the deltas telescope to the exact
//! total whatever order the operations arrive in.

use std::collections::{BTreeMap, HashMap, HashSet};

use time::{Duration, OffsetDateTime};

use super::ids::{InvalidIdentifier, OperationId, PostId, UserId};
use super::timestamp;

/// How long an unlike's tombstone is kept: longer than any message can live in
/// SQS (14 days at most, dead-letter queue included) and than the oldest accept
/// time the worker takes (15 days), so no older like can arrive after the
/// tombstone is gone and resurrect the like.
pub const TOMBSTONE_RETENTION: Duration = Duration::days(30);

/// Most posts one read may name (`post_ids=` on counts and "did I like").
pub const MAX_POSTS_PER_READ: usize = 100;
/// Page size of "my likes" when the client does not choose one, and the most it may choose.
pub const DEFAULT_PAGE_SIZE: u32 = 20;
pub const MAX_PAGE_SIZE: u32 = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LikeAction {
    Like,
    Unlike,
}

impl LikeAction {
    pub fn leaves_liked(self) -> bool {
        self == LikeAction::Like
    }
}

/// One accepted like or unlike.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LikeOperation {
    pub operation_id: OperationId,
    pub user: UserId,
    pub post: PostId,
    pub action: LikeAction,
    pub accepted_at: OffsetDateTime,
}

impl LikeOperation {
    pub fn version(&self) -> LikeVersion {
        LikeVersion::new(self.accepted_at, &self.operation_id)
    }

    /// When an unlike's tombstone may go (epoch seconds, the table's TTL).
    /// Past the calendar's end it is kept for good rather than overflow.
    pub fn tombstone_expires_at(&self) -> i64 {
        self.accepted_at
            .checked_add(TOMBSTONE_RETENTION)
            .map_or(i64::MAX, OffsetDateTime::unix_timestamp)
    }
}

/// The total order of operations on one (user, post): accept time, ties broken by
/// operation id. Its text form sorts the same way, so a store can compare it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct LikeVersion(String);

impl LikeVersion {
    pub fn new(accepted_at: OffsetDateTime, operation_id: &OperationId) -> Self {
        // 20 digits of microseconds cover every date `time` can represent after 1970.
        Self(format!(
            "{:020}#{}",
            timestamp::unix_micros(accepted_at).max(0),
            operation_id
        ))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// How one operation changed the stored register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LikeOutcome {
    /// The register moved to this operation's version.
    Applied {
        previously_liked: bool,
        now_liked: bool,
    },
    /// The register already holds exactly this operation: a redelivery.
    AlreadyApplied,
    /// A later operation on the same (user, post) already won.
    Superseded,
}

impl LikeOutcome {
    /// How much this outcome moves the post's count.
    pub fn count_delta(self) -> i64 {
        match self {
            LikeOutcome::Applied {
                previously_liked,
                now_liked,
            } => count_delta(previously_liked, now_liked),
            LikeOutcome::AlreadyApplied | LikeOutcome::Superseded => 0,
        }
    }
}

pub fn count_delta(previously_liked: bool, now_liked: bool) -> i64 {
    i64::from(now_liked) - i64::from(previously_liked)
}

/// A like operation a batch need not write: the same (user, post) has a later
/// one in the batch.
#[derive(Debug)]
pub struct Overtaken<T> {
    pub message: T,
    pub like: LikeOperation,
    /// The very operation that is written (the message came twice), rather
    /// than an older one it supersedes.
    pub duplicate: bool,
}

/// Splits a batch's like operations into the latest per (user, post), the only
/// ones worth a register write, and the rest. Written after the latest, any
/// other would be superseded by its version condition anyway, so skipping it
/// changes no register and no count, and saves a write per toggle.
pub fn latest_per_register<T>(
    likes: Vec<(T, LikeOperation)>,
) -> (Vec<(T, LikeOperation)>, Vec<Overtaken<T>>) {
    let mut latest: HashMap<(UserId, PostId), (T, LikeOperation)> = HashMap::new();
    let mut overtaken = Vec::new();
    for (message, like) in likes {
        let key = (like.user.clone(), like.post.clone());
        let (message, like) = match latest.remove(&key) {
            None => (message, like),
            Some((kept_message, kept)) => {
                let (newer, older) = if like.version() > kept.version() {
                    ((message, like), (kept_message, kept))
                } else {
                    ((kept_message, kept), (message, like))
                };
                overtaken.push(Overtaken {
                    duplicate: older.1.operation_id == newer.1.operation_id,
                    message: older.0,
                    like: older.1,
                });
                newer
            }
        };
        latest.insert(key, (message, like));
    }
    (latest.into_values().collect(), overtaken)
}

/// One post's share of a batch: the net change its count takes, and the
/// operations written for it, each with what its register write did.
#[derive(Debug)]
pub struct PostChange<T> {
    pub delta: i64,
    pub written: Vec<(T, LikeOperation, LikeOutcome)>,
}

/// Groups a batch's register outcomes by post, each with the sum of their
/// [`LikeOutcome::count_delta`]s: the one change its counter takes for the
/// batch, however many likes it took. Every post written is listed, even at a
/// net change of 0: a redelivered batch still marks its posts for a recount.
pub fn net_change_per_post<T>(
    written: Vec<(T, LikeOperation, LikeOutcome)>,
) -> BTreeMap<PostId, PostChange<T>> {
    let mut posts: BTreeMap<PostId, PostChange<T>> = BTreeMap::new();
    for (message, like, outcome) in written {
        let change = posts
            .entry(like.post.clone())
            .or_insert_with(|| PostChange {
                delta: 0,
                written: Vec::new(),
            });
        change.delta += outcome.count_delta();
        change.written.push((message, like, outcome));
    }
    posts
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PostIdsError {
    #[error("post_ids must name at least one post")]
    Empty,
    #[error("post_ids may name at most {MAX_POSTS_PER_READ} posts, got {0}")]
    TooMany(usize),
    #[error("post id {id:?} {reason}")]
    Invalid {
        id: String,
        #[source]
        reason: InvalidIdentifier,
    },
}

/// Parses a comma-separated `post_ids` list: 1 to 100 valid ids, duplicates
/// folded, first-seen order kept.
pub fn parse_post_ids(list: &str) -> Result<Vec<PostId>, PostIdsError> {
    if list.is_empty() {
        return Err(PostIdsError::Empty);
    }
    let parts: Vec<&str> = list.split(',').collect();
    if parts.len() > MAX_POSTS_PER_READ {
        return Err(PostIdsError::TooMany(parts.len()));
    }
    let mut seen = HashSet::new();
    let mut ids = Vec::with_capacity(parts.len());
    for part in parts {
        let id = PostId::parse(part).map_err(|reason| PostIdsError::Invalid {
            id: part.to_owned(),
            reason,
        })?;
        if seen.insert(id.clone()) {
            ids.push(id);
        }
    }
    Ok(ids)
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("limit must be an integer from 1 to {MAX_PAGE_SIZE}, got {0:?}")]
pub struct InvalidPageSize(pub String);

pub fn parse_page_size(limit: Option<&str>) -> Result<u32, InvalidPageSize> {
    match limit {
        None => Ok(DEFAULT_PAGE_SIZE),
        Some(text) => match text.parse::<u32>() {
            Ok(n) if (1..=MAX_PAGE_SIZE).contains(&n) => Ok(n),
            _ => Err(InvalidPageSize(text.to_owned())),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn op(id: &str) -> OperationId {
        OperationId::parse(id).unwrap()
    }

    #[test]
    fn only_the_latest_operation_per_register_in_a_batch_is_written() {
        let t = datetime!(2026-11-21 05:30 UTC);
        let like = |id: &str, user: &str, action, seconds| LikeOperation {
            operation_id: op(id),
            user: UserId::parse(user).unwrap(),
            post: PostId::parse("p1").unwrap(),
            action,
            accepted_at: t + Duration::seconds(seconds),
        };
        // alice toggles five times, delivered out of order and one twice; bob likes once.
        let batch = vec![
            (1, like("a2", "alice", LikeAction::Unlike, 2)),
            (2, like("a5", "alice", LikeAction::Like, 5)),
            (3, like("a1", "alice", LikeAction::Like, 1)),
            (4, like("b1", "bob", LikeAction::Like, 1)),
            (5, like("a4", "alice", LikeAction::Unlike, 4)),
            (6, like("a5", "alice", LikeAction::Like, 5)),
            (7, like("a3", "alice", LikeAction::Like, 3)),
        ];
        let (latest, overtaken) = latest_per_register(batch);
        let mut written: Vec<(i32, &str)> = latest
            .iter()
            .map(|(m, l)| (*m, l.operation_id.as_str()))
            .collect();
        written.sort();
        assert_eq!(written, [(2, "a5"), (4, "b1")]);
        let mut skipped: Vec<(i32, bool)> =
            overtaken.iter().map(|o| (o.message, o.duplicate)).collect();
        skipped.sort();
        assert_eq!(
            skipped,
            [(1, false), (3, false), (5, false), (6, true), (7, false)],
            "message 6 is a5 again"
        );
    }

    #[test]
    fn a_batch_moves_each_post_by_its_net_change_and_a_redelivery_by_nothing() {
        let t = datetime!(2026-11-21 05:30 UTC);
        let op_on = |id: &str, user: &str, post: &str| LikeOperation {
            operation_id: op(id),
            user: UserId::parse(user).unwrap(),
            post: PostId::parse(post).unwrap(),
            action: LikeAction::Like,
            accepted_at: t,
        };
        let liked = LikeOutcome::Applied {
            previously_liked: false,
            now_liked: true,
        };
        let unliked = LikeOutcome::Applied {
            previously_liked: true,
            now_liked: false,
        };
        let batch = vec![
            (1, op_on("a", "alice", "p1"), liked),
            (2, op_on("b", "bob", "p1"), unliked),
            (3, op_on("c", "carol", "p1"), LikeOutcome::AlreadyApplied),
            (4, op_on("d", "dave", "p1"), liked),
            (5, op_on("e", "bob", "p2"), liked),
            (6, op_on("f", "erin", "p3"), LikeOutcome::AlreadyApplied),
            (7, op_on("g", "frank", "p3"), LikeOutcome::Superseded),
        ];
        let changes = net_change_per_post(batch);
        let summary: Vec<(&str, i64, Vec<i32>)> = changes
            .iter()
            .map(|(post, change)| {
                let members = change.written.iter().map(|(m, _, _)| *m).collect();
                (post.as_str(), change.delta, members)
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("p1", 1, vec![1, 2, 3, 4]),
                ("p2", 1, vec![5]),
                // Only redeliveries and superseded operations: no change, but listed.
                ("p3", 0, vec![6, 7]),
            ]
        );
    }

    #[test]
    fn a_later_accept_time_is_a_later_version_whatever_the_ids() {
        let earlier = LikeVersion::new(datetime!(2026-01-01 00:00:00.000001 UTC), &op("zzz"));
        let later = LikeVersion::new(datetime!(2026-01-01 00:00:00.000002 UTC), &op("aaa"));
        assert!(earlier < later);
        assert!(earlier.as_str() < later.as_str());
    }

    #[test]
    fn the_same_accept_time_is_ordered_by_operation_id() {
        let at = datetime!(2026-01-01 00:00:00 UTC);
        assert!(LikeVersion::new(at, &op("a")) < LikeVersion::new(at, &op("b")));
    }

    #[test]
    fn versions_sort_as_text_across_digit_boundaries() {
        let a = LikeVersion::new(datetime!(2001-09-09 01:46:39 UTC), &op("x"));
        let b = LikeVersion::new(datetime!(2001-09-09 01:46:40 UTC), &op("x"));
        assert!(a.as_str() < b.as_str());
    }

    #[test]
    fn only_state_changes_move_the_count() {
        assert_eq!(count_delta(false, true), 1);
        assert_eq!(count_delta(true, false), -1);
        assert_eq!(count_delta(true, true), 0);
        assert_eq!(count_delta(false, false), 0);
        assert_eq!(LikeOutcome::AlreadyApplied.count_delta(), 0);
        assert_eq!(LikeOutcome::Superseded.count_delta(), 0);
    }

    #[test]
    fn post_id_lists_are_bounded_validated_and_deduplicated() {
        assert_eq!(parse_post_ids(""), Err(PostIdsError::Empty));
        let ids = parse_post_ids("a,b,a").unwrap();
        assert_eq!(
            ids,
            vec![PostId::parse("a").unwrap(), PostId::parse("b").unwrap()]
        );
        let hundred: Vec<String> = (0..100).map(|i| format!("p{i}")).collect();
        assert_eq!(parse_post_ids(&hundred.join(",")).unwrap().len(), 100);
        let too_many: Vec<String> = (0..101).map(|i| format!("p{i}")).collect();
        assert_eq!(
            parse_post_ids(&too_many.join(",")),
            Err(PostIdsError::TooMany(101))
        );
        assert!(matches!(
            parse_post_ids("a,,b"),
            Err(PostIdsError::Invalid { .. })
        ));
    }

    #[test]
    fn page_sizes_default_to_twenty_and_stay_within_bounds() {
        assert_eq!(parse_page_size(None), Ok(20));
        assert_eq!(parse_page_size(Some("100")), Ok(100));
        assert!(parse_page_size(Some("0")).is_err());
        assert!(parse_page_size(Some("101")).is_err());
        assert!(parse_page_size(Some("ten")).is_err());
    }
}
