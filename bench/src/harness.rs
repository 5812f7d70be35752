//! One instrumented Tally in this process: the real like and points handlers,
//! the real queues on the emulator, the real worker fed by the dev gateway's
//! event source mapping, and a usage meter on every adapter.
//!
//! Tally's functions run apart from the benchmark's own clients and pollers: on
//! a single-threaded runtime on its own thread ([`FUNCTIONS_THREAD`]), with
//! their own SDK clients (so their own connections), as a Lambda function runs
//! in its own process. [`functions_cpu`] is that thread's CPU: Tally's, without
//! the load generator's or the event source mapping's (AWS runs that one).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use axum::Router;
use dev_gateway::{EventSourceMapping, Fault, LocalStack, StackOptions};
use lambda_http::request::LambdaRequest;
use serde_json::json;
use shared::config::SdkConfig;
use shared::queue::OperationQueue;
use shared::store::Store;
use shared::usage::{Counts, Usage};
use sqs_worker::Worker;
use tower::ServiceExt as _;

pub struct Harness {
    /// The benchmark's table.
    pub table: String,
    pub usage: Arc<Usage>,
    /// An uninstrumented store, for the benchmark's own checks.
    pub checks: Store,
    /// The store the functions use, counted on `usage`.
    pub metered: Store,
    pub like: Router,
    pub points: Router,
    pub worker: Worker,
    pub likes_mapping: EventSourceMapping,
    pub points_mapping: EventSourceMapping,
    /// Uninstrumented, for the benchmark's own checks (queue depth).
    pub likes_queue: OperationQueue,
    pub points_queue: OperationQueue,
}

/// The name of the thread (and of its blocking pool's threads) Tally's functions run on.
pub const FUNCTIONS_THREAD: &str = "tally-functions";

/// The functions' runtime: current-thread, as the functions' own `main` builds it.
static FUNCTIONS: LazyLock<tokio::runtime::Handle> = LazyLock::new(|| {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name(FUNCTIONS_THREAD)
        .build()
        .expect("the functions' runtime");
    let handle = runtime.handle().clone();
    std::thread::Builder::new()
        .name(FUNCTIONS_THREAD.into())
        .spawn(move || runtime.block_on(std::future::pending::<()>()))
        .expect("the functions' thread");
    handle
});

/// The runtime Tally's functions run on.
pub fn functions() -> &'static tokio::runtime::Handle {
    &FUNCTIONS
}

/// CPU time of Tally's functions so far: the scheduler's run time of every
/// thread named [`FUNCTIONS_THREAD`] (`/proc/self/task/*/schedstat`, in ns).
pub fn functions_cpu() -> Duration {
    let tasks = std::fs::read_dir("/proc/self/task").expect("/proc/self/task");
    let nanos: u64 = tasks
        .flatten()
        .filter(|task| {
            std::fs::read_to_string(task.path().join("comm"))
                .is_ok_and(|name| name.trim_end() == FUNCTIONS_THREAD)
        })
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    Duration::from_nanos(nanos)
}

impl Harness {
    pub async fn new(aws: &SdkConfig) -> Self {
        let id = uuid::Uuid::now_v7().simple().to_string();
        let options = StackOptions::deployed(&format!("b-{id}")).expect("template.yaml");
        let stack = LocalStack::provision(aws, &options)
            .await
            .expect("provision the benchmark's table and queues");
        let table = stack.store.table_name().to_owned();
        let usage = Arc::new(Usage::default());
        // `Client::new` gives each adapter its own HTTP client: the functions'
        // connections are opened, and their I/O done, on the functions' runtime.
        let metered_queue = |queue: &OperationQueue| {
            OperationQueue::from_config(aws, queue.url()).with_usage(usage.clone())
        };
        let store = Store::from_config(aws, &table).with_usage(usage.clone());
        let like = like::router(like::LikeApi::new(
            store.clone(),
            metered_queue(&stack.likes.queue),
        ));
        let points = points::router(points::PointsApi::new(
            store.clone(),
            metered_queue(&stack.points.queue),
        ));
        // The worker runs on the functions' runtime; the polling stays here.
        // Batch sizes and windows are the template's.
        let [likes_mapping, points_mapping] = stack.mappings(None).expect("the mappings");
        let event_source = |mapping: &EventSourceMapping, queue: &OperationQueue| {
            EventSourceMapping::new(
                metered_queue(queue),
                mapping.source_arn(),
                mapping.settings(),
            )
            .with_worker_runtime(FUNCTIONS.clone())
        };
        let likes_mapping = event_source(&likes_mapping, &stack.likes.queue);
        let points_mapping = event_source(&points_mapping, &stack.points.queue);
        Self {
            table,
            usage,
            worker: Worker::new(store.clone()),
            checks: stack.store.clone(),
            metered: store.clone(),
            like,
            points,
            likes_mapping,
            points_mapping,
            likes_queue: stack.likes.queue.clone(),
            points_queue: stack.points.queue.clone(),
        }
    }

