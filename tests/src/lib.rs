//! Test helpers: every test gets its own world (a fresh table and queues with
//! unique names) on the shared emulator that `make test` starts.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // test code: a panic is a failed check

pub mod faults;
pub mod published;
pub mod simulation;
pub mod stall;

use std::time::Duration;

use aws_lambda_events::sqs::SqsMessage;
use aws_smithy_runtime_api::client::interceptors::SharedInterceptor;
use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use dev_gateway::{
    ClientTuning, EventSourceMapping, LocalStack, QueueTiming, StackOptions, StreamMapping,
};
use http_body_util::BodyExt as _;

use crate::faults::FaultInjector;
use shared::store::Store;
use sqs_worker::Worker;
use tower::ServiceExt as _;

pub use shared;

/// Queue timing for tests: failed messages come back after one second, and
/// reach the dead-letter queue after three receives.
pub const TEST_QUEUES: QueueTiming = QueueTiming {
    visibility_timeout: Duration::from_secs(1),
    max_receive_count: 3,
};

/// The AWS settings of the emulator the tests run against, signing as its
/// operator (the keys `scripts/emulator.sh` exports).
pub async fn emulator() -> shared::config::SdkConfig {
    assert!(
        std::env::var_os("AWS_ENDPOINT_URL").is_some(),
        "AWS_ENDPOINT_URL must name the emulator: run the tests with `make test`, which starts one"
    );
    shared::config::aws(dev_gateway::OPERATOR_TIMEOUTS).await
}

/// A fresh stack from the repository's template, with names of its own,
/// [`TEST_QUEUES`] timing and [`emulator_timeouts`].
pub fn test_options() -> StackOptions {
    let id = uuid::Uuid::now_v7().simple().to_string();
    StackOptions {
        timing: Some(TEST_QUEUES),
        timeouts: emulator_timeouts,
        // Short: an event archive's name (`{stack}-EventArchive`) is at most 48 characters.
        ..StackOptions::deployed(&format!("t-{id}")).expect("template.yaml parses")
    }
}

/// The deployed timeouts, ten times longer. The emulator applies DynamoDB
/// requests one at a time, in Python, on a machine the tests load with dozens
/// of concurrent worlds: a healthy request can wait seconds in its queue, where
/// DynamoDB answers in milliseconds. Calls stay bounded; the deployed figures
/// themselves are held by `tests/tests/timeouts.rs` against a stalled endpoint.
pub fn emulator_timeouts(binary: &str) -> Option<shared::config::Timeouts> {
    let deployed = dev_gateway::function_timeouts(binary)?;
    Some(shared::config::Timeouts {
        connect: deployed.connect * 10,
        attempt: deployed.attempt * 10,
        operation: deployed.operation * 10,
    })
}

/// Clients that carry `faults`, with the SDK's own retries as deployed but
/// backing off in milliseconds rather than seconds: injected refusals cost the
/// tests no wall time.
pub fn faulty(faults: &FaultInjector) -> ClientTuning {
    ClientTuning {
        interceptor: Some(SharedInterceptor::new(faults.interceptor())),
        retry: Some(
            aws_config::retry::RetryConfig::standard()
                .with_initial_backoff(Duration::from_millis(2))
                .with_max_backoff(Duration::from_millis(20)),
        ),
        endpoint: None,
    }
}

