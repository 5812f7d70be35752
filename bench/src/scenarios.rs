//! The scenarios of the benchmark.

use std::time::{Duration, Instant};

use dev_gateway::Fault;
use futures::StreamExt as _;
use rand::Rng as _;
use serde::Serialize;
use shared::config::SdkConfig;
use shared::domain::ids::PostId;
use shared::queue::{OperationQueue, mapping};
use shared::usage::Counts;

use crate::harness::{Call, Harness, Measured, Meter, http, like_write, percentile};
use crate::limits::Limits;

/// HTTP requests in flight at once, as many clients would send them.
const CLIENTS: usize = 32;
/// Worker pollers, as Lambda scales out the event source mapping.
const POLLERS: usize = 4;

/// One line of the results table: one kind of operation.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub scenario: &'static str,
    pub kind: &'static str,
    pub ops: u64,
    pub ops_per_s: f64,
    /// What the emulator could serve of the minimal requests for this kind,
    /// measured in the same run (none for reads: they run at the offered load).
    pub limit_ops_per_s: Option<f64>,
    pub ratio_to_limit: Option<f64>,
    pub dynamodb_requests_per_op: f64,
    pub write_units_per_op: f64,
    pub read_units_per_op: f64,
    pub sqs_requests_per_op: f64,
    /// CPU of Tally's functions (handlers, worker, adapters) per operation of the scenario.
    pub cpu_us_per_op: f64,
    /// CPU of the whole benchmark process (functions, load generator, event
    /// source mapping) per operation of the scenario.
    pub process_cpu_us_per_op: f64,
    pub handler_p50_ms: f64,
    pub handler_p99_ms: f64,
    /// What Lambda and API Gateway bill per operation (see [`Billing`]).
    pub api_requests_per_op: f64,
    pub lambda_invocations_per_op: f64,
    /// Lambda duration per operation as measured against the emulator: the
    /// handler's, the worker's share of its invocations, or reconcile's share
    /// of its run. The emulator answers 10–50× slower than DynamoDB, so this
    /// is an upper bound; the cost uses [`crate::cost::modelled_lambda_ms`].
    pub emulator_lambda_ms_per_op: f64,
    /// Requests per operation a function waits on one after another: the
    /// handler's, then the worker's (or reconcile's) divided by how many it
    /// keeps in flight. The ESM's receives and deletes are AWS's, not a wait.
    pub sequential_waits_per_op: f64,
    /// Whether the operation's queue is the points FIFO queue (priced apart).
    pub sqs_fifo: bool,
}

/// Which functions an operation runs in, for what Lambda and API Gateway bill.
#[derive(Debug, Clone, Copy)]
pub struct Billing {
    /// DynamoDB requests the HTTP handler makes (the rest are the worker's).
    pub handler_dynamodb_requests: f64,
    /// Requests the worker (or reconcile) keeps in flight at once.
    pub in_flight: f64,
    /// One HTTP API request and one invocation of its handler per operation.
    pub http: bool,
    /// The phase's worker invocations are this operation's.
    pub worker: bool,
    /// Through the points FIFO queue.
    pub fifo: bool,
    /// Done by reconcile: the phase's wall time is its invocation's duration.
    pub reconcile: bool,
}

impl Billing {
    /// A read answers from DynamoDB; every write is sent to a queue.
    fn reads(&self) -> bool {
        !self.worker && !self.reconcile
    }

    pub const LIKES: Self = Self {
        handler_dynamodb_requests: 0.0,
        in_flight: 16.0,
        http: true,
        worker: true,
        fifo: false,
        reconcile: false,
    };
    pub const READS: Self = Self {
        handler_dynamodb_requests: 1.0,
        in_flight: 1.0,
        http: true,
        worker: false,
        fifo: false,
        reconcile: false,
    };
    pub const POINTS: Self = Self {
        // The pending record; the worker applies one account's operations in order.
        handler_dynamodb_requests: 1.0,
        in_flight: 1.0,
        http: true,
        worker: true,
        fifo: true,
        reconcile: false,
    };
    pub const RECONCILE: Self = Self {
        handler_dynamodb_requests: 0.0,
        in_flight: reconcile::EXPIRY_CONCURRENCY as f64,
        http: false,
        worker: false,
        fifo: false,
        reconcile: true,
    };
}

#[derive(Debug, Clone, Serialize)]
pub struct HotPost {
    pub likes: u64,
    pub final_count: u64,
    pub worker_invocations: u64,
    pub counter_writes: u64,
    pub counter_writes_per_invocation: f64,
    pub failed_messages: u64,
    pub throttled: u64,
    /// Register writes (every delivery's conditional write) per second on the
    /// post's busiest partition key and on the mean key, over the scenario;
    /// each key's share read back from the table (its registers).
    pub register_keys_used: usize,
    pub busiest_key_writes_per_s: f64,
    pub mean_key_writes_per_s: f64,
    /// The busiest key's share of the post's register writes ÷ an even share.
    pub busiest_to_mean: f64,
}

