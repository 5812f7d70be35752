//! Moving like registers written with layout 1 (8 partitions per post) to the
//! current layout ([`keys::LIKE_PARTITIONS`]), a page at a time (README "Upgrading").
//!
//! A register whose partition is the same in both layouts stays where it is; any
//! other moves in one transaction (put at its new key, delete the old one, list
//! the new partition on the post's counter), so it is always in exactly one
//! place. Every post a page touches is marked changed, and its counter lists the
//! partitions its registers are in: the next reconcile recounts it exactly. The
//! counter's revision moves too, so a recount that overlapped a move never settles.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, Delete, TransactWriteItem, Update};
use futures::StreamExt as _;

use super::keys::{self, PK, SK};
use super::reconcile::SweepCursor;
use super::{Item, Store, StoreError, corrupt, get_s, key, n, s};
use crate::domain::ids::{PostId, UserId};

/// Registers moved at once.
const CONCURRENT_MOVES: usize = 16;

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
}

/// What moving one register did.
enum MoveOutcome {
    Moved,
    /// The new key already held a newer register: the old one was only deleted.
    Superseded,
    Conflict,
}

impl Store {
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
        let mut staying: BTreeMap<PostId, BTreeSet<u32>> = BTreeMap::new();
        let mut moving = Vec::new();
        for item in output.items.unwrap_or_default() {
            page.registers_seen += 1;
            match Register::read(item) {
                Err(malformed) => page.malformed.push(malformed),
                Ok(register) if register.from == register.to => {
                    staying
                        .entry(register.post)
                        .or_default()
                        .insert(register.to);
                }
                Ok(register) => moving.push(register),
            }
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
        for (post, partitions) in staying {
            self.client
                .update_item()
                .set_key(Some(counter_key(&post)))
                .table_name(&self.table)
                .update_expression(LIST_PARTITIONS)
                .set_expression_attribute_values(Some(list_partitions_values(&post, &partitions)))
                .send()
                .await
                .map_err(StoreError::from_sdk)?;
        }
        Ok(page)
    }

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
        let result = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(put).build())
            .transact_items(self.delete_unchanged(&register))
            .transact_items(self.list_partition(&register))
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
            return Ok(MoveOutcome::Conflict);
        }
        // The new key holds a newer operation on this (user, post): the old
        // register is history. Delete it, if it is still as read.
        let result = self
            .client
            .transact_write_items()
            .transact_items(self.delete_unchanged(&register))
            .transact_items(self.list_partition(&register))
            .send()
            .await;
        match result {
            Ok(_) => Ok(MoveOutcome::Superseded),
            Err(err)
                if matches!(
                    err.as_service_error(),
                    Some(TransactWriteItemsError::TransactionCanceledException(_))
                ) =>
            {
                Ok(MoveOutcome::Conflict)
            }
            Err(err) => Err(StoreError::from_sdk(err)),
        }
    }

    fn delete_unchanged(&self, register: &Register) -> TransactWriteItem {
        let old_key = key(
            keys::like_partition_pk(&register.post, register.from),
            get_s(&register.item, SK).unwrap_or_default().to_owned(),
        );
        let delete = Delete::builder()
            .table_name(&self.table)
            .set_key(Some(old_key))
            .condition_expression("like_version = :version")
            .expression_attribute_values(":version", s(&register.version))
            .build()
            .expect("table and key are set");
        TransactWriteItem::builder().delete(delete).build()
    }

    fn list_partition(&self, register: &Register) -> TransactWriteItem {
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(counter_key(&register.post)))
            .update_expression(LIST_PARTITIONS)
            .set_expression_attribute_values(Some(list_partitions_values(
                &register.post,
                &BTreeSet::from([register.to]),
            )))
            .build()
            .expect("table, key and expression are set");
        TransactWriteItem::builder().update(update).build()
    }
}

/// Lists partitions on a post's counter and marks the post changed, so the next
/// reconcile recounts it; the revision moves so no overlapping recount settles.
const LIST_PARTITIONS: &str = "SET post_id = :post, gsi1pk = :dirty, gsi1sk = :post \
     ADD like_partitions :partitions, revision :one";

fn counter_key(post: &PostId) -> Item {
    key(keys::counter_pk(post), keys::COUNTER_SK.to_owned())
}

fn list_partitions_values(post: &PostId, partitions: &BTreeSet<u32>) -> Item {
    Item::from([
        (":post".to_owned(), s(post.as_str())),
        (":dirty".to_owned(), s(keys::dirty_post_gsi1pk(post))),
        (
            ":partitions".to_owned(),
            AttributeValue::Ns(partitions.iter().map(u32::to_string).collect()),
        ),
        (":one".to_owned(), n(1)),
    ])
}
