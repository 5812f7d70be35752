//! Reconcile: the scheduled safety net.
//!
//! Each run, in steps that are each safe to interrupt and run again:
//! 1. **Outbox**: re-drives points operations still pending [`REDRIVE_AFTER`]
//!    after they were accepted (their message was lost, or dead-lettered after
//!    contention outlasted every retry), so every recorded operation ends
//!    applied or rejected.
//! 2. **Expiry**: releases holds past their expiry (`release` entries) and turns
//!    lots whose time has passed into `expire` entries, many accounts at once,
//!    each in one transaction conditioned on the account's `seq`, so a rerun
//!    never settles the same thing twice. (Expired holds and points are already
//!    gone from balances, spends and captures at their expiry time; this writes
//!    the entries that explain it.)
//! 3. **Likes**: recounts every post whose counter was written since it was last
//!    settled (the worker marks it), and sets each counter to the true count with
//!    a write conditioned on the counter's revision: if the worker wrote in
//!    between, nothing is lost, the post stays marked, and the next run settles it.
//! 4. **Ledgers**: audits every account written since its last clean audit
//!    (gapless `seq`, linked balances, balance = Σ entries, lots = balance). A
//!    mismatch is reported, never rewritten, and reported again each run until
//!    someone fixes it. The ledger it reads also puts the account on the
//!    leaderboards of the run's day, week, month and all time
//!    ([`shared::points_insight::update_boards`]); a run that reaches every
//!    changed account records its start as the boards' `as_of`.
//!
//! Likes and ledgers also take the posts and accounts of one bounded page of a
//! **background sweep** of the whole table, which over many runs visits
//! everything once: it catches damage that no write marked.
//!
//! A run keeps to a time budget, each step to its share of it; what a step does
//! not reach stays marked (or due, or pending) for the next run. A malformed
//! item is logged with its key, counted (`MalformedItems`, alarmed) and skipped:
//! it never stops the rest of the run.
//!
//! Each mismatch and malformed item a run finds is also recorded as a finding
//! item (at most [`MAX_FINDINGS_PER_RUN`]), which the events function publishes
//! as `Ledger Mismatch Found` / `Malformed Item Found`.

use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use serde::Serialize;
use shared::domain::events::{FindingKind, ReconcileFinding};
use shared::domain::ids::{PostId, UserId};
use shared::domain::points::{self, EntryKind, Finding, OperationStatus};
use shared::http::error_chain;
use shared::points_service::PointsService;
use shared::queue::{OperationQueue, mapping};
use shared::store::reconcile::SweepPage;
use shared::store::{Store, StoreError};
use time::OffsetDateTime;
use tracing::Instrument as _;

/// The SDK timeouts of every AWS call this function makes (see [`shared::config::Timeouts`]).
pub const TIMEOUTS: shared::config::Timeouts = shared::config::Timeouts::RECONCILE;

/// The environment variables `from_env` reads (template.yaml sets exactly these).
pub const ENVIRONMENT: &[&str] = &[shared::config::TABLE_NAME, shared::config::POINTS_QUEUE_URL];

/// Items the background sweep reads per run.
pub const SWEEP_ITEMS_PER_RUN: i32 = 500;
/// How long a run may take: the function's timeout is 300 s; the rest is margin.
pub const RUN_BUDGET: Duration = Duration::from_secs(240);
/// Accounts expired at once. Each is a GetItem and a TransactWriteItems on its
/// own partition, so they do not contend; see README "Point expiry" for the rate.
pub const EXPIRY_CONCURRENCY: usize = 32;
/// Due accounts read from the expiry index per query.
const EXPIRY_PAGE: usize = 1000;
/// Times an expiry is planned again when the worker moved the account meanwhile.
const EXPIRY_ATTEMPTS: u32 = 5;
/// A pending operation older than this is re-driven: by then SQS has made every
/// delivery it would make (`maxReceiveCount` receives, each hidden for the
/// visibility timeout: 5 × 180 s = 15 min), so the message is lost or
/// dead-lettered. A re-drive before that would only duplicate a live message
/// (harmless: the worker applies an operation once), so this bound trades
/// nothing for less traffic. A client retrying under its key re-queues at once.
pub const REDRIVE_AFTER: Duration =
    Duration::from_secs(mapping::MAX_RECEIVE_COUNT as u64 * mapping::VISIBILITY_TIMEOUT.as_secs());
