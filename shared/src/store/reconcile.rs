//! What reconcile reads and writes: changed posts and accounts, true like
//! counts, ledgers, accounts with points due to expire, and its own state.

use std::collections::{BTreeSet, HashMap};

use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::AttributeValue;
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::keys::{self, GSI1, GSI2, PK, SK};
use super::{
    Item, Store, StoreError, corrupt, corrupt_because, decode_cursor, encode_cursor, get_i64,
    get_s, n, partition_set, required_s, s,
};
use crate::domain::events::{FindingKind, ReconcileFinding};
use crate::domain::ids::{InvalidIdentifier, PostId, UserId};
use crate::domain::likers::{self, LikerKey, MAX_RECENT_LIKERS, RecentLikers};
use crate::domain::points::Entry;
use crate::domain::timestamp;

/// A counter as reconcile read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterSnapshot {
    pub count: i64,
    /// Bumped by every counter write; `None` when the counter item, or its
    /// revision (an item made by hand), is missing.
    pub revision: Option<i64>,
    /// The register partitions the worker has written for this post; `None`
    /// when the counter does not say (no counter, or a list edited into
    /// something else): then every partition may hold some.
    pub partitions: Option<BTreeSet<u32>>,
    /// `like_partitions` is there but not a set of partitions: the settle
    /// removes it, or the worker's next `ADD` to it would fail.
    pub partitions_malformed: bool,
    /// The recent likers the counter keeps; `None` when it keeps none (a
    /// counter from before them).
    pub recent_likers: Option<RecentLikers>,
}

impl CounterSnapshot {
    /// Whether the counter's recent likers are not the newest `registers`
    /// found: a counter from before them, or one a reordered batch left stale.
    pub fn recent_likers_differ(&self, registers: &LikersRecount) -> bool {
        let newest = registers.recent_likers.newest(MAX_RECENT_LIKERS);
        match &self.recent_likers {
            Some(kept) => kept.newest(MAX_RECENT_LIKERS) != newest,
            None => !newest.is_empty(),
        }
    }
}

impl CounterSnapshot {
    /// The register partitions a recount must read.
    pub fn partitions_to_count(&self) -> BTreeSet<u32> {
        self.partitions
            .clone()
            .unwrap_or_else(|| (0..keys::LIKE_PARTITIONS).collect())
    }
}

/// What a recount of a post's registers found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LikersRecount {
    /// Users who like the post.
    pub count: u64,
    /// The newest [`MAX_RECENT_LIKERS`] of them.
    pub recent_likers: RecentLikers,
    /// Likers whose register is not in the `likers` index as its `liked_at`
    /// says (liked before the index existed), with that `liked_at`.
    pub unindexed: Vec<(UserId, String)>,
}

/// The counter's `recent_likers` map as stored: user id → liked at (µs).
fn recent_likers_map(recent: &RecentLikers) -> AttributeValue {
    AttributeValue::M(
        recent
            .entries()
            .map(|(user, at)| (user.as_str().to_owned(), n(at)))
            .collect(),
    )
}

/// `like_partitions` as stored: a number set of partitions below [`keys::LIKE_PARTITIONS`].
pub(super) fn stored_partitions(item: &Item) -> Option<BTreeSet<u32>> {
    match item.get("like_partitions")? {
        AttributeValue::Ns(numbers) => numbers
            .iter()
            .map(|n| n.parse().ok().filter(|n| *n < keys::LIKE_PARTITIONS))
            .collect(),
        _ => None,
    }
}

/// Likers from before the `likers` index that one run indexes per post at
/// most (~3 s of writes at 16 in flight): an old post with a million likers
/// is indexed over about 200 runs, and no run is spent on it alone.
pub const LIKERS_INDEXED_PER_RUN: usize = 5_000;

/// Register partitions one recount reads at once: a hot post's registers fill
/// many 1 MB query pages, read side by side.
pub const RECOUNT_CONCURRENCY: usize = 16;

