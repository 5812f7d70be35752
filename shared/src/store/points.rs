//! Points accounts, ledger entries and operation records.
//!
//! An operation commits in **one transaction**: its record (the idempotency
//! guard), each account it changes (conditioned on the `seq` it was planned
//! against), the account's new ledger entries, and for a capture, release or
//! refund the record of the hold or operation it acts on. A redelivered
//! operation fails the record's condition; an operation planned against a stale
//! account fails the account's and is planned again. Nothing is ever half applied.
//!
//! A linked record (a hold's, a refunded spend's) changes only in transactions
//! that also move its account's `seq`, and is read after the account: a plan
//! that saw it stale was planned against a stale account too, and fails.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, Put, ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update,
};
use serde::Serialize;

use super::keys::{self, GSI1_PK, GSI1_SK, GSI2_PK, GSI2_SK, PK, SK};
use super::{
    Item, Store, StoreError, corrupt, corrupt_because, decode_cursor, encode_cursor, get_i64,
    get_s, n, s,
};
use crate::domain::ids::{OperationId, UserId};
use crate::domain::points::{
    Account, AccountChange, Entry, Expiry, LinkedUpdate, OperationRecord, OperationStatus, Plan,
    PointsOperation, Rejection, WrittenEntry,
};
use crate::domain::timestamp;

/// What recording a new operation found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// The key was unused: the operation is now pending.
    New,
    /// The caller used this key before; here is what it holds.
    Existing(Box<OperationRecord>),
}

/// What committing an operation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    Done,
    /// The operation was already applied or rejected: a redelivery.
    AlreadyDone,
    /// An account moved since it was read: plan again.
    Conflict,
}

/// One page of an account's ledger, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntriesPage {
    pub items: Vec<Entry>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("cursor is not one this service returned")]
    InvalidCursor,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Only an operation not yet applied or rejected may be written: the idempotency guard.
const STILL_PENDING: &str = "attribute_not_exists(pk) OR #status = :pending";

#[allow(
    clippy::expect_used,
    reason = "Tally's own types (strings, numbers, string-keyed maps) always convert"
)]
pub(super) fn to_item<T: Serialize>(value: &T) -> Item {
    serde_dynamo::to_item(value).expect("Tally's own types always convert to items")
}

pub(super) fn from_item<T: serde::de::DeserializeOwned>(item: Item) -> Result<T, StoreError> {
    serde_dynamo::from_item(item.clone())
        .map_err(|e| corrupt_because(&item, "unreadable attributes", e))
}

fn with_key(mut item: Item, pk: String, sk: String) -> Item {
    item.insert(PK.to_owned(), s(pk));
    item.insert(SK.to_owned(), s(sk));
    item
}

fn operation_item(record: &OperationRecord) -> Item {
    let mut item = with_key(
        to_item(record),
        keys::account_pk(&record.caller),
        keys::operation_sk(&record.operation_id),
    );
    // The outbox: a pending operation is listed until it is applied or rejected.
    if record.status == OperationStatus::Pending {
        item.insert(GSI1_PK.to_owned(), s(keys::pending_gsi1pk(&record.caller)));
        item.insert(
            GSI1_SK.to_owned(),
            s(keys::pending_gsi1sk(
                &record.accepted_at,
                &record.caller,
                &record.operation_id,
            )),
        );
    }
    item
}

fn entry_item(user: &UserId, entry: &Entry) -> Item {
    let mut item = with_key(
        to_item(entry),
        keys::account_pk(user),
        keys::entry_sk(entry.seq),
    );
    item.insert("user_id".to_owned(), s(user.as_str()));
    item
}