/// What a row is about; the figures come from a [`Measured`] phase.
struct Spec {
    scenario: &'static str,
    kind: &'static str,
    ops: u64,
    dynamodb: Counts,
    sqs: Counts,
    /// Operations the phase's CPU time is shared by.
    cpu_ops: u64,
    limit: Option<f64>,
    billing: Billing,
}

fn row(measured: &Measured, latencies: &mut [Duration], spec: Spec) -> Row {
    let per = |x: f64| x / spec.ops.max(1) as f64;
    let ops_per_s = spec.ops as f64 / measured.wall.as_secs_f64();
    let b = spec.billing;
    let handler_mean_ms = latencies.iter().map(Duration::as_secs_f64).sum::<f64>() * 1000.0
        / latencies.len().max(1) as f64;
    let on = |yes: bool, x: f64| if yes { x } else { 0.0 };
    let lambda_invocations = on(b.http, 1.0)
        + on(b.worker, per(measured.worker_invocations as f64))
        + on(b.reconcile, per(1.0));
    let lambda_ms = on(b.http, handler_mean_ms)
        + on(b.worker, per(measured.worker_time.as_secs_f64() * 1000.0))
        + on(b.reconcile, per(measured.wall.as_secs_f64() * 1000.0));
    Row {
        scenario: spec.scenario,
        kind: spec.kind,
        ops: spec.ops,
        ops_per_s,
        limit_ops_per_s: spec.limit,
        ratio_to_limit: spec.limit.map(|limit| ops_per_s / limit),
        dynamodb_requests_per_op: per(spec.dynamodb.requests as f64),
        write_units_per_op: per(spec.dynamodb.write_units),
        read_units_per_op: per(spec.dynamodb.read_units),
        sqs_requests_per_op: per(spec.sqs.requests as f64),
        cpu_us_per_op: measured.cpu.as_secs_f64() * 1e6 / spec.cpu_ops.max(1) as f64,
        process_cpu_us_per_op: measured.process_cpu.as_secs_f64() * 1e6
            / spec.cpu_ops.max(1) as f64,
        handler_p50_ms: percentile(latencies, 0.50),
        handler_p99_ms: percentile(latencies, 0.99),
        api_requests_per_op: on(b.http, 1.0),
        lambda_invocations_per_op: lambda_invocations,
        emulator_lambda_ms_per_op: lambda_ms,
        sequential_waits_per_op: {
            let dynamodb = per(spec.dynamodb.requests as f64);
            let handler = on(b.http, b.handler_dynamodb_requests + on(!b.reads(), 1.0));
            handler + (dynamodb - b.handler_dynamodb_requests).max(0.0) / b.in_flight
        },
        sqs_fifo: b.fifo,
    }
}

fn is_sqs(call: &str) -> bool {
    call.starts_with("sqs:")
}

fn is_dynamodb(call: &str) -> bool {
    call.starts_with("dynamodb:")
}