/// Pending operations one run re-drives at most.
const REDRIVE_PER_RUN: usize = 1000;

#[derive(Debug, Clone)]
pub struct Reconciler {
    pub store: Store,
    /// Re-drives and expiry go through the same flow as every points operation.
    pub points: PointsService,
    /// The points queue, where pending operations are re-driven.
    pub queue: OperationQueue,
    pub sweep_items_per_run: i32,
    /// Accounts one run expires at most (besides the time budget).
    pub expiry_accounts_per_run: usize,
    pub budget: Duration,
    pub redrive_after: Duration,
}

/// Posts recounted at once: each is a few requests on its own partitions.
pub const POSTS_AT_ONCE: usize = 16;

/// What recounting one post found.
#[derive(Debug, Default)]
struct Recount {
    drift: u64,
    repaired: bool,
    /// The worker wrote the counter during the recount: left marked.
    busy: bool,
}

/// What one run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    pub posts_checked: u64,
    pub counters_repaired: u64,
    /// Σ |counter − true count| over the posts checked.
    pub total_drift: u64,
    /// Posts the worker wrote during the recount: left marked for the next run.
    pub posts_busy: u64,
    pub accounts_audited: u64,
    pub mismatches: u64,
    /// Leaderboard lines written (an account that earned more in a period).
    pub leaderboard_lines_written: u64,
    pub accounts_expired: u64,
    pub points_expired: u64,
    /// Holds past their expiry released.
    pub holds_released: u64,
    /// Pending operations queued again.
    pub operations_redriven: u64,
    /// Malformed items skipped (each logged with its key).
    pub malformed_items: u64,
    /// Steps that ran out of their share of the time budget; the next run goes on.
    pub steps_cut_short: u64,
    pub duration_ms: u64,
    /// What was found wrong, to record as findings: (kind, subject, problem).
    #[serde(skip)]
    pub findings: Vec<(FindingKind, String, String)>,
}

/// Findings recorded per run: a table damaged wholesale is reported by the
/// counts and the alarm, not by an event per item.
pub const MAX_FINDINGS_PER_RUN: usize = 100;

impl Report {
    fn found(&mut self, kind: FindingKind, subject: &str, problem: &str) {
        if self.findings.len() < MAX_FINDINGS_PER_RUN {
            self.findings
                .push((kind, subject.to_owned(), problem.to_owned()));
        }
    }

    /// Passes a result through, or logs and counts a malformed item and answers
    /// `None`, so the run goes on without it. Other errors stop the run.
    fn skip_malformed<T>(
        &mut self,
        result: Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        match result {
            Ok(value) => Ok(Some(value)),
            Err(err @ StoreError::Corrupt { .. }) => {
                self.malformed_items += 1;
                if let StoreError::Corrupt { key, problem, .. } = &err {
                    self.found(FindingKind::MalformedItem, key, problem);
                }
                tracing::error!(error = %error_chain(&err), "malformed item skipped");
                Ok(None)
            }
            Err(err) => Err(err),
        }
    }

    /// Whether a step has used its share of the budget (counted when it has).
    fn out_of_time(&mut self, until: Instant) -> bool {
        let out = Instant::now() >= until;
        self.steps_cut_short += u64::from(out);
        out
    }

    /// A step's work list: the ids marked changed (a malformed mark reported and
    /// skipped), then the sweep's ids not among them, each with whether it was marked.
    fn marked_then_swept<T: PartialEq + Clone>(
        &mut self,
        marked: Vec<Result<T, StoreError>>,
        swept: &[T],
    ) -> Result<Vec<(T, bool)>, StoreError> {
        let mut work = Vec::new();
        for id in marked {
            if let Some(id) = self.skip_malformed(id)? {
                work.push((id, true));
            }
        }
        for id in swept {
            if !work.iter().any(|(listed, _)| listed == id) {
                work.push((id.clone(), false));
            }
        }
        Ok(work)
    }
}

/// When each step must stop taking new work: its cumulative share of the budget.
struct Deadlines {
    started: Instant,
    budget: Duration,
}

impl Deadlines {
    fn step(&self, share_through: f64) -> Instant {
        self.started + self.budget.mul_f64(share_through)
    }
}

