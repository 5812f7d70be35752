//! Lambda's DynamoDB stream event source mapping, played locally: read each
//! shard from its checkpoint, hand the events function a batch shaped as Lambda
//! delivers it, and move the checkpoint past what it did not report failed.
//!
//! As on AWS: a partial batch response checkpoints the records before the
//! first failure and delivers again from it; a failed invocation delivers the
//! whole batch again; a batch failing more than `MaximumRetryAttempts` times
//! (never, at -1) is reported to the on-failure queue by shard and sequence
//! numbers and skipped. Bisecting a batch on a function error is not played:
//! the events function never answers an error for a batch.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lambda_events::dynamodb::{Event as StreamEvent, EventRecord, StreamRecord};
use aws_sdk_dynamodbstreams::Client;
use aws_sdk_dynamodbstreams::types::{Record, ShardIteratorType};
use events::Publisher;
use lambda_runtime::LambdaEvent;
use shared::http::error_chain;
use shared::queue::OperationQueue;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Pause between polls of a stream with nothing new.
const IDLE_PAUSE: Duration = Duration::from_millis(200);

/// A stream mapping's settings, as `template.yaml` gives them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSettings {
    pub batch_size: usize,
    /// -1: retried until it succeeds.
    pub maximum_retry_attempts: i64,
    pub function_timeout: Duration,
}

/// A fault to inject into one poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamFault {
    None,
    /// The poller dies after the function returned, before its checkpoint
    /// moves: the same records are delivered again.
    CrashBeforeCheckpoint,
}

/// Where a shard is read from next.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Position {
    Start,
    At(String),
    After(String),
}

#[derive(Debug, Clone, Default)]
struct ShardState {
    position: Option<Position>,
    /// Deliveries of the batch starting at the current position that failed.
    failures: i64,
}

/// What one poll did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StreamPoll {
    pub received: usize,
    /// Records delivered again (from the first failure on).
    pub failed: usize,
}

#[derive(Debug, Clone)]
pub struct StreamMapping {
    client: Client,
    stream_arn: String,
    region: String,
    settings: StreamSettings,
    on_failure: Option<OperationQueue>,
    shards: Arc<Mutex<BTreeMap<String, ShardState>>>,
}

impl StreamMapping {
    /// A mapping reading `stream_arn` from its oldest record (`TRIM_HORIZON`,
    /// the only starting position played locally).
    pub fn new(
        client: Client,
        stream_arn: &str,
        settings: StreamSettings,
        on_failure: Option<OperationQueue>,
    ) -> Self {
        let region = stream_arn
            .split(':')
            .nth(3)
            .unwrap_or("us-east-1")
            .to_owned();
        Self {
            client,
            stream_arn: stream_arn.to_owned(),
            region,
            settings,
            on_failure,
            shards: Arc::default(),
        }
    }

    /// One batch from each shard with records waiting.
    pub async fn poll_once(&self, publisher: &Publisher) -> Result<StreamPoll, BoxError> {
        self.poll_once_with(publisher, StreamFault::None).await
    }

    /// [`poll_once`](Self::poll_once) with an injected fault, for tests.
    pub async fn poll_once_with(
        &self,
        publisher: &Publisher,
        fault: StreamFault,
    ) -> Result<StreamPoll, BoxError> {
        let shards = self
            .client
            .describe_stream()
            .stream_arn(&self.stream_arn)
            .send()
            .await?
            .stream_description
            .and_then(|description| description.shards)
            .unwrap_or_default();
        let mut poll = StreamPoll::default();
        for shard in shards {
            let Some(shard_id) = shard.shard_id else {
                continue;
            };
            let done = self.poll_shard(publisher, &shard_id, fault).await?;
            poll.received += done.received;
            poll.failed += done.failed;
        }
        Ok(poll)
    }

    async fn poll_shard(
        &self,
        publisher: &Publisher,
        shard_id: &str,
        fault: StreamFault,
    ) -> Result<StreamPoll, BoxError> {
        let state = self.state(shard_id);
        let position = state.position.clone().unwrap_or(Position::Start);
        let request = self
            .client
            .get_shard_iterator()
            .stream_arn(&self.stream_arn)
            .shard_id(shard_id);
        let request = match &position {
            Position::Start => request.shard_iterator_type(ShardIteratorType::TrimHorizon),
            Position::At(sequence) => request
                .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
                .sequence_number(sequence),
            Position::After(sequence) => request
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .sequence_number(sequence),
        };
        let Some(iterator) = request.send().await?.shard_iterator else {
            return Ok(StreamPoll::default());
        };
        let records = self
            .client
            .get_records()
            .shard_iterator(iterator)
            .limit(i32::try_from(self.settings.batch_size).unwrap_or(1000))
            .send()
            .await?
            .records
            .unwrap_or_default();
        let Some(last) = records
            .last()
            .and_then(|record| record.dynamodb.as_ref()?.sequence_number.clone())
        else {
            return Ok(StreamPoll::default());
        };
        let first = records
            .first()
            .and_then(|record| record.dynamodb.as_ref()?.sequence_number.clone())
            .unwrap_or_default();
        let event = self.event_of(&records);
        let received = event.records.len();
        let failed_from = match self.invoke(publisher, event).await {
            Ok(response) => response
                .batch_item_failures
                .into_iter()
                .filter_map(|failure| failure.item_identifier)
                .min_by(|a, b| compare_sequence_numbers(a, b)),
            Err(err) => {
                tracing::error!(error = %err, "events function invocation failed");
                Some(first.clone())
            }
        };
        if fault == StreamFault::CrashBeforeCheckpoint {
            return Ok(StreamPoll {
                received,
                failed: received,
            });
        }
        let Some(failed_from) = failed_from else {
            self.checkpoint(shard_id, Position::After(last), 0);
            return Ok(StreamPoll {
                received,
                failed: 0,
            });
        };
        let failed = records
            .iter()
            .filter(|record| {
                record
                    .dynamodb
                    .as_ref()
                    .and_then(|change| change.sequence_number.as_deref())
                    .is_some_and(|sequence| {
                        compare_sequence_numbers(sequence, &failed_from).is_ge()
                    })
            })
            .count();
        let failures = if position == Position::At(failed_from.clone()) {
            state.failures + 1
        } else {
            1
        };
        let retries = self.settings.maximum_retry_attempts;
        if retries >= 0 && failures > retries {
            self.give_up(shard_id, &failed_from, &last).await?;
            self.checkpoint(shard_id, Position::After(last), 0);
        } else {
            self.checkpoint(shard_id, Position::At(failed_from), failures);
        }
        Ok(StreamPoll { received, failed })
    }

