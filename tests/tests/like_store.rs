//! Every condition expression and read the likes rely on, evaluated by the emulator's DynamoDB API.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // test code: a panic is a failed check

use std::collections::BTreeSet;

use shared::domain::ids::{OperationId, PostId, UserId};
use shared::domain::likes::{LikeAction, LikeOperation, LikeOutcome};
use tests::TestApp;
use time::{Duration, OffsetDateTime};

fn op(user: &str, post: &str, action: LikeAction, at: OffsetDateTime) -> LikeOperation {
    LikeOperation {
        operation_id: OperationId::generate(),
        user: UserId::parse(user).unwrap(),
        post: PostId::parse(post).unwrap(),
        action,
        accepted_at: at,
    }
}

fn post(id: &str) -> PostId {
    PostId::parse(id).unwrap()
}

#[tokio::test]
async fn a_first_like_applies_and_moves_the_count_by_one() {
    let app = TestApp::spawn().await;
    let like = op("alice", "p1", LikeAction::Like, OffsetDateTime::now_utc());
    let outcome = app.store().apply_like(&like).await.unwrap();
    assert_eq!(
        outcome,
        LikeOutcome::Applied {
            previously_liked: false,
            now_liked: true
        }
    );
    assert_eq!(outcome.count_delta(), 1);
}

#[tokio::test]
async fn a_redelivered_like_fails_its_condition_and_is_reported_as_already_applied() {
    let app = TestApp::spawn().await;
    let like = op("alice", "p1", LikeAction::Like, OffsetDateTime::now_utc());
    app.store().apply_like(&like).await.unwrap();
    assert_eq!(
        app.store().apply_like(&like).await.unwrap(),
        LikeOutcome::AlreadyApplied
    );
}

#[tokio::test]
async fn an_older_operation_arriving_late_is_superseded() {
    let app = TestApp::spawn().await;
    let now = OffsetDateTime::now_utc();
    let like = op("alice", "p1", LikeAction::Like, now);
    let unlike = op(
        "alice",
        "p1",
        LikeAction::Unlike,
        now + Duration::milliseconds(1),
    );
    assert_eq!(
        app.store().apply_like(&unlike).await.unwrap(),
        LikeOutcome::Applied {
            previously_liked: false,
            now_liked: false
        }
    );
    assert_eq!(
        app.store().apply_like(&like).await.unwrap(),
        LikeOutcome::Superseded
    );
    let liked = app
        .store()
        .liked_posts(&like.user, &[post("p1")])
        .await
        .unwrap();
    assert!(liked.is_empty(), "the tombstone kept the late like out");
}

#[tokio::test]
async fn unlike_then_relike_reports_each_state_change() {
    let app = TestApp::spawn().await;
    let t = OffsetDateTime::now_utc();
    let store = app.store();
    let steps = [
        (LikeAction::Like, 1),
        (LikeAction::Like, 0),
        (LikeAction::Unlike, -1),
        (LikeAction::Unlike, 0),
        (LikeAction::Like, 1),
    ];
    for (i, (action, delta)) in steps.into_iter().enumerate() {
        let operation = op("alice", "p1", action, t + Duration::seconds(i as i64));
        let outcome = store.apply_like(&operation).await.unwrap();
        assert_eq!(outcome.count_delta(), delta, "step {i}: {action:?}");
    }
}

#[tokio::test]
async fn liking_again_keeps_the_original_liked_at() {
    let app = TestApp::spawn().await;
    let t = OffsetDateTime::now_utc();
    let user = UserId::parse("alice").unwrap();
    app.store()
        .apply_like(&op("alice", "p1", LikeAction::Like, t))
        .await
        .unwrap();
    app.store()
        .apply_like(&op("alice", "p1", LikeAction::Like, t + Duration::hours(1)))
        .await
        .unwrap();
    let page = app.store().my_likes(&user, 10, None).await.unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].liked_at, shared::domain::timestamp::format(t));
}

#[tokio::test]
async fn counter_writes_add_up_and_reads_never_go_below_zero() {
    let app = TestApp::spawn().await;
    let store = app.store();
    let partitions = BTreeSet::from([3]);
    store
        .add_to_like_count(&post("p1"), 5, &partitions, &[])
        .await
        .unwrap();
    store
        .add_to_like_count(&post("p1"), -2, &BTreeSet::from([7, 120]), &[])
        .await
        .unwrap();
    store
        .add_to_like_count(&post("p2"), -1, &partitions, &[])
        .await
        .unwrap();
    // The counter lists every partition a write named.
    assert_eq!(
        store
            .counter_snapshot(&post("p1"))
            .await
            .unwrap()
            .partitions,
        Some(BTreeSet::from([3, 7, 120]))
    );
    assert_eq!(store.like_count(&post("p1")).await.unwrap(), 3);
    assert_eq!(store.like_count(&post("p2")).await.unwrap(), 0);
    assert_eq!(store.like_count(&post("never")).await.unwrap(), 0);
    let counts = store
        .like_counts(&[post("p1"), post("p2"), post("never")])
        .await
        .unwrap();
    assert_eq!(counts[&post("p1")].count, 3);
    assert_eq!(counts[&post("p2")].count, 0);
    assert_eq!(counts[&post("never")].count, 0);
}

#[tokio::test]
async fn did_i_like_answers_a_hundred_posts_from_one_batch_read() {
    let app = TestApp::spawn().await;
    let t = OffsetDateTime::now_utc();
    for i in (0..100).step_by(3) {
        app.store()
            .apply_like(&op("alice", &format!("p{i}"), LikeAction::Like, t))
            .await
            .unwrap();
    }
    let posts: Vec<PostId> = (0..100).map(|i| post(&format!("p{i}"))).collect();
    let liked = app
        .store()
        .liked_posts(&UserId::parse("alice").unwrap(), &posts)
        .await
        .unwrap();
    let expected: std::collections::HashSet<PostId> = (0..100)
        .step_by(3)
        .map(|i| post(&format!("p{i}")))
        .collect();
    assert_eq!(liked, expected);
    let bob = app
        .store()
        .liked_posts(&UserId::parse("bob").unwrap(), &posts)
        .await
        .unwrap();
    assert!(bob.is_empty());
}

#[tokio::test]
async fn my_likes_pages_newest_first_and_leaves_out_unliked_posts() {
    let app = TestApp::spawn().await;
    let t = OffsetDateTime::now_utc();
    let store = app.store();
    for i in 0..7 {
        store
            .apply_like(&op(
                "alice",
                &format!("p{i}"),
                LikeAction::Like,
                t + Duration::seconds(i),
            ))
            .await
            .unwrap();
    }
    store
        .apply_like(&op(
            "alice",
            "p3",
            LikeAction::Unlike,
            t + Duration::seconds(60),
        ))
        .await
        .unwrap();
    store
        .apply_like(&op("bob", "p9", LikeAction::Like, t))
        .await
        .unwrap();
    let alice = UserId::parse("alice").unwrap();
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = store.my_likes(&alice, 2, cursor.as_deref()).await.unwrap();
        assert!(page.items.len() <= 2);
        seen.extend(page.items.into_iter().map(|i| i.post_id.to_string()));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, ["p6", "p5", "p4", "p2", "p1", "p0"]);
}

#[tokio::test]
async fn a_forged_cursor_is_rejected() {
    let app = TestApp::spawn().await;
    let err = app
        .store()
        .my_likes(&UserId::parse("alice").unwrap(), 2, Some("not-a-cursor"))
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        shared::store::likes::PageError::InvalidCursor
    ));
}
