//! The events function: the table's DynamoDB stream in, events on the
//! EventBridge bus out (SPEC section 8; docs/events.md).
//!
//! For each batch of stream records, in order: read what each record says
//! happened (`store::changes`), work out its event (`domain::events`), and
//! publish them all (`bus`), retrying what EventBridge did not take.
//!
//! - **Never lost.** An event still unpublished after the bus's retries makes
//!   its record the batch's failure (a partial batch response): Lambda
//!   checkpoints the records before it and delivers again from it, so it and
//!   everything after it are published again. The stream keeps records 24
//!   hours; the `EventsIteratorAgeAlarm` fires long before.
//! - **Deduplicable.** An event's id is derived from what it reports, so a
//!   record delivered again, or an event published again, has the same id.
//! - **A record it cannot read** is set aside on the events dead-letter queue,
//!   whole, with why, and the batch goes on: one bad item never holds up the
//!   stream. Only if that send fails is the record the batch's failure.
//! - The function never answers an error for a batch, so Lambda's
//!   bisect-on-error only meets a crash or a timeout.

use aws_lambda_events::dynamodb::{Event as StreamEvent, EventRecord};
use aws_lambda_events::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use lambda_runtime::{Error, LambdaEvent};
use shared::bus::{EventBus, Outgoing};
use shared::domain::events::{Change, events_of};
use shared::http::error_chain;
use shared::queue::OperationQueue;
use shared::store::changes::change_of;
use shared::store::{Item, StoreError};

/// Time kept back from the invocation's deadline to answer.
const DEADLINE_MARGIN_MS: u64 = 5_000;
/// What a set-aside message may hold (SQS takes 256 KiB).
const MAX_SET_ASIDE_BYTES: usize = 200 * 1024;

fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

/// The SDK timeouts of the events function's clients (`Timeout: 30`).
pub const TIMEOUTS: shared::config::Timeouts = shared::config::Timeouts::WORKER;

/// The environment variables `from_env` reads (template.yaml sets exactly these).
pub const ENVIRONMENT: &[&str] = &[
    shared::config::EVENT_BUS_NAME,
    shared::config::EVENTS_DEAD_LETTER_QUEUE_URL,
];

#[derive(Debug, Clone)]
pub struct Publisher {
    pub bus: EventBus,
    /// Where records it cannot read are set aside.
    pub dead_letters: OperationQueue,
}

/// What one batch came to.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BatchOutcome {
    pub published: usize,
    pub set_aside: usize,
    /// The sequence number Lambda delivers again from, if any.
    pub failed_from: Option<String>,
}

/// A record's events, or why it could not be read.
struct Read {
    sequence_number: String,
    result: Result<Vec<Outgoing>, String>,
}

impl Publisher {
    pub fn new(bus: EventBus, dead_letters: OperationQueue) -> Self {
        Self { bus, dead_letters }
    }

    pub async fn from_env() -> Result<Self, shared::config::ConfigError> {
        let bus = shared::config::event_bus_name()?;
        let dead_letters = shared::config::events_dead_letter_queue_url()?;
        let aws = shared::config::aws(TIMEOUTS).await;
        Ok(Self::new(
            EventBus::from_config(&aws, bus),
            OperationQueue::from_config(&aws, dead_letters),
        ))
    }

    /// The Lambda handler: a partial batch response naming the first record
    /// not fully published, if any.
    pub async fn handle(
        &self,
        event: LambdaEvent<StreamEvent>,
    ) -> Result<DynamoDbEventResponse, Error> {
        // Stop publishing in time to answer: what is left is delivered again.
        let deadline = event.context.deadline;
        let until = (deadline > 0).then(|| {
            let left = deadline
                .saturating_sub(now_millis())
                .saturating_sub(DEADLINE_MARGIN_MS);
            tokio::time::Instant::now() + std::time::Duration::from_millis(left)
        });
        let outcome = self.publish_batch(&event.payload.records, until).await;
        let mut response = DynamoDbEventResponse::default();
        if let Some(sequence_number) = outcome.failed_from {
            let mut failure = DynamoDbBatchItemFailure::default();
            failure.item_identifier = Some(sequence_number);
            response.batch_item_failures.push(failure);
        }
        Ok(response)
    }

