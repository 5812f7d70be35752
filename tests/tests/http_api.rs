//! The like routes through the dev gateway: bad input, faults, and end to end.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // test code: a panic is a failed check

use axum::http::{Method, StatusCode};
use tests::TestApp;

#[tokio::test]
async fn bad_requests_answer_the_right_problem_and_enqueue_nothing() {
    let app = TestApp::spawn().await;
    let many: Vec<String> = (0..101).map(|i| format!("p{i}")).collect();
    let many = many.join(",");
    let long = "x".repeat(129);
    let cases: Vec<(Option<&str>, Method, String, StatusCode, &str)> = vec![
        (
            Some("alice"),
            Method::PUT,
            "/v1/posts/bad%20id/like".into(),
            StatusCode::BAD_REQUEST,
            "invalid_post_id",
        ),
        (
            Some("alice"),
            Method::DELETE,
            "/v1/posts/a$b/like".into(),
            StatusCode::BAD_REQUEST,
            "invalid_post_id",
        ),
        (
            Some("alice"),
            Method::PUT,
            format!("/v1/posts/{long}/like"),
            StatusCode::BAD_REQUEST,
            "invalid_post_id",
        ),
        (
            None,
            Method::PUT,
            "/v1/posts/p1/like".into(),
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
        ),
        (
            None,
            Method::DELETE,
            "/v1/posts/p1/like".into(),
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
        ),
        (
            None,
            Method::GET,
            "/v1/posts/p1/likes".into(),
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
        ),
        (
            Some("bad user"),
            Method::PUT,
            "/v1/posts/p1/like".into(),
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
        ),
        (
            Some("alice"),
            Method::GET,
            format!("/v1/likes/counts?post_ids={many}"),
            StatusCode::BAD_REQUEST,
            "too_many_post_ids",
        ),
        (
            Some("alice"),
            Method::GET,
            format!("/v1/me/likes?post_ids={many}"),
            StatusCode::BAD_REQUEST,
            "too_many_post_ids",
        ),
        (
            Some("alice"),
            Method::GET,
            "/v1/likes/counts".into(),
            StatusCode::BAD_REQUEST,
            "post_ids_required",
        ),
        (
            Some("alice"),
            Method::GET,
            "/v1/likes/counts?post_ids=a,b%23".into(),
            StatusCode::BAD_REQUEST,
            "invalid_post_id",
        ),
        (
            Some("alice"),
            Method::GET,
            "/v1/me/likes?limit=0".into(),
            StatusCode::BAD_REQUEST,
            "invalid_limit",
        ),
        (
            Some("alice"),
            Method::GET,
            "/v1/me/likes?limit=abc".into(),
            StatusCode::BAD_REQUEST,
            "invalid_limit",
        ),
        (
            Some("alice"),
            Method::GET,
            "/v1/me/likes?cursor=zzz".into(),
            StatusCode::BAD_REQUEST,
            "invalid_cursor",
        ),
        (
            Some("alice"),
            Method::GET,
            "/v1/me/likes?post_ids=a&limit=5".into(),
            StatusCode::BAD_REQUEST,
            "conflicting_parameters",
        ),
        (
            Some("alice"),
            Method::GET,
            "/v1/me/likes?user=bob".into(),
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            Some("alice"),
            Method::GET,
            "/v1/nothing/here".into(),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            Some("alice"),
            Method::POST,
            "/v1/posts/p1/like".into(),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
    ];
    for (user, method, uri, status, code) in cases {
        let (got, body) = app.call(user, method.clone(), &uri).await;
        assert_eq!(
            (got, body["code"].as_str()),
            (status, Some(code)),
            "{method} {uri}: {body}"
        );
        assert!(
            body["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{body}"
        );
    }
    assert_eq!(
        app.stack.likes.queue.depth().await.unwrap(),
        0,
        "nothing was enqueued"
    );
}

#[tokio::test]
async fn a_like_that_cannot_be_enqueued_is_a_5xx_without_internal_details() {
    let app = TestApp::spawn().await;
    let aws = tests::emulator().await;
    let missing_queue = format!(
        "{}/000000000000/no-such-queue",
        std::env::var("AWS_ENDPOINT_URL").unwrap()
    );
    let mut api = app.stack.like_api().unwrap();
    api.queue = shared::queue::OperationQueue::from_config(&aws, missing_queue);
    let points = app.stack.points_api().unwrap();
    let broken = TestApp {
        gateway: dev_gateway::Gateway::new(like::router(api), points::router(points)).router(),
        ..app
    };
    let (status, body) = broken
        .call(Some("alice"), Method::PUT, "/v1/posts/p1/like")
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["code"], "service_unavailable");
    assert!(!body.to_string().contains("no-such-queue"), "{body}");
}

#[tokio::test]
async fn likes_flow_from_http_through_the_queue_and_worker_back_to_http() {
    let app = TestApp::spawn().await;
    let (status, body) = app
        .call(Some("alice"), Method::PUT, "/v1/posts/p1/like")
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(body["status"], "accepted");
    assert!(body["operation_id"].as_str().is_some());
    app.call(Some("alice"), Method::PUT, "/v1/posts/p2/like")
        .await;
    app.call(Some("alice"), Method::PUT, "/v1/posts/p2/like")
        .await;
    app.call(Some("bob"), Method::PUT, "/v1/posts/p1/like")
        .await;
    app.drain().await;

    let (_, count) = app
        .call(Some("carol"), Method::GET, "/v1/posts/p1/likes")
        .await;
    assert_eq!(count, serde_json::json!({"post_id": "p1", "count": 2}));
    let (_, counts) = app
        .call(
            Some("carol"),
            Method::GET,
            "/v1/likes/counts?post_ids=p1,p2,p3",
        )
        .await;
    assert_eq!(
        counts,
        serde_json::json!({"counts": {"p1": 2, "p2": 1, "p3": 0}})
    );
    let (_, liked) = app
        .call(Some("alice"), Method::GET, "/v1/me/likes?post_ids=p1,p3")
        .await;
    assert_eq!(
        liked,
        serde_json::json!({"liked": {"p1": true, "p3": false}})
    );

    let (_, page) = app
        .call(Some("alice"), Method::GET, "/v1/me/likes?limit=1")
        .await;
    assert_eq!(page["items"][0]["post_id"], "p2", "newest first: {page}");
    let cursor = page["next_cursor"]
        .as_str()
        .expect("a second page")
        .to_owned();
    let (_, page) = app
        .call(
            Some("alice"),
            Method::GET,
            &format!("/v1/me/likes?limit=1&cursor={cursor}"),
        )
        .await;
    assert_eq!(page["items"][0]["post_id"], "p1");
    assert_eq!(page["next_cursor"], serde_json::Value::Null);

    let (status, _) = app
        .call(Some("alice"), Method::DELETE, "/v1/posts/p1/like")
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    app.call(Some("alice"), Method::DELETE, "/v1/posts/p9/like")
        .await;
    app.drain().await;
    let (_, count) = app
        .call(Some("carol"), Method::GET, "/v1/posts/p1/likes")
        .await;
    assert_eq!(count["count"], 1);
    let (_, liked) = app
        .call(Some("alice"), Method::GET, "/v1/me/likes?post_ids=p1,p2,p9")
        .await;
    assert_eq!(
        liked,
        serde_json::json!({"liked": {"p1": false, "p2": true, "p9": false}})
    );
    let (_, count) = app
        .call(Some("carol"), Method::GET, "/v1/posts/p9/likes")
        .await;
    assert_eq!(
        count["count"], 0,
        "unliking what was never liked changes nothing"
    );
}

/// On AWS the `$default` catch-all takes a browser's CORS preflight to the
/// function (template.yaml, `CorsConfiguration`): a known route answers it
/// 204, without a token, and API Gateway adds the configured CORS headers.
#[tokio::test]
async fn a_cors_preflight_of_a_known_route_is_answered_204_and_changes_nothing() {
    let app = TestApp::spawn().await;
    for uri in [
        "/v1/posts/p1/like",
        "/v1/me/points/spend",
        "/v1/points/grants",
    ] {
        let (status, _) = app.call(None, Method::OPTIONS, uri).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "OPTIONS {uri}");
    }
    let (status, body) = app.call(None, Method::OPTIONS, "/v1/nothing/here").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(app.stack.likes.queue.depth().await.unwrap(), 0);
    assert_eq!(app.stack.points.queue.depth().await.unwrap(), 0);
}
