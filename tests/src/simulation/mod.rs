//! The fault simulator: Tally's real code (the like and points routers as the dev
//! gateway mounts them, the worker through its SQS event handler, reconcile)
//! against the emulator, with time, delivery and faults decided by one seed.
//!
//! - **Time** is a clock the functions read ([`shared::clock::Clock`]), stepped by
//!   the seed; a handler may read it up to [`MAX_SKEW_MICROS`] off (clock skew
//!   between instances), and now and then days pass (with the queues drained
//!   first, as they would be in seconds), so points cross their expiry.
//! - **Delivery** is the simulator's: every message the functions put on SQS is
//!   taken off the queue at once and held in a pool, and the seed decides which
//!   are delivered next, in which batch, how often: duplicates, reordering
//!   (likes), batches split differently on redelivery, a redelivery running
//!   beside the first delivery, lost deletes. The points queue keeps SQS FIFO's
//!   promise: one group's messages in order.
//! - **Faults** at the SDK layer ([`FaultInjector`]): lost answers, refusals
//!   (throttling, server errors, transaction conflicts), short Query pages, and
//!   crashes (every call after the k-th fails unsent, and the invocation's
//!   answer is thrown away: nothing it did is deleted). Data is edited behind
//!   the service's back (a counter during the run, a balance at the end).
//! - **The auditor** ([`model::Model`]) checks every answer as it comes and the
//!   whole state once the queues have drained and reconcile has run.
//!
//! A seed replays the same schedule of operations, deliveries, faults and clock
//! steps; the interleaving of one invocation's own concurrent requests is
//! the runtime's, as it is on Lambda.

pub mod model;

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration as StdDuration;

use aws_lambda_events::sqs::{SqsEvent, SqsMessage};
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt as _;
use lambda_runtime::{Context, LambdaEvent};
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom as _, SliceRandom as _};
use rand::{Rng as _, SeedableRng as _};
use serde_json::{Value, json};
use shared::clock::Clock;
use shared::domain::ids::{OperationId, UserId};
use shared::queue::OperationQueue;
use shared::store::Store;
use time::OffsetDateTime;
use tower::ServiceExt as _;

use aws_sdk_dynamodb::types::AttributeValue::N;

use crate::TestApp;
use crate::faults::{Fault, FaultInjector, Refusal};
use model::{Direct, Model, Write, WriteKind};

/// Every kind of fault the simulator injects, as [`Outcome::faults`] names them.
pub const FAULT_KINDS: &[&str] = &[
    "answer_lost",
    "transaction_conflict",
    "throttled",
    "server_error",
    "short_page",
    "unprocessed_keys",
    "crash",
    "duplicate",
    "reordered",
    "concurrent_redelivery",
    "lost_delete",
    "clock_skew",
    "clock_jump",
    "tampered_counter",
    "tampered_balance",
];

const SQS_LOST: (&str, Fault) = ("SendMessage", Fault::LoseAnswer);
const SQS_FAILED: (&str, Fault) = ("SendMessage", Fault::Refuse(Refusal::ServerError));
const PUT_LOST: (&str, Fault) = ("PutItem", Fault::LoseAnswer);
const TRANSACT_LOST: (&str, Fault) = ("TransactWriteItems", Fault::LoseAnswer);
const UPDATE_LOST: (&str, Fault) = ("UpdateItem", Fault::LoseAnswer);
const CONFLICT: (&str, Fault) = (
    "TransactWriteItems",
    Fault::Refuse(Refusal::TransactionConflict),
);
const THROTTLED: (&str, Fault) = ("*", Fault::Refuse(Refusal::Throttled));
const SERVER_ERROR: (&str, Fault) = ("*", Fault::Refuse(Refusal::ServerError));
const SHORT_PAGE: (&str, Fault) = ("Query", Fault::ShortPage(1));
const UNPROCESSED: (&str, Fault) = ("BatchGetItem", Fault::Unprocessed);

/// The kind an injected SDK fault is reported as.
fn kind_of(fault: Fault) -> &'static str {
    match fault {
        Fault::LoseAnswer => "answer_lost",
        Fault::ShortPage(_) => "short_page",
        Fault::Unprocessed => "unprocessed_keys",
        Fault::Refuse(Refusal::TransactionConflict) => "transaction_conflict",
        Fault::Refuse(Refusal::Throttled) => "throttled",
        Fault::Refuse(Refusal::ServerError) => "server_error",
    }
}

/// How far a handler's clock may be off the simulation's (clock skew between
/// instances): 2 s, well inside the 5 minutes the worker allows.
pub const MAX_SKEW_MICROS: i64 = 2_000_000;
/// Receives after which the simulated SQS moves a message to its dead-letter
/// queue (as the template's `maxReceiveCount`).
const MAX_RECEIVES: u32 = 5;
const USERS: &[&str] = &[
    "u0",
    "u1",
    "u2",
    "u3",
    "u4",
    "u5",
    "u6",
    "u7",
    "u8",
    "u9",
    "ana@example.com",
    "auth0|5f7c8e",
    "google-oauth2|1087",
];
const POSTS: usize = 12;
/// Users who like: few, so one user's operations on one post often wait in the
/// queue together and get delivered out of order.
const LIKERS: usize = 3;

