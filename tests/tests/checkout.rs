//! Points for checkout (SPEC section 3): holds, captures, releases, refunds and
//! adjustments, through the dev gateway, the queue and the worker, against the
//! emulator. Every condition and transaction they rely on is evaluated by it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // test code: a panic is a failed check

use std::collections::HashMap;

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};
use shared::domain::ids::{OperationId, UserId};
use shared::domain::points::{EntryKind, PointsOperation, PointsRequest};
use shared::message::Envelope;
use tests::{Call, TestApp, sqs_record};
use time::{Duration, OffsetDateTime};

fn user(name: &str) -> UserId {
    UserId::parse(name).unwrap()
}

/// A points message as another service would queue it, accepted at `at`.
fn message(id: &str, caller: &str, operation: Value, at: OffsetDateTime) -> String {
    let request: PointsRequest = serde_json::from_value(operation).unwrap();
    Envelope::for_points(&PointsOperation {
        operation_id: OperationId::parse(id).unwrap(),
        caller: user(caller),
        request,
        accepted_at: at,
    })
    .encode()
}

async fn grant(app: &TestApp, key: &str, to: &str, amount: u64, point_type: &str) {
    let (status, _) = app
        .write(
            "admin",
            "/v1/points/grants",
            key,
            json!({"user_id": to, "amount": amount, "point_type": point_type}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
}

/// Status, reason and the entry's kind and amount of one operation.
async fn outcome(app: &TestApp, caller: &str, id: &str) -> (String, Option<String>) {
    let record = app.status_of(caller, id).await;
    (
        record["status"].as_str().unwrap().to_owned(),
        record["reason"].as_str().map(str::to_owned),
    )
}

fn applied() -> (String, Option<String>) {
    ("applied".to_owned(), None)
}

fn rejected(reason: &str) -> (String, Option<String>) {
    ("rejected".to_owned(), Some(reason.to_owned()))
}

async fn balance(app: &TestApp, user: &str) -> (u64, u64, u64) {
    let shown = app.get(user, "/v1/me/points").await;
    let n = |field: &str| shown[field].as_u64().unwrap();
    (n("balance"), n("held"), n("available"))
}

#[tokio::test]
async fn a_checkout_holds_captures_part_and_refunds_it_in_two_parts() {
    let app = TestApp::spawn().await;
    grant(&app, "g1", "alice", 500, "bonus").await;
    app.drain().await;

    let (status, body) = app
        .write(
            "alice",
            "/v1/me/points/holds",
            "h1",
            json!({"amount": 300, "reference": "order-4711", "expires_in_seconds": 900}),
        )
        .await;
    assert_eq!(
        (status, body),
        (
            StatusCode::ACCEPTED,
            json!({"operation_id": "h1", "status": "pending"})
        )
    );
    app.drain().await;
    assert_eq!(balance(&app, "alice").await, (500, 300, 200));
    for (key, uri, body) in [
        ("s1", "/v1/me/points/spend", json!({"amount": 201})),
        (
            "t1",
            "/v1/me/points/transfers",
            json!({"to_user_id": "bob", "amount": 201}),
        ),
        ("h2", "/v1/me/points/holds", json!({"amount": 201})),
    ] {
        app.write("alice", uri, key, body).await;
    }
    app.drain().await;
    for key in ["s1", "t1", "h2"] {
        assert_eq!(
            outcome(&app, "alice", key).await,
            rejected("insufficient_points"),
            "{key}: held points are not available"
        );
    }

    // The order service captures 250 when payment succeeds.
    let capture = json!({"user_id": "alice", "hold_id": "h1", "amount": 250});
    app.write("shop", "/v1/points/holds/capture", "c1", capture.clone())
        .await;
    app.drain().await;
    assert_eq!(outcome(&app, "shop", "c1").await, applied());
    let entry = app.status_of("shop", "c1").await["entry"].clone();
    assert_eq!(
        (
            &entry["kind"],
            &entry["amount"],
            &entry["held_before"],
            &entry["held_after"]
        ),
        (&json!("capture"), &json!(-250), &json!(300), &json!(0))
    );
    assert_eq!(
        entry["reference"], "order-4711",
        "the capture carries the hold's reference"
    );
    assert_eq!(balance(&app, "alice").await, (250, 0, 250));
    let hold = app.status_of("alice", "h1").await;
    assert_eq!(
        (&hold["closed_by"], &hold["refundable"]),
        (&json!("c1"), &json!(250))
    );

    // Replayed under its key: the same answer; the message redelivered: applied once.
    let (status, body) = app
        .write("shop", "/v1/points/holds/capture", "c1", capture)
        .await;
    assert_eq!(
        (status, body),
        (
            StatusCode::ACCEPTED,
            json!({"operation_id": "c1", "status": "applied"})
        )
    );
    let now = OffsetDateTime::now_utc();
    let again = message(
        "c1",
        "shop",
        json!({"type": "capture", "user_id": "alice", "hold_id": "h1", "amount": 250}),
        now,
    );
    let report = app
        .worker
        .apply_batch_at(vec![sqs_record("1", &again)], now)
        .await;
    assert_eq!(report.duplicates, 1, "{report:?}");

    // Closed once: another capture or release is refused.
    app.write(
        "shop",
        "/v1/points/holds/capture",
        "c2",
        json!({"user_id": "alice", "hold_id": "h1"}),
    )
    .await;
    let (status, _) = app
        .request(Call {
            user: Some("alice"),
            scopes: None,
            method: Method::POST,
            uri: "/v1/me/points/holds/h1/release",
            key: Some("r1"),
            body: None,
        })
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "a release needs no body");
    app.drain().await;
    assert_eq!(outcome(&app, "shop", "c2").await, rejected("hold_closed"));
    assert_eq!(outcome(&app, "alice", "r1").await, rejected("hold_closed"));

    // Goods come back: 100 refunded by the hold's id, the rest by the capture's.
    app.write(
        "shop",
        "/v1/points/refunds",
        "rf1",
        json!({"user_id": "alice", "operation_id": "h1", "amount": 100, "reason": "one item returned", "reference": "rma-9"}),
    )
    .await;
    app.drain().await;
    assert_eq!(outcome(&app, "shop", "rf1").await, applied());
    let entry = app.status_of("shop", "rf1").await["entry"].clone();
    assert_eq!(
        (
            &entry["kind"],
            &entry["amount"],
            &entry["refund_of"],
            &entry["reference"],
            &entry["description"]
        ),
        (
            &json!("refund"),
            &json!(100),
            &json!("h1"),
            &json!("rma-9"),
            &json!("one item returned")
        )
    );
    app.write(
        "shop",
        "/v1/points/refunds",
        "rf2",
        json!({"user_id": "alice", "operation_id": "c1", "amount": 151}),
    )
    .await;
    app.write(
        "shop",
        "/v1/points/refunds",
        "rf3",
        json!({"user_id": "alice", "operation_id": "c1"}),
    )
    .await;
    app.write(
        "shop",
        "/v1/points/refunds",
        "rf4",
        json!({"user_id": "alice", "operation_id": "c1"}),
    )
    .await;
    app.write(
        "shop",
        "/v1/points/refunds",
        "rf5",
        json!({"user_id": "alice", "operation_id": "g1"}),
    )
    .await;
    app.write(
        "shop",
        "/v1/points/refunds",
        "rf7",
        json!({"user_id": "alice", "operation_id": "c2"}),
    )
    .await;
    app.write(
        "shop",
        "/v1/points/refunds",
        "rf6",
        json!({"user_id": "alice", "operation_id": "nothing-by-this-id"}),
    )
    .await;
    app.drain().await;
    assert_eq!(
        outcome(&app, "shop", "rf2").await,
        rejected("refund_exceeds_original")
    );
    assert_eq!(
        outcome(&app, "shop", "rf3").await,
        applied(),
        "the other 150"
    );
    assert_eq!(
        outcome(&app, "shop", "rf4").await,
        rejected("refund_exceeds_original"),
        "nothing is left to refund"
    );
    assert_eq!(
        outcome(&app, "shop", "rf5").await,
        rejected("original_not_found"),
        "a grant is admin's operation, not alice's"
    );
    assert_eq!(
        outcome(&app, "shop", "rf6").await,
        rejected("original_not_found")
    );
    assert_eq!(
        outcome(&app, "shop", "rf7").await,
        rejected("not_refundable"),
        "c2 was rejected: it took nothing (found by the simulator)"
    );
    assert_eq!(balance(&app, "alice").await, (500, 0, 500));
    assert_eq!(app.status_of("alice", "h1").await["refundable"], 0);

    let kinds: Vec<EntryKind> = app
        .audited_ledger("alice")
        .await
        .iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds,
        [
            EntryKind::Grant,
            EntryKind::Hold,
            EntryKind::Capture,
            EntryKind::Refund,
            EntryKind::Refund
        ]
    );
}

