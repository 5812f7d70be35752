//! Log lines find their operation: one span per HTTP request and per SQS
//! message carries the operation id (and the message id), so searching one
//! field finds every line of one operation, from the request through the worker.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // test code: a panic is a failed check

use std::io::Write;
use std::sync::{Arc, Mutex};

use axum::http::{Method, StatusCode};
use serde_json::json;
use shared::domain::ids::{OperationId, PostId, UserId};
use shared::domain::likes::{LikeAction, LikeOperation};
use shared::message::Envelope;
use tests::{TestApp, sqs_record};
use time::OffsetDateTime;

/// Every line logged on this thread while it is the default subscriber, as text.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn capture(&self) -> tracing::subscriber::DefaultGuard {
        let logs = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || logs.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    /// Tally's own lines (not the SDK's).
    fn lines(&self) -> Vec<String> {
        String::from_utf8(self.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .filter(|line| !line.contains(" aws_"))
            .map(str::to_owned)
            .collect()
    }
}

/// A line's message and own fields: what follows its spans and its target.
fn event_part(line: &str) -> &str {
    let event = line.rsplit_once("}: ").map_or(line, |(_, event)| event);
    event
        .split_once(": ")
        .map_or(event, |(_target, event)| event)
}

fn like(user: &str, post: &str) -> (OperationId, String) {
    let operation_id = OperationId::generate();
    let body = Envelope::for_like(&LikeOperation {
        operation_id: operation_id.clone(),
        user: UserId::parse(user).unwrap(),
        post: PostId::parse(post).unwrap(),
        action: LikeAction::Like,
        accepted_at: OffsetDateTime::now_utc(),
    })
    .encode();
    (operation_id, body)
}

#[tokio::test]
async fn every_line_about_a_message_carries_its_ids_in_its_span_and_the_summary_its_batch() {
    let app = TestApp::spawn().await;
    let (first, first_body) = like("alice-sub", "p1");
    let (second, second_body) = like("bob-sub", "p1");
    let mut event = aws_lambda_events::sqs::SqsEvent::default();
    event.records = vec![
        sqs_record("m1", &first_body),
        sqs_record("m2", &second_body),
        // The same message again: overtaken in its batch, a line of its own.
        sqs_record("m3", &first_body),
        sqs_record("m4", "not an envelope"),
    ];
    let mut context = lambda_runtime::Context::default();
    context.request_id = "invocation-1".to_owned();
    let logs = Logs::default();
    {
        let _capture = logs.capture();
        app.worker
            .handle(lambda_runtime::LambdaEvent::new(event, context))
            .await
            .unwrap();
    }
    let lines = logs.lines();
    let span_of = |message_id: &str, operation_id: &OperationId| {
        format!("message{{message_id={message_id} operation_id={operation_id}}}")
    };
    for (message_id, operation_id, what) in [
        ("m1", &first, "like operation"),
        ("m2", &second, "like operation"),
        ("m3", &first, "like operation overtaken in its batch"),
    ] {
        let span = span_of(message_id, operation_id);
        assert!(
            lines
                .iter()
                .any(|line| line.contains(&span) && event_part(line).starts_with(what)),
            "no {what:?} line in {span}: {lines:#?}"
        );
    }
    assert!(
        lines
            .iter()
            .any(|line| line.contains("message{message_id=m4}") && line.contains("set aside")),
        "{lines:#?}"
    );
    // The span carries the ids: no line repeats them by hand.
    for line in &lines {
        assert!(!event_part(line).contains("operation_id="), "{line}");
    }
    let summary = lines
        .iter()
        .find(|line| line.contains("batch done"))
        .expect("a batch summary");
    assert!(
        summary.contains("batch{request_id=invocation-1 messages=4}"),
        "{summary}"
    );
    // Every message's lines sit inside the batch's span.
    for line in lines.iter().filter(|line| line.contains("message{")) {
        assert!(line.contains("batch{request_id=invocation-1"), "{line}");
    }
    // Ids, not personal data.
    for line in &lines {
        assert!(
            !line.contains("alice-sub") && !line.contains("bob-sub"),
            "{line}"
        );
    }
}

#[tokio::test]
async fn one_operation_id_finds_its_lines_from_the_http_request_through_the_worker() {
    let app = TestApp::spawn().await;
    let logs = Logs::default();
    let (like_id, status) = {
        let _capture = logs.capture();
        let (status, body) = app
            .call(Some("carol-sub"), Method::PUT, "/v1/posts/p1/like")
            .await;
        assert_eq!(status, StatusCode::ACCEPTED);
        let like_id = body["operation_id"].as_str().unwrap().to_owned();
        app.write(
            "admin",
            "/v1/points/grants",
            "grant-1",
            json!({"user_id": "carol-sub", "amount": 10, "point_type": "bonus"}),
        )
        .await;
        let (status, _) = app
            .write(
                "carol-sub",
                "/v1/me/points/spend",
                "spend-1",
                json!({"amount": 3}),
            )
            .await;
        app.drain().await;
        (like_id, status)
    };
    assert_eq!(status, StatusCode::ACCEPTED);
    let lines = logs.lines();
    for (operation_id, request, applied) in [
        (
            like_id.as_str(),
            "request{method=PUT path=/v1/posts/p1/like",
            "like operation",
        ),
        (
            "spend-1",
            "request{method=POST path=/v1/me/points/spend",
            "points operation",
        ),
    ] {
        let field = format!("operation_id={operation_id}");
        let found: Vec<&String> = lines.iter().filter(|l| l.contains(&field)).collect();
        assert!(
            found
                .iter()
                .any(|l| l.contains(request) && event_part(l).starts_with("accepted")),
            "no accepted line in the request's span for {operation_id}: {lines:#?}"
        );
        assert!(
            found
                .iter()
                .any(|l| l.contains("message{") && event_part(l).starts_with(applied)),
            "no {applied:?} line in the message's span for {operation_id}: {lines:#?}"
        );
    }
    for line in &lines {
        assert!(!event_part(line).contains("operation_id="), "{line}");
        if line.contains(" INFO ") {
            assert!(!line.contains("carol-sub"), "a user id at info: {line}");
        }
    }
}
