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
//! - **Events**: now and then the table's stream is read into the events
//!   function, which may die before its checkpoint (the records come again) or
//!   meet a PutEvents that takes all entries but one; a rule on the bus
//!   delivers every event to the auditor's queue.
//! - **The auditor** ([`model::Model`]) checks every answer as it comes and the
//!   whole state once the queues have drained and reconcile has run, the
//!   events published included.
//!
//! A seed replays the same schedule of operations, deliveries, faults and clock
//! steps; the interleaving of one invocation's own concurrent requests is
//! the runtime's, as it is on Lambda.
//!
//! This module holds the run: the `Sim` state, its step loop and the faults
//! it arms. What clients do is in `workload`, what the queues and Lambda do in
//! `delivery`, the checks in `auditor`, what they expect in [`model`].

pub mod model;

/// Counts an invariant check; a failed one returns a [`Violation`]. Defined
/// before the modules below, which use it.
macro_rules! check {
    ($sim:expr, $cond:expr, $($arg:tt)*) => {{
        $sim.checks += 1;
        if !$cond {
            return Err(Violation(format!($($arg)*)));
        }
    }};
}

mod auditor;
mod delivery;
mod events_audit;
mod insight_audit;
mod workload;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use aws_sdk_dynamodb::types::AttributeValue::N;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom as _;
use rand::{Rng as _, SeedableRng as _};
use shared::clock::Clock;
use shared::queue::OperationQueue;
use shared::store::Store;
use time::OffsetDateTime;

use crate::TestApp;
use crate::faults::{Fault, FaultInjector, Refusal};
use crate::published::Subscriber;
use delivery::Pending;
use model::{Model, WriteKind};

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
    "publisher_crash",
    "put_events_partial",
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
/// A PutEvents that takes every entry but the first, second or third.
const PUT_EVENTS_PARTIAL: [(&str, Fault); 3] = [
    ("PutEvents", Fault::FailEntry(0)),
    ("PutEvents", Fault::FailEntry(1)),
    ("PutEvents", Fault::FailEntry(2)),
];

/// The kind an injected SDK fault is reported as.
fn kind_of(fault: Fault) -> &'static str {
    match fault {
        Fault::LoseAnswer => "answer_lost",
        Fault::ShortPage(_) => "short_page",
        Fault::Unprocessed => "unprocessed_keys",
        Fault::Refuse(Refusal::TransactionConflict) => "transaction_conflict",
        Fault::Refuse(Refusal::Throttled) => "throttled",
        Fault::Refuse(Refusal::ServerError) => "server_error",
        Fault::FailEntry(_) => "put_events_partial",
    }
}

/// How far a handler's clock may be off the simulation's (clock skew between
/// instances): 2 s, well inside the 5 minutes the worker allows.
pub const MAX_SKEW_MICROS: i64 = 2_000_000;

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
    /// Every event Tally published, delivered by a rule on its bus.
    subscriber: Subscriber,
    events: Vec<serde_json::Value>,
    likes: Vec<Pending>,
    points: BTreeMap<String, VecDeque<Pending>>,
    dead: Vec<Pending>,
    model: Model,
    faults_by_kind: BTreeMap<&'static str, u64>,
    entries_by_kind: BTreeMap<&'static str, u64>,
    /// Whether the current step armed a fault (a 5xx without one is a violation).
    faulty_step: bool,
    checks: u64,
    /// Every moment (µs) the worker or reconcile ran: when a ledger can take an entry.
    apply_times: std::collections::BTreeSet<i64>,
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
            app.mapping.source_arn().to_owned(),
            app.points_mapping.source_arn().to_owned(),
        ];
        let subscriber = Subscriber::all(&app).await;
        Self {
            arns,
            subscriber,
            events: Vec::new(),
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
            apply_times: Default::default(),
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
        // Now and then the stream is read into the events function, under faults of its own.
        if self.rng.random_bool(0.12) {
            let before_publish = self.faults.injected().len();
            if self.rng.random_bool(0.8) {
                self.arm_fault(&[
                    PUT_EVENTS_PARTIAL[0],
                    PUT_EVENTS_PARTIAL[1],
                    PUT_EVENTS_PARTIAL[2],
                    THROTTLED,
                    SERVER_ERROR,
                ]);
            }
            self.publish_events().await?;
            for (_, fault) in self.faults.injected().split_off(before_publish) {
                *self.faults_by_kind.entry(kind_of(fault)).or_default() += 1;
            }
            self.faults.clear();
        }
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
}