    /// Starts `count` pollers on a mapping, as Lambda scales out consumers.
    pub fn start_pumps(&self, mapping: &EventSourceMapping, count: usize, fault: Fault) -> Pumps {
        let stop = Arc::new(AtomicBool::new(false));
        let failed = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicU64::new(0));
        let tasks = (0..count)
            .map(|_| {
                let (mapping, worker) = (mapping.clone(), self.worker.clone());
                let (stop, failed, done) = (stop.clone(), failed.clone(), done.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        match mapping.poll_once_with(&worker, fault).await {
                            Ok(poll) => {
                                failed.fetch_add(poll.failed as u64, Ordering::Relaxed);
                                done.fetch_add(
                                    (poll.received - poll.failed) as u64,
                                    Ordering::Relaxed,
                                );
                            }
                            Err(_) => {
                                // The emulator is unreachable: count it, and do not spin.
                                failed.fetch_add(1, Ordering::Relaxed);
                                tokio::time::sleep(Duration::from_secs(1)).await;
                            }
                        }
                    }
                })
            })
            .collect();
        Pumps {
            stop,
            failed,
            done,
            tasks,
        }
    }
}

pub struct Pumps {
    stop: Arc<AtomicBool>,
    pub failed: Arc<AtomicU64>,
    /// Messages the worker finished (deleted from the queue).
    done: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Messages the senders may run ahead of the worker. moto scans a queue's whole
/// backlog on every receive and delete, so an unbounded backlog would
/// measure moto's slowdown, not Tally; SQS itself has no such limit.
pub const MAX_BACKLOG: u64 = 200;

impl Pumps {
    /// Waits while more than [`MAX_BACKLOG`] of the `sent` messages are still queued.
    pub async fn keep_up_with(&self, sent: u64) {
        while sent > self.done.load(Ordering::Relaxed) + MAX_BACKLOG {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            let _ = task.await;
        }
        self.failed.load(Ordering::Relaxed)
    }
}

/// One HTTP call as API Gateway would make it: an HTTP API v2 event with the
/// JWT authorizer context, turned into a request by `lambda_http`, served by
/// the function's router. Answers the status and the handler's latency.
pub struct Call<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    pub user: &'a str,
    pub scope: &'a str,
    pub key: Option<&'a str>,
    pub body: Option<String>,
}

/// A like (`PUT`) or unlike (`DELETE`) of `post` by `user`, which must be accepted.
pub async fn like_write(router: &Router, like: bool, post: &str, user: &str) -> Duration {
    let path = format!("/v1/posts/{post}/like");
    let call = Call {
        method: if like { "PUT" } else { "DELETE" },
        path: &path,
        query: "",
        user,
        scope: "",
        key: None,
        body: None,
    };
    let (status, latency) = http(router, call).await;
    assert_eq!(status, 202, "{path}");
    latency
}

