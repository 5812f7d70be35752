//! The points ledger against the emulator: the documented session, idempotency,
//! bad input, races, crashes and lot order.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // test code: a panic is a failed check

use std::collections::{HashMap, HashSet};

use axum::http::{Method, StatusCode};
use dev_gateway::Fault;
use rand::Rng as _;
use rand::seq::SliceRandom as _;
use serde_json::json;
use shared::domain::ids::{OperationId, UserId};
use shared::domain::points::{Amount, Grant, PointsOperation, PointsRequest, Spend, Transfer};
use shared::message::Envelope;
use tests::{Call, TestApp, sqs_record};
use time::OffsetDateTime;

fn user(name: &str) -> UserId {
    UserId::parse(name).unwrap()
}

fn op(id: &str, caller: &str, request: PointsRequest) -> PointsOperation {
    PointsOperation {
        operation_id: OperationId::parse(id).unwrap(),
        caller: user(caller),
        request,
        accepted_at: OffsetDateTime::now_utc(),
    }
}

fn grant(to: &str, amount: u64, point_type: &str) -> PointsRequest {
    PointsRequest::Grant(Grant {
        user_id: user(to),
        amount: Amount::new(amount).unwrap(),
        point_type: point_type.to_owned(),
        description: None,
        reference: None,
    })
}

fn spend(amount: u64) -> PointsRequest {
    PointsRequest::Spend(Spend {
        amount: Amount::new(amount).unwrap(),
        description: None,
        reference: None,
    })
}

fn transfer(to: &str, amount: u64) -> PointsRequest {
    PointsRequest::Transfer(Transfer {
        to_user_id: user(to),
        amount: Amount::new(amount).unwrap(),
        description: None,
        reference: None,
    })
}

