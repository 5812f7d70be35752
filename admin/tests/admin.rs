//! tally-admin's commands against the emulator, on a stack of their own.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // test code: a panic is a failed check

use std::time::Duration;

use admin::Tally;
use admin::dead_letters::{self, Chosen, DeadLetterQueue};
use admin::import::{self, ImportOptions};
use admin::{status, user};
use serde_json::json;
use shared::domain::ids::{PostId, UserId};
use tests::TestApp;
use tests::faults::{Fault, FaultInjector, Refusal};
use time::OffsetDateTime;

mod common;

fn tally(app: &TestApp) -> Tally {
    common::tally_with(app, app.stack.store.clone())
}

/// Every post of `counts` has exactly its count.
async fn assert_counts(app: &TestApp, counts: &std::collections::BTreeMap<String, u64>) {
    for (p, count) in counts {
        assert_eq!(
            app.store().like_count(&post(p)).await.unwrap(),
            *count,
            "{p}"
        );
    }
}

fn post(id: &str) -> PostId {
    PostId::parse(id).unwrap()
}

fn user_id(id: &str) -> UserId {
    UserId::parse(id).unwrap()
}

async fn like(app: &TestApp, user: &str, post: &str) {
    let (status, body) = app
        .call(
            Some(user),
            axum::http::Method::PUT,
            &format!("/v1/posts/{post}/like"),
        )
        .await;
    assert_eq!(status, 202, "{body}");
}

