//! The worker: decodes each queued message, hands its operation to the likes
//! or points service, and reports the messages SQS must deliver again.
//!
//! - Likes: [`LikesService::apply_batch`] (latest operation per register, one
//!   counter write per post with the batch's net change).
//! - Points: [`PointsService::apply_in_order`] (account groups in order).
//!
//! Each message gets one span, `message` (its `message_id`, and its
//! `operation_id` once read), which every line about it is logged in; the
//! batch's summary is logged in the invocation's `batch` span.
//!
//! Every message is held to the rules HTTP applies ([`Envelope::read`]), and no
//! message can fail the ones batched with it (SPEC section 4):
//! - a points message that breaks a rule but names its caller and operation id
//!   ends `rejected` (`invalid_operation`, with the rule in `detail`);
//! - one that names nobody, and a like that breaks a rule, is set aside: from
//!   the points FIFO queue the worker moves it to the dead-letter queue itself,
//!   so its message group waits no longer than this one receive; from the likes
//!   queue it is reported failed and SQS's redrive policy moves it;
//! - a message whose writes failed is reported alone (`ReportBatchItemFailures`)
//!   and redelivered.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use futures::StreamExt as _;
use lambda_runtime::LambdaEvent;
use shared::clock::Clock;
use shared::domain::ids::{OperationId, UserId};
use shared::domain::likes::{LikeAction, LikeOperation, LikeOutcome};
use shared::domain::points::PointsOperation;
use shared::http::error_chain;
use shared::likes_service::{CONCURRENT_WRITES, LikesService};
use shared::message::{Delivered, Envelope, Read, ReadError};
use shared::points_service::{PointsOutcome, PointsService};
use shared::queue::OperationQueue;
use shared::store::Store;
use shared::store::points::Commit;
use time::OffsetDateTime;
use tracing::Instrument as _;

/// The SDK timeouts of every AWS call this function makes (see [`shared::config::Timeouts`]).
pub const TIMEOUTS: shared::config::Timeouts = shared::config::Timeouts::WORKER;

/// The environment variables `from_env` reads (template.yaml sets exactly these).
pub const ENVIRONMENT: &[&str] = &[
    shared::config::TABLE_NAME,
    shared::config::POINTS_DEAD_LETTER_QUEUE_URL,
];

/// Time kept back from the invocation's deadline (a quarter of what is left,
/// when that is less: an invocation given a few seconds still gets most of
/// them). A batch still applying then (a stalled store: each write may take up
/// to [`TIMEOUTS`]' operation timeout) is abandoned and reported failed, so the
/// invocation returns and SQS redelivers after the visibility timeout, instead
/// of Lambda killing it with nothing reported.
pub const DEADLINE_MARGIN: Duration = Duration::from_secs(3);

/// How long the batch may take: the time left before the invocation's
/// deadline less the margin; `None` when the context carries no deadline (an
/// invocation built by hand) or one already past when the batch starts, which
/// Lambda never gives (`cargo lambda watch` does).
fn batch_budget(context: &lambda_runtime::Context) -> Option<Duration> {
    if context.deadline == 0 {
        return None;
    }
    let deadline = std::time::UNIX_EPOCH + Duration::from_millis(context.deadline);
    let left = deadline
        .duration_since(std::time::SystemTime::now())
        .ok()
        .filter(|left| !left.is_zero())?;
    Some(left.saturating_sub(DEADLINE_MARGIN.min(left / 4)))
}

#[derive(Debug, Clone)]
pub struct Worker {
    pub likes: LikesService,
    pub points: PointsService,
    /// Where messages from the points FIFO queue that can never be applied go.
    pub dead_letters: Option<OperationQueue>,
    /// What accept times are checked against and points expire at.
    pub clock: Clock,
}

/// A batch's messages, sorted by what the worker does with them.
#[derive(Default)]
struct Sorted {
    likes: Vec<Delivered<LikeOperation>>,
    points: Vec<Delivered<PointsOperation>>,
    /// Points messages that name their caller and operation id but break a rule.
    invalid: Vec<Delivered<(UserId, OperationId, ReadError)>>,
    /// Messages nothing can be done with.
    set_aside: Vec<(SqsMessage, tracing::Span)>,
}