#[tokio::test]
async fn grants_spends_and_transfers_flow_end_to_end_with_a_chained_history() {
    let app = TestApp::spawn().await;
    let (status, body) = app
        .write(
            "admin",
            "/v1/points/grants",
            "g1",
            json!({"user_id": "alice", "amount": 100, "point_type": "sign_in"}),
        )
        .await;
    assert_eq!(
        (status, &body),
        (
            StatusCode::ACCEPTED,
            &json!({"operation_id": "g1", "status": "pending"})
        )
    );
    app.drain().await;

    let g1 = app.status_of("admin", "g1").await;
    assert_eq!(g1["status"], "applied", "{g1}");
    assert_eq!(g1["entry"]["kind"], "grant");
    assert_eq!(g1["entry"]["amount"], 100);
    assert_eq!(g1["entry"]["point_type"], "sign_in");
    let balance = app.get("alice", "/v1/me/points").await;
    assert_eq!(balance["balance"], 100);
    let expires_at = balance["expiring"][0]["expires_at"]
        .as_str()
        .unwrap()
        .to_owned();
    let expires = shared::domain::timestamp::parse(&expires_at).unwrap();
    let days = (expires - OffsetDateTime::now_utc()).whole_hours() as f64 / 24.0;
    assert!(
        (30.0..=31.0).contains(&days),
        "sign_in points expire 30 days on: {expires_at}"
    );
    assert_eq!(balance["expiring"][0]["amount"], 100);

    app.write(
        "alice",
        "/v1/me/points/spend",
        "s1",
        json!({"amount": 30, "description": "coffee"}),
    )
    .await;
    app.write(
        "alice",
        "/v1/me/points/transfers",
        "t1",
        json!({"to_user_id": "bob", "amount": 20}),
    )
    .await;
    app.drain().await;

    let history = app.get("alice", "/v1/me/points/history").await;
    let kinds: Vec<_> = history["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["transfer_out", "spend", "grant"]);
    let newest = &history["items"][0];
    assert_eq!(
        (
            &newest["seq"],
            &newest["amount"],
            &newest["balance_before"],
            &newest["balance_after"],
            &newest["counterparty"]
        ),
        (
            &json!(3),
            &json!(-20),
            &json!(70),
            &json!(50),
            &json!("bob")
        )
    );
    assert_eq!(history["items"][1]["description"], "coffee");
    let bob = app.get("bob", "/v1/me/points/history").await;
    assert_eq!(bob["items"][0]["kind"], "transfer_in");
    assert_eq!(bob["items"][0]["counterparty"], "alice");
    assert_eq!(bob["items"][0]["amount"], 20);
    assert_eq!(app.get("bob", "/v1/me/points").await["balance"], 20);
    app.audited_ledger("alice").await;
    app.audited_ledger("bob").await;

    // Paging the history.
    let page = app.get("alice", "/v1/me/points/history?limit=2").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let cursor = page["next_cursor"].as_str().unwrap();
    let rest = app
        .get(
            "alice",
            &format!("/v1/me/points/history?limit=2&cursor={cursor}"),
        )
        .await;
    assert_eq!(rest["items"][0]["kind"], "grant");
    assert_eq!(rest["next_cursor"], serde_json::Value::Null);
}

#[tokio::test]
async fn a_rejection_is_final_even_after_the_balance_grows() {
    let app = TestApp::spawn().await;
    app.write(
        "admin",
        "/v1/points/grants",
        "g1",
        json!({"user_id": "alice", "amount": 100, "point_type": "bonus"}),
    )
    .await;
    app.write(
        "alice",
        "/v1/me/points/spend",
        "big",
        json!({"amount": 1000}),
    )
    .await;
    app.drain().await;
    let big = app.status_of("alice", "big").await;
    assert_eq!(
        (big["status"].as_str(), big["reason"].as_str()),
        (Some("rejected"), Some("insufficient_points"))
    );
    assert_eq!(
        app.get("alice", "/v1/me/points").await["balance"],
        100,
        "nothing changed"
    );

    app.write(
        "admin",
        "/v1/points/grants",
        "g2",
        json!({"user_id": "alice", "amount": 5000, "point_type": "bonus"}),
    )
    .await;
    app.drain().await;
    let (status, body) = app
        .write(
            "alice",
            "/v1/me/points/spend",
            "big",
            json!({"amount": 1000}),
        )
        .await;
    assert_eq!(
        (status, &body),
        (
            StatusCode::ACCEPTED,
            &json!({"operation_id": "big", "status": "rejected"})
        )
    );
    app.drain().await;
    assert_eq!(app.status_of("alice", "big").await["status"], "rejected");
    assert_eq!(app.get("alice", "/v1/me/points").await["balance"], 5100);
}

#[tokio::test]
async fn idempotency_keys_replay_reject_reuse_and_are_scoped_to_the_caller() {
    let app = TestApp::spawn().await;
    for who in ["alice", "bob"] {
        app.write(
            "admin",
            "/v1/points/grants",
            &format!("g-{who}"),
            json!({"user_id": who, "amount": 100, "point_type": "bonus"}),
        )
        .await;
    }
    app.drain().await;
    let (status, first) = app
        .write("alice", "/v1/me/points/spend", "s1", json!({"amount": 30}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, replay) = app
        .write("alice", "/v1/me/points/spend", "s1", json!({"amount": 30}))
        .await;
    assert_eq!(
        (status, &replay),
        (StatusCode::ACCEPTED, &first),
        "a replay before applying answers the same"
    );
    app.drain().await;
    let (status, replay) = app
        .write("alice", "/v1/me/points/spend", "s1", json!({"amount": 30}))
        .await;
    assert_eq!(
        (status, &replay),
        (
            StatusCode::ACCEPTED,
            &json!({"operation_id": "s1", "status": "applied"})
        )
    );
    app.drain().await;
    assert_eq!(
        app.get("alice", "/v1/me/points").await["balance"],
        70,
        "applied once"
    );

    let (status, body) = app
        .write("alice", "/v1/me/points/spend", "s1", json!({"amount": 31}))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("idempotency_key_reused")
        )
    );
    let (status, body) = app
        .write(
            "alice",
            "/v1/me/points/transfers",
            "s1",
            json!({"to_user_id": "bob", "amount": 30}),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("idempotency_key_reused")
        )
    );

    let (status, body) = app
        .write("bob", "/v1/me/points/spend", "s1", json!({"amount": 10}))
        .await;
    assert_eq!(
        (status, &body),
        (
            StatusCode::ACCEPTED,
            &json!({"operation_id": "s1", "status": "pending"})
        )
    );
    app.drain().await;
    assert_eq!(app.get("bob", "/v1/me/points").await["balance"], 90);
    assert_eq!(app.get("alice", "/v1/me/points").await["balance"], 70);
    assert_eq!(app.status_of("bob", "s1").await["entry"]["amount"], -10);
    assert_eq!(app.status_of("alice", "s1").await["entry"]["amount"], -30);
    let (status, _) = app
        .call(Some("carol"), Method::GET, "/v1/me/points/operations/s1")
        .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "operations are visible to their caller only"
    );
}