#[tokio::test]
async fn a_like_dead_lettered_by_an_outage_is_redriven_once_the_store_is_back_and_counts_once() {
    let faults = FaultInjector::default();
    let app = TestApp::spawn_with_faults(&faults).await;
    let tally = tally(&app);
    like(&app, "alice", "p1").await;
    like(&app, "bob", "p1").await;
    // Every register write fails: the likes come back until the redrive
    // policy sets them aside.
    faults.arm("UpdateItem", Fault::Refuse(Refusal::ServerError), u32::MAX);
    for _ in 0..40 {
        app.mapping.poll_once(&app.worker).await.unwrap();
        if app.stack.likes.dead_letters.depth().await.unwrap() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    faults.clear();
    let now = OffsetDateTime::now_utc();
    let status = status::status(&tally, now).await.unwrap();
    let dead = status
        .queues
        .iter()
        .find(|q| q.name == "likes-dead-letters")
        .unwrap();
    assert_eq!(dead.figures.visible, 2, "{status}");

    let letters = dead_letters::list(&tally, DeadLetterQueue::Likes, now)
        .await
        .unwrap();
    assert_eq!(letters.len(), 2);
    let alice = letters
        .iter()
        .find(|l| l.caller.as_deref() == Some("alice"))
        .unwrap();
    assert_eq!(alice.operation.as_deref(), Some("like"));
    assert_eq!(alice.post_id.as_deref(), Some("p1"));
    assert!(alice.why.contains("failed every delivery"), "{}", alice.why);
    // Listing leaves them where they were.
    assert_eq!(app.stack.likes.dead_letters.depth().await.unwrap(), 2);

    // One chosen message, then the rest: the emulator refuses
    // StartMessageMoveTask (500), so both go by receive, send, delete.
    let first = dead_letters::redrive(
        &tally,
        DeadLetterQueue::Likes,
        &Chosen::Ids(vec![alice.message_id.clone()]),
    )
    .await
    .unwrap();
    assert_eq!(first.moved, vec![alice.message_id.clone()]);
    assert_eq!(app.stack.likes.dead_letters.depth().await.unwrap(), 1);
    let rest = dead_letters::redrive(&tally, DeadLetterQueue::Likes, &Chosen::All)
        .await
        .unwrap();
    assert!(rest.move_task_refused.is_some(), "{rest:?}");
    assert_eq!(rest.moved.len(), 1);
    app.drain().await;
    assert_eq!(app.store().like_count(&post("p1")).await.unwrap(), 2);
    // Nothing left to move, and a like delivered twice still counts once.
    let again = dead_letters::redrive(&tally, DeadLetterQueue::Likes, &Chosen::All)
        .await
        .unwrap();
    assert!(again.moved.is_empty());
    let missing = dead_letters::redrive(
        &tally,
        DeadLetterQueue::Likes,
        &Chosen::Ids(vec!["nope".into()]),
    )
    .await
    .unwrap();
    assert_eq!(missing.not_found, vec!["nope".to_owned()]);
}

#[tokio::test]
async fn a_redriven_points_message_applies_at_most_once_and_an_unreadable_one_says_why() {
    let app = TestApp::spawn().await;
    let tally = tally(&app);
    app.write(
        "admin",
        "/v1/points/grants",
        "g1",
        json!({"user_id": "carol", "amount": 100, "point_type": "bonus"}),
    )
    .await;
    app.write("carol", "/v1/me/points/spend", "s1", json!({"amount": 30}))
        .await;
    app.drain().await;
    // The spend's message, as if SQS had dead-lettered a copy after failing
    // deliveries: reconcile already applied it from its pending record.
    let record = app
        .store()
        .operation(
            &user_id("carol"),
            &shared::domain::ids::OperationId::parse("s1").unwrap(),
        )
        .await
        .unwrap()
        .unwrap();
    let envelope = shared::message::Envelope::for_points(&record.operation().unwrap());
    app.stack
        .points
        .dead_letters
        .forward(&envelope.encode(), Some("carol"), "copy-1")
        .await
        .unwrap();
    app.stack
        .points
        .dead_letters
        .forward(
            r#"{"version":1,"operation":{"type":"spend"}}"#,
            Some("x"),
            "junk-1",
        )
        .await
        .unwrap();
    let letters = dead_letters::list(&tally, DeadLetterQueue::Points, OffsetDateTime::now_utc())
        .await
        .unwrap();
    assert_eq!(letters.len(), 2, "{letters:?}");
    let spend = letters
        .iter()
        .find(|l| l.operation_id.as_deref() == Some("s1"))
        .unwrap();
    assert_eq!(spend.operation.as_deref(), Some("spend"));
    assert_eq!(spend.group_id.as_deref(), Some("carol"));
    let junk = letters.iter().find(|l| l.operation_id.is_none()).unwrap();
    assert!(
        junk.why.starts_with("names no caller and operation id"),
        "{}",
        junk.why
    );

    let moved = dead_letters::redrive(
        &tally,
        DeadLetterQueue::Points,
        &Chosen::Ids(vec![spend.message_id.clone()]),
    )
    .await
    .unwrap();
    assert_eq!(moved.moved.len(), 1);
    app.drain().await;
    assert_eq!(
        app.store()
            .account(&user_id("carol"))
            .await
            .unwrap()
            .balance,
        70
    );
    assert_eq!(app.audited_ledger("carol").await.len(), 2);
    assert_eq!(app.stack.points.dead_letters.depth().await.unwrap(), 1);

    // The unreadable one, redriven while the worker runs: set aside again at
    // once, it is a new dead letter, and the redrive moves it once and stops.
    let worker = async {
        for _ in 0..20 {
            app.points_mapping.poll_once(&app.worker).await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    };
    let (again, ()) = tokio::join!(
        dead_letters::redrive(&tally, DeadLetterQueue::Points, &Chosen::All),
        worker
    );
    assert_eq!(again.unwrap().moved.len(), 1);
    assert_eq!(app.stack.points.dead_letters.depth().await.unwrap(), 1);

    // Stream records have no queue to go back to.
    let refused = dead_letters::redrive(&tally, DeadLetterQueue::Events, &Chosen::All).await;
    assert!(refused.unwrap_err().to_string().contains("stream records"));
}

#[tokio::test]
async fn export_holds_a_users_likes_account_holds_entries_and_operations() {
    let app = TestApp::spawn().await;
    let tally = tally(&app);
    like(&app, "dana", "p1").await;
    like(&app, "dana", "p2").await;
    app.write(
        "admin",
        "/v1/points/grants",
        "g1",
        json!({"user_id": "dana", "amount": 500, "point_type": "bonus", "description": "welcome"}),
    )
    .await;
    app.drain().await;
    app.write(
        "dana",
        "/v1/me/points/transfers",
        "t1",
        json!({"to_user_id": "erin", "amount": 100}),
    )
    .await;
    app.drain().await;
    app.write(
        "erin",
        "/v1/me/points/transfers",
        "t2",
        json!({"to_user_id": "dana", "amount": 40}),
    )
    .await;
    app.drain().await;
    app.write(
        "dana",
        "/v1/me/points/holds",
        "h1",
        json!({"amount": 60, "reference": "order-1"}),
    )
    .await;
    app.drain().await;

    let mut lines = Vec::new();
    let count = user::export(&tally, &user_id("dana"), |line| {
        lines.push(line);
        Ok(())
    })
    .await
    .unwrap();
    assert_eq!(count, lines.len());
    let of = |record: &str| {
        lines
            .iter()
            .filter(|l| l["record"] == record)
            .collect::<Vec<_>>()
    };
    let likes = of("like");
    assert_eq!(likes.len(), 2);
    assert_eq!(likes[0]["post_id"], "p2", "newest first");
    let account = of("account");
    assert_eq!(account.len(), 1);
    assert_eq!(account[0]["balance"], 440);
    assert_eq!(account[0]["held"], 60);
    assert_eq!(account[0]["available"], 380);
    let holds = of("hold");
    assert_eq!(holds.len(), 1);
    assert_eq!(holds[0]["hold_id"], "h1");
    assert_eq!(holds[0]["amount"], 60);
    assert_eq!(holds[0]["reference"], "order-1");
    let entries = of("entry");
    let kinds: Vec<_> = entries
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["grant", "transfer_out", "transfer_in", "hold"]);
    assert_eq!(entries[0]["description"], "welcome");
    assert_eq!(entries[1]["counterparty"], "erin");
    // Her own operations: the transfer and the hold (the grant and erin's
    // transfer are their callers').
    let operations: Vec<_> = of("operation")
        .iter()
        .map(|o| o["operation_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(operations, ["h1", "t1"]);
    for line in &lines {
        assert_eq!(line["user_id"], "dana", "{line}");
    }

    let audit = user::audit(&tally, &user_id("dana")).await.unwrap();
    assert!(audit.findings.is_empty(), "{audit}");
    assert_eq!((audit.balance, audit.held, audit.entries), (440, 60, 4));
    tests::set_attribute(
        app.store(),
        "ACCOUNT#dana",
        "STATE",
        "balance",
        aws_sdk_dynamodb::types::AttributeValue::N("441".into()),
    )
    .await;
    let audit = user::audit(&tally, &user_id("dana")).await.unwrap();
    assert!(!audit.findings.is_empty());
    assert!(audit.to_string().contains("LEDGER MISMATCH"), "{audit}");
}

/// The rows of an import, and the counts they should end at.
fn like_table(users: usize, posts: usize) -> (String, std::collections::BTreeMap<String, u64>) {
    let mut csv = String::from("user_id,post_id,liked_at\n");
    let mut counts = std::collections::BTreeMap::new();
    for u in 0..users {
        for p in 0..posts {
            if (u * 7 + p * 3) % 4 == 0 {
                continue;
            }
            csv.push_str(&format!(
                "u{u},post{p},2025-0{}-1{}T10:00:00Z\n",
                1 + p % 9,
                u % 10
            ));
            *counts.entry(format!("post{p}")).or_default() += 1;
        }
    }
    (csv, counts)
}

#[tokio::test]
async fn an_import_stopped_half_way_resumes_to_exact_counts_and_a_rerun_changes_nothing() {
    let app = TestApp::spawn().await;
    let tally = tally(&app);
    let dir = std::env::temp_dir().join(format!("tally-import-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let (mut csv, counts) = like_table(40, 12);
    let rows = csv.lines().count() - 1;
    // Bad rows, each reported by its line and skipped.
    // A quoted field may span lines: the rows after it keep their own line numbers.
    csv.push_str("u8,\"post\nzero\",2025-01-01T00:00:00Z\n");
    csv.push_str("u1,post0,yesterday\n");
    csv.push_str("u#1,post0,2025-01-01T00:00:00Z\n");
    csv.push_str("u2,post0,2999-01-01T00:00:00Z\n");
    csv.push_str("u3,post0\n");
    let file = dir.join("likes.csv");
    std::fs::write(&file, &csv).unwrap();
    let bar = indicatif::ProgressBar::hidden();

    let mut options = ImportOptions::new(file.clone(), 10_000.0);
    options.stop_after_batches = Some(2);
    let first = import::import_likes(&tally, &options, &bar).await.unwrap();
    assert!(first.interrupted);
    assert_eq!(first.applied, 200);
    assert!(options.progress_file.exists());

    options.stop_after_batches = None;
    let resumed = import::import_likes(&tally, &options, &bar).await.unwrap();
    assert_eq!(resumed.resumed_after, 200);
    assert_eq!(resumed.applied as usize, rows - 200);
    assert_eq!(resumed.bad_rows, 5);
    let lines: Vec<u64> = resumed.bad_rows_listed.iter().map(|b| b.line).collect();
    let first_bad = rows as u64 + 2;
    assert_eq!(
        lines,
        [
            first_bad,
            first_bad + 2,
            first_bad + 3,
            first_bad + 4,
            first_bad + 5
        ],
        "{:?}",
        resumed.bad_rows_listed
    );
    assert!(resumed.bad_rows_listed[0].problem.contains("post_id"));
    assert!(resumed.bad_rows_listed[3].problem.contains("future"));
    assert!(!options.progress_file.exists());
    assert_counts(&app, &counts).await;
    let liked = app.get("u5", "/v1/me/likes").await;
    assert!(
        liked["items"][0]["liked_at"]
            .as_str()
            .unwrap()
            .starts_with("2025-"),
        "{liked}"
    );

    let again = import::import_likes(&tally, &options, &bar).await.unwrap();
    assert_eq!(again.applied, 0);
    assert_eq!(again.unchanged as usize, rows);
    assert_eq!(again.counters_repaired, 0);
    assert_counts(&app, &counts).await;
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn an_import_killed_mid_batch_resumes_to_exact_counts() {
    let app = TestApp::spawn().await;
    let dir = std::env::temp_dir().join(format!("tally-import-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let (csv, counts) = like_table(60, 10);
    let jsonl: String = csv
        .lines()
        .skip(1)
        .map(|line| {
            let parts: Vec<&str> = line.split(',').collect();
            format!(
                "{}\n",
                json!({"user_id": parts[0], "post_id": parts[1], "liked_at": parts[2]})
            )
        })
        .collect();
    let file = dir.join("likes.jsonl");
    std::fs::write(&file, jsonl).unwrap();
    let progress = dir.join("likes.jsonl.progress");
    let run = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_tally-admin"))
            .args(["--json", "import", "likes"])
            .arg(&file)
            // Slow enough to be killed part way.
            .args(["--max-wcu-per-second", "400"])
            .env("TALLY_TABLE_NAME", app.stack.store.table_name())
            .env("TALLY_LIKES_QUEUE_URL", app.stack.likes.queue.url())
            .env(
                "TALLY_LIKES_DEAD_LETTER_QUEUE_URL",
                app.stack.likes.dead_letters.url(),
            )
            .env("TALLY_POINTS_QUEUE_URL", app.stack.points.queue.url())
            .env(
                "TALLY_POINTS_DEAD_LETTER_QUEUE_URL",
                app.stack.points.dead_letters.url(),
            )
            .env(
                "TALLY_EVENTS_DEAD_LETTER_QUEUE_URL",
                app.stack.events_dead_letters.url(),
            )
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut child = run();
    // Killed once a batch or more is done, likely inside the next.
    for _ in 0..600 {
        if progress.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    child.kill().unwrap();
    child.wait().unwrap();
    let done: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&progress).unwrap()).unwrap();
    let done = done["rows_done"].as_u64().unwrap();
    assert!(
        done > 0 && (done as usize) < counts.values().sum::<u64>() as usize,
        "{done}"
    );

    let output = run().wait_with_output().unwrap();
    assert!(output.status.success());
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["resumed_after"], done, "{report}");
    assert_counts(&app, &counts).await;
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn status_shows_stale_pending_operations_and_the_last_reconcile_report() {
    let app = TestApp::spawn().await;
    let tally = tally(&app);
    app.write(
        "admin",
        "/v1/points/grants",
        "g1",
        json!({"user_id": "fay", "amount": 10, "point_type": "bonus"}),
    )
    .await;
    // Not applied yet: pending, and stale once the re-drive bound has passed.
    let later = OffsetDateTime::now_utc() + reconcile::REDRIVE_AFTER + time::Duration::seconds(1);
    let status = status::status(&tally, later).await.unwrap();
    assert_eq!(status.stale_pending_operations, 1, "{status}");
    assert_eq!(
        status.a_stale_pending,
        Some(("admin".to_owned(), "g1".to_owned()))
    );
    assert!(status.last_reconcile.is_none());
    let points = status.queues.iter().find(|q| q.name == "points").unwrap();
    assert_eq!(points.figures.visible, 1);

    app.drain().await;
    app.reconciler()
        .run(OffsetDateTime::now_utc())
        .await
        .unwrap();
    let status = status::status(&tally, later).await.unwrap();
    assert_eq!(status.stale_pending_operations, 0);
    let last = status.last_reconcile.as_ref().unwrap();
    assert_eq!(
        last.report.as_ref().unwrap()["accounts_audited"],
        1,
        "{status}"
    );
    assert!(
        status.to_string().contains("accounts_audited=1"),
        "{status}"
    );
}

#[test]
fn a_rows_like_is_checked_and_named_by_its_content() {
    let now = OffsetDateTime::now_utc();
    let a = import::like_of("u1", "p1", "2025-01-01T10:00:00+02:00", now).unwrap();
    let b = import::like_of("u1", "p1", "2025-01-01T08:00:00Z", now).unwrap();
    assert_eq!(
        a.operation_id, b.operation_id,
        "the same instant, written two ways"
    );
    assert_eq!(a.accepted_at, b.accepted_at);
    assert_ne!(
        a.operation_id,
        import::like_of("u1", "p2", "2025-01-01T08:00:00Z", now)
            .unwrap()
            .operation_id
    );
    assert!(
        import::like_of("", "p1", "2025-01-01T08:00:00Z", now)
            .unwrap_err()
            .contains("user_id")
    );
    assert!(
        import::like_of("u1", "p 1", "2025-01-01T08:00:00Z", now)
            .unwrap_err()
            .contains("post_id")
    );
    assert!(
        import::like_of("u1", "p1", "2025-01-01", now)
            .unwrap_err()
            .contains("RFC 3339")
    );
}
