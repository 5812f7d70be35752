//! Moving like registers written with layout 1 (8 partitions per post) to the
//! current layout ([`keys::LIKE_PARTITIONS`]), a page at a time (README "Upgrading").
//!
//! A register whose partition is the same in both layouts stays where it is; any
//! other moves in one transaction (put at its new key, delete the old one if
//! unchanged), so it is always in exactly one place. Before a page's moves,
//! each post's counter lists the partitions its registers go to and layout 1's
//! eight (where registers not yet moved are); after them, the post is marked
//! changed and its counter's revision moves, so a recount that overlapped the
//! moves never settles, and the next one counts every register exactly once.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_dynamodb::operation::delete_item::DeleteItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, Delete, TransactWriteItem};
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};

use super::keys::{self, PK, SK};
use super::reconcile::SweepCursor;
use super::{Item, Store, StoreError, corrupt, get_s, key, n, partition_set, s};
use crate::domain::ids::{PostId, UserId};

/// Registers moved at once.
const CONCURRENT_MOVES: usize = 16;

/// Where the migration's pass is: an item of its own (`RECONCILE` /
/// `MIGRATION`), so a scheduled reconcile run never writes over it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationState {
    /// Where the pass goes on; `None` at the start of a pass.
    #[serde(default)]
    pub cursor: Option<String>,
    /// Registers this pass left for a later one.
    #[serde(default)]
    pub conflicts: u64,
}

/// What one page of the migration did.
#[derive(Debug, Default)]
pub struct MigrationPage {
    /// Register items the page held.
    pub registers_seen: u64,
    /// Of those, the ones moved to a new key.
    pub registers_moved: u64,
    /// Registers written by someone else while being moved (a worker still
    /// running the old layout): left as they are for the next pass.
    pub conflicts: u64,
    /// Register items whose key or version is not one Tally writes (skipped).
    pub malformed: Vec<StoreError>,
    /// Where the next page starts; `None` when the pass reached the table's end.
    pub next_cursor: Option<String>,
}

/// One register as the page read it.
struct Register {
    item: Item,
    post: PostId,
    from: u32,
    to: u32,
    version: String,
}

impl Register {
    fn read(item: Item) -> Result<Self, StoreError> {
        let (post, from) = get_s(&item, PK)
            .and_then(keys::parse_like_partition_pk)
            .ok_or_else(|| corrupt(&item, "not a register key"))?;
        let user = get_s(&item, SK)
            .and_then(|sk| sk.strip_prefix("USER#"))
            .and_then(|user| UserId::parse(user).ok())
            .ok_or_else(|| corrupt(&item, "register sort key names no user"))?;
        let version = get_s(&item, "like_version")
            .ok_or_else(|| corrupt(&item, "register has no like_version"))?
            .to_owned();
        Ok(Self {
            to: keys::like_partition(&user),
            item,
            post,
            from,
            version,
        })
    }

    fn old_key(&self) -> Item {
        key(
            keys::like_partition_pk(&self.post, self.from),
            get_s(&self.item, SK).unwrap_or_default().to_owned(),
        )
    }
}

/// What moving one register did.
enum MoveOutcome {
    Moved,
    /// The new key already held a newer register: the old one was only deleted.
    Superseded,
    Conflict,
}

impl Store {
    pub async fn migration_state(&self) -> Result<MigrationState, StoreError> {
        self.own_state(keys::MIGRATION_SK).await
    }

    pub async fn save_migration_state(&self, state: &MigrationState) -> Result<(), StoreError> {
        self.save_own_state(keys::MIGRATION_SK, state).await
    }

