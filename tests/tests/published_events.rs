//! Events for other services (SPEC section 8), end to end against the
//! emulator: writes through the HTTP API and the worker, the table's stream
//! read by the events function as the dev gateway plays Lambda's mapping,
//! published to the world's bus, delivered by real EventBridge rules and
//! patterns to a queue, and each checked against its JSON Schema.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // test code: a panic is a failed check

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_dynamodb::types::AttributeValue;
use axum::http::{Method, StatusCode};
use dev_gateway::StreamFault;
use serde_json::{Value, json};
use shared::domain::events;
use tests::TestApp;
use tests::faults::{Fault, FaultInjector, Refusal};
use tests::published::{Subscriber, by_id, schema_path};
use time::{Duration, OffsetDateTime};

async fn like(app: &TestApp, user: &str, post: &str, method: Method) {
    let (status, body) = app
        .call(Some(user), method, &format!("/v1/posts/{post}/like"))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
}

async fn settle(app: &TestApp) {
    app.drain().await;
    app.publish_events().await;
}

fn of_type<'a>(events: &'a [Value], detail_type: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|event| event["detail-type"] == detail_type)
        .collect()
}

#[test]
fn every_event_tally_publishes_has_a_schema() {
    for (_, detail_type) in events::ALL {
        let path = schema_path(detail_type);
        let schema: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let validator = jsonschema::validator_for(&schema).unwrap();
        // The schema's own example is an event it accepts, and no other type's.
        for example in schema["examples"].as_array().expect("an example") {
            assert!(validator.is_valid(example), "{}", path.display());
            let mut other = example.clone();
            other["detail-type"] = json!("Something Else");
            assert!(!validator.is_valid(&other), "{}", path.display());
        }
    }
}

