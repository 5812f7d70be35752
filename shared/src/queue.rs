//! The SQS adapter. Every SQS call Tally makes is in this module.
//!
//! HTTP functions [`send`](OperationQueue::send) envelopes. The receive and delete
//! calls exist for the dev gateway, which plays Lambda's event source mapping
//! locally; deployed, AWS does that part.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::sqs::SqsMessage;
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, MessageSystemAttributeName, QueueAttributeName,
};

use crate::message::Envelope;
use crate::usage::Usage;

mod held;
pub use aws_sdk_sqs::Client;
pub use held::{HeldMessage, QueueFigures, queue_url};

type BoxError = Box<dyn StdError + Send + Sync>;

/// SQS takes at most this many messages per ReceiveMessage and DeleteMessageBatch.
pub const SQS_MAX_BATCH: usize = 10;

#[derive(Debug, thiserror::Error)]
#[error("SQS request failed: {action}")]
pub struct QueueError {
    action: &'static str,
    #[source]
    source: BoxError,
}

fn failed<E, R>(
    action: &'static str,
) -> impl FnOnce(aws_sdk_sqs::error::SdkError<E, R>) -> QueueError
where
    E: StdError + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    move |err| QueueError {
        action,
        source: Box::new(err),
    }
}

/// A batch request's entries, one per receipt handle, each with its index
/// as its id (unique within the batch, as SQS asks).
fn batch_entries<'a, T>(
    action: &'static str,
    receipt_handles: impl Iterator<Item = &'a str>,
    entry: impl Fn(String, &'a str) -> Result<T, aws_sdk_sqs::error::BuildError>,
) -> Result<Vec<T>, QueueError> {
    receipt_handles
        .enumerate()
        .map(|(i, handle)| {
            entry(i.to_string(), handle).map_err(|err| QueueError {
                action,
                source: Box::new(err),
            })
        })
        .collect()
}

/// A queue of operation envelopes.
#[derive(Debug, Clone)]
pub struct OperationQueue {
    client: Client,
    url: String,
    usage: Arc<Usage>,
}

/// A queue and the dead-letter queue its redrive policy moves poison messages to.
#[derive(Debug, Clone)]
pub struct QueuePair {
    pub queue: OperationQueue,
    pub dead_letters: OperationQueue,
}

impl OperationQueue {
    pub fn new(client: Client, url: impl Into<String>) -> Self {
        Self {
            client,
            url: url.into(),
            usage: Arc::default(),
        }
    }

    /// The same queue, counting its calls on `usage`.
    pub fn with_usage(self, usage: Arc<Usage>) -> Self {
        Self { usage, ..self }
    }

