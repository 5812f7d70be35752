//! `tally-admin`: see `tally-admin --help` and docs/operations.md.

use std::path::PathBuf;

use admin::dead_letters::{self, Chosen, DeadLetterQueue};
use admin::import::{self, ImportOptions};
use admin::{BoxError, Tally, status, user};
use clap::{Parser, Subcommand};
use serde::Serialize;
use shared::domain::ids::UserId;
use time::OffsetDateTime;

/// Operate a Tally: the emulator of `make dev` (`make admin ARGS='status'`)
/// or a deployed stack (AWS credentials and region as the AWS CLI reads
/// them, and the stack's names from `eval "$(scripts/stack-env.sh STACK)"`).
#[derive(Debug, Parser)]
#[command(name = "tally-admin", version)]
struct Cli {
    /// Print each result as JSON (one document per line) instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// The stack whose resources to use when TALLY_TABLE_NAME and the queue
    /// URLs are not set (the local stack's naming).
    #[arg(long, global = true, env = "TALLY_STACK_NAME", default_value = "tally")]
    stack: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Queue depths and ages, dead letters, stale pending operations, the last reconcile run.
    Status,
    /// Messages set aside: list, show, put back.
    #[command(subcommand, name = "dead-letters")]
    DeadLetters(DeadLettersCommand),
    /// A user's data: export, erase.
    #[command(subcommand)]
    User(UserCommand),
    /// Bring in data Tally did not record.
    #[command(subcommand)]
    Import(ImportCommand),
    /// One account's ledger audit (exit status 1 on a mismatch).
    Audit { user: String },
    /// One reconcile run now, with its report. With --full, the sweep starts
    /// over and runs go on until it has passed over the whole table (after a
    /// restore: every post recounted, every account audited).
    Reconcile {
        #[arg(long)]
        full: bool,
    },
}

