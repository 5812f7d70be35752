//! The likes service: the one place a like or unlike is accepted and applied,
//! and likes are read. The like handler calls [`accept`](LikesService::accept)
//! and the reads, the worker [`apply_batch`](LikesService::apply_batch). The
//! rules are the domain's ([`crate::domain::likes`]); the writes are the
//! store's; this is the flow between them.
//!
//! A batch of like operations is applied in two steps:
//! 1. the latest operation per (user, post) in the batch moves that register with
//!    one conditional write ([`Store::apply_like`]), which says how the post's
//!    count changes; the batch's older operations on the same register are
//!    answered superseded without a write (they would be, after the latest);
//! 2. each post touched by the batch gets **one** counter write carrying the
//!    batch's net change for it, however many likes it took, and the register
//!    partitions the batch wrote, so a recount reads only those.
//!
//! A redelivered or out-of-order message fails its condition in step 1 and
//! changes nothing. Should the worker die between the steps, the redelivered
//! messages still mark their posts changed in step 2, and reconcile recounts them.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use tracing::Instrument as _;

use crate::clock::Clock;
use crate::domain::ids::{OperationId, PostId, UserId};
use crate::domain::likers::{self, RecentLikerChange};
use crate::domain::likes::{self, LikeAction, LikeOperation, LikeOutcome};
use crate::http::error_chain;
use crate::message::{Delivered, Envelope};
use crate::queue::{OperationQueue, QueueError};
use crate::store::likers::LikersPage;
use crate::store::likes::{CounterView, LikesPage, PageError};
use crate::store::{Store, StoreError, keys};

/// DynamoDB requests one batch keeps in flight at once.
pub const CONCURRENT_WRITES: usize = 16;

/// How long a count read is served from the function's memory when the
/// deployment does not say (template.yaml sets `TALLY_COUNT_CACHE_SECONDS`).
pub const COUNT_CACHE_WINDOW: Duration = Duration::from_secs(1);

/// Posts whose counts one function instance keeps in memory at most. Each
/// keeps its newest [`likers::MAX_RECENT_LIKERS`] likers only: ~2 KB with
/// 128-character user ids, so at most ~20 MB of the function's 256 MB.
const CACHED_POSTS: u64 = 10_000;

#[derive(Debug, Clone)]
pub struct LikesService {
    pub store: Store,
    /// When likes and unlikes are accepted.
    pub clock: Clock,
    /// Count reads served from memory (SPEC section 3, hot reads).
    pub count_cache: CountCache,
}

/// Counters read recently, kept for a window: a post read by every viewer
/// of a viral feed costs one DynamoDB read per window per function instance,
/// not one per viewer.
#[derive(Clone)]
pub struct CountCache {
    window: Duration,
    /// `None` when the window is zero: every read goes to DynamoDB.
    counters: Option<moka::sync::Cache<PostId, CachedCounter>>,
}

#[derive(Debug, Clone)]
struct CachedCounter {
    view: CounterView,
    read_at: Instant,
}

impl std::fmt::Debug for CountCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CountCache")
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

impl CountCache {
    pub fn new(window: Duration) -> Self {
        let counters = (!window.is_zero()).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(CACHED_POSTS)
                .time_to_live(window)
                .build()
        });
        Self { window, counters }
    }

    pub fn window(&self) -> Duration {
        self.window
    }

    /// A counter read less than a window ago. (The cache's own time-to-live
    /// counts from the insert, after the read's round trip: the window counts
    /// from before it.)
    fn get(&self, post: &PostId) -> Option<CachedCounter> {
        self.counters
            .as_ref()?
            .get(post)
            .filter(|cached| cached.read_at.elapsed() < self.window)
    }

    fn insert(&self, post: PostId, view: &CounterView, read_at: Instant) {
        if let Some(counters) = &self.counters {
            // A count read shows no more than the newest few.
            let view = CounterView {
                count: view.count,
                recent_likers: likers::RecentLikers::newest_of(
                    view.recent_likers.keys(),
                    likers::MAX_RECENT_LIKERS,
                ),
            };
            counters.insert(post, CachedCounter { view, read_at });
        }
    }
}