#[tokio::test]
async fn bad_points_requests_answer_the_right_problem_and_enqueue_nothing() {
    let app = TestApp::spawn().await;
    let spend = "/v1/me/points/spend";
    let grants = "/v1/points/grants";
    let big = "x".repeat(17 * 1024);
    let cases: Vec<(Call<'_>, StatusCode, &str, &str)> = vec![
        (
            Call {
                user: Some("alice"),
                scopes: None,
                method: Method::POST,
                uri: grants,
                key: Some("g"),
                body: Some(json!({"user_id": "alice", "amount": 5, "point_type": "bonus"})),
            },
            StatusCode::FORBIDDEN,
            "forbidden",
            "points:admin",
        ),
        (
            Call {
                user: Some("alice"),
                scopes: Some("points:read"),
                method: Method::POST,
                uri: grants,
                key: Some("g"),
                body: Some(json!({"user_id": "alice", "amount": 5, "point_type": "bonus"})),
            },
            StatusCode::FORBIDDEN,
            "forbidden",
            "points:admin",
        ),
        (
            Call {
                user: None,
                scopes: None,
                method: Method::POST,
                uri: spend,
                key: Some("k"),
                body: Some(json!({"amount": 5})),
            },
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "identity",
        ),
        (
            Call {
                user: Some("alice"),
                scopes: None,
                method: Method::POST,
                uri: "/v1/me/points/transfers",
                key: Some("k"),
                body: Some(json!({"to_user_id": "alice", "amount": 5})),
            },
            StatusCode::BAD_REQUEST,
            "transfer_to_self",
            "another user",
        ),
        (
            Call {
                user: Some("alice"),
                scopes: None,
                method: Method::POST,
                uri: spend,
                key: None,
                body: Some(json!({"amount": 5})),
            },
            StatusCode::BAD_REQUEST,
            "idempotency_key_required",
            "Idempotency-Key",
        ),
        (
            Call {
                user: Some("alice"),
                scopes: None,
                method: Method::POST,
                uri: spend,
                key: Some("bad key"),
                body: Some(json!({"amount": 5})),
            },
            StatusCode::BAD_REQUEST,
            "invalid_idempotency_key",
            "may contain only",
        ),
        (
            Call {
                user: Some("alice"),
                scopes: None,
                method: Method::POST,
                uri: spend,
                key: Some("k"),
                body: Some(json!({"amount": 0})),
            },
            StatusCode::BAD_REQUEST,
            "amount_out_of_range",
            "got 0",
        ),
        (
            Call {
                user: Some("alice"),
                scopes: None,
                method: Method::POST,
                uri: spend,
                key: Some("k"),
                body: Some(json!({"amount": -5})),
            },
            StatusCode::BAD_REQUEST,
            "amount_out_of_range",
            "got -5",
        ),
        (
            Call {
                user: Some("alice"),
                scopes: None,
                method: Method::POST,
                uri: spend,
                key: Some("k"),
                body: Some(json!({"amount": 1_000_000_001u64})),
            },
            StatusCode::BAD_REQUEST,
            "amount_out_of_range",
            "1000000000",
        ),
        (
            Call {
                user: Some("alice"),
                scopes: None,
                method: Method::POST,
                uri: spend,
                key: Some("k"),
                body: Some(json!({"amount": 2.5})),
            },
            StatusCode::BAD_REQUEST,
            "invalid_amount",
            "whole number",
        ),
        (
            Call {
                user: Some("alice"),
                scopes: None,
                method: Method::POST,
                uri: spend,
                key: Some("k"),
                body: Some(json!({"amount": "10"})),
            },
            StatusCode::BAD_REQUEST,
            "invalid_amount",
            "a string",
        ),
        (
            Call {
                user: Some("alice"),
                scopes: None,
                method: Method::POST,
                uri: spend,
                key: Some("k"),
                body: Some(json!({})),
            },
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "missing field `amount`",
        ),
        (
            Call {
                user: Some("alice"),
                scopes: None,
                method: Method::POST,
                uri: spend,
                key: Some("k"),
                body: Some(json!({"amount": 5, "user_id": "bob"})),
            },
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "unknown field `user_id`",
        ),
        (
            Call {
                user: Some("alice"),
                scopes: None,
                method: Method::POST,
                uri: spend,
                key: Some("k"),
                body: Some(json!({"amount": 5, "description": 7})),
            },
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "description",
        ),
        (
            Call {
                user: Some("alice"),
                scopes: None,
                method: Method::POST,
                uri: spend,
                key: Some("k"),
                body: Some(json!({"amount": 5, "description": "d".repeat(501)})),
            },
            StatusCode::BAD_REQUEST,
            "description_too_long",
            "500",
        ),
        (
            Call {
                user: Some("alice"),
                scopes: None,
                method: Method::POST,
                uri: spend,
                key: Some("k"),
                body: Some(json!({"amount": 5, "pad": big})),
            },
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            "16384",
        ),
        (
            Call {
                user: Some("alice"),
                scopes: None,
                method: Method::POST,
                uri: spend,
                key: Some("k"),
                body: Some(json!([5])),
            },
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "object",
        ),
        (
            Call {
                user: Some("alice"),
                scopes: None,
                method: Method::POST,
                uri: spend,
                key: Some("k"),
                body: None,
            },
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "not valid JSON",
        ),
        (
            Call {
                user: Some("admin"),
                scopes: Some("points:admin"),
                method: Method::POST,
                uri: grants,
                key: Some("g"),
                body: Some(json!({"user_id": "alice", "amount": 5, "point_type": "gift"})),
            },
            StatusCode::BAD_REQUEST,
            "unknown_point_type",
            "sign_in",
        ),
        (
            Call {
                user: Some("admin"),
                scopes: Some("points:admin"),
                method: Method::POST,
                uri: grants,
                key: Some("g"),
                body: Some(json!({"user_id": "a b", "amount": 5, "point_type": "bonus"})),
            },
            StatusCode::BAD_REQUEST,
            "invalid_user_id",
            "user_id",
        ),
        (
            Call {
                user: Some("alice"),
                scopes: None,
                method: Method::GET,
                uri: "/v1/me/points/operations/a%20b",
                key: None,
                body: None,
            },
            StatusCode::BAD_REQUEST,
            "invalid_operation_id",
            "may contain only",
        ),
        (
            Call {
                user: Some("alice"),
                scopes: None,
                method: Method::GET,
                uri: "/v1/me/points/history?cursor=nope",
                key: None,
                body: None,
            },
            StatusCode::BAD_REQUEST,
            "invalid_cursor",
            "cursor",
        ),
        (
            Call {
                user: Some("alice"),
                scopes: None,
                method: Method::GET,
                uri: "/v1/me/points/history?limit=1000",
                key: None,
                body: None,
            },
            StatusCode::BAD_REQUEST,
            "invalid_limit",
            "limit",
        ),
        (
            Call {
                user: Some("alice"),
                scopes: None,
                method: Method::GET,
                uri: "/v1/me/points/operations/never",
                key: None,
                body: None,
            },
            StatusCode::NOT_FOUND,
            "operation_not_found",
            "no operation",
        ),
        (
            Call {
                user: Some("alice"),
                scopes: None,
                method: Method::DELETE,
                uri: "/v1/me/points",
                key: None,
                body: None,
            },
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "method",
        ),
    ];
    for (call, status, code, detail) in cases {
        let what = format!(
            "{} {} {:?}",
            call.method,
            call.uri,
            call.body
                .as_ref()
                .map(|b| b.to_string().chars().take(80).collect::<String>())
        );
        let (got, body) = app.request(call).await;
        assert_eq!(
            (got, body["code"].as_str()),
            (status, Some(code)),
            "{what}: {body}"
        );
        assert!(
            body["detail"].as_str().unwrap().contains(detail),
            "{what}: {body}"
        );
    }
    assert_eq!(
        app.stack.points.queue.depth().await.unwrap(),
        0,
        "nothing was enqueued"
    );
    let (_, body) = app
        .call(Some("alice"), Method::GET, "/v1/me/points/operations/k")
        .await;
    assert_eq!(
        body["code"], "operation_not_found",
        "no rejected request left a record"
    );
}