    /// Publishes the records' events; `until` bounds the time spent.
    pub async fn publish_batch(
        &self,
        records: &[EventRecord],
        until: Option<tokio::time::Instant>,
    ) -> BatchOutcome {
        let reads: Vec<Read> = records.iter().map(read).collect();
        let mut outgoing = Vec::new();
        // For each event, the record it came from.
        let mut from_record = Vec::new();
        for (index, read) in reads.iter().enumerate() {
            for event in read.result.iter().flatten() {
                outgoing.push(event.clone());
                from_record.push(index);
            }
        }
        let mut outcome = BatchOutcome::default();
        // Records from this one on are delivered again.
        let mut failed_record = reads.len();
        match self.bus.publish(&outgoing, until).await {
            Ok(()) => outcome.published = outgoing.len(),
            Err(unpublished) => {
                failed_record = from_record
                    .get(unpublished.first)
                    .copied()
                    .unwrap_or_default();
                outcome.published = unpublished.first;
                tracing::warn!(error = %unpublished, "events not published; the stream delivers them again");
            }
        }
        // Records before the failure that could not be read are set aside; any
        // after it are read again on the next delivery.
        for (index, read) in reads.iter().enumerate().take(failed_record) {
            let Err(problem) = &read.result else {
                continue;
            };
            let record = records.get(index);
            let mut body = serde_json::json!({
                "problem": problem,
                "record": record,
            });
            if body.to_string().len() > MAX_SET_ASIDE_BYTES {
                // Both images of a large item exceed what SQS takes: keep
                // where it is (read it again from the table or the stream).
                body = serde_json::json!({
                    "problem": problem,
                    "record_too_large": true,
                    "keys": record.map(|r| &r.change.keys),
                    "sequence_number": read.sequence_number,
                    "event_source_arn": record.and_then(|r| r.event_source_arn.as_ref()),
                });
            }
            match self
                .dead_letters
                .forward(&body.to_string(), None, &read.sequence_number)
                .await
            {
                Ok(()) => {
                    outcome.set_aside += 1;
                    tracing::error!(sequence_number = %read.sequence_number, %problem, "stream record set aside");
                }
                Err(err) => {
                    tracing::error!(error = %error_chain(&err), "setting a stream record aside failed; it is delivered again");
                    failed_record = index;
                    break;
                }
            }
        }
        outcome.failed_from = reads
            .get(failed_record)
            .map(|read| read.sequence_number.clone());
        outcome
    }
}

fn read(record: &EventRecord) -> Read {
    let change = &record.change;
    let sequence_number = change.sequence_number.clone().unwrap_or_default();
    let keys: Item = change.keys.clone().into();
    let old: Item = change.old_image.clone().into();
    let new: Item = change.new_image.clone().into();
    let result = change_of(&keys, &old, &new)
        .map(|change| {
            // The item's partition, and every account whose entries it reports.
            let mut ordering_keys: Vec<String> = keys
                .get(shared::store::keys::PK)
                .and_then(|pk| pk.as_s().ok())
                .cloned()
                .into_iter()
                .collect();
            if let Change::Operation { now, .. } = &change {
                ordering_keys.extend(
                    now.entries
                        .iter()
                        .map(|entry| shared::store::keys::account_pk(&entry.user_id)),
                );
            }
            events_of(&change)
                .into_iter()
                .map(|event| Outgoing {
                    event,
                    ordering_keys: ordering_keys.clone(),
                })
                .collect()
        })
        .map_err(|err: StoreError| error_chain(&err));
    Read {
        sequence_number,
        result,
    }
}
