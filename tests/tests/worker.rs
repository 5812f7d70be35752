//! The worker against the emulator: redelivery, delivery order, poison messages.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // test code: a panic is a failed check

use std::time::Duration;

use rand::seq::SliceRandom as _;
use shared::domain::ids::{OperationId, PostId, UserId};
use shared::domain::likes::{LikeAction, LikeOperation};
use shared::message::Envelope;
use tests::{TestApp, sqs_record};
use time::OffsetDateTime;

fn envelope(user: &str, post: &str, action: LikeAction, at: OffsetDateTime) -> String {
    Envelope::for_like(&LikeOperation {
        operation_id: OperationId::generate(),
        user: UserId::parse(user).unwrap(),
        post: PostId::parse(post).unwrap(),
        action,
        accepted_at: at,
    })
    .encode()
}

fn post(id: &str) -> PostId {
    PostId::parse(id).unwrap()
}

#[tokio::test]
async fn a_thousand_likes_delivered_twice_in_shuffled_order_count_exactly_a_thousand() {
    let app = TestApp::spawn().await;
    let now = OffsetDateTime::now_utc();
    let bodies: Vec<String> = (0..1000)
        .map(|i| envelope(&format!("user-{i}"), "viral", LikeAction::Like, now))
        .collect();
    // Each delivery of a message gets its own SQS message id, as a redelivery would.
    let mut deliveries: Vec<_> = bodies
        .iter()
        .chain(bodies.iter())
        .enumerate()
        .map(|(i, body)| sqs_record(&format!("m{i}"), body))
        .collect();
    deliveries.shuffle(&mut rand::rng());
    let mut applied = 0;
    let mut duplicates = 0;
    for batch in deliveries.chunks(100) {
        let report = app.worker.apply_batch(batch.to_vec()).await;
        assert!(report.failed.is_empty(), "{report:?}");
        assert_eq!(
            report.counter_writes, 1,
            "one counter write per post per batch"
        );
        applied += report.applied;
        duplicates += report.duplicates;
    }
    assert_eq!((applied, duplicates), (1000, 1000));
    assert_eq!(app.store().like_count(&post("viral")).await.unwrap(), 1000);
}

