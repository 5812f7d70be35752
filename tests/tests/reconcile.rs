//! Reconcile against the emulator: counter repair, crash recovery, races with
//! the worker, ledger audit, and point expiry with an injected clock.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // test code: a panic is a failed check

use std::collections::BTreeSet;

use aws_sdk_dynamodb::types::AttributeValue;

use shared::domain::ids::{OperationId, PostId, UserId};
use shared::domain::likes::{LikeAction, LikeOperation};
use shared::domain::points::{Amount, EntryKind, Grant, PointsOperation, PointsRequest, Spend};
use shared::message::Envelope;
use shared::store::keys;
use tests::{TestApp, sqs_record};
use time::{Duration, OffsetDateTime};

fn post(id: &str) -> PostId {
    PostId::parse(id).unwrap()
}

fn user(id: &str) -> UserId {
    UserId::parse(id).unwrap()
}

fn like(user_id: &str, post_id: &str) -> String {
    Envelope::for_like(&LikeOperation {
        operation_id: OperationId::generate(),
        user: user(user_id),
        post: post(post_id),
        action: LikeAction::Like,
        accepted_at: OffsetDateTime::now_utc(),
    })
    .encode()
}

fn points(id: &str, caller: &str, request: PointsRequest) -> String {
    Envelope::for_points(&PointsOperation {
        operation_id: OperationId::parse(id).unwrap(),
        caller: user(caller),
        request,
        accepted_at: OffsetDateTime::now_utc(),
    })
    .encode()
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

async fn apply(app: &TestApp, bodies: &[String]) {
    let records = bodies
        .iter()
        .enumerate()
        .map(|(i, body)| sqs_record(&format!("m{i}-{}", uuid::Uuid::now_v7()), body))
        .collect();
    let report = app.worker.apply_batch(records).await;
    assert!(report.failed.is_empty(), "{report:?}");
}

async fn dynamodb() -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(&tests::emulator().await)
}

fn key(pk: &str, sk: &str) -> std::collections::HashMap<String, AttributeValue> {
    [("pk", pk), ("sk", sk)]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), AttributeValue::S(v.to_owned())))
        .collect()
}

async fn run(app: &TestApp, now: OffsetDateTime) -> reconcile::Report {
    app.reconciler().run(now).await.unwrap()
}

#[tokio::test]
async fn counters_corrupted_in_dynamodb_are_repaired_exactly_by_one_run() {
    let app = TestApp::spawn().await;
    let mut bodies = Vec::new();
    for (p, likes) in [("p1", 3), ("p2", 5), ("p3", 2), ("p4", 4)] {
        bodies.extend((0..likes).map(|i| like(&format!("u{i}"), p)));
    }
    apply(&app, &bodies).await;
    let settled = run(&app, OffsetDateTime::now_utc()).await;
    assert_eq!(
        (settled.posts_checked, settled.counters_repaired),
        (4, 0),
        "{settled:?}"
    );

    let db = dynamodb().await;
    let table = app.store().table_name().to_owned();
    for (p, delta) in [("p1", 7), ("p2", -3)] {
        db.update_item()
            .table_name(&table)
            .set_key(Some(key(&format!("POST#{p}"), "COUNT")))
            .update_expression("ADD like_count :d")
            .expression_attribute_values(":d", AttributeValue::N(delta.to_string()))
            .send()
            .await
            .unwrap();
    }
    db.delete_item()
        .table_name(&table)
        .set_key(Some(key("POST#p3", "COUNT")))
        .send()
        .await
        .unwrap();
    assert_eq!(
        app.store().like_count(&post("p1")).await.unwrap(),
        10,
        "corrupted"
    );

    let report = run(&app, OffsetDateTime::now_utc()).await;
    assert_eq!(
        (report.counters_repaired, report.total_drift),
        (3, 7 + 3 + 2),
        "{report:?}"
    );
    for (p, count) in [("p1", 3), ("p2", 5), ("p3", 2), ("p4", 4)] {
        assert_eq!(
            app.store().like_count(&post(p)).await.unwrap(),
            count,
            "{p}"
        );
    }
    let again = run(&app, OffsetDateTime::now_utc()).await;
    assert_eq!(
        (again.counters_repaired, again.total_drift),
        (0, 0),
        "{again:?}"
    );
}

