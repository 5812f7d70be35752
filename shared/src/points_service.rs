//! The points service: the one place an operation is accepted and applied.
//! The HTTP handler calls [`accept`](PointsService::accept), the worker
//! [`apply_in_order`](PointsService::apply_in_order), reconcile
//! [`requeue`](PointsService::requeue) and [`settle_due`](PointsService::settle_due).
//! The rules are the domain's ([`crate::domain::points`]); the writes are the
//! store's; this is the flow between them.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use futures::StreamExt as _;
use time::OffsetDateTime;
use tracing::Instrument as _;

use crate::clock::Clock;
use crate::domain::ids::{OperationId, UserId};
use crate::domain::points::{
    self, Account, AccountChange, InvalidRequest, OperationRecord, OperationStatus, PointTypes,
    PointsOperation, PointsRequest, Refund, Snapshot,
};
use crate::http::error_chain;
use crate::message::{Delivered, Envelope};
use crate::queue::{OperationQueue, QueueError};
use crate::store::points::{Commit, Recorded};
use crate::store::{Store, StoreError};

/// Times an operation is planned again after another writer moved an account
/// it touches (a transfer in from another group, the expiry run).
const MAX_CONFLICTS: u32 = 10;
/// Account groups one batch applies at once.
const CONCURRENT_GROUPS: usize = 10;

#[derive(Debug, Clone)]
pub struct PointsService {
    pub store: Store,
    pub point_types: PointTypes,
    /// When operations are accepted and points and holds expire.
    pub clock: Clock,
}

/// Why a request was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    /// It breaks a rule: nothing was recorded (HTTP 400).
    #[error(transparent)]
    Invalid(#[from] InvalidRequest),
    /// The caller used this key for another request (HTTP 422).
    #[error("this Idempotency-Key was used for a different request")]
    KeyReused,
    /// Tally could not confirm it recorded the request (HTTP 503).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What applying one points operation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PointsOutcome {
    Applied,
    Rejected,
    /// Already applied or rejected by an earlier delivery.
    AlreadyDone,
}

