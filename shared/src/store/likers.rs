//! A post's likers, newest first: pages merged from the `likers` index, one
//! query per register partition the post uses.

use std::collections::BTreeSet;

use aws_sdk_dynamodb::types::AttributeValue;
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};

use super::keys::{self, LIKERS, LIKERS_SK, PK, SK};
use super::likes::PageError;
use super::reconcile::stored_partitions;
use super::{Item, Store, StoreError, corrupt, decode_cursor, encode_cursor, s};
use crate::domain::ids::{PostId, UserId};
use crate::domain::likers::{PartitionRead, partitions_to_read_further};
use crate::domain::timestamp;

/// Partitions one page queries at once.
pub const PARTITIONS_AT_ONCE: usize = 16;

/// Keys-only entries of the `likers` index: about 100 bytes each.
const ENTRY_BYTES: usize = 100;

/// One page of a post's likers, newest first.
pub type LikersPage = super::Page<Liker>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Liker {
    pub user_id: UserId,
    pub liked_at: String,
}

/// Where a page of likers ends: the `likers_sk` (`{liked_at}#{user}`) of its
/// last item. The next page is every liker strictly older. A forged cursor
/// names a point in time and a user id, nothing else: it can only start a
/// page of this post's likers somewhere.
#[derive(Serialize, Deserialize)]
struct LikersCursor {
    t: String,
}

impl LikersCursor {
    fn parse(text: &str) -> Option<String> {
        let cursor: LikersCursor = decode_cursor(text)?;
        parse_likers_sk(&cursor.t)?;
        Some(cursor.t)
    }
}

fn parse_likers_sk(sort_key: &str) -> Option<(String, UserId)> {
    let (liked_at, user) = sort_key.split_once('#')?;
    timestamp::parse(liked_at)?;
    Some((liked_at.to_owned(), UserId::parse(user).ok()?))
}

/// What one query of a partition gave: sort keys, newest first, and where
/// to go on if there is more.
type PartitionPage = (Vec<String>, Option<Item>);

/// Where the next query of one partition starts, and how much it asks for.
struct NextQuery {
    number: u32,
    start: Option<Item>,
    limit: usize,
}

