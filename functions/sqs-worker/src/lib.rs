//! The worker: applies queued operations to DynamoDB, idempotently.
//!
//! A batch of like operations is applied in two steps:
//! 1. the latest operation per (user, post) in the batch moves that register with
//!    one conditional write ([`Store::apply_like`]), which says how the post's
//!    count changes; the batch's older operations on the same register are
//!    answered superseded without a write (they would be, after the latest);
//! 2. each post touched by the batch gets **one** counter write carrying the
//!    batch's net change for it, however many likes it took.
//!
//! A redelivered or out-of-order message fails its condition in step 1 and
//! changes nothing. Should the worker die between the steps, the redelivered
//! messages still mark their posts changed in step 2, and reconcile recounts them.
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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use futures::StreamExt as _;
use lambda_runtime::LambdaEvent;
use shared::clock::Clock;
use shared::domain::ids::{OperationId, PostId};
use shared::domain::likes::{self, LikeAction, LikeOperation, LikeOutcome};
use shared::http::error_chain;
use shared::message::{Envelope, Read};
use shared::points_service::{PointsOutcome, PointsService};
use shared::queue::OperationQueue;
use shared::store::points::Commit;
use shared::store::{Store, StoreError, keys};
use time::OffsetDateTime;

/// The SDK timeouts of every AWS call this function makes (see [`shared::config::Timeouts`]).
pub const TIMEOUTS: shared::config::Timeouts = shared::config::Timeouts::WORKER;

/// The environment variables `from_env` reads (template.yaml sets exactly these).
pub const ENVIRONMENT: &[&str] = &[
    shared::config::TABLE_NAME,
    shared::config::POINTS_DEAD_LETTER_QUEUE_URL,
];

/// Time kept back from the invocation's deadline. A batch still applying then
/// (a stalled store: each write may take up to [`TIMEOUTS`]' operation
/// timeout) is abandoned and reported failed, so the invocation returns and
/// SQS redelivers after the visibility timeout, instead of Lambda killing it
/// with nothing reported.
const DEADLINE_MARGIN: Duration = Duration::from_secs(3);