async fn wait_until(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(900);
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the queue holds no message, visible or in flight.
async fn drained(queue: &OperationQueue) {
    wait_until("the queue to drain", async || {
        queue.depth().await.unwrap() == 0
    })
    .await;
}

/// Scenario 1, a viral post: distinct users like one post through handler → queue →
/// worker, and the worker gets every batch twice.
pub async fn hot_post(
    aws: &SdkConfig,
    scale: f64,
    limit_requests: usize,
) -> (Row, HotPost, Limits) {
    let h = Harness::new(aws).await;
    let likes = (5000.0 * scale).round() as u64;
    let pumps = h.start_pumps(&h.likes_mapping, POLLERS, Fault::DeliverTwice);
    let meter = Meter::start(&h);
    let mut latencies: Vec<Duration> = futures::stream::iter(0..likes)
        .map(|i| {
            let user = format!("user-{i}");
            let (like, pumps) = (&h.like, &pumps);
            async move {
                pumps.keep_up_with(i).await;
                like_write(like, true, "viral", &user).await
            }
        })
        .buffer_unordered(CLIENTS)
        .collect()
        .await;
    let viral = PostId::parse("viral").unwrap();
    wait_until("the hot post to count every like", async || {
        h.checks.like_count(&viral).await.unwrap() >= likes
            && h.likes_queue.depth().await.unwrap() == 0
    })
    .await;
    let measured = meter.finish(&h);
    let failed = pumps.stop().await;
    let limits = crate::limits::measure(aws, &h, "hot post", limit_requests, false).await;
    let counter_writes = measured.sum(|c| c.ends_with("add_to_like_count")).requests;
    let invocations = h.likes_mapping.invocations();
    let register_writes = measured.sum(|c| c.ends_with("apply_like")).requests as f64;
    let mut per_key = Vec::new();
    for partition in 0..shared::store::keys::LIKE_PARTITIONS {
        let registers = h
            .checks
            .count_likes(&viral, &std::collections::BTreeSet::from([partition]))
            .await
            .unwrap()
            .count;
        per_key.push(registers as f64 * register_writes / likes.max(1) as f64);
    }
    let wall = measured.wall.as_secs_f64();
    let busiest = per_key.iter().copied().fold(0.0, f64::max);
    let mean = register_writes / per_key.len() as f64;
    let result = HotPost {
        likes,
        final_count: h.checks.like_count(&viral).await.unwrap(),
        worker_invocations: invocations,
        counter_writes,
        counter_writes_per_invocation: counter_writes as f64 / invocations.max(1) as f64,
        failed_messages: failed,
        throttled: 0,
        register_keys_used: per_key.iter().filter(|w| **w > 0.0).count(),
        busiest_key_writes_per_s: busiest / wall,
        mean_key_writes_per_s: mean / wall,
        busiest_to_mean: busiest / mean,
    };
    let row = row(
        &measured,
        &mut latencies,
        Spec {
            scenario: "hot post",
            kind: "like (each delivered twice)",
            ops: likes,
            dynamodb: measured.sum(is_dynamodb),
            sqs: measured.sum(is_sqs),
            cpu_ops: likes,
            // Each delivery of a like needs its own conditional write.
            limit: Some(limits.serving(1.0, 2.0, 0.0)),
            billing: Billing::LIKES,
        },
    );
    (row, result, limits)
}

/// Scenario 6, toggling: users like and unlike one post over and over (11
/// times each, one after another, so each ends liking it), all users at once.
/// The worker writes only the latest operation per (user, post) in a batch.
pub async fn toggling(aws: &SdkConfig, scale: f64) -> Row {
    const TOGGLES: u64 = 11;
    let h = Harness::new(aws).await;
    let users = ((200.0 * scale).round() as u64).max(4);
    let pumps = h.start_pumps(&h.likes_mapping, POLLERS, Fault::None);
    let meter = Meter::start(&h);
    let latencies: Vec<Vec<Duration>> = futures::stream::iter(0..users)
        .map(|i| {
            let user = format!("toggler-{i}");
            let (like, pumps) = (&h.like, &pumps);
            async move {
                let mut latencies = Vec::new();
                for toggle in 0..TOGGLES {
                    pumps.keep_up_with(i * TOGGLES + toggle).await;
                    latencies.push(like_write(like, toggle % 2 == 0, "toggled", &user).await);
                }
                latencies
            }
        })
        .buffer_unordered(CLIENTS)
        .collect()
        .await;
    let toggled = PostId::parse("toggled").unwrap();
    drained(&h.likes_queue).await;
    let measured = meter.finish(&h);
    pumps.stop().await;
    assert_eq!(
        h.checks.like_count(&toggled).await.unwrap(),
        users,
        "every user's last word was like"
    );
    let ops = users * TOGGLES;
    let register_writes = measured.sum(|c| c.ends_with("apply_like")).requests;
    eprintln!(
        "bench: toggling: {register_writes} register writes for {ops} toggles ({:.2} per toggle)",
        register_writes as f64 / ops as f64
    );
    let mut latencies: Vec<Duration> = latencies.into_iter().flatten().collect();
    row(
        &measured,
        &mut latencies,
        Spec {
            scenario: "toggling",
            kind: "like/unlike, 11 per user",
            ops,
            dynamodb: measured.sum(is_dynamodb),
            sqs: measured.sum(is_sqs),
            cpu_ops: ops,
            limit: None,
            billing: Billing::LIKES,
        },
    )
}

/// Zipf-distributed picks from 0..n (s = 1): a few posts take most of the traffic.
struct Zipf {
    cumulative: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, s: f64) -> Self {
        let mut total = 0.0;
        let cumulative = (1..=n)
            .map(|k| {
                total += 1.0 / (k as f64).powf(s);
                total
            })
            .collect::<Vec<_>>();
        Self {
            cumulative: cumulative.iter().map(|c| c / total).collect(),
        }
    }

    fn sample(&self, rng: &mut impl rand::Rng) -> usize {
        let x: f64 = rng.random();
        self.cumulative.partition_point(|c| *c < x)
    }
}

enum Task {
    Write {
        user: usize,
        post: usize,
        like: bool,
    },
    DidILike {
        user: usize,
        posts: Vec<usize>,
    },
    Counts {
        posts: Vec<usize>,
    },
}