/// What applying one batch of likes did.
#[derive(Debug, Default)]
pub struct LikesApplied {
    /// Each message's outcome (by message id), `None` for the messages SQS
    /// must deliver again.
    pub outcomes: Vec<(String, LikeAction, Option<LikeOutcome>)>,
    /// Counter writes made: one per post the batch wrote a register of.
    pub counter_writes: usize,
}

/// What a register write does to its post's recent likers: a like that
/// flipped the register adds its user with the time it stored as `liked_at`,
/// an unlike that flipped it removes its user; nothing else changes them.
fn recent_liker_change(like: &LikeOperation, outcome: LikeOutcome) -> Option<RecentLikerChange> {
    match outcome {
        LikeOutcome::Applied {
            previously_liked: false,
            now_liked: true,
        } => Some((like.user.clone(), Some(likers::micros(like.accepted_at)))),
        LikeOutcome::Applied {
            previously_liked: true,
            now_liked: false,
        } => Some((like.user.clone(), None)),
        _ => None,
    }
}

/// A message and the span its lines go to.
type Message = (String, tracing::Span);

impl LikesService {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            clock: Clock::system(),
            count_cache: CountCache::new(COUNT_CACHE_WINDOW),
        }
    }

    /// Accepts the caller's like or unlike of `post`: puts the operation on
    /// `queue`, stamped with its accept time, and answers its id once SQS has
    /// stored it. The id is recorded on the current span (the HTTP request's).
    pub async fn accept(
        &self,
        queue: &OperationQueue,
        caller: UserId,
        post: PostId,
        action: LikeAction,
    ) -> Result<OperationId, QueueError> {
        let operation = LikeOperation {
            operation_id: OperationId::generate(),
            user: caller,
            post,
            action,
            accepted_at: self.clock.now(),
        };
        tracing::Span::current().record(
            "operation_id",
            tracing::field::display(&operation.operation_id),
        );
        queue.send(&Envelope::for_like(&operation)).await?;
        tracing::info!(post = %operation.post, action = ?operation.action, "accepted");
        Ok(operation.operation_id)
    }

    /// Applies a batch's like operations (see the module's two steps); each
    /// message's lines go to its span.
    pub async fn apply_batch(&self, likes: Vec<Delivered<LikeOperation>>) -> LikesApplied {
        let mut applied = LikesApplied::default();
        let likes = likes
            .into_iter()
            .map(|delivered| ((delivered.message_id, delivered.span), delivered.operation))
            .collect();
        let latest = self.skip_overtaken(likes, &mut applied);
        let moved = self.write_registers(latest, &mut applied).await;
        self.write_counters(moved, &mut applied).await;
        applied
    }

    /// Of several operations on one (user, post) in the batch, only the latest
    /// is written ([`likes::latest_per_register`]): the others are answered as
    /// superseded (or duplicates) without a write. A user toggling a like ten
    /// times in a second costs one register write.
    fn skip_overtaken(
        &self,
        likes: Vec<(Message, LikeOperation)>,
        applied: &mut LikesApplied,
    ) -> Vec<(Message, LikeOperation)> {
        let (latest, overtaken) = likes::latest_per_register(likes);
        for skipped in overtaken {
            let ((message_id, span), like) = (skipped.message, skipped.like);
            span.in_scope(|| {
                tracing::info!(post = %like.post, duplicate = skipped.duplicate, "like operation overtaken in its batch");
            });
            let outcome = if skipped.duplicate {
                LikeOutcome::AlreadyApplied
            } else {
                LikeOutcome::Superseded
            };
            applied
                .outcomes
                .push((message_id, like.action, Some(outcome)));
        }
        latest
    }

    /// Step 1: one conditional write per register, at most [`CONCURRENT_WRITES`]
    /// at once. A message whose write failed is answered `None` here.
    async fn write_registers(
        &self,
        likes: Vec<(Message, LikeOperation)>,
        applied: &mut LikesApplied,
    ) -> Vec<(Message, LikeOperation, LikeOutcome)> {
        let written: Vec<_> = futures::stream::iter(likes)
            .map(|((message_id, span), like)| async move {
                let outcome = async {
                    let outcome = self.store.apply_like(&like).await;
                    match &outcome {
                        Ok(outcome) => {
                            tracing::info!(post = %like.post, ?outcome, "like operation");
                        }
                        Err(err) => {
                            tracing::warn!(error = %error_chain(err), "register write failed");
                        }
                    }
                    outcome
                }
                .instrument(span.clone())
                .await;
                ((message_id, span), like, outcome)
            })
            .buffer_unordered(CONCURRENT_WRITES)
            .collect()
            .await;
        let mut moved = Vec::with_capacity(written.len());
        for (message, like, outcome) in written {
            match outcome {
                Ok(outcome) => moved.push((message, like, outcome)),
                Err(_) => applied.outcomes.push((message.0, like.action, None)),
            }
        }
        moved
    }

    /// Step 2: one counter write per post with the batch's net change for it
    /// ([`likes::net_change_per_post`]) and the register partitions written.
    /// Should it fail, the registers moved but the count did not: its messages
    /// are answered `None`, and their redelivery marks the post changed for
    /// reconcile to recount.
    async fn write_counters(
        &self,
        moved: Vec<(Message, LikeOperation, LikeOutcome)>,
        applied: &mut LikesApplied,
    ) {
        let changes = likes::net_change_per_post(moved);
        applied.counter_writes = changes.len();
        let writes: Vec<_> = futures::stream::iter(changes)
            .map(|(post, change)| async move {
                let partitions: BTreeSet<u32> = change
                    .written
                    .iter()
                    .map(|(_, like, _)| keys::like_partition(&like.user))
                    .collect();
                let likers: Vec<RecentLikerChange> = change
                    .written
                    .iter()
                    .filter_map(|(_, like, outcome)| recent_liker_change(like, *outcome))
                    .collect();
                let result = self
                    .store
                    .add_to_like_count(&post, change.delta, &partitions, &likers)
                    .await;
                (post, change, result)
            })
            .buffer_unordered(CONCURRENT_WRITES)
            .collect()
            .await;
        for (post, change, result) in writes {
            for ((message_id, span), like, outcome) in change.written {
                let outcome = match &result {
                    Ok(()) => Some(outcome),
                    Err(err) => {
                        span.in_scope(|| {
                            tracing::warn!(post = %post, error = %error_chain(err), "counter write failed");
                        });
                        None
                    }
                };
                applied.outcomes.push((message_id, like.action, outcome));
            }
        }
    }

    /// The count and recent likers of one post (eventually consistent, and
    /// up to one cache window old): [`counts`](Self::counts) of one post.
    pub async fn count(&self, post: &PostId) -> Result<CounterView, StoreError> {
        let mut counts = self.counts(std::slice::from_ref(post)).await?;
        Ok(counts.remove(post).unwrap_or_default())
    }

    /// The counts and recent likers of up to 100 posts; a post never liked
    /// counts 0. Posts not in the cache are read in one BatchGetItem round.
    pub async fn counts(
        &self,
        posts: &[PostId],
    ) -> Result<BTreeMap<PostId, CounterView>, StoreError> {
        let mut found = BTreeMap::new();
        let mut missing = Vec::new();
        for post in posts {
            match self.count_cache.get(post) {
                Some(cached) => {
                    found.insert(post.clone(), cached.view);
                }
                None => missing.push(post.clone()),
            }
        }
        if !missing.is_empty() {
            let read_at = Instant::now();
            for (post, view) in self.store.like_counts(&missing).await? {
                self.count_cache.insert(post.clone(), &view, read_at);
                found.insert(post, view);
            }
        }
        Ok(found)
    }

    /// A post's likers, newest first, `limit` at a time.
    pub async fn likers(
        &self,
        post: &PostId,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<LikersPage, PageError> {
        self.store.likers(post, limit, cursor).await
    }

    /// Whether the user likes each of up to 100 posts ("did I like these").
    pub async fn liked(
        &self,
        user: &UserId,
        posts: Vec<PostId>,
    ) -> Result<BTreeMap<PostId, bool>, StoreError> {
        let liked_now = self.store.liked_posts(user, &posts).await?;
        Ok(posts
            .into_iter()
            .map(|post| {
                let liked = liked_now.contains(&post);
                (post, liked)
            })
            .collect())
    }

    /// The user's current likes, newest first, `limit` at a time.
    pub async fn my_likes(
        &self,
        user: &UserId,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<LikesPage, PageError> {
        self.store.my_likes(user, limit, cursor).await
    }
}
