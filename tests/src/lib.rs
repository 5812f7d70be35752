//! Test helpers: every test gets its own world (a fresh table and queues with
//! unique names) on the shared emulator that `make test` starts.

use std::time::Duration;

use aws_lambda_events::sqs::SqsMessage;
use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use dev_gateway::{EventSourceMapping, LocalStack, Names};
use http_body_util::BodyExt as _;
use shared::queue::QueueSettings;
use shared::store::Store;
use sqs_worker::Worker;
use tower::ServiceExt as _;

pub use shared;

/// Queue settings for tests: failed messages come back after one second, and
/// reach the dead-letter queue after three receives.
pub const TEST_QUEUES: QueueSettings = QueueSettings {
    visibility_timeout: Duration::from_secs(1),
    max_receive_count: 3,
    fifo: false,
};

/// The AWS settings of the emulator the tests run against.
pub async fn emulator() -> shared::config::SdkConfig {
    let endpoint = std::env::var("AWS_ENDPOINT_URL").expect(
        "AWS_ENDPOINT_URL must name the emulator: run the tests with `make test`, which starts one",
    );
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "test", "test", None, None, "tests",
        ))
        .load()
        .await
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
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(TEST_QUEUES).await
    }

    pub async fn spawn_with(settings: QueueSettings) -> Self {
        let aws = emulator().await;
        let id = uuid::Uuid::now_v7().simple().to_string();
        let names = Names {
            table: format!("tally-test-{id}"),
            likes_queue: format!("tally-test-likes-{id}"),
            points_queue: format!("tally-test-points-{id}"),
        };
        let stack = LocalStack::provision(&aws, &names, settings)
            .await
            .expect("provision the table and queues on the emulator");
        let worker = Worker::new(stack.store.clone());
        let gateway = stack.gateway().router();
        let [mapping, points_mapping] = stack
            .mappings(Duration::from_millis(200))
            .await
            .expect("queue arns");
        Self {
            stack,
            worker,
            gateway,
            mapping,
            points_mapping,
        }
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
        let response = self
            .gateway
            .clone()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
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

/// An SQS record as Lambda delivers it, carrying `body`.
pub fn sqs_record(message_id: &str, body: &str) -> SqsMessage {
    let mut message = SqsMessage::default();
    message.message_id = Some(message_id.to_owned());
    message.receipt_handle = Some(format!("receipt-{message_id}"));
    message.body = Some(body.to_owned());
    message.event_source = Some("aws:sqs".to_owned());
    message
}