/// The (user, post) a like message's register belongs to.
fn register_of(message: &SqsMessage) -> (String, String) {
    let envelope: Value =
        serde_json::from_str(message.body.as_deref().unwrap_or_default()).unwrap_or(Value::Null);
    (
        envelope["caller"].as_str().unwrap_or_default().to_owned(),
        envelope["operation"]["post_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

/// What one seed did.
#[derive(Debug, Default)]
pub struct Outcome {
    pub seed: u64,
    pub ops: usize,
    pub steps: u64,
    /// Faults injected, by kind.
    pub faults: BTreeMap<&'static str, u64>,
    /// Invariant checks made.
    pub checks: u64,
    /// Ledger entries the final audit read, by kind: what the workload exercised.
    pub entries: BTreeMap<&'static str, u64>,
    /// The first broken invariant, and the steps that led to it.
    pub failure: Option<String>,
    pub history: Vec<String>,
    /// Seconds spent in the steps, in settling (drain, retries, reconcile), and in the final audit.
    pub seconds: [f64; 3],
}

/// A broken invariant.
#[derive(Debug)]
pub struct Violation(pub String);

macro_rules! check {
    ($sim:expr, $cond:expr, $($arg:tt)*) => {{
        $sim.checks += 1;
        if !$cond {
            return Err(Violation(format!($($arg)*)));
        }
    }};
}

struct Pending {
    message: SqsMessage,
    receives: u32,
}

struct Sim {
    app: TestApp,
    faults: FaultInjector,
    /// The simulation's time, in microseconds since the epoch.
    micros: Arc<AtomicI64>,
    rng: StdRng,
    /// SQS seen from the simulator: uninstrumented clients, and their ARNs.
    likes_queue: OperationQueue,
    points_queue: OperationQueue,
    arns: [String; 2],
    /// Reads for the final audit, uninstrumented.
    store: Store,
    likes: Vec<Pending>,
    points: BTreeMap<String, VecDeque<Pending>>,
    dead: Vec<Pending>,
    model: Model,
    faults_by_kind: BTreeMap<&'static str, u64>,
    entries_by_kind: BTreeMap<&'static str, u64>,
    /// Whether the current step armed a fault (a 5xx without one is a violation).
    faulty_step: bool,
    checks: u64,
    history: Vec<String>,
    next_id: u64,
    /// The next capture or release closes the hold placed just before it.
    close_newest_hold: bool,
    /// The customer of that checkout, whom the next write acts for.
    checkout_user: Option<&'static str>,
    seconds: [f64; 3],
}

/// Runs one seed of `ops` operations; never panics on a broken invariant.
pub async fn run(seed: u64, ops: usize) -> Outcome {
    let mut sim = Sim::new(seed).await;
    let result = sim.run(ops).await;
    let mut outcome = Outcome {
        seed,
        ops,
        steps: sim.history.len() as u64,
        faults: sim.faults_by_kind.clone(),
        checks: sim.checks,
        entries: sim.entries_by_kind.clone(),
        failure: result.err().map(|v| v.0),
        history: Vec::new(),
        seconds: sim.seconds,
    };
    if outcome.failure.is_some() {
        outcome.history = std::mem::take(&mut sim.history);
    }
    outcome
}

impl Sim {
    async fn new(seed: u64) -> Self {
        let faults = FaultInjector::default();
        // A fixed start, so a seed replays the same accept times and expiries.
        let start = time::macros::datetime!(2026-06-01 09:00 UTC).unix_timestamp_nanos() / 1000;
        let micros = Arc::new(AtomicI64::new(start as i64));
        let read = micros.clone();
        let clock = Clock::from_fn(move || {
            OffsetDateTime::from_unix_timestamp_nanos(
                i128::from(read.load(Ordering::SeqCst)) * 1000,
            )
            .expect("the simulation's clock stays in range")
        });
        let app = TestApp::spawn_simulated(&faults, clock).await;
        let aws = crate::emulator().await;
        let arns = [
            app.stack.likes.queue.arn().await.expect("likes queue arn"),
            app.stack
                .points
                .queue
                .arn()
                .await
                .expect("points queue arn"),
        ];
        Self {
            arns,
            likes_queue: OperationQueue::from_config(&aws, app.stack.likes.queue.url()),
            points_queue: OperationQueue::from_config(&aws, app.stack.points.queue.url()),
            store: Store::from_config(&aws, app.stack.store.table_name()),
            app,
            faults,
            micros,
            rng: StdRng::seed_from_u64(seed),
            likes: Vec::new(),
            points: BTreeMap::new(),
            dead: Vec::new(),
            model: Model::default(),
            faults_by_kind: BTreeMap::new(),
            entries_by_kind: BTreeMap::new(),
            faulty_step: false,
            checks: 0,
            history: Vec::new(),
            next_id: 0,
            close_newest_hold: false,
            checkout_user: None,
            seconds: [0.0; 3],
        }
    }

    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp_nanos(
            i128::from(self.micros.load(Ordering::SeqCst)) * 1000,
        )
        .expect("in range")
    }

    fn advance(&self, micros: i64) {
        self.micros.fetch_add(micros, Ordering::SeqCst);
    }

    fn fault(&mut self, kind: &'static str) {
        *self.faults_by_kind.entry(kind).or_default() += 1;
        self.faulty_step = true;
    }

    fn log(&mut self, line: String) {
        self.history
            .push(format!("[{}] {line}", self.history.len()));
    }

    async fn run(&mut self, ops: usize) -> Result<(), Violation> {
        let started = std::time::Instant::now();
        for _ in 0..ops {
            self.step().await?;
        }
        self.seconds[0] = started.elapsed().as_secs_f64();
        self.settle().await?;
        self.seconds[1] = started.elapsed().as_secs_f64() - self.seconds[0];
        self.final_audit().await?;
        self.seconds[2] = started.elapsed().as_secs_f64() - self.seconds[0] - self.seconds[1];
        Ok(())
    }

    /// One step: maybe a fault armed, one action, the clock moved on.
    async fn step(&mut self) -> Result<(), Violation> {
        self.faulty_step = false;
        self.faults.clear();
        let injected_before = self.faults.injected().len();
        let fault_roll: f64 = self.rng.random();
        let choice: u32 = self.rng.random_range(0..100);
        // A fault for the calls this kind of step makes (counted only if hit).
        let often = matches!(choice, 26..31 | 59..67 | 69..93);
        if fault_roll < if often { 0.8 } else { 0.5 } {
            self.arm_fault(match choice {
                0..26 => &[SQS_LOST, SQS_FAILED, THROTTLED],
                26..31 => &[UNPROCESSED, UNPROCESSED, UNPROCESSED, THROTTLED],
                31..59 => &[SQS_LOST, SQS_FAILED, PUT_LOST, THROTTLED, SERVER_ERROR],
                59..67 => &[SHORT_PAGE, SHORT_PAGE, SHORT_PAGE, THROTTLED],
                69..80 => &[UPDATE_LOST, THROTTLED, SERVER_ERROR],
                80..93 => &[
                    TRANSACT_LOST,
                    CONFLICT,
                    CONFLICT,
                    CONFLICT,
                    CONFLICT,
                    THROTTLED,
                    SERVER_ERROR,
                ],
                93..96 => &[THROTTLED, SERVER_ERROR, UPDATE_LOST, SQS_FAILED],
                _ => &[],
            });
        }
        match choice {
            0..26 => self.like().await?,
            26..31 => self.read_likes().await?,
            31..37 => self.points_write(WriteKind::Grant).await?,
            37..41 => self.points_write(WriteKind::Spend).await?,
            41..44 => self.points_write(WriteKind::Transfer).await?,
            44..48 => self.points_write(WriteKind::Hold).await?,
            48..52 => {
                // Half the time a whole checkout: the customer earns points,
                // holds some, then the hold is captured or released.
                self.close_newest_hold = self.rng.random_bool(0.5);
                if self.close_newest_hold {
                    let customer = self.user();
                    self.checkout_user = Some(customer);
                    self.points_write(WriteKind::Grant).await?;
                    self.checkout_user = Some(customer);
                    self.points_write(WriteKind::Hold).await?;
                }
                let kind = if choice < 51 {
                    WriteKind::Capture
                } else {
                    WriteKind::Release
                };
                self.points_write(kind).await?;
            }
            52..54 => self.points_write(WriteKind::Refund).await?,
            54..55 => self.points_write(WriteKind::Adjust).await?,
            55..59 => self.reuse_key().await?,
            59..67 => self.read_points().await?,
            67..69 => self.direct_message().await?,
            69..80 => self.deliver_likes().await?,
            80..93 => self.deliver_points().await?,
            93..96 => self.reconcile().await?,
            _ => self.tamper_counters().await?,
        }
        for (_, fault) in self.faults.injected().split_off(injected_before) {
            *self.faults_by_kind.entry(kind_of(fault)).or_default() += 1;
        }
        self.faults.clear();
        self.faults.restart();
        if self.rng.random_bool(0.08) {
            // Days pass; the queues drained long before.
            self.flush().await?;
            let days = self.rng.random_range(1..=4);
            self.advance(days * 86_400_000_000);
            self.log(format!("clock: +{days} days"));
            *self.faults_by_kind.entry("clock_jump").or_default() += 1;
        } else {
            let step = self.rng.random_range(0..3_000_000);
            self.advance(step);
        }
        Ok(())
    }

    fn arm_fault(&mut self, choices: &[(&'static str, Fault)]) {
        let calls = self.rng.random_range(1..=4);
        let Some(&(operation, fault)) = choices.choose(&mut self.rng) else {
            return;
        };
        self.faults.arm(operation, fault, calls);
        self.faulty_step = true;
        self.log(format!("fault: {} on {operation} x{calls}", kind_of(fault)));
    }

    /// A request through the dev gateway's router, as a client sends it. Every
    /// error must be problem+json, and a 5xx only when a fault was injected.
    async fn http(
        &mut self,
        user: &str,
        method: Method,
        uri: &str,
        key: Option<&str>,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Value), Violation> {
        let mut request = Request::builder()
            .method(method.clone())
            .uri(uri)
            .header("x-dev-user", user)
            .header("content-type", "application/json");
        if uri.starts_with("/v1/points/") {
            request = request.header("x-dev-scopes", "points:admin");
        }
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        let body = body.map_or_else(Body::empty, |b| Body::from(b.to_string()));
        // Clock skew between handler instances.
        let skew = if self.rng.random_bool(0.2) {
            *self.faults_by_kind.entry("clock_skew").or_default() += 1;
            self.rng.random_range(-MAX_SKEW_MICROS..=MAX_SKEW_MICROS)
        } else {
            0
        };
        self.advance(skew);
        let response = self
            .app
            .gateway
            .clone()
            .oneshot(request.body(body).expect("a valid request"))
            .await
            .expect("the router never fails");
        self.advance(-skew);
        let status = response.status();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let json: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        self.log(format!("{user}: {method} {uri} -> {status} {json}"));
        if !status.is_success() {
            check!(
                self,
                content_type == "application/problem+json",
                "{method} {uri}: error {status} is not problem+json: {json}"
            );
        }
        check!(
            self,
            !status.is_server_error() || self.faulty_step,
            "{method} {uri}: {status} with no fault injected: {json}"
        );
        Ok((status, json))
    }

    fn user(&mut self) -> &'static str {
        match self.checkout_user.take() {
            Some(user) => user,
            None => USERS.choose(&mut self.rng).expect("users"),
        }
    }

    /// Zipf-like: a few hot posts take most likes.
    fn post(&mut self) -> String {
        let x: f64 = self.rng.random();
        format!("p{}", ((POSTS as f64).powf(x) as usize).saturating_sub(1))
    }

    async fn like(&mut self) -> Result<(), Violation> {
        let user = USERS[self.rng.random_range(0..LIKERS)];
        let post = self.post();
        let like = self.rng.random_bool(0.6);
        // Now and then the user changes their mind at once (a toggle): two
        // operations on one register, in flight together.
        let toggles = if self.rng.random_bool(0.3) { 2 } else { 1 };
        for turn in 0..toggles {
            let method = if like == (turn == 0) {
                Method::PUT
            } else {
                Method::DELETE
            };
            let (status, body) = self
                .http(user, method, &format!("/v1/posts/{post}/like"), None, None)
                .await?;
            if status == StatusCode::ACCEPTED {
                let id = body["operation_id"].as_str().unwrap_or_default().to_owned();
                self.model.likes_accepted.insert(id);
            }
            let pause = self.rng.random_range(0..1_000_000);
            self.advance(pause);
        }
        self.collect().await
    }

    async fn read_likes(&mut self) -> Result<(), Violation> {
        let posts: Vec<String> = (0..3).map(|_| self.post()).collect();
        let user = self.user();
        // One post's count (GetItem), then three at once (BatchGetItem).
        let (status, body) = self
            .http(
                user,
                Method::GET,
                &format!("/v1/posts/{}/likes", posts[0]),
                None,
                None,
            )
            .await?;
        let mut counts = vec![(posts[0].clone(), status, body["count"].clone())];
        let (status, body) = self
            .http(
                user,
                Method::GET,
                &format!("/v1/likes/counts?post_ids={}", posts.join(",")),
                None,
                None,
            )
            .await?;
        counts.extend(
            posts
                .iter()
                .map(|p| (p.clone(), status, body["counts"][p].clone())),
        );
        for (post, status, count) in counts {
            if status != StatusCode::OK {
                continue;
            }
            let count = count.as_u64().unwrap_or(u64::MAX);
            let bound = self.model.likers.get(&post).map_or(0, |l| l.len() as u64);
            // A counter edited by hand is wrong until reconcile repairs it.
            let tampered = self.model.tampered_posts.contains(&post);
            check!(
                self,
                tampered || count <= bound,
                "{post}: count {count} exceeds the {bound} users who ever liked it"
            );
        }
        Ok(())
    }

    /// A hold some user placed and was answered 202 for (holder, id, amount),
    /// or now and then one nobody placed.
    fn some_hold(&mut self) -> (&'static str, String, i64) {
        let mut holds = self.recent(&[WriteKind::Hold]);
        if std::mem::take(&mut self.close_newest_hold) {
            holds = holds.split_off(holds.len().saturating_sub(1));
        }
        match holds.choose(&mut self.rng) {
            Some((holder, id, amount)) if self.rng.random_bool(0.9) => {
                let holder = USERS
                    .iter()
                    .find(|u| **u == holder.as_str())
                    .copied()
                    .unwrap_or("alice");
                (holder, id.clone(), *amount)
            }
            _ => (self.user(), "no-such-hold".into(), 0),
        }
    }

    /// Accepted writes of these kinds, (caller, key, amount): mostly the three
    /// latest (a checkout captures the hold it just placed), now and then any.
    fn recent(&mut self, kinds: &[WriteKind]) -> Vec<(String, String, i64)> {
        let mut found: Vec<&Write> = self
            .model
            .writes
            .values()
            .filter(|w| kinds.contains(&w.kind) && w.accepted())
            .collect();
        found.sort_by_key(|w| w.sent_at_micros);
        if self.rng.random_bool(0.8) {
            found = found.split_off(found.len().saturating_sub(3));
        }
        found
            .into_iter()
            .map(|w| (w.caller.clone(), w.key.clone(), w.amount()))
            .collect()
    }

    fn fresh_key(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}{}", self.next_id)
    }

    async fn points_write(&mut self, kind: WriteKind) -> Result<(), Violation> {
        let (caller, uri, body): (&str, String, Value) = match kind {
            WriteKind::Grant => {
                let point_type = *["sign_in", "purchase", "bonus"]
                    .choose(&mut self.rng)
                    .expect("types");
                let to = self.user();
                let amount = self.rng.random_range(1..=200);
                (
                    "admin",
                    "/v1/points/grants".into(),
                    json!({"user_id": to, "amount": amount, "point_type": point_type}),
                )
            }
            WriteKind::Spend => {
                let amount = self.rng.random_range(1..=150);
                (
                    self.user(),
                    "/v1/me/points/spend".into(),
                    json!({"amount": amount}),
                )
            }
            WriteKind::Hold => {
                let amount = self.rng.random_range(1..=15);
                // Some short enough to expire while the run goes on.
                let seconds = *[60, 86_400, 604_800, 604_800]
                    .choose(&mut self.rng)
                    .expect("lifetimes");
                let reference = self.fresh_key("order-");
                (
                    self.user(),
                    "/v1/me/points/holds".into(),
                    json!({"amount": amount, "expires_in_seconds": seconds, "reference": reference}),
                )
            }
            WriteKind::Capture | WriteKind::Release => {
                let (holder, hold_id, held) = self.some_hold();
                let amount = (held > 0 && self.rng.random_bool(0.6))
                    .then(|| self.rng.random_range(1..=held + 10));
                let mut body = match amount {
                    Some(amount) if kind == WriteKind::Capture => json!({"amount": amount}),
                    _ => json!({}),
                };
                let verb = if kind == WriteKind::Capture {
                    "capture"
                } else {
                    "release"
                };
                if self.rng.random_bool(0.5) {
                    (
                        holder,
                        format!("/v1/me/points/holds/{hold_id}/{verb}"),
                        body,
                    )
                } else {
                    body["user_id"] = json!(holder);
                    body["hold_id"] = json!(hold_id);
                    ("shop", format!("/v1/points/holds/{verb}"), body)
                }
            }
            WriteKind::Refund => {
                // A spend, a hold or a capture of someone's, or nothing at all.
                // Mostly what took points; now and then a hold (refundable once captured).
                let kinds: &[WriteKind] = if self.rng.random_bool(0.8) {
                    &[WriteKind::Spend, WriteKind::Capture]
                } else {
                    &[WriteKind::Hold]
                };
                let recent = self.recent(kinds);
                let originals: Vec<(String, String)> = recent
                    .into_iter()
                    .map(|(caller, key, _)| {
                        let write = &self.model.writes[&(caller, key.clone())];
                        (write.ordering_account(), key)
                    })
                    .collect();
                let (user, original) = originals
                    .choose(&mut self.rng)
                    .cloned()
                    .unwrap_or_else(|| ("alice".into(), "none".into()));
                let mut body =
                    json!({"user_id": user, "operation_id": original, "reason": "returned"});
                if self.rng.random_bool(0.6) {
                    body["amount"] = json!(self.rng.random_range(1..=80));
                }
                ("shop", "/v1/points/refunds".into(), body)
            }
            WriteKind::Adjust => {
                let to = self.user();
                let amount =
                    self.rng.random_range(1..=100) * if self.rng.random_bool(0.5) { 1 } else { -1 };
                (
                    "support",
                    "/v1/points/adjustments".into(),
                    json!({"user_id": to, "amount": amount, "reason": "ticket"}),
                )
            }
            WriteKind::Transfer => {
                let (from, to) = (self.user(), self.user());
                let amount = self.rng.random_range(1..=100);
                // Now and then a transfer to self: 400, never applied.
                (
                    from,
                    "/v1/me/points/transfers".into(),
                    json!({"to_user_id": to, "amount": amount}),
                )
            }
        };
        let key = self.fresh_key("k");
        let mut write = Write {
            caller: caller.to_owned(),
            key: key.clone(),
            body: body.clone(),
            kind,
            uri: uri.clone(),
            sent_at_micros: self.micros.load(Ordering::SeqCst),
            answers: Vec::new(),
        };
        let (status, answer) = self
            .http(caller, Method::POST, &uri, Some(&key), Some(&body))
            .await?;
        write.answers.push(status.as_u16());
        if status == StatusCode::ACCEPTED {
            check!(
                self,
                answer["operation_id"] == key.as_str(),
                "{key}: 202 names another operation: {answer}"
            );
        }
        let self_transfer = kind == WriteKind::Transfer && body["to_user_id"] == caller;
        check!(
            self,
            !self_transfer || status == StatusCode::BAD_REQUEST,
            "a transfer to self answered {status}"
        );
        self.model.writes.insert((caller.to_owned(), key), write);
        self.collect().await
    }

    /// The same key again: with the same body (the same answer) or another (422).
    async fn reuse_key(&mut self) -> Result<(), Violation> {
        let accepted: Vec<(String, String)> = self
            .model
            .writes
            .iter()
            .filter(|(_, w)| w.accepted())
            .map(|(k, _)| k.clone())
            .collect();
        let Some(id) = accepted.choose(&mut self.rng).cloned() else {
            return Ok(());
        };
        let write = self.model.writes[&id].clone();
        let same = self.rng.random_bool(0.6);
        let mut body = write.body.clone();
        if !same {
            // Refunds and adjustments carry a reason; the others a description.
            let field = if body.get("reason").is_some() {
                "reason"
            } else {
                "description"
            };
            body[field] = json!("another request");
        }
        let (status, answer) = self
            .http(
                &write.caller,
                Method::POST,
                &write.uri,
                Some(&write.key),
                Some(&body),
            )
            .await?;
        if status.is_server_error() {
            return Ok(());
        }
        if same {
            check!(
                self,
                status == StatusCode::ACCEPTED,
                "{}: the same key and body answered {status}: {answer}",
                write.key
            );
        } else {
            check!(
                self,
                status == StatusCode::UNPROCESSABLE_ENTITY,
                "{}: the same key with another body answered {status}: {answer}",
                write.key
            );
        }
        self.collect().await
    }

    async fn read_points(&mut self) -> Result<(), Violation> {
        let mine: Vec<(String, String)> = self.model.writes.keys().cloned().collect();
        let Some((caller, key)) = mine.choose(&mut self.rng).cloned() else {
            return Ok(());
        };
        let (status, body) = self
            .http(
                &caller,
                Method::GET,
                &format!("/v1/me/points/operations/{key}"),
                None,
                None,
            )
            .await?;
        if status == StatusCode::OK && body["status"] == "rejected" {
            let reason = body["reason"].as_str().unwrap_or_default().to_owned();
            let seen = self
                .model
                .rejections
                .entry((caller.clone(), key.clone()))
                .or_insert(reason.clone());
            let seen = seen.clone();
            check!(
                self,
                seen == reason,
                "{caller}/{key}: a rejection changed from {seen} to {reason}"
            );
        }
        let (status, body) = self
            .http(&caller, Method::GET, "/v1/me/points", None, None)
            .await?;
        if status == StatusCode::OK {
            check!(
                self,
                body["balance"].as_i64().is_some_and(|b| b >= 0),
                "{caller}: balance {body}"
            );
        }
        // History pages, newest first, each continuing where the last stopped.
        let mut uri = "/v1/me/points/history?limit=3".to_owned();
        let mut last_seq: Option<u64> = None;
        for _ in 0..3 {
            let (status, page) = self.http(&caller, Method::GET, &uri, None, None).await?;
            if status != StatusCode::OK {
                break;
            }
            for entry in page["items"].as_array().cloned().unwrap_or_default() {
                let seq = entry["seq"].as_u64().unwrap_or(0);
                check!(
                    self,
                    last_seq.is_none_or(|last| seq + 1 == last),
                    "{caller}: history skips from {last_seq:?} to {seq}"
                );
                last_seq = Some(seq);
            }
            match page["next_cursor"].as_str() {
                Some(cursor) => uri = format!("/v1/me/points/history?limit=3&cursor={cursor}"),
                None => {
                    check!(
                        self,
                        last_seq.is_none_or(|last| last == 1),
                        "{caller}: history ends at {last_seq:?}, not at 1"
                    );
                    break;
                }
            }
        }
        Ok(())
    }

    /// Another service puts an operation on the points queue directly: valid,
    /// or breaking a rule (it must end rejected), or naming nobody (set aside).
    async fn direct_message(&mut self) -> Result<(), Violation> {
        let id = self.fresh_key("d");
        let now = shared::domain::timestamp::format(self.now());
        let to = self.user();
        let choice = self.rng.random_range(0..4);
        let (group, envelope, direct) = match choice {
            0 | 1 => {
                let amount = self.rng.random_range(1..=50);
                let body = json!({"user_id": to, "amount": amount, "point_type": "bonus"});
                let envelope = json!({"version": 1, "operation_id": id, "caller": "shop", "accepted_at": now,
                    "operation": {"type": "grant", "user_id": to, "amount": amount, "point_type": "bonus"}});
                let write = Write {
                    caller: "shop".into(),
                    key: id.clone(),
                    body,
                    kind: WriteKind::Grant,
                    uri: "/v1/points/grants".into(),
                    sent_at_micros: self.micros.load(Ordering::SeqCst),
                    answers: vec![202],
                };
                (
                    to.to_owned(),
                    envelope,
                    Some(Direct {
                        caller: "shop".into(),
                        operation_id: id.clone(),
                        valid: Some(write),
                    }),
                )
            }
            2 => {
                let envelope = json!({"version": 1, "operation_id": id, "caller": to, "accepted_at": now,
                    "operation": {"type": "transfer", "to_user_id": to, "amount": 5}});
                (
                    to.to_owned(),
                    envelope,
                    Some(Direct {
                        caller: to.into(),
                        operation_id: id.clone(),
                        valid: None,
                    }),
                )
            }
            _ => (
                to.to_owned(),
                json!({"version": 1, "caller": to, "operation": {"type": "spend"}}),
                None,
            ),
        };
        self.points_queue
            .forward(&envelope.to_string(), Some(&group), &id)
            .await
            .map_err(|e| Violation(format!("the simulator could not send: {e}")))?;
        self.log(format!("direct: {envelope}"));
        if let Some(direct) = direct {
            self.model.direct.push(direct);
        }
        self.collect().await
    }

    /// Takes every message off both queues into the simulator's pools, and
    /// tells the model what reached the queue.
    async fn collect(&mut self) -> Result<(), Violation> {
        for points in [false, true] {
            let queue = if points {
                &self.points_queue
            } else {
                &self.likes_queue
            };
            let arn = &self.arns[usize::from(points)];
            loop {
                let received = queue
                    .receive(10, StdDuration::ZERO, arn, "us-east-1")
                    .await
                    .map_err(|e| Violation(format!("receive: {e}")))?;
                if received.is_empty() {
                    break;
                }
                let handles: Vec<String> = received
                    .iter()
                    .filter_map(|m| m.receipt_handle.clone())
                    .collect();
                queue
                    .delete(&handles)
                    .await
                    .map_err(|e| Violation(format!("delete: {e}")))?;
                for message in received {
                    let envelope: Value =
                        serde_json::from_str(message.body.as_deref().unwrap_or_default())
                            .unwrap_or(Value::Null);
                    if points {
                        self.model.queued_points(&envelope);
                        let group = message
                            .attributes
                            .get("MessageGroupId")
                            .cloned()
                            .unwrap_or_default();
                        self.points.entry(group).or_default().push_back(Pending {
                            message,
                            receives: 0,
                        });
                    } else {
                        self.model.queued_like(&envelope);
                        self.likes.push(Pending {
                            message,
                            receives: 0,
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// Invokes the worker's SQS event handler; `None` when it crashed.
    async fn invoke(&mut self, records: Vec<SqsMessage>) -> Option<HashSet<String>> {
        let mut event = SqsEvent::default();
        event.records = records.clone();
        let answer = self
            .app
            .worker
            .handle(LambdaEvent::new(event, Context::default()))
            .await;
        if self.faults.restart() {
            self.fault("crash");
            return None;
        }
        Some(match answer {
            Ok(response) => response
                .batch_item_failures
                .into_iter()
                .map(|f| f.item_identifier)
                .collect(),
            Err(_) => records.into_iter().filter_map(|r| r.message_id).collect(),
        })
    }

    /// [`invoke`](Self::invoke); now and then messages of the batch are
    /// delivered again, to a second invocation, while the first still runs (their
    /// visibility timeout passed). From the likes queue that is any of them (here
    /// the later half); from the FIFO queue a group comes back from its first
    /// undeleted message, in order, so the whole batch. The first invocation's
    /// answer decides.
    async fn invoke_maybe_twice(
        &mut self,
        records: Vec<SqsMessage>,
        fifo: bool,
    ) -> Option<HashSet<String>> {
        if records.len() < 2 || !self.rng.random_bool(0.5) {
            return self.invoke(records).await;
        }
        self.fault("concurrent_redelivery");
        let mut event = SqsEvent::default();
        let from = if fifo { 0 } else { records.len() / 2 };
        event.records = records[from..].to_vec();
        let second = self.app.worker.clone();
        let (first, _) = futures::join!(
            self.invoke(records),
            second.handle(LambdaEvent::new(event, Context::default()))
        );
        first
    }

    fn maybe_crash(&mut self, rate: f64) {
        if self.rng.random_bool(rate) {
            let calls = self.rng.random_range(0..8);
            self.faults.crash_after(calls);
            self.faulty_step = true;
            self.log(format!("fault: crash after {calls} calls"));
        }
    }

    /// A failed or crashed message goes back, or to the dead-letter queue after
    /// [`MAX_RECEIVES`].
    fn redeliver_later(&mut self, mut pending: Pending, points_group: Option<&str>, front: bool) {
        pending.receives += 1;
        if pending.receives >= MAX_RECEIVES {
            self.dead.push(pending);
            return;
        }
        match points_group {
            None => self.likes.push(pending),
            Some(group) => {
                let queue = self.points.entry(group.to_owned()).or_default();
                if front {
                    queue.push_front(pending);
                } else {
                    queue.push_back(pending);
                }
            }
        }
    }

    async fn deliver_likes(&mut self) -> Result<(), Violation> {
        if self.likes.is_empty() {
            return Ok(());
        }
        // Mostly the newest half first, the older ones held back for a later
        // batch (reordering across batches); otherwise any order.
        let take = if self.rng.random_bool(0.8) {
            self.likes.reverse();
            *self.faults_by_kind.entry("reordered").or_default() += 1;
            self.likes.len().div_ceil(2)
        } else {
            self.likes.shuffle(&mut self.rng);
            self.rng.random_range(1..=self.likes.len().min(25))
        };
        let batch: Vec<Pending> = self.likes.drain(..take).collect();
        let mut records: Vec<SqsMessage> = batch.iter().map(|p| p.message.clone()).collect();
        if self.rng.random_bool(0.9) {
            // The same message twice in one batch (an at-least-once duplicate).
            let twin = records.choose(&mut self.rng).cloned().expect("a batch");
            records.push(twin);
            self.fault("duplicate");
        }
        self.maybe_crash(0.5);
        self.log(format!("deliver {} likes", records.len()));
        let failed = self.invoke_maybe_twice(records, false).await;
        let mut touched = Vec::new();
        for pending in batch {
            let id = pending.message.message_id.clone().unwrap_or_default();
            touched.push(register_of(&pending.message));
            let done = failed.as_ref().is_some_and(|failed| !failed.contains(&id));
            if !done {
                self.redeliver_later(pending, None, false);
            } else if self.rng.random_bool(0.2) {
                // The delete was lost: SQS delivers it again.
                self.fault("lost_delete");
                self.likes.push(pending);
            }
        }
        self.check_settled_registers(touched).await
    }

    /// A (user, post) none of whose operations waits for delivery any more
    /// holds its latest accepted operation: "last accepted wins", checked as soon
    /// as it can be, before a later redelivery could hide a wrong write.
    async fn check_settled_registers(
        &mut self,
        touched: Vec<(String, String)>,
    ) -> Result<(), Violation> {
        let waiting: HashSet<(String, String)> = self
            .likes
            .iter()
            .chain(self.dead.iter())
            .map(|p| register_of(&p.message))
            .collect();
        let settled: std::collections::BTreeSet<(String, String)> = touched
            .into_iter()
            .filter(|pair| !waiting.contains(pair))
            .collect();
        for (user, post) in settled {
            let Some((_, liked)) = self
                .model
                .registers
                .get(&(user.clone(), post.clone()))
                .cloned()
            else {
                continue;
            };
            let (status, body) = self
                .http(
                    &user,
                    Method::GET,
                    &format!("/v1/me/likes?post_ids={post}"),
                    None,
                    None,
                )
                .await?;
            if status == StatusCode::OK {
                check!(
                    self,
                    body["liked"][&post].as_bool() == Some(liked),
                    "{user}/{post}: every operation delivered, the register says {} but the latest accepted says {liked}",
                    body["liked"][&post]
                );
            }
        }
        Ok(())
    }

    async fn deliver_points(&mut self) -> Result<(), Violation> {
        let groups: Vec<String> = self
            .points
            .iter()
            .filter(|(_, q)| !q.is_empty())
            .map(|(g, _)| g.clone())
            .collect();
        if groups.is_empty() {
            return Ok(());
        }
        let chosen: Vec<String> = groups
            .choose_multiple(&mut self.rng, 3.min(groups.len()))
            .cloned()
            .collect();
        let mut taken: Vec<(String, Vec<Pending>)> = Vec::new();
        for group in chosen {
            let queue = self.points.get_mut(&group).expect("chosen from the pools");
            let take = self.rng.random_range(1..=queue.len().min(4));
            taken.push((group, queue.drain(..take).collect()));
        }
        let records: Vec<SqsMessage> = taken
            .iter()
            .flat_map(|(_, p)| p.iter().map(|p| p.message.clone()))
            .collect();
        self.maybe_crash(0.5);
        self.log(format!("deliver {} points messages", records.len()));
        let failed = self.invoke_maybe_twice(records, true).await;
        for (group, batch) in taken {
            // SQS FIFO: from the first failure on, the group's messages come back in order.
            let mut back: Vec<Pending> = Vec::new();
            let mut blocked = false;
            let mut last_done = None;
            for pending in batch {
                let id = pending.message.message_id.clone().unwrap_or_default();
                blocked = blocked || failed.as_ref().is_none_or(|failed| failed.contains(&id));
                if blocked {
                    back.push(pending);
                } else {
                    last_done = Some(pending);
                }
            }
            if let Some(done) = last_done
                && back.is_empty()
                && self.rng.random_bool(0.4)
            {
                // Its delete was lost: SQS delivers it again, before the rest of its group.
                self.fault("lost_delete");
                back.push(done);
            }
            for pending in back.into_iter().rev() {
                self.redeliver_later(pending, Some(&group), true);
            }
        }
        Ok(())
    }

    async fn reconcile(&mut self) -> Result<(), Violation> {
        self.maybe_crash(0.5);
        let reconciler = reconcile::Reconciler::new(
            self.app.stack.store.clone(),
            self.app.stack.points.queue.clone(),
        );
        let result = reconciler.run(self.now()).await;
        if self.faults.restart() {
            self.fault("crash");
        }
        self.log(format!(
            "reconcile: {:?}",
            result.as_ref().map_err(|e| e.to_string())
        ));
        self.collect().await
    }

    /// Counters edited by hand: reconcile must repair them.
    async fn tamper_counters(&mut self) -> Result<(), Violation> {
        for _ in 0..3 {
            let post = self.post();
            let value = self.rng.random_range(-5..50);
            crate::set_attribute(
                &self.store,
                &format!("POST#{post}"),
                "COUNT",
                "like_count",
                N(value.to_string()),
            )
            .await;
            self.model.tampered_posts.insert(post.clone());
            self.fault("tampered_counter");
            self.log(format!("tamper: POST#{post} like_count = {value}"));
        }
        Ok(())
    }

    /// Delivers everything pending, with no faults, until the pools are empty;
    /// the operator redrives the dead-letter queue first (always safe).
    async fn flush(&mut self) -> Result<(), Violation> {
        self.faults.clear();
        self.faults.restart();
        self.redrive_dead_letters();
        for _ in 0..200 {
            self.collect().await?;
            if self.likes.is_empty() && self.points.values().all(VecDeque::is_empty) {
                return Ok(());
            }
            let likes: Vec<Pending> = std::mem::take(&mut self.likes);
            for chunk in likes.chunks(25) {
                let records = chunk.iter().map(|p| p.message.clone()).collect();
                let failed = self.invoke(records).await.unwrap_or_default();
                for pending in chunk {
                    let id = pending.message.message_id.clone().unwrap_or_default();
                    if failed.contains(&id) {
                        self.redeliver_later(
                            Pending {
                                message: pending.message.clone(),
                                receives: pending.receives,
                            },
                            None,
                            false,
                        );
                    }
                }
            }
            while self.points.values().any(|q| !q.is_empty()) {
                self.deliver_points_all().await;
            }
        }
        Err(Violation("the queues never drained".into()))
    }

    fn redrive_dead_letters(&mut self) {
        for pending in std::mem::take(&mut self.dead) {
            let group = pending.message.attributes.get("MessageGroupId").cloned();
            let pending = Pending {
                message: pending.message,
                receives: 0,
            };
            match group {
                Some(group) => self.points.entry(group).or_default().push_back(pending),
                None => self.likes.push(pending),
            }
        }
    }

    async fn deliver_points_all(&mut self) {
        let groups: Vec<String> = self
            .points
            .iter()
            .filter(|(_, q)| !q.is_empty())
            .map(|(g, _)| g.clone())
            .collect();
        for group in groups {
            let batch: Vec<Pending> = {
                let queue = self.points.get_mut(&group).expect("a group");
                let take = queue.len().min(10);
                queue.drain(..take).collect()
            };
            let records = batch.iter().map(|p| p.message.clone()).collect();
            let failed = self.invoke(records).await.unwrap_or_default();
            let mut back = Vec::new();
            let mut blocked = false;
            for pending in batch {
                let id = pending.message.message_id.clone().unwrap_or_default();
                blocked = blocked || failed.contains(&id);
                if blocked {
                    back.push(pending);
                }
            }
            for pending in back.into_iter().rev() {
                self.redeliver_later(pending, Some(&group), true);
            }
        }
    }

    /// The end of the run: faults stop, uncertain writes are retried under their
    /// keys, dead letters are redriven, and reconcile runs until nothing is pending.
    async fn settle(&mut self) -> Result<(), Violation> {
        self.faults.clear();
        self.faults.restart();
        self.faulty_step = false;
        self.log("settle".into());
        let uncertain: Vec<(String, String)> = self
            .model
            .writes
            .iter()
            .filter(|(_, w)| w.uncertain())
            .map(|(k, _)| k.clone())
            .collect();
        for id in uncertain {
            let write = self.model.writes[&id].clone();
            let (status, answer) = self
                .http(
                    &write.caller,
                    Method::POST,
                    &write.uri,
                    Some(&write.key),
                    Some(&write.body),
                )
                .await?;
            check!(
                self,
                status == StatusCode::ACCEPTED,
                "{}: a same-key retry after a 5xx answered {status}: {answer}",
                write.key
            );
            if let Some(w) = self.model.writes.get_mut(&id) {
                w.answers.push(status.as_u16());
            }
        }
        self.flush().await?;
        self.flush().await?;
        for _ in 0..3 {
            self.advance(16 * 60 * 1_000_000);
            let reconciler = reconcile::Reconciler::new(
                self.app.stack.store.clone(),
                self.app.stack.points.queue.clone(),
            );
            let report = reconciler
                .run(self.now())
                .await
                .map_err(|e| Violation(format!("reconcile failed with no fault: {e}")))?;
            self.log(format!("reconcile: {report:?}"));
            self.flush().await?;
        }
        Ok(())
    }

    async fn final_audit(&mut self) -> Result<(), Violation> {
        self.audit_likes().await?;
        self.audit_points().await
    }

    async fn audit_likes(&mut self) -> Result<(), Violation> {
        let accepted: Vec<String> = self.model.likes_accepted.iter().cloned().collect();
        for id in accepted {
            check!(
                self,
                self.model.likes_queued.contains(&id),
                "like {id} was answered 202 but never reached the queue"
            );
        }
        for post in self.model.posts() {
            let expected = self.model.count(&post);
            let (_, body) = self
                .http(
                    "auditor",
                    Method::GET,
                    &format!("/v1/posts/{post}/likes"),
                    None,
                    None,
                )
                .await?;
            check!(
                self,
                body["count"].as_u64() == Some(expected),
                "{post}: count {} but {expected} users' latest operation is a like",
                body["count"]
            );
        }
        let posts: Vec<String> = self.model.posts().into_iter().collect();
        for user in USERS {
            let mine = self.model.likes_of(user);
            for chunk in posts.chunks(100) {
                let (_, body) = self
                    .http(
                        user,
                        Method::GET,
                        &format!("/v1/me/likes?post_ids={}", chunk.join(",")),
                        None,
                        None,
                    )
                    .await?;
                for post in chunk {
                    let liked = body["liked"][post].as_bool();
                    check!(
                        self,
                        liked == Some(mine.contains(post)),
                        "{user}/{post}: \"did I like\" says {liked:?}"
                    );
                }
            }
            let mut listed = std::collections::BTreeSet::new();
            let mut uri = "/v1/me/likes?limit=7".to_owned();
            loop {
                let (_, page) = self.http(user, Method::GET, &uri, None, None).await?;
                for item in page["items"].as_array().cloned().unwrap_or_default() {
                    listed.insert(item["post_id"].as_str().unwrap_or_default().to_owned());
                }
                match page["next_cursor"].as_str() {
                    Some(cursor) => uri = format!("/v1/me/likes?limit=7&cursor={cursor}"),
                    None => break,
                }
            }
            check!(
                self,
                listed == mine,
                "{user}: \"my likes\" lists {listed:?}, the registers say {mine:?}"
            );
        }
        Ok(())
    }

    async fn audit_points(&mut self) -> Result<(), Violation> {
        let writes: Vec<Write> = self.model.writes.values().cloned().collect();
        // Every operation the client was answered 202 for ends applied or rejected.
        let mut outcomes: BTreeMap<(String, String), Value> = BTreeMap::new();
        for write in &writes {
            let (status, body) = self
                .http(
                    &write.caller,
                    Method::GET,
                    &format!("/v1/me/points/operations/{}", write.key),
                    None,
                    None,
                )
                .await?;
            if write.accepted() {
                check!(
                    self,
                    status == StatusCode::OK
                        && (body["status"] == "applied" || body["status"] == "rejected"),
                    "{}/{}: answered 202, now {status} {body}",
                    write.caller,
                    write.key
                );
            } else if write.answers.iter().all(|s| (400..500).contains(s)) {
                check!(
                    self,
                    status == StatusCode::NOT_FOUND,
                    "{}/{}: answered {:?}, yet recorded: {body}",
                    write.caller,
                    write.key,
                    write.answers
                );
            }
            if let Some(reason) = self
                .model
                .rejections
                .get(&(write.caller.clone(), write.key.clone()))
            {
                check!(
                    self,
                    body["reason"] == reason.as_str(),
                    "{}/{}: the rejection {reason} became {body}",
                    write.caller,
                    write.key
                );
            }
            outcomes.insert((write.caller.clone(), write.key.clone()), body);
        }
        for direct in self.model.direct.clone() {
            let record = self
                .store
                .operation(
                    &UserId::parse(&direct.caller).expect("a sim user"),
                    &OperationId::parse(&direct.operation_id).expect("a sim id"),
                )
                .await
                .map_err(|e| Violation(format!("read: {e}")))?;
            let status = record
                .as_ref()
                .map(|r| format!("{:?}", r.status).to_lowercase());
            match &direct.valid {
                Some(write) => {
                    check!(
                        self,
                        status.as_deref() == Some("applied")
                            || status.as_deref() == Some("rejected"),
                        "direct {}: {status:?}",
                        direct.operation_id
                    );
                    let body = json!({"status": status, "entry": record.and_then(|r| r.entry).map(|e| json!({"amount": e.amount}))});
                    outcomes.insert(("shop".into(), write.key.clone()), body);
                }
                None => {
                    let reason = record.as_ref().and_then(|r| r.reason).map(|r| r.code());
                    check!(
                        self,
                        reason == Some("invalid_operation"),
                        "direct {} broke a rule, yet ended {status:?} {reason:?}",
                        direct.operation_id
                    );
                }
            }
        }
        // Each account's ledger: a gapless, linked chain that adds up, each
        // operation at most once.
        let mut balances = 0i64;
        let mut by_kind: BTreeMap<&'static str, i64> = BTreeMap::new();
        let mut applied_entries: BTreeMap<(String, String), Vec<i64>> = BTreeMap::new();
        // How each operation's entries moved `held`, by (operation, kind).
        let mut held_moves: BTreeMap<(String, String), Vec<i64>> = BTreeMap::new();
        let mut stored_holds: BTreeMap<String, BTreeMap<String, model::Lots>> = BTreeMap::new();
        let mut ledgers: BTreeMap<String, Vec<shared::domain::points::Entry>> = BTreeMap::new();
        let mut stored_lots: BTreeMap<String, BTreeMap<i64, i64>> = BTreeMap::new();
        let mut accounts: Vec<String> = USERS.iter().map(|u| (*u).to_owned()).collect();
        accounts.push("shop".into());
        accounts.push("admin".into());
        for account in &accounts {
            let user = UserId::parse(account).expect("a sim user");
            let mut entries = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let page = self
                    .store
                    .history(&user, 100, cursor.as_deref())
                    .await
                    .map_err(|e| Violation(format!("history: {e}")))?;
                entries.extend(page.items);
                match page.next_cursor {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
            entries.reverse();
            let state = self
                .store
                .account(&user)
                .await
                .map_err(|e| Violation(format!("account: {e}")))?;
            let mut balance = 0i64;
            let mut held = 0u64;
            let mut seen_ops = HashSet::new();
            for (i, entry) in entries.iter().enumerate() {
                check!(
                    self,
                    entry.seq == i as u64 + 1,
                    "{account}: seq {} where {} was due",
                    entry.seq,
                    i + 1
                );
                check!(
                    self,
                    entry.balance_before as i64 == balance,
                    "{account}: entry {} starts at {} after {balance}",
                    entry.seq,
                    entry.balance_before
                );
                balance += entry.amount;
                check!(
                    self,
                    balance >= 0 && entry.balance_after as i64 == balance,
                    "{account}: entry {} ends at {} (sum {balance})",
                    entry.seq,
                    entry.balance_after
                );
                let kind = entry.kind.name();
                *by_kind.entry(kind).or_default() += entry.amount;
                *self.entries_by_kind.entry(kind).or_default() += 1;
                check!(
                    self,
                    entry.held_before == held,
                    "{account}: entry {} holds {} after {held}",
                    entry.seq,
                    entry.held_before
                );
                held = entry.held_after;
                // A hold's release at its expiry carries the hold's own id.
                let expiry_release = entry.kind == shared::domain::points::EntryKind::Release
                    && entry.hold_id.as_ref() == Some(&entry.operation_id);
                if kind != "expire" && !expiry_release {
                    held_moves
                        .entry((entry.operation_id.to_string(), kind.to_owned()))
                        .or_default()
                        .push(entry.held_after as i64 - entry.held_before as i64);
                    check!(
                        self,
                        seen_ops.insert(entry.operation_id.to_string()),
                        "{account}: operation {} applied twice",
                        entry.operation_id
                    );
                    applied_entries
                        .entry((entry.operation_id.to_string(), kind.to_owned()))
                        .or_default()
                        .push(entry.amount);
                }
            }
            check!(
                self,
                state.balance as i64 == balance && state.seq == entries.len() as u64,
                "{account}: account says {} at seq {}, its ledger {balance} at {}",
                state.balance,
                state.seq,
                entries.len()
            );
            check!(
                self,
                state.lots.values().sum::<u64>() + state.held() == state.balance
                    && state.held() == held,
                "{account}: lots {:?} and holds {:?} do not add up to {} (ledger: {held} held)",
                state.lots,
                state.holds,
                state.balance
            );
            let (_, shown) = self
                .http(account, Method::GET, "/v1/me/points", None, None)
                .await?;
            let live = state.as_of(self.now());
            check!(
                self,
                shown["balance"].as_u64() == Some(live.balance)
                    && shown["held"].as_u64() == Some(live.held())
                    && shown["available"].as_u64() == Some(live.balance - live.held()),
                "{account}: shows {shown} with {} unexpired, {} held",
                live.balance,
                live.held()
            );
            // The account's own operations applied in the order they were queued.
            let order = self
                .model
                .queued_order
                .get(account)
                .cloned()
                .unwrap_or_default();
            let applied: Vec<String> = entries
                .iter()
                .filter(|e| {
                    matches!(
                        e.kind,
                        shared::domain::points::EntryKind::Spend
                            | shared::domain::points::EntryKind::TransferOut
                            | shared::domain::points::EntryKind::Hold
                    )
                })
                .map(|e| e.operation_id.to_string())
                .collect();
            let positions: Vec<usize> = applied
                .iter()
                .filter_map(|id| order.iter().position(|o| o == id))
                .collect();
            check!(
                self,
                positions.windows(2).all(|w| w[0] < w[1]),
                "{account}: operations applied in the order {applied:?}, queued as {order:?}"
            );
            balances += balance;
            let lots = |lots: &shared::domain::points::Lots| -> model::Lots {
                lots.iter()
                    .map(|(expiry, amount)| {
                        let at = match expiry {
                            shared::domain::points::Expiry::At(at) => at.unix_timestamp(),
                            shared::domain::points::Expiry::Never => i64::MAX,
                        };
                        (at, *amount as i64)
                    })
                    .collect()
            };
            stored_lots.insert(account.clone(), lots(&state.lots));
            stored_holds.insert(
                account.clone(),
                state
                    .holds
                    .iter()
                    .map(|(id, hold)| (id.to_string(), lots(&hold.lots)))
                    .collect(),
            );
            ledgers.insert(account.clone(), entries);
        }
        // The lots, replayed by the model's own rules, are the ones Tally holds.
        match model::replay_lots(&ledgers) {
            Err(broken) => check!(self, false, "lot replay: {broken}"),
            Ok(replayed) => {
                for (account, replay) in replayed {
                    let stored = stored_lots.get(&account).cloned().unwrap_or_default();
                    check!(
                        self,
                        replay.available == stored,
                        "{account}: holds lots {stored:?}, the model's replay {:?}",
                        replay.available
                    );
                    let holds = stored_holds.get(&account).cloned().unwrap_or_default();
                    check!(
                        self,
                        replay.holds == holds,
                        "{account}: open holds {holds:?}, the model's replay {:?}",
                        replay.holds
                    );
                }
            }
        }
        // Conservation: what came in (grants, refunds, credits) is owned or
        // went out (spends, captures, expiry, debits); transfers only move it.
        let net: i64 = by_kind
            .iter()
            .filter(|(kind, _)| !kind.starts_with("transfer"))
            .map(|(_, amount)| amount)
            .sum();
        check!(
            self,
            net == balances,
            "entries other than transfers add up to {net}, balances to {balances}: {by_kind:?}"
        );
        let moved_in = by_kind.get("transfer_in").copied().unwrap_or(0);
        let moved_out = -by_kind.get("transfer_out").copied().unwrap_or(0);
        check!(
            self,
            moved_in == moved_out,
            "transfers credited {moved_in}, debited {moved_out}"
        );
        // Each applied operation moved exactly what the client asked for.
        for write in writes
            .iter()
            .chain(self.model.direct.iter().filter_map(|d| d.valid.as_ref()))
        {
            let Some(outcome) = outcomes.get(&(write.caller.clone(), write.key.clone())) else {
                continue;
            };
            if outcome["status"] != "applied" {
                continue;
            }
            let amount = write.amount();
            let entries = |kind: &str| {
                applied_entries
                    .get(&(write.key.clone(), kind.to_owned()))
                    .cloned()
                    .unwrap_or_default()
            };
            match write.kind {
                WriteKind::Grant => check!(
                    self,
                    entries("grant") == [amount],
                    "{}: granted {amount}, entries {:?}",
                    write.key,
                    entries("grant")
                ),
                WriteKind::Spend => check!(
                    self,
                    entries("spend") == [-amount],
                    "{}: spent {amount}, entries {:?}",
                    write.key,
                    entries("spend")
                ),
                WriteKind::Transfer => check!(
                    self,
                    entries("transfer_out") == [-amount] && entries("transfer_in") == [amount],
                    "{}: transferred {amount}, entries out {:?} in {:?}",
                    write.key,
                    entries("transfer_out"),
                    entries("transfer_in")
                ),
                WriteKind::Adjust => check!(
                    self,
                    entries("adjust") == [amount],
                    "{}: adjusted by {amount}, entries {:?}",
                    write.key,
                    entries("adjust")
                ),
                WriteKind::Hold => {
                    let moved = held_moves
                        .get(&(write.key.clone(), "hold".to_owned()))
                        .cloned()
                        .unwrap_or_default();
                    check!(
                        self,
                        entries("hold") == [0] && moved == [amount],
                        "{}: held {amount}, entries {:?} moving held by {moved:?}",
                        write.key,
                        entries("hold")
                    )
                }
                WriteKind::Capture => {
                    let taken = entries("capture");
                    check!(
                        self,
                        taken.len() == 1
                            && (write.body.get("amount").is_none() || taken == [-amount]),
                        "{}: captured {:?}, entries {taken:?}",
                        write.key,
                        write.body.get("amount")
                    )
                }
                WriteKind::Release => check!(
                    self,
                    entries("release") == [0],
                    "{}: released, entries {:?}",
                    write.key,
                    entries("release")
                ),
                WriteKind::Refund => {
                    let given = entries("refund");
                    check!(
                        self,
                        given.len() == 1
                            && (write.body.get("amount").is_none() || given == [amount]),
                        "{}: refunded {:?}, entries {given:?}",
                        write.key,
                        write.body.get("amount")
                    )
                }
            }
        }
        // No operation applied that the client never had accepted.
        let known: HashSet<String> = writes
            .iter()
            .map(|w| w.key.clone())
            .chain(self.model.direct.iter().map(|d| d.operation_id.clone()))
            .collect();
        for (id, _) in applied_entries.keys() {
            check!(
                self,
                known.contains(id),
                "operation {id} applied, yet nobody sent it"
            );
        }
        for write in &writes {
            if !write.accepted() {
                let applied = applied_entries.keys().any(|(id, _)| *id == write.key);
                check!(
                    self,
                    !applied,
                    "{}: answered {:?}, yet applied",
                    write.key,
                    write.answers
                );
            }
        }
        self.tamper_balance_at_the_end().await
    }

    /// Balances edited behind the service's back: reconcile's background sweep
    /// finds and reports each, never rewrites history, and reports nothing
    /// once they are put back.
    async fn tamper_balance_at_the_end(&mut self) -> Result<(), Violation> {
        let mut tampered = Vec::new();
        for account in USERS {
            let user = UserId::parse(*account).expect("a sim user");
            let before = self
                .store
                .account(&user)
                .await
                .map_err(|e| Violation(format!("account: {e}")))?;
            if before.seq == 0 {
                continue;
            }
            let ledger = self
                .store
                .ledger(&user)
                .await
                .map_err(|e| Violation(format!("ledger: {e}")))?;
            crate::set_attribute(
                &self.store,
                &format!("ACCOUNT#{account}"),
                "STATE",
                "balance",
                N((before.balance + 7).to_string()),
            )
            .await;
            self.fault("tampered_balance");
            tampered.push((user, before.balance, ledger));
        }
        // No write marked them: the sweep must come to each, within one pass.
        let reconciler = reconcile::Reconciler::new(
            self.app.stack.store.clone(),
            self.app.stack.points.queue.clone(),
        );
        let mut reported = 0;
        for _ in 0..60 {
            let report = reconciler
                .run(self.now())
                .await
                .map_err(|e| Violation(format!("reconcile: {e}")))?;
            reported += report.mismatches;
            if reported >= tampered.len() as u64 {
                break;
            }
        }
        check!(
            self,
            reported >= tampered.len() as u64,
            "{} balances edited, reconcile reported {reported}",
            tampered.len()
        );
        for (user, balance, ledger) in tampered {
            let after = self
                .store
                .ledger(&user)
                .await
                .map_err(|e| Violation(format!("ledger: {e}")))?;
            check!(self, after == ledger, "{user}: reconcile rewrote history");
            crate::set_attribute(
                &self.store,
                &format!("ACCOUNT#{user}"),
                "STATE",
                "balance",
                N(balance.to_string()),
            )
            .await;
        }
        Ok(())
    }
}
