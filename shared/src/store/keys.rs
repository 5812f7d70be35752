//! The item layout of Tally's single table.
//!
//! | item | `pk` | `sk` | `gsi1pk` / `gsi1sk` |
//! |---|---|---|---|
//! | like register of (user, post) | `POST#{post}#LIKES#{n}` | `USER#{user}` | `USER#{user}#LIKES` / `{liked_at}#{post}` while liked; `likers`: `pk` / `likers_sk` = `{liked_at}#{user}` while liked |
//! | like counter of a post (count, revision, partitions in use, recent likers) | `POST#{post}` | `COUNT` | `DIRTY#POSTS#{m}` / `{post}` until reconciled |
//! | points account (balance, seq, lots) | `ACCOUNT#{user}` | `STATE` | `DIRTY#ACCOUNTS#{m}` / `{user}` until audited; `gsi2`: `EXPIRY#{m}` / `{soonest expiry}#{user}` |
//! | ledger entry | `ACCOUNT#{user}` | `ENTRY#{seq:020}` | |
//! | leaderboard line (points earned in a period) | `ACCOUNT#{user}` | `BOARD#{board}` | `BOARD#{board}` / `{u64::MAX - earned:020}#{user}` |
//! | points operation (status, request) | `ACCOUNT#{caller}` | `OPERATION#{operation_id}` | `PENDING#{m}` / `{accepted_at}#{caller}#{operation_id}` while pending |
//!
//! - A post's like registers are spread over [`LIKE_PARTITIONS`] partition keys
//!   (`n` from a stable hash of the user id), so a viral post's writes never
//!   queue up behind one partition key's 1,000 writes/s (docs/capacity.md). The
//!   key of a (user, post) register is still computable, so "did I like these"
//!   is one BatchGetItem. The counter lists the partitions its post's registers
//!   use (`like_partitions`), so recounting a post with few likers reads only
//!   theirs.
//! - `gsi1` is overloaded: "my likes, newest first" (sparse: only liked registers
//!   carry the attributes) and "posts changed since the last reconcile" (every
//!   counter or account write sets them; reconcile removes them). It projects
//!   keys only, so rewriting a counter or balance never writes to the index.
//! - `likers` (keys only, sparse) lists a post's likers newest first. It is
//!   keyed by the register's own partition key, so a viral post's index writes
//!   spread over the same [`LIKE_PARTITIONS`] keys as its registers; a page
//!   merges the partitions the counter lists.
//! - `gsi2` (keys only, sparse) finds accounts whose soonest lot expiry has
//!   passed; it is written only when an account's soonest expiry changes.
//! - `gsi1` also lists each leaderboard (`day#2026-12-04`, `week#2026-11-30`,
//!   `month#2026-12`, `all`), most earned first. Only reconcile writes its
//!   lines, one per account that earned in the period, so no points operation
//!   writes a key other operations share.
//! - `gsi1` also lists every operation still pending (the outbox): reconcile
//!   re-drives those pending too long. Settling the record removes the entry.
//! - Reconcile keeps its own state in `RECONCILE` / `STATE`, and each finding
//!   (a ledger mismatch, a malformed item) in `FINDINGS` / `{found_at}#{kind}#{subject}`
//!   for [`FINDING_RETENTION_DAYS`]: the stream publishes it as an event.
//!
//! User ids never contain `#` (SPEC section 3), so `#` separates key parts.

use crate::domain::ids::{OperationId, PostId, UserId};

pub const PK: &str = "pk";
pub const SK: &str = "sk";
pub const GSI1: &str = "gsi1";
pub const GSI1_PK: &str = "gsi1pk";
pub const GSI1_SK: &str = "gsi1sk";
pub const LIKERS: &str = "likers";
pub const LIKERS_SK: &str = "likers_sk";
pub const GSI2: &str = "gsi2";
pub const GSI2_PK: &str = "gsi2pk";
pub const GSI2_SK: &str = "gsi2sk";
/// TTL attribute (epoch seconds): DynamoDB deletes the item some time after it passes.
pub const EXPIRES_AT: &str = "expires_at";