/// One isolated Tally: its own table and queues, the functions wired as the dev gateway wires them.
pub struct TestApp {
    pub stack: LocalStack,
    pub worker: Worker,
    pub gateway: Router,
    /// Plays the event source mapping of the likes queue.
    pub mapping: EventSourceMapping,
    /// Plays the event source mapping of the points FIFO queue.
    pub points_mapping: EventSourceMapping,
    /// Plays the events function's stream mapping.
    pub stream: StreamMapping,
    /// The events function, as deployed.
    pub publisher: events::Publisher,
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_from(test_options()).await
    }

    /// A world with other queue timing.
    pub async fn spawn_with(timing: QueueTiming) -> Self {
        Self::spawn_from(StackOptions {
            timing: Some(timing),
            ..test_options()
        })
        .await
    }

    /// A world whose functions (HTTP, worker, reconcile) reach DynamoDB and SQS
    /// through clients that carry `faults`.
    pub async fn spawn_with_faults(faults: &FaultInjector) -> Self {
        Self::spawn_from(StackOptions {
            tuning: faulty(faults),
            ..test_options()
        })
        .await
    }

    /// [`spawn_with_faults`](Self::spawn_with_faults), every function reading `clock`.
    pub async fn spawn_simulated(faults: &FaultInjector, clock: shared::clock::Clock) -> Self {
        Self::spawn_from_with_clock(
            StackOptions {
                tuning: faulty(faults),
                ..test_options()
            },
            Some(clock),
        )
        .await
    }

    /// A world deployed from `options` (a changed template, a proxy in front of
    /// the emulator, ...).
    pub async fn spawn_from(options: StackOptions) -> Self {
        Self::spawn_from_with_clock(options, None).await
    }

    async fn spawn_from_with_clock(
        options: StackOptions,
        clock: Option<shared::clock::Clock>,
    ) -> Self {
        let aws = emulator().await;
        let mut stack = LocalStack::provision(&aws, &options)
            .await
            .expect("provision template.yaml's resources on the emulator");
        if let Some(clock) = clock {
            stack.clock = clock;
        }
        // Tests read a count right after draining the queue: a cached count
        // would be a window old. `hot_reads.rs` runs the template's window.
        if stack.count_cache.is_none() {
            stack.count_cache = Some(Duration::ZERO);
        }
        let worker = stack.worker().expect("the worker");
        let gateway = stack.gateway().expect("the HTTP API").router();
        let [mapping, points_mapping] = stack
            .mappings(Some(Duration::from_millis(200)))
            .expect("the worker's event source mappings");
        let stream = stack
            .stream_mapping()
            .expect("the events function's stream mapping");
        let publisher = stack.publisher().expect("the events function");
        Self {
            stack,
            worker,
            gateway,
            mapping,
            points_mapping,
            stream,
            publisher,
        }
    }

    /// Reads the table's stream into the events function until it has
    /// published everything written so far (a failed batch is delivered again).
    pub async fn publish_events(&self) {
        for _ in 0..1000 {
            let poll = self
                .stream
                .poll_once(&self.publisher)
                .await
                .expect("read the stream");
            if poll.received == 0 {
                return;
            }
        }
        panic!("the stream did not drain");
    }

    /// Reconcile, as deployed (its own role).
    pub fn reconciler(&self) -> reconcile::Reconciler {
        self.stack.reconciler().expect("reconcile")
    }

    pub fn store(&self) -> &Store {
        &self.stack.store
    }

    /// Sends a request through the dev gateway as `user` (no identity when `None`).
    pub async fn call(
        &self,
        user: Option<&str>,
        method: Method,
        uri: &str,
    ) -> (StatusCode, serde_json::Value) {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(user) = user {
            request = request.header("x-dev-user", user);
        }
        self.send(request.body(Body::empty()).unwrap()).await
    }

    /// Sends any request through the dev gateway; answers the status and the JSON body.
    pub async fn send(&self, request: Request<Body>) -> (StatusCode, serde_json::Value) {
        let response = self.gateway.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        if !status.is_success() {
            assert_eq!(content_type, "application/problem+json", "{status}: {json}");
            assert_eq!(json["status"], status.as_u16(), "{json}");
        }
        (status, json)
    }

    /// Polls both queues into the worker until they are empty.
    pub async fn drain(&self) {
        for _ in 0..1000 {
            self.mapping
                .poll_once(&self.worker)
                .await
                .expect("poll likes");
            self.points_mapping
                .poll_once(&self.worker)
                .await
                .expect("poll points");
            let likes = self.stack.likes.queue.depth().await.expect("depth");
            let points = self.stack.points.queue.depth().await.expect("depth");
            if likes + points == 0 {
                return;
            }
        }
        panic!("the queues did not drain");
    }
}

/// Edits one attribute of an item behind the service's back.
pub async fn set_attribute(
    store: &Store,
    pk: &str,
    sk: &str,
    name: &str,
    value: aws_sdk_dynamodb::types::AttributeValue,
) {
    use aws_sdk_dynamodb::types::AttributeValue::S;
    aws_sdk_dynamodb::Client::new(&emulator().await)
        .update_item()
        .table_name(store.table_name())
        .key("pk", S(pk.to_owned()))
        .key("sk", S(sk.to_owned()))
        .update_expression("SET #a = :v")
        .expression_attribute_names("#a", name)
        .expression_attribute_values(":v", value)
        .send()
        .await
        .expect("edit an item on the emulator");
}