    pub fn from_config(aws: &aws_config::SdkConfig, url: impl Into<String>) -> Self {
        Self::new(Client::new(aws), url)
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Puts one envelope on the queue. `Ok` means SQS stored it durably.
    pub async fn send(&self, envelope: &Envelope) -> Result<(), QueueError> {
        self.send_in_group(envelope, None).await
    }

    /// Puts one envelope on a FIFO queue: messages of one group are delivered in
    /// the order sent, and an identical body sent again within five minutes is
    /// dropped by SQS (content-based deduplication).
    pub async fn send_ordered(&self, envelope: &Envelope, group: &str) -> Result<(), QueueError> {
        self.send_in_group(envelope, Some(group)).await
    }

    async fn send_in_group(
        &self,
        envelope: &Envelope,
        group: Option<&str>,
    ) -> Result<(), QueueError> {
        self.client
            .send_message()
            .queue_url(&self.url)
            .message_body(envelope.encode())
            .set_message_group_id(group.map(str::to_owned))
            .send()
            .await
            .map_err(failed("SendMessage"))?;
        self.usage.record("sqs:SendMessage send", 0.0, 0.0);
        Ok(())
    }

    /// Puts a message that can never be applied on this (dead-letter) queue as it
    /// came, in its group when it had one; `deduplication_id` (its first message
    /// id) keeps a retried move from storing it twice.
    pub async fn forward(
        &self,
        body: &str,
        group: Option<&str>,
        deduplication_id: &str,
    ) -> Result<(), QueueError> {
        self.client
            .send_message()
            .queue_url(&self.url)
            .message_body(body)
            .set_message_group_id(group.map(str::to_owned))
            .set_message_deduplication_id(group.map(|_| deduplication_id.to_owned()))
            .send()
            .await
            .map_err(failed("SendMessage"))?;
        self.usage.record("sqs:SendMessage forward", 0.0, 0.0);
        Ok(())
    }

    pub async fn arn(&self) -> Result<String, QueueError> {
        Ok(self
            .attributes(QueueAttributeName::QueueArn)
            .await?
            .remove(&QueueAttributeName::QueueArn)
            .unwrap_or_default())
    }

    /// Messages in the queue, visible or in flight (SQS's approximate figures; exact on the emulator).
    pub async fn depth(&self) -> Result<u64, QueueError> {
        let attributes = self.attributes(QueueAttributeName::All).await?;
        let count = |name: QueueAttributeName| {
            attributes
                .get(&name)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        Ok(count(QueueAttributeName::ApproximateNumberOfMessages)
            + count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible))
    }

    async fn attributes(
        &self,
        name: QueueAttributeName,
    ) -> Result<HashMap<QueueAttributeName, String>, QueueError> {
        Ok(self
            .client
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(name)
            .send()
            .await
            .map_err(failed("GetQueueAttributes"))?
            .attributes
            .unwrap_or_default())
    }

    /// Receives up to 10 messages, waiting up to `wait` for the first, shaped as
    /// Lambda's event source mapping hands them to a function.
    pub async fn receive(
        &self,
        max: usize,
        wait: Duration,
        source_arn: &str,
        region: &str,
    ) -> Result<Vec<SqsMessage>, QueueError> {
        let output = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max.clamp(1, SQS_MAX_BATCH) as i32)
            .wait_time_seconds(wait.as_secs() as i32)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .map_err(failed("ReceiveMessage"))?;
        self.usage.record("sqs:ReceiveMessage receive", 0.0, 0.0);
        Ok(output
            .messages
            .unwrap_or_default()
            .into_iter()
            .map(|m| {
                let mut message = SqsMessage::default();
                message.message_id = m.message_id;
                message.receipt_handle = m.receipt_handle;
                message.body = m.body;
                message.md5_of_body = m.md5_of_body;
                message.attributes = m
                    .attributes
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k.as_str().to_owned(), v))
                    .collect();
                message.event_source = Some("aws:sqs".to_owned());
                message.event_source_arn = Some(source_arn.to_owned());
                message.aws_region = Some(region.to_owned());
                message
            })
            .collect())
    }

    /// Deletes received messages by receipt handle, 10 per request.
    pub async fn delete(&self, receipt_handles: &[String]) -> Result<(), QueueError> {
        for chunk in receipt_handles.chunks(SQS_MAX_BATCH) {
            let entries = batch_entries(
                "DeleteMessageBatch",
                chunk.iter().map(String::as_str),
                |id, handle| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(id)
                        .receipt_handle(handle)
                        .build()
                },
            )?;
            let output = self
                .client
                .delete_message_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(failed("DeleteMessageBatch"))?;
            self.usage.record("sqs:DeleteMessageBatch delete", 0.0, 0.0);
            if !output.failed.is_empty() {
                return Err(QueueError {
                    action: "DeleteMessageBatch",
                    source: format!("{} deletes failed", output.failed.len()).into(),
                });
            }
        }
        Ok(())
    }
}

/// The figures of the worker's event source mappings and queues that Tally's
/// code relies on (the capacity plan, reconcile's re-drive bound).
/// `template.yaml` deploys them and the dev gateway reads them from there;
/// `tests/tests/template.rs` fails when the two disagree.
pub mod mapping {
    use std::time::Duration;

    /// Messages per worker invocation. Counter writes are one per post per
    /// batch, so under load a bigger batch means fewer of them: a viral post's
    /// likes collapse into one counter write per batch, and a long-tail feed
    /// (Zipf over 1,000 posts) needs about 0.33 counter writes per like at
    /// 1,000 messages against 0.63 at 100 (BENCHMARKS.md). At low traffic the
    /// 1 s window closes the batch first, so counts lag no more. 1,000 messages
    /// (~1 MB of event) at 16 writes in flight take well under a second on
    /// DynamoDB, far inside the worker's timeout.
    pub const BATCH_SIZE: usize = 1000;
    /// Worker invocations the likes mapping runs at once (`ScalingConfig`).
    /// It bounds a hot post's counter writes: each invocation writes it once
    /// per batch, and a batch that fills slowly closes with its window
    /// ([`crate::capacity`]). 100 invocations apply far more than 50,000
    /// likes per second (docs/capacity.md).
    pub const MAX_CONCURRENCY: u32 = 100;
    /// How long the mapping waits to fill a batch.
    pub const BATCHING_WINDOW: Duration = Duration::from_secs(1);
    /// AWS advises at least six times the function timeout.
    pub const VISIBILITY_TIMEOUT: Duration = Duration::from_secs(180);
    /// Receives before SQS gives up on a message and moves it to the dead-letter queue.
    pub const MAX_RECEIVE_COUNT: u32 = 5;
}
