//! The read side: a read storm on one post's count, and what a likers page costs.

use std::time::{Duration, Instant};

use futures::StreamExt as _;
use serde::Serialize;
use shared::config::SdkConfig;
use shared::domain::ids::{OperationId, PostId, UserId};
use shared::domain::likes::{LikeAction, LikeOperation};
use shared::message::Delivered;
use shared::usage::Counts;
use time::OffsetDateTime;

use crate::harness::{Call, Harness, Meter, http};

/// Count reads of one post from many viewers, each function instance
/// serving one request at a time (as Lambda does) with its own cache.
#[derive(Debug, Clone, Serialize)]
pub struct ReadStorm {
    pub instances: usize,
    pub cache_window_s: f64,
    pub seconds: f64,
    pub count_reads: u64,
    pub count_reads_per_s: f64,
    /// DynamoDB requests for counts (GetItem and BatchGetItem) in the storm.
    pub dynamodb_reads: u64,
    pub dynamodb_reads_per_count_read: f64,
    pub read_units_per_count_read: f64,
}

/// What one page of a post's likers costs.
#[derive(Debug, Clone, Serialize)]
pub struct LikersPageCost {
    pub likers: u64,
    pub partitions_used: usize,
    pub limit: u32,
    pub first_page: Counts,
    /// The mean over the next pages read.
    pub later_page: Counts,
    pub pages_read: u64,
}

/// Applies `likes` likes of `post` by distinct users as the worker does, in
/// batches of 1,000 (the template's batch size).
async fn seed_likers(h: &Harness, post: &str, likes: u64) {
    let start = OffsetDateTime::now_utc() - time::Duration::hours(1);
    let batches: Vec<Vec<u64>> = (0..likes)
        .collect::<Vec<_>>()
        .chunks(1000)
        .map(<[u64]>::to_vec)
        .collect();
    for batch in batches {
        let batch = batch
            .into_iter()
            .map(|i| Delivered {
                message_id: format!("seed-{i}"),
                span: tracing::Span::none(),
                operation: LikeOperation {
                    operation_id: OperationId::generate(),
                    user: UserId::parse(format!("user-{i:06}")).unwrap(),
                    post: PostId::parse(post).unwrap(),
                    action: LikeAction::Like,
                    accepted_at: start + time::Duration::milliseconds(i as i64),
                },
            })
            .collect();
        let applied = h.worker.likes.apply_batch(batch).await;
        assert!(applied.outcomes.iter().all(|(_, _, o)| o.is_some()));
    }
}

pub async fn read_storm(aws: &SdkConfig, scale: f64) -> ReadStorm {
    const INSTANCES: usize = 16;
    let h = Harness::new(aws).await;
    seed_likers(&h, "viral", 100).await;
    // Each instance is a like function of its own: its own count cache, the
    // template's window; all count on one meter.
    let instances: Vec<axum::Router> = (0..INSTANCES)
        .map(|_| like::router(like::LikeApi::new(h.metered.clone(), h.likes_queue.clone())))
        .collect();
    let window = shared::likes_service::COUNT_CACHE_WINDOW;
    let storm = Duration::from_secs_f64((10.0 * scale).max(3.0));
    let meter = Meter::start(&h);
    let started = Instant::now();
    let reads: Vec<u64> = futures::stream::iter(instances)
        .map(|instance| async move {
            let mut reads = 0u64;
            while started.elapsed() < storm {
                // Feeds read one post's count, and counts of a screenful.
                let (path, query) = if reads % 4 == 3 {
                    (
                        "/v1/likes/counts",
                        "post_ids=viral,other-1,other-2&likers=3",
                    )
                } else {
                    ("/v1/posts/viral/likes", "")
                };
                let (status, _) = http(
                    &instance,
                    Call {
                        method: "GET",
                        path,
                        query,
                        user: "viewer",
                        scope: "",
                        key: None,
                        body: None,
                    },
                )
                .await;
                assert_eq!(status, 200);
                reads += 1;
            }
            reads
        })
        .buffer_unordered(INSTANCES)
        .collect()
        .await;
    let measured = meter.finish(&h);
    let count_reads: u64 = reads.iter().sum();
    let dynamodb = measured.sum(|call| call.contains("like_count"));
    let seconds = measured.wall.as_secs_f64();
    ReadStorm {
        instances: INSTANCES,
        cache_window_s: window.as_secs_f64(),
        seconds,
        count_reads,
        count_reads_per_s: count_reads as f64 / seconds,
        dynamodb_reads: dynamodb.requests,
        dynamodb_reads_per_count_read: dynamodb.requests as f64 / count_reads.max(1) as f64,
        read_units_per_count_read: dynamodb.read_units / count_reads.max(1) as f64,
    }
}

pub async fn likers_page(aws: &SdkConfig, likers: u64) -> LikersPageCost {
    const LIMIT: u32 = 20;
    const LATER_PAGES: u64 = 5;
    let h = Harness::new(aws).await;
    seed_likers(&h, "popular", likers).await;
    let post = PostId::parse("popular").unwrap();
    let partitions_used = (0..likers)
        .map(|i| {
            shared::store::keys::like_partition(&UserId::parse(format!("user-{i:06}")).unwrap())
        })
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    let page_cost = async |cursor: Option<&str>| {
        let meter = Meter::start(&h);
        let page = h.metered.likers(&post, LIMIT, cursor).await.unwrap();
        let measured = meter.finish(&h);
        let newest = (likers - 1) as usize;
        assert_eq!(page.items.len(), LIMIT as usize);
        if cursor.is_none() {
            assert_eq!(page.items[0].user_id.as_str(), format!("user-{newest:06}"));
        }
        (
            page.next_cursor,
            measured.sum(|call| call.starts_with("dynamodb:")),
        )
    };
    let (mut cursor, first_page) = page_cost(None).await;
    let mut later = Counts::default();
    for _ in 0..LATER_PAGES {
        let (next, cost) = page_cost(cursor.as_deref()).await;
        later.requests += cost.requests;
        later.read_units += cost.read_units;
        cursor = next;
    }
    later.requests /= LATER_PAGES;
    later.read_units /= LATER_PAGES as f64;
    LikersPageCost {
        likers,
        partitions_used,
        limit: LIMIT,
        first_page,
        later_page: later,
        pages_read: 1 + LATER_PAGES,
    }
}