#[allow(
    clippy::expect_used,
    reason = "Tally's own types (strings, numbers, string-keyed maps) always convert"
)]
fn account_item(user: &UserId, account: &Account) -> Item {
    let lots: HashMap<String, AttributeValue> = account
        .lots
        .iter()
        .map(|(expiry, amount)| (expiry.key(), n(amount)))
        .collect();
    let mut item = Item::from([
        (PK.to_owned(), s(keys::account_pk(user))),
        (SK.to_owned(), s(keys::ACCOUNT_SK)),
        ("user_id".to_owned(), s(user.as_str())),
        ("balance".to_owned(), n(account.balance)),
        ("seq".to_owned(), n(account.seq)),
        ("lots".to_owned(), AttributeValue::M(lots)),
        // Marks the account changed for the next ledger audit.
        (GSI1_PK.to_owned(), s(keys::dirty_account_gsi1pk(user))),
        (GSI1_SK.to_owned(), s(user.as_str())),
    ]);
    if let Some(booked_at) = account.booked_at {
        item.insert("booked_at".to_owned(), s(timestamp::format(booked_at)));
    }
    if !account.holds.is_empty() {
        item.insert(
            "holds".to_owned(),
            serde_dynamo::to_attribute_value(&account.holds)
                .expect("Tally's own types always convert to items"),
        );
    }
    // Lists the account under its soonest expiry, for the expiry run.
    if let Some(next) = account.next_expiry() {
        item.insert(GSI2_PK.to_owned(), s(keys::expiry_gsi2pk(user)));
        item.insert(
            GSI2_SK.to_owned(),
            s(format!("{}#{user}", timestamp::format(next))),
        );
    }
    item
}

pub(super) fn account_from_item(item: &Item) -> Result<Account, StoreError> {
    let number = |name: &str| {
        get_i64(item, name)
            .and_then(|v| u64::try_from(v).ok())
            .ok_or_else(|| corrupt(item, format!("{name} is not a non-negative number")))
    };
    let mut lots = BTreeMap::new();
    if let Some(AttributeValue::M(stored)) = item.get("lots") {
        for (key, value) in stored {
            let expiry =
                Expiry::from_key(key).ok_or_else(|| corrupt(item, format!("bad lot {key}")))?;
            let amount = value
                .as_n()
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| corrupt(item, format!("bad lot amount at {key}")))?;
            lots.insert(expiry, amount);
        }
    }
    let holds = match item.get("holds") {
        Some(holds) => serde_dynamo::from_attribute_value(holds.clone())
            .map_err(|e| corrupt_because(item, "bad holds", e))?,
        None => Default::default(),
    };
    let booked_at = match get_s(item, "booked_at") {
        Some(text) => {
            Some(timestamp::parse(text).ok_or_else(|| corrupt(item, "booked_at is not a time"))?)
        }
        None => None,
    };
    Ok(Account {
        balance: number("balance")?,
        seq: number("seq")?,
        lots,
        holds,
        booked_at,
    })
}

fn pending_guard(
    put: aws_sdk_dynamodb::types::builders::PutBuilder,
) -> aws_sdk_dynamodb::types::builders::PutBuilder {
    put.condition_expression(STILL_PENDING)
        .expression_attribute_names("#status", "status")
        .expression_attribute_values(":pending", s("pending"))
}

