//! A queue as its operator reads it (`tally-admin`): its figures, its messages
//! held out of sight while they are looked at, and a message moved back to the
//! queue it came from. The functions never make these calls.

use std::time::Duration;

use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, MessageSystemAttributeName, QueueAttributeName,
};

use super::{OperationQueue, QueueError, SQS_MAX_BATCH, batch_entries, failed};

/// What `GetQueueAttributes` says of a queue (approximate on SQS).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct QueueFigures {
    /// Waiting to be received.
    pub visible: u64,
    /// Received and not yet deleted (a worker on them, or an operator holding them).
    pub in_flight: u64,
    pub delayed: u64,
}

/// A message received and hidden from other readers until it is let go,
/// deleted, or its hold runs out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldMessage {
    pub message_id: String,
    pub receipt_handle: String,
    pub body: String,
    /// A FIFO queue's message group (the account, for points messages).
    pub group_id: Option<String>,
    pub deduplication_id: Option<String>,
    /// When the message was first sent, in milliseconds since the epoch (SQS
    /// keeps it when its redrive policy moves a message).
    pub sent_at_ms: Option<i64>,
    /// Receives so far, this one included.
    pub receive_count: u32,
}

/// Receives that come back empty before a queue counts as read: SQS samples
/// its servers on a short receive, so one empty answer proves little.
const EMPTY_RECEIVES_TO_STOP: u32 = 2;

impl OperationQueue {
    pub async fn figures(&self) -> Result<QueueFigures, QueueError> {
        let attributes = self.attributes(QueueAttributeName::All).await?;
        let count = |name: QueueAttributeName| {
            attributes
                .get(&name)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        Ok(QueueFigures {
            visible: count(QueueAttributeName::ApproximateNumberOfMessages),
            in_flight: count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
            delayed: count(QueueAttributeName::ApproximateNumberOfMessagesDelayed),
        })
    }

    /// Receives up to `max` messages and hides them for `hold_for`. A FIFO
    /// queue shows at most the first ten of each group until those are
    /// deleted or let go: SQS locks a group while any of its messages is held.
    pub async fn hold(
        &self,
        max: usize,
        hold_for: Duration,
    ) -> Result<Vec<HeldMessage>, QueueError> {
        let mut held = Vec::new();
        let mut empty = 0;
        while held.len() < max && empty < EMPTY_RECEIVES_TO_STOP {
            let output = self
                .client
                .receive_message()
                .queue_url(&self.url)
                .max_number_of_messages((max - held.len()).clamp(1, SQS_MAX_BATCH) as i32)
                .visibility_timeout(hold_for.as_secs().max(1) as i32)
                .wait_time_seconds(1)
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .send()
                .await
                .map_err(failed("ReceiveMessage"))?;
            self.usage.record("sqs:ReceiveMessage hold", 0.0, 0.0);
            let messages = output.messages.unwrap_or_default();
            empty = if messages.is_empty() { empty + 1 } else { 0 };
            for message in messages {
                let attributes = message.attributes.unwrap_or_default();
                let attribute = |name: MessageSystemAttributeName| attributes.get(&name).cloned();
                held.push(HeldMessage {
                    message_id: message.message_id.unwrap_or_default(),
                    receipt_handle: message.receipt_handle.unwrap_or_default(),
                    body: message.body.unwrap_or_default(),
                    group_id: attribute(MessageSystemAttributeName::MessageGroupId),
                    deduplication_id: attribute(MessageSystemAttributeName::MessageDeduplicationId),
                    sent_at_ms: attribute(MessageSystemAttributeName::SentTimestamp)
                        .and_then(|v| v.parse().ok()),
                    receive_count: attribute(MessageSystemAttributeName::ApproximateReceiveCount)
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0),
                });
            }
        }
        Ok(held)
    }

    /// Makes held messages visible again at once.
    pub async fn let_go(&self, held: &[HeldMessage]) -> Result<(), QueueError> {
        for chunk in held.chunks(SQS_MAX_BATCH) {
            let entries = batch_entries(
                "ChangeMessageVisibilityBatch",
                chunk.iter().map(|message| message.receipt_handle.as_str()),
                |id, handle| {
                    ChangeMessageVisibilityBatchRequestEntry::builder()
                        .id(id)
                        .receipt_handle(handle)
                        .visibility_timeout(0)
                        .build()
                },
            )?;
            let output = self
                .client
                .change_message_visibility_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(failed("ChangeMessageVisibilityBatch"))?;
            if !output.failed.is_empty() {
                return Err(QueueError {
                    action: "ChangeMessageVisibilityBatch",
                    source: format!("{} messages not let go", output.failed.len()).into(),
                });
            }
        }
        Ok(())
    }

    /// Moves a held message to `to` (its source queue), then deletes it here.
    ///
    /// In a FIFO queue it keeps its group, so it takes its place in its
    /// account's order, and is deduplicated by its id in this queue: a move
    /// repeated after a failure between the send and the delete is dropped by
    /// SQS within its 5-minute deduplication window, and after that the worker
    /// applies a points operation at most once by its operation id. (The
    /// message's first deduplication id would be dropped too if the message
    /// was first sent under 5 minutes ago, and the move lost.) A like sent
    /// twice applies once: its register keeps the newest version.
    pub async fn move_back(
        &self,
        message: &HeldMessage,
        to: &OperationQueue,
    ) -> Result<(), QueueError> {
        let deduplication_id = message
            .group_id
            .as_ref()
            .map(|_| format!("redrive-{}", message.message_id));
        to.client
            .send_message()
            .queue_url(&to.url)
            .message_body(&message.body)
            .set_message_group_id(message.group_id.clone())
            .set_message_deduplication_id(deduplication_id)
            .send()
            .await
            .map_err(failed("SendMessage"))?;
        to.usage.record("sqs:SendMessage redrive", 0.0, 0.0);
        self.delete(std::slice::from_ref(&message.receipt_handle))
            .await
    }

    /// Asks SQS to move every message of this dead-letter queue back to its
    /// source (`to`), as the console's redrive does; answers the task's handle.
    pub async fn start_move_task(&self, to: &OperationQueue) -> Result<String, QueueError> {
        let (from_arn, to_arn) = (self.arn().await?, to.arn().await?);
        let output = self
            .client
            .start_message_move_task()
            .source_arn(from_arn)
            .destination_arn(to_arn)
            .send()
            .await
            .map_err(failed("StartMessageMoveTask"))?;
        Ok(output.task_handle.unwrap_or_default())
    }
}

/// The URL of the queue named `name` (the local stack names its queues).
pub async fn queue_url(client: &aws_sdk_sqs::Client, name: &str) -> Result<String, QueueError> {
    Ok(client
        .get_queue_url()
        .queue_name(name)
        .send()
        .await
        .map_err(failed("GetQueueUrl"))?
        .queue_url
        .unwrap_or_default())
}
