//! The DynamoDB adapter. Every DynamoDB call Tally makes is in this module.
//!
//! One table holds everything (see [`keys`] for the item layout). SDK errors stop
//! here: callers see [`StoreError`], whose variants say what a caller can do about it.

pub mod changes;
pub mod erasure;
pub mod insight;
pub mod keys;
pub mod likers;
pub mod likes;
pub mod points;
pub mod reconcile;
pub mod users;

use std::collections::HashMap;
use std::error::Error as StdError;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes};

use crate::usage::Usage;

type BoxError = Box<dyn StdError + Send + Sync>;
pub type Item = HashMap<String, AttributeValue>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// DynamoDB asked us to slow down and the SDK's retries did not get through.
    #[error("DynamoDB throttled the request")]
    Throttled(#[source] BoxError),
    /// Anything else that kept the request from completing: the caller may retry.
    #[error("DynamoDB request failed")]
    Unavailable(#[source] BoxError),
    /// Other writers kept changing what the request reads through every one of
    /// its `attempts`: nothing was written, and the caller may retry later.
    #[error("contended: other writers kept changing what it reads, {attempts} attempts in a row")]
    Contended { attempts: u32 },
    /// An item does not have the shape Tally writes.
    #[error("stored item {key} is malformed: {problem}")]
    Corrupt {
        key: String,
        problem: String,
        /// What failed to read it, where something did (a serde or identifier error).
        #[source]
        source: Option<BoxError>,
    },
}

const THROTTLING_CODES: &[&str] = &[
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
];

impl StoreError {
    fn from_sdk<E, R>(err: SdkError<E, R>) -> Self
    where
        E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        let throttled = err
            .as_service_error()
            .and_then(|e| e.code())
            .is_some_and(|code| THROTTLING_CODES.contains(&code));
        if throttled {
            StoreError::Throttled(Box::new(err))
        } else {
            StoreError::Unavailable(Box::new(err))
        }
    }
}

/// The table Tally keeps its state in.
#[derive(Debug, Clone)]
pub struct Store {
    client: Client,
    table: String,
    usage: Arc<Usage>,
}

impl Store {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            usage: Arc::default(),
        }
    }

    /// The same store, counting its calls on `usage`.
    pub fn with_usage(self, usage: Arc<Usage>) -> Self {
        Self { usage, ..self }
    }

    pub fn usage(&self) -> &Usage {
        &self.usage
    }

    pub fn from_config(aws: &aws_config::SdkConfig, table: impl Into<String>) -> Self {
        Self::new(Client::new(aws), table)
    }

    pub fn table_name(&self) -> &str {
        &self.table
    }

    /// Reads items by key in one BatchGetItem round, then retries whatever DynamoDB
    /// left unprocessed (with backoff) until every key is answered. At most 100 keys.
    async fn batch_get(
        &self,
        call: &'static str,
        keys: Vec<Item>,
        projection: &str,
        names: &[(&str, &str)],
    ) -> Result<Vec<Item>, StoreError> {
        const ATTEMPTS: u32 = 8;
        debug_assert!(keys.len() <= 100, "BatchGetItem takes at most 100 keys");
        let mut request = KeysAndAttributes::builder()
            .set_keys(Some(keys))
            .projection_expression(projection);
        for (placeholder, name) in names {
            request = request.expression_attribute_names(*placeholder, *name);
        }
        let mut pending = Some(
            request
                .build()
                .map_err(|e| StoreError::Unavailable(e.into()))?,
        );
        let mut found = Vec::new();
        for attempt in 0..ATTEMPTS {
            let Some(request) = pending.take() else {
                return Ok(found);
            };
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(25 << attempt.min(6))).await;
            }
            let keys_asked = request.keys().len();
            let output = self
                .client
                .batch_get_item()
                .request_items(&self.table, request)
                .send()
                .await
                .map_err(StoreError::from_sdk)?;
            // Every key asked is billed, found or not (less those left unprocessed).
            let unprocessed = output
                .unprocessed_keys
                .as_ref()
                .and_then(|left| left.get(&self.table))
                .map_or(0, |left| left.keys().len());
            self.usage
                .record(call, 0.0, (keys_asked - unprocessed) as f64 * 0.5);
            if let Some(mut items) = output.responses {
                found.extend(items.remove(&self.table).unwrap_or_default());
            }
            pending = output
                .unprocessed_keys
                .and_then(|mut left| left.remove(&self.table))
                .filter(|left| !left.keys().is_empty());
        }
        match pending {
            None => Ok(found),
            Some(_) => Err(StoreError::Throttled(
                "BatchGetItem left keys unprocessed after every retry".into(),
            )),
        }
    }
}

impl Store {
    /// The first `wanted` items a query finds, following DynamoDB's pages: a
    /// page may end before `Limit` items (at 1 MB read), and only a missing
    /// `LastEvaluatedKey` means there are no more.
    async fn query_up_to(
        &self,
        call: &'static str,
        query: aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder,
        wanted: usize,
        item_bytes: usize,
    ) -> Result<Vec<Item>, StoreError> {
        let mut pages = query
            .limit(i32::try_from(wanted).unwrap_or(i32::MAX))
            .into_paginator()
            .send();
        let mut rows = Vec::new();
        while rows.len() < wanted {
            let Some(page) = pages.next().await else {
                break;
            };
            let found = page
                .map_err(StoreError::from_sdk)?
                .items
                .unwrap_or_default();
            self.usage.record(
                call,
                0.0,
                crate::usage::read_units(found.len(), item_bytes, false),
            );
            rows.extend(found);
        }
        rows.truncate(wanted);
        Ok(rows)
    }

