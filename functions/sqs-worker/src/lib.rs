//! The worker: applies queued operations to DynamoDB, idempotently.
//!
//! A batch of like operations is applied in two steps:
//! 1. each operation moves its (user, post) register with one conditional write
//!    ([`Store::apply_like`]), which says how the post's count changes;
//! 2. each post touched by the batch gets **one** counter write carrying the
//!    batch's net change for it, however many likes it took.
//!
//! A redelivered or out-of-order message fails its condition in step 1 and
//! changes nothing. Should the worker die between the steps, the redelivered
//! messages still mark their posts changed in step 2, and reconcile recounts them.
//!
//! Failures are per message (`ReportBatchItemFailures`): a message that cannot
//! be decoded, or whose writes failed, is reported alone and redelivered by SQS
//! until the redrive policy moves it to the dead-letter queue.

pub mod points;

use std::collections::HashMap;

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use futures::StreamExt as _;
use lambda_runtime::LambdaEvent;
use shared::domain::ids::PostId;
use shared::domain::likes::{LikeOperation, LikeOutcome};
use shared::domain::points::PointTypes;
use shared::http::error_chain;
use shared::message::Envelope;
use shared::store::{Store, StoreError};

use crate::points::PointsOutcome;

/// DynamoDB requests one batch keeps in flight at once.
const CONCURRENT_WRITES: usize = 16;

#[derive(Debug, Clone)]
pub struct Worker {
    pub store: Store,
    pub point_types: PointTypes,
}

impl Worker {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            point_types: PointTypes::shipped(),
        }
    }

    pub async fn from_env() -> Result<Self, shared::config::ConfigError> {
        let table = shared::config::table_name()?;
        let aws = shared::config::aws().await;
        Ok(Self::new(Store::from_config(&aws, table)))
    }

    /// The Lambda handler: applies the batch and names the messages to retry.
    pub async fn handle(
        &self,
        event: LambdaEvent<SqsEvent>,
    ) -> Result<SqsBatchResponse, lambda_runtime::Error> {
        let report = self.apply_batch(event.payload.records).await;
        tracing::info!(
            messages = report.messages,
            applied = report.applied,
            duplicates = report.duplicates,
            superseded = report.superseded,
            rejected = report.rejected,
            failed = report.failed.len(),
            counter_writes = report.counter_writes,
            "batch done"
        );
        let mut response = SqsBatchResponse::default();
        response.batch_item_failures = report
            .failed
            .into_iter()
            .map(|id| {
                let mut failure = BatchItemFailure::default();
                failure.item_identifier = id;
                failure
            })
            .collect();
        Ok(response)
    }

    /// Applies every message it can; the report lists the ones SQS must redeliver.
    pub async fn apply_batch(&self, messages: Vec<SqsMessage>) -> BatchReport {
        let mut report = BatchReport {
            messages: messages.len(),
            ..BatchReport::default()
        };
        let mut likes = Vec::new();
        let mut points_ops = Vec::new();
        for message in messages {
            let id = message.message_id.unwrap_or_default();
            let decoded = message
                .body
                .as_deref()
                .ok_or_else(|| "message has no body".to_owned())
                .and_then(|body| Envelope::decode(body).map_err(|e| e.to_string()));
            match decoded {
                Ok(envelope) => match (envelope.like_operation(), envelope.points_operation()) {
                    (Some(like), _) => likes.push((id, like)),
                    (None, Some(op)) => points_ops.push((id, op)),
                    (None, None) => report.fail(id, "no handler for this operation"),
                },
                Err(reason) => {
                    tracing::error!(message_id = %id, %reason, "undecodable message");
                    report.fail(id, "undecodable");
                }
            }
        }
        let outcomes = self.apply_registers(likes).await;
        self.apply_counters(outcomes, &mut report).await;
        for (id, outcome) in
            points::apply_in_groups(&self.store, &self.point_types, points_ops).await
        {
            match outcome {
                Some(PointsOutcome::Applied) => report.applied += 1,
                Some(PointsOutcome::Rejected) => report.rejected += 1,
                Some(PointsOutcome::AlreadyDone) => report.duplicates += 1,
                None => report.fail(id, "points operation failed"),
            }
        }
        report
    }

    /// Step 1: one conditional write per operation, at most [`CONCURRENT_WRITES`] at once.
    pub async fn apply_registers(
        &self,
        likes: Vec<(String, LikeOperation)>,
    ) -> Vec<RegisterOutcome> {
        futures::stream::iter(likes)
            .map(|(message_id, like)| async move {
                let outcome = self.store.apply_like(&like).await;
                RegisterOutcome {
                    message_id,
                    like,
                    outcome,
                }
            })
            .buffer_unordered(CONCURRENT_WRITES)
            .collect()
            .await
    }

    /// Step 2: one counter write per post with the batch's net change for it.
    pub async fn apply_counters(&self, outcomes: Vec<RegisterOutcome>, report: &mut BatchReport) {
        let mut by_post: HashMap<PostId, PostChange> = HashMap::new();
        for RegisterOutcome {
            message_id,
            like,
            outcome,
        } in outcomes
        {
            let outcome = match outcome {
                Ok(outcome) => outcome,
                Err(err) => {
                    tracing::warn!(message_id = %message_id, operation_id = %like.operation_id, error = %error_chain(&err), "register write failed");
                    report.fail(message_id, "register write failed");
                    continue;
                }
            };
            match outcome {
                LikeOutcome::Applied { .. } => report.applied += 1,
                LikeOutcome::AlreadyApplied => report.duplicates += 1,
                LikeOutcome::Superseded => report.superseded += 1,
            }
            tracing::debug!(operation_id = %like.operation_id, ?outcome, "register");
            let change = by_post.entry(like.post).or_default();
            change.delta += outcome.count_delta();
            change.message_ids.push(message_id);
        }
        report.counter_writes = by_post.len();
        let writes = futures::stream::iter(by_post)
            .map(|(post, change)| async move {
                let result = self.store.add_to_like_count(&post, change.delta).await;
                (post, change, result)
            })
            .buffer_unordered(CONCURRENT_WRITES)
            .collect::<Vec<_>>()
            .await;
        for (post, change, result) in writes {
            if let Err(err) = result {
                // The registers moved but the count did not: redelivery marks the
                // post changed and reconcile recounts it.
                tracing::warn!(post = %post, error = %error_chain(&err), "counter write failed");
                for id in change.message_ids {
                    report.fail(id, "counter write failed");
                }
            }
        }
    }
}

/// What step 1 did with one message.
#[derive(Debug)]
pub struct RegisterOutcome {
    pub message_id: String,
    pub like: LikeOperation,
    pub outcome: Result<LikeOutcome, StoreError>,
}

#[derive(Debug, Default)]
struct PostChange {
    delta: i64,
    message_ids: Vec<String>,
}

/// What one batch did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BatchReport {
    pub messages: usize,
    pub applied: usize,
    pub duplicates: usize,
    pub superseded: usize,
    /// Points operations rejected (for good: insufficient points, unknown type).
    pub rejected: usize,
    /// Message ids SQS must deliver again.
    pub failed: Vec<String>,
    pub counter_writes: usize,
}

impl BatchReport {
    fn fail(&mut self, message_id: String, why: &'static str) {
        tracing::debug!(message_id = %message_id, why, "message failed");
        self.failed.push(message_id);
    }
}