#[tokio::test]
async fn like_then_unlike_delivered_in_reverse_order_leaves_the_post_unliked() {
    let app = TestApp::spawn().await;
    let t = OffsetDateTime::now_utc();
    let like = envelope("alice", "p1", LikeAction::Like, t);
    let unlike = envelope(
        "alice",
        "p1",
        LikeAction::Unlike,
        t + time::Duration::milliseconds(1),
    );
    let first = app.worker.apply_batch(vec![sqs_record("2", &unlike)]).await;
    let second = app.worker.apply_batch(vec![sqs_record("1", &like)]).await;
    assert_eq!((first.applied, second.superseded), (1, 1));
    let alice = UserId::parse("alice").unwrap();
    assert!(
        app.store()
            .liked_posts(&alice, &[post("p1")])
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(app.store().like_count(&post("p1")).await.unwrap(), 0);
    let page = app.store().my_likes(&alice, 10, None).await.unwrap();
    assert!(page.items.is_empty());
}

#[tokio::test]
async fn like_and_unlike_in_one_batch_resolve_to_the_later_one() {
    let app = TestApp::spawn().await;
    let t = OffsetDateTime::now_utc();
    let later = t + time::Duration::milliseconds(1);
    let batch = vec![
        sqs_record("a", &envelope("alice", "p1", LikeAction::Unlike, later)),
        sqs_record("b", &envelope("alice", "p1", LikeAction::Like, t)),
        sqs_record("c", &envelope("bob", "p1", LikeAction::Like, t)),
        sqs_record(
            "d",
            &envelope(
                "bob",
                "p1",
                LikeAction::Unlike,
                t - time::Duration::seconds(1),
            ),
        ),
    ];
    let report = app.worker.apply_batch(batch).await;
    assert!(report.failed.is_empty());
    assert_eq!(app.store().like_count(&post("p1")).await.unwrap(), 1);
}

#[tokio::test]
async fn an_undecodable_message_fails_alone_and_the_rest_of_the_batch_applies() {
    let app = TestApp::spawn().await;
    let now = OffsetDateTime::now_utc();
    let mut batch: Vec<_> = (0..5)
        .map(|i| {
            sqs_record(
                &format!("good-{i}"),
                &envelope(&format!("u{i}"), "p1", LikeAction::Like, now),
            )
        })
        .collect();
    batch.insert(2, sqs_record("bad", r#"{"version":1,"operation":"like"}"#));
    let mut event = aws_lambda_events::sqs::SqsEvent::default();
    event.records = batch;
    let response = app
        .worker
        .handle(lambda_runtime::LambdaEvent::new(
            event,
            lambda_runtime::Context::default(),
        ))
        .await
        .unwrap();
    let failed: Vec<_> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    assert_eq!(failed, ["bad"]);
    assert_eq!(app.store().like_count(&post("p1")).await.unwrap(), 5);
}

#[tokio::test]
async fn a_poison_message_reaches_the_dead_letter_queue_after_bounded_receives() {
    let app = TestApp::spawn().await;
    let sqs = aws_sdk_sqs::Client::new(&tests::emulator().await);
    sqs.send_message()
        .queue_url(app.stack.likes.queue.url())
        .message_body("this is not an envelope")
        .send()
        .await
        .unwrap();
    sqs.send_message()
        .queue_url(app.stack.likes.queue.url())
        .message_body(envelope(
            "alice",
            "p1",
            LikeAction::Like,
            OffsetDateTime::now_utc(),
        ))
        .send()
        .await
        .unwrap();
    let mut receives = 0;
    for _ in 0..30 {
        let poll = app.mapping.poll_once(&app.worker).await.unwrap();
        receives += poll.received;
        if app.stack.likes.dead_letters.depth().await.unwrap() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(app.stack.likes.dead_letters.depth().await.unwrap(), 1);
    assert_eq!(app.stack.likes.queue.depth().await.unwrap(), 0);
    // One receive for the good message, `max_receive_count` for the poison one.
    assert_eq!(receives, 1 + tests::TEST_QUEUES.max_receive_count as usize);
    assert_eq!(app.store().like_count(&post("p1")).await.unwrap(), 1);
}

#[tokio::test]
async fn a_user_toggling_a_like_within_a_batch_costs_one_register_write_and_counts_exactly() {
    let app = TestApp::spawn().await;
    let usage = std::sync::Arc::new(shared::usage::Usage::default());
    let mut worker = app.worker.clone();
    worker.likes.store = worker.likes.store.clone().with_usage(usage.clone());
    let now = OffsetDateTime::now_utc();
    let at = |ms: i64| now - time::Duration::milliseconds(1000 - ms);
    // alice toggles six times (ending on unlike), bob likes, carol's like comes twice.
    let mut bodies: Vec<String> = (0..6)
        .map(|i| {
            let action = if i % 2 == 0 {
                LikeAction::Like
            } else {
                LikeAction::Unlike
            };
            envelope("alice", "p1", action, at(i * 10))
        })
        .collect();
    bodies.push(envelope("bob", "p1", LikeAction::Like, at(5)));
    let carol = envelope("carol", "p1", LikeAction::Like, at(7));
    bodies.push(carol.clone());
    bodies.push(carol);
    let mut records: Vec<_> = bodies
        .iter()
        .enumerate()
        .map(|(i, body)| sqs_record(&format!("m{i}"), body))
        .collect();
    records.shuffle(&mut rand::rng());
    let report = worker.apply_batch(records).await;
    assert!(report.failed.is_empty(), "{report:?}");
    assert_eq!(
        (report.applied, report.superseded, report.duplicates),
        (3, 5, 1),
        "{report:?}"
    );
    let register_writes = usage.snapshot()["dynamodb:UpdateItem apply_like"].requests;
    assert_eq!(
        register_writes, 3,
        "one per (user, post), not one per message"
    );
    assert_eq!(app.store().like_count(&post("p1")).await.unwrap(), 2);
    let alice = UserId::parse("alice").unwrap();
    let liked = app
        .store()
        .liked_posts(&alice, &[post("p1")])
        .await
        .unwrap();
    assert!(!liked.contains(&post("p1")), "alice's last word was unlike");
}