#[tokio::test]
async fn a_worker_crash_between_the_registers_and_the_counter_is_repaired() {
    let app = TestApp::spawn().await;
    let bodies: Vec<String> = (0..5).map(|i| like(&format!("u{i}"), "p1")).collect();
    // The worker writes the registers, then dies before the counter write...
    for body in &bodies {
        let like = Envelope::decode(body).unwrap().like_operation().unwrap();
        app.store().apply_like(&like).await.unwrap();
    }
    // ...so SQS delivers the batch again: every register is already applied.
    let records = bodies
        .iter()
        .enumerate()
        .map(|(i, b)| sqs_record(&format!("m{i}"), b))
        .collect();
    let redelivery = app.worker.apply_batch(records).await;
    assert_eq!(redelivery.duplicates, 5);
    assert_eq!(
        app.store().like_count(&post("p1")).await.unwrap(),
        0,
        "the crash lost the increments"
    );

    let report = run(&app, OffsetDateTime::now_utc()).await;
    assert_eq!((report.counters_repaired, report.total_drift), (1, 5));
    assert_eq!(app.store().like_count(&post("p1")).await.unwrap(), 5);
}

#[tokio::test]
async fn reconcile_racing_a_thousand_likes_loses_nothing_and_one_more_run_is_exact() {
    let app = TestApp::spawn().await;
    let posts = ["hot1", "hot2", "hot3", "hot4"];
    // A thousand keeps several runs racing the worker (CI's time budget: 2,000
    // took 100 s of the emulator's time and raced no differently).
    let bodies: Vec<String> = (0..1000)
        .map(|i| like(&format!("u{i}"), posts[i % 4]))
        .collect();
    let worker = async {
        let batches = bodies.chunks(100).map(|chunk| apply(&app, chunk));
        futures::future::join_all(batches).await;
    };
    let done = std::sync::atomic::AtomicBool::new(false);
    let reconciling = async {
        let mut runs = 0;
        while !done.load(std::sync::atomic::Ordering::SeqCst) {
            run(&app, OffsetDateTime::now_utc()).await;
            runs += 1;
        }
        runs
    };
    let (_, runs) = tokio::join!(
        async {
            worker.await;
            done.store(true, std::sync::atomic::Ordering::SeqCst);
        },
        reconciling
    );
    assert!(runs >= 1);
    run(&app, OffsetDateTime::now_utc()).await;
    for (k, p) in posts.into_iter().enumerate() {
        assert_eq!(
            app.store().like_count(&post(p)).await.unwrap(),
            250,
            "{p} after {runs} racing runs"
        );
        let every_partition = (0..keys::LIKE_PARTITIONS).collect();
        assert_eq!(
            app.store()
                .count_likes(&post(p), &every_partition)
                .await
                .unwrap()
                .count,
            250
        );
        // The counter lists exactly the partitions the 250 likers' registers use.
        let used: BTreeSet<u32> = (0..250)
            .map(|i| keys::like_partition(&user(&format!("u{}", i * 4 + k))))
            .collect();
        let listed = app.store().counter_snapshot(&post(p)).await.unwrap();
        assert_eq!(listed.partitions, Some(used));
    }
}

#[tokio::test]
async fn a_tampered_entry_and_an_edited_balance_are_reported_and_left_as_they_are() {
    let app = TestApp::spawn().await;
    apply(
        &app,
        &[
            points("g1", "admin", grant("alice", 100, "bonus")),
            points("g2", "admin", grant("bob", 100, "bonus")),
        ],
    )
    .await;
    apply(
        &app,
        &[
            points("s1", "alice", spend(30)),
            points("s2", "bob", spend(10)),
        ],
    )
    .await;
    let clean = run(&app, OffsetDateTime::now_utc()).await;
    assert_eq!(
        (clean.accounts_audited, clean.mismatches),
        (2, 0),
        "{clean:?}"
    );

    let db = dynamodb().await;
    let table = app.store().table_name().to_owned();
    db.update_item()
        .table_name(&table)
        .set_key(Some(key("ACCOUNT#alice", &format!("ENTRY#{:020}", 2))))
        .update_expression("SET amount = :a")
        .expression_attribute_values(":a", AttributeValue::N("-3".into()))
        .send()
        .await
        .unwrap();
    db.update_item()
        .table_name(&table)
        .set_key(Some(key("ACCOUNT#bob", "STATE")))
        .update_expression("SET balance = :b")
        .expression_attribute_values(":b", AttributeValue::N("999".into()))
        .send()
        .await
        .unwrap();

    let report = run(&app, OffsetDateTime::now_utc()).await;
    assert_eq!(report.mismatches, 2, "{report:?}");
    let again = run(&app, OffsetDateTime::now_utc()).await;
    assert_eq!(
        again.mismatches, 2,
        "a mismatch is reported until someone fixes it"
    );
    let alice = app.store().ledger(&user("alice")).await.unwrap();
    assert_eq!(alice[1].amount, -3, "history is never rewritten");
    assert_eq!(
        app.store().account(&user("bob")).await.unwrap().balance,
        999
    );
}