impl Store {
    /// Records a newly accepted operation as pending, unless the caller already
    /// used its key: then returns what that key holds. One conditional PutItem.
    pub async fn record_operation(&self, op: &PointsOperation) -> Result<Recorded, StoreError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(operation_item(&OperationRecord::pending(op))))
            .condition_expression("attribute_not_exists(pk)")
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        if result
            .as_ref()
            .map_or_else(|e| e.as_service_error().is_some(), |_| true)
        {
            // The item, and its entry in the pending index when written.
            let index = if result.is_ok() { 1.0 } else { 0.0 };
            self.usage
                .record("dynamodb:PutItem record_operation", 1.0 + index, 0.0);
        }
        match result {
            Ok(_) => Ok(Recorded::New),
            Err(err) => match err.as_service_error() {
                Some(PutItemError::ConditionalCheckFailedException(failed)) => {
                    match failed.item() {
                        Some(item) => Ok(Recorded::Existing(Box::new(from_item(item.clone())?))),
                        None => Err(StoreError::Unavailable(
                            "condition failed without returning the existing operation".into(),
                        )),
                    }
                }
                _ => Err(StoreError::from_sdk(err)),
            },
        }
    }

    /// The caller's operation with this id, if any.
    pub async fn operation(
        &self,
        caller: &UserId,
        operation_id: &OperationId,
    ) -> Result<Option<OperationRecord>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(PK, s(keys::account_pk(caller)))
            .key(SK, s(keys::operation_sk(operation_id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        self.usage.record("dynamodb:GetItem operation", 0.0, 1.0);
        output.item.map(from_item).transpose()
    }

    /// An account's current state (strongly consistent); empty if it never held points.
    pub async fn account(&self, user: &UserId) -> Result<Account, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(PK, s(keys::account_pk(user)))
            .key(SK, s(keys::ACCOUNT_SK))
            .consistent_read(true)
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        self.usage.record("dynamodb:GetItem account", 0.0, 1.0);
        output
            .item
            .as_ref()
            .map_or(Ok(Account::default()), account_from_item)
    }

    /// Commits a planned operation: its record, every account change and every
    /// entry, and the linked record it changes, in one TransactWriteItems.
    pub async fn commit_points(
        &self,
        op: &PointsOperation,
        plan: &Plan,
    ) -> Result<Commit, StoreError> {
        let record = OperationRecord {
            status: OperationStatus::Applied,
            entry: plan.own_entry().cloned(),
            refundable: plan.refundable.clone(),
            entries: plan
                .changes
                .iter()
                .filter_map(|change| Some(WrittenEntry::of(&change.user, change.own_entry()?)))
                .collect(),
            ..OperationRecord::pending(op)
        };
        let guard = put(pending_guard(self.put(operation_item(&record))));
        let linked = plan
            .linked
            .as_ref()
            .map(|linked| self.linked_update(linked));
        self.commit(Some(guard), &plan.changes, linked).await
    }

    /// Closes a hold's record or lowers what a spend may still refund. The
    /// account write beside it serializes these (see the module docs); the
    /// condition keeps a hand-deleted record from being recreated half empty.
    #[allow(
        clippy::expect_used,
        reason = "its own types always convert, and the builder is given table, key and expression"
    )]
    fn linked_update(&self, linked: &LinkedUpdate) -> TransactWriteItem {
        let mut sets = Vec::new();
        let mut update = Update::builder()
            .table_name(&self.table)
            .key(PK, s(keys::account_pk(&linked.user)))
            .key(SK, s(keys::operation_sk(&linked.operation_id)))
            .condition_expression("attribute_exists(pk)");
        if let Some(closed_by) = &linked.closed_by {
            sets.push("closed_by = :closed_by");
            update = update.expression_attribute_values(":closed_by", s(closed_by.as_str()));
        }
        if let Some(refundable) = &linked.refundable {
            sets.push("refundable = :refundable");
            update = update.expression_attribute_values(
                ":refundable",
                serde_dynamo::to_attribute_value(refundable)
                    .expect("Tally's own types always convert to items"),
            );
        }
        let update = update
            .update_expression(format!("SET {}", sets.join(", ")))
            .build()
            .expect("table, key and expression are set");
        TransactWriteItem::builder().update(update).build()
    }

    /// Commits an account change made by Tally itself (point expiry): the account
    /// and its new entry, in one transaction. Its `seq` condition makes a rerun
    /// after an interruption find the lots already gone, so nothing expires twice.
    pub async fn commit_account_change(
        &self,
        change: &AccountChange,
    ) -> Result<Commit, StoreError> {
        self.commit(None, std::slice::from_ref(change), None).await
    }

    /// Writes the guard (if any), each account on the condition that its `seq` is
    /// still the one planned against, and each entry, in one TransactWriteItems.
    async fn commit(
        &self,
        guard: Option<TransactWriteItem>,
        changes: &[AccountChange],
        linked: Option<TransactWriteItem>,
    ) -> Result<Commit, StoreError> {
        let guarded = guard.is_some();
        let mut items: Vec<TransactWriteItem> = guard.into_iter().collect();
        for change in changes {
            let account = self.put(account_item(&change.user, &change.after));
            let account = if change.before.seq == 0 {
                account.condition_expression("attribute_not_exists(pk)")
            } else {
                account
                    .condition_expression("seq = :seq")
                    .expression_attribute_values(":seq", n(change.before.seq))
            };
            items.push(put(account));
            for entry in &change.entries {
                items.push(put(self
                    .put(entry_item(&change.user, entry))
                    .condition_expression("attribute_not_exists(pk)")));
            }
        }
        items.extend(linked);
        // A guard settles a pending record: its pending index entry goes.
        let index_writes: u32 = changes.iter().map(index_writes).sum::<u32>() + u32::from(guarded);
        self.transact(items, guarded, index_writes).await
    }

    /// Records a final rejection, unless the operation was already settled.
    pub async fn reject_operation(
        &self,
        op: &PointsOperation,
        reason: Rejection,
        detail: Option<String>,
    ) -> Result<Commit, StoreError> {
        self.settle_rejected(OperationRecord::rejected(op, reason, detail))
            .await
    }

    /// Rejects a queued message that names its caller and operation id but is
    /// not a valid request (`invalid_operation`), unless that id was settled.
    /// A pending record keeps the request it holds, so a same-key retry of what
    /// was accepted over HTTP still answers this outcome, not 422.
    pub async fn reject_invalid_message(
        &self,
        caller: &UserId,
        operation_id: &OperationId,
        detail: String,
        now: time::OffsetDateTime,
    ) -> Result<Commit, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, s(keys::account_pk(caller)))
            .key(SK, s(keys::operation_sk(operation_id)))
            .update_expression(
                "SET #status = :rejected, #reason = :reason, #detail = :detail, \
                 #operation_id = :operation_id, #caller = :caller, \
                 #accepted_at = if_not_exists(#accepted_at, :now) REMOVE gsi1pk, gsi1sk",
            )
            .condition_expression(STILL_PENDING)
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#reason", "reason")
            .expression_attribute_names("#detail", "detail")
            .expression_attribute_names("#operation_id", "operation_id")
            .expression_attribute_names("#caller", "caller")
            .expression_attribute_names("#accepted_at", "accepted_at")
            .expression_attribute_values(":pending", s("pending"))
            .expression_attribute_values(":rejected", s("rejected"))
            .expression_attribute_values(":reason", s(Rejection::InvalidOperation.code()))
            .expression_attribute_values(":detail", s(detail))
            .expression_attribute_values(":operation_id", s(operation_id.as_str()))
            .expression_attribute_values(":caller", s(caller.as_str()))
            .expression_attribute_values(":now", s(timestamp::format(now)))
            .send()
            .await;
        self.usage
            .record("dynamodb:UpdateItem reject_invalid_message", 1.0, 0.0);
        settled(result)
    }

    async fn settle_rejected(&self, record: OperationRecord) -> Result<Commit, StoreError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(operation_item(&record)))
            .condition_expression(STILL_PENDING)
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":pending", s("pending"))
            .send()
            .await;
        self.usage
            .record("dynamodb:PutItem reject_operation", 1.0, 0.0);
        settled(result)
    }

    /// An account's ledger, newest first, `limit` entries at a time. A page cut
    /// short by DynamoDB's 1 MB limit never ends the history early ([`Store::query_up_to`]).
    pub async fn history(
        &self,
        user: &UserId,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<EntriesPage, HistoryError> {
        let start = match cursor {
            None => None,
            Some(text) => {
                let seq: u64 = decode_cursor(text).ok_or(HistoryError::InvalidCursor)?;
                Some(Item::from([
                    (PK.to_owned(), s(keys::account_pk(user))),
                    (SK.to_owned(), s(keys::entry_sk(seq))),
                ]))
            }
        };
        let query = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :entries)")
            .expression_attribute_values(":pk", s(keys::account_pk(user)))
            .expression_attribute_values(":entries", s(keys::ENTRY_SK_PREFIX))
            .scan_index_forward(false)
            .set_exclusive_start_key(start);
        // Ledger entries are about 300 bytes.
        let rows = self
            .query_up_to("dynamodb:Query history", query, limit as usize + 1, 300)
            .await?;
        let mut items: Vec<Entry> = rows.into_iter().map(from_item).collect::<Result<_, _>>()?;
        let more = items.len() > limit as usize;
        items.truncate(limit as usize);
        let next_cursor = match items.last() {
            Some(last) if more => Some(encode_cursor(&last.seq)),
            _ => None,
        };
        Ok(EntriesPage { items, next_cursor })
    }

    /// Operations still pending that were accepted before `before`, oldest
    /// first per index partition, up to `limit`: the outbox reconcile re-drives.
    pub async fn pending_operations(
        &self,
        before: time::OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<Result<(UserId, OperationId), StoreError>>, StoreError> {
        let bound = timestamp::format(before);
        let mut found = Vec::new();
        for partition in 0..keys::DIRTY_PARTITIONS {
            let mut items = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(keys::GSI1)
                .key_condition_expression("gsi1pk = :pk AND gsi1sk < :bound")
                .expression_attribute_values(":pk", s(keys::pending_partition_gsi1pk(partition)))
                .expression_attribute_values(":bound", s(bound.clone()))
                .into_paginator()
                .items()
                .send();
            while found.len() < limit {
                let Some(item) = items.next().await else {
                    break;
                };
                let item = item.map_err(StoreError::from_sdk)?;
                found.push(
                    get_s(&item, GSI1_SK)
                        .and_then(keys::parse_pending_gsi1sk)
                        .ok_or_else(|| {
                            corrupt(
                                &item,
                                "pending index entry is not accepted_at#caller#operation",
                            )
                        }),
                );
            }
        }
        Ok(found)
    }

    pub(super) fn put(&self, item: Item) -> aws_sdk_dynamodb::types::builders::PutBuilder {
        Put::builder().table_name(&self.table).set_item(Some(item))
    }

    /// Runs a transaction; when `guarded`, its first item is the operation's idempotency guard.
    pub(super) async fn transact(
        &self,
        items: Vec<TransactWriteItem>,
        guarded: bool,
        index_writes: u32,
    ) -> Result<Commit, StoreError> {
        // A transaction bills two units per item, committed or cancelled.
        let units = 2.0 * items.len() as f64;
        let result = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await;
        let err = match result {
            Ok(_) => {
                self.usage.record(
                    "dynamodb:TransactWriteItems commit",
                    units + f64::from(index_writes),
                    0.0,
                );
                return Ok(Commit::Done);
            }
            Err(err) => err,
        };
        if err.as_service_error().is_some() {
            self.usage
                .record("dynamodb:TransactWriteItems commit", units, 0.0);
        }
        let Some(TransactWriteItemsError::TransactionCanceledException(canceled)) =
            err.as_service_error()
        else {
            return Err(StoreError::from_sdk(err));
        };
        let codes: Vec<&str> = canceled
            .cancellation_reasons()
            .iter()
            .map(|reason| reason.code().unwrap_or("None"))
            .collect();
        match codes.as_slice() {
            ["ConditionalCheckFailed", ..] if guarded => Ok(Commit::AlreadyDone),
            rest if rest
                .iter()
                .any(|c| *c == "ConditionalCheckFailed" || *c == "TransactionConflict") =>
            {
                Ok(Commit::Conflict)
            }
            _ => Err(StoreError::from_sdk(err)),
        }
    }
}

