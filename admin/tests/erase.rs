//! `tally-admin user erase`, against the emulator: what it removes, what it
//! keeps under the pseudonym, what it refuses, and a run cut short.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // test code: a panic is a failed check

use admin::Tally;
use admin::erase::{self, Refused};
use serde_json::json;
use shared::domain::erasure::{self, ErasureKey};
use shared::domain::ids::{PostId, UserId};
use shared::domain::points::EntryKind;
use shared::store::Store;
use tests::TestApp;
use tests::faults::FaultInjector;
use tests::published::Subscriber;
use time::OffsetDateTime;

mod common;

fn tally(app: &TestApp, store: Store) -> Tally {
    common::tally_with(app, store)
}

fn user(id: &str) -> UserId {
    UserId::parse(id).unwrap()
}

fn key() -> ErasureKey {
    ErasureKey::new(b"0123456789abcdef0123456789abcdef-test").unwrap()
}

async fn like(app: &TestApp, who: &str, post: &str) {
    let (status, body) = app
        .call(
            Some(who),
            axum::http::Method::PUT,
            &format!("/v1/posts/{post}/like"),
        )
        .await;
    assert_eq!(status, 202, "{body}");
}

/// gus likes two posts, has points from a grant and from hal, gave some to
/// hal, spent some, and a shop captured a hold of his; `hold_open` leaves
/// one more hold open.
async fn gus_world(app: &TestApp, gus: &str, hold_open: bool) {
    like(app, gus, "p1").await;
    like(app, gus, "p2").await;
    like(app, "hal", "p1").await;
    let steps = [
        (
            "admin",
            "/v1/points/grants",
            "g1",
            json!({"user_id": gus, "amount": 500, "point_type": "bonus", "description": format!("welcome {gus}")}),
        ),
        (
            gus,
            "/v1/me/points/transfers",
            "t1",
            json!({"to_user_id": "hal", "amount": 100, "description": format!("lunch from {gus}")}),
        ),
        (
            "hal",
            "/v1/me/points/transfers",
            "t2",
            json!({"to_user_id": gus, "amount": 30}),
        ),
        (
            gus,
            "/v1/me/points/spend",
            "s1",
            json!({"amount": 20, "description": "a hat"}),
        ),
        (
            gus,
            "/v1/me/points/holds",
            "h1",
            json!({"amount": 50, "reference": "order-1"}),
        ),
        (
            "shop",
            "/v1/points/holds/capture",
            "c1",
            json!({"user_id": gus, "hold_id": format!("{gus}-h1")}),
        ),
    ];
    for (who, uri, op_key, body) in steps {
        let (status, answer) = app
            .write(who, uri, &format!("{gus}-{op_key}"), body.clone())
            .await;
        assert_eq!(status, 202, "{uri} {answer}");
        app.drain().await;
    }
    if hold_open {
        app.write(
            gus,
            "/v1/me/points/holds",
            &format!("{gus}-h2"),
            json!({"amount": 10}),
        )
        .await;
        app.drain().await;
    }
}

/// Every item of the table with a field whose whole value is `who`, or a key
/// ending `#who`. (Free text others wrote, "lunch from gus", is theirs:
/// erasure leaves it, SPEC section 9.)
/// `tally-admin user export`'s lines.
async fn export(tally: &Tally, who: &str) -> Vec<serde_json::Value> {
    let mut exported = Vec::new();
    admin::user::export(tally, &user(who), |line| {
        exported.push(line);
        Ok(())
    })
    .await
    .unwrap();
    exported
}

async fn items_naming(app: &TestApp, who: &str) -> Vec<String> {
    let client = aws_sdk_dynamodb::Client::new(&tests::emulator().await);
    let items: Vec<_> = client
        .scan()
        .table_name(app.stack.store.table_name())
        .into_paginator()
        .items()
        .send()
        .collect::<Vec<_>>()
        .await;
    items
        .into_iter()
        .map(|item| format!("{:?}", item.unwrap()))
        .filter(|text| {
            text.contains(&format!("S(\"{who}\")")) || text.contains(&format!("#{who}\")"))
        })
        .collect()
}

