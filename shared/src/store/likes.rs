//! Like registers and like counters.

use std::collections::{BTreeSet, HashMap, HashSet};

use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure};
use serde::{Deserialize, Serialize};

use super::keys::{self, GSI1, GSI1_PK, GSI1_SK, PK, SK};
use super::{
    Item, Store, StoreError, corrupt, corrupt_because, decode_cursor, encode_cursor, get_bool,
    get_i64, get_s, item_bytes, key, n, partition_set, required_s, s, write_units,
};
use crate::domain::ids::{PostId, UserId};
use crate::domain::likers::{RecentLikerChange, RecentLikers};
use crate::domain::likes::{LikeAction, LikeOperation, LikeOutcome};
use crate::domain::timestamp;

pub use crate::domain::likes::TOMBSTONE_RETENTION;

/// The counter's map of recent likers: user id → when they liked (µs since the epoch).
pub(crate) const RECENT_LIKERS: &str = "recent_likers";

/// Only a strictly newer operation may move a register: this one condition makes
/// redelivery harmless and order of delivery irrelevant.
const NEWER_VERSION_ONLY: &str = "attribute_not_exists(like_version) OR like_version < :version";

const LIKE: &str = "SET liked = :liked, like_version = :version, operation_id = :op, \
     post_id = :post, user_id = :user, liked_at = if_not_exists(liked_at, :at), \
     gsi1pk = :gsi1pk, gsi1sk = if_not_exists(gsi1sk, :gsi1sk), \
     likers_sk = if_not_exists(likers_sk, :likers_sk) REMOVE expires_at";

const UNLIKE: &str = "SET liked = :liked, like_version = :version, operation_id = :op, \
     post_id = :post, user_id = :user, expires_at = :expires REMOVE liked_at, gsi1pk, gsi1sk, likers_sk";

/// One page of a user's likes, newest first.
pub type LikesPage = super::Page<LikedPost>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LikedPost {
    pub post_id: PostId,
    pub liked_at: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error("cursor is not one this service returned")]
    InvalidCursor,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where a page of "my likes" ends: the index sort key (`{liked_at}#{post}`) of
/// its last item. The rest of the key follows from it and the caller, so a
/// forged cursor can name no key but a well-formed one of the caller's own.
#[derive(Serialize, Deserialize)]
struct LikesCursor {
    t: String,
}

impl LikesCursor {
    /// The `ExclusiveStartKey` this cursor stands for, if it is well formed.
    fn start_key(&self, user: &UserId) -> Option<Item> {
        let (liked_at, post) = self.t.split_once('#')?;
        timestamp::parse(liked_at)?;
        let post = PostId::parse(post).ok()?;
        Some(Item::from([
            (GSI1_PK.to_owned(), s(keys::my_likes_gsi1pk(user))),
            (
                GSI1_SK.to_owned(),
                s(keys::my_likes_gsi1sk(liked_at, &post)),
            ),
            (PK.to_owned(), s(keys::like_register_pk(&post, user))),
            (SK.to_owned(), s(keys::like_register_sk(user))),
        ]))
    }
}

