//! Like registers and like counters.

use std::collections::{BTreeSet, HashMap, HashSet};

use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure};
use serde::{Deserialize, Serialize};

use super::keys::{self, GSI1, GSI1_PK, GSI1_SK, PK, SK};
use super::{
    Item, Store, StoreError, corrupt, corrupt_because, decode_cursor, encode_cursor, get_bool,
    get_i64, get_s, key, n, partition_set, required_s, s,
};
use crate::domain::ids::{PostId, UserId};
use crate::domain::likes::{LikeAction, LikeOperation, LikeOutcome};
use crate::domain::timestamp;

pub use crate::domain::likes::TOMBSTONE_RETENTION;

/// Only a strictly newer operation may move a register: this one condition makes
/// redelivery harmless and order of delivery irrelevant.
const NEWER_VERSION_ONLY: &str = "attribute_not_exists(like_version) OR like_version < :version";

const LIKE: &str = "SET liked = :liked, like_version = :version, operation_id = :op, \
     post_id = :post, user_id = :user, liked_at = if_not_exists(liked_at, :at), \
     gsi1pk = :gsi1pk, gsi1sk = if_not_exists(gsi1sk, :gsi1sk) REMOVE expires_at";

const UNLIKE: &str = "SET liked = :liked, like_version = :version, operation_id = :op, \
     post_id = :post, user_id = :user, expires_at = :expires REMOVE liked_at, gsi1pk, gsi1sk";

/// One page of a user's likes, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LikesPage {
    pub items: Vec<LikedPost>,
    /// Pass back to get the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LikedPost {
    pub post_id: PostId,
    pub liked_at: String,
}

#[derive(Debug, thiserror::Error)]
pub enum MyLikesError {
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
                // The "my likes" index entry appears or goes only when the state flips.
                let index_write = if previously_liked != now_liked {
                    1.0
                } else {
                    0.0
                };
                self.usage
                    .record("dynamodb:UpdateItem apply_like", 1.0 + index_write, 0.0);
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
    /// register partitions the batch touched to the ones it lists, and marks the
    /// post as changed so the next reconcile recounts it (those partitions).
    pub async fn add_to_like_count(
        &self,
        post: &PostId,
        delta: i64,
        partitions: &BTreeSet<u32>,
    ) -> Result<(), StoreError> {
        let mut update =
            "SET post_id = :post, gsi1pk = :dirty, gsi1sk = :post ADD like_count :delta, revision :one"
                .to_owned();
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
            update.push_str(", like_partitions :partitions");
            request = request.expression_attribute_values(":partitions", partition_set(partitions));
        }
        let output = request
            .update_expression(update)
            // The old item says whether the "changed" mark is new (moto leaves
            // unchanged attributes out of UPDATED_OLD, so ask for all of it).
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        // The "changed posts" index entry is written only when the mark is new.
        let newly_marked = output
            .attributes
            .as_ref()
            .is_none_or(|old| !old.contains_key(keys::GSI1_PK));
        let index_write = if newly_marked { 1.0 } else { 0.0 };
        self.usage.record(
            "dynamodb:UpdateItem add_to_like_count",
            1.0 + index_write,
            0.0,
        );
        Ok(())
    }

    /// The like count of one post (eventually consistent, never below zero).
    pub async fn like_count(&self, post: &PostId) -> Result<u64, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(PK, s(keys::counter_pk(post)))
            .key(SK, s(keys::COUNTER_SK))
            .projection_expression("like_count")
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        self.usage.record("dynamodb:GetItem like_count", 0.0, 0.5);
        Ok(output
            .item
            .as_ref()
            .and_then(|item| get_i64(item, "like_count"))
            .map_or(0, clamp_count))
    }

    /// Like counts of up to 100 posts in one BatchGetItem round; posts never liked count 0.
    pub async fn like_counts(&self, posts: &[PostId]) -> Result<HashMap<PostId, u64>, StoreError> {
        let keys = posts
            .iter()
            .map(|post| key(keys::counter_pk(post), keys::COUNTER_SK.to_owned()))
            .collect();
        let mut counts: HashMap<PostId, u64> = posts.iter().map(|p| (p.clone(), 0)).collect();
        for item in self
            .batch_get(
                "dynamodb:BatchGetItem like_counts",
                keys,
                "pk, like_count",
                &[],
            )
            .await?
        {
            // An item edited by hand may be anything: a key that names no
            // asked post is skipped, a count that is not a number reads 0.
            let Some(post) = post_of_key(&item).filter(|post| counts.contains_key(post)) else {
                continue;
            };
            let count = get_i64(&item, "like_count").map_or(0, clamp_count);
            counts.insert(post, count);
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
    ) -> Result<LikesPage, MyLikesError> {
        let start = match cursor {
            None => None,
            Some(text) => Some(
                decode_cursor::<LikesCursor>(text)
                    .and_then(|cursor| cursor.start_key(user))
                    .ok_or(MyLikesError::InvalidCursor)?,
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