#[tokio::test]
async fn a_holder_captures_or_releases_their_own_holds() {
    let app = TestApp::spawn().await;
    grant(&app, "g1", "alice", 100, "bonus").await;
    app.drain().await;
    app.write("alice", "/v1/me/points/holds", "h1", json!({"amount": 60}))
        .await;
    app.write("alice", "/v1/me/points/holds", "h2", json!({"amount": 40}))
        .await;
    app.drain().await;
    assert_eq!(balance(&app, "alice").await, (100, 100, 0));
    app.write(
        "alice",
        "/v1/me/points/holds/h1/release",
        "r1",
        json!({"description": "abandoned checkout"}),
    )
    .await;
    // Every field of the holder's capture is optional: no body is the whole hold.
    let no_body = |key: &'static str| Call {
        user: Some("alice"),
        scopes: None,
        method: Method::POST,
        uri: "/v1/me/points/holds/h2/capture",
        key: Some(key),
        body: None,
    };
    let (status, accepted) = app.request(no_body("c1")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    // `{}` under the same key is the same request, not a reuse of the key.
    let (status, again) = app
        .write("alice", "/v1/me/points/holds/h2/capture", "c1", json!({}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{again}");
    app.drain().await;
    assert_eq!(outcome(&app, "alice", "r1").await, applied());
    assert_eq!(outcome(&app, "alice", "c1").await, applied());
    assert_eq!(balance(&app, "alice").await, (60, 0, 60));
    // The holder's own capture is refundable by its id too.
    app.write(
        "support",
        "/v1/points/refunds",
        "rf1",
        json!({"user_id": "alice", "operation_id": "c1", "amount": 40}),
    )
    .await;
    // Another user cannot close alice's hold through the holder's route: it is theirs.
    app.write("bob", "/v1/me/points/holds/h1/capture", "c9", json!({}))
        .await;
    app.drain().await;
    assert_eq!(outcome(&app, "support", "rf1").await, applied());
    assert_eq!(outcome(&app, "bob", "c9").await, rejected("hold_not_found"));
    assert_eq!(balance(&app, "alice").await, (100, 0, 100));
    app.audited_ledger("alice").await;
}

#[tokio::test]
async fn a_hold_nobody_closes_is_released_at_its_expiry_and_then_refuses_a_capture() {
    let app = TestApp::spawn().await;
    let now = OffsetDateTime::now_utc();
    let then = now - Duration::minutes(5);
    let report = app
        .worker
        .apply_batch_at(
            vec![
                sqs_record(
                    "1",
                    &message(
                        "g1",
                        "admin",
                        json!({"type": "grant", "user_id": "alice", "amount": 100, "point_type": "bonus"}),
                        then,
                    ),
                ),
                sqs_record(
                    "2",
                    &message(
                        "h1",
                        "alice",
                        json!({"type": "hold", "amount": 70, "expires_in_seconds": 60}),
                        then,
                    ),
                ),
            ],
            then,
        )
        .await;
    assert_eq!(report.applied, 2, "{report:?}");
    // Four minutes past its expiry, before anything wrote the release: gone from `held`.
    assert_eq!(balance(&app, "alice").await, (100, 0, 100));
    app.write(
        "shop",
        "/v1/points/holds/capture",
        "c1",
        json!({"user_id": "alice", "hold_id": "h1"}),
    )
    .await;
    app.drain().await;
    assert_eq!(outcome(&app, "shop", "c1").await, rejected("hold_expired"));
    // The capture's rejection wrote nothing; reconcile writes the release.
    let report = app.reconciler().run(now).await.unwrap();
    assert_eq!(report.holds_released, 1, "{report:?}");
    let entries = app.audited_ledger("alice").await;
    let release = entries.last().unwrap();
    assert_eq!(
        (
            release.kind,
            release.amount,
            release.held_before,
            release.held_after,
            release.operation_id.as_str()
        ),
        (EntryKind::Release, 0, 70, 0, "h1")
    );
    let again = app
        .reconciler()
        .run(now + Duration::minutes(1))
        .await
        .unwrap();
    assert_eq!(again.holds_released, 0, "released once");
    let released = app.status_of("shop", "c1").await;
    assert_eq!(released["reason"], "hold_expired");
}

#[tokio::test]
async fn a_refund_gives_back_expired_lots_with_their_own_expiry_so_they_expire_again() {
    let app = TestApp::spawn().await;
    let now = OffsetDateTime::now_utc();
    let granted = now - Duration::days(40);
    let spent = now - Duration::days(39);
    for (at, body) in [
        (
            granted,
            message(
                "g1",
                "admin",
                json!({"type": "grant", "user_id": "alice", "amount": 30, "point_type": "sign_in"}),
                granted,
            ),
        ),
        (
            granted,
            message(
                "g2",
                "admin",
                json!({"type": "grant", "user_id": "alice", "amount": 50, "point_type": "bonus"}),
                granted,
            ),
        ),
        (
            spent,
            message("s1", "alice", json!({"type": "spend", "amount": 40}), spent),
        ),
    ] {
        let report = app
            .worker
            .apply_batch_at(vec![sqs_record("1", &body)], at)
            .await;
        assert_eq!(report.applied, 1, "{report:?}");
    }
    assert_eq!(balance(&app, "alice").await, (40, 0, 40));
    assert_eq!(app.status_of("alice", "s1").await["refundable"], 40);
    app.write(
        "shop",
        "/v1/points/refunds",
        "rf1",
        json!({"user_id": "alice", "operation_id": "s1"}),
    )
    .await;
    app.drain().await;
    assert_eq!(outcome(&app, "shop", "rf1").await, applied());
    // The 10 bonus points come back to stay; the 30 sign_in points had expired
    // nine days ago, so they come back and expire at once.
    let entries = app.audited_ledger("alice").await;
    let tail: Vec<(EntryKind, i64)> = entries[3..].iter().map(|e| (e.kind, e.amount)).collect();
    assert_eq!(tail, [(EntryKind::Refund, 40), (EntryKind::Expire, -30)]);
    assert_eq!(balance(&app, "alice").await, (50, 0, 50));
}

#[tokio::test]
async fn adjustments_need_a_reason_and_never_take_a_balance_below_zero() {
    let app = TestApp::spawn().await;
    let adjust = |key: &'static str, body: Value| {
        let app = &app;
        async move {
            app.write("support", "/v1/points/adjustments", key, body)
                .await
        }
    };
    let (status, _) = adjust(
        "a1",
        json!({"user_id": "bob", "amount": 100, "reason": "ticket 12: missing reward", "point_type": "purchase", "reference": "ticket-12"}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    adjust(
        "a2",
        json!({"user_id": "bob", "amount": -40, "reason": "ticket 13: double reward"}),
    )
    .await;
    adjust(
        "a3",
        json!({"user_id": "bob", "amount": -61, "reason": "ticket 14"}),
    )
    .await;
    app.drain().await;
    assert_eq!(outcome(&app, "support", "a1").await, applied());
    assert_eq!(outcome(&app, "support", "a2").await, applied());
    assert_eq!(
        outcome(&app, "support", "a3").await,
        rejected("insufficient_points")
    );
    let entries = app.audited_ledger("bob").await;
    assert_eq!(
        entries
            .iter()
            .map(|e| (e.kind, e.amount, e.description.clone().unwrap_or_default()))
            .collect::<Vec<_>>(),
        [
            (
                EntryKind::Adjust,
                100,
                "ticket 12: missing reward".to_owned()
            ),
            (
                EntryKind::Adjust,
                -40,
                "ticket 13: double reward".to_owned()
            )
        ]
    );
    assert_eq!(entries[0].point_type.as_deref(), Some("purchase"));
    assert_eq!(
        entries[0].reference.as_ref().map(|r| r.as_str()),
        Some("ticket-12")
    );
    let shown = app.get("bob", "/v1/me/points").await;
    assert_eq!(shown["balance"], 60);
    assert_eq!(shown["expiring"][0]["amount"], 60, "purchase points expire");

    for (body, code) in [
        (json!({"user_id": "bob", "amount": 5}), "reason_required"),
        (
            json!({"user_id": "bob", "amount": 5, "reason": "  "}),
            "reason_required",
        ),
        (
            json!({"user_id": "bob", "amount": 0, "reason": "x"}),
            "amount_out_of_range",
        ),
        (
            json!({"user_id": "bob", "amount": -5, "reason": "x", "point_type": "bonus"}),
            "point_type_on_debit",
        ),
        (
            json!({"user_id": "bob", "amount": 5, "reason": "x", "point_type": "gift"}),
            "unknown_point_type",
        ),
    ] {
        let (status, problem) = adjust("bad", body.clone()).await;
        assert_eq!(
            (status, problem["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some(code)),
            "{body}"
        );
    }
    let (status, problem) = app
        .request(Call {
            user: Some("bob"),
            scopes: None,
            method: Method::POST,
            uri: "/v1/points/adjustments",
            key: Some("mine"),
            body: Some(json!({"user_id": "bob", "amount": 1000, "reason": "I deserve it"})),
        })
        .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden"))
    );
}

#[tokio::test]
async fn every_new_bad_input_is_a_precise_problem_and_enqueues_nothing() {
    let app = TestApp::spawn().await;
    let long = "x".repeat(501);
    let cases: Vec<(&str, &str, Option<Value>, &str)> = vec![
        (
            "alice",
            "/v1/me/points/holds",
            Some(json!({"amount": 10, "expires_in_seconds": 59})),
            "expires_in_out_of_range",
        ),
        (
            "alice",
            "/v1/me/points/holds",
            Some(json!({"amount": 10, "expires_in_seconds": 604801})),
            "expires_in_out_of_range",
        ),
        (
            "alice",
            "/v1/me/points/holds",
            Some(json!({"amount": 10, "expires_in_seconds": -1})),
            "invalid_body",
        ),
        (
            "alice",
            "/v1/me/points/holds",
            Some(json!({"amount": 0})),
            "amount_out_of_range",
        ),
        (
            "alice",
            "/v1/me/points/holds",
            Some(json!({"amount": 10, "reference": "order 4711"})),
            "invalid_reference",
        ),
        (
            "alice",
            "/v1/me/points/holds",
            Some(json!({"amount": 10, "description": long})),
            "description_too_long",
        ),
        (
            "alice",
            "/v1/me/points/spend",
            Some(json!({"amount": 10, "reference": ""})),
            "invalid_reference",
        ),
        (
            "alice",
            "/v1/me/points/holds/a%20b/capture",
            Some(json!({})),
            "invalid_hold_id",
        ),
        (
            "alice",
            "/v1/me/points/holds/h1/capture",
            Some(json!({"amount": 2.5})),
            "invalid_amount",
        ),
        (
            "alice",
            "/v1/me/points/holds/h1/capture",
            Some(json!({"user_id": "bob"})),
            "invalid_body",
        ),
        (
            "alice",
            "/v1/me/points/holds/h1/release",
            Some(json!({"amount": 5})),
            "invalid_body",
        ),
        (
            "shop",
            "/v1/points/holds/capture",
            Some(json!({"hold_id": "h1"})),
            "invalid_body",
        ),
        (
            "shop",
            "/v1/points/holds/capture",
            Some(json!({"user_id": "alice", "hold_id": "h 1"})),
            "invalid_hold_id",
        ),
        (
            "shop",
            "/v1/points/holds/release",
            Some(json!({"user_id": "al ice", "hold_id": "h1"})),
            "invalid_user_id",
        ),
        (
            "shop",
            "/v1/points/refunds",
            Some(json!({"user_id": "alice", "operation_id": "s/1"})),
            "invalid_operation_id",
        ),
        (
            "shop",
            "/v1/points/refunds",
            Some(json!({"user_id": "alice", "operation_id": "s1", "amount": -3})),
            "amount_out_of_range",
        ),
        (
            "shop",
            "/v1/points/refunds",
            Some(json!({"user_id": "alice", "operation_id": "s1", "reason": long})),
            "reason_too_long",
        ),
        (
            "shop",
            "/v1/points/adjustments",
            Some(json!({"user_id": "alice", "amount": 1000000001, "reason": "x"})),
            "amount_out_of_range",
        ),
    ];
    for (caller, uri, body, code) in cases {
        let scopes = uri.starts_with("/v1/points/").then_some("points:admin");
        let (status, problem) = app
            .request(Call {
                user: Some(caller),
                scopes,
                method: Method::POST,
                uri,
                key: Some("k1"),
                body: body.clone(),
            })
            .await;
        assert_eq!(
            (status, problem["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some(code)),
            "{uri} {body:?}: {problem}"
        );
    }
    for uri in [
        "/v1/points/holds/capture",
        "/v1/points/holds/release",
        "/v1/points/refunds",
    ] {
        let (status, _) = app
            .request(Call {
                user: Some("alice"),
                scopes: None,
                method: Method::POST,
                uri,
                key: Some("k2"),
                body: Some(json!({"user_id": "bob", "hold_id": "h1", "operation_id": "s1"})),
            })
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{uri}");
    }
    assert_eq!(
        app.stack.points.queue.depth().await.unwrap(),
        0,
        "nothing was queued"
    );
    for caller in ["alice", "shop"] {
        let (status, _) = app
            .call(Some(caller), Method::GET, "/v1/me/points/operations/k1")
            .await;
        assert_eq!(
            status,
            StatusCode::NOT_FOUND,
            "nothing was recorded for {caller}"
        );
    }
}

#[tokio::test]
async fn fifty_holds_and_spends_racing_on_one_account_never_overdraw_it() {
    let app = TestApp::spawn().await;
    grant(&app, "g1", "alice", 1000, "bonus").await;
    app.drain().await;
    // 50 writes accepted at once; then applied all at once, out of queue order,
    // so every commit races the others on the account's `seq` condition.
    let writes = (0..50).map(|i| {
        let app = &app;
        async move {
            let (uri, amount) = if i % 2 == 0 {
                ("/v1/me/points/holds", 30 + i * 3)
            } else {
                ("/v1/me/points/spend", 20 + i * 2)
            };
            let (status, _) = app
                .write("alice", uri, &format!("w{i}"), json!({"amount": amount}))
                .await;
            assert_eq!(status, StatusCode::ACCEPTED);
            (format!("w{i}"), uri.ends_with("holds"), amount)
        }
    });
    let accepted = futures::future::join_all(writes).await;
    let mut pending: Vec<PointsOperation> = Vec::new();
    for (key, _, _) in &accepted {
        let record = app
            .store()
            .operation(&user("alice"), &OperationId::parse(key.clone()).unwrap())
            .await
            .unwrap()
            .unwrap();
        pending.push(record.operation().unwrap());
    }
    let now = OffsetDateTime::now_utc();
    // Like SQS redelivering what failed, until every operation settled.
    for _round in 0..20 {
        if pending.is_empty() {
            break;
        }
        let results =
            futures::future::join_all(pending.iter().map(|op| app.worker.points.apply(op, now)))
                .await;
        pending = pending
            .into_iter()
            .zip(results)
            .filter_map(|(op, result)| result.is_err().then_some(op))
            .collect();
    }
    assert!(pending.is_empty(), "{} never settled", pending.len());
    // The queued copies are redeliveries now: they change nothing.
    app.drain().await;

    let mut held = 0;
    let mut spent = 0;
    let mut outcomes: HashMap<&str, usize> = HashMap::new();
    for (key, is_hold, amount) in &accepted {
        let (status, reason) = outcome(&app, "alice", key).await;
        match (status.as_str(), reason.as_deref()) {
            ("applied", None) if *is_hold => held += amount,
            ("applied", None) => spent += amount,
            ("rejected", Some("insufficient_points")) => {}
            other => panic!("{key}: {other:?}"),
        }
        *outcomes
            .entry(if status == "applied" {
                "applied"
            } else {
                "rejected"
            })
            .or_default() += 1;
    }
    assert!(
        outcomes["applied"] > 0 && outcomes["rejected"] > 0,
        "{outcomes:?}: the race was real"
    );
    let (balance, shown_held, available) = balance(&app, "alice").await;
    assert_eq!((balance, shown_held), (1000 - spent, held));
    assert_eq!(
        available,
        balance - shown_held,
        "never below zero counting holds"
    );
    app.audited_ledger("alice").await;
}

#[tokio::test]
async fn a_capture_whose_hold_is_still_pending_applies_the_hold_first() {
    let app = TestApp::spawn().await;
    grant(&app, "g1", "alice", 100, "bonus").await;
    app.drain().await;
    // The hold was recorded (202) but its message is lost: only reconcile's
    // re-drive, 15 minutes on, would queue it. The capture arrives first.
    let now = OffsetDateTime::now_utc();
    let hold = PointsOperation {
        operation_id: OperationId::parse("h1").unwrap(),
        caller: user("alice"),
        request: serde_json::from_value(json!({"type": "hold", "amount": 40})).unwrap(),
        accepted_at: now,
    };
    app.store().record_operation(&hold).await.unwrap();
    let capture = message(
        "c1",
        "shop",
        json!({"type": "capture", "user_id": "alice", "hold_id": "h1", "amount": 30}),
        now,
    );
    let report = app
        .worker
        .apply_batch_at(vec![sqs_record("1", &capture)], now)
        .await;
    assert_eq!(report.applied, 1, "{report:?}");
    assert_eq!(outcome(&app, "alice", "h1").await, applied());
    assert_eq!(outcome(&app, "shop", "c1").await, applied());
    assert_eq!(balance(&app, "alice").await, (70, 0, 70));
    let kinds: Vec<EntryKind> = app
        .audited_ledger("alice")
        .await
        .iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds,
        [EntryKind::Grant, EntryKind::Hold, EntryKind::Capture]
    );
}

#[tokio::test]
async fn a_refund_names_the_refunding_services_capture_before_a_users_record_of_the_same_id() {
    let app = TestApp::spawn().await;
    grant(&app, "g1", "alice", 1000, "bonus").await;
    app.drain().await;
    // alice spends 500 under the key the shop will use for its capture.
    app.write(
        "alice",
        "/v1/me/points/spend",
        "order-42",
        json!({"amount": 500}),
    )
    .await;
    app.write("alice", "/v1/me/points/holds", "h1", json!({"amount": 100}))
        .await;
    app.drain().await;
    app.write(
        "shop",
        "/v1/points/holds/capture",
        "order-42",
        json!({"user_id": "alice", "hold_id": "h1", "amount": 60}),
    )
    .await;
    app.drain().await;
    app.write(
        "shop",
        "/v1/points/refunds",
        "rf1",
        json!({"user_id": "alice", "operation_id": "order-42"}),
    )
    .await;
    app.drain().await;
    let refund = app.status_of("shop", "rf1").await;
    assert_eq!(
        refund["entry"]["amount"], 60,
        "the shop's capture, not alice's spend: {refund}"
    );
    assert_eq!(app.status_of("alice", "order-42").await["refundable"], 500);
    assert_eq!(app.status_of("alice", "h1").await["refundable"], 0);
}

#[tokio::test]
async fn a_refund_of_a_spend_still_pending_applies_the_spend_first() {
    let app = TestApp::spawn().await;
    grant(&app, "g1", "alice", 100, "bonus").await;
    app.drain().await;
    let now = OffsetDateTime::now_utc();
    let spend = PointsOperation {
        operation_id: OperationId::parse("s1").unwrap(),
        caller: user("alice"),
        request: serde_json::from_value(json!({"type": "spend", "amount": 40})).unwrap(),
        accepted_at: now,
    };
    app.store().record_operation(&spend).await.unwrap();
    let refund = message(
        "rf1",
        "shop",
        json!({"type": "refund", "user_id": "alice", "operation_id": "s1", "amount": 10}),
        now,
    );
    let report = app
        .worker
        .apply_batch_at(vec![sqs_record("1", &refund)], now)
        .await;
    assert_eq!(report.applied, 1, "{report:?}");
    assert_eq!(outcome(&app, "alice", "s1").await, applied());
    assert_eq!(outcome(&app, "shop", "rf1").await, applied());
    assert_eq!(balance(&app, "alice").await, (70, 0, 70));
    app.audited_ledger("alice").await;
}

#[tokio::test]
async fn a_capture_or_refund_naming_its_own_id_is_rejected_not_applied_to_itself() {
    let app = TestApp::spawn().await;
    grant(&app, "g1", "alice", 100, "bonus").await;
    app.drain().await;
    // Found by schemathesis: a capture whose hold id is its own key.
    app.write("alice", "/v1/me/points/holds/x1/capture", "x1", json!({}))
        .await;
    app.write(
        "shop",
        "/v1/points/refunds",
        "x2",
        json!({"user_id": "shop", "operation_id": "x2"}),
    )
    .await;
    app.drain().await;
    assert_eq!(
        outcome(&app, "alice", "x1").await,
        rejected("hold_not_found")
    );
    assert_eq!(
        outcome(&app, "shop", "x2").await,
        rejected("not_refundable")
    );
}