pub async fn http(router: &Router, call: Call<'_>) -> (u16, Duration) {
    let mut headers = serde_json::Map::new();
    headers.insert("content-type".into(), json!("application/json"));
    if let Some(key) = call.key {
        headers.insert("idempotency-key".into(), json!(key));
    }
    let event = json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": call.path,
        "rawQueryString": call.query,
        "headers": headers,
        "requestContext": {
            "http": {"method": call.method, "path": call.path, "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1", "userAgent": "bench"},
            "authorizer": {"jwt": {"claims": {"sub": call.user, "scope": call.scope}}},
            "requestId": "bench", "routeKey": "$default", "stage": "$default", "timeEpoch": 0,
        },
        "body": call.body,
        "isBase64Encoded": false,
    })
    .to_string();
    let router = router.clone();
    let started = Instant::now();
    // What the function's process does with one invocation: parse the event,
    // route, handle, and produce the response body.
    let status = FUNCTIONS
        .spawn(async move {
            let event: LambdaRequest =
                serde_json::from_str(&event).expect("a valid API Gateway event");
            let request: lambda_http::Request = event.into();
            let response = router.oneshot(request).await.expect("routers never fail");
            let status = response.status().as_u16();
            let _ = axum::body::to_bytes(response.into_body(), 1 << 20).await;
            status
        })
        .await
        .expect("the handler does not panic");
    (status, started.elapsed())
}

/// CPU time of this whole process so far (user + system, all threads) from
/// /proc/self/stat, in 10 ms ticks: Tally's functions plus the load generator
/// and the event source mapping. Reported beside [`functions_cpu`].
pub fn process_cpu() -> Duration {
    const TICKS_PER_SECOND: u64 = 100;
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at field 3.
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<u64> = after_name
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let ticks = fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0);
    Duration::from_millis(ticks * 1000 / TICKS_PER_SECOND)
}

/// What a phase cost: wall time, CPU, and the adapters' usage.
pub struct Meter {
    started: Instant,
    cpu: Duration,
    process_cpu: Duration,
    usage: BTreeMap<&'static str, Counts>,
    worker: (u64, Duration),
}

pub struct Measured {
    pub wall: Duration,
    /// Tally's functions.
    pub cpu: Duration,
    /// The whole benchmark process.
    pub process_cpu: Duration,
    pub usage: BTreeMap<&'static str, Counts>,
    /// Worker invocations (both mappings) and their summed wall time.
    pub worker_invocations: u64,
    pub worker_time: Duration,
}

/// Worker invocations so far over both mappings, and their wall time.
fn worker_so_far(h: &Harness) -> (u64, Duration) {
    let mappings = [&h.likes_mapping, &h.points_mapping];
    (
        mappings.iter().map(|m| m.invocations()).sum(),
        mappings.iter().map(|m| m.invoked_time()).sum(),
    )
}

impl Meter {
    pub fn start(h: &Harness) -> Self {
        Self {
            started: Instant::now(),
            cpu: functions_cpu(),
            process_cpu: process_cpu(),
            usage: h.usage.snapshot(),
            worker: worker_so_far(h),
        }
    }

    pub fn finish(self, h: &Harness) -> Measured {
        let (invocations, time) = worker_so_far(h);
        let mut delta = h.usage.snapshot();
        for (call, before) in self.usage {
            let counts = delta.entry(call).or_default();
            counts.requests -= before.requests;
            counts.write_units -= before.write_units;
            counts.read_units -= before.read_units;
        }
        Measured {
            wall: self.started.elapsed(),
            cpu: functions_cpu() - self.cpu,
            process_cpu: process_cpu() - self.process_cpu,
            usage: delta,
            worker_invocations: invocations - self.worker.0,
            worker_time: time - self.worker.1,
        }
    }
}

impl Measured {
    /// Usage summed over the calls `pick` selects.
    pub fn sum(&self, pick: impl Fn(&str) -> bool) -> Counts {
        let mut total = Counts::default();
        for (call, counts) in &self.usage {
            if pick(call) {
                total.requests += counts.requests;
                total.write_units += counts.write_units;
                total.read_units += counts.read_units;
            }
        }
        total
    }
}

/// Latency percentile in milliseconds.
pub fn percentile(latencies: &mut [Duration], p: f64) -> f64 {
    if latencies.is_empty() {
        return 0.0;
    }
    latencies.sort();
    let index = ((latencies.len() as f64 - 1.0) * p).round() as usize;
    latencies[index].as_secs_f64() * 1000.0
}
