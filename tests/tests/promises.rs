//! Promises kept under hostile input and faults (SPEC sections 2 to 5): one test
//! per way they were seen to break, against the emulator.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // test code: a panic is a failed check

use std::time::Duration as StdDuration;

use aws_sdk_dynamodb::types::AttributeValue;
use axum::http::{Method, StatusCode};
use http_body_util::BodyExt as _;
use lambda_http::request::LambdaRequest;
use reconcile::Reconciler;
use serde_json::json;
use shared::domain::ids::{OperationId, PostId, UserId};
use shared::domain::likes::{LikeAction, LikeOperation};
use shared::domain::points::{Amount, EntryKind, Grant, PointsOperation, PointsRequest};
use shared::domain::timestamp;
use shared::message::Envelope;
use shared::store::StoreError;
use tests::faults::{Fault, FaultInjector, Refusal};
use tests::{TestApp, sqs_record};
use time::{Duration, OffsetDateTime};
use tower::ServiceExt as _;

fn user(name: &str) -> UserId {
    UserId::parse(name).unwrap()
}

fn like_body(caller: &str, post: &str, at: OffsetDateTime) -> String {
    Envelope::for_like(&LikeOperation {
        operation_id: OperationId::generate(),
        user: user(caller),
        post: PostId::parse(post).unwrap(),
        action: LikeAction::Like,
        accepted_at: at,
    })
    .encode()
}

fn grant_body(id: &str, to: &str, amount: u64, point_type: &str, at: OffsetDateTime) -> String {
    Envelope::for_points(&PointsOperation {
        operation_id: OperationId::parse(id).unwrap(),
        caller: user("admin"),
        request: PointsRequest::Grant(Grant {
            user_id: user(to),
            amount: Amount::new(amount).unwrap(),
            point_type: point_type.to_owned(),
            description: None,
            reference: None,
        }),
        accepted_at: at,
    })
    .encode()
}

fn reconciler(app: &TestApp) -> Reconciler {
    app.reconciler()
}

#[tokio::test]
async fn a_like_accepted_near_year_9999_is_set_aside_and_the_likes_beside_it_apply() {
    let app = TestApp::spawn().await;
    let now = OffsetDateTime::now_utc();
    let far = time::macros::datetime!(9999-12-31 23:59:59.999999 UTC);
    for (i, body) in [
        like_body("alice", "p1", now),
        like_body("mallory", "p1", far),
        like_body("bob", "p1", now),
    ]
    .iter()
    .enumerate()
    {
        app.stack
            .likes
            .queue
            .forward(body, None, &i.to_string())
            .await
            .unwrap();
    }
    // The pump keeps going: the bad message comes back until the redrive policy
    // moves it, and the likes batched with it apply on their first delivery.
    app.drain().await;
    let count = app.get("alice", "/v1/posts/p1/likes").await;
    assert_eq!(count["count"], 2, "{count}");
    assert_eq!(app.stack.likes.dead_letters.depth().await.unwrap(), 1);
    let liked = app.get("mallory", "/v1/me/likes?post_ids=p1").await;
    assert_eq!(liked["liked"]["p1"], false);
}

#[tokio::test]
async fn a_lost_send_message_answer_still_answers_202_and_the_spend_applies_once() {
    let faults = FaultInjector::default();
    let app = TestApp::spawn_with_faults(&faults).await;
    app.write(
        "admin",
        "/v1/points/grants",
        "g1",
        json!({"user_id": "alice", "amount": 100, "point_type": "bonus"}),
    )
    .await;
    app.drain().await;
    // SQS stores the message, every attempt's answer is lost.
    faults.arm("SendMessage", Fault::LoseAnswer, 10);
    let (status, body) = app
        .write("alice", "/v1/me/points/spend", "s1", json!({"amount": 30}))
        .await;
    faults.clear();
    assert!(faults.hits(Fault::LoseAnswer) >= 1);
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["status"], "pending");
    app.drain().await;
    assert_eq!(app.status_of("alice", "s1").await["status"], "applied");
    let (status, body) = app
        .write("alice", "/v1/me/points/spend", "s1", json!({"amount": 30}))
        .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::ACCEPTED, Some("applied"))
    );
    app.drain().await;
    assert_eq!(app.get("alice", "/v1/me/points").await["balance"], 70);
    assert_eq!(app.audited_ledger("alice").await.len(), 2);
}