impl Worker {
    pub fn new(store: Store) -> Self {
        Self {
            likes: LikesService::new(store.clone()),
            points: PointsService::new(store),
            dead_letters: None,
            clock: Clock::system(),
        }
    }

    /// The same worker, setting unusable points messages aside on `queue`.
    pub fn with_dead_letters(self, queue: OperationQueue) -> Self {
        Self {
            dead_letters: Some(queue),
            ..self
        }
    }

    pub async fn from_env() -> Result<Self, shared::config::ConfigError> {
        let table = shared::config::table_name()?;
        let dead_letters = shared::config::points_dead_letter_queue_url()?;
        let aws = shared::config::aws(TIMEOUTS).await;
        Ok(Self::new(Store::from_config(&aws, table))
            .with_dead_letters(OperationQueue::from_config(&aws, dead_letters)))
    }

    /// The Lambda handler: applies the batch and names the messages to retry.
    pub async fn handle(
        &self,
        event: LambdaEvent<SqsEvent>,
    ) -> Result<SqsBatchResponse, lambda_runtime::Error> {
        let batch = tracing::info_span!(
            "batch",
            request_id = %event.context.request_id,
            messages = event.payload.records.len()
        );
        let budget = batch_budget(&event.context);
        let report = async {
            let report = self.apply_within(event.payload.records, budget).await;
            tracing::info!(
                applied = report.applied,
                duplicates = report.duplicates,
                superseded = report.superseded,
                rejected = report.rejected,
                failed = report.failed.len(),
                counter_writes = report.counter_writes,
                "batch done"
            );
            report
        }
        .instrument(batch)
        .await;
        report.emit_metrics();
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

    /// [`apply_batch`](Self::apply_batch), reporting every message failed when
    /// the batch is still applying after `budget`. Every message applies
    /// idempotently, so that is safe: what did apply is a duplicate when
    /// redelivered, and a post whose counter write was cut off is marked
    /// changed again for reconcile.
    async fn apply_within(
        &self,
        records: Vec<SqsMessage>,
        budget: Option<Duration>,
    ) -> BatchReport {
        // Boxed: the services' futures nest deep enough to overflow the
        // compiler's layout depth limit inside the runtime's.
        let Some(budget) = budget else {
            return Box::pin(self.apply_batch(records)).await;
        };
        let ids: Vec<String> = records
            .iter()
            .filter_map(|r| r.message_id.clone())
            .collect();
        match tokio::time::timeout(budget, Box::pin(self.apply_batch(records))).await {
            Ok(report) => report,
            Err(_) => {
                tracing::warn!(
                    budget_ms = budget.as_millis() as u64,
                    "batch ran out of time; all its messages are reported failed"
                );
                BatchReport {
                    messages: ids.len(),
                    failed: ids,
                    ..BatchReport::default()
                }
            }
        }
    }

    /// Applies every message it can; the report lists the ones SQS must redeliver.
    pub async fn apply_batch(&self, messages: Vec<SqsMessage>) -> BatchReport {
        self.apply_batch_at(messages, self.clock.now()).await
    }

    /// [`apply_batch`](Self::apply_batch) at `now`, the time accept times are
    /// checked against and points expire at.
    pub async fn apply_batch_at(
        &self,
        messages: Vec<SqsMessage>,
        now: OffsetDateTime,
    ) -> BatchReport {
        let mut report = BatchReport {
            messages: messages.len(),
            ..BatchReport::default()
        };
        let sorted = self.sort(messages, now);
        self.set_aside(sorted.set_aside, &mut report).await;
        self.reject_invalid(sorted.invalid, now, &mut report).await;
        let likes = self.likes.apply_batch(sorted.likes).await;
        report.counter_writes = likes.counter_writes;
        for (id, action, outcome) in likes.outcomes {
            let kind = Kind::of_like(action);
            match outcome {
                Some(LikeOutcome::Applied { .. }) => report.tally(kind).applied += 1,
                Some(LikeOutcome::AlreadyApplied) => report.tally(kind).duplicates += 1,
                Some(LikeOutcome::Superseded) => report.tally(kind).superseded += 1,
                None => report.fail(id, kind),
            }
        }
        let kinds: HashMap<String, Kind> = sorted
            .points
            .iter()
            .map(|d| {
                (
                    d.message_id.clone(),
                    Kind::Points(d.operation.request.kind()),
                )
            })
            .collect();
        let points = self.points.apply_in_order(sorted.points, now).await;
        for (id, outcome) in points {
            // Every outcome is of a message sorted above; one that were not
            // would be redelivered, never miscounted.
            let Some(&kind) = kinds.get(&id) else {
                report.failed.push(id);
                continue;
            };
            match outcome {
                Some(PointsOutcome::Applied) => report.tally(kind).applied += 1,
                Some(PointsOutcome::Rejected) => report.tally(kind).rejected += 1,
                Some(PointsOutcome::AlreadyDone) => report.tally(kind).duplicates += 1,
                None => report.fail(id, kind),
            }
        }
        report.total();
        report
    }

    /// Reads each message ([`Envelope::read`]) in a span of its own, and sorts
    /// it by what can be done with it.
    fn sort(&self, messages: Vec<SqsMessage>, now: OffsetDateTime) -> Sorted {
        let mut sorted = Sorted::default();
        for message in messages {
            let message_id = message.message_id.clone().unwrap_or_default();
            let span = tracing::info_span!(
                "message",
                message_id = %message_id,
                operation_id = tracing::field::Empty
            );
            let read = match message.body.as_deref() {
                None => Read::Unattributable(ReadError::NoBody),
                Some(body) => Envelope::read(body, &self.points.point_types, now),
            };
            match read {
                Read::Valid(envelope) => {
                    span.record(
                        "operation_id",
                        tracing::field::display(&envelope.operation_id),
                    );
                    if let Some(like) = envelope.like_operation() {
                        sorted.likes.push(Delivered {
                            message_id,
                            span,
                            operation: like,
                        });
                    } else if let Some(op) = envelope.points_operation() {
                        sorted.points.push(Delivered {
                            message_id,
                            span,
                            operation: op,
                        });
                    }
                }
                Read::Invalid {
                    operation_id,
                    caller,
                    like: false,
                    detail,
                } => {
                    span.record("operation_id", tracing::field::display(&operation_id));
                    sorted.invalid.push(Delivered {
                        message_id,
                        span,
                        operation: (caller, operation_id, detail),
                    });
                }
                Read::Invalid {
                    operation_id,
                    detail,
                    ..
                } => {
                    span.record("operation_id", tracing::field::display(&operation_id));
                    span.in_scope(|| {
                        tracing::error!(reason = %detail, "message set aside: it can never be applied");
                    });
                    sorted.set_aside.push((message, span));
                }
                Read::Unattributable(detail) => {
                    span.in_scope(|| {
                        tracing::error!(reason = %detail, "message set aside: it can never be applied");
                    });
                    sorted.set_aside.push((message, span));
                }
            }
        }
        sorted
    }

    /// Points messages that name their caller and operation id but break a rule
    /// end `rejected`, so their caller learns why and their group moves on.
    async fn reject_invalid(
        &self,
        invalid: Vec<Delivered<(UserId, OperationId, ReadError)>>,
        now: OffsetDateTime,
        report: &mut BatchReport,
    ) {
        let results: Vec<_> = futures::stream::iter(invalid)
            .map(|delivered| async move {
                let (caller, operation_id, detail) = delivered.operation;
                let rejected = async {
                    let detail = detail.to_string();
                    match self
                        .points
                        .reject_invalid(&caller, &operation_id, detail.clone(), now)
                        .await
                    {
                        Ok(commit) => {
                            tracing::warn!(reason = "invalid_operation", %detail, already_settled = (commit == Commit::AlreadyDone), "rejected");
                            true
                        }
                        Err(err) => {
                            tracing::warn!(error = %error_chain(&err), "could not record the rejection");
                            false
                        }
                    }
                }
                .instrument(delivered.span)
                .await;
                (delivered.message_id, rejected)
            })
            .buffer_unordered(CONCURRENT_WRITES)
            .collect()
            .await;
        for (message_id, rejected) in results {
            if rejected {
                report.tally(Kind::Invalid).rejected += 1;
            } else {
                report.fail(message_id, Kind::Invalid);
            }
        }
    }

    /// Messages nothing can be done with: moved to the dead-letter queue at once
    /// when they hold up a FIFO group, else left to SQS's redrive policy.
    async fn set_aside(
        &self,
        messages: Vec<(SqsMessage, tracing::Span)>,
        report: &mut BatchReport,
    ) {
        for (message, span) in messages {
            let id = message.message_id.clone().unwrap_or_default();
            let group = message.attributes.get("MessageGroupId");
            let moved = match (&self.dead_letters, group) {
                (Some(dead_letters), Some(group)) => {
                    let body = message.body.as_deref().unwrap_or_default();
                    match dead_letters
                        .forward(body, Some(group), &id)
                        .instrument(span.clone())
                        .await
                    {
                        Ok(()) => true,
                        Err(err) => {
                            span.in_scope(|| {
                                tracing::warn!(error = %error_chain(&err), "could not move the message to the dead-letter queue");
                            });
                            false
                        }
                    }
                }
                _ => false,
            };
            if moved {
                report.tally(Kind::Undecodable).dead_lettered += 1;
            } else {
                report.fail(id, Kind::Undecodable);
            }
        }
    }
}

/// The kind of operation a message carried, as metrics name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Like,
    Unlike,
    /// A points operation, by its request's kind.
    Points(&'static str),
    /// A points message that breaks a rule, rejected `invalid_operation`.
    Invalid,
    /// A message that can never be applied: set aside.
    Undecodable,
}

impl Kind {
    fn of_like(action: LikeAction) -> Self {
        match action {
            LikeAction::Like => Kind::Like,
            LikeAction::Unlike => Kind::Unlike,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Like => "like",
            Kind::Unlike => "unlike",
            Kind::Points(kind) => kind,
            Kind::Invalid => "invalid",
            Kind::Undecodable => "undecodable",
        }
    }
}

/// Outcomes of one kind of operation in a batch.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub applied: usize,
    /// Already applied by an earlier delivery.
    pub duplicates: usize,
    /// Likes overtaken by a later operation on the same (user, post).
    pub superseded: usize,
    /// Points operations rejected for good (insufficient points, unknown type).
    pub rejected: usize,
    /// Left for SQS to deliver again.
    pub failed: usize,
    /// Moved to the dead-letter queue by the worker.
    pub dead_lettered: usize,
}

