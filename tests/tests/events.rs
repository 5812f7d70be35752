//! Every example event in `events/` (what `cargo lambda invoke --data-file`
//! sends) run through its function's handler the way the Lambda runtime would.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // test code: a panic is a failed check

use aws_lambda_events::sqs::SqsEvent;
use axum::http::StatusCode;
use http_body_util::BodyExt as _;
use lambda_http::request::LambdaRequest;
use lambda_runtime::{Context, LambdaEvent};
use tests::TestApp;
use tower::ServiceExt as _;

/// An example event, dated yesterday: the examples were accepted on 2026-11-21,
/// and the worker refuses messages accepted more than 15 days before it runs
/// (`scripts/invoke-examples.sh` does the same).
fn event(name: &str) -> String {
    let text = std::fs::read_to_string(format!("{}/../events/{name}", env!("CARGO_MANIFEST_DIR")))
        .unwrap();
    let yesterday = time::OffsetDateTime::now_utc()
        .date()
        .previous_day()
        .unwrap();
    text.replace("2026-11-21T", &format!("{yesterday}T"))
}

/// Sends an API Gateway v2 example event to a function's router, as `lambda_http` does.
async fn invoke_http(router: axum::Router, name: &str) -> (StatusCode, serde_json::Value) {
    let event: LambdaRequest =
        serde_json::from_str(&event(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let request: lambda_http::Request = event.into();
    let response = router.oneshot(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or_default())
}

fn like_function(app: &TestApp) -> axum::Router {
    like::router(app.stack.like_api().unwrap())
}

fn points_function(app: &TestApp) -> axum::Router {
    points::router(app.stack.points_api().unwrap())
}

#[tokio::test]
async fn the_like_examples_answer_as_documented() {
    let app = TestApp::spawn().await;
    for name in ["like-put.json", "like-delete.json"] {
        let (status, body) = invoke_http(like_function(&app), name).await;
        assert_eq!(
            (status, body["status"].as_str()),
            (StatusCode::ACCEPTED, Some("accepted")),
            "{name}: {body}"
        );
    }
    let (status, body) = invoke_http(like_function(&app), "like-put.json").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    app.drain().await;
    let cases = [
        (
            "like-count.json",
            serde_json::json!({"post_id": "p1", "count": 1}),
        ),
        (
            "like-counts.json",
            serde_json::json!({"counts": {"p1": 1, "p2": 0}, "likers": {"p1": ["alice"], "p2": []}}),
        ),
        (
            "like-did-i-like.json",
            serde_json::json!({"liked": {"p1": true, "p2": false}}),
        ),
    ];
    for (name, expected) in cases {
        let (status, body) = invoke_http(like_function(&app), name).await;
        assert_eq!((status, body), (StatusCode::OK, expected), "{name}");
    }
    let (status, body) = invoke_http(like_function(&app), "like-my-likes.json").await;
    assert_eq!(
        (status, &body["items"][0]["post_id"]),
        (StatusCode::OK, &serde_json::json!("p1"))
    );
    let (status, body) = invoke_http(like_function(&app), "like-likers.json").await;
    assert_eq!(
        (status, &body["items"][0]["user_id"], &body["next_cursor"]),
        (
            StatusCode::OK,
            &serde_json::json!("alice"),
            &serde_json::Value::Null
        )
    );
}

#[tokio::test]
async fn the_points_examples_answer_as_documented() {
    let app = TestApp::spawn().await;
    let (status, body) = invoke_http(points_function(&app), "points-grant.json").await;
    assert_eq!(
        (status, body),
        (
            StatusCode::ACCEPTED,
            serde_json::json!({"operation_id": "g1", "status": "pending"})
        )
    );
    app.drain().await;
    let (status, body) = invoke_http(points_function(&app), "points-operation.json").await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("applied")),
        "{body}"
    );
    for name in ["points-spend.json", "points-transfer.json"] {
        let (status, body) = invoke_http(points_function(&app), name).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{name}: {body}");
    }
    app.drain().await;
    let (status, body) = invoke_http(points_function(&app), "points-balance.json").await;
    assert_eq!(
        (status, &body["balance"]),
        (StatusCode::OK, &serde_json::json!(50)),
        "{body}"
    );
    let (status, body) = invoke_http(points_function(&app), "points-history.json").await;
    assert_eq!(
        (status, body["items"].as_array().map(Vec::len)),
        (StatusCode::OK, Some(3)),
        "{body}"
    );
}

#[tokio::test]
async fn the_worker_examples_apply_without_failures() {
    let app = TestApp::spawn().await;
    for name in ["sqs-worker-likes.json", "sqs-worker-points.json"] {
        let batch: SqsEvent = serde_json::from_str(&event(name)).unwrap();
        let response = app
            .worker
            .handle(LambdaEvent::new(batch, Context::default()))
            .await
            .unwrap();
        assert!(response.batch_item_failures.is_empty(), "{name}");
    }
    let p1 = shared::domain::ids::PostId::parse("p1").unwrap();
    assert_eq!(app.store().like_count(&p1).await.unwrap(), 2);
    assert_eq!(app.get("alice", "/v1/me/points").await["balance"], 70);
}

#[tokio::test]
async fn the_reconcile_example_runs_a_clean_pass() {
    let app = TestApp::spawn().await;
    let _schedule: serde_json::Value =
        serde_json::from_str(&event("reconcile-schedule.json")).unwrap();
    let report = app
        .reconciler()
        .run(time::OffsetDateTime::now_utc())
        .await
        .unwrap();
    assert_eq!(report.mismatches, 0);
}
