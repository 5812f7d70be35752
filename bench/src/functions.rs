//! Per function: release binary size, init time from process start to its
//! first `invocation/next` against a local Lambda Runtime API, and peak RSS
//! after one invocation (for the worker: a 10-message batch).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use serde::Serialize;
use serde_json::json;
use tokio::sync::Notify;

use crate::harness::Harness;

pub const FUNCTIONS: [&str; 4] = ["like", "points", "sqs-worker", "reconcile"];
const RUNS: usize = 5;

#[derive(Debug, Clone, Serialize)]
pub struct Function {
    pub name: &'static str,
    pub size_x86_64_mb: f64,
    pub size_arm64_mb: Option<f64>,
    pub init_ms_median: f64,
    pub init_ms_runs: Vec<f64>,
    pub peak_rss_mb: f64,
    pub answered: String,
}

#[derive(Default)]
struct Runtime {
    event: String,
    first_poll: Mutex<Option<Instant>>,
    answer: Mutex<Option<String>>,
    answered: Notify,
}

async fn next(State(runtime): State<Arc<Runtime>>) -> (HeaderMap, String) {
    let first = {
        let mut first = runtime.first_poll.lock().unwrap();
        let is_first = first.is_none();
        if is_first {
            *first = Some(Instant::now());
        }
        is_first
    };
    if !first {
        // One invocation per process: later polls wait until it is killed.
        std::future::pending::<()>().await;
    }
    let deadline = (time::OffsetDateTime::now_utc().unix_timestamp() + 30) * 1000;
    let mut headers = HeaderMap::new();
    headers.insert(
        "lambda-runtime-aws-request-id",
        "bench-request".parse().unwrap(),
    );
    headers.insert(
        "lambda-runtime-deadline-ms",
        deadline.to_string().parse().unwrap(),
    );
    headers.insert(
        "lambda-runtime-invoked-function-arn",
        "arn:aws:lambda:us-east-1:123456789012:function:bench"
            .parse()
            .unwrap(),
    );
    headers.insert("lambda-runtime-trace-id", "Root=1-bench".parse().unwrap());
    headers.insert("content-type", "application/json".parse().unwrap());
    (headers, runtime.event.clone())
}

async fn answer(State(runtime): State<Arc<Runtime>>, body: String) -> &'static str {
    *runtime.answer.lock().unwrap() = Some(body);
    runtime.answered.notify_one();
    "{}"
}

/// Runs the binary once against a fresh Runtime API: (init time, peak RSS, answer).
async fn run_once(binary: &Path, event: &str, env: &[(String, String)]) -> (Duration, f64, String) {
    let runtime = Arc::new(Runtime {
        event: event.to_owned(),
        ..Runtime::default()
    });
    let app = Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .route("/2018-06-01/runtime/invocation/{id}/response", post(answer))
        .route("/2018-06-01/runtime/invocation/{id}/error", post(answer))
        .route("/2018-06-01/runtime/init/error", post(answer))
        .with_state(runtime.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let started = Instant::now();
    let mut child = tokio::process::Command::new(binary)
        .envs(env.iter().cloned())
        .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));
    let waited = tokio::time::timeout(Duration::from_secs(30), runtime.answered.notified()).await;
    let peak_rss_kb = child
        .id()
        .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| {
                    l.split_whitespace()
                        .nth(1)
                        .and_then(|kb| kb.parse::<f64>().ok())
                })
        })
        .unwrap_or(0.0);
    let _ = child.kill().await;
    server.abort();
    let first_poll = runtime
        .first_poll
        .lock()
        .unwrap()
        .expect("the function polled for work");
    let answer = if waited.is_ok() {
        runtime.answer.lock().unwrap().clone().unwrap_or_default()
    } else {
        "no answer in 30 s".to_owned()
    };
    (first_poll - started, peak_rss_kb / 1024.0, answer)
}

fn events_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../events")
}

fn worker_batch() -> String {
    let records: Vec<serde_json::Value> = (0..10)
        .map(|i| {
            let body = json!({
                "version": 1, "operation_id": format!("bench-{i}"), "caller": format!("user-{i}"),
                "accepted_at": shared::domain::timestamp::format(time::OffsetDateTime::now_utc()), "operation": {"type": "like", "post_id": "p1"},
            });
            json!({
                "messageId": format!("m{i}"), "receiptHandle": format!("r{i}"), "body": body.to_string(),
                "attributes": {"ApproximateReceiveCount": "1"}, "messageAttributes": {},
                "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:tally-likes", "awsRegion": "us-east-1",
            })
        })
        .collect();
    json!({ "Records": records }).to_string()
}

fn size_mb(path: &Path) -> Option<f64> {
    std::fs::metadata(path)
        .ok()
        .map(|m| m.len() as f64 / 1_048_576.0)
}

/// Measures every function binary found beside this benchmark's own binary
/// (`target/release`), running them against a table and queues on the emulator.
pub async fn measure(aws: &shared::config::SdkConfig, arm64_dir: Option<PathBuf>) -> Vec<Function> {
    let h = Harness::new(aws).await;
    let release = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let env: Vec<(String, String)> = [
        ("TALLY_TABLE_NAME", h.table.clone()),
        ("TALLY_LIKES_QUEUE_URL", h.likes_queue.url().to_owned()),
        ("TALLY_POINTS_QUEUE_URL", h.points_queue.url().to_owned()),
        (
            "AWS_ENDPOINT_URL",
            std::env::var("AWS_ENDPOINT_URL").unwrap(),
        ),
        // The emulator enforces IAM: the operator's keys, as `make bench` exports them.
        (
            "AWS_ACCESS_KEY_ID",
            std::env::var("AWS_ACCESS_KEY_ID").unwrap_or_default(),
        ),
        (
            "AWS_SECRET_ACCESS_KEY",
            std::env::var("AWS_SECRET_ACCESS_KEY").unwrap_or_default(),
        ),
        ("AWS_REGION", "us-east-1".to_owned()),
        ("AWS_LAMBDA_FUNCTION_NAME", "bench".to_owned()),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256".to_owned()),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".to_owned()),
        ("AWS_LAMBDA_LOG_FORMAT", "JSON".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let read = |name: &str| std::fs::read_to_string(events_dir().join(name)).unwrap();
    let mut results = Vec::new();
    for name in FUNCTIONS {
        let binary = release.join(name);
        let Some(size) = size_mb(&binary) else {
            eprintln!("bench: {} not built; run `make bench`", binary.display());
            continue;
        };
        let event = match name {
            "like" => read("like-count.json"),
            "points" => read("points-balance.json"),
            "sqs-worker" => worker_batch(),
            _ => read("reconcile-schedule.json"),
        };
        let mut inits = Vec::new();
        let mut rss: f64 = 0.0;
        let mut answered = String::new();
        for _ in 0..RUNS {
            let (init, peak, answer) = run_once(&binary, &event, &env).await;
            inits.push(init.as_secs_f64() * 1000.0);
            rss = rss.max(peak);
            answered = answer.chars().take(120).collect();
        }
        let mut sorted = inits.clone();
        sorted.sort_by(f64::total_cmp);
        results.push(Function {
            name,
            size_x86_64_mb: size,
            size_arm64_mb: arm64_dir
                .as_ref()
                .and_then(|dir| size_mb(&dir.join(name).join("bootstrap"))),
            init_ms_median: sorted[RUNS / 2],
            init_ms_runs: inits,
            peak_rss_mb: rss,
            answered,
        });
    }
    results
}