/// What one batch did: totals, per kind, and the messages to redeliver.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BatchReport {
    pub messages: usize,
    pub applied: usize,
    pub duplicates: usize,
    pub superseded: usize,
    pub rejected: usize,
    pub by_kind: BTreeMap<Kind, Tally>,
    /// Message ids SQS must deliver again.
    pub failed: Vec<String>,
    /// Counter writes the batch made (one per post it touched).
    pub counter_writes: usize,
}

impl BatchReport {
    fn tally(&mut self, kind: Kind) -> &mut Tally {
        self.by_kind.entry(kind).or_default()
    }

    fn fail(&mut self, message_id: String, kind: Kind) {
        self.tally(kind).failed += 1;
        self.failed.push(message_id);
    }

    fn total(&mut self) {
        let sum = |field: fn(&Tally) -> usize| self.by_kind.values().map(field).sum::<usize>();
        (
            self.applied,
            self.duplicates,
            self.superseded,
            self.rejected,
        ) = (
            sum(|t| t.applied),
            sum(|t| t.duplicates),
            sum(|t| t.superseded),
            sum(|t| t.rejected),
        );
    }

    /// One CloudWatch EMF line per kind of operation in the batch.
    pub fn emit_metrics(&self) {
        for (kind, tally) in &self.by_kind {
            let mut counts = vec![
                ("Applied", tally.applied as f64),
                ("Duplicate", tally.duplicates as f64),
                ("Superseded", tally.superseded as f64),
                ("Rejected", tally.rejected as f64),
                ("Failed", tally.failed as f64),
                ("DeadLettered", tally.dead_lettered as f64),
            ];
            if matches!(kind, Kind::Like | Kind::Unlike) {
                counts.push(("CounterWrites", self.counter_writes as f64));
            }
            shared::metrics::emit(
                &[("Function", "sqs-worker"), ("Kind", kind.name())],
                &counts,
            );
        }
    }
}