#[tokio::test]
async fn due_points_expire_once_as_entries_and_the_balance_follows() {
    let app = TestApp::spawn().await;
    apply(
        &app,
        &[
            points("g1", "admin", grant("alice", 30, "sign_in")),
            points("g2", "admin", grant("alice", 50, "bonus")),
        ],
    )
    .await;
    apply(&app, &[points("s1", "alice", spend(10))]).await;
    let now = OffsetDateTime::now_utc();
    let early = run(&app, now + Duration::days(29)).await;
    assert_eq!(early.points_expired, 0);

    let later = now + Duration::days(31);
    let report = run(&app, later).await;
    assert_eq!(
        (
            report.accounts_expired,
            report.points_expired,
            report.mismatches
        ),
        (1, 20, 0),
        "{report:?}"
    );
    let entries = app.store().ledger(&user("alice")).await.unwrap();
    let expire = entries.last().unwrap();
    assert_eq!(
        (
            expire.kind,
            expire.amount,
            expire.balance_before,
            expire.balance_after
        ),
        (EntryKind::Expire, -20, 70, 50)
    );
    let balance = app.get("alice", "/v1/me/points").await;
    assert_eq!(
        balance,
        serde_json::json!({"balance": 50, "held": 0, "available": 50, "expiring": []})
    );

    let again = run(&app, later + Duration::days(1)).await;
    assert_eq!(again.points_expired, 0, "a second run expires nothing more");
    assert_eq!(app.audited_ledger("alice").await.len(), 4);
}

#[tokio::test]
async fn an_interrupted_expiry_run_and_its_rerun_expire_each_lot_exactly_once() {
    let app = TestApp::spawn().await;
    let grants: Vec<String> = (0..10)
        .map(|i| {
            points(
                &format!("g{i}"),
                "admin",
                grant(&format!("a{i}"), 30, "sign_in"),
            )
        })
        .collect();
    apply(&app, &grants).await;
    let later = OffsetDateTime::now_utc() + Duration::days(40);
    // A bounded run that stops after four accounts: as good as interrupted.
    let mut bounded = app.reconciler();
    bounded.expiry_accounts_per_run = 4;
    let mut first = reconcile::Report::default();
    bounded
        .expire_points(later, far_off(), &mut first)
        .await
        .unwrap();
    assert_eq!(first.accounts_expired, 4);
    // The rerun, twice at once for good measure.
    let full = app.reconciler();
    let (a, b) = tokio::join!(full.run(later), full.run(later));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(
        first.points_expired + a.points_expired + b.points_expired,
        300
    );
    for i in 0..10 {
        let entries = app.audited_ledger(&format!("a{i}")).await;
        let expired: Vec<_> = entries
            .iter()
            .filter(|e| e.kind == EntryKind::Expire)
            .collect();
        assert_eq!(expired.len(), 1, "a{i}: {entries:?}");
        assert_eq!(
            app.store()
                .account(&user(&format!("a{i}")))
                .await
                .unwrap()
                .balance,
            0
        );
    }
}

/// A deadline no test run reaches.
fn far_off() -> std::time::Instant {
    std::time::Instant::now() + std::time::Duration::from_secs(3600)
}

#[tokio::test]
async fn a_register_no_counter_write_listed_is_found_by_the_sweep_and_counted_from_then_on() {
    let app = TestApp::spawn().await;
    let likers: Vec<String> = (0..10).map(|i| format!("u{i}")).collect();
    let likes: Vec<String> = likers.iter().map(|u| like(u, "p1")).collect();
    apply(&app, &likes).await;
    let listed = app.store().counter_snapshot(&post("p1")).await.unwrap();
    let listed = listed.partitions.unwrap();
    // A like whose register was written but whose counter write never
    // happened (its message dead-lettered), in a partition no write listed.
    let stray = (10..10_000)
        .map(|i| format!("u{i}"))
        .find(|u| !listed.contains(&keys::like_partition(&user(u))))
        .unwrap();
    let op = LikeOperation {
        operation_id: OperationId::generate(),
        user: user(&stray),
        post: post("p1"),
        action: LikeAction::Like,
        accepted_at: OffsetDateTime::now_utc(),
    };
    app.store().apply_like(&op).await.unwrap();

    // The sweep finds the stray register: counted, and its partition listed.
    let report = run(&app, OffsetDateTime::now_utc()).await;
    assert_eq!(report.total_drift, 1);
    assert_eq!(app.store().like_count(&post("p1")).await.unwrap(), 11);
    let now_listed = app.store().counter_snapshot(&post("p1")).await.unwrap();
    assert!(
        now_listed
            .partitions
            .unwrap()
            .contains(&keys::like_partition(&user(&stray))),
        "the settle lists the partition the sweep found"
    );
    // A later like marks the post: its recount reads the listed partitions,
    // the stray one among them, with a sweep that finds nothing this time.
    apply(&app, &[like("newcomer", "p1")]).await;
    let mut no_sweep = app.reconciler();
    no_sweep.sweep_items_per_run = 1;
    no_sweep.run(OffsetDateTime::now_utc()).await.unwrap();
    assert_eq!(app.store().like_count(&post("p1")).await.unwrap(), 12);
}