/// Scenario 2, a feed: likes and unlikes over 1,000 posts (Zipf) and 2,000 users, each
/// delivered once, with "did I like these 20" and "counts for these 20" reads
/// interleaved.
pub async fn mixed(aws: &SdkConfig, scale: f64, limit_requests: usize) -> (Vec<Row>, Limits, f64) {
    let h = Harness::new(aws).await;
    let writes = (10_000.0 * scale).round() as usize;
    let zipf = Zipf::new(1000, 1.0);
    let mut rng = rand::rng();
    let mut tasks = Vec::new();
    for i in 0..writes {
        let user = rng.random_range(0..2000);
        tasks.push(Task::Write {
            user,
            post: zipf.sample(&mut rng),
            like: rng.random_bool(0.75),
        });
        if i % 10 == 9 {
            let feed = |rng: &mut rand::rngs::ThreadRng| {
                (0..20).map(|_| zipf.sample(rng)).collect::<Vec<_>>()
            };
            tasks.push(Task::DidILike {
                user,
                posts: feed(&mut rng),
            });
            tasks.push(Task::Counts {
                posts: feed(&mut rng),
            });
        }
    }
    let reads = (tasks.len() - writes) as u64 / 2;
    let total = tasks.len() as u64;
    let pumps = h.start_pumps(&h.likes_mapping, POLLERS, Fault::None);
    let meter = Meter::start(&h);
    let results: Vec<(u8, Duration)> = futures::stream::iter(tasks.into_iter().enumerate())
        .map(|(i, task)| {
            let (like, pumps) = (&h.like, &pumps);
            async move {
                // Writes sent so far, roughly: reads are interleaved evenly.
                pumps.keep_up_with(i as u64 * writes as u64 / total).await;
                let ids = |posts: &[usize]| {
                    posts
                        .iter()
                        .map(|p| format!("p{p}"))
                        .collect::<Vec<_>>()
                        .join(",")
                };
                let (kind, call_user, method, path, query) = match task {
                    Task::Write { user, post, like } => (
                        0,
                        user,
                        if like { "PUT" } else { "DELETE" },
                        format!("/v1/posts/p{post}/like"),
                        String::new(),
                    ),
                    Task::DidILike { user, posts } => (
                        1,
                        user,
                        "GET",
                        "/v1/me/likes".to_owned(),
                        format!("post_ids={}", ids(&posts)),
                    ),
                    Task::Counts { posts } => (
                        2,
                        0,
                        "GET",
                        "/v1/likes/counts".to_owned(),
                        format!("post_ids={}", ids(&posts)),
                    ),
                };
                let user = format!("user-{call_user}");
                let call = Call {
                    method,
                    path: &path,
                    query: &query,
                    user: &user,
                    scope: "",
                    key: None,
                    body: None,
                };
                let (status, latency) = http(like, call).await;
                assert!(status == 200 || status == 202, "{method} {path}: {status}");
                (kind, latency)
            }
        })
        .buffer_unordered(CLIENTS)
        .collect()
        .await;
    drained(&h.likes_queue).await;
    let measured = meter.finish(&h);
    pumps.stop().await;
    let (backlogged, batch) = backlogged_feed(&h, &zipf, writes).await;
    let limits = crate::limits::measure(aws, &h, "mixed feed", limit_requests, false).await;
    let latencies = |kind: u8| {
        results
            .iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, l)| *l)
            .collect::<Vec<_>>()
    };
    let all_ops = writes as u64 + 2 * reads;
    let write_calls = |c: &str| c.contains("apply_like") || c.contains("add_to_like_count");
    let rows = vec![
        row(
            &measured,
            &mut latencies(0),
            Spec {
                scenario: "mixed feed",
                kind: "like/unlike",
                ops: writes as u64,
                dynamodb: measured.sum(write_calls),
                sqs: measured.sum(is_sqs),
                cpu_ops: all_ops,
                // Each write needs a send and a conditional write; the reads
                // interleaved with it, one BatchGetItem each.
                limit: Some(limits.serving(1.0, 1.0, 2.0 * reads as f64 / writes as f64)),
                billing: Billing::LIKES,
            },
        ),
        row(
            &measured,
            &mut latencies(1),
            Spec {
                scenario: "mixed feed",
                kind: "did I like these 20",
                ops: reads,
                dynamodb: measured.sum(|c| c.ends_with("liked_posts")),
                sqs: Counts::default(),
                cpu_ops: all_ops,
                limit: None,
                billing: Billing::READS,
            },
        ),
        row(
            &measured,
            &mut latencies(2),
            Spec {
                scenario: "mixed feed",
                kind: "counts for these 20",
                ops: reads,
                dynamodb: measured.sum(|c| c.ends_with("like_counts")),
                sqs: Counts::default(),
                cpu_ops: all_ops,
                limit: None,
                billing: Billing::READS,
            },
        ),
        row(
            &backlogged.measured,
            &mut backlogged.latencies.clone(),
            Spec {
                scenario: "mixed feed",
                kind: "like/unlike, backlogged",
                ops: writes as u64,
                dynamodb: backlogged.measured.sum(write_calls),
                sqs: backlogged.measured.sum(is_sqs),
                cpu_ops: writes as u64,
                // Sent, then drained: its pace says nothing about the limit.
                limit: None,
                billing: Billing::LIKES,
            },
        ),
    ];
    (rows, limits, batch)
}