/// The time left before the invocation's deadline; `None` when the context
/// carries none (an invocation built by hand).
fn time_left(context: &lambda_runtime::Context) -> Option<Duration> {
    if context.deadline == 0 {
        return None;
    }
    let deadline = std::time::UNIX_EPOCH + Duration::from_millis(context.deadline);
    Some(
        deadline
            .duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
}

/// DynamoDB requests one batch keeps in flight at once.
const CONCURRENT_WRITES: usize = 16;

#[derive(Debug, Clone)]
pub struct Worker {
    /// Likes are applied here; points operations by [`PointsService::apply_in_order`].
    pub store: Store,
    pub points: PointsService,
    /// Where messages from the points FIFO queue that can never be applied go.
    pub dead_letters: Option<OperationQueue>,
    /// What accept times are checked against and points expire at.
    pub clock: Clock,
}

impl Worker {
    pub fn new(store: Store) -> Self {
        Self {
            points: PointsService::new(store.clone()),
            store,
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
        let records = event.payload.records;
        let ids: Vec<String> = records
            .iter()
            .filter_map(|r| r.message_id.clone())
            .collect();
        let report = match time_left(&event.context) {
            None => self.apply_batch(records).await,
            Some(left) => {
                let budget = left.saturating_sub(DEADLINE_MARGIN);
                match tokio::time::timeout(budget, self.apply_batch(records)).await {
                    Ok(report) => report,
                    Err(_) => {
                        // Every message applies idempotently, so reporting all of
                        // them failed is safe: what did apply is a duplicate when
                        // redelivered, and a post whose counter write was cut
                        // off is marked changed again for reconcile.
                        tracing::warn!(
                            messages = ids.len(),
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
        };
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
        let mut likes = Vec::new();
        let mut points_ops = Vec::new();
        let mut invalid = Vec::new();
        let mut set_aside = Vec::new();
        for message in messages {
            let id = message.message_id.clone().unwrap_or_default();
            let read = match message.body.as_deref() {
                None => Read::Unattributable("message has no body".to_owned()),
                Some(body) => Envelope::read(body, &self.points.point_types, now),
            };
            match read {
                Read::Valid(envelope) => {
                    if let Some(like) = envelope.like_operation() {
                        likes.push((id, like));
                    } else if let Some(op) = envelope.points_operation() {
                        points_ops.push((id, op));
                    }
                }
                Read::Invalid {
                    operation_id,
                    caller,
                    like: false,
                    detail,
                } => invalid.push((id, caller, operation_id, detail)),
                Read::Invalid { detail, .. } | Read::Unattributable(detail) => {
                    tracing::error!(message_id = %id, reason = %detail, "message set aside: it can never be applied");
                    set_aside.push(message);
                }
            }
        }
        self.set_aside(set_aside, &mut report).await;
        self.reject_invalid(invalid, now, &mut report).await;
        let likes = self.skip_overtaken(likes, &mut report);
        let outcomes = self.apply_registers(likes).await;
        self.apply_counters(outcomes, &mut report).await;
        let kinds: HashMap<String, Kind> = points_ops
            .iter()
            .map(|(id, op)| (id.clone(), Kind::Points(op.request.kind())))
            .collect();
        for (id, outcome) in self.points.apply_in_order(points_ops, now).await {
            let kind = kinds[&id];
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

    /// Points messages that name their caller and operation id but break a rule
    /// end `rejected`, so their caller learns why and their group moves on.
    async fn reject_invalid(
        &self,
        invalid: Vec<(String, shared::domain::ids::UserId, OperationId, String)>,
        now: OffsetDateTime,
        report: &mut BatchReport,
    ) {
        let results: Vec<_> = futures::stream::iter(invalid)
            .map(|(message_id, caller, operation_id, detail)| async move {
                let result = self
                    .points
                    .reject_invalid(&caller, &operation_id, detail.clone(), now)
                    .await;
                (message_id, operation_id, detail, result)
            })
            .buffer_unordered(CONCURRENT_WRITES)
            .collect()
            .await;
        for (message_id, operation_id, detail, result) in results {
            match result {
                Ok(commit) => {
                    tracing::warn!(operation_id = %operation_id, reason = "invalid_operation", %detail, already_settled = (commit == Commit::AlreadyDone), "rejected");
                    report.tally(Kind::Invalid).rejected += 1;
                }
                Err(err) => {
                    tracing::warn!(operation_id = %operation_id, error = %error_chain(&err), "could not record the rejection");
                    report.fail(message_id, Kind::Invalid);
                }
            }
        }
    }

    /// Messages nothing can be done with: moved to the dead-letter queue at once
    /// when they hold up a FIFO group, else left to SQS's redrive policy.
    async fn set_aside(&self, messages: Vec<SqsMessage>, report: &mut BatchReport) {
        for message in messages {
            let id = message.message_id.clone().unwrap_or_default();
            let group = message.attributes.get("MessageGroupId");
            let moved = match (&self.dead_letters, group) {
                (Some(dead_letters), Some(group)) => {
                    let body = message.body.as_deref().unwrap_or_default();
                    match dead_letters.forward(body, Some(group), &id).await {
                        Ok(()) => true,
                        Err(err) => {
                            tracing::warn!(message_id = %id, error = %error_chain(&err), "could not move the message to the dead-letter queue");
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

    /// Of several operations on one (user, post) in the batch, only the latest
    /// is written ([`likes::latest_per_register`]): the others are answered as
    /// superseded (or duplicates) without a write. A user toggling a like ten
    /// times in a second costs one register write.
    fn skip_overtaken(
        &self,
        likes: Vec<(String, LikeOperation)>,
        report: &mut BatchReport,
    ) -> Vec<(String, LikeOperation)> {
        let (latest, overtaken) = likes::latest_per_register(likes);
        for skipped in overtaken {
            let tally = report.tally(Kind::of_like(skipped.like.action));
            if skipped.duplicate {
                tally.duplicates += 1;
            } else {
                tally.superseded += 1;
            }
            tracing::info!(operation_id = %skipped.like.operation_id, user = %skipped.like.user, post = %skipped.like.post, duplicate = skipped.duplicate, "like operation overtaken in its batch");
        }
        latest
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
            let kind = Kind::of_like(like.action);
            let outcome = match outcome {
                Ok(outcome) => outcome,
                Err(err) => {
                    tracing::warn!(operation_id = %like.operation_id, message_id = %message_id, error = %error_chain(&err), "register write failed");
                    report.fail(message_id, kind);
                    continue;
                }
            };
            let tally = report.tally(kind);
            match outcome {
                LikeOutcome::Applied { .. } => tally.applied += 1,
                LikeOutcome::AlreadyApplied => tally.duplicates += 1,
                LikeOutcome::Superseded => tally.superseded += 1,
            }
            tracing::info!(operation_id = %like.operation_id, user = %like.user, post = %like.post, ?outcome, "like operation");
            let change = by_post.entry(like.post).or_default();
            change.delta += outcome.count_delta();
            change.partitions.insert(keys::like_partition(&like.user));
            change.members.push((message_id, like.operation_id, kind));
        }
        report.counter_writes = by_post.len();
        let writes = futures::stream::iter(by_post)
            .map(|(post, change)| async move {
                let result = self
                    .store
                    .add_to_like_count(&post, change.delta, &change.partitions)
                    .await;
                (post, change, result)
            })
            .buffer_unordered(CONCURRENT_WRITES)
            .collect::<Vec<_>>()
            .await;
        for (post, change, result) in writes {
            if let Err(err) = result {
                // The registers moved but the count did not: redelivery marks the
                // post changed and reconcile recounts it.
                for (message_id, operation_id, kind) in change.members {
                    tracing::warn!(operation_id = %operation_id, post = %post, error = %error_chain(&err), "counter write failed");
                    report.fail(message_id, kind);
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
    /// The register partitions the batch wrote (or found written) for the post.
    partitions: BTreeSet<u32>,
    members: Vec<(String, OperationId, Kind)>,
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
