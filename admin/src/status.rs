//! `tally-admin status`: is anything stuck, and did reconcile run.

use serde::Serialize;
use shared::queue::{OperationQueue, QueueFigures};
use time::OffsetDateTime;

use crate::{BoxError, Tally};

/// Pending operations counted at most: past this the answer is "at least".
pub const PENDING_SHOWN: usize = 1000;

#[derive(Debug, Serialize)]
pub struct Status {
    pub queues: Vec<QueueStatus>,
    /// Points operations still pending past reconcile's re-drive bound: their
    /// messages were lost or dead-lettered, and reconcile queues them again.
    pub stale_pending_operations: usize,
    pub redrive_after_seconds: u64,
    /// One of them, if any (the first listed): (caller, operation id).
    pub a_stale_pending: Option<(String, String)>,
    pub last_reconcile: Option<LastReconcile>,
}

#[derive(Debug, Serialize)]
pub struct QueueStatus {
    pub name: &'static str,
    pub dead_letters: bool,
    pub url: String,
    #[serde(flatten)]
    pub figures: QueueFigures,
    /// From CloudWatch; `None` without a datapoint (always, on the emulator).
    pub oldest_age_seconds: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct LastReconcile {
    /// When the last successful run started (reconcile's `last_success_at`).
    pub started_at: Option<String>,
    pub seconds_ago: Option<i64>,
    pub report: Option<serde_json::Value>,
    /// The leaderboards' `as_of`: the last run that reached every changed account.
    pub leaderboards_as_of: Option<String>,
}

impl Tally {
    /// The queues by the names the commands use.
    pub fn queues(&self) -> [(&'static str, bool, &OperationQueue); 5] {
        [
            ("likes", false, &self.likes.queue),
            ("likes-dead-letters", true, &self.likes.dead_letters),
            ("points", false, &self.points.queue),
            ("points-dead-letters", true, &self.points.dead_letters),
            ("events-dead-letters", true, &self.events_dead_letters),
        ]
    }
}

pub async fn status(tally: &Tally, now: OffsetDateTime) -> Result<Status, BoxError> {
    let mut queues = Vec::new();
    for (name, dead_letters, queue) in tally.queues() {
        let oldest_age_seconds = match &tally.metrics {
            Some(metrics) => metrics.oldest_age(queue.url()).await,
            None => None,
        };
        queues.push(QueueStatus {
            name,
            dead_letters,
            url: queue.url().to_owned(),
            figures: queue.figures().await?,
            oldest_age_seconds,
        });
    }
    let bound = reconcile::REDRIVE_AFTER;
    let pending = tally
        .store
        .pending_operations(now - bound, PENDING_SHOWN)
        .await?;
    let oldest = pending
        .iter()
        .flatten()
        .next()
        .map(|(caller, id)| (caller.to_string(), id.to_string()));
    let state = tally.store.reconcile_state().await?;
    let seconds_ago = state
        .last_success_at
        .as_deref()
        .and_then(shared::domain::timestamp::parse)
        .map(|at| (now - at).whole_seconds());
    let last_reconcile = (state.last_success_at.is_some()).then(|| LastReconcile {
        started_at: state.last_success_at.clone(),
        seconds_ago,
        report: state.last_report.clone(),
        leaderboards_as_of: state.leaderboard_as_of.clone(),
    });
    Ok(Status {
        queues,
        stale_pending_operations: pending.len(),
        redrive_after_seconds: bound.as_secs(),
        a_stale_pending: oldest,
        last_reconcile,
    })
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{:<22} {:>8} {:>10} {:>8} {:>12}",
            "queue", "visible", "in flight", "delayed", "oldest"
        )?;
        for q in &self.queues {
            let age = q
                .oldest_age_seconds
                .map_or_else(|| "-".to_owned(), |s| format!("{s} s"));
            let warn = if q.dead_letters && q.figures.visible + q.figures.in_flight > 0 {
                "  <- tally-admin dead-letters list"
            } else {
                ""
            };
            writeln!(
                f,
                "{:<22} {:>8} {:>10} {:>8} {:>12}{warn}",
                q.name, q.figures.visible, q.figures.in_flight, q.figures.delayed, age
            )?;
        }
        if self.queues.iter().any(|q| q.oldest_age_seconds.is_none()) {
            writeln!(
                f,
                "(oldest: CloudWatch's ApproximateAgeOfOldestMessage; - without a datapoint in 10 minutes, and always on the emulator)"
            )?;
        }
        let more = if self.stale_pending_operations >= PENDING_SHOWN {
            "at least "
        } else {
            ""
        };
        write!(
            f,
            "\npoints operations pending over {} s: {more}{}",
            self.redrive_after_seconds, self.stale_pending_operations
        )?;
        match &self.a_stale_pending {
            Some((caller, id)) => {
                writeln!(f, " (oldest: {caller} {id}; reconcile re-drives them)")?
            }
            None => writeln!(f)?,
        }
        match &self.last_reconcile {
            None => writeln!(f, "last reconcile: never")?,
            Some(last) => {
                let ago = last
                    .seconds_ago
                    .map_or_else(String::new, |s| format!(" ({s} s ago)"));
                writeln!(
                    f,
                    "last successful reconcile run: started {}{ago}",
                    last.started_at.as_deref().unwrap_or("?")
                )?;
                writeln!(
                    f,
                    "  leaderboards as of {}",
                    last.leaderboards_as_of
                        .as_deref()
                        .unwrap_or("never (no run has reached every changed account yet)")
                )?;
                if let Some(serde_json::Value::Object(report)) = &last.report {
                    let figures: Vec<String> =
                        report.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    writeln!(f, "  {}", figures.join(" "))?;
                }
            }
        }
        Ok(())
    }
}