#[tokio::test]
async fn erasure_unlikes_closes_and_pseudonymizes_and_a_second_run_changes_nothing() {
    let app = TestApp::spawn().await;
    let tally = tally(&app, app.stack.store.clone());
    let events = Subscriber::all(&app).await;
    gus_world(&app, "gus", true).await;
    let now = OffsetDateTime::now_utc();

    // An open hold: refused, nothing changed.
    let refused = erase::erase(&tally, &user("gus"), &key(), now)
        .await
        .unwrap_err();
    assert!(
        matches!(
            refused.downcast_ref::<Refused>(),
            Some(Refused::OpenHolds(_, 1))
        ),
        "{refused}"
    );
    assert_eq!(
        app.store()
            .like_count(&PostId::parse("p1").unwrap())
            .await
            .unwrap(),
        2
    );
    app.write(
        "gus",
        "/v1/me/points/holds/gus-h2/release",
        "gus-r2",
        json!({}),
    )
    .await;
    app.drain().await;
    let hal_before = app.audited_ledger("hal").await;
    let gus_before = app.audited_ledger("gus").await;
    // gus is on the boards, and his export lists his lines.
    app.reconciler()
        .run(OffsetDateTime::now_utc())
        .await
        .unwrap();
    let on_board =
        |board: Vec<(UserId, u64)>, who: &str| board.iter().any(|(u, _)| u.as_str() == who);
    assert!(on_board(
        app.store().board_top("all", 100).await.unwrap(),
        "gus"
    ));
    let exported = export(&tally, "gus").await;
    assert!(
        exported.iter().any(|l| l["record"] == "leaderboard"
            && l["board"] == "all"
            && l["earned"].as_u64() > Some(0)),
        "{exported:#?}"
    );

    let erased = erase::erase(&tally, &user("gus"), &key(), now)
        .await
        .unwrap();
    let pseudonym = erasure::pseudonym(&key(), &user("gus"), 1);
    assert_eq!(erased.pseudonym, pseudonym);
    assert_eq!(erased.likes_removed, 2);
    assert_eq!(erased.points_erased, 500 - 100 + 30 - 20 - 50);
    assert_eq!(
        erased.accounts_touched.len(),
        3,
        "{:?}",
        erased.accounts_touched
    ); // hal, admin, shop
    assert!(
        erased
            .audits_before
            .iter()
            .chain(&erased.audits_after)
            .all(|a| a.findings.is_empty()),
        "{erased:?}"
    );

    // Likes: counts exact, gus in no list.
    let counts = app
        .get("hal", "/v1/likes/counts?post_ids=p1,p2&likers=10")
        .await;
    assert_eq!(counts["counts"]["p1"], 1, "{counts}");
    assert_eq!(counts["counts"]["p2"], 0, "{counts}");
    assert!(!counts.to_string().contains("gus"), "{counts}");
    let mine = app.get("gus", "/v1/me/likes").await;
    assert_eq!(mine["items"], json!([]), "{mine}");
    // Points: gus has no account; the pseudonym's ledger ends with the erase entry at 0.
    assert_eq!(app.get("gus", "/v1/me/points").await["balance"], 0);
    let ledger = app.audited_ledger(pseudonym.as_str()).await;
    assert_eq!(ledger.len(), gus_before.len() + 1);
    let last = ledger.last().unwrap();
    assert_eq!(
        (last.kind, last.balance_after, last.amount),
        (EntryKind::Erase, 0, -360)
    );
    for (kept, was) in ledger.iter().zip(&gus_before) {
        assert_eq!(
            (
                kept.seq,
                kept.amount,
                kept.balance_after,
                &kept.counterparty
            ),
            (was.seq, was.amount, was.balance_after, &was.counterparty)
        );
        assert_eq!(kept.description, None, "{kept:?}");
    }
    // hal's ledger: only `counterparty` changed, to the pseudonym.
    let hal_after = app.audited_ledger("hal").await;
    assert_eq!(hal_after.len(), hal_before.len());
    for (after, before) in hal_after.iter().zip(&hal_before) {
        let mut expected = before.clone();
        if expected.counterparty.as_ref() == Some(&user("gus")) {
            expected.counterparty = Some(pseudonym.clone());
        }
        assert_eq!(after, &expected);
    }
    // What is left naming gus: the unlikes' tombstones (their TTL removes them).
    let left = items_naming(&app, "gus").await;
    assert_eq!(left.len(), 2, "{left:#?}");
    assert!(
        left.iter().all(|item| item.contains("S(\"USER#gus\")")
            && item.contains("\"liked\": Bool(false)")
            && item.contains("expires_at")),
        "{left:#?}"
    );
    let exported = export(&tally, "gus").await;
    assert_eq!(exported, Vec::<serde_json::Value>::new());

    // The stream: one Points Erased naming gus, and nothing for the moved copies.
    app.publish_events().await;
    let received = events.received().await;
    let erased_events: Vec<_> = received
        .iter()
        .filter(|e| e["detail-type"] == "Points Erased")
        .collect();
    assert_eq!(erased_events.len(), 1, "{received:#?}");
    assert_eq!(erased_events[0]["detail"]["user_id"], "gus");
    assert_eq!(erased_events[0]["detail"]["amount"], -360);
    // Nothing published ties the user to the pseudonym.
    assert!(
        !received
            .iter()
            .any(|e| e.to_string().contains(pseudonym.as_str())),
        "{received:#?}"
    );

    // Reconcile audits the pseudonym's account and finds it whole; a second erasure changes nothing.
    let report = app
        .reconciler()
        .run(OffsetDateTime::now_utc())
        .await
        .unwrap();
    assert_eq!(report.mismatches, 0);
    // gus left every board, and his pseudonym is on none.
    let all = app.store().board_top("all", 100).await.unwrap();
    assert!(
        all.iter()
            .all(|(u, _)| u.as_str() != "gus" && !u.as_str().starts_with("erased-")),
        "{all:?}"
    );
    let again = erase::erase(&tally, &user("gus"), &key(), OffsetDateTime::now_utc())
        .await
        .unwrap();
    assert_eq!(
        (
            again.likes_removed,
            again.points_erased,
            again.items_moved,
            again.mentions_renamed
        ),
        (0, 0, 0, 0),
        "{again:?}"
    );
    assert!(again.audits_after.iter().all(|a| a.findings.is_empty()));
    assert_eq!(app.audited_ledger(pseudonym.as_str()).await, ledger);

    // Points sent to the erased id open a new account; erasing it again keeps
    // it under the next pseudonym, and the first erased ledger stays as it was.
    app.write(
        "admin",
        "/v1/points/grants",
        "late-grant",
        json!({"user_id": "gus", "amount": 7, "point_type": "bonus"}),
    )
    .await;
    app.drain().await;
    let second = erase::erase(&tally, &user("gus"), &key(), OffsetDateTime::now_utc())
        .await
        .unwrap();
    assert_eq!(
        second.pseudonym,
        erasure::pseudonym(&key(), &user("gus"), 2)
    );
    assert_eq!(second.points_erased, 7);
    assert_eq!(app.audited_ledger(pseudonym.as_str()).await, ledger);
    assert_eq!(app.audited_ledger(second.pseudonym.as_str()).await.len(), 2);
    // The second ledger never had a board line to move: reconcile, which
    // audits it, puts no pseudonym on a board.
    app.reconciler()
        .run(OffsetDateTime::now_utc())
        .await
        .unwrap();
    let all = app.store().board_top("all", 100).await.unwrap();
    assert!(
        all.iter().all(|(u, _)| !u.as_str().starts_with("erased-")),
        "{all:?}"
    );
}