/// An SQS record as Lambda delivers it, carrying `body`.
pub fn sqs_record(message_id: &str, body: &str) -> SqsMessage {
    let mut message = SqsMessage::default();
    message.message_id = Some(message_id.to_owned());
    message.receipt_handle = Some(format!("receipt-{message_id}"));
    message.body = Some(body.to_owned());
    message.event_source = Some("aws:sqs".to_owned());
    message
}

/// A JSON request through the dev gateway, with optional scopes and `Idempotency-Key`.
pub struct Call<'a> {
    pub user: Option<&'a str>,
    pub scopes: Option<&'a str>,
    pub method: Method,
    pub uri: &'a str,
    pub key: Option<&'a str>,
    pub body: Option<serde_json::Value>,
}

impl TestApp {
    pub async fn request(&self, call: Call<'_>) -> (StatusCode, serde_json::Value) {
        let mut request = Request::builder().method(call.method).uri(call.uri);
        if let Some(user) = call.user {
            request = request.header("x-dev-user", user);
        }
        if let Some(scopes) = call.scopes {
            request = request.header("x-dev-scopes", scopes);
        }
        if let Some(key) = call.key {
            request = request.header("idempotency-key", key);
        }
        let body = match call.body {
            Some(json) => Body::from(json.to_string()),
            None => Body::empty(),
        };
        self.send(
            request
                .header("content-type", "application/json")
                .body(body)
                .unwrap(),
        )
        .await
    }

    /// `POST` a points write as `user`.
    pub async fn write(
        &self,
        user: &str,
        uri: &str,
        key: &str,
        body: serde_json::Value,
    ) -> (StatusCode, serde_json::Value) {
        // Every route under /v1/points/ needs the admin scope.
        let scopes = uri.starts_with("/v1/points/").then_some("points:admin");
        self.request(Call {
            user: Some(user),
            scopes,
            method: Method::POST,
            uri,
            key: Some(key),
            body: Some(body),
        })
        .await
    }

    /// `GET /v1/me/points/operations/{id}` as `caller`.
    pub async fn status_of(&self, caller: &str, id: &str) -> serde_json::Value {
        self.get(caller, &format!("/v1/me/points/operations/{id}"))
            .await
    }

    pub async fn get(&self, user: &str, uri: &str) -> serde_json::Value {
        let (status, body) = self.call(Some(user), Method::GET, uri).await;
        assert_eq!(status, StatusCode::OK, "GET {uri}: {body}");
        body
    }

    /// Reads an account's whole ledger, checks that it chains (gapless `seq`,
    /// each `balance_before` equal to the previous `balance_after`, entries summing
    /// to the balance) and returns its entries oldest first.
    pub async fn audited_ledger(&self, user: &str) -> Vec<shared::domain::points::Entry> {
        let id = shared::domain::ids::UserId::parse(user).unwrap();
        let mut entries = Vec::new();
        let mut cursor = None;
        loop {
            let page = self
                .store()
                .history(&id, 100, cursor.as_deref())
                .await
                .unwrap();
            entries.extend(page.items);
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        entries.reverse();
        let mut balance = 0u64;
        let mut held_after = 0u64;
        for (i, entry) in entries.iter().enumerate() {
            assert_eq!(entry.seq, i as u64 + 1, "{user}: seq gap at {entry:?}");
            assert_eq!(
                entry.balance_before, balance,
                "{user}: broken chain at {entry:?}"
            );
            assert_eq!(
                entry.balance_after as i64,
                balance as i64 + entry.amount,
                "{user}: {entry:?}"
            );
            balance = entry.balance_after;
            assert_eq!(
                entry.held_before, held_after,
                "{user}: broken held chain at {entry:?}"
            );
            held_after = entry.held_after;
        }
        let account = self.store().account(&id).await.unwrap();
        assert_eq!(
            account.balance, balance,
            "{user}: balance is not the sum of entries"
        );
        assert_eq!(account.seq, entries.len() as u64);
        let held: u64 = account.holds.values().map(|hold| hold.amount()).sum();
        assert_eq!(
            account.lots.values().sum::<u64>() + held,
            balance,
            "{user}: lots do not sum to the balance"
        );
        assert_eq!(
            entries.last().map_or(0, |entry| entry.held_after),
            held,
            "{user}: the ledger does not explain the points held"
        );
        assert_eq!(
            shared::domain::points::audit(&account, &entries),
            vec![],
            "{user}"
        );
        entries
    }
}