/// Every kind of event, from what really causes it, received through a rule.
#[tokio::test]
async fn each_event_is_published_once_through_a_rule_with_the_content_it_reports() {
    let app = TestApp::spawn().await;
    let all = Subscriber::all(&app).await;

    // Likes: a like, a duplicate, an unlike.
    like(&app, "alice", "p1", Method::PUT).await;
    settle(&app).await;
    like(&app, "alice", "p1", Method::PUT).await;
    like(&app, "bob", "p1", Method::PUT).await;
    settle(&app).await;
    like(&app, "alice", "p1", Method::DELETE).await;
    settle(&app).await;

    // Points: a grant of expiring points, a transfer, a rejected spend, a hold.
    app.write(
        "admin",
        "/v1/points/grants",
        "g1",
        json!({"user_id": "carol", "amount": 100, "point_type": "sign_in", "reference": "welcome"}),
    )
    .await;
    settle(&app).await;
    app.write(
        "carol",
        "/v1/me/points/transfers",
        "t1",
        json!({"to_user_id": "dave", "amount": 30}),
    )
    .await;
    app.write("dave", "/v1/me/points/spend", "s1", json!({"amount": 31}))
        .await;
    app.write(
        "carol",
        "/v1/me/points/holds",
        "h1",
        json!({"amount": 20, "expires_in_seconds": 60, "reference": "order-1"}),
    )
    .await;
    app.write("carol", "/v1/me/points/holds", "h2", json!({"amount": 5}))
        .await;
    settle(&app).await;
    // The shop releases h2 under the hold's own id as its key: a release, not an expiry.
    app.write(
        "shop",
        "/v1/points/holds/release",
        "h2",
        json!({"user_id": "carol", "hold_id": "h2"}),
    )
    .await;
    settle(&app).await;
    // A day on, the hold has expired; 31 days on, the sign-in points.
    let now = OffsetDateTime::now_utc();
    app.reconciler().run(now + Duration::days(1)).await.unwrap();
    app.reconciler()
        .run(now + Duration::days(31))
        .await
        .unwrap();
    // Damage only reconcile sees: an edited balance, a malformed counter.
    tests::set_attribute(
        app.store(),
        "ACCOUNT#dave",
        "STATE",
        "balance",
        AttributeValue::N("999".to_owned()),
    )
    .await;
    tests::set_attribute(
        app.store(),
        "POST#p 9",
        "COUNT",
        "like_count",
        AttributeValue::N("1".to_owned()),
    )
    .await;
    let report = app.reconciler().run(now + Duration::days(31)).await;
    let report = report.unwrap();
    assert!(
        report.mismatches >= 1 && report.malformed_items >= 1,
        "{report:?}"
    );
    app.publish_events().await;

    let received = all.received().await;
    let seen = by_id(&received);
    assert_eq!(seen.len(), received.len(), "no event twice here");
    let types: BTreeSet<&str> = received
        .iter()
        .map(|e| e["detail-type"].as_str().unwrap())
        .collect();
    // `Points Erased`'s cause is an operator's `tally-admin user erase`: its
    // test (admin/tests/erase.rs) receives it through a rule like this one.
    let every: BTreeSet<&str> = events::ALL
        .iter()
        .map(|(_, t)| *t)
        .filter(|t| *t != events::POINTS_ERASED)
        .collect();
    assert_eq!(types, every, "every kind of event, from its real cause");

    let added = of_type(&received, events::LIKE_ADDED);
    let who: BTreeSet<&str> = added
        .iter()
        .map(|e| e["detail"]["user_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        (added.len(), who),
        (2, BTreeSet::from(["alice", "bob"])),
        "the duplicate like flipped nothing"
    );
    let removed = of_type(&received, events::LIKE_REMOVED);
    assert_eq!(removed.len(), 1);
    assert_eq!(removed[0]["detail"]["user_id"], "alice");
    assert_eq!(removed[0]["source"], events::LIKES_SOURCE);
    let counts: Vec<i64> = of_type(&received, events::LIKE_COUNT_CHANGED)
        .iter()
        .filter(|e| e["detail"]["post_id"] == "p1")
        .map(|e| e["detail"]["count"].as_i64().unwrap())
        .collect();
    assert_eq!(counts, vec![1, 2, 1], "one per batch that moved the count");

    let settled: BTreeMap<(&str, &str), &Value> =
        of_type(&received, events::POINTS_OPERATION_SETTLED)
            .into_iter()
            .map(|e| {
                let detail = &e["detail"];
                let caller = detail["caller"].as_str().unwrap();
                ((caller, detail["operation_id"].as_str().unwrap()), detail)
            })
            .collect();
    assert_eq!(
        settled.keys().map(|(_, id)| *id).collect::<Vec<_>>(),
        vec!["g1", "h1", "h2", "t1", "s1", "h2"]
    );
    let settled: BTreeMap<&str, &Value> = settled
        .into_iter()
        .filter(|((caller, _), _)| *caller != "shop")
        .map(|((_, id), detail)| (id, detail))
        .collect();
    assert_eq!(settled["g1"]["reference"], "welcome");
    assert_eq!(
        settled["t1"]["entries"],
        json!([
            {"user_id": "carol", "seq": 2, "kind": "transfer_out", "amount": -30, "balance_after": 70, "held_after": 0},
            {"user_id": "dave", "seq": 1, "kind": "transfer_in", "amount": 30, "balance_after": 30, "held_after": 0},
        ]),
        "a transfer reports both sides"
    );
    assert_eq!(
        (
            &settled["s1"]["status"],
            &settled["s1"]["reason"],
            &settled["s1"]["entries"]
        ),
        (
            &json!("rejected"),
            &json!("insufficient_points"),
            &json!([])
        )
    );
    let hold_expired = of_type(&received, events::HOLD_EXPIRED);
    assert_eq!(
        hold_expired.len(),
        1,
        "the shop's release of h2 is no expiry"
    );
    assert_eq!(
        (
            &hold_expired[0]["detail"]["hold_id"],
            &hold_expired[0]["detail"]["released"],
            &hold_expired[0]["detail"]["reference"]
        ),
        (&json!("h1"), &json!(20), &json!("order-1"))
    );
    // The sign-in points expire where they are: carol's 70, and the 30 she gave dave.
    let expired: BTreeMap<&str, i64> = of_type(&received, events::POINTS_EXPIRED)
        .iter()
        .map(|e| {
            (
                e["detail"]["user_id"].as_str().unwrap(),
                e["detail"]["amount"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(expired, BTreeMap::from([("carol", -70), ("dave", -30)]));
    let mismatch = of_type(&received, events::LEDGER_MISMATCH_FOUND);
    assert_eq!(mismatch[0]["detail"]["user_id"], "dave");
    let malformed = of_type(&received, events::MALFORMED_ITEM_FOUND);
    assert_eq!(malformed[0]["detail"]["key"], "POST#p 9/COUNT");

    // Nothing more: a stream read again publishes nothing new.
    app.publish_events().await;
    assert!(all.received().await.is_empty());
}

/// Each account's points events, ordered by `seq`, replay to its balance.
#[tokio::test]
async fn an_accounts_events_ordered_by_seq_replay_to_its_balance() {
    let app = TestApp::spawn().await;
    let points =
        Subscriber::with_pattern(&app, "points", json!({"source": [events::POINTS_SOURCE]})).await;
    app.write(
        "admin",
        "/v1/points/grants",
        "g1",
        json!({"user_id": "erin", "amount": 50, "point_type": "bonus"}),
    )
    .await;
    settle(&app).await;
    for (i, amount) in [5, 7, 100, 9].iter().enumerate() {
        app.write(
            "erin",
            "/v1/me/points/spend",
            &format!("s{i}"),
            json!({"amount": amount}),
        )
        .await;
    }
    app.write(
        "erin",
        "/v1/me/points/transfers",
        "t1",
        json!({"to_user_id": "fay", "amount": 4}),
    )
    .await;
    settle(&app).await;
    let received = points.received().await;
    let mut entries: BTreeMap<String, BTreeMap<u64, Value>> = BTreeMap::new();
    for event in &received {
        for entry in event["detail"]["entries"].as_array().into_iter().flatten() {
            entries
                .entry(entry["user_id"].as_str().unwrap().to_owned())
                .or_default()
                .insert(entry["seq"].as_u64().unwrap(), entry.clone());
        }
    }
    for user in ["erin", "fay"] {
        let ledger = &entries[user];
        let mut balance = 0i64;
        for (i, (seq, entry)) in ledger.iter().enumerate() {
            assert_eq!(*seq, i as u64 + 1, "{user}: no gap in seq");
            balance += entry["amount"].as_i64().unwrap();
            assert_eq!(entry["balance_after"].as_i64().unwrap(), balance);
        }
        let stored = app.get(user, "/v1/me/points").await;
        assert_eq!(stored["balance"].as_i64().unwrap(), balance, "{user}");
    }
}

/// The publisher dies after PutEvents, before its checkpoint: the same
/// records are delivered again, and their events repeat with the same ids.
#[tokio::test]
async fn a_publisher_that_dies_before_its_checkpoint_repeats_events_with_the_same_ids() {
    let app = TestApp::spawn().await;
    let all = Subscriber::all(&app).await;
    like(&app, "alice", "p1", Method::PUT).await;
    like(&app, "bob", "p1", Method::PUT).await;
    app.drain().await;
    let crashed = app
        .stream
        .poll_once_with(&app.publisher, StreamFault::CrashBeforeCheckpoint)
        .await
        .unwrap();
    assert!(crashed.received > 0);
    let first = all.received().await;
    app.publish_events().await;
    let again = all.received().await;
    let first_ids: BTreeSet<_> = by_id(&first).into_keys().collect();
    let again_ids: BTreeSet<_> = by_id(&again).into_keys().collect();
    assert_eq!(first_ids.len(), 3, "two likes added, one count change");
    assert_eq!(first_ids, again_ids, "the same events, with the same ids");
}

/// PutEvents answers `FailedEntryCount` > 0: the failed entries are sent
/// again, never dropped, and an account's events are sent again in order,
/// whoever's operations they are (an admin's grant, then the user's spends).
#[tokio::test]
async fn entries_put_events_did_not_take_are_sent_again_in_their_accounts_order() {
    let faults = FaultInjector::default();
    let app = TestApp::spawn_with_faults(&faults).await;
    let points = Subscriber::with_pattern(
        &app,
        "points",
        json!({"source": [events::POINTS_SOURCE], "detail-type": [events::POINTS_OPERATION_SETTLED]}),
    )
    .await;
    app.write(
        "admin",
        "/v1/points/grants",
        "g0",
        json!({"user_id": "gus", "amount": 40, "point_type": "bonus"}),
    )
    .await;
    for i in 1..4 {
        app.write(
            "gus",
            "/v1/me/points/spend",
            &format!("s{i}"),
            json!({"amount": 10}),
        )
        .await;
    }
    app.drain().await;
    // The first call takes every entry but the admin's grant (gus's seq 1);
    // the retry, every entry but its second.
    faults.arm("PutEvents", Fault::FailEntry(0), 1);
    faults.arm("PutEvents", Fault::FailEntry(1), 1);
    app.publish_events().await;
    assert_eq!(
        (
            faults.hits(Fault::FailEntry(0)),
            faults.hits(Fault::FailEntry(1))
        ),
        (1, 1),
        "both calls refused one"
    );
    let received = points.received().await;
    let seen = by_id(&received);
    assert_eq!(seen.len(), 4, "every operation's event, none dropped");
    // The last copy of each event arrives in gus's order.
    let mut last_at: BTreeMap<String, usize> = BTreeMap::new();
    for (position, event) in received.iter().enumerate() {
        last_at.insert(
            event["detail"]["event_id"].as_str().unwrap().to_owned(),
            position,
        );
    }
    let mut by_seq: Vec<(u64, usize)> = seen
        .values()
        .map(|(event, _)| {
            (
                event["detail"]["entries"][0]["seq"].as_u64().unwrap(),
                last_at[event["detail"]["event_id"].as_str().unwrap()],
            )
        })
        .collect();
    by_seq.sort();
    assert_eq!(
        by_seq.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    assert!(
        by_seq.windows(2).all(|pair| pair[0].1 < pair[1].1),
        "sent again in seq order: {by_seq:?}"
    );
}

/// A stream record the publisher cannot read is set aside, and the batch goes on.
#[tokio::test]
async fn a_record_the_publisher_cannot_read_is_set_aside_and_the_rest_are_published() {
    let app = TestApp::spawn().await;
    let all = Subscriber::all(&app).await;
    like(&app, "alice", "p1", Method::PUT).await;
    app.drain().await;
    // A register no Tally code would write: `liked` is text.
    write_unreadable_register(&app).await;
    like(&app, "bob", "p2", Method::PUT).await;
    settle(&app).await;
    let received = all.received().await;
    let posts: BTreeSet<&str> = of_type(&received, events::LIKE_ADDED)
        .iter()
        .map(|e| e["detail"]["post_id"].as_str().unwrap())
        .collect();
    assert_eq!(posts, BTreeSet::from(["p1", "p2"]), "before and after it");
    let set_aside = app
        .stack
        .events_dead_letters
        .receive(10, std::time::Duration::from_secs(1), "", "")
        .await
        .unwrap();
    assert_eq!(set_aside.len(), 1);
    let body: Value = serde_json::from_str(set_aside[0].body.as_deref().unwrap()).unwrap();
    assert_eq!(
        body["record"]["dynamodb"]["Keys"]["sk"]["S"], "USER#mallory",
        "{body}"
    );
    assert!(
        body["problem"].as_str().unwrap().contains("malformed"),
        "{body}"
    );
}

/// A whole register, as the worker writes one, but for `liked`, which is text.
async fn write_unreadable_register(app: &TestApp) {
    let s = |v: &str| AttributeValue::S(v.to_owned());
    aws_sdk_dynamodb::Client::new(&tests::emulator().await)
        .put_item()
        .table_name(app.store().table_name())
        .item("pk", s("POST#p1#LIKES#0"))
        .item("sk", s("USER#mallory"))
        .item("liked", s("yes"))
        .item("like_version", s("00001796374991111737#op-m"))
        .item("operation_id", s("op-m"))
        .item("post_id", s("p1"))
        .item("user_id", s("mallory"))
        .send()
        .await
        .unwrap();
}

/// Setting an unreadable record aside fails: the record is delivered again,
/// not dropped, and set aside once the queue answers.
#[tokio::test]
async fn a_record_that_cannot_be_set_aside_is_delivered_again() {
    let faults = FaultInjector::default();
    let app = TestApp::spawn_with_faults(&faults).await;
    write_unreadable_register(&app).await;
    faults.arm("SendMessage", Fault::Refuse(Refusal::ServerError), 1000);
    let poll = app.stream.poll_once(&app.publisher).await.unwrap();
    assert!(poll.failed > 0, "delivered again: {poll:?}");
    faults.clear();
    app.publish_events().await;
    let set_aside = app
        .stack
        .events_dead_letters
        .receive(10, std::time::Duration::from_secs(1), "", "")
        .await
        .unwrap();
    assert_eq!(set_aside.len(), 1, "set aside once the queue answers");
}

/// The bus refuses every call for a while: nothing is published, nothing is
/// lost, and once it answers again every event arrives.
#[tokio::test]
async fn events_held_up_by_a_bus_outage_all_arrive_once_it_is_back() {
    let faults = FaultInjector::default();
    let app = TestApp::spawn_with_faults(&faults).await;
    let all = Subscriber::all(&app).await;
    for user in ["a", "b", "c"] {
        like(&app, user, "p1", Method::PUT).await;
    }
    app.drain().await;
    faults.arm("PutEvents", Fault::Refuse(Refusal::ServerError), 1000);
    for _ in 0..5 {
        let poll = app.stream.poll_once(&app.publisher).await.unwrap();
        assert!(
            poll.failed > 0,
            "delivered again from the first event's record"
        );
    }
    assert!(
        all.received().await.is_empty(),
        "nothing while the bus is down"
    );
    faults.clear();
    app.publish_events().await;
    let received = all.received().await;
    let seen = by_id(&received);
    assert_eq!(
        seen.len(),
        4,
        "three likes added and the count: {received:?}"
    );
    assert!(seen.values().all(|(_, times)| *times == 1));
}