impl Store {
    /// Moves the (user, post) register to this operation if it is newer than what
    /// the register holds. One conditional UpdateItem; the old image tells whether
    /// the like state changed, the failed condition whether this was a redelivery.
    pub async fn apply_like(&self, op: &LikeOperation) -> Result<LikeOutcome, StoreError> {
        let version = op.version();
        let now_liked = op.action.leaves_liked();
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, s(keys::like_register_pk(&op.post, &op.user)))
            .key(SK, s(keys::like_register_sk(&op.user)))
            .condition_expression(NEWER_VERSION_ONLY)
            .expression_attribute_values(":liked", AttributeValue::Bool(now_liked))
            .expression_attribute_values(":version", s(version.as_str()))
            .expression_attribute_values(":op", s(op.operation_id.as_str()))
            .expression_attribute_values(":post", s(op.post.as_str()))
            .expression_attribute_values(":user", s(op.user.as_str()))
            .return_values(ReturnValue::AllOld)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        request = match op.action {
            LikeAction::Like => {
                let liked_at = timestamp::format(op.accepted_at);
                request
                    .update_expression(LIKE)
                    .expression_attribute_values(":gsi1pk", s(keys::my_likes_gsi1pk(&op.user)))
                    .expression_attribute_values(
                        ":gsi1sk",
                        s(keys::my_likes_gsi1sk(&liked_at, &op.post)),
                    )
                    .expression_attribute_values(
                        ":likers_sk",
                        s(keys::likers_sk(&liked_at, &op.user)),
                    )
                    .expression_attribute_values(":at", s(liked_at))
            }
            LikeAction::Unlike => {
                let expires = op.tombstone_expires_at();
                request
                    .update_expression(UNLIKE)
                    .expression_attribute_values(":expires", n(expires))
            }
        };
        match request.send().await {
            Ok(output) => {
                let previously_liked = output
                    .attributes
                    .as_ref()
                    .and_then(|old| get_bool(old, "liked"))
                    .unwrap_or(false);
                // The "my likes" and likers index entries appear or go only
                // when the state flips.
                let index_writes = if previously_liked != now_liked {
                    2.0
                } else {
                    0.0
                };
                self.usage
                    .record("dynamodb:UpdateItem apply_like", 1.0 + index_writes, 0.0);
                // A register liked before the likers index, liked again: the
                // write kept its `liked_at` but gave the index this like's
                // time. Put it back to the first like's, so a liker's time in
                // the list only ever moves later.
                if let Some(old) = output.attributes.as_ref()
                    && previously_liked
                    && now_liked
                    && !old.contains_key(keys::LIKERS_SK)
                    && let Some(liked_at) = get_s(old, "liked_at")
                {
                    self.index_likers(&op.post, &[(op.user.clone(), liked_at.to_owned())])
                        .await;
                }
                Ok(LikeOutcome::Applied {
                    previously_liked,
                    now_liked,
                })
            }
            Err(err) => match err.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(failed)) => {
                    self.usage
                        .record("dynamodb:UpdateItem apply_like", 1.0, 0.0);
                    let held = failed.item().and_then(|old| get_s(old, "like_version"));
                    Ok(if held == Some(version.as_str()) {
                        LikeOutcome::AlreadyApplied
                    } else {
                        LikeOutcome::Superseded
                    })
                }
                _ => Err(StoreError::from_sdk(err)),
            },
        }
    }

    /// Adds a batch's net change to a post's counter in one write, adds the
    /// register partitions the batch touched to the ones it lists, keeps its
    /// recent likers (the batch's new likers in, its unlikers out), and marks
    /// the post as changed so the next reconcile recounts it (those partitions).
    /// When the recent likers grow long, one more write trims them.
    pub async fn add_to_like_count(
        &self,
        post: &PostId,
        delta: i64,
        partitions: &BTreeSet<u32>,
        likers: &[RecentLikerChange],
    ) -> Result<(), StoreError> {
        const ATTEMPTS: u32 = 3;
        let carried = RecentLikers::carried_by_counter_write(likers);
        // DynamoDB cannot set a key of a map that does not exist: the first
        // batch with likers writes the map whole. Which form is right is
        // known only from the item, so the write says when it guessed wrong.
        let mut map_exists = true;
        for _ in 0..ATTEMPTS {
            match self
                .write_counter(post, delta, partitions, &carried, map_exists)
                .await?
            {
                Some(old) => {
                    let mut left = old.as_ref().map(recent_likers_of).unwrap_or_default();
                    left.apply(&carried);
                    let bytes = old.as_ref().map_or(0, item_bytes);
                    self.tidy_recent_likers(post, left.to_tidy(likers), bytes)
                        .await;
                    return Ok(());
                }
                None => map_exists = !map_exists,
            }
        }
        Err(StoreError::Contended { attempts: ATTEMPTS })
    }

    /// One counter write; `None` when the recent likers map was not as
    /// `map_exists` guessed. Answers the item as it was before.
    async fn write_counter(
        &self,
        post: &PostId,
        delta: i64,
        partitions: &BTreeSet<u32>,
        carried: &[RecentLikerChange],
        map_exists: bool,
    ) -> Result<Option<Option<Item>>, StoreError> {
        let mut sets = vec!["post_id = :post, gsi1pk = :dirty, gsi1sk = :post".to_owned()];
        let mut adds = vec!["like_count :delta, revision :one".to_owned()];
        let mut removes = Vec::new();
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, s(keys::counter_pk(post)))
            .key(SK, s(keys::COUNTER_SK))
            .expression_attribute_values(":post", s(post.as_str()))
            .expression_attribute_values(":dirty", s(keys::dirty_post_gsi1pk(post)))
            .expression_attribute_values(":delta", n(delta))
            .expression_attribute_values(":one", n(1));
        // A set is never empty in DynamoDB.
        if !partitions.is_empty() {
            adds.push("like_partitions :partitions".to_owned());
            request = request.expression_attribute_values(":partitions", partition_set(partitions));
        }
        if !carried.is_empty() {
            if map_exists {
                request =
                    request.condition_expression(format!("attribute_exists({RECENT_LIKERS})"));
                for (i, (user, liked_at)) in carried.iter().enumerate() {
                    let name = format!("#l{i}");
                    match liked_at {
                        Some(at) => {
                            sets.push(format!("{RECENT_LIKERS}.{name} = :l{i}"));
                            request = request.expression_attribute_values(format!(":l{i}"), n(at));
                        }
                        None => removes.push(format!("{RECENT_LIKERS}.{name}")),
                    }
                    request = request.expression_attribute_names(name, user.as_str());
                }
            } else {
                let map = carried
                    .iter()
                    .filter_map(|(user, at)| Some((user.as_str().to_owned(), n(at.as_ref()?))))
                    .collect();
                sets.push(format!("{RECENT_LIKERS} = :recent"));
                request = request
                    .condition_expression(format!("attribute_not_exists({RECENT_LIKERS})"))
                    .expression_attribute_values(":recent", AttributeValue::M(map));
            }
        }
        let mut update = format!("SET {} ADD {}", sets.join(", "), adds.join(", "));
        if !removes.is_empty() {
            update.push_str(&format!(" REMOVE {}", removes.join(", ")));
        }
        let result = request
            .update_expression(update)
            // The old item says whether the "changed" mark is new (moto leaves
            // unchanged attributes out of UPDATED_OLD, so ask for all of it).
            .return_values(ReturnValue::AllOld)
            .send()
            .await;
        let output = match result {
            Ok(output) => output,
            Err(err) => {
                return match err.as_service_error() {
                    Some(UpdateItemError::ConditionalCheckFailedException(_)) => {
                        self.usage
                            .record("dynamodb:UpdateItem add_to_like_count", 1.0, 0.0);
                        Ok(None)
                    }
                    _ => Err(StoreError::from_sdk(err)),
                };
            }
        };
        // The "changed posts" index entry is written only when the mark is new.
        let newly_marked = output
            .attributes
            .as_ref()
            .is_none_or(|old| !old.contains_key(keys::GSI1_PK));
        let index_write = if newly_marked { 1.0 } else { 0.0 };
        // Billed by the larger of the item before and after: a counter with
        // many partitions listed and long user ids among its recent likers
        // can pass 1 KB.
        let grown: usize = carried
            .iter()
            .map(|(user, at)| at.map_or(0, |_| user.as_str().len() + 12))
            .sum();
        let bytes = output.attributes.as_ref().map_or(0, item_bytes) + grown + 64;
        self.usage.record(
            "dynamodb:UpdateItem add_to_like_count",
            write_units(bytes) + index_write,
            0.0,
        );
        Ok(Some(output.attributes))
    }

    /// Removes entries from a post's recent likers, each only if it still
    /// holds the time it was read with (a concurrent batch may have renewed
    /// it). Best effort: the counter is already written, so a failure here is
    /// logged and left for the next batch or reconcile's rebuild.
    async fn tidy_recent_likers(
        &self,
        post: &PostId,
        entries: Vec<(UserId, i64)>,
        counter_bytes: usize,
    ) {
        if entries.is_empty() {
            return;
        }
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, s(keys::counter_pk(post)))
            .key(SK, s(keys::COUNTER_SK));
        let mut removes = Vec::with_capacity(entries.len());
        let mut unchanged = Vec::with_capacity(entries.len());
        for (i, (user, at)) in entries.iter().enumerate() {
            removes.push(format!("{RECENT_LIKERS}.#t{i}"));
            unchanged.push(format!("{RECENT_LIKERS}.#t{i} = :t{i}"));
            request = request
                .expression_attribute_names(format!("#t{i}"), user.as_str())
                .expression_attribute_values(format!(":t{i}"), n(at));
        }
        let result = request
            .update_expression(format!("REMOVE {}", removes.join(", ")))
            .condition_expression(unchanged.join(" AND "))
            .send()
            .await;
        self.usage.record(
            "dynamodb:UpdateItem tidy_recent_likers",
            write_units(counter_bytes),
            0.0,
        );
        match result {
            Ok(_) => {}
            Err(err) => match err.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(_)) => {
                    tracing::info!(post = %post, "recent likers changed meanwhile; tidy skipped");
                }
                _ => {
                    tracing::warn!(post = %post, error = %crate::http::error_chain(&StoreError::from_sdk(err)), "recent likers tidy failed")
                }
            },
        }
    }

    /// The like count of one post (eventually consistent, never below zero).
    pub async fn like_count(&self, post: &PostId) -> Result<u64, StoreError> {
        Ok(self.like_counter(post).await?.count)
    }

    /// One post's count and recent likers (eventually consistent).
    pub async fn like_counter(&self, post: &PostId) -> Result<CounterView, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(PK, s(keys::counter_pk(post)))
            .key(SK, s(keys::COUNTER_SK))
            .projection_expression(COUNTER_VIEW)
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        self.usage.record("dynamodb:GetItem like_count", 0.0, 0.5);
        Ok(output.item.as_ref().map(counter_view).unwrap_or_default())
    }

    /// Counts and recent likers of up to 100 posts in one BatchGetItem round;
    /// posts never liked count 0.
    pub async fn like_counts(
        &self,
        posts: &[PostId],
    ) -> Result<HashMap<PostId, CounterView>, StoreError> {
        let keys = posts
            .iter()
            .map(|post| key(keys::counter_pk(post), keys::COUNTER_SK.to_owned()))
            .collect();
        let mut counts: HashMap<PostId, CounterView> = posts
            .iter()
            .map(|p| (p.clone(), CounterView::default()))
            .collect();
        for item in self
            .batch_get(
                "dynamodb:BatchGetItem like_counts",
                keys,
                &format!("pk, {COUNTER_VIEW}"),
                &[],
            )
            .await?
        {
            // An item edited by hand may be anything: a key that names no
            // asked post is skipped.
            let Some(post) = post_of_key(&item).filter(|post| counts.contains_key(post)) else {
                continue;
            };
            counts.insert(post, counter_view(&item));
        }
        Ok(counts)
    }

    /// Which of up to 100 posts the user currently likes: one BatchGetItem round.
    pub async fn liked_posts(
        &self,
        user: &UserId,
        posts: &[PostId],
    ) -> Result<HashSet<PostId>, StoreError> {
        let keys = posts
            .iter()
            .map(|post| {
                key(
                    keys::like_register_pk(post, user),
                    keys::like_register_sk(user),
                )
            })
            .collect();
        let mut liked = HashSet::new();
        for item in self
            .batch_get("dynamodb:BatchGetItem liked_posts", keys, "pk, liked", &[])
            .await?
        {
            if get_bool(&item, "liked") == Some(true) {
                liked.extend(post_of_key(&item));
            }
        }
        Ok(liked)
    }

    /// The user's current likes, newest first, `limit` at a time.
    pub async fn my_likes(
        &self,
        user: &UserId,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<LikesPage, PageError> {
        let start = match cursor {
            None => None,
            Some(text) => Some(
                decode_cursor::<LikesCursor>(text)
                    .and_then(|cursor| cursor.start_key(user))
                    .ok_or(PageError::InvalidCursor)?,
            ),
        };
        // One extra item tells whether another page exists, so the last page says so.
        let query = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(GSI1)
            .key_condition_expression("gsi1pk = :pk")
            .expression_attribute_values(":pk", s(keys::my_likes_gsi1pk(user)))
            .scan_index_forward(false)
            .set_exclusive_start_key(start);
        // Keys-only index entries are about 150 bytes.
        let mut rows = self
            .query_up_to("dynamodb:Query my_likes", query, limit as usize + 1, 150)
            .await?;
        let more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        let next_cursor = match rows.last() {
            Some(last) if more => Some(encode_cursor(&LikesCursor {
                t: required_s(last, GSI1_SK)?.to_owned(),
            })),
            _ => None,
        };
        // The index holds keys only: `gsi1sk` is `{liked_at}#{post}`.
        let items = rows
            .iter()
            .map(|row| {
                let sort_key = required_s(row, GSI1_SK)?;
                let (liked_at, post) = sort_key
                    .split_once('#')
                    .ok_or_else(|| corrupt(row, "gsi1sk is not liked_at#post"))?;
                let post_id = PostId::parse(post)
                    .map_err(|e| corrupt_because(row, "gsi1sk names no valid post id", e))?;
                Ok(LikedPost {
                    post_id,
                    liked_at: liked_at.to_owned(),
                })
            })
            .collect::<Result<_, StoreError>>()?;
        Ok(LikesPage { items, next_cursor })
    }
}

