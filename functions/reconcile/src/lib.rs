//! Reconcile: the scheduled safety net.
//!
//! Each run, in three steps that are each safe to interrupt and run again:
//! 1. **Likes**: recounts every post whose counter was written since it was last
//!    settled (the worker marks it), and sets each counter to the true count with
//!    a write conditioned on the counter's revision: if the worker wrote in
//!    between, nothing is lost, the post stays marked, and the next run settles it.
//! 2. **Ledgers**: audits every account written since its last clean audit
//!    (gapless `seq`, linked balances, balance = Σ entries, lots = balance). A
//!    mismatch is reported, never rewritten, and reported again each run until
//!    someone fixes it.
//!
//! Both also take the posts and accounts of one bounded page of a **background
//! sweep** of the whole table, which over many runs visits everything once: it
//! catches damage that no write marked (a counter deleted or edited by hand, a
//! ledger edited behind the service's back).
//! 3. **Expiry**: turns lots whose time has passed into `expire` entries, a
//!    bounded number of accounts per run, each in one transaction conditioned on
//!    the account's `seq`, so a rerun never expires the same lots twice.

use std::time::Instant;

use serde::Serialize;
use shared::domain::ids::{PostId, UserId};
use shared::domain::points::{self, Finding};
use shared::http::error_chain;
use shared::store::points::Commit;
use shared::store::{Store, StoreError};
use time::OffsetDateTime;

/// Items the background sweep reads per run.
pub const SWEEP_ITEMS_PER_RUN: i32 = 500;
/// Accounts whose points one run expires; the rest wait for the next run.
pub const EXPIRY_ACCOUNTS_PER_RUN: usize = 200;
/// Times an expiry is planned again when the worker moved the account meanwhile.
const EXPIRY_ATTEMPTS: u32 = 5;

#[derive(Debug, Clone)]
pub struct Reconciler {
    pub store: Store,
    pub sweep_items_per_run: i32,
    pub expiry_accounts_per_run: usize,
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
    pub accounts_expired: u64,
    pub points_expired: u64,
    pub duration_ms: u64,
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
            StoreError::Corrupt { .. } => "Reconcile.CorruptItem",
        };
        lambda_runtime::Diagnostic {
            error_type: error_type.to_owned(),
            error_message: error_chain(&err),
        }
    }
}

/// An account whose ledger does not add up, with the numbers.
#[derive(Debug, Serialize)]
struct Mismatch<'a> {
    account: &'a str,
    balance: u64,
    seq: u64,
    entries: usize,
    findings: &'a [Finding],
}

