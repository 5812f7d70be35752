//! `tally-admin import likes FILE`: an existing like table brought in.
//!
//! - **Idempotent.** Each row becomes a like accepted at its `liked_at`, with
//!   an operation id derived from the row (UUID v5 of user, post and time),
//!   applied as the worker applies likes: a register keeps its newest
//!   version, so a row applied again, or a row older than what the register
//!   holds, changes nothing.
//! - **Resumable.** After each batch is applied in full, the number of rows
//!   done is written to a progress file beside the input; a run resumes
//!   after them. A batch cut short by a kill is applied again, which is safe.
//! - **Exact counts.** A batch's counter writes mark its posts changed, the
//!   re-applied batch of a resumed run too; the import ends with reconcile
//!   runs that recount every marked post.
//! - **Within a write budget.** Write units are metered as DynamoDB bills
//!   them (`shared::usage`), and the import sleeps to stay under
//!   `--max-wcu-per-second` on average.
//! - **Bad rows** are reported by line number and skipped: a row is applied
//!   whole or not at all.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use shared::domain::ids::{OperationId, PostId, UserId};
use shared::domain::likes::{LikeAction, LikeOperation};
use shared::likes_service::LikesService;
use shared::message::Delivered;
use shared::usage::Usage;
use time::OffsetDateTime;

use crate::{BoxError, Tally};

/// Rows applied per batch: the worker's unit of work (one counter write per
/// post per batch), small enough that a kill repeats little.
pub const BATCH_ROWS: usize = 100;
/// Bad rows listed in the report (all are counted).
const BAD_ROWS_LISTED: usize = 100;
/// Tries of one batch before the import stops (to be resumed).
const BATCH_ATTEMPTS: u32 = 5;
/// Reconcile runs at the end at most, each recounting what its budget allows.
const RECOUNT_RUNS: u32 = 50;

const NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x5f0c_7d1e_4a8b_4c2d_9e3f_1a2b_3c4d_5e6f);

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Csv,
    Jsonl,
}