impl PointsService {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            point_types: PointTypes::shipped(),
            clock: Clock::system(),
        }
    }

    /// Checks a request by the domain's rules, records it under the caller's key
    /// and queues it; answers the operation's status. A key used before answers
    /// what it holds (and queues it again while it is pending, which the worker
    /// and the FIFO queue's deduplication make harmless).
    ///
    /// The record is a transactional outbox: once it is written the answer is a
    /// status, whatever SendMessage does, because the operation will be applied
    /// or rejected (a same-key retry queues it again at once; reconcile re-drives
    /// it otherwise). Only a failed record write is an error.
    ///
    /// The key is recorded on the current span (the HTTP request's) as its
    /// `operation_id`.
    pub async fn accept(
        &self,
        queue: &OperationQueue,
        caller: UserId,
        key: OperationId,
        request: PointsRequest,
    ) -> Result<OperationStatus, AcceptError> {
        tracing::Span::current().record("operation_id", tracing::field::display(&key));
        request.validate(&caller, &self.point_types)?;
        let op = PointsOperation {
            operation_id: key,
            caller,
            request,
            accepted_at: self.clock.now(),
        };
        match self.store.record_operation(&op).await? {
            Recorded::New => {
                self.enqueue_logged(queue, &op).await;
                tracing::info!(kind = op.request.kind(), "accepted");
                Ok(OperationStatus::Pending)
            }
            Recorded::Existing(record) => {
                if record.request.as_ref() != Some(&op.request) {
                    return Err(AcceptError::KeyReused);
                }
                if let Some(original) = record.operation()
                    && record.status == OperationStatus::Pending
                {
                    self.enqueue_logged(queue, &original).await;
                }
                tracing::info!(status = ?record.status, "replayed");
                Ok(record.status)
            }
        }
    }

    /// Queues a recorded operation in its account's group, exactly as accepted.
    pub async fn requeue(
        &self,
        queue: &OperationQueue,
        op: &PointsOperation,
    ) -> Result<(), QueueError> {
        let group = op.request.ordering_account(&op.caller);
        queue
            .send_ordered(&Envelope::for_points(op), group.as_str())
            .await
    }

    /// A failure (or a lost answer) is logged, not answered: the record is the
    /// outbox, and reconcile re-drives what stays pending.
    async fn enqueue_logged(&self, queue: &OperationQueue, op: &PointsOperation) {
        if let Err(err) = self.requeue(queue, op).await {
            tracing::warn!(error = %error_chain(&err), "recorded but not queued: a same-key retry or reconcile's re-drive queues it");
        }
    }

    /// The account as it stands now: holds and points past their expiry are
    /// gone, whether or not their entries were written yet.
    pub async fn account(&self, user: &UserId) -> Result<Account, StoreError> {
        Ok(self.store.account(user).await?.as_of(self.clock.now()))
    }

    /// Applies a batch's points operations: account groups concurrently, each
    /// group in order; once one fails, the rest of its group is left for
    /// redelivery so the order holds. Answers each message's outcome, `None`
    /// for the messages SQS must deliver again; each message's lines go to its span.
    pub async fn apply_in_order(
        &self,
        operations: Vec<Delivered<PointsOperation>>,
        now: OffsetDateTime,
    ) -> Vec<(String, Option<PointsOutcome>)> {
        let mut groups: Vec<(UserId, Vec<Delivered<PointsOperation>>)> = Vec::new();
        for delivered in operations {
            let op = &delivered.operation;
            let account = op.request.ordering_account(&op.caller).clone();
            match groups.iter_mut().find(|(group, _)| *group == account) {
                Some((_, members)) => members.push(delivered),
                None => groups.push((account, vec![delivered])),
            }
        }
        let results: Vec<Vec<(String, Option<PointsOutcome>)>> = futures::stream::iter(groups)
            .map(|(_, members)| async move {
                let mut outcomes = Vec::with_capacity(members.len());
                let mut blocked = false;
                for Delivered {
                    message_id,
                    span,
                    operation: op,
                } in members
                {
                    if blocked {
                        span.in_scope(|| {
                            tracing::info!("left for redelivery behind a failed operation of its account");
                        });
                        outcomes.push((message_id, None));
                        continue;
                    }
                    let outcome = async {
                        match self.apply(&op, now).await {
                            Ok(outcome) => {
                                tracing::info!(kind = op.request.kind(), ?outcome, "points operation");
                                Some(outcome)
                            }
                            Err(err) => {
                                tracing::warn!(error = %error_chain(&err), "points operation failed");
                                None
                            }
                        }
                    }
                    .instrument(span)
                    .await;
                    blocked = outcome.is_none();
                    outcomes.push((message_id, outcome));
                }
                outcomes
            })
            .buffer_unordered(CONCURRENT_GROUPS)
            .collect()
            .await;
        results.into_iter().flatten().collect()
    }

    /// Plans the operation against what it finds at `now` and commits it (or
    /// its rejection), planning again if an account moved in between.
    pub async fn apply(
        &self,
        op: &PointsOperation,
        now: OffsetDateTime,
    ) -> Result<PointsOutcome, StoreError> {
        let settled = retry_conflicts(MAX_CONFLICTS, || async {
            let found = self.snapshot(op, now).await?;
            Ok(match points::plan(op, &found, &self.point_types, now) {
                Ok(plan) => (
                    self.store.commit_points(op, &plan).await?,
                    PointsOutcome::Applied,
                ),
                Err(rejection) => {
                    let commit = self.store.reject_operation(op, rejection, None).await?;
                    if commit == Commit::Done {
                        tracing::info!(reason = rejection.code(), "rejected");
                    }
                    (commit, PointsOutcome::Rejected)
                }
            })
        })
        .await?;
        match settled {
            Some((Commit::AlreadyDone, _)) => Ok(PointsOutcome::AlreadyDone),
            Some((_, outcome)) => Ok(outcome),
            None => Err(StoreError::Contended {
                attempts: MAX_CONFLICTS,
            }),
        }
    }

    /// A queued message that names its caller and operation id but breaks a
    /// rule ends `rejected` (`invalid_operation`, the rule in `detail`).
    pub async fn reject_invalid(
        &self,
        caller: &UserId,
        operation_id: &OperationId,
        detail: String,
        now: OffsetDateTime,
    ) -> Result<Commit, StoreError> {
        self.store
            .reject_invalid_message(caller, operation_id, detail, now)
            .await
    }

    /// Writes what time alone made due on one account at `now` (holds past
    /// their expiry released, lots past theirs expired): the expiry run's step.
    /// `None` when nothing was due, or the account stayed busy.
    pub async fn settle_due(
        &self,
        user: &UserId,
        now: OffsetDateTime,
        attempts: u32,
    ) -> Result<Option<AccountChange>, StoreError> {
        let settled = retry_conflicts(attempts, || async {
            let account = self.store.account(user).await?;
            Ok(match points::settle_due(user, &account, now) {
                Some(change) => (
                    self.store.commit_account_change(&change).await?,
                    Some(change),
                ),
                None => (Commit::Done, None),
            })
        })
        .await?;
        Ok(settled.and_then(|(_, change)| change))
    }

    /// Reads what the operation will be planned against: its accounts first,
    /// then the record it links to (see [`crate::store::points`] for why in
    /// this order).
    ///
    /// A capture or release whose hold, or a refund whose spend or capture, was
    /// accepted before it but is still pending (its message lost, not yet
    /// re-driven) applies that first: the record holds the request, and its
    /// guard applies it once.
    async fn snapshot(
        &self,
        op: &PointsOperation,
        now: OffsetDateTime,
    ) -> Result<Snapshot, StoreError> {
        let mut accounts = HashMap::new();
        for user in op.request.accounts(&op.caller) {
            accounts.insert(user.clone(), self.store.account(user).await?);
        }
        let linked = match &op.request {
            PointsRequest::Refund(refund) => self.refunded(&op.caller, refund).await?,
            request => match request.hold() {
                Some((holder, hold_id)) => self.store.operation(holder, hold_id).await?,
                None => None,
            },
        };
        if let Some(earlier) = linked
            .as_ref()
            .and_then(|record| pending_original(op, record))
        {
            tracing::warn!(original = %earlier.operation_id, "what it acts on is still pending: applying that first");
            // The original's lines carry its own id.
            let original = tracing::info_span!("original", operation_id = %earlier.operation_id);
            Box::pin(self.apply(&earlier, now).instrument(original)).await?;
            return Box::pin(self.snapshot(op, now)).await;
        }
        Ok(Snapshot { accounts, linked })
    }

    /// The record that keeps what a refund may give back: the user's spend, or
    /// the hold a capture closed. The refund may name the spend, the hold, or
    /// the capture (the user's own, or one the refunding service made).
    async fn refunded(
        &self,
        refunder: &UserId,
        refund: &Refund,
    ) -> Result<Option<OperationRecord>, StoreError> {
        let user = &refund.user_id;
        // Ids are per caller: the refunding service's own capture of this user
        // is what it means first, so a user's record cannot shadow it.
        let mut named = None;
        if refunder != user {
            named = self
                .store
                .operation(refunder, &refund.operation_id)
                .await?
                .filter(|record| {
                    matches!(&record.request, Some(PointsRequest::Capture(c)) if c.user_id == *user)
                });
        }
        if named.is_none() {
            named = self.store.operation(user, &refund.operation_id).await?;
        }
        match named {
            // An applied capture stands for the hold it closed; any other
            // capture (rejected, pending) is itself what the refund finds.
            Some(OperationRecord {
                status: OperationStatus::Applied,
                request: Some(PointsRequest::Capture(capture)),
                operation_id,
                ..
            }) if capture.user_id == *user => {
                let hold = self.store.operation(user, &capture.hold_id).await?;
                Ok(hold.filter(|hold| hold.closed_by.as_ref() == Some(&operation_id)))
            }
            Some(record)
                if record.caller == *user
                    || matches!(&record.request, Some(PointsRequest::Capture(c)) if c.user_id == *user) =>
            {
                Ok(Some(record))
            }
            _ => Ok(None),
        }
    }
}