/// Why a run stopped part way (the next run resumes where it stopped).
#[derive(Debug, thiserror::Error)]
#[error("reconcile run stopped part way")]
pub struct RunFailed(#[from] pub StoreError);

impl From<RunFailed> for lambda_runtime::Diagnostic {
    fn from(err: RunFailed) -> Self {
        let error_type = match &err.0 {
            StoreError::Throttled(_) => "Reconcile.Throttled",
            StoreError::Unavailable(_) => "Reconcile.StoreUnavailable",
            StoreError::Contended { .. } => "Reconcile.Contended",
            StoreError::Corrupt { .. } => "Reconcile.CorruptItem",
        };
        lambda_runtime::Diagnostic {
            error_type: error_type.to_owned(),
            error_message: error_chain(&err),
        }
    }
}

/// An account whose ledger does not add up, with the numbers (its first
/// [`MISMATCH_FINDINGS_SHOWN`] findings, so a finding's event stays small).
#[derive(Debug, Serialize)]
struct Mismatch<'a> {
    account: &'a str,
    balance: u64,
    seq: u64,
    entries: usize,
    findings: &'a [Finding],
    findings_total: usize,
}

const MISMATCH_FINDINGS_SHOWN: usize = 20;

impl Reconciler {
    pub fn new(store: Store, queue: OperationQueue) -> Self {
        Self {
            points: PointsService::new(store.clone()),
            store,
            queue,
            sweep_items_per_run: SWEEP_ITEMS_PER_RUN,
            expiry_accounts_per_run: usize::MAX,
            budget: RUN_BUDGET,
            redrive_after: REDRIVE_AFTER,
        }
    }

    pub async fn from_env() -> Result<Self, shared::config::ConfigError> {
        let table = shared::config::table_name()?;
        let queue_url = shared::config::points_queue_url()?;
        let aws = shared::config::aws(TIMEOUTS).await;
        Ok(Self::new(
            Store::from_config(&aws, table),
            OperationQueue::from_config(&aws, queue_url),
        ))
    }

    /// The Lambda handler: one run now (the schedule's payload carries nothing
    /// reconcile needs). Its error is [`RunFailed`], so the runtime reports
    /// Lambda's `errorType` from [`RunFailed`]'s `Diagnostic`.
    pub async fn handle(
        &self,
        _event: lambda_runtime::LambdaEvent<serde_json::Value>,
    ) -> Result<Report, RunFailed> {
        self.run(OffsetDateTime::now_utc()).await
    }

    /// One run at time `now` (injectable, so tests need no sleeps). Logs the
    /// report, emits it as metrics, and returns it.
    pub async fn run(&self, now: OffsetDateTime) -> Result<Report, RunFailed> {
        let started = Instant::now();
        let mut report = Report::default();
        let deadlines = Deadlines {
            started,
            budget: self.budget,
        };
        let result = async {
            let state = self.store.reconcile_state().await;
            let mut state = report.skip_malformed(state)?.unwrap_or_default();
            self.redrive_pending(now, deadlines.step(0.1), &mut report)
                .await?;
            self.expire_points(now, deadlines.step(0.6), &mut report)
                .await?;
            let mut sweep = self
                .store
                .sweep(state.sweep_cursor.as_deref(), self.sweep_items_per_run)
                .await?;
            for malformed in std::mem::take(&mut sweep.malformed) {
                report.skip_malformed::<()>(Err(malformed))?;
            }
            let cut_short = report.steps_cut_short;
            self.reconcile_likes(&sweep, deadlines.step(0.8), &mut report)
                .await?;
            let ledgers_cut_short = report.steps_cut_short;
            self.audit_ledgers(&sweep.accounts, now, deadlines.step(1.0), &mut report)
                .await?;
            // Every account changed before `now` was read: the boards are exact as of it.
            if report.steps_cut_short == ledgers_cut_short {
                state.leaderboard_as_of = Some(shared::domain::timestamp::format(now));
            }
            // The sweep moves on only once its page was fully checked.
            if report.steps_cut_short == cut_short {
                state.sweep_cursor = sweep.next_cursor;
            }
            state.last_success_at = Some(shared::domain::timestamp::format(now));
            // Before the sweep moves on: a run that fails to record what it
            // found leaves the page (and the marked accounts) to the next run,
            // which finds it again.
            let found_at = shared::domain::timestamp::format(now);
            let findings: Vec<ReconcileFinding> = report
                .findings
                .iter()
                .map(|(kind, subject, problem)| ReconcileFinding {
                    kind: *kind,
                    subject: subject.clone(),
                    problem: problem.clone(),
                    found_at: found_at.clone(),
                })
                .collect();
            self.store.record_findings(&findings).await?;
            report.duration_ms = started.elapsed().as_millis() as u64;
            state.last_report = serde_json::to_value(&report).ok();
            self.store.save_reconcile_state(&state).await
        }
        .await;
        report.duration_ms = started.elapsed().as_millis() as u64;
        if let Err(err) = &result {
            tracing::error!(error = %error_chain(err), ?report, "reconcile run failed part way; the next run resumes");
            return result.map(|_| report).map_err(RunFailed);
        }
        tracing::info!(
            posts_checked = report.posts_checked,
            counters_repaired = report.counters_repaired,
            total_drift = report.total_drift,
            posts_busy = report.posts_busy,
            accounts_audited = report.accounts_audited,
            leaderboard_lines_written = report.leaderboard_lines_written,
            mismatches = report.mismatches,
            accounts_expired = report.accounts_expired,
            points_expired = report.points_expired,
            holds_released = report.holds_released,
            operations_redriven = report.operations_redriven,
            malformed_items = report.malformed_items,
            steps_cut_short = report.steps_cut_short,
            duration_ms = report.duration_ms,
            "reconcile report"
        );
        shared::metrics::emit(
            &[("Function", "reconcile")],
            &[
                ("PostsChecked", report.posts_checked as f64),
                ("CountersRepaired", report.counters_repaired as f64),
                ("LikeDrift", report.total_drift as f64),
                ("AccountsAudited", report.accounts_audited as f64),
                (
                    "LeaderboardLinesWritten",
                    report.leaderboard_lines_written as f64,
                ),
                ("LedgerMismatches", report.mismatches as f64),
                ("PointsExpired", report.points_expired as f64),
                ("HoldsReleased", report.holds_released as f64),
                ("OperationsRedriven", report.operations_redriven as f64),
                ("MalformedItems", report.malformed_items as f64),
                ("StepsCutShort", report.steps_cut_short as f64),
                ("DurationMs", report.duration_ms as f64),
            ],
        );
        Ok(report)
    }

