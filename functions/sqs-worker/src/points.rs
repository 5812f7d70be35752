//! Applying points operations.
//!
//! Messages come from a FIFO queue grouped by account, so the operations of one
//! account arrive in the order they were accepted. Within a batch each group is
//! applied in order; once a message of a group fails, the later ones of that
//! group are reported failed too, so SQS redelivers them in order.

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt as _;
use shared::domain::ids::UserId;
use shared::domain::points::{self, PointTypes, PointsOperation};
use shared::http::error_chain;
use shared::store::points::Commit;
use shared::store::{Store, StoreError};
use time::OffsetDateTime;

/// Times an operation is planned again after another writer moved an account
/// it touches (a transfer in from another group).
const MAX_CONFLICTS: u32 = 10;
/// Account groups one batch applies at once.
const CONCURRENT_GROUPS: usize = 10;

/// What applying one points operation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PointsOutcome {
    Applied,
    Rejected,
    /// Already applied or rejected by an earlier delivery.
    AlreadyDone,
}

/// Plans the operation against the current accounts and commits it, planning
/// again if an account moved in between.
pub async fn apply(
    store: &Store,
    types: &PointTypes,
    op: &PointsOperation,
    now: OffsetDateTime,
) -> Result<PointsOutcome, StoreError> {
    for attempt in 0..MAX_CONFLICTS {
        if attempt > 0 {
            // Jittered backoff, so writers contending for one account spread out.
            let ceiling_ms = 5u64 << attempt.min(6);
            tokio::time::sleep(Duration::from_millis(rand::random_range(0..ceiling_ms))).await;
        }
        let mut accounts = HashMap::new();
        for user in op.request.accounts(&op.caller) {
            accounts.insert(user.clone(), store.account(user).await?);
        }
        let (commit, outcome) = match points::plan(op, &accounts, types, now) {
            Ok(changes) => (
                store.commit_points(op, &changes).await?,
                PointsOutcome::Applied,
            ),
            Err(rejection) => {
                let commit = store.reject_operation(op, rejection, None).await?;
                if commit == Commit::Done {
                    tracing::info!(operation_id = %op.operation_id, reason = rejection.code(), "rejected");
                }
                (commit, PointsOutcome::Rejected)
            }
        };
        match commit {
            Commit::Done => return Ok(outcome),
            Commit::AlreadyDone => return Ok(PointsOutcome::AlreadyDone),
            Commit::Conflict => continue,
        }
    }
    Err(StoreError::Unavailable(
        format!("accounts kept changing under operation {}", op.operation_id).into(),
    ))
}

/// Applies a batch's points operations: groups concurrently, each group in order.
/// Returns each message's outcome, `None` for messages that must be redelivered.
pub async fn apply_in_groups(
    store: &Store,
    types: &PointTypes,
    operations: Vec<(String, PointsOperation)>,
    now: OffsetDateTime,
) -> Vec<(String, Option<PointsOutcome>)> {
    let mut groups: Vec<(UserId, Vec<(String, PointsOperation)>)> = Vec::new();
    for (message_id, op) in operations {
        let account = op.request.ordering_account(&op.caller).clone();
        match groups.iter_mut().find(|(group, _)| *group == account) {
            Some((_, members)) => members.push((message_id, op)),
            None => groups.push((account, vec![(message_id, op)])),
        }
    }
    let results: Vec<Vec<(String, Option<PointsOutcome>)>> = futures::stream::iter(groups)
        .map(|(_, members)| async move {
            let mut outcomes = Vec::with_capacity(members.len());
            let mut blocked = false;
            for (message_id, op) in members {
                if blocked {
                    outcomes.push((message_id, None));
                    continue;
                }
                match apply(store, types, &op, now).await {
                    Ok(outcome) => {
                        tracing::info!(operation_id = %op.operation_id, ?outcome, "points operation");
                        outcomes.push((message_id, Some(outcome)));
                    }
                    Err(err) => {
                        tracing::warn!(operation_id = %op.operation_id, error = %error_chain(&err), "points operation failed");
                        blocked = true;
                        outcomes.push((message_id, None));
                    }
                }
            }
            outcomes
        })
        .buffer_unordered(CONCURRENT_GROUPS)
        .collect()
        .await;
    results.into_iter().flatten().collect()
}