#[tokio::test]
async fn a_recorded_operation_whose_message_was_lost_is_redriven_by_reconcile() {
    let app = TestApp::spawn().await;
    app.write(
        "admin",
        "/v1/points/grants",
        "g1",
        json!({"user_id": "alice", "amount": 100, "point_type": "bonus"}),
    )
    .await;
    app.drain().await;
    let (status, _) = app
        .write("alice", "/v1/me/points/spend", "s1", json!({"amount": 30}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    // The message is lost (or, after contention outlasted every retry,
    // dead-lettered): take it off the queue unapplied.
    let queue = &app.stack.points.queue;
    let arn = queue.arn().await.unwrap();
    let taken = queue
        .receive(10, StdDuration::from_secs(1), &arn, "us-east-1")
        .await
        .unwrap();
    assert_eq!(taken.len(), 1);
    let handles: Vec<String> = taken.into_iter().filter_map(|m| m.receipt_handle).collect();
    queue.delete(&handles).await.unwrap();
    app.drain().await;
    assert_eq!(app.status_of("alice", "s1").await["status"], "pending");

    let now = OffsetDateTime::now_utc();
    let early = reconciler(&app)
        .run(now + Duration::minutes(1))
        .await
        .unwrap();
    assert_eq!(
        early.operations_redriven, 0,
        "within the bound a message may still be on its way"
    );
    let late = reconciler(&app)
        .run(now + Duration::minutes(16))
        .await
        .unwrap();
    assert_eq!(late.operations_redriven, 1);
    app.drain().await;
    assert_eq!(app.status_of("alice", "s1").await["status"], "applied");
    let again = reconciler(&app)
        .run(now + Duration::minutes(32))
        .await
        .unwrap();
    assert_eq!(
        again.operations_redriven, 0,
        "an applied operation leaves the outbox"
    );
    assert_eq!(app.get("alice", "/v1/me/points").await["balance"], 70);
}

#[tokio::test]
async fn a_malformed_ledger_entry_is_reported_and_the_rest_of_the_run_completes() {
    let app = TestApp::spawn().await;
    let now = OffsetDateTime::now_utc();
    let records = vec![
        sqs_record("1", &grant_body("g1", "alice", 10, "bonus", now)),
        sqs_record("2", &grant_body("g2", "bob", 10, "bonus", now)),
        sqs_record("3", &grant_body("g3", "carol", 10, "sign_in", now)),
        sqs_record("4", &like_body("dave", "p1", now)),
    ];
    assert!(app.worker.apply_batch(records).await.failed.is_empty());
    // Hand edits: alice's entry gets an amount that is not a number, bob's
    // balance is changed, p1's counter drifts.
    tests::set_attribute(
        app.store(),
        "ACCOUNT#alice",
        "ENTRY#00000000000000000001",
        "amount",
        AttributeValue::S("lots".into()),
    )
    .await;
    tests::set_attribute(
        app.store(),
        "ACCOUNT#bob",
        "STATE",
        "balance",
        AttributeValue::N("500".into()),
    )
    .await;
    tests::set_attribute(
        app.store(),
        "POST#p1",
        "COUNT",
        "like_count",
        AttributeValue::N("7".into()),
    )
    .await;

    let report = reconciler(&app)
        .run(now + Duration::days(40))
        .await
        .unwrap();
    assert_eq!(report.malformed_items, 1, "{report:?}");
    assert_eq!(report.mismatches, 1, "bob is still audited: {report:?}");
    assert_eq!(report.counters_repaired, 1, "{report:?}");
    assert_eq!(
        (report.accounts_expired, report.points_expired),
        (1, 10),
        "{report:?}"
    );
    assert_eq!(app.get("x", "/v1/posts/p1/likes").await["count"], 1);
    // Reported again next run, never rewritten.
    let again = reconciler(&app)
        .run(now + Duration::days(40))
        .await
        .unwrap();
    assert_eq!(
        (again.malformed_items, again.mismatches),
        (1, 1),
        "{again:?}"
    );
}

#[tokio::test]
async fn expired_points_are_gone_from_the_balance_and_never_spent_before_the_expiry_run() {
    let app = TestApp::spawn().await;
    let now = OffsetDateTime::now_utc();
    let then = now - Duration::days(32);
    // Granted 32 days ago (the worker ran then): the sign_in points are past due.
    let report = app
        .worker
        .apply_batch_at(
            vec![
                sqs_record("1", &grant_body("g1", "alice", 30, "sign_in", then)),
                sqs_record("2", &grant_body("g2", "alice", 50, "bonus", then)),
            ],
            then,
        )
        .await;
    assert_eq!(report.applied, 2);
    let balance = app.get("alice", "/v1/me/points").await;
    assert_eq!(balance["balance"], 50, "{balance}");
    assert_eq!(balance["expiring"], json!([]), "{balance}");

    app.write("alice", "/v1/me/points/spend", "s1", json!({"amount": 60}))
        .await;
    app.write("alice", "/v1/me/points/spend", "s2", json!({"amount": 40}))
        .await;
    app.drain().await;
    let s1 = app.status_of("alice", "s1").await;
    assert_eq!(
        (s1["status"].as_str(), s1["reason"].as_str()),
        (Some("rejected"), Some("insufficient_points"))
    );
    let s2 = app.status_of("alice", "s2").await;
    assert_eq!(s2["status"], "applied", "{s2}");
    // The spend wrote the due `expire` entry first, in its own transaction.
    let kinds: Vec<(EntryKind, i64)> = app
        .audited_ledger("alice")
        .await
        .iter()
        .map(|e| (e.kind, e.amount))
        .collect();
    assert_eq!(
        kinds,
        [
            (EntryKind::Grant, 30),
            (EntryKind::Grant, 50),
            (EntryKind::Expire, -30),
            (EntryKind::Spend, -40)
        ]
    );
    let run = reconciler(&app).run(now).await.unwrap();
    assert_eq!(run.points_expired, 0, "nothing left to expire: {run:?}");
    assert_eq!(app.get("alice", "/v1/me/points").await["balance"], 10);
}

#[tokio::test]
async fn messages_from_other_services_are_held_to_the_http_rules_and_never_hold_up_their_group() {
    let app = TestApp::spawn().await;
    let now = timestamp::format(OffsetDateTime::now_utc());
    let message = |id: &str, caller: &str, operation: serde_json::Value| {
        json!({"version": 1, "operation_id": id, "caller": caller, "accepted_at": now, "operation": operation})
            .to_string()
    };
    let queue = &app.stack.points.queue;
    let sends = [
        (
            "admin",
            message(
                "g1",
                "admin",
                json!({"type": "grant", "user_id": "alice", "amount": 100, "point_type": "bonus"}),
            ),
        ),
        (
            "alice",
            message(
                "t1",
                "alice",
                json!({"type": "transfer", "to_user_id": "alice", "amount": 10}),
            ),
        ),
        (
            "alice",
            r#"{"version":1,"caller":"alice","operation":{"type":"spend"}}"#.to_owned(),
        ),
        (
            "bob",
            message(
                "g2",
                "admin",
                json!({"type": "grant", "user_id": "bob", "amount": 5, "point_type": "bonus", "description": "x".repeat(5000)}),
            ),
        ),
        (
            "alice",
            message("s1", "alice", json!({"type": "spend", "amount": 30})),
        ),
    ];
    for (i, (group, body)) in sends.iter().enumerate() {
        queue
            .forward(body, Some(group), &format!("m{i}"))
            .await
            .unwrap();
    }
    // The grant first, so the spend behind the bad messages has points to take.
    app.points_mapping.poll_once(&app.worker).await.unwrap();
    // One receive settles everything else: nothing waits for a redelivery.
    app.points_mapping.poll_once(&app.worker).await.unwrap();
    assert_eq!(queue.depth().await.unwrap(), 0);
    assert_eq!(
        app.stack.points.dead_letters.depth().await.unwrap(),
        1,
        "the unattributable one"
    );

    let t1 = app.status_of("alice", "t1").await;
    assert_eq!(
        (t1["status"].as_str(), t1["reason"].as_str()),
        (Some("rejected"), Some("invalid_operation"))
    );
    assert!(
        t1["detail"].as_str().unwrap().contains("another user"),
        "{t1}"
    );
    let g2 = app.status_of("admin", "g2").await;
    assert_eq!(g2["reason"], "invalid_operation");
    assert!(g2["detail"].as_str().unwrap().contains("500"), "{g2}");
    assert_eq!(app.status_of("alice", "s1").await["status"], "applied");
    assert_eq!(app.get("alice", "/v1/me/points").await["balance"], 70);
    assert_eq!(app.get("bob", "/v1/me/points").await["balance"], 0);
}

/// Sends an API Gateway v2 event with these JWT claims to the points function.
async fn points_call_with_claims(
    app: &TestApp,
    claims: serde_json::Value,
    body: serde_json::Value,
) -> StatusCode {
    let event = json!({
        "version": "2.0", "routeKey": "$default", "rawPath": "/v1/points/grants", "rawQueryString": "",
        "headers": {"idempotency-key": "g-scp", "content-type": "application/json"},
        "requestContext": {
            "accountId": "1", "apiId": "a", "domainName": "d", "domainPrefix": "d", "requestId": "r",
            "routeKey": "$default", "stage": "$default", "time": "t", "timeEpoch": 0,
            "authorizer": {"jwt": {"claims": claims, "scopes": null}},
            "http": {"method": "POST", "path": "/v1/points/grants", "protocol": "HTTP/1.1", "sourceIp": "1.1.1.1", "userAgent": "t"},
        },
        "body": body.to_string(), "isBase64Encoded": false,
    });
    let event: LambdaRequest = serde_json::from_value(event).unwrap();
    let router = points::router(app.stack.points_api().unwrap());
    let response = router
        .oneshot(lambda_http::Request::from(event))
        .await
        .unwrap();
    let status = response.status();
    let _ = response.into_body().collect().await;
    status
}

#[tokio::test]
async fn subjects_from_real_identity_providers_like_hold_and_move_points() {
    let app = TestApp::spawn().await;
    let auth0 = "auth0|5f7c8ec7c33c6c004bbafe82";
    let google = "google-oauth2|108750324561234567890";
    let (status, body) = app
        .call(Some(auth0), Method::PUT, "/v1/posts/p1/like")
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (status, body) = app
        .write(
            "admin",
            "/v1/points/grants",
            "g1",
            json!({"user_id": google, "amount": 100, "point_type": "bonus"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    app.drain().await;
    let (status, body) = app
        .write(
            google,
            "/v1/me/points/transfers",
            "t1",
            json!({"to_user_id": auth0, "amount": 40}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    app.drain().await;
    assert_eq!(
        app.get(auth0, "/v1/me/likes?post_ids=p1").await["liked"]["p1"],
        true
    );
    assert_eq!(app.get(auth0, "/v1/me/points").await["balance"], 40);
    assert_eq!(app.get(google, "/v1/me/points").await["balance"], 60);
    let (status, body) = app
        .call(Some("bad#sub"), Method::GET, "/v1/me/points")
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");

    // Scopes as an `scp` array (Okta, Azure AD), however API Gateway renders it.
    let grant = json!({"user_id": "okta-user", "amount": 5, "point_type": "bonus"});
    for scp in ["[points:admin openid]", r#"["points:admin"]"#] {
        let claims = json!({"sub": "order-service", "scp": scp});
        assert_eq!(
            points_call_with_claims(&app, claims, grant.clone()).await,
            StatusCode::ACCEPTED,
            "{scp}"
        );
    }
    let claims = json!({"sub": "order-service", "scp": "[openid]"});
    assert_eq!(
        points_call_with_claims(&app, claims, grant).await,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn every_error_is_problem_json_and_forged_cursors_are_invalid_cursor() {
    let app = TestApp::spawn().await;
    // `TestApp::send` asserts problem+json with a matching status on every error.
    let big = "x".repeat(20_000);
    let (status, body) = app
        .write(
            "alice",
            "/v1/me/points/spend",
            "k",
            json!({"amount": 5, "pad": big}),
        )
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("16384"), "{body}");
    // Every route holds the limit, whether it reads a body or not.
    let (status, body) = app
        .send(
            axum::http::Request::put("/v1/posts/p1/like")
                .header("x-dev-user", "alice")
                .body(axum::body::Body::from("x".repeat(20_000)))
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    let (status, body) = app
        .send(
            axum::http::Request::post("/v1/me/points/spend")
                .header("x-dev-user", "alice")
                .header("idempotency-key", "clé")
                .body(axum::body::Body::from(r#"{"amount":5}"#))
                .unwrap(),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_idempotency_key")),
        "{body}"
    );
    for (method, uri, expected) in [
        (Method::PUT, "/v1/posts/%FF/like", StatusCode::BAD_REQUEST),
        (
            Method::GET,
            "/v1/me/points/operations/%FF%FE",
            StatusCode::BAD_REQUEST,
        ),
        (Method::GET, "/v1/nothing-here", StatusCode::NOT_FOUND),
        (
            Method::PATCH,
            "/v1/posts/p1/like",
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            Method::DELETE,
            "/v1/me/points",
            StatusCode::METHOD_NOT_ALLOWED,
        ),
    ] {
        let (status, body) = app.call(Some("alice"), method.clone(), uri).await;
        assert_eq!(status, expected, "{method} {uri}: {body}");
    }

    use base64::Engine as _;
    let forge = |value: serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
    };
    for cursor in [
        forge(json!({"t": "", "p": "", "s": ""})),
        forge(json!({"t": "x".repeat(2000), "p": "x".repeat(2000), "s": "y"})),
        forge(json!({"t": "2026-11-21T05:35:54.387363Z#p 1"})),
        "not-base64!".to_owned(),
    ] {
        let (status, body) = app
            .call(
                Some("alice"),
                Method::GET,
                &format!("/v1/me/likes?limit=5&cursor={cursor}"),
            )
            .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_cursor")),
            "{cursor}: {body}"
        );
    }
    // A well-formed cursor only ever reads the caller's own likes.
    for i in 0..3 {
        app.call(Some("bob"), Method::PUT, &format!("/v1/posts/p{i}/like"))
            .await;
    }
    app.drain().await;
    let page = app.get("bob", "/v1/me/likes?limit=2").await;
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let mine = app
        .get("alice", &format!("/v1/me/likes?limit=2&cursor={cursor}"))
        .await;
    assert_eq!(mine["items"], json!([]), "{mine}");
    let rest = app
        .get("bob", &format!("/v1/me/likes?limit=2&cursor={cursor}"))
        .await;
    assert_eq!(rest["items"].as_array().unwrap().len(), 1, "{rest}");
}

#[tokio::test]
async fn history_stays_complete_when_dynamodb_cuts_a_page_short() {
    let faults = FaultInjector::default();
    let app = TestApp::spawn_with_faults(&faults).await;
    for i in 0..5 {
        app.write(
            "admin",
            "/v1/points/grants",
            &format!("g{i}"),
            json!({"user_id": "alice", "amount": 1, "point_type": "bonus"}),
        )
        .await;
    }
    app.drain().await;
    // Every Query page ends after two items, as at DynamoDB's 1 MB limit.
    faults.arm("Query", Fault::ShortPage(2), 100);
    let mut seen = Vec::new();
    let mut uri = "/v1/me/points/history?limit=3".to_owned();
    loop {
        let page = app.get("alice", &uri).await;
        let items = page["items"].as_array().unwrap();
        seen.extend(items.iter().map(|e| e["seq"].as_u64().unwrap()));
        match page["next_cursor"].as_str() {
            Some(cursor) => uri = format!("/v1/me/points/history?limit=3&cursor={cursor}"),
            None => break,
        }
    }
    assert!(faults.hits(Fault::ShortPage(2)) >= 2);
    assert_eq!(seen, [5, 4, 3, 2, 1]);
}

#[tokio::test]
async fn an_operation_contended_through_every_retry_is_contended_and_fails_alone_for_redelivery() {
    let faults = FaultInjector::default();
    let app = TestApp::spawn_with_faults(&faults).await;
    let now = OffsetDateTime::now_utc();
    let grant = grant_body("g1", "bob", 100, "bonus", now);
    let op = Envelope::decode(&grant)
        .unwrap()
        .points_operation()
        .unwrap();
    // Another writer wins every commit of this operation.
    faults.arm(
        "TransactWriteItems",
        Fault::Refuse(Refusal::TransactionConflict),
        10_000,
    );
    let err = app.worker.points.apply(&op, now).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Contended { attempts: 10 }),
        "{err:?}"
    );
    let report = app
        .worker
        .apply_batch_at(
            vec![
                sqs_record("grant", &grant),
                sqs_record("like", &like_body("alice", "p1", now)),
            ],
            now,
        )
        .await;
    assert_eq!(report.failed, ["grant"], "{report:?}");
    assert_eq!(report.applied, 1, "the like beside it applies");
    faults.clear();
    let report = app
        .worker
        .apply_batch_at(vec![sqs_record("grant", &grant)], now)
        .await;
    assert_eq!((report.applied, report.failed.len()), (1, 0));
}

#[tokio::test]
async fn an_operation_stranded_by_transaction_conflicts_is_redriven_and_applies() {
    let faults = FaultInjector::default();
    let app = TestApp::spawn_with_faults(&faults).await;
    app.write(
        "admin",
        "/v1/points/grants",
        "g1",
        json!({"user_id": "bob", "amount": 100, "point_type": "bonus"}),
    )
    .await;
    app.drain().await;
    // Every commit conflicts with another writer, on every receive, until SQS
    // dead-letters the message: what many senders to one account can do.
    faults.arm(
        "TransactWriteItems",
        Fault::Refuse(Refusal::TransactionConflict),
        10_000,
    );
    let (status, _) = app
        .write(
            "bob",
            "/v1/me/points/transfers",
            "t1",
            json!({"to_user_id": "carol", "amount": 40}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    app.drain().await;
    faults.clear();
    assert!(faults.hits(Fault::Refuse(Refusal::TransactionConflict)) >= 3);
    assert_eq!(app.stack.points.dead_letters.depth().await.unwrap(), 1);
    assert_eq!(app.status_of("bob", "t1").await["status"], "pending");

    let later = OffsetDateTime::now_utc() + Duration::minutes(16);
    assert_eq!(
        reconciler(&app)
            .run(later)
            .await
            .unwrap()
            .operations_redriven,
        1
    );
    app.drain().await;
    assert_eq!(app.status_of("bob", "t1").await["status"], "applied");
    assert_eq!(app.get("bob", "/v1/me/points").await["balance"], 60);
    assert_eq!(app.get("carol", "/v1/me/points").await["balance"], 40);
}

#[tokio::test]
async fn a_run_out_of_time_leaves_its_work_marked_for_the_next_run() {
    let app = TestApp::spawn().await;
    let now = OffsetDateTime::now_utc();
    let records = vec![
        sqs_record("1", &grant_body("g1", "carol", 10, "sign_in", now)),
        sqs_record("2", &like_body("dave", "p1", now)),
    ];
    assert!(app.worker.apply_batch(records).await.failed.is_empty());
    tests::set_attribute(
        app.store(),
        "POST#p1",
        "COUNT",
        "like_count",
        AttributeValue::N("7".into()),
    )
    .await;
    let later = now + Duration::days(40);

    let mut hurried = reconciler(&app);
    hurried.budget = StdDuration::ZERO;
    let cut = hurried.run(later).await.unwrap();
    assert!(cut.steps_cut_short >= 3, "{cut:?}");
    assert_eq!(
        (cut.counters_repaired, cut.accounts_expired),
        (0, 0),
        "{cut:?}"
    );

    let next = reconciler(&app).run(later).await.unwrap();
    assert_eq!(next.steps_cut_short, 0, "{next:?}");
    assert_eq!(
        (next.counters_repaired, next.accounts_expired),
        (1, 1),
        "{next:?}"
    );
    assert_eq!(app.get("x", "/v1/posts/p1/likes").await["count"], 1);
}

#[tokio::test]
async fn an_accepted_operation_rejected_as_invalid_keeps_its_request_for_same_key_retries() {
    let app = TestApp::spawn().await;
    let (status, _) = app
        .write("alice", "/v1/me/points/spend", "s1", json!({"amount": 30}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let queue = &app.stack.points.queue;
    let arn = queue.arn().await.unwrap();
    let messages = queue
        .receive(10, StdDuration::from_secs(1), &arn, "us-east-1")
        .await
        .unwrap();
    // Delivered more than a year after it was accepted: refused as insane.
    let late = OffsetDateTime::now_utc() + Duration::days(400);
    let report = app.worker.apply_batch_at(messages, late).await;
    assert_eq!(report.rejected, 1, "{report:?}");
    let answer = app.status_of("alice", "s1").await;
    assert_eq!(answer["reason"], "invalid_operation", "{answer}");
    // The record still holds the request: the same key and body answer the outcome.
    let (status, body) = app
        .write("alice", "/v1/me/points/spend", "s1", json!({"amount": 30}))
        .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::ACCEPTED, Some("rejected")),
        "{body}"
    );
}

#[tokio::test]
async fn a_counter_made_by_hand_without_a_revision_is_repaired() {
    let app = TestApp::spawn().await;
    // Found by the fault simulator: an item with no `revision` could never be
    // settled, and one with no `post_id` made every batch read of counts a 503.
    tests::set_attribute(
        app.store(),
        "POST#p9",
        "COUNT",
        "like_count",
        AttributeValue::N("5".into()),
    )
    .await;
    let counts = app.get("x", "/v1/likes/counts?post_ids=p9,p1").await;
    assert_eq!(counts["counts"], json!({"p9": 5, "p1": 0}));
    let report = reconciler(&app)
        .run(OffsetDateTime::now_utc())
        .await
        .unwrap();
    assert_eq!(
        (report.counters_repaired, report.posts_busy),
        (1, 0),
        "{report:?}"
    );
    assert_eq!(app.get("x", "/v1/posts/p9/likes").await["count"], 0);
}