struct Phase {
    measured: Measured,
    latencies: Vec<Duration>,
}

/// The same feed arriving faster than the worker drains it (a burst, or any
/// load above what the pollers take at once): messages wait in the queue, and
/// each worker invocation gets a full batch. Played in rounds of one batch
/// size, sent and then drained, because moto's receive slows with the length
/// of the queue (SQS's does not). Answers the phase and the mean messages per
/// worker invocation.
async fn backlogged_feed(h: &Harness, zipf: &Zipf, writes: usize) -> (Phase, f64) {
    let mut rng = rand::rng();
    let burst: Vec<(usize, usize, bool)> = (0..writes)
        .map(|_| {
            let user = rng.random_range(0..2000);
            (user, zipf.sample(&mut rng), rng.random_bool(0.75))
        })
        .collect();
    let invocations = h.likes_mapping.invocations();
    let meter = Meter::start(h);
    let mut latencies = Vec::new();
    for round in burst.chunks(mapping::BATCH_SIZE) {
        let sent: Vec<Duration> = futures::stream::iter(round)
            .map(|&(user, post, like)| async move {
                like_write(&h.like, like, &format!("p{post}"), &format!("user-{user}")).await
            })
            .buffer_unordered(CLIENTS)
            .collect()
            .await;
        latencies.extend(sent);
        let mut drained = 0;
        while drained < round.len() {
            let poll = h
                .likes_mapping
                .poll_once(&h.worker)
                .await
                .expect("the worker drains the backlog");
            drained += poll.received - poll.failed;
        }
    }
    let measured = meter.finish(h);
    let batches = h.likes_mapping.invocations() - invocations;
    let batch = writes as f64 / batches.max(1) as f64;
    (
        Phase {
            measured,
            latencies,
        },
        batch,
    )
}