/// What `op` acts on, if it was accepted and not yet applied: the hold of a
/// capture or release, the spend or capture of a refund. Only those kinds, and
/// never `op` itself (a capture may name its own id as the hold), so applying
/// it first goes at most two steps deep (refund, capture, hold).
fn pending_original(op: &PointsOperation, record: &OperationRecord) -> Option<PointsOperation> {
    let acts_on = matches!(
        (&op.request, &record.request),
        (
            PointsRequest::Capture(_) | PointsRequest::Release(_),
            Some(PointsRequest::Hold(_))
        ) | (
            PointsRequest::Refund(_),
            Some(PointsRequest::Spend(_) | PointsRequest::Capture(_))
        )
    );
    let itself = record.caller == op.caller && record.operation_id == op.operation_id;
    let pending = record.status == OperationStatus::Pending && acts_on && !itself;
    pending.then(|| record.operation()).flatten()
}

/// Runs `attempt` until it commits or finds its work already done, backing off
/// (jittered) after each conflict; `None` once `attempts` conflicted.
async fn retry_conflicts<T, F, Fut>(
    attempts: u32,
    mut attempt: F,
) -> Result<Option<(Commit, T)>, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(Commit, T), StoreError>>,
{
    for n in 0..attempts {
        if n > 0 {
            // Writers contending for one account spread out.
            let ceiling_ms = 5u64 << n.min(6);
            tokio::time::sleep(Duration::from_millis(rand::random_range(0..ceiling_ms))).await;
        }
        let (commit, value) = attempt().await?;
        if commit != Commit::Conflict {
            return Ok(Some((commit, value)));
        }
    }
    Ok(None)
}