    /// Every item a query finds, page by page, each page counted as `call`
    /// (items of about `item_bytes`).
    async fn query_all(
        &self,
        call: &'static str,
        query: aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder,
        item_bytes: usize,
        consistent: bool,
    ) -> Result<Vec<Item>, StoreError> {
        let mut pages = query.consistent_read(consistent).into_paginator().send();
        let mut rows = Vec::new();
        while let Some(page) = pages.next().await {
            let found = page
                .map_err(StoreError::from_sdk)?
                .items
                .unwrap_or_default();
            self.usage.record(
                call,
                0.0,
                crate::usage::read_units(found.len(), item_bytes, consistent),
            );
            rows.extend(found);
        }
        Ok(rows)
    }
}

/// An item's size as DynamoDB bills it, close enough to count write units:
/// each attribute's name plus its value (strings by length, numbers about one
/// byte per two digits, a map or list 3 bytes plus its elements).
fn item_bytes(item: &Item) -> usize {
    item.iter()
        .map(|(name, value)| name.len() + value_bytes(value))
        .sum()
}

fn value_bytes(value: &AttributeValue) -> usize {
    match value {
        AttributeValue::S(text) => text.len(),
        AttributeValue::N(number) => number.len().div_ceil(2) + 1,
        AttributeValue::B(bytes) => bytes.as_ref().len(),
        AttributeValue::Ss(texts) => texts.iter().map(String::len).sum(),
        AttributeValue::Ns(numbers) => numbers.iter().map(|n| n.len().div_ceil(2) + 1).sum(),
        AttributeValue::M(map) => 3 + item_bytes(map) + map.len(),
        AttributeValue::L(list) => 3 + list.iter().map(|v| value_bytes(v) + 1).sum::<usize>(),
        _ => 1,
    }
}

/// Write units for writing an item of `bytes` (1 per KB started).
fn write_units(bytes: usize) -> f64 {
    bytes.div_ceil(1024).max(1) as f64
}

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// Like register partitions as a DynamoDB number set (never empty when written).
fn partition_set(partitions: &std::collections::BTreeSet<u32>) -> AttributeValue {
    AttributeValue::Ns(partitions.iter().map(u32::to_string).collect())
}

fn key(pk: String, sk: String) -> Item {
    HashMap::from([(keys::PK.to_owned(), s(pk)), (keys::SK.to_owned(), s(sk))])
}

fn get_s<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
}

fn get_bool(item: &Item, name: &str) -> Option<bool> {
    item.get(name).and_then(|v| v.as_bool().ok()).copied()
}

fn get_i64(item: &Item, name: &str) -> Option<i64> {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|n| n.parse().ok())
}

fn corrupt(item: &Item, problem: impl Into<String>) -> StoreError {
    let key = format!(
        "{}/{}",
        get_s(item, keys::PK).unwrap_or("?"),
        get_s(item, keys::SK).unwrap_or("?")
    );
    StoreError::Corrupt {
        key,
        problem: problem.into(),
        source: None,
    }
}

/// [`corrupt`], keeping the error that found the problem as its source.
fn corrupt_because(
    item: &Item,
    problem: impl Into<String>,
    source: impl Into<BoxError>,
) -> StoreError {
    match corrupt(item, problem) {
        StoreError::Corrupt { key, problem, .. } => StoreError::Corrupt {
            key,
            problem,
            source: Some(source.into()),
        },
        other => other,
    }
}

fn required_s<'a>(item: &'a Item, name: &str) -> Result<&'a str, StoreError> {
    get_s(item, name).ok_or_else(|| corrupt(item, format!("missing {name}")))
}

/// One page of a list read newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass back to get the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// Pagination cursors are opaque to clients: base64url of a small JSON value.
#[allow(
    clippy::expect_used,
    reason = "cursors are Tally's own small structs of strings"
)]
pub(crate) fn encode_cursor<T: serde::Serialize>(value: &T) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(value).expect("cursor serializes"))
}

pub(crate) fn decode_cursor<T: serde::de::DeserializeOwned>(text: &str) -> Option<T> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_items_size_counts_its_names_and_values_and_bills_per_kb_started() {
        let item = Item::from([
            ("pk".to_owned(), s("POST#p1")),
            ("like_count".to_owned(), n(12345)),
            (
                "recent_likers".to_owned(),
                AttributeValue::M(Item::from([("alice".to_owned(), n(7))])),
            ),
        ]);
        // 2 + 7, 10 + (3 + 1), 13 + 3 + (5 + 2) + 1
        assert_eq!(item_bytes(&item), 9 + 14 + 24);
        assert_eq!(write_units(0), 1.0);
        assert_eq!(write_units(1024), 1.0);
        assert_eq!(write_units(1025), 2.0);
    }

    #[test]
    fn a_malformed_item_names_its_key_and_problem_and_keeps_what_found_it() {
        let item = key("POST#p 1".to_owned(), "COUNT".to_owned());
        let found = crate::domain::ids::PostId::parse("p 1").unwrap_err();
        let err = corrupt_because(&item, "bad post id", found.clone());
        assert_eq!(
            err.to_string(),
            "stored item POST#p 1/COUNT is malformed: bad post id"
        );
        let source = StdError::source(&err).expect("the identifier error is its source");
        assert_eq!(source.to_string(), found.to_string());
        assert!(
            StdError::source(&corrupt(&item, "missing like_count")).is_none(),
            "nothing found it but the check itself"
        );
    }
}
