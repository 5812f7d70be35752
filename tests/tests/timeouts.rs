//! A dependency that stops answering (a proxy that accepts connections and
//! sends nothing back) costs each caller a bounded wait and an honest answer:
//! the HTTP functions answer 503 problem+json before Lambda's timeout would
//! cut them off, a retried points write then tells the truth and applies once,
//! the worker reports its messages failed, and reconcile's next run resumes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // test code: a panic is a failed check

use std::time::Duration;

use axum::http::{Method, StatusCode};
use dev_gateway::{ClientTuning, StackOptions, Template};
use serde_json::json;
use tests::stall::StallProxy;
use tests::{TestApp, test_options};

/// A world whose functions reach the emulator through a proxy that can stall.
async fn spawn_behind_proxy() -> (TestApp, StallProxy) {
    let emulator = std::env::var("AWS_ENDPOINT_URL").expect("AWS_ENDPOINT_URL");
    let proxy = StallProxy::start(&emulator).await;
    let app = TestApp::spawn_from(StackOptions {
        tuning: ClientTuning {
            endpoint: Some(proxy.endpoint()),
            ..ClientTuning::default()
        },
        // As deployed: these tests hold the deployed figures.
        timeouts: dev_gateway::function_timeouts,
        ..test_options()
    })
    .await;
    (app, proxy)
}

/// The function's `Timeout` in template.yaml: past it, Lambda stops the function
/// and API Gateway answers for it (a 503 that is not problem+json).
fn lambda_timeout(binary: &str) -> Duration {
    let function = Template::deployed()
        .unwrap()
        .function_of_binary(binary)
        .unwrap();
    Duration::from_secs(function.timeout_secs)
}

#[tokio::test]
async fn a_stalled_store_gets_http_callers_a_503_problem_before_the_lambda_timeout() {
    let (app, proxy) = spawn_behind_proxy().await;
    proxy.stall();
    for (binary, method, uri) in [
        ("like", Method::GET, "/v1/posts/p1/likes"),
        ("like", Method::PUT, "/v1/posts/p1/like"),
        ("points", Method::GET, "/v1/me/points"),
    ] {
        // `send` checks that an error is problem+json with its status.
        let answer = tokio::time::timeout(
            lambda_timeout(binary),
            app.call(Some("alice"), method.clone(), uri),
        )
        .await;
        let (status, body) =
            answer.unwrap_or_else(|_| panic!("{method} {uri} ran past the function's timeout"));
        assert_eq!(
            status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{method} {uri}: {body}"
        );
        assert_eq!(body["code"], "service_unavailable", "{body}");
    }
}

#[tokio::test]
async fn a_points_write_answered_503_by_a_stall_applies_once_when_retried_after_recovery() {
    let (app, proxy) = spawn_behind_proxy().await;
    let grant = json!({"user_id": "alice", "amount": 40, "point_type": "bonus"});
    proxy.stall();
    let stalled = tokio::time::timeout(
        lambda_timeout("points"),
        app.write("admin", "/v1/points/grants", "g-stall", grant.clone()),
    )
    .await
    .expect("an answer before the function's timeout");
    assert_eq!(stalled.0, StatusCode::SERVICE_UNAVAILABLE, "{}", stalled.1);

    proxy.resume();
    let (status, body) = app
        .write("admin", "/v1/points/grants", "g-stall", grant.clone())
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    app.drain().await;
    let (status, again) = app
        .write("admin", "/v1/points/grants", "g-stall", grant)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{again}");
    assert_eq!(again["status"], "applied", "{again}");
    app.drain().await;
    assert_eq!(app.get("alice", "/v1/me/points").await["balance"], 40);
    assert_eq!(app.audited_ledger("alice").await.len(), 1, "applied once");
}

/// The write happens, its answer is lost: Tally cannot know, answers 503, and
/// the same-key retry tells the truth and applies the grant once.
#[tokio::test]
async fn a_points_write_whose_answers_are_lost_answers_503_and_its_retry_applies_once() {
    let (app, proxy) = spawn_behind_proxy().await;
    let grant = json!({"user_id": "carol", "amount": 25, "point_type": "bonus"});
    proxy.lose_answers();
    let lost = tokio::time::timeout(
        lambda_timeout("points"),
        app.write("admin", "/v1/points/grants", "g-lost", grant.clone()),
    )
    .await
    .expect("an answer before the function's timeout");
    assert_eq!(lost.0, StatusCode::SERVICE_UNAVAILABLE, "{}", lost.1);

    proxy.resume();
    assert_eq!(
        app.status_of("admin", "g-lost").await["status"],
        "pending",
        "the record was written: the write happened"
    );
    let (status, body) = app
        .write("admin", "/v1/points/grants", "g-lost", grant.clone())
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    app.drain().await;
    assert_eq!(app.status_of("admin", "g-lost").await["status"], "applied");
    assert_eq!(app.get("carol", "/v1/me/points").await["balance"], 25);
    assert_eq!(app.audited_ledger("carol").await.len(), 1, "applied once");
}