impl Format {
    /// By the file's extension: `.csv`, else JSON Lines.
    pub fn of(path: &Path) -> Self {
        match path.extension().and_then(|e| e.to_str()) {
            Some(ext) if ext.eq_ignore_ascii_case("csv") => Format::Csv,
            _ => Format::Jsonl,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ImportOptions {
    pub file: PathBuf,
    pub format: Format,
    /// Average write units per second the import may spend.
    pub max_wcu_per_second: f64,
    /// Where rows done are recorded (default `{file}.progress`).
    pub progress_file: PathBuf,
    /// Stop after this many batches (a planned interruption, for trying a resume).
    pub stop_after_batches: Option<usize>,
}

impl ImportOptions {
    pub fn new(file: PathBuf, max_wcu_per_second: f64) -> Self {
        let mut progress = file.clone().into_os_string();
        progress.push(".progress");
        Self {
            format: Format::of(&file),
            progress_file: progress.into(),
            file,
            max_wcu_per_second,
            stop_after_batches: None,
        }
    }
}

/// One row as the file has it.
#[derive(Debug, Deserialize)]
struct RawRow {
    user_id: String,
    post_id: String,
    liked_at: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct BadRow {
    pub line: u64,
    pub problem: String,
}

/// A row's like, or why it cannot be one (pure; unit-tested).
pub fn like_of(
    user_id: &str,
    post_id: &str,
    liked_at: &str,
    now: OffsetDateTime,
) -> Result<LikeOperation, String> {
    let user = UserId::parse(user_id).map_err(|e| format!("user_id {user_id:?}: {e}"))?;
    let post = PostId::parse(post_id).map_err(|e| format!("post_id {post_id:?}: {e}"))?;
    let at = OffsetDateTime::parse(liked_at, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("liked_at {liked_at:?} is not an RFC 3339 time: {e}"))?;
    if at > now {
        return Err(format!("liked_at {liked_at} is in the future"));
    }
    let at = at.to_offset(time::UtcOffset::UTC);
    let id = uuid::Uuid::new_v5(
        &NAMESPACE,
        format!("{user}\n{post}\n{}", shared::domain::timestamp::format(at)).as_bytes(),
    );
    let operation_id = OperationId::parse(id.to_string()).map_err(|e| e.to_string())?;
    Ok(LikeOperation {
        operation_id,
        user,
        post,
        action: LikeAction::Like,
        accepted_at: at,
    })
}

/// A data row with its line number, or why it could not be read.
type NumberedRows = Box<dyn Iterator<Item = (u64, Result<RawRow, String>)>>;

/// The file's data rows in order, each with its line number.
fn rows(options: &ImportOptions) -> Result<NumberedRows, BoxError> {
    let file = std::fs::File::open(&options.file)
        .map_err(|e| format!("{}: {e}", options.file.display()))?;
    Ok(match options.format {
        Format::Csv => {
            let mut reader = csv::ReaderBuilder::new()
                .trim(csv::Trim::All)
                .from_reader(file);
            let headers = reader.headers()?.clone();
            // Each record's own position: right across quoted line breaks.
            Box::new(reader.into_records().map(move |record| {
                match record {
                    Ok(record) => (
                        record.position().map_or(0, csv::Position::line),
                        record
                            .deserialize::<RawRow>(Some(&headers))
                            .map_err(|e| e.to_string()),
                    ),
                    Err(err) => (
                        err.position().map_or(0, csv::Position::line),
                        Err(err.to_string()),
                    ),
                }
            }))
        }
        Format::Jsonl => Box::new(
            std::io::BufReader::new(file)
                .lines()
                .enumerate()
                .filter(|(_, line)| line.as_ref().map_or(true, |l| !l.trim().is_empty()))
                .map(|(i, line)| {
                    let row = line.map_err(|e| e.to_string()).and_then(|l| {
                        serde_json::from_str::<RawRow>(&l).map_err(|e| e.to_string())
                    });
                    (i as u64 + 1, row)
                }),
        ),
    })
}

/// What `import likes` did.
#[derive(Debug, Default, Serialize)]
pub struct Imported {
    pub rows: u64,
    /// Rows a previous run had done (skipped).
    pub resumed_after: u64,
    /// Rows whose like flipped a register to liked.
    pub applied: u64,
    /// Rows that changed nothing: already applied, or older than the register.
    pub unchanged: u64,
    pub bad_rows: u64,
    pub bad_rows_listed: Vec<BadRow>,
    pub write_units: f64,
    pub seconds: f64,
    pub rows_per_second: f64,
    /// Posts recounted by the closing reconcile runs, and counters they corrected.
    pub posts_recounted: u64,
    pub counters_repaired: u64,
    /// The run stopped early as asked (`stop_after_batches`): run it again to resume.
    pub interrupted: bool,
}

#[derive(Debug, Serialize, Deserialize)]
struct Progress {
    /// The input's size when the import started: another file under the same name is refused.
    file_bytes: u64,
    rows_done: u64,
}

pub async fn import_likes(
    tally: &Tally,
    options: &ImportOptions,
    progress_bar: &indicatif::ProgressBar,
) -> Result<Imported, BoxError> {
    let file_bytes = std::fs::metadata(&options.file)
        .map_err(|e| format!("{}: {e}", options.file.display()))?
        .len();
    let done = match std::fs::read_to_string(&options.progress_file) {
        Ok(text) => {
            let progress: Progress = serde_json::from_str(&text)
                .map_err(|e| format!("{}: {e}", options.progress_file.display()))?;
            if progress.file_bytes != file_bytes {
                return Err(format!(
                    "{} records an import of a file of {} bytes; {} has {}: delete the progress file to start over",
                    options.progress_file.display(),
                    progress.file_bytes,
                    options.file.display(),
                    file_bytes
                )
                .into());
            }
            progress.rows_done
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => 0,
        Err(err) => return Err(err.into()),
    };
    if !(options.max_wcu_per_second.is_finite() && options.max_wcu_per_second > 0.0) {
        return Err(format!(
            "--max-wcu-per-second must be a positive number, not {}",
            options.max_wcu_per_second
        )
        .into());
    }
    let total = rows(options)?.count() as u64;
    let started = Instant::now();
    progress_bar.set_length(total);
    progress_bar.set_position(done);
    let usage = Arc::new(Usage::default());
    let likes = LikesService::new(tally.store.clone().with_usage(usage.clone()));
    let mut report = Imported {
        resumed_after: done,
        rows: total,
        ..Imported::default()
    };
    let now = OffsetDateTime::now_utc();
    let mut batch: Vec<(u64, LikeOperation)> = Vec::with_capacity(BATCH_ROWS);
    let mut rows_done = done;
    let mut batches = 0;
    let mut all = rows(options)?.skip(done as usize).peekable();
    while all.peek().is_some() {
        batch.clear();
        let mut seen = 0u64;
        for (line, row) in all.by_ref() {
            seen += 1;
            match row.and_then(|r| like_of(&r.user_id, &r.post_id, &r.liked_at, now)) {
                Ok(like) => batch.push((line, like)),
                Err(problem) => {
                    report.bad_rows += 1;
                    if report.bad_rows_listed.len() < BAD_ROWS_LISTED {
                        report.bad_rows_listed.push(BadRow {
                            line,
                            problem: problem.clone(),
                        });
                    }
                    progress_bar.suspend(|| eprintln!("line {line}: skipped: {problem}"));
                }
            }
            if batch.len() == BATCH_ROWS {
                break;
            }
        }
        let (applied, unchanged) = apply(&likes, &batch).await?;
        report.applied += applied;
        report.unchanged += unchanged;
        rows_done += seen;
        std::fs::write(
            &options.progress_file,
            serde_json::to_string(&Progress {
                file_bytes,
                rows_done,
            })?,
        )?;
        progress_bar.set_position(rows_done);
        // Stay within the budget: the units spent so far at the rate allowed
        // would have taken this long.
        let spent = write_units(&usage);
        let allowed = Duration::from_secs_f64(spent / options.max_wcu_per_second.max(0.001));
        if let Some(wait) = allowed.checked_sub(started.elapsed()) {
            tokio::time::sleep(wait).await;
        }
        batches += 1;
        if options.stop_after_batches == Some(batches) && all.peek().is_some() {
            report.interrupted = true;
            break;
        }
    }
    report.write_units = write_units(&usage);
    if !report.interrupted {
        recount(tally, &mut report).await?;
        std::fs::remove_file(&options.progress_file).ok();
    }
    report.seconds = started.elapsed().as_secs_f64();
    report.rows_per_second = (rows_done - done) as f64 / report.seconds.max(0.001);
    progress_bar.finish_and_clear();
    Ok(report)
}

fn write_units(usage: &Usage) -> f64 {
    usage.snapshot().values().map(|c| c.write_units).sum()
}

/// Applies one batch whole, trying again while any of its likes failed (the
/// same likes again: each applies once). Answers (applied, unchanged).
pub(crate) async fn apply(
    likes: &LikesService,
    batch: &[(u64, LikeOperation)],
) -> Result<(u64, u64), BoxError> {
    let mut backoff = Duration::from_millis(200);
    for attempt in 1..=BATCH_ATTEMPTS {
        let delivered = batch
            .iter()
            .map(|(line, like)| Delivered {
                message_id: line.to_string(),
                span: tracing::info_span!("import", line),
                operation: like.clone(),
            })
            .collect();
        let applied = likes.apply_batch(delivered).await;
        let failed = applied
            .outcomes
            .iter()
            .filter(|(_, _, o)| o.is_none())
            .count();
        if failed == 0 {
            let flipped = applied
                .outcomes
                .iter()
                .filter(|(_, _, o)| o.is_some_and(|o| o.count_delta() != 0))
                .count() as u64;
            return Ok((flipped, batch.len() as u64 - flipped));
        }
        tracing::warn!(
            failed,
            attempt,
            "batch not applied in full; trying it again"
        );
        tokio::time::sleep(backoff).await;
        backoff *= 2;
    }
    Err(format!(
        "a batch failed {BATCH_ATTEMPTS} times (DynamoDB unavailable?): run the same command again to resume"
    )
    .into())
}

/// Reconcile runs until every post the import marked is recounted.
pub(crate) async fn recount_marked(tally: &Tally) -> Result<(u64, u64), BoxError> {
    let mut report = Imported::default();
    recount(tally, &mut report).await?;
    Ok((report.posts_recounted, report.counters_repaired))
}

async fn recount(tally: &Tally, report: &mut Imported) -> Result<(), BoxError> {
    let reconciler = reconcile::Reconciler::new(tally.store.clone(), tally.points.queue.clone());
    let mut last_failure = None;
    for _ in 0..RECOUNT_RUNS {
        // A run that fails part way is resumed by the next, as on the schedule.
        match reconciler.run(OffsetDateTime::now_utc()).await {
            Ok(run) => {
                report.posts_recounted += run.posts_checked;
                report.counters_repaired += run.counters_repaired;
                if run.steps_cut_short == 0 {
                    return Ok(());
                }
            }
            Err(err) => {
                last_failure = Some(shared::http::error_chain(&err));
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    Err(format!(
        "every row is applied, but posts are still marked for a recount after {RECOUNT_RUNS} reconcile runs{}: \
         reconcile's schedule finishes them, or run this import again",
        last_failure.map(|f| format!(" (last failure: {f})")).unwrap_or_default()
    )
    .into())
}