#[derive(Debug, Subcommand)]
enum DeadLettersCommand {
    /// Every dead letter, decoded (the messages stay where they are).
    List {
        #[arg(long, value_enum)]
        queue: Option<DeadLetterQueue>,
    },
    /// One dead letter, decoded, with its body.
    Show {
        message_id: String,
        #[arg(long, value_enum)]
        queue: Option<DeadLetterQueue>,
    },
    /// Put dead letters back on their source queue (each applies once).
    Redrive {
        #[arg(long, value_enum)]
        queue: DeadLetterQueue,
        /// Every message of the queue.
        #[arg(long, conflicts_with = "message_ids")]
        all: bool,
        /// The messages to put back.
        message_ids: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Everything Tally holds on USER, as JSON Lines on standard output.
    Export { user: String },
    /// Erase USER (SPEC section 9): likes removed as unlikes, the points
    /// account closed and kept only under a keyed pseudonym. Safe to run again.
    Erase {
        user: String,
        /// A file holding the deployment's erasure key (at least 32 bytes).
        #[arg(long, env = "TALLY_ERASURE_KEY_FILE")]
        key_file: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum ImportCommand {
    /// A like table (CSV with a header, or JSON Lines, of user_id, post_id,
    /// liked_at): idempotent, resumable, within a write budget.
    Likes {
        file: PathBuf,
        #[arg(long, value_enum)]
        format: Option<import::Format>,
        /// Average DynamoDB write units per second the import may spend.
        #[arg(long, default_value_t = 500.0)]
        max_wcu_per_second: f64,
        /// Stop after N batches of 100 rows (to try a resume).
        #[arg(long, hide = true)]
        stop_after_batches: Option<usize>,
    },
}

fn print<T: Serialize + std::fmt::Display>(json: bool, value: &T) -> Result<(), BoxError> {
    if json {
        println!("{}", serde_json::to_string(value)?);
    } else {
        print!("{value}");
    }
    Ok(())
}

fn print_json(value: &impl Serialize) -> Result<(), BoxError> {
    println!("{}", serde_json::to_string(value)?);
    Ok(())
}

fn user_id(text: &str) -> Result<UserId, BoxError> {
    UserId::parse(text).map_err(|e| format!("user id {text:?}: {e}").into())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(err) => {
            eprintln!("tally-admin: {}", shared::http::error_chain(err.as_ref()));
            std::process::ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> Result<std::process::ExitCode, BoxError> {
    let tally = Tally::from_env(&cli.stack).await?;
    let now = OffsetDateTime::now_utc();
    let json = cli.json;
    match cli.command {
        Command::Status => print(json, &status::status(&tally, now).await?)?,
        Command::DeadLetters(DeadLettersCommand::List { queue }) => {
            for queue in queue.map_or(DeadLetterQueue::ALL.to_vec(), |q| vec![q]) {
                let letters = dead_letters::list(&tally, queue, now).await?;
                if json {
                    for letter in &letters {
                        let mut value = serde_json::to_value(letter)?;
                        if let Some(map) = value.as_object_mut() {
                            map.remove("body");
                        }
                        print_json(&value)?;
                    }
                    continue;
                }
                println!(
                    "{} dead letters: {}",
                    serde_json::to_value(queue)?.as_str().unwrap_or("?"),
                    letters.len()
                );
                for l in &letters {
                    println!(
                        "  {}  sent {}  receives {}  {} {} {}{}\n    why: {}",
                        l.message_id,
                        l.sent_at.as_deref().unwrap_or("?"),
                        l.receive_count,
                        l.operation.as_deref().unwrap_or("?"),
                        l.caller.as_deref().unwrap_or("?"),
                        l.operation_id.as_deref().unwrap_or("?"),
                        l.post_id
                            .as_deref()
                            .map(|p| format!(" post {p}"))
                            .unwrap_or_default(),
                        l.why
                    );
                }
            }
        }
        Command::DeadLetters(DeadLettersCommand::Show { message_id, queue }) => {
            for queue in queue.map_or(DeadLetterQueue::ALL.to_vec(), |q| vec![q]) {
                let letters = dead_letters::list(&tally, queue, now).await?;
                if let Some(letter) = letters.into_iter().find(|l| l.message_id == message_id) {
                    if json {
                        print_json(&letter)?;
                    } else {
                        println!("{}", serde_json::to_string_pretty(&letter)?);
                    }
                    return Ok(std::process::ExitCode::SUCCESS);
                }
            }
            return Err(format!("no dead letter {message_id}").into());
        }
        Command::DeadLetters(DeadLettersCommand::Redrive {
            queue,
            all,
            message_ids,
        }) => {
            let chosen = if all {
                Chosen::All
            } else if message_ids.is_empty() {
                return Err("name the messages to redrive, or --all".into());
            } else {
                Chosen::Ids(message_ids)
            };
            let report = dead_letters::redrive(&tally, queue, &chosen).await?;
            if json {
                print_json(&report)?;
            } else {
                if let Some(why) = &report.move_task_refused {
                    println!(
                        "StartMessageMoveTask not available ({why}): moving by receive, send, delete"
                    );
                }
                match &report.move_task {
                    Some(task) => println!(
                        "SQS is moving every message back (task {task}); `status` shows the queue empty when done"
                    ),
                    None => println!("moved back: {}", report.moved.len()),
                }
                for id in &report.moved {
                    println!("  {id}");
                }
                if !report.not_found.is_empty() {
                    println!("not found: {}", report.not_found.join(", "));
                }
            }
            if !report.not_found.is_empty() {
                return Ok(std::process::ExitCode::from(1));
            }
        }
        Command::User(UserCommand::Export { user }) => {
            let user = user_id(&user)?;
            let lines = user::export(&tally, &user, |value| print_json(&value)).await?;
            eprintln!("{lines} records of {user}");
        }
        Command::User(UserCommand::Erase { user, key_file }) => {
            let key =
                std::fs::read(&key_file).map_err(|e| format!("{}: {e}", key_file.display()))?;
            let key = shared::domain::erasure::ErasureKey::new(&key)?;
            let erased = admin::erase::erase(&tally, &user_id(&user)?, &key, now).await?;
            print(json, &erased)?;
            let failed = erased.audits_after.iter().any(|a| !a.findings.is_empty());
            if failed {
                return Ok(std::process::ExitCode::from(1));
            }
        }
        Command::Import(ImportCommand::Likes {
            file,
            format,
            max_wcu_per_second,
            stop_after_batches,
        }) => {
            let mut options = ImportOptions::new(file, max_wcu_per_second);
            if let Some(format) = format {
                options.format = format;
            }
            options.stop_after_batches = stop_after_batches;
            let bar = if json {
                indicatif::ProgressBar::hidden()
            } else {
                indicatif::ProgressBar::new(0).with_style(indicatif::ProgressStyle::with_template(
                    "{bar:40} {pos}/{len} rows  {per_sec}  eta {eta}",
                )?)
            };
            let report = import::import_likes(&tally, &options, &bar).await?;
            if json {
                print_json(&report)?;
            } else {
                println!(
                    "{} rows: {} liked, {} unchanged, {} bad (skipped){}",
                    report.rows - report.resumed_after,
                    report.applied,
                    report.unchanged,
                    report.bad_rows,
                    if report.resumed_after > 0 {
                        format!(", resumed after {}", report.resumed_after)
                    } else {
                        String::new()
                    }
                );
                println!(
                    "{:.1} s, {:.0} rows/s, {:.0} write units; reconcile recounted {} posts, repaired {}",
                    report.seconds,
                    report.rows_per_second,
                    report.write_units,
                    report.posts_recounted,
                    report.counters_repaired
                );
                if report.interrupted {
                    println!("stopped early as asked: run the same command to resume");
                }
            }
        }
        Command::Audit { user } => {
            let audit = user::audit(&tally, &user_id(&user)?).await?;
            print(json, &audit)?;
            if !audit.findings.is_empty() {
                return Ok(std::process::ExitCode::from(1));
            }
        }
        Command::Reconcile { full } => {
            let reconciler =
                reconcile::Reconciler::new(tally.store.clone(), tally.points.queue.clone());
            if full {
                // From the table's start, so the sweep passes over all of it.
                let mut state = tally.store.reconcile_state().await?;
                state.sweep_cursor = None;
                tally.store.save_reconcile_state(&state).await?;
            }
            loop {
                let report = reconciler.run(OffsetDateTime::now_utc()).await?;
                print_json(&report)?;
                let state = tally.store.reconcile_state().await?;
                if !full || (state.sweep_cursor.is_none() && report.steps_cut_short == 0) {
                    break;
                }
            }
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}