/// Reconcile's own bookkeeping, kept in the table between runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconcileState {
    /// Where the background sweep of the whole table continues.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sweep_cursor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success_at: Option<String>,
    /// The last successful run's report (its figures, for `tally-admin status`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_report: Option<serde_json::Value>,
    /// The start of the last run that brought every leaderboard up to date
    /// (its ledger step reached every changed account): the boards' `as_of`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leaderboard_as_of: Option<String>,
}

/// What one page of the background sweep found.
#[derive(Debug, Default)]
pub struct SweepPage {
    pub posts: Vec<PostId>,
    /// The register partitions the page found of each post: a register that no
    /// counter write listed (its message was dead-lettered) is recounted here.
    pub register_partitions: HashMap<PostId, BTreeSet<u32>>,
    pub accounts: Vec<UserId>,
    /// Items whose key names no valid post or user (reported, then skipped).
    pub malformed: Vec<StoreError>,
    /// Where the next page starts; `None` when the sweep reached the end and starts over.
    pub next_cursor: Option<String>,
}

/// Where a scan of the whole table goes on: the last key it read.
#[derive(Serialize, Deserialize)]
struct SweepCursor {
    p: String,
    s: String,
}

impl SweepCursor {
    fn start_key(cursor: &str) -> Option<Item> {
        let c = decode_cursor::<SweepCursor>(cursor)?;
        Some(Item::from([
            (PK.to_owned(), s(c.p)),
            (SK.to_owned(), s(c.s)),
        ]))
    }

    fn encode(key: &Item) -> String {
        encode_cursor(&SweepCursor {
            p: get_s(key, PK).unwrap_or_default().to_owned(),
            s: get_s(key, SK).unwrap_or_default().to_owned(),
        })
    }
}

impl Store {
    /// Posts whose counter was written since reconcile last settled it (a
    /// malformed mark is an `Err` among them, for the caller to report and skip).
    pub async fn changed_posts(&self) -> Result<Vec<Result<PostId, StoreError>>, StoreError> {
        self.marked(keys::dirty_partition_gsi1pk, PostId::parse)
            .await
    }

    /// Accounts written since their ledger was last audited clean.
    pub async fn changed_accounts(&self) -> Result<Vec<Result<UserId, StoreError>>, StoreError> {
        self.marked(keys::dirty_accounts_partition_gsi1pk, UserId::parse)
            .await
    }

    /// The ids marked "changed" in every partition of one kind of `gsi1` mark.
    async fn marked<T>(
        &self,
        partition_key: fn(u32) -> String,
        parse: fn(String) -> Result<T, InvalidIdentifier>,
    ) -> Result<Vec<Result<T, StoreError>>, StoreError> {
        let mut found = Vec::new();
        for partition in 0..keys::DIRTY_PARTITIONS {
            let mut items = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(GSI1)
                .key_condition_expression("gsi1pk = :pk")
                .expression_attribute_values(":pk", s(partition_key(partition)))
                .into_paginator()
                .items()
                .send();
            while let Some(item) = items.next().await {
                let item = item.map_err(StoreError::from_sdk)?;
                found.push(required_s(&item, keys::GSI1_SK).and_then(|sort_key| {
                    parse(sort_key.to_owned())
                        .map_err(|e| corrupt_because(&item, "bad marked id", e))
                }));
            }
        }
        Ok(found)
    }