/// Index entries an account change writes: `gsi1` when the account is new (its
/// "changed" mark; an audited account's returning mark is not counted), `gsi2`
/// when its soonest expiry appears, goes (1) or moves (delete + put: 2).
fn index_writes(change: &AccountChange) -> u32 {
    let gsi1 = u32::from(change.before.seq == 0);
    let gsi2 = match (change.before.next_expiry(), change.after.next_expiry()) {
        (a, b) if a == b => 0,
        (Some(_), Some(_)) => 2,
        _ => 1,
    };
    gsi1 + gsi2
}

/// What a write conditioned on [`STILL_PENDING`] did: settled the operation, or
/// found it settled by an earlier delivery.
fn settled<O, E, R>(
    result: Result<O, aws_sdk_dynamodb::error::SdkError<E, R>>,
) -> Result<Commit, StoreError>
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    match result {
        Ok(_) => Ok(Commit::Done),
        Err(err)
            if err.as_service_error().and_then(|e| e.code())
                == Some("ConditionalCheckFailedException") =>
        {
            Ok(Commit::AlreadyDone)
        }
        Err(err) => Err(StoreError::from_sdk(err)),
    }
}

#[allow(
    clippy::expect_used,
    reason = "every caller sets the table and the item"
)]
pub(super) fn put(builder: aws_sdk_dynamodb::types::builders::PutBuilder) -> TransactWriteItem {
    TransactWriteItem::builder()
        .put(builder.build().expect("table and item are set"))
        .build()
}