    /// Migrates the registers among the next `limit` items of the table.
    pub async fn migrate_like_registers(
        &self,
        cursor: Option<&str>,
        limit: i32,
    ) -> Result<MigrationPage, StoreError> {
        let start = cursor.and_then(SweepCursor::start_key);
        let output = self
            .client
            .scan()
            .table_name(&self.table)
            .filter_expression("begins_with(pk, :post) AND begins_with(sk, :user)")
            .expression_attribute_values(":post", s("POST#"))
            .expression_attribute_values(":user", s("USER#"))
            .consistent_read(true)
            .limit(limit)
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        let mut page = MigrationPage {
            next_cursor: output.last_evaluated_key.as_ref().map(SweepCursor::encode),
            ..MigrationPage::default()
        };
        let mut posts: BTreeMap<PostId, BTreeSet<u32>> = BTreeMap::new();
        let mut moving = Vec::new();
        for item in output.items.unwrap_or_default() {
            page.registers_seen += 1;
            match Register::read(item) {
                Err(malformed) => page.malformed.push(malformed),
                Ok(register) => {
                    posts
                        .entry(register.post.clone())
                        .or_default()
                        .insert(register.to);
                    if register.from != register.to {
                        moving.push(register);
                    }
                }
            }
        }
        // First the counters list where the page's registers are going, and
        // where registers not moved yet still are (layout 1's partitions): a
        // recount during the pass reads every partition that may hold one.
        for (post, partitions) in &posts {
            let mut listed = partitions.clone();
            listed.extend(0..keys::LAYOUT_1_LIKE_PARTITIONS);
            self.update_counter(
                post,
                "ADD like_partitions :partitions",
                [(":partitions", partition_set(&listed))],
            )
            .await?;
        }
        let moves = futures::stream::iter(moving)
            .map(|register| self.move_register(register))
            .buffer_unordered(CONCURRENT_MOVES)
            .collect::<Vec<_>>()
            .await;
        for moved in moves {
            match moved? {
                MoveOutcome::Moved => page.registers_moved += 1,
                MoveOutcome::Superseded => {}
                MoveOutcome::Conflict => page.conflicts += 1,
            }
        }
        // Then each post is marked for a recount, and its revision moves: a
        // recount that overlapped the moves (and may have met a register in
        // both places) fails its settle.
        for post in posts.keys() {
            self.update_counter(
                post,
                "SET post_id = :post, gsi1pk = :dirty, gsi1sk = :post ADD revision :one",
                [
                    (":post", s(post.as_str())),
                    (":dirty", s(keys::dirty_post_gsi1pk(post))),
                    (":one", n(1)),
                ],
            )
            .await?;
        }
        Ok(page)
    }

    async fn update_counter<const N: usize>(
        &self,
        post: &PostId,
        expression: &str,
        values: [(&str, AttributeValue); N],
    ) -> Result<(), StoreError> {
        let values = values
            .into_iter()
            .map(|(name, value)| (name.to_owned(), value))
            .collect();
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(
                keys::counter_pk(post),
                keys::COUNTER_SK.to_owned(),
            )))
            .update_expression(expression)
            .set_expression_attribute_values(Some(values))
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        Ok(())
    }

    /// Moves one register in one transaction: put at its new key, delete the
    /// old one if it is still as read.
    async fn move_register(&self, register: Register) -> Result<MoveOutcome, StoreError> {
        let mut moved = register.item.clone();
        moved.insert(
            PK.to_owned(),
            s(keys::like_partition_pk(&register.post, register.to)),
        );
        let put = aws_sdk_dynamodb::types::Put::builder()
            .table_name(&self.table)
            .set_item(Some(moved))
            .condition_expression("attribute_not_exists(pk) OR like_version < :version")
            .expression_attribute_values(":version", s(&register.version))
            .build()
            .expect("table and item are set");
        let delete = Delete::builder()
            .table_name(&self.table)
            .set_key(Some(register.old_key()))
            .condition_expression("like_version = :version")
            .expression_attribute_values(":version", s(&register.version))
            .build()
            .expect("table and key are set");
        let result = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(put).build())
            .transact_items(TransactWriteItem::builder().delete(delete).build())
            .send()
            .await;
        let Err(err) = result else {
            return Ok(MoveOutcome::Moved);
        };
        let Some(TransactWriteItemsError::TransactionCanceledException(canceled)) =
            err.as_service_error()
        else {
            return Err(StoreError::from_sdk(err));
        };
        let put_failed = canceled
            .cancellation_reasons()
            .first()
            .and_then(|reason| reason.code())
            == Some("ConditionalCheckFailed");
        if !put_failed {
            // The old register changed, or another writer held it: a later pass.
            return Ok(MoveOutcome::Conflict);
        }
        // The new key holds a newer operation on this (user, post): the old
        // register is history. Delete it, if it is still as read.
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(register.old_key()))
            .condition_expression("like_version = :version")
            .expression_attribute_values(":version", s(&register.version))
            .send()
            .await;
        match result {
            Ok(_) => Ok(MoveOutcome::Superseded),
            Err(err)
                if matches!(
                    err.as_service_error(),
                    Some(DeleteItemError::ConditionalCheckFailedException(_))
                ) =>
            {
                Ok(MoveOutcome::Conflict)
            }
            Err(err) => Err(StoreError::from_sdk(err)),
        }
    }
}