    /// Re-drives operations pending longer than [`REDRIVE_AFTER`]: each is queued
    /// again, exactly as first accepted, in its account's group.
    pub async fn redrive_pending(
        &self,
        now: OffsetDateTime,
        until: Instant,
        report: &mut Report,
    ) -> Result<(), StoreError> {
        let before = now - self.redrive_after;
        for found in self
            .store
            .pending_operations(before, REDRIVE_PER_RUN)
            .await?
        {
            if report.out_of_time(until) {
                return Ok(());
            }
            let Some((caller, operation_id)) = report.skip_malformed(found)? else {
                continue;
            };
            let record = self.store.operation(&caller, &operation_id).await;
            let Some(Some(record)) = report.skip_malformed(record)? else {
                continue;
            };
            if record.status != OperationStatus::Pending {
                continue; // settled since the index was read
            }
            let Some(op) = record.operation() else {
                report.skip_malformed::<()>(Err(StoreError::Corrupt {
                    key: format!("ACCOUNT#{caller}/OPERATION#{operation_id}"),
                    problem: "a pending operation without a readable request".into(),
                    source: None,
                }))?;
                continue;
            };
            let requeued = async {
                match self.points.requeue(&self.queue, &op).await {
                    Ok(()) => {
                        tracing::warn!(caller = %op.caller, accepted_at = %record.accepted_at, "pending operation re-driven");
                        true
                    }
                    Err(err) => {
                        tracing::warn!(error = %error_chain(&err), "re-drive failed");
                        false
                    }
                }
            }
            .instrument(tracing::info_span!("redrive", operation_id = %op.operation_id))
            .await;
            if !requeued {
                // The queue is down: the next run tries again.
                return Ok(());
            }
            report.operations_redriven += 1;
        }
        Ok(())
    }