impl Reconciler {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            sweep_items_per_run: SWEEP_ITEMS_PER_RUN,
            expiry_accounts_per_run: EXPIRY_ACCOUNTS_PER_RUN,
        }
    }

    pub async fn from_env() -> Result<Self, shared::config::ConfigError> {
        let table = shared::config::table_name()?;
        let aws = shared::config::aws().await;
        Ok(Self::new(Store::from_config(&aws, table)))
    }

    /// One run at time `now` (injectable, so tests need no sleeps). Logs the
    /// report, emits it as metrics, and returns it.
    pub async fn run(&self, now: OffsetDateTime) -> Result<Report, RunFailed> {
        let started = Instant::now();
        let mut report = Report::default();
        let result = async {
            let mut state = self.store.reconcile_state().await?;
            let sweep = self
                .store
                .sweep(state.sweep_cursor.as_deref(), self.sweep_items_per_run)
                .await?;
            self.reconcile_likes(&sweep.posts, &mut report).await?;
            self.audit_ledgers(&sweep.accounts, &mut report).await?;
            self.expire_points(now, &mut report).await?;
            state.sweep_cursor = sweep.next_cursor;
            state.last_success_at = Some(shared::domain::timestamp::format(now));
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
            mismatches = report.mismatches,
            accounts_expired = report.accounts_expired,
            points_expired = report.points_expired,
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
                ("LedgerMismatches", report.mismatches as f64),
                ("PointsExpired", report.points_expired as f64),
                ("DurationMs", report.duration_ms as f64),
            ],
        );
        Ok(report)
    }

    /// Step 1: marked posts and the sweep's posts, each recounted once.
    pub async fn reconcile_likes(
        &self,
        swept: &[PostId],
        report: &mut Report,
    ) -> Result<(), StoreError> {
        let changed = self.store.changed_posts().await?;
        for post in &changed {
            self.reconcile_post(post, true, report).await?;
        }
        for post in swept.iter().filter(|post| !changed.contains(post)) {
            self.reconcile_post(post, false, report).await?;
        }
        Ok(())
    }

    async fn reconcile_post(
        &self,
        post: &PostId,
        marked: bool,
        report: &mut Report,
    ) -> Result<(), StoreError> {
        // Read the counter before counting: any counter write after this read
        // fails the settle below instead of being overwritten.
        let seen = self.store.counter_snapshot(post).await?;
        let true_count = self.store.count_likes(post).await?;
        let drift = seen.count - true_count as i64;
        report.posts_checked += 1;
        report.total_drift += drift.unsigned_abs();
        if drift == 0 && !marked {
            return Ok(());
        }
        if self.store.settle_counter(post, true_count, seen).await? {
            if drift != 0 {
                report.counters_repaired += 1;
                tracing::warn!(post = %post, counter = seen.count, true_count, drift, "like counter repaired");
            }
        } else {
            report.posts_busy += 1;
        }
        Ok(())
    }

    /// Step 2: audit each changed or swept account; clear its mark only when clean.
    pub async fn audit_ledgers(
        &self,
        swept: &[UserId],
        report: &mut Report,
    ) -> Result<(), StoreError> {
        let changed = self.store.changed_accounts().await?;
        let unmarked = swept.iter().filter(|user| !changed.contains(user));
        let accounts: Vec<(&UserId, bool)> = changed
            .iter()
            .map(|user| (user, true))
            .chain(unmarked.map(|user| (user, false)))
            .collect();
        for (user, marked) in accounts {
            let account = self.store.account(user).await?;
            let entries = self.store.ledger(user).await?;
            report.accounts_audited += 1;
            let findings = points::audit(&account, &entries);
            if findings.is_empty() {
                if marked {
                    self.store.settle_account_audit(user, account.seq).await?;
                }
                continue;
            }
            // The worker may have committed between the two reads; only a
            // mismatch that survives a second look is reported.
            let again = self.store.account(user).await?;
            if again != account {
                continue;
            }
            report.mismatches += 1;
            let mismatch = Mismatch {
                account: user.as_str(),
                balance: account.balance,
                seq: account.seq,
                entries: entries.len(),
                findings: &findings,
            };
            tracing::error!(
                account = %user,
                mismatch = %serde_json::to_string(&mismatch).expect("mismatch serializes"),
                "ledger mismatch"
            );
        }
        Ok(())
    }

    /// Step 3: expire due lots, a bounded number of accounts per run.
    pub async fn expire_points(
        &self,
        now: OffsetDateTime,
        report: &mut Report,
    ) -> Result<(), StoreError> {
        for user in self
            .store
            .accounts_due_for_expiry(now, self.expiry_accounts_per_run)
            .await?
        {
            for _ in 0..EXPIRY_ATTEMPTS {
                let account = self.store.account(&user).await?;
                let Some(change) = points::expire_due(&user, &account, now) else {
                    break;
                };
                match self.store.commit_account_change(&change).await? {
                    Commit::Done => {
                        report.accounts_expired += 1;
                        report.points_expired += change.entry.amount.unsigned_abs();
                        tracing::info!(account = %user, expired = -change.entry.amount, seq = change.entry.seq, "points expired");
                        break;
                    }
                    Commit::Conflict | Commit::AlreadyDone => continue,
                }
            }
        }
        Ok(())
    }
}