/// Partition keys one post's like registers are spread over: enough for a post
/// taking 50,000 likes per second from distinct users, every batch delivered
/// twice, to stay under DynamoDB's 1,000 writes per second per partition key
/// (docs/capacity.md; held by `capacity::tests`). Part of the stored format.
pub const LIKE_PARTITIONS: u32 = 128;
/// Partition keys the "changed posts" index entries are spread over.
pub const DIRTY_PARTITIONS: u32 = 8;

fn stable_bucket(text: &str, buckets: u32) -> u32 {
    crc32fast::hash(text.as_bytes()) % buckets
}

pub fn like_register_pk(post: &PostId, user: &UserId) -> String {
    like_partition_pk(post, like_partition(user))
}

/// Which of a post's register partitions holds this user's register.
pub fn like_partition(user: &UserId) -> u32 {
    stable_bucket(user.as_str(), LIKE_PARTITIONS)
}

/// The post and partition a register's partition key names, if it is one.
pub fn parse_like_partition_pk(pk: &str) -> Option<(PostId, u32)> {
    let (post, partition) = pk.strip_prefix("POST#")?.split_once("#LIKES#")?;
    let partition = partition.parse().ok().filter(|n| *n < LIKE_PARTITIONS)?;
    Some((PostId::parse(post).ok()?, partition))
}

pub fn like_partition_pk(post: &PostId, partition: u32) -> String {
    format!("POST#{post}#LIKES#{partition}")
}

pub fn like_register_sk(user: &UserId) -> String {
    format!("USER#{user}")
}

pub fn my_likes_gsi1pk(user: &UserId) -> String {
    format!("USER#{user}#LIKES")
}

pub fn my_likes_gsi1sk(liked_at: &str, post: &PostId) -> String {
    format!("{liked_at}#{post}")
}

pub fn likers_sk(liked_at: &str, user: &UserId) -> String {
    format!("{liked_at}#{user}")
}

pub fn counter_pk(post: &PostId) -> String {
    format!("POST#{post}")
}

pub const COUNTER_SK: &str = "COUNT";

pub fn dirty_post_gsi1pk(post: &PostId) -> String {
    dirty_partition_gsi1pk(stable_bucket(post.as_str(), DIRTY_PARTITIONS))
}

pub fn dirty_partition_gsi1pk(partition: u32) -> String {
    format!("DIRTY#POSTS#{partition}")
}

pub fn account_pk(user: &UserId) -> String {
    format!("ACCOUNT#{user}")
}

pub const ACCOUNT_SK: &str = "STATE";

pub fn entry_sk(seq: u64) -> String {
    format!("ENTRY#{seq:020}")
}

pub const ENTRY_SK_PREFIX: &str = "ENTRY#";
pub const BOARD_SK_PREFIX: &str = "BOARD#";

/// An account's line on one leaderboard (`day#2026-12-04`, `all`, ...).
pub fn board_sk(board: &str) -> String {
    format!("{BOARD_SK_PREFIX}{board}")
}

/// The index partition that lists one leaderboard, most earned first.
pub fn board_gsi1pk(board: &str) -> String {
    format!("{BOARD_SK_PREFIX}{board}")
}

/// A leaderboard line's index sort key: points earned, inverted and fixed
/// width so the most earned sorts first, then the user (ties by user id).
pub fn board_gsi1sk(earned: u64, user: &UserId) -> String {
    format!("{}#{user}", board_rank_key(earned))
}

/// Every line with more points earned than `earned` sorts before this.
pub fn board_rank_key(earned: u64) -> String {
    format!("{:020}", u64::MAX - earned)
}

/// The points earned and the user of a leaderboard line's index sort key.
pub fn parse_board_gsi1sk(text: &str) -> Option<(u64, UserId)> {
    let (inverted, user) = text.split_once('#')?;
    let earned = u64::MAX.checked_sub(inverted.parse().ok()?)?;
    Some((earned, UserId::parse(user).ok()?))
}
pub const OPERATION_SK_PREFIX: &str = "OPERATION#";

pub fn operation_sk(operation_id: &OperationId) -> String {
    format!("OPERATION#{operation_id}")
}

pub fn expiry_gsi2pk(user: &UserId) -> String {
    expiry_partition_gsi2pk(stable_bucket(user.as_str(), DIRTY_PARTITIONS))
}

pub fn expiry_partition_gsi2pk(partition: u32) -> String {
    format!("EXPIRY#{partition}")
}

pub fn dirty_accounts_partition_gsi1pk(partition: u32) -> String {
    format!("DIRTY#ACCOUNTS#{partition}")
}