    fn state(&self, shard_id: &str) -> ShardState {
        self.shards
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(shard_id)
            .cloned()
            .unwrap_or_default()
    }

    fn checkpoint(&self, shard_id: &str, position: Position, failures: i64) {
        self.shards
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(
                shard_id.to_owned(),
                ShardState {
                    position: Some(position),
                    failures,
                },
            );
    }

    /// What Lambda sends its on-failure destination for a stream batch it
    /// gives up on: where the records are, not the records.
    async fn give_up(&self, shard_id: &str, first: &str, last: &str) -> Result<(), BoxError> {
        let Some(queue) = &self.on_failure else {
            return Ok(());
        };
        let note = serde_json::json!({
            "requestContext": { "condition": "RetryAttemptsExhausted" },
            "DDBStreamBatchInfo": {
                "shardId": shard_id,
                "startSequenceNumber": first,
                "endSequenceNumber": last,
                "streamArn": self.stream_arn,
            },
        });
        queue.forward(&note.to_string(), None, first).await?;
        Ok(())
    }

    async fn invoke(
        &self,
        publisher: &Publisher,
        event: StreamEvent,
    ) -> Result<aws_lambda_events::streams::DynamoDbEventResponse, lambda_runtime::Error> {
        let context = crate::pump::invocation_context(self.settings.function_timeout);
        publisher.handle(LambdaEvent::new(event, context)).await
    }

    /// The records as Lambda hands them to a function.
    fn event_of(&self, records: &[Record]) -> StreamEvent {
        let mut event = StreamEvent::default();
        for record in records {
            let Some(change) = &record.dynamodb else {
                continue;
            };
            let image = |map: Option<&std::collections::HashMap<String, _>>| -> serde_dynamo::Item {
                map.cloned().unwrap_or_default().into()
            };
            let mut stream_record = StreamRecord::default();
            stream_record.keys = image(change.keys.as_ref());
            stream_record.new_image = image(change.new_image.as_ref());
            stream_record.old_image = image(change.old_image.as_ref());
            stream_record.sequence_number = change.sequence_number.clone();
            stream_record.size_bytes = change.size_bytes.unwrap_or_default();
            stream_record.stream_view_type =
                Some(aws_lambda_events::dynamodb::StreamViewType::NewAndOldImages);
            if let Some(at) = change.approximate_creation_date_time {
                stream_record.approximate_creation_date_time =
                    chrono_of(at.secs(), at.subsec_nanos());
            }
            let mut event_record = EventRecord::default();
            event_record.aws_region = self.region.clone();
            event_record.change = stream_record;
            event_record.event_id = record.event_id.clone().unwrap_or_default();
            event_record.event_name = record
                .event_name
                .as_ref()
                .map(|name| name.as_str().to_owned())
                .unwrap_or_default();
            event_record.event_source = Some("aws:dynamodb".to_owned());
            event_record.event_version = record.event_version.clone();
            event_record.event_source_arn = Some(self.stream_arn.clone());
            event.records.push(event_record);
        }
        event
    }

    /// Polls until the process stops, logging (not dying on) stream errors.
    pub async fn run(self, publisher: Publisher) {
        loop {
            match self.poll_once(&publisher).await {
                Ok(poll) if poll.received > 0 && poll.failed == 0 => {}
                Ok(_) => tokio::time::sleep(IDLE_PAUSE).await,
                Err(err) => {
                    tracing::warn!(error = %error_chain(err.as_ref()), "reading the stream failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}

/// Sequence numbers are decimal strings of up to 40 digits: compared as numbers.
fn compare_sequence_numbers(a: &str, b: &str) -> std::cmp::Ordering {
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

fn chrono_of(secs: i64, nanos: u32) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(secs, nanos).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn sequence_numbers_compare_as_numbers() {
        use std::cmp::Ordering::*;
        assert_eq!(super::compare_sequence_numbers("99", "100"), Less);
        assert_eq!(super::compare_sequence_numbers("100", "100"), Equal);
        assert_eq!(super::compare_sequence_numbers("101", "100"), Greater);
    }
}