#[tokio::test]
async fn a_hundred_racing_spends_on_five_hundred_points_apply_exactly_fifty() {
    let app = TestApp::spawn().await;
    let setup = Envelope::for_points(&op("g", "admin", grant("racer", 500, "bonus"))).encode();
    app.worker.apply_batch(vec![sqs_record("g", &setup)]).await;
    let bodies: Vec<String> = (0..100)
        .map(|i| Envelope::for_points(&op(&format!("s{i}"), "racer", spend(10))).encode())
        .collect();
    // Every message once, a third of them twice, in random order, in concurrent batches.
    let mut deliveries: Vec<(String, String)> = bodies
        .iter()
        .enumerate()
        .map(|(i, b)| (format!("m{i}"), b.clone()))
        .collect();
    deliveries.extend(
        bodies
            .iter()
            .enumerate()
            .step_by(3)
            .map(|(i, b)| (format!("dup{i}"), b.clone())),
    );
    deliveries.shuffle(&mut rand::rng());
    let (mut applied, mut rejected, mut duplicates) = (0, 0, 0);
    while !deliveries.is_empty() {
        let batches = deliveries.chunks(10).map(|chunk| {
            let records = chunk
                .iter()
                .map(|(id, body)| sqs_record(id, body))
                .collect();
            app.worker.apply_batch(records)
        });
        let reports = futures::future::join_all(batches).await;
        let failed: HashSet<String> = reports
            .iter()
            .flat_map(|r| r.failed.iter().cloned())
            .collect();
        for report in reports {
            applied += report.applied;
            rejected += report.rejected;
            duplicates += report.duplicates;
        }
        // What failed (accounts kept moving) is redelivered, as SQS would.
        deliveries.retain(|(id, _)| failed.contains(id));
    }
    assert_eq!((applied, rejected, duplicates), (50, 50, 34));
    let entries = app.audited_ledger("racer").await;
    assert_eq!(entries.len(), 51);
    assert_eq!(
        app.store().account(&user("racer")).await.unwrap().balance,
        0
    );
}