pub const RECONCILE_PK: &str = "RECONCILE";
pub const RECONCILE_SK: &str = "STATE";

pub const FINDINGS_PK: &str = "FINDINGS";
/// How long a finding's item is kept (the table's TTL removes it).
pub const FINDING_RETENTION_DAYS: i64 = 30;

/// A finding's sort key. The subject (a malformed item's key may be long) is
/// cut to 256 characters: a sort key is at most 1,024 bytes.
pub fn finding_sk(found_at: &str, kind: &str, subject: &str) -> String {
    let subject: String = subject.chars().take(256).collect();
    format!("{found_at}#{kind}#{subject}")
}

pub fn pending_gsi1pk(caller: &UserId) -> String {
    pending_partition_gsi1pk(stable_bucket(caller.as_str(), DIRTY_PARTITIONS))
}

pub fn pending_partition_gsi1pk(partition: u32) -> String {
    format!("PENDING#{partition}")
}

pub fn pending_gsi1sk(accepted_at: &str, caller: &UserId, operation_id: &OperationId) -> String {
    format!("{accepted_at}#{caller}#{operation_id}")
}

/// The caller and operation id a pending index entry names.
pub fn parse_pending_gsi1sk(sort_key: &str) -> Option<(UserId, OperationId)> {
    let mut parts = sort_key.splitn(3, '#');
    let (_accepted_at, caller, operation_id) = (parts.next()?, parts.next()?, parts.next()?);
    Some((
        UserId::parse(caller).ok()?,
        OperationId::parse(operation_id).ok()?,
    ))
}

pub fn dirty_account_gsi1pk(user: &UserId) -> String {
    format!(
        "DIRTY#ACCOUNTS#{}",
        stable_bucket(user.as_str(), DIRTY_PARTITIONS)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_users_register_key_is_stable_and_within_the_partitions() {
        let post = PostId::parse("p1").unwrap();
        let user = UserId::parse("alice").unwrap();
        let pk = like_register_pk(&post, &user);
        assert_eq!(pk, like_register_pk(&post, &user));
        assert!((0..LIKE_PARTITIONS).any(|n| like_partition_pk(&post, n) == pk));
    }

    #[test]
    fn leaderboard_lines_sort_most_earned_first_and_read_back() {
        let user = |name: &str| UserId::parse(name).unwrap();
        let mut keys = [
            board_gsi1sk(5, &user("b")),
            board_gsi1sk(40, &user("a")),
            board_gsi1sk(5, &user("a")),
            board_gsi1sk(u64::MAX, &user("z")),
            board_gsi1sk(0, &user("c")),
        ];
        keys.sort();
        let read: Vec<(u64, UserId)> = keys.iter().filter_map(|k| parse_board_gsi1sk(k)).collect();
        assert_eq!(
            read,
            [
                (u64::MAX, user("z")),
                (40, user("a")),
                (5, user("a")),
                (5, user("b")),
                (0, user("c"))
            ]
        );
        assert!(board_gsi1sk(6, &user("zz")) < board_rank_key(5));
        assert!(board_gsi1sk(5, &user("a")) > board_rank_key(5));
        assert_eq!(parse_board_gsi1sk("12#a#b"), None);
        assert_eq!(parse_board_gsi1sk("x#a"), None);
    }

    #[test]
    fn a_register_key_names_its_post_and_partition() {
        let post = PostId::parse("p1").unwrap();
        let user = UserId::parse("alice").unwrap();
        let parsed = parse_like_partition_pk(&like_register_pk(&post, &user));
        assert_eq!(parsed, Some((post, like_partition(&user))));
        for not_a_register in [
            "POST#p1",
            "POST#p1#LIKES#128",
            "POST#p1#LIKES#x",
            "ACCOUNT#a",
        ] {
            assert_eq!(parse_like_partition_pk(not_a_register), None);
        }
    }

    #[test]
    fn many_users_spread_over_every_partition() {
        let post = PostId::parse("p1").unwrap();
        let used: std::collections::HashSet<String> = (0..2000)
            .map(|i| like_register_pk(&post, &UserId::parse(format!("u{i}")).unwrap()))
            .collect();
        assert_eq!(used.len(), LIKE_PARTITIONS as usize);
    }
}