#[tokio::test]
async fn a_stalled_worker_fails_its_messages_and_they_apply_once_after_recovery() {
    let (app, proxy) = spawn_behind_proxy().await;
    for user in ["u1", "u2", "u3"] {
        let (status, body) = app.call(Some(user), Method::PUT, "/v1/posts/p1/like").await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    }
    let grant = json!({"user_id": "bob", "amount": 5, "point_type": "bonus"});
    let (status, body) = app.write("admin", "/v1/points/grants", "g1", grant).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");

    proxy.stall();
    let likes = tokio::time::timeout(
        lambda_timeout("sqs-worker"),
        app.mapping.poll_once(&app.worker),
    )
    .await
    .expect("the worker returns before its timeout")
    .unwrap();
    assert_eq!((likes.received, likes.failed), (3, 3), "{likes:?}");
    let points = tokio::time::timeout(
        lambda_timeout("sqs-worker"),
        app.points_mapping.poll_once(&app.worker),
    )
    .await
    .expect("the worker returns before its timeout")
    .unwrap();
    assert_eq!((points.received, points.failed), (1, 1), "{points:?}");

    proxy.resume();
    tokio::time::sleep(Duration::from_millis(1100)).await; // the tests' visibility timeout
    app.drain().await;
    let count = app.get("u1", "/v1/posts/p1/likes").await;
    assert_eq!(count["count"], 3, "{count}");
    assert_eq!(app.get("bob", "/v1/me/points").await["balance"], 5);
    assert_eq!(app.audited_ledger("bob").await.len(), 1);
}

#[tokio::test]
async fn a_stalled_reconcile_run_fails_before_its_timeout_and_the_next_run_repairs() {
    let (app, proxy) = spawn_behind_proxy().await;
    for user in ["u1", "u2"] {
        app.call(Some(user), Method::PUT, "/v1/posts/p1/like").await;
    }
    app.drain().await;
    // Drift for reconcile to find: the counter edited behind Tally's back.
    tests::set_attribute(
        app.store(),
        "POST#p1",
        "COUNT",
        "like_count",
        aws_sdk_dynamodb::types::AttributeValue::N("9".to_owned()),
    )
    .await;

    proxy.stall();
    let reconciler = app.reconciler();
    let stalled = tokio::time::timeout(
        lambda_timeout("reconcile"),
        reconciler.run(time::OffsetDateTime::now_utc()),
    )
    .await
    .expect("the run ends before its timeout");
    assert!(stalled.is_err(), "{stalled:?}");

    proxy.resume();
    let report = app
        .reconciler()
        .run(time::OffsetDateTime::now_utc())
        .await
        .unwrap();
    assert_eq!(report.counters_repaired, 1, "{report:?}");
    assert_eq!(app.get("u1", "/v1/posts/p1/likes").await["count"], 2);
}

#[tokio::test]
async fn a_batch_still_stalled_at_the_invocation_deadline_is_reported_failed_whole() {
    let (app, proxy) = spawn_behind_proxy().await;
    for user in ["u1", "u2"] {
        let (status, body) = app.call(Some(user), Method::PUT, "/v1/posts/p1/like").await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    }
    let records = app
        .stack
        .likes
        .queue
        .receive(
            10,
            Duration::from_secs(1),
            "arn:aws:sqs:us-east-1:123456789012:likes",
            "us-east-1",
        )
        .await
        .unwrap();
    assert_eq!(records.len(), 2);
    let mut event = aws_lambda_events::sqs::SqsEvent::default();
    event.records = records;
    // An invocation with 4 s left: the worker keeps a quarter back, so it gives
    // the stalled batch 3 s, before a single write's own timeout (5 s) ends.
    let mut context = lambda_runtime::Context::default();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    context.deadline = (now + Duration::from_secs(4)).as_millis() as u64;
    proxy.stall();
    let response = tokio::time::timeout(
        Duration::from_secs(4),
        app.worker
            .handle(lambda_runtime::LambdaEvent::new(event, context)),
    )
    .await
    .expect("the worker returns before its deadline")
    .unwrap();
    assert_eq!(response.batch_item_failures.len(), 2);

    proxy.resume();
    tokio::time::sleep(Duration::from_millis(1100)).await; // the tests' visibility timeout
    app.drain().await;
    assert_eq!(app.get("u1", "/v1/posts/p1/likes").await["count"], 2);
}