#[tokio::test]
async fn random_transfers_with_duplicates_and_crashes_conserve_points_and_apply_once() {
    let app = TestApp::spawn().await;
    let accounts: Vec<String> = (0..10).map(|i| format!("acct{i}")).collect();
    let sqs = aws_sdk_sqs::Client::new(&tests::emulator().await);
    let send = |body: String, group: String| {
        let sqs = sqs.clone();
        let url = app.stack.points.queue.url().to_owned();
        async move {
            sqs.send_message()
                .queue_url(url)
                .message_body(body)
                .message_group_id(group)
                .message_deduplication_id(uuid::Uuid::now_v7().to_string())
                .send()
                .await
                .unwrap();
        }
    };
    for (i, account) in accounts.iter().enumerate() {
        let grant = op(&format!("g{i}"), "admin", grant(account, 100, "bonus"));
        send(Envelope::for_points(&grant).encode(), account.clone()).await;
    }
    let mut rng = rand::rng();
    let mut transfers = Vec::new();
    for i in 0..200 {
        let from = rng.random_range(0..10);
        let to = (from + rng.random_range(1..10)) % 10;
        let t = op(
            &format!("t{i}"),
            &accounts[from],
            transfer(&accounts[to], rng.random_range(1..=60)),
        );
        let body = Envelope::for_points(&t).encode();
        send(body.clone(), accounts[from].clone()).await;
        if i % 7 == 0 {
            // A duplicate that slips past FIFO deduplication (another dedup id).
            send(body, accounts[from].clone()).await;
        }
        transfers.push(t);
    }
    let mut polls = 0;
    while app.stack.points.queue.depth().await.unwrap() > 0 {
        polls += 1;
        assert!(polls < 2000, "the queue did not drain");
        let fault = if polls % 4 == 0 {
            Fault::CrashBeforeDelete
        } else {
            Fault::None
        };
        let result = app
            .points_mapping
            .poll_once_with(&app.worker, fault)
            .await
            .unwrap();
        if result.received == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
    let mut total = 0;
    let mut outs: HashMap<String, usize> = HashMap::new();
    let mut ins: HashMap<String, usize> = HashMap::new();
    for account in &accounts {
        let entries = app.audited_ledger(account).await;
        total += entries.last().map_or(0, |e| e.balance_after);
        for entry in entries {
            let counter = match entry.amount {
                a if a < 0 => &mut outs,
                _ => &mut ins,
            };
            *counter.entry(entry.operation_id.to_string()).or_default() += 1;
        }
    }
    assert_eq!(total, 1000, "points are conserved");
    let mut applied = 0;
    for t in &transfers {
        let id = t.operation_id.to_string();
        let (out, into) = (
            outs.get(&id).copied().unwrap_or(0),
            ins.get(&id).copied().unwrap_or(0),
        );
        assert!(
            out <= 1 && out == into,
            "{id}: {out} debits, {into} credits"
        );
        let record = app
            .store()
            .operation(&t.caller, &t.operation_id)
            .await
            .unwrap()
            .unwrap();
        let status = format!("{:?}", record.status);
        assert_eq!(
            status == "Applied",
            out == 1,
            "{id}: {status} with {out} entries"
        );
        assert!(status == "Applied" || status == "Rejected", "{id} settled");
        applied += out;
    }
    assert!(applied > 50, "most transfers apply: {applied}");
}

#[tokio::test]
async fn spends_take_the_soonest_expiring_lots_and_the_balance_lists_what_expires() {
    let app = TestApp::spawn().await;
    for (key, amount, point_type) in [
        ("g1", 50, "bonus"),
        ("g2", 40, "purchase"),
        ("g3", 30, "sign_in"),
    ] {
        app.write(
            "admin",
            "/v1/points/grants",
            key,
            json!({"user_id": "alice", "amount": amount, "point_type": point_type}),
        )
        .await;
    }
    app.drain().await;
    let before = app.get("alice", "/v1/me/points").await;
    let amounts: Vec<_> = before["expiring"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["amount"].clone())
        .collect();
    assert_eq!(
        amounts,
        [json!(30), json!(40)],
        "soonest first, bonus never expires: {before}"
    );
    app.write("alice", "/v1/me/points/spend", "s1", json!({"amount": 45}))
        .await;
    app.drain().await;
    let after = app.get("alice", "/v1/me/points").await;
    assert_eq!(after["balance"], 75);
    assert_eq!(
        after["expiring"],
        json!([{"amount": 25, "expires_at": before["expiring"][1]["expires_at"]}])
    );
}

#[tokio::test]
async fn a_bad_points_message_is_rejected_with_the_rule_it_broke_and_fails_nothing_beside_it() {
    let app = TestApp::spawn().await;
    let good = Envelope::for_points(&op("g1", "admin", grant("alice", 10, "bonus"))).encode();
    let unknown = Envelope::for_points(&op("g2", "admin", grant("alice", 10, "gift"))).encode();
    let zero = format!(
        r#"{{"version":1,"operation_id":"x","caller":"a","accepted_at":"{}","operation":{{"type":"spend","amount":0}}}}"#,
        shared::domain::timestamp::format(OffsetDateTime::now_utc())
    );
    let report = app
        .worker
        .apply_batch(vec![
            sqs_record("bad", &zero),
            sqs_record("unknown", &unknown),
            sqs_record("good", &good),
        ])
        .await;
    assert_eq!(report.failed, Vec::<String>::new());
    assert_eq!((report.applied, report.rejected), (1, 2));
    for (caller, id, needle) in [("admin", "g2", "gift"), ("a", "x", "amount")] {
        let record = app
            .store()
            .operation(&user(caller), &OperationId::parse(id).unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(record.reason.map(|r| r.code()), Some("invalid_operation"));
        let detail = record.detail.unwrap_or_default();
        assert!(detail.contains(needle), "{id}: {detail}");
    }
    let answer = app.status_of("a", "x").await;
    assert_eq!(answer["status"], "rejected");
    assert_eq!(answer["reason"], "invalid_operation");
    assert_eq!(app.get("alice", "/v1/me/points").await["balance"], 10);
}

#[tokio::test]
async fn a_whole_amount_written_as_a_decimal_is_the_same_request() {
    let app = TestApp::spawn().await;
    let grants = "/v1/points/grants";
    for body in [
        json!({"user_id": "alice", "amount": 100.0, "point_type": "bonus"}),
        json!({"user_id": "alice", "amount": 1e2, "point_type": "bonus"}),
        json!({"user_id": "alice", "amount": 100, "point_type": "bonus"}),
    ] {
        let (status, answer) = app.write("admin", grants, "g1", body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    }
    app.drain().await;
    assert_eq!(app.get("alice", "/v1/me/points").await["balance"], 100);
}