impl Store {
    /// A post's likers, newest first, `limit` at a time (see the module).
    pub async fn likers(
        &self,
        post: &PostId,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<LikersPage, PageError> {
        let before = cursor
            .map(|text| LikersCursor::parse(text).ok_or(PageError::InvalidCursor))
            .transpose()?;
        let Some(numbers) = self.liker_partitions(post).await? else {
            return Ok(LikersPage {
                items: Vec::new(),
                next_cursor: None,
            });
        };
        // One extra liker tells whether another page exists.
        let wanted = limit as usize + 1;
        // Twice a fair share of the page from each partition, and one more:
        // few pages need a second read of any (a query of a few keys costs
        // the same half read unit as a query of one).
        let first = ((2 * wanted).div_ceil(numbers.len().max(1)) + 1).min(wanted);
        // What each partition gave so far (the merge's input), and where each
        // goes on from: one entry per partition, in the same order.
        let mut reads: Vec<PartitionRead<String>> = Vec::with_capacity(numbers.len());
        let mut next: Vec<NextQuery> = Vec::with_capacity(numbers.len());
        for number in numbers {
            reads.push(PartitionRead {
                fetched: Vec::new(),
                more: true,
            });
            next.push(NextQuery {
                number,
                start: None,
                limit: first,
            });
        }
        let mut further: Vec<usize> = (0..reads.len()).collect();
        while !further.is_empty() {
            let asks: Vec<(usize, u32, Option<Item>, usize)> = further
                .into_iter()
                .filter_map(|i| {
                    let q = next.get(i)?;
                    Some((i, q.number, q.start.clone(), q.limit))
                })
                .collect();
            let pages: Vec<(usize, Result<PartitionPage, StoreError>)> =
                futures::stream::iter(asks)
                    .map(|(i, number, start, limit)| {
                        let before = before.as_deref();
                        async move {
                            let page = self.likers_in(post, number, before, start, limit).await;
                            (i, page)
                        }
                    })
                    .buffer_unordered(PARTITIONS_AT_ONCE)
                    .collect()
                    .await;
            for (i, page) in pages {
                let (sort_keys, last) = page?;
                if let (Some(read), Some(query)) = (reads.get_mut(i), next.get_mut(i)) {
                    read.fetched.extend(sort_keys);
                    read.more = last.is_some();
                    query.start = last;
                    query.limit = (query.limit * 2).min(wanted);
                }
            }
            further = partitions_to_read_further(&reads, wanted);
        }
        let mut merged: Vec<String> = reads.into_iter().flat_map(|r| r.fetched).collect();
        merged.sort_unstable_by(|a, b| b.cmp(a));
        merged.truncate(wanted);
        let more = merged.len() > limit as usize;
        merged.truncate(limit as usize);
        let next_cursor = match merged.last() {
            Some(last) if more => Some(encode_cursor(&LikersCursor { t: last.clone() })),
            _ => None,
        };
        let items = merged
            .iter()
            .map(|sort_key| {
                let (liked_at, user_id) = parse_likers_sk(sort_key).ok_or_else(|| {
                    corrupt(
                        &Item::from([(LIKERS_SK.to_owned(), s(sort_key))]),
                        "likers_sk is not liked_at#user",
                    )
                })?;
                Ok(Liker { user_id, liked_at })
            })
            .collect::<Result<_, StoreError>>()?;
        Ok(LikersPage { items, next_cursor })
    }

    /// The register partitions a post's likers may be in: those its counter
    /// lists, every one if it lists none it can read, `None` without a counter
    /// (never liked).
    async fn liker_partitions(&self, post: &PostId) -> Result<Option<BTreeSet<u32>>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(PK, s(keys::counter_pk(post)))
            .key(SK, s(keys::COUNTER_SK))
            .projection_expression("like_partitions")
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        self.usage
            .record("dynamodb:GetItem liker_partitions", 0.0, 0.5);
        Ok(output.item.map(|item| {
            stored_partitions(&item).unwrap_or_else(|| (0..keys::LIKE_PARTITIONS).collect())
        }))
    }

    /// Up to `limit` likers of one partition older than `before`, newest
    /// first, from `start`; and where to go on, if there is more.
    async fn likers_in(
        &self,
        post: &PostId,
        partition: u32,
        before: Option<&str>,
        start: Option<Item>,
        limit: usize,
    ) -> Result<PartitionPage, StoreError> {
        let mut query = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(LIKERS)
            .expression_attribute_values(":pk", s(keys::like_partition_pk(post, partition)))
            .scan_index_forward(false)
            .limit(i32::try_from(limit).unwrap_or(i32::MAX))
            .set_exclusive_start_key(start);
        query = match before {
            None => query.key_condition_expression("pk = :pk"),
            Some(before) => query
                .key_condition_expression("pk = :pk AND likers_sk < :before")
                .expression_attribute_values(":before", s(before)),
        };
        let output = query.send().await.map_err(StoreError::from_sdk)?;
        let rows = output.items.unwrap_or_default();
        self.usage.record(
            "dynamodb:Query likers",
            0.0,
            crate::usage::read_units(rows.len(), ENTRY_BYTES, false),
        );
        let sort_keys = rows
            .iter()
            .map(|row| match row.get(LIKERS_SK) {
                Some(AttributeValue::S(sort_key)) => Ok(sort_key.clone()),
                _ => Err(corrupt(row, "likers index entry without likers_sk")),
            })
            .collect::<Result<_, StoreError>>()?;
        // A page that ends exactly at the partition's end still carries a
        // `LastEvaluatedKey`; the next read then finds nothing, which is fine.
        Ok((sort_keys, output.last_evaluated_key))
    }
}