#[tokio::test]
async fn an_erasure_cut_short_anywhere_finishes_when_run_again() {
    let app = TestApp::spawn().await;
    let aws = tests::emulator().await;
    // A run makes about 35 DynamoDB calls before its closing reconcile:
    // cut after 4, 9, ... of them, it stops in the pending checks, the
    // reads, the unlikes, the erase entry and scan, the renames, the moves.
    for (i, calls) in [4u32, 9, 14, 19, 24, 29].into_iter().enumerate() {
        let gus = format!("gus{i}");
        gus_world(&app, &gus, false).await;
        let faults = FaultInjector::default();
        let mut config = aws_sdk_dynamodb::config::Builder::from(&aws);
        config.push_interceptor(
            aws_smithy_runtime_api::client::interceptors::SharedInterceptor::new(
                faults.interceptor(),
            ),
        );
        let crashing = Store::new(
            aws_sdk_dynamodb::Client::from_conf(config.build()),
            app.stack.store.table_name(),
        );
        faults.crash_after(calls);
        let cut = erase::erase(
            &tally(&app, crashing),
            &user(&gus),
            &key(),
            OffsetDateTime::now_utc(),
        )
        .await;
        assert!(
            faults.restart(),
            "{gus}: the run was not cut short after {calls} calls: {cut:?}"
        );
        let erased = erase::erase(
            &tally(&app, app.stack.store.clone()),
            &user(&gus),
            &key(),
            OffsetDateTime::now_utc(),
        )
        .await
        .unwrap();
        assert!(
            erased.audits_after.iter().all(|a| a.findings.is_empty()),
            "{gus}: {erased:?}"
        );
        let pseudonym = erasure::pseudonym(&key(), &user(&gus), 1);
        let ledger = app.audited_ledger(pseudonym.as_str()).await;
        assert_eq!(ledger.last().unwrap().kind, EntryKind::Erase, "{gus}");
        assert_eq!(ledger.last().unwrap().amount, -360, "{gus}");
        let left = items_naming(&app, &gus).await;
        // The two unlikes' tombstones, and nothing else.
        assert_eq!(left.len(), 2, "{gus} after {calls} calls: {left:#?}");
        assert!(
            left.iter().all(|item| item.contains("expires_at")),
            "{gus} after {calls} calls: {left:#?}"
        );
    }
    app.audited_ledger("hal").await;
    let counts = app.get("hal", "/v1/likes/counts?post_ids=p1,p2").await;
    assert_eq!(
        counts["counts"]["p1"], 1,
        "only hal's like is left: {counts}"
    );
    assert_eq!(counts["counts"]["p2"], 0, "{counts}");
}

#[tokio::test]
async fn erasure_waits_for_a_pending_operation_naming_the_user() {
    let app = TestApp::spawn().await;
    let tally = tally(&app, app.stack.store.clone());
    // Accepted, not applied: the grant is pending in admin's partition.
    app.write(
        "admin",
        "/v1/points/grants",
        "g9",
        json!({"user_id": "ivy", "amount": 5, "point_type": "bonus"}),
    )
    .await;
    let refused = erase::erase(&tally, &user("ivy"), &key(), OffsetDateTime::now_utc())
        .await
        .unwrap_err();
    assert!(
        matches!(
            refused.downcast_ref::<Refused>(),
            Some(Refused::Pending(..))
        ),
        "{refused}"
    );
    assert!(refused.to_string().contains("admin/g9"), "{refused}");
    app.drain().await;
    let erased = erase::erase(&tally, &user("ivy"), &key(), OffsetDateTime::now_utc())
        .await
        .unwrap();
    assert_eq!(erased.points_erased, 5);
}