    /// Marked posts and the sweep's posts, each recounted once, until `until`.
    pub async fn reconcile_likes(
        &self,
        sweep: &SweepPage,
        until: Instant,
        report: &mut Report,
    ) -> Result<(), StoreError> {
        let marked = self.store.changed_posts().await?;
        let no_registers = BTreeSet::new();
        let work = report.marked_then_swept(marked, &sweep.posts)?;
        let no_registers = &no_registers;
        // A post is started only before `until`; one not started stays marked.
        let mut recounts = futures::stream::iter(work)
            .map(|(post, marked)| async move {
                if Instant::now() >= until {
                    return Ok(None);
                }
                let swept = sweep.register_partitions.get(&post);
                self.reconcile_post(&post, marked, swept.unwrap_or(no_registers))
                    .await
                    .map(Some)
            })
            .buffer_unordered(POSTS_AT_ONCE);
        let mut cut_short = false;
        while let Some(recount) = recounts.next().await {
            let Some(recount) = recount? else {
                cut_short = true;
                continue;
            };
            report.posts_checked += 1;
            report.total_drift = report.total_drift.saturating_add(recount.drift);
            report.counters_repaired += u64::from(recount.repaired);
            report.posts_busy += u64::from(recount.busy);
        }
        report.steps_cut_short += u64::from(cut_short);
        Ok(())
    }

    /// Recounts the partitions the counter lists and those `swept` found the
    /// post's registers in, and settles the counter.
    async fn reconcile_post(
        &self,
        post: &PostId,
        marked: bool,
        swept: &BTreeSet<u32>,
    ) -> Result<Recount, StoreError> {
        // Read the counter before counting: any counter write after this read
        // fails the settle below instead of being overwritten.
        let seen = self.store.counter_snapshot(post).await?;
        let mut partitions = seen.partitions_to_count();
        let unlisted: BTreeSet<u32> = swept.difference(&partitions).copied().collect();
        partitions.extend(swept);
        let registers = self.store.count_likes(post, &partitions).await?;
        if !registers.unindexed.is_empty() {
            let indexed = self.store.index_likers(post, &registers.unindexed).await;
            tracing::info!(post = %post, indexed, "likers from before the likers index indexed");
        }
        let true_count = registers.count;
        // A counter edited by hand may hold any number: the difference saturates.
        let drift = seen
            .count
            .saturating_sub(i64::try_from(true_count).unwrap_or(i64::MAX));
        let mut recount = Recount {
            drift: drift.unsigned_abs(),
            ..Recount::default()
        };
        if drift == 0
            && !marked
            && unlisted.is_empty()
            && !seen.partitions_malformed
            && !seen.recent_likers_differ(&registers)
        {
            return Ok(recount);
        }
        if self
            .store
            .settle_counter(post, &registers, &seen, &unlisted)
            .await?
        {
            if drift != 0 {
                recount.repaired = true;
                tracing::warn!(post = %post, counter = seen.count, true_count, drift, "like counter repaired");
            }
        } else {
            recount.busy = true;
        }
        Ok(recount)
    }

    /// Audits each changed or swept account until `until`; clears its mark only
    /// when clean. An account with a malformed item stays marked and is reported.
    /// The ledger it reads also puts the account on the leaderboards of `now`.
    pub async fn audit_ledgers(
        &self,
        swept: &[UserId],
        now: OffsetDateTime,
        until: Instant,
        report: &mut Report,
    ) -> Result<(), StoreError> {
        let marked = self.store.changed_accounts().await?;
        for (user, marked) in report.marked_then_swept(marked, swept)? {
            let user = &user;
            if report.out_of_time(until) {
                return Ok(());
            }
            let account = self.store.account(user).await;
            let Some(account) = report.skip_malformed(account)? else {
                continue;
            };
            let entries = self.store.ledger(user).await;
            let Some(entries) = report.skip_malformed(entries)? else {
                continue;
            };
            report.accounts_audited += 1;
            // A malformed line is reported and skipped like any item.
            let lines =
                shared::points_insight::update_boards(&self.store, user, &entries, now).await;
            report.leaderboard_lines_written += report.skip_malformed(lines)?.unwrap_or(0);
            let findings = points::audit(&account, &entries);
            if findings.is_empty() {
                if marked {
                    self.store.settle_account_audit(user, account.seq).await?;
                }
                continue;
            }
            // The worker may have committed between the two reads; only a
            // mismatch that survives a second look is reported.
            let again = self.store.account(user).await;
            if report.skip_malformed(again)?.as_ref() != Some(&account) {
                continue;
            }
            report.mismatches += 1;
            let mismatch = Mismatch {
                account: user.as_str(),
                balance: account.balance,
                seq: account.seq,
                entries: entries.len(),
                findings: findings.get(..MISMATCH_FINDINGS_SHOWN).unwrap_or(&findings),
                findings_total: findings.len(),
            };
            report.found(
                FindingKind::LedgerMismatch,
                user.as_str(),
                &serde_json::to_string(&mismatch).unwrap_or_default(),
            );
            tracing::error!(
                account = %user,
                mismatch = %serde_json::to_string(&mismatch).unwrap_or_default(),
                "ledger mismatch"
            );
        }
        Ok(())
    }

