//! The arithmetic of docs/capacity.md for one hot post, in one place so a test
//! holds the layout and the event source mapping to it.
//!
//! A like writes its register once (1 write unit: registers are under 1 KB);
//! a redelivered batch writes it again (a failed condition still bills). Each
//! batch that holds a post writes its counter once.

use crate::queue::mapping;
use crate::store::keys;

/// DynamoDB's limit on one partition key: 1,000 write units per second
/// (Developer Guide, "Burst and adaptive capacity"; docs/capacity.md).
pub const WRITES_PER_PARTITION_KEY: f64 = 1_000.0;
/// The burst the plan is sized for: new likes per second on one post.
pub const HOT_POST_LIKES_PER_SECOND: f64 = 50_000.0;
/// Deliveries per message in the worst case the plan allows: every batch twice.
pub const DELIVERIES_PER_LIKE: f64 = 2.0;

/// Register writes per second on one of a post's partition keys, if likes
/// spread evenly: the busiest key takes more (see the test).
pub fn register_writes_per_key(likes_per_second: f64) -> f64 {
    likes_per_second * DELIVERIES_PER_LIKE / f64::from(keys::LIKE_PARTITIONS)
}

/// An upper bound on counter writes per second on one post: one per batch
/// holding it. A batch closes full at [`mapping::BATCH_SIZE`] messages (at
/// most likes ÷ batch size a second hold this post's likes and are full), or
/// short when the batching window ends: each of at most
/// [`mapping::MAX_CONCURRENCY`] invocations closes at most one short batch
/// per window. Every batch may be delivered twice.
pub fn counter_writes_per_second(likes_per_second: f64) -> f64 {
    let full_batches = likes_per_second / mapping::BATCH_SIZE as f64;
    let short_batches =
        f64::from(mapping::MAX_CONCURRENCY) / mapping::BATCHING_WINDOW.as_secs_f64();
    (full_batches + short_batches) * DELIVERIES_PER_LIKE
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ids::UserId;

    /// 50,000 distinct user ids in the shapes identity providers issue.
    fn burst_of_users() -> Vec<UserId> {
        let mut state = 0x5eed_u64;
        let mut next = || {
            // splitmix64: deterministic, so the test always judges the same ids.
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        (0..HOT_POST_LIKES_PER_SECOND as usize)
            .map(|i| {
                let (a, b) = (next(), next());
                let id = match i % 4 {
                    0 => format!("auth0|{:024x}", u128::from(a) << 32 | u128::from(b >> 32)),
                    1 => format!(
                        "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
                        a >> 32,
                        a & 0xffff,
                        b & 0xfff,
                        (b >> 12) & 0xfff,
                        b >> 16
                    ),
                    2 => format!("google-oauth2|1{:020}", a % 10u64.pow(19)),
                    _ => format!("user-{i}"),
                };
                UserId::parse(id).unwrap()
            })
            .collect()
    }

    #[test]
    fn a_50000_likes_per_second_burst_on_one_post_stays_under_every_key_limit() {
        let mut per_key = vec![0u32; keys::LIKE_PARTITIONS as usize];
        for user in burst_of_users() {
            per_key[keys::like_partition(&user) as usize] += 1;
        }
        let busiest = f64::from(*per_key.iter().max().unwrap()) * DELIVERIES_PER_LIKE;
        let mean = register_writes_per_key(HOT_POST_LIKES_PER_SECOND);
        assert!((mean - 781.25).abs() < 1e-9, "{mean}");
        assert!(
            busiest < 0.95 * WRITES_PER_PARTITION_KEY,
            "the busiest register key takes {busiest} writes/s (mean {mean})"
        );
        let counter = counter_writes_per_second(HOT_POST_LIKES_PER_SECOND);
        assert_eq!(counter, 300.0);
        assert!(counter < WRITES_PER_PARTITION_KEY / 3.0);
    }
}