/// Scenario 3, points: grants, then spends, then transfers over 500 accounts, a fifth of
/// them on ten hot accounts.
pub async fn points(aws: &SdkConfig, scale: f64, limit_requests: usize) -> (Vec<Row>, Vec<Limits>) {
    let h = Harness::new(aws).await;
    let accounts = 500;
    let account = |rng: &mut rand::rngs::ThreadRng| {
        if rng.random_bool(0.2) {
            rng.random_range(0..10)
        } else {
            rng.random_range(0..accounts)
        }
    };
    let mut rows = Vec::new();
    let mut all_limits = Vec::new();
    for (kind, count) in [("grant", 1000.0), ("spend", 2000.0), ("transfer", 2000.0)] {
        let count = (count * scale).round() as usize;
        let mut rng = rand::rng();
        let calls: Vec<PointsWrite> = (0..count)
            .map(|i| {
                let key = format!("{kind}-{i}");
                match kind {
                    "grant" => (
                        key,
                        "/v1/points/grants".to_owned(),
                        "admin".to_owned(),
                        format!(
                            r#"{{"user_id":"a{}","amount":1000,"point_type":"bonus"}}"#,
                            i % accounts
                        ),
                    ),
                    "spend" => (
                        key,
                        "/v1/me/points/spend".to_owned(),
                        format!("a{}", account(&mut rng)),
                        format!(r#"{{"amount":{}}}"#, rng.random_range(1..=50)),
                    ),
                    _ => {
                        let from = account(&mut rng);
                        let to = (from + rng.random_range(1..accounts)) % accounts;
                        (
                            key,
                            "/v1/me/points/transfers".to_owned(),
                            format!("a{from}"),
                            format!(
                                r#"{{"to_user_id":"a{to}","amount":{}}}"#,
                                rng.random_range(1..=50)
                            ),
                        )
                    }
                }
            })
            .collect();
        let (measured, mut latencies) = points_writes(&h, calls).await;
        let limits = crate::limits::measure(aws, &h, kind, limit_requests, true).await;
        rows.push(row(
            &measured,
            &mut latencies,
            Spec {
                scenario: "points",
                kind,
                ops: count as u64,
                dynamodb: measured.sum(is_dynamodb),
                sqs: measured.sum(is_sqs),
                cpu_ops: count as u64,
                limit: Some(limits.points),
                billing: Billing::POINTS,
            },
        ));
        all_limits.push(limits);
    }
    (rows, all_limits)
}

/// A points write: (Idempotency-Key, path, caller, body).
type PointsWrite = (String, String, String, String);

/// Sends points writes through the points handler, [`CLIENTS`] at once, with
/// the worker's pollers keeping up, and waits until every one is applied.
async fn points_writes(h: &Harness, calls: Vec<PointsWrite>) -> (Measured, Vec<Duration>) {
    let pumps = h.start_pumps(&h.points_mapping, POLLERS, Fault::None);
    let meter = Meter::start(h);
    let latencies: Vec<Duration> = futures::stream::iter(calls.into_iter().enumerate())
        .map(|(i, (key, path, user, body))| {
            let (points, pumps) = (&h.points, &pumps);
            async move {
                pumps.keep_up_with(i as u64).await;
                let call = Call {
                    method: "POST",
                    path: &path,
                    query: "",
                    user: &user,
                    scope: "points:admin",
                    key: Some(&key),
                    body: Some(body),
                };
                let (status, latency) = http(points, call).await;
                assert_eq!(status, 202, "{path}");
                latency
            }
        })
        .buffer_unordered(CLIENTS)
        .collect()
        .await;
    drained(&h.points_queue).await;
    let measured = meter.finish(h);
    pumps.stop().await;
    (measured, latencies)
}

/// Scenario 5, checkout: every account holds 100 points for an order; half the
/// holds are captured in part (60), a quarter released by their holder, a
/// quarter left to expire (reconcile's expiry step releases them); half the
/// captures are refunded in part (30). One row per step.
pub async fn checkout(aws: &SdkConfig, scale: f64) -> Vec<Row> {
    let h = Harness::new(aws).await;
    let accounts = ((400.0 * scale).round() as usize).max(8) / 4 * 4;
    let grants = (0..accounts)
        .map(|i| {
            (
                format!("g{i}"),
                "/v1/points/grants".to_owned(),
                "admin".to_owned(),
                format!(r#"{{"user_id":"c{i}","amount":500,"point_type":"bonus"}}"#),
            )
        })
        .collect();
    points_writes(&h, grants).await;
    let step = |kind: &'static str, calls: Vec<PointsWrite>| {
        let h = &h;
        async move {
            let ops = calls.len() as u64;
            let (measured, mut latencies) = points_writes(h, calls).await;
            row(
                &measured,
                &mut latencies,
                Spec {
                    scenario: "checkout",
                    kind,
                    ops,
                    dynamodb: measured.sum(is_dynamodb),
                    sqs: measured.sum(is_sqs),
                    cpu_ops: ops,
                    limit: None,
                    billing: Billing::POINTS,
                },
            )
        }
    };
    let each = |filter: fn(usize) -> bool, call: fn(usize) -> PointsWrite| {
        (0..accounts)
            .filter(|i| filter(*i))
            .map(call)
            .collect::<Vec<_>>()
    };
    let mut rows = vec![
        step(
            "hold",
            each(
                |_| true,
                |i| {
                    (
                        format!("h{i}"),
                        "/v1/me/points/holds".to_owned(),
                        format!("c{i}"),
                        format!(
                            r#"{{"amount":100,"expires_in_seconds":60,"reference":"order-{i}"}}"#
                        ),
                    )
                },
            ),
        )
        .await,
    ];
    rows.push(
        step(
            "capture part",
            each(
                |i| i % 4 < 2,
                |i| {
                    (
                        format!("cap{i}"),
                        "/v1/points/holds/capture".to_owned(),
                        "shop".to_owned(),
                        format!(r#"{{"user_id":"c{i}","hold_id":"h{i}","amount":60}}"#),
                    )
                },
            ),
        )
        .await,
    );
    rows.push(
        step(
            "release",
            each(
                |i| i % 4 == 2,
                |i| {
                    (
                        format!("rel{i}"),
                        format!("/v1/me/points/holds/h{i}/release"),
                        format!("c{i}"),
                        "{}".to_owned(),
                    )
                },
            ),
        )
        .await,
    );
    rows.push(
        step(
            "refund part",
            each(
                |i| i % 4 == 0,
                |i| {
                    (
                        format!("ref{i}"),
                        "/v1/points/refunds".to_owned(),
                        "shop".to_owned(),
                        format!(r#"{{"user_id":"c{i}","operation_id":"h{i}","amount":30}}"#),
                    )
                },
            ),
        )
        .await,
    );
    // The quarter nobody closed: released by the expiry step once past their 60 s.
    let later = time::OffsetDateTime::now_utc() + time::Duration::minutes(2);
    let reconciler =
        reconcile::Reconciler::new(h.worker.likes.store.clone(), h.points_queue.clone());
    let meter = Meter::start(&h);
    let report = crate::harness::functions()
        .spawn(async move {
            let mut report = reconcile::Report::default();
            let until = std::time::Instant::now() + Duration::from_secs(3600);
            reconciler
                .expire_points(later, until, &mut report)
                .await
                .expect("the expiry step runs");
            report
        })
        .await
        .expect("the expiry step does not panic");
    let measured = meter.finish(&h);
    let expired = accounts as u64 / 4;
    assert_eq!(report.holds_released, expired, "{report:?}");
    rows.push(row(
        &measured,
        &mut [],
        Spec {
            scenario: "checkout",
            kind: "release at expiry",
            ops: expired,
            dynamodb: measured.sum(is_dynamodb),
            sqs: measured.sum(is_sqs),
            cpu_ops: expired,
            limit: None,
            billing: Billing::RECONCILE,
        },
    ));
    rows
}

/// Scenario 4, a midnight of expiries: accounts whose `sign_in` points all fall
/// due at one instant, expired by reconcile's expiry step in one go.
pub async fn expiry(aws: &SdkConfig, scale: f64) -> Row {
    let h = Harness::new(aws).await;
    let accounts = ((2000.0 * scale).round() as usize).max(50);
    let now = time::OffsetDateTime::now_utc();
    // Granted 32 days ago (the worker applying them then): due by now.
    let then = now - time::Duration::days(32);
    let ids: Vec<usize> = (0..accounts).collect();
    for chunk in ids.chunks(100) {
        let records = chunk
            .iter()
            .map(|i| {
                let body = serde_json::json!({
                    "version": 1, "operation_id": format!("g{i}"), "caller": "admin",
                    "accepted_at": shared::domain::timestamp::format(then),
                    "operation": {"type": "grant", "user_id": format!("e{i}"), "amount": 10, "point_type": "sign_in"},
                });
                let mut message = aws_lambda_events::sqs::SqsMessage::default();
                message.message_id = Some(format!("m{i}"));
                message.body = Some(body.to_string());
                message
            })
            .collect();
        let report = h.worker.apply_batch_at(records, then).await;
        assert_eq!(report.applied, chunk.len(), "the grants apply");
    }
    let reconciler =
        reconcile::Reconciler::new(h.worker.likes.store.clone(), h.points_queue.clone());
    let meter = Meter::start(&h);
    let report = crate::harness::functions()
        .spawn(async move {
            let mut report = reconcile::Report::default();
            let until = std::time::Instant::now() + Duration::from_secs(3600);
            reconciler
                .expire_points(now, until, &mut report)
                .await
                .expect("the expiry step runs");
            report
        })
        .await
        .expect("the expiry step does not panic");
    let measured = meter.finish(&h);
    assert_eq!(report.accounts_expired, accounts as u64, "{report:?}");
    row(
        &measured,
        &mut [],
        Spec {
            scenario: "expiry",
            kind: "expire one account",
            ops: accounts as u64,
            dynamodb: measured.sum(is_dynamodb),
            sqs: measured.sum(is_sqs),
            cpu_ops: accounts as u64,
            limit: None,
            billing: Billing::RECONCILE,
        },
    )
}

/// A row of `calls` reads.
fn read_row(
    kind: &'static str,
    calls: usize,
    measured: &Measured,
    latencies: &mut [Duration],
) -> Row {
    row(
        measured,
        latencies,
        Spec {
            scenario: "leaderboard",
            kind,
            ops: calls as u64,
            dynamodb: measured.sum(is_dynamodb),
            sqs: measured.sum(is_sqs),
            cpu_ops: calls as u64,
            limit: None,
            billing: Billing::READS,
        },
    )
}

/// Scenario 10, leaderboards: accounts that earned today, put on the boards
/// by reconcile's ledger step; the same accounts changed again without
/// earning; then reads of the top 100 and of a rank deep in the board.
pub async fn leaderboard(aws: &SdkConfig, scale: f64) -> Vec<Row> {
    use shared::domain::points::insight::Period;
    let h = Harness::new(aws).await;
    let accounts = ((2000.0 * scale).round() as usize).max(50);
    let now = time::OffsetDateTime::now_utc();
    let at = (now - time::Duration::minutes(1)).max(Period::Day.start(now).unwrap());
    let apply = async |request: &dyn Fn(usize) -> serde_json::Value| {
        let ids: Vec<usize> = (0..accounts).collect();
        for chunk in ids.chunks(100) {
            let records = chunk
                .iter()
                .map(|i| {
                    let mut message = aws_lambda_events::sqs::SqsMessage::default();
                    message.message_id = Some(format!("m{i}"));
                    message.body = Some(request(*i).to_string());
                    message
                })
                .collect();
            let report = h.worker.apply_batch_at(records, at).await;
            assert_eq!(report.applied, chunk.len(), "the operations apply");
        }
    };
    let accepted_at = shared::domain::timestamp::format(at);
    // Distinct amounts, so every rank is distinct.
    apply(&|i| {
        serde_json::json!({
            "version": 1, "operation_id": format!("g{i}"), "caller": "admin", "accepted_at": accepted_at,
            "operation": {"type": "grant", "user_id": format!("r{i}"), "amount": i + 1, "point_type": "bonus"},
        })
    })
    .await;
    let reconciler =
        reconcile::Reconciler::new(h.worker.likes.store.clone(), h.points_queue.clone());
    let build = async |kind: &'static str, lines: u64| {
        let meter = Meter::start(&h);
        let reconciler = reconciler.clone();
        let report = crate::harness::functions()
            .spawn(async move {
                let mut report = reconcile::Report::default();
                let until = std::time::Instant::now() + Duration::from_secs(3600);
                reconciler
                    .audit_ledgers(&[], now, until, &mut report)
                    .await
                    .expect("the ledger step runs");
                report
            })
            .await
            .expect("the ledger step does not panic");
        let measured = meter.finish(&h);
        assert_eq!(report.accounts_audited, accounts as u64, "{report:?}");
        assert_eq!(report.leaderboard_lines_written, lines, "{report:?}");
        row(
            &measured,
            &mut [],
            Spec {
                scenario: "leaderboard",
                kind,
                ops: accounts as u64,
                dynamodb: measured.sum(is_dynamodb),
                sqs: measured.sum(is_sqs),
                cpu_ops: accounts as u64,
                limit: None,
                billing: Billing::RECONCILE,
            },
        )
    };
    let mut rows = vec![build("audit + lines, earned", 4 * accounts as u64).await];
    // Changed again without earning: the audit reads the lines and writes none.
    apply(&|i| {
        serde_json::json!({
            "version": 1, "operation_id": format!("s{i}"), "caller": format!("r{i}"), "accepted_at": accepted_at,
            "operation": {"type": "spend", "amount": 1},
        })
    })
    .await;
    rows.push(build("audit + lines, not earned", 0).await);
    h.checks
        .save_reconcile_state(&shared::store::reconcile::ReconcileState {
            leaderboard_as_of: Some(shared::domain::timestamp::format(now)),
            ..Default::default()
        })
        .await
        .unwrap();
    let store = &h.metered;
    let calls = 20;
    let meter = Meter::start(&h);
    let mut latencies = Vec::new();
    for _ in 0..calls {
        let started = Instant::now();
        let board = shared::points_insight::leaderboard(store, Period::All, 100)
            .await
            .unwrap();
        latencies.push(started.elapsed());
        assert_eq!(board.items.len(), 100.min(accounts));
        assert_eq!(board.items[0].earned, accounts as u64);
    }
    rows.push(read_row(
        "top 100",
        calls,
        &meter.finish(&h),
        &mut latencies,
    ));
    // The least earning account: every other line is above it.
    let last = shared::domain::ids::UserId::parse("r0").unwrap();
    let meter = Meter::start(&h);
    let mut latencies = Vec::new();
    for _ in 0..calls {
        let started = Instant::now();
        let rank = shared::points_insight::rank(store, &last, Period::All)
            .await
            .unwrap();
        latencies.push(started.elapsed());
        let exact =
            (accounts as u64 <= shared::points_insight::MAX_EXACT_RANK).then_some(accounts as u64);
        assert_eq!(rank.rank, exact, "{rank:?}");
    }
    rows.push(read_row(
        "rank, last of the board",
        calls,
        &meter.finish(&h),
        &mut latencies,
    ));
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_picks_the_first_ranks_most_often() {
        let zipf = Zipf::new(1000, 1.0);
        let mut rng = rand::rng();
        let picks: Vec<usize> = (0..20_000).map(|_| zipf.sample(&mut rng)).collect();
        let top = picks.iter().filter(|p| **p == 0).count() as f64 / picks.len() as f64;
        // P(rank 1) = 1 / H(1000) ≈ 0.134.
        assert!((0.11..0.16).contains(&top), "{top}");
        assert!(picks.iter().all(|p| *p < 1000));
    }

    #[test]
    fn percentiles_come_from_the_sorted_latencies() {
        let mut latencies: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        assert_eq!(percentile(&mut latencies, 0.5), 51.0);
        assert_eq!(percentile(&mut latencies, 0.99), 99.0);
    }
}