/// What a count read shows of a post's counter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CounterView {
    pub count: u64,
    pub recent_likers: RecentLikers,
}

/// The counter's attributes a [`CounterView`] reads.
const COUNTER_VIEW: &str = "like_count, recent_likers";

/// A counter as a count read shows it. An item edited by hand may be anything:
/// a count that is not a number reads 0, a recent liker that is not a user id
/// with a time is left out (reconcile rebuilds the list).
fn counter_view(item: &Item) -> CounterView {
    CounterView {
        count: get_i64(item, "like_count").map_or(0, clamp_count),
        recent_likers: recent_likers_of(item),
    }
}

pub(super) fn recent_likers_of(item: &Item) -> RecentLikers {
    let Some(AttributeValue::M(map)) = item.get(RECENT_LIKERS) else {
        return RecentLikers::default();
    };
    RecentLikers::new(map.iter().filter_map(|(user, at)| {
        let at = at.as_n().ok()?.parse().ok()?;
        Some((UserId::parse(user).ok()?, at))
    }))
}

/// A counter can dip below zero only through drift that reconcile repairs; never show it.
fn clamp_count(count: i64) -> u64 {
    u64::try_from(count).unwrap_or(0)
}

/// The post an item's key names (`POST#{post}` or `POST#{post}#LIKES#{n}`): the
/// key is what was asked for, so it holds even where an attribute was edited.
fn post_of_key(item: &Item) -> Option<PostId> {
    let rest = get_s(item, PK)?.strip_prefix("POST#")?;
    PostId::parse(rest.split('#').next()?).ok()
}