    /// The counter of a post, read strongly consistently.
    pub async fn counter_snapshot(&self, post: &PostId) -> Result<CounterSnapshot, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(PK, s(keys::counter_pk(post)))
            .key(SK, s(keys::COUNTER_SK))
            .consistent_read(true)
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        Ok(match output.item {
            None => CounterSnapshot {
                count: 0,
                revision: None,
                partitions: None,
                partitions_malformed: false,
                recent_likers: None,
            },
            Some(item) => {
                let partitions = stored_partitions(&item);
                CounterSnapshot {
                    count: get_i64(&item, "like_count").unwrap_or(0),
                    revision: get_i64(&item, "revision"),
                    partitions_malformed: item.contains_key("like_partitions")
                        && partitions.is_none(),
                    partitions,
                    recent_likers: item
                        .contains_key(super::likes::RECENT_LIKERS)
                        .then(|| super::likes::recent_likers_of(&item)),
                }
            }
        })
    }

    /// The true number of users who like a post, and its newest likers: its
    /// liked registers in these partitions, read strongly consistently,
    /// [`RECOUNT_CONCURRENCY`] partitions at once.
    pub async fn count_likes(
        &self,
        post: &PostId,
        partitions: &BTreeSet<u32>,
    ) -> Result<LikersRecount, StoreError> {
        let partitions: Vec<u32> = partitions.iter().copied().collect();
        let counts = futures::stream::iter(partitions)
            .map(|partition| self.count_likes_in(post, partition))
            .buffer_unordered(RECOUNT_CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
        let mut total = LikersRecount::default();
        let mut newest = Vec::new();
        for partition in counts {
            let partition = partition?;
            total.count += partition.count;
            total.unindexed.extend(partition.unindexed);
            total.unindexed.truncate(LIKERS_INDEXED_PER_RUN);
            newest.extend(
                partition
                    .recent_likers
                    .entries()
                    .map(|(user, at)| LikerKey {
                        liked_at_micros: at,
                        user: user.clone(),
                    }),
            );
        }
        total.recent_likers = RecentLikers::newest_of(newest, MAX_RECENT_LIKERS);
        Ok(total)
    }

    async fn count_likes_in(
        &self,
        post: &PostId,
        partition: u32,
    ) -> Result<LikersRecount, StoreError> {
        let mut pages = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk")
            .filter_expression("liked = :liked")
            .projection_expression("pk, sk, user_id, liked_at, likers_sk")
            .expression_attribute_values(":pk", s(keys::like_partition_pk(post, partition)))
            .expression_attribute_values(":liked", AttributeValue::Bool(true))
            .consistent_read(true)
            .into_paginator()
            .send();
        let mut count = 0u64;
        let mut newest = Vec::new();
        let mut unindexed = Vec::new();
        while let Some(page) = pages.next().await {
            let items = page
                .map_err(StoreError::from_sdk)?
                .items
                .unwrap_or_default();
            count += items.len() as u64;
            // Registers liked before the likers index existed lack its key,
            // or, liked again since, carry the later like's time in it.
            let room = LIKERS_INDEXED_PER_RUN.saturating_sub(unindexed.len());
            unindexed.extend(items.iter().take(room).filter_map(|item| {
                let user = UserId::parse(get_s(item, "user_id")?).ok()?;
                let liked_at = get_s(item, "liked_at")?;
                timestamp::parse(liked_at)?;
                let indexed = get_s(item, keys::LIKERS_SK);
                (indexed != Some(keys::likers_sk(liked_at, &user).as_str()))
                    .then(|| (user, liked_at.to_owned()))
            }));
            // A register edited by hand into something unreadable still
            // counts; it just cannot be named among the recent likers.
            newest.extend(items.iter().filter_map(|item| {
                let user = UserId::parse(get_s(item, "user_id")?).ok()?;
                let liked_at = timestamp::parse(get_s(item, "liked_at")?)?;
                Some(LikerKey {
                    liked_at_micros: likers::micros(liked_at),
                    user,
                })
            }));
            // Only the newest few matter: keep memory flat on a viral post.
            if newest.len() > 4 * MAX_RECENT_LIKERS {
                newest = RecentLikers::newest_of(newest, MAX_RECENT_LIKERS)
                    .entries()
                    .map(|(user, at)| LikerKey {
                        liked_at_micros: at,
                        user: user.clone(),
                    })
                    .collect();
            }
        }
        Ok(LikersRecount {
            count,
            recent_likers: RecentLikers::newest_of(newest, MAX_RECENT_LIKERS),
            unindexed,
        })
    }

    /// Puts registers liked before the `likers` index existed into it, as
    /// their `liked_at` says: each gets its `likers_sk`, only if it is still
    /// liked since the same time and lacks that key. Best effort: a failed
    /// write is logged and left for the next run. Answers how many were indexed.
    pub async fn index_likers(&self, post: &PostId, unindexed: &[(UserId, String)]) -> usize {
        // Owned, so the stream's futures are `Send` for any borrow of `self`.
        let writes = futures::stream::iter(unindexed.to_vec())
            .map(|(user, liked_at)| async move {
                let result = self
                    .client
                    .update_item()
                    .table_name(&self.table)
                    .key(PK, s(keys::like_register_pk(post, &user)))
                    .key(SK, s(keys::like_register_sk(&user)))
                    .update_expression("SET likers_sk = :likers_sk")
                    .condition_expression(
                        "liked = :liked AND liked_at = :at \
                         AND (attribute_not_exists(likers_sk) OR likers_sk <> :likers_sk)",
                    )
                    .expression_attribute_values(":likers_sk", s(keys::likers_sk(&liked_at, &user)))
                    .expression_attribute_values(":liked", AttributeValue::Bool(true))
                    .expression_attribute_values(":at", s(liked_at))
                    .send()
                    .await;
                match result {
                    // The register, and the likers index entry it gains.
                    Ok(_) => {
                        self.usage
                            .record("dynamodb:UpdateItem index_likers", 2.0, 0.0);
                        true
                    }
                    Err(err) => {
                        self.usage
                            .record("dynamodb:UpdateItem index_likers", 1.0, 0.0);
                        match err.as_service_error() {
                            // Unliked or indexed meanwhile: nothing left to do.
                            Some(UpdateItemError::ConditionalCheckFailedException(_)) => {}
                            _ => tracing::warn!(
                                post = %post,
                                error = %crate::http::error_chain(&StoreError::from_sdk(err)),
                                "indexing a liker failed; the next run tries again"
                            ),
                        }
                        false
                    }
                }
            })
            .buffer_unordered(RECOUNT_CONCURRENCY)
            .collect::<Vec<bool>>()
            .await;
        writes.into_iter().filter(|indexed| *indexed).count()
    }

    /// Sets the counter to the true count and clears its "changed" mark, only if
    /// no counter write happened since `seen` was read. `false` means the worker
    /// wrote meanwhile: the post stays marked and the next run recounts it.
    /// `unlisted` are partitions the recount found registers in that the
    /// counter does not list yet: listed now, so later recounts read them.
    pub async fn settle_counter(
        &self,
        post: &PostId,
        recount: &LikersRecount,
        seen: &CounterSnapshot,
        unlisted: &BTreeSet<u32>,
    ) -> Result<bool, StoreError> {
        let mut update =
            "SET like_count = :count, post_id = :post, recent_likers = :recent ADD revision :one"
                .to_owned();
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, s(keys::counter_pk(post)))
            .key(SK, s(keys::COUNTER_SK));
        if !unlisted.is_empty() && seen.partitions.is_some() {
            update.push_str(", like_partitions :unlisted");
            request = request.expression_attribute_values(":unlisted", partition_set(unlisted));
        }
        update.push_str(" REMOVE gsi1pk, gsi1sk");
        if seen.partitions_malformed {
            update.push_str(", like_partitions");
        }
        let request = request
            .update_expression(update)
            .expression_attribute_values(":count", n(recount.count))
            .expression_attribute_values(":recent", recent_likers_map(&recount.recent_likers))
            .expression_attribute_values(":post", s(post.as_str()))
            .expression_attribute_values(":one", n(1));
        let request = match seen.revision {
            // No counter write since the read: still no revision (the item may
            // be missing, or made by hand without one).
            None => request.condition_expression("attribute_not_exists(revision)"),
            Some(revision) => request
                .condition_expression("revision = :revision")
                .expression_attribute_values(":revision", n(revision)),
        };
        match request.send().await {
            Ok(_) => Ok(true),
            Err(err) => match err.as_service_error() {
                // A counter write landed meanwhile, or is landing now.
                Some(
                    UpdateItemError::ConditionalCheckFailedException(_)
                    | UpdateItemError::TransactionConflictException(_),
                ) => Ok(false),
                _ => Err(StoreError::from_sdk(err)),
            },
        }
    }

    /// One page of the background sweep: the posts and accounts that appear
    /// among the next `limit` items of the table (keys only).
    pub async fn sweep(&self, cursor: Option<&str>, limit: i32) -> Result<SweepPage, StoreError> {
        let start = cursor.and_then(SweepCursor::start_key);
        let output = self
            .client
            .scan()
            .table_name(&self.table)
            .projection_expression("pk, sk")
            .limit(limit)
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        let mut page = SweepPage::default();
        for item in output.items.unwrap_or_default() {
            let pk = get_s(&item, PK).unwrap_or_default();
            if let Some((post, partition)) = keys::parse_like_partition_pk(pk) {
                page.register_partitions
                    .entry(post)
                    .or_default()
                    .insert(partition);
            }
            if let Some(rest) = pk.strip_prefix("POST#") {
                let post = rest.split('#').next().unwrap_or_default();
                match PostId::parse(post) {
                    Ok(post) if !page.posts.contains(&post) => page.posts.push(post),
                    Ok(_) => {}
                    Err(e) => page
                        .malformed
                        .push(corrupt_because(&item, "bad post id", e)),
                }
            } else if let Some(user) = pk.strip_prefix("ACCOUNT#")
                && get_s(&item, SK) == Some(keys::ACCOUNT_SK)
            {
                match UserId::parse(user) {
                    Ok(user) => page.accounts.push(user),
                    Err(e) => page
                        .malformed
                        .push(corrupt_because(&item, "bad user id", e)),
                }
            }
        }
        page.next_cursor = output.last_evaluated_key.as_ref().map(SweepCursor::encode);
        Ok(page)
    }

    /// An account's whole ledger, oldest first (strongly consistent).
    pub async fn ledger(&self, user: &UserId) -> Result<Vec<Entry>, StoreError> {
        let query = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :entries)")
            .expression_attribute_values(":pk", s(keys::account_pk(user)))
            .expression_attribute_values(":entries", s(keys::ENTRY_SK_PREFIX));
        // Ledger entries are about 300 bytes.
        let items = self
            .query_all("dynamodb:Query ledger", query, 300, true)
            .await?;
        items
            .into_iter()
            .map(|item| {
                serde_dynamo::from_item(item.clone())
                    .map_err(|e| corrupt_because(&item, "not a ledger entry", e))
            })
            .collect()
    }

    /// Clears an account's "changed" mark after a clean audit, only if it is
    /// still at the audited `seq` (else the next run audits it again).
    pub async fn settle_account_audit(
        &self,
        user: &UserId,
        audited_seq: u64,
    ) -> Result<bool, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, s(keys::account_pk(user)))
            .key(SK, s(keys::ACCOUNT_SK))
            .update_expression("REMOVE gsi1pk, gsi1sk")
            .condition_expression("seq = :seq")
            .expression_attribute_values(":seq", n(audited_seq))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(err) => match err.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(_)) => Ok(false),
                _ => Err(StoreError::from_sdk(err)),
            },
        }
    }

    /// Up to `limit` accounts whose soonest lot expiry is at or before `now`.
    pub async fn accounts_due_for_expiry(
        &self,
        now: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<Result<UserId, StoreError>>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        // gsi2sk is `{expiry}#{user}`; '$' sorts just after '#', so this bound
        // takes every expiry up to and including `now`.
        let bound = format!("{}$", timestamp::format(now));
        let mut users = Vec::new();
        for partition in 0..keys::DIRTY_PARTITIONS {
            let mut start = None;
            loop {
                let output = self
                    .client
                    .query()
                    .table_name(&self.table)
                    .index_name(GSI2)
                    .key_condition_expression("gsi2pk = :pk AND gsi2sk < :bound")
                    .expression_attribute_values(":pk", s(keys::expiry_partition_gsi2pk(partition)))
                    .expression_attribute_values(":bound", s(bound.clone()))
                    .limit((limit - users.len()).max(1) as i32)
                    .set_exclusive_start_key(start)
                    .send()
                    .await
                    .map_err(StoreError::from_sdk)?;
                let items = output.items.unwrap_or_default();
                // Keys-only index entries are about 150 bytes.
                self.usage.record(
                    "dynamodb:Query accounts_due_for_expiry",
                    0.0,
                    crate::usage::read_units(items.len(), 150, false),
                );
                for item in items {
                    users.push(
                        get_s(&item, keys::GSI2_SK)
                            .and_then(|sort_key| sort_key.split_once('#'))
                            .and_then(|(_, user)| UserId::parse(user).ok())
                            .ok_or_else(|| corrupt(&item, "gsi2sk is not expiry#user")),
                    );
                }
                if users.len() >= limit {
                    return Ok(users);
                }
                start = output.last_evaluated_key;
                if start.is_none() {
                    break;
                }
            }
        }
        Ok(users)
    }

    /// Reconcile's own item (`RECONCILE` / `STATE`), or the default if none.
    pub async fn reconcile_state(&self) -> Result<ReconcileState, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(PK, s(keys::RECONCILE_PK))
            .key(SK, s(keys::RECONCILE_SK))
            .consistent_read(true)
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        self.usage
            .record("dynamodb:GetItem reconcile_state", 0.0, 1.0);
        match output.item {
            None => Ok(ReconcileState::default()),
            Some(item) => serde_dynamo::from_item(item.clone())
                .map_err(|e| corrupt_because(&item, "not reconcile's state", e)),
        }
    }

    #[allow(
        clippy::expect_used,
        reason = "a struct of strings and numbers always converts"
    )]
    pub async fn save_reconcile_state(&self, state: &ReconcileState) -> Result<(), StoreError> {
        let mut item: Item = serde_dynamo::to_item(state).expect("state converts to an item");
        item.insert(PK.to_owned(), s(keys::RECONCILE_PK));
        item.insert(SK.to_owned(), s(keys::RECONCILE_SK));
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        Ok(())
    }

    /// Records what a run found, one item each, for the stream to publish as
    /// events. The key holds the run's time: a finding reported again by the
    /// next run is a new item, and a retried write rewrites the same one.
    pub async fn record_findings(&self, findings: &[ReconcileFinding]) -> Result<(), StoreError> {
        for finding in findings {
            let kind = match finding.kind {
                FindingKind::LedgerMismatch => "ledger_mismatch",
                FindingKind::MalformedItem => "malformed_item",
            };
            let mut item = super::points::to_item(finding);
            item.insert(PK.to_owned(), s(keys::FINDINGS_PK));
            item.insert(
                SK.to_owned(),
                s(keys::finding_sk(&finding.found_at, kind, &finding.subject)),
            );
            let expires = timestamp::parse(&finding.found_at).map_or(0, |at| {
                at.unix_timestamp() + keys::FINDING_RETENTION_DAYS * 86_400
            });
            item.insert(keys::EXPIRES_AT.to_owned(), n(expires));
            self.client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item))
                .send()
                .await
                .map_err(StoreError::from_sdk)?;
            self.usage.record("dynamodb:PutItem finding", 1.0, 0.0);
        }
        Ok(())
    }
}