    /// Expires due lots, [`EXPIRY_CONCURRENCY`] accounts at once, until `until`
    /// or [`expiry_accounts_per_run`](Self::expiry_accounts_per_run).
    pub async fn expire_points(
        &self,
        now: OffsetDateTime,
        until: Instant,
        report: &mut Report,
    ) -> Result<(), StoreError> {
        // The index is eventually consistent: an account expired a moment ago
        // may still be listed. Each is tried once per run.
        let mut seen: HashSet<UserId> = HashSet::new();
        loop {
            let room = self.expiry_accounts_per_run.saturating_sub(seen.len());
            let due = self
                .store
                .accounts_due_for_expiry(now, room.min(EXPIRY_PAGE))
                .await?;
            let mut fresh = Vec::new();
            for user in due {
                if let Some(user) = report.skip_malformed(user)?
                    && seen.insert(user.clone())
                {
                    fresh.push(user);
                }
            }
            if fresh.is_empty() {
                return Ok(());
            }
            let results: Vec<_> = futures::stream::iter(fresh)
                .take_while(|_| std::future::ready(Instant::now() < until))
                .map(|user| async move {
                    let settled = self.points.settle_due(&user, now, EXPIRY_ATTEMPTS).await;
                    (user, settled)
                })
                .buffer_unordered(EXPIRY_CONCURRENCY)
                .collect()
                .await;
            for (user, settled) in results {
                let Some(Some(change)) = report.skip_malformed(settled)? else {
                    continue;
                };
                for entry in &change.entries {
                    match entry.kind {
                        EntryKind::Expire => {
                            let points = entry.amount.unsigned_abs();
                            report.accounts_expired += 1;
                            report.points_expired += points;
                            tracing::info!(account = %user, expired = points, "points expired");
                        }
                        _ => {
                            report.holds_released += 1;
                            tracing::info!(account = %user, hold_id = ?entry.hold_id, released = entry.held_before.saturating_sub(entry.held_after), "expired hold released");
                        }
                    }
                }
            }
            if report.out_of_time(until) {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reconciler whose table and queue are at an address nothing answers on.
    async fn unreachable() -> Reconciler {
        let aws = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url("http://127.0.0.1:1")
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
                "test", "test", None, None, "tests",
            ))
            .load()
            .await;
        Reconciler::new(
            Store::from_config(&aws, "tally"),
            OperationQueue::from_config(&aws, "http://127.0.0.1:1/queue/points.fifo"),
        )
    }

    #[tokio::test]
    async fn a_failed_invocation_reaches_lambda_with_an_error_type_naming_the_failure() {
        let reconciler = unreachable().await;
        let event = lambda_runtime::LambdaEvent::new(
            serde_json::json!({}),
            lambda_runtime::Context::default(),
        );
        // What `lambda_runtime::run` does with the handler's error.
        let diagnostic: lambda_runtime::Diagnostic =
            reconciler.handle(event).await.unwrap_err().into();
        assert_eq!(diagnostic.error_type, "Reconcile.StoreUnavailable");
        assert!(
            diagnostic
                .error_message
                .starts_with("reconcile run stopped part way: DynamoDB request failed"),
            "{}",
            diagnostic.error_message
        );
    }

    #[test]
    fn each_store_failure_has_its_own_error_type() {
        let cases = [
            (
                StoreError::Throttled("slow down".into()),
                "Reconcile.Throttled",
            ),
            (
                StoreError::Unavailable("no route".into()),
                "Reconcile.StoreUnavailable",
            ),
            (StoreError::Contended { attempts: 5 }, "Reconcile.Contended"),
            (
                StoreError::Corrupt {
                    key: "POST#p1/COUNT".into(),
                    problem: "bad post id".into(),
                    source: Some("may contain only [A-Za-z0-9._:-]".into()),
                },
                "Reconcile.CorruptItem",
            ),
        ];
        for (err, error_type) in cases {
            let diagnostic = lambda_runtime::Diagnostic::from(RunFailed(err));
            assert_eq!(diagnostic.error_type, error_type);
        }
    }
}
