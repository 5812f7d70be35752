//! Who liked it: the likers list, the recent likers a count read shows, and
//! the count cache, each against the emulator's DynamoDB (the `likers` index,
//! the counter's map writes and their conditions).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // test code: a panic is a failed check

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration as StdDuration;

use axum::http::{Method, StatusCode};
use shared::domain::ids::{OperationId, PostId, UserId};
use shared::domain::likers::{MAX_RECENT_LIKERS, RECENT_LIKERS_TRIM_ABOVE};
use shared::domain::likes::{LikeAction, LikeOperation};
use shared::likes_service::LikesService;
use shared::message::Delivered;
use shared::store::keys;
use tests::TestApp;
use time::{Duration, OffsetDateTime};

fn post(id: &str) -> PostId {
    PostId::parse(id).unwrap()
}

fn user(id: &str) -> UserId {
    UserId::parse(id).unwrap()
}

fn op(who: &str, on: &str, action: LikeAction, at: OffsetDateTime) -> LikeOperation {
    LikeOperation {
        operation_id: OperationId::generate(),
        user: user(who),
        post: post(on),
        action,
        accepted_at: at,
    }
}

/// `action` by user `u{n:03}` on post p1.
fn on_p1(n: i64, action: LikeAction, at: OffsetDateTime) -> LikeOperation {
    op(&format!("u{n:03}"), "p1", action, at)
}

fn secs(n: i64) -> Duration {
    Duration::seconds(n)
}

/// Applies one batch as the worker does (registers, then one counter write per post).
async fn apply(service: &LikesService, ops: Vec<LikeOperation>) {
    let batch = ops
        .into_iter()
        .enumerate()
        .map(|(i, operation)| Delivered {
            message_id: format!("m{i}"),
            span: tracing::Span::none(),
            operation,
        })
        .collect();
    let applied = service.apply_batch(batch).await;
    assert!(
        applied
            .outcomes
            .iter()
            .all(|(_, _, outcome)| outcome.is_some()),
        "every message applied: {:?}",
        applied.outcomes
    );
}

/// The worker's likes service (its role writes registers and counters).
fn service(app: &TestApp) -> LikesService {
    app.worker.likes.clone()
}

/// Every page of a post's likers through the HTTP API, `limit` at a time.
async fn all_pages(app: &TestApp, on: &str, limit: u32) -> Vec<(String, String)> {
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..1000 {
        let mut uri = format!("/v1/posts/{on}/likers?limit={limit}");
        if let Some(c) = &cursor {
            uri.push_str(&format!("&cursor={c}"));
        }
        let (status, page) = app.call(Some("reader"), Method::GET, &uri).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= limit as usize);
        for item in items {
            seen.push((
                item["user_id"].as_str().unwrap().to_owned(),
                item["liked_at"].as_str().unwrap().to_owned(),
            ));
        }
        match page["next_cursor"].as_str() {
            Some(next) => {
                assert!(!items.is_empty(), "a page with a cursor has items");
                cursor = Some(next.to_owned());
            }
            None => return seen,
        }
    }
    panic!("pages never ended");
}

#[tokio::test]
async fn likers_pages_list_every_current_liker_once_newest_first_across_partitions() {
    let app = TestApp::spawn().await;
    let service = service(&app);
    let t0 = OffsetDateTime::now_utc() - Duration::minutes(10);
    // 60 users over about 50 of the 128 partitions, liking one second apart
    // in three batches; then 10 of them unlike, and 3 of those like again later.
    let likes: Vec<LikeOperation> = (0..60)
        .map(|i| on_p1(i, LikeAction::Like, t0 + secs(i)))
        .collect();
    for chunk in likes.chunks(20) {
        apply(&service, chunk.to_vec()).await;
    }
    let unliked = |i: i64| i % 5 == 0 && i / 5 < 10;
    let reliked = |i: i64| i % 5 == 0 && i / 5 < 3;
    let unlikes = (0..10)
        .map(|i| on_p1(i * 5, LikeAction::Unlike, t0 + secs(200 + i)))
        .collect();
    apply(&service, unlikes).await;
    let relikes = (0..3)
        .map(|i| on_p1(i * 5, LikeAction::Like, t0 + secs(300 + i)))
        .collect();
    apply(&service, relikes).await;

    let mut expected: Vec<(i64, String)> = (0..60)
        .filter(|i| !unliked(*i) || reliked(*i))
        .map(|i| {
            let at = if reliked(i) { 300 + i / 5 } else { i };
            (at, format!("u{i:03}"))
        })
        .collect();
    expected.sort_by(|a, b| b.cmp(a));
    let expected_users: Vec<String> = expected.iter().map(|(_, u)| u.clone()).collect();
    assert_eq!(expected_users.len(), 53);

    for limit in [1, 7, 100] {
        let pages = all_pages(&app, "p1", limit).await;
        let users: Vec<String> = pages.iter().map(|(u, _)| u.clone()).collect();
        assert_eq!(users, expected_users, "limit {limit}");
        let times: Vec<&String> = pages.iter().map(|(_, at)| at).collect();
        assert!(times.windows(2).all(|w| w[0] >= w[1]), "newest first");
    }
    let (_, count) = app
        .call(Some("reader"), Method::GET, "/v1/posts/p1/likes")
        .await;
    assert_eq!(count["count"], 53);
    // The first page came from many partitions: the merge was exercised.
    let partitions: BTreeSet<u32> = expected_users
        .iter()
        .map(|u| keys::like_partition(&user(u)))
        .collect();
    assert!(partitions.len() > 30, "{}", partitions.len());
}

#[tokio::test]
async fn a_page_costs_a_query_per_partition_the_post_uses_and_a_post_never_liked_has_none() {
    let app = TestApp::spawn().await;
    let service = service(&app);
    let t0 = OffsetDateTime::now_utc() - Duration::minutes(1);
    let likes = (0..10)
        .map(|i| on_p1(i, LikeAction::Like, t0 + secs(i)))
        .collect();
    apply(&service, likes).await;
    let used: BTreeSet<u32> = (0..10)
        .map(|i| keys::like_partition(&user(&format!("u{i:03}"))))
        .collect();

    let before = app.store().usage().snapshot();
    let page = app.store().likers(&post("p1"), 20, None).await.unwrap();
    assert_eq!(page.items.len(), 10);
    assert_eq!(page.items[0].user_id, user("u009"));
    assert_eq!(page.next_cursor, None);
    let after = app.store().usage().snapshot();
    let queries = after["dynamodb:Query likers"].requests
        - before
            .get("dynamodb:Query likers")
            .map_or(0, |c| c.requests);
    assert_eq!(
        queries as usize,
        used.len(),
        "one query per partition in use"
    );

    let empty = app.store().likers(&post("never"), 20, None).await.unwrap();
    assert!(empty.items.is_empty());
    assert_eq!(empty.next_cursor, None);
}

#[tokio::test]
async fn hostile_likers_requests_are_refused_and_change_nothing() {
    let app = TestApp::spawn().await;
    use base64::Engine as _;
    let forge = |json: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json);
    let forged = [
        "not-base64!".to_owned(),
        forge("{}"),
        forge(r#"{"t":"yesterday#alice"}"#),
        forge(r#"{"t":"2026-12-04T00:00:00.000000Z#bad user"}"#),
        forge(r#"{"t":"2026-12-04T00:00:00.000000Z"}"#),
        forge(r#"{"t":7}"#),
    ];
    for cursor in &forged {
        let (status, problem) = app
            .call(
                Some("reader"),
                Method::GET,
                &format!("/v1/posts/p1/likers?cursor={cursor}"),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{cursor}");
        assert_eq!(problem["code"], "invalid_cursor");
    }
    for (query, code) in [
        ("limit=0", "invalid_limit"),
        ("limit=101", "invalid_limit"),
        ("limit=-1", "invalid_limit"),
        ("limit=ten", "invalid_limit"),
        ("post_ids=a", "invalid_query"),
    ] {
        let (status, problem) = app
            .call(
                Some("reader"),
                Method::GET,
                &format!("/v1/posts/p1/likers?{query}"),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {problem}");
        assert_eq!(problem["code"], code, "{query}");
    }
    let (status, problem) = app
        .call(Some("reader"), Method::GET, "/v1/posts/bad%20id/likers")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(problem["code"], "invalid_post_id");
    let (status, _) = app.call(None, Method::GET, "/v1/posts/p1/likers").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_well_formed_cursor_from_elsewhere_only_starts_a_page_of_this_posts_likers() {
    let app = TestApp::spawn().await;
    let service = service(&app);
    let t0 = OffsetDateTime::now_utc() - Duration::minutes(1);
    apply(
        &service,
        vec![
            op("alice", "p1", LikeAction::Like, t0),
            op("bob", "p1", LikeAction::Like, t0 + Duration::seconds(1)),
            op("carol", "p2", LikeAction::Like, t0 + Duration::seconds(2)),
        ],
    )
    .await;
    let first = app.store().likers(&post("p2"), 1, None).await.unwrap();
    assert_eq!(first.items[0].user_id, user("carol"));
    // p2's boundary is newer than both of p1's likers: the page is p1's, whole.
    let carol_at = &first.items[0].liked_at;
    use base64::Engine as _;
    let cursor = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(format!(r#"{{"t":"{carol_at}#carol"}}"#));
    let page = app
        .store()
        .likers(&post("p1"), 10, Some(&cursor))
        .await
        .unwrap();
    let users: Vec<UserId> = page.items.into_iter().map(|l| l.user_id).collect();
    assert_eq!(users, [user("bob"), user("alice")]);
}

/// `GET /v1/likes/counts?post_ids=…&likers=N`: the answer's `likers` field.
async fn recent(app: &TestApp, posts: &str, n: usize) -> BTreeMap<String, Vec<String>> {
    let (status, body) = app
        .call(
            Some("reader"),
            Method::GET,
            &format!("/v1/likes/counts?post_ids={posts}&likers={n}"),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    serde_json::from_value(body["likers"].clone()).unwrap()
}

#[tokio::test]
async fn counts_show_the_most_recent_likers_and_drop_those_who_unlike() {
    let app = TestApp::spawn().await;
    let service = service(&app);
    let t0 = OffsetDateTime::now_utc() - Duration::minutes(1);
    // The first batch on p1 creates the map; the second adds to it.
    apply(
        &service,
        vec![
            op("alice", "p1", LikeAction::Like, t0),
            op("bob", "p1", LikeAction::Like, t0 + Duration::seconds(1)),
        ],
    )
    .await;
    apply(
        &service,
        vec![
            op("carol", "p1", LikeAction::Like, t0 + Duration::seconds(2)),
            op("dave", "p1", LikeAction::Like, t0 + Duration::seconds(3)),
        ],
    )
    .await;
    let shown = recent(&app, "p1,p2", 3).await;
    assert_eq!(shown["p1"], ["dave", "carol", "bob"]);
    assert_eq!(shown["p2"], Vec::<String>::new());

    // Unlikes leave the list; a like of a post already liked does not move anyone.
    apply(
        &service,
        vec![
            op("dave", "p1", LikeAction::Unlike, t0 + Duration::seconds(4)),
            op("bob", "p1", LikeAction::Like, t0 + Duration::seconds(5)),
        ],
    )
    .await;
    assert_eq!(
        recent(&app, "p1", 10).await["p1"],
        ["carol", "bob", "alice"]
    );
    // Without `likers`, the answer is the counts alone.
    let (_, body) = app
        .call(Some("reader"), Method::GET, "/v1/likes/counts?post_ids=p1")
        .await;
    assert_eq!(body, serde_json::json!({"counts": {"p1": 3}}));

    for bad in ["0", "11", "x", ""] {
        let (status, problem) = app
            .call(
                Some("reader"),
                Method::GET,
                &format!("/v1/likes/counts?post_ids=p1&likers={bad}"),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(problem["code"], "invalid_likers");
    }
}

#[tokio::test]
async fn a_counter_that_predates_the_recent_likers_gets_them_with_its_next_batch() {
    let app = TestApp::spawn().await;
    // A counter written before recent likers existed: no map.
    app.store()
        .add_to_like_count(&post("p1"), 1, &BTreeSet::from([3]), &[])
        .await
        .unwrap();
    let service = service(&app);
    let at = OffsetDateTime::now_utc() - Duration::minutes(1);
    apply(&service, vec![op("erin", "p1", LikeAction::Like, at)]).await;
    assert_eq!(recent(&app, "p1", 5).await["p1"], ["erin"]);
    // An unlike of someone the map never held is no error either.
    apply(&service, vec![op("zed", "p1", LikeAction::Unlike, at)]).await;
    assert_eq!(recent(&app, "p1", 5).await["p1"], ["erin"]);
}

#[tokio::test]
async fn the_recent_likers_stay_short_and_keep_the_newest() {
    let app = TestApp::spawn().await;
    let service = service(&app);
    let t0 = OffsetDateTime::now_utc() - Duration::minutes(10);
    // Batches of 7 likers: the list passes the trim threshold several times.
    for batch in 0..12 {
        let ops = (0..7)
            .map(|i| {
                let n = batch * 7 + i;
                on_p1(n, LikeAction::Like, t0 + secs(n))
            })
            .collect();
        apply(&service, ops).await;
        let counter = app.store().like_counter(&post("p1")).await.unwrap();
        assert!(
            counter.recent_likers.len() <= RECENT_LIKERS_TRIM_ABOVE,
            "{} after batch {batch}",
            counter.recent_likers.len()
        );
    }
    let newest: Vec<String> = (74..84).rev().map(|n| format!("u{n:03}")).collect();
    assert_eq!(recent(&app, "p1", MAX_RECENT_LIKERS).await["p1"], newest);
    let tidies =
        service.store.usage().snapshot()["dynamodb:UpdateItem tidy_recent_likers"].requests;
    // The list reaches 35 after five batches, then 31 every three: three trims.
    assert_eq!(tidies, 3, "a trim per 21 new likers");
}

#[tokio::test]
async fn reconcile_refills_the_recent_likers_after_unlikes_emptied_them() {
    let app = TestApp::spawn().await;
    let service = service(&app);
    let t0 = OffsetDateTime::now_utc() - Duration::minutes(10);
    let likes = (0..40)
        .map(|n| on_p1(n, LikeAction::Like, t0 + secs(n)))
        .collect();
    apply(&service, likes).await;
    // The ten newest unlike: the counter's list (trimmed to ten) is empty.
    let unlikes = (30..40)
        .map(|n| on_p1(n, LikeAction::Unlike, t0 + secs(100 + n)))
        .collect();
    apply(&service, unlikes).await;
    assert_eq!(recent(&app, "p1", 3).await["p1"], Vec::<String>::new());

    app.reconciler()
        .run(OffsetDateTime::now_utc())
        .await
        .unwrap();
    assert_eq!(recent(&app, "p1", 3).await["p1"], ["u029", "u028", "u027"]);
    let (_, count) = app
        .call(Some("reader"), Method::GET, "/v1/posts/p1/likes")
        .await;
    assert_eq!(count["count"], 30);
}

/// A count read through a gateway: the body and its `Cache-Control`.
async fn read_count(gateway: &axum::Router, uri: &str) -> (serde_json::Value, String) {
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;
    let request = axum::http::Request::builder()
        .uri(uri)
        .header("x-dev-user", "reader")
        .body(axum::body::Body::empty())
        .unwrap();
    let response = gateway.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let cache_control = response.headers()["cache-control"]
        .to_str()
        .unwrap()
        .to_owned();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (serde_json::from_slice(&body).unwrap(), cache_control)
}

#[tokio::test]
async fn the_deployed_count_cache_window_is_the_templates_and_responses_say_it() {
    let mut app = TestApp::spawn().await;
    app.stack.count_cache = None;
    let window = app.stack.like_api().unwrap().service.count_cache.window();
    assert_eq!(
        window,
        StdDuration::from_secs(1),
        "template.yaml's TALLY_COUNT_CACHE_SECONDS"
    );
    let gateway = app.stack.gateway().unwrap().router();
    let (count, cache_control) = read_count(&gateway, "/v1/posts/p1/likes").await;
    assert_eq!(count["count"], 0);
    assert_eq!(
        cache_control, "public, max-age=1",
        "a fresh read may be kept the whole window"
    );
    let (_, cache_control) = read_count(&gateway, "/v1/likes/counts?post_ids=p2").await;
    assert_eq!(cache_control, "public, max-age=1");
}

#[tokio::test]
async fn a_count_is_served_from_memory_for_one_window_and_clients_may_keep_it_one_more() {
    let mut app = TestApp::spawn().await;
    let window = StdDuration::from_secs(3);
    app.stack.count_cache = Some(window);
    let gateway = app.stack.gateway().unwrap().router();
    let first_read = std::time::Instant::now();
    let (count, cache_control) = read_count(&gateway, "/v1/posts/p1/likes").await;
    assert_eq!(
        (count["count"].as_u64(), cache_control.as_str()),
        (Some(0), "public, max-age=3")
    );

    let at = OffsetDateTime::now_utc();
    apply(
        &service(&app),
        vec![op("alice", "p1", LikeAction::Like, at)],
    )
    .await;
    let (cached, cache_control) = read_count(&gateway, "/v1/posts/p1/likes").await;
    let age = first_read.elapsed();
    if age < StdDuration::from_secs(2) {
        assert_eq!(cached["count"], 0, "served from memory within the window");
    }
    assert_eq!(
        cache_control, "public, max-age=3",
        "the window, on hits too"
    );
    tokio::time::sleep(window.saturating_sub(first_read.elapsed()) + StdDuration::from_millis(50))
        .await;
    let (fresh, _) = read_count(&gateway, "/v1/posts/p1/likes").await;
    assert_eq!(fresh["count"], 1, "read again once the window passed");
    let (counts, _) = read_count(&gateway, "/v1/likes/counts?post_ids=p1,p2").await;
    assert_eq!(counts["counts"], serde_json::json!({"p1": 1, "p2": 0}));
}

#[tokio::test]
async fn a_read_storm_on_one_post_costs_one_dynamodb_read_per_window() {
    let app = TestApp::spawn().await;
    let mut like_api = app.stack.like_api().unwrap();
    like_api.service.count_cache =
        shared::likes_service::CountCache::new(StdDuration::from_secs(60));
    let before = like_api.service.store.usage().snapshot();
    for _ in 0..1000 {
        like_api.service.count(&post("viral")).await.unwrap();
        like_api
            .service
            .counts(&[post("viral"), post("other")])
            .await
            .unwrap();
    }
    let after = like_api.service.store.usage().snapshot();
    let reads = |snapshot: &BTreeMap<&str, shared::usage::Counts>| -> u64 {
        snapshot
            .iter()
            .filter(|(call, _)| call.contains("like_count"))
            .map(|(_, c)| c.requests)
            .sum()
    };
    // The first count read, and the first counts read for "other".
    assert_eq!(reads(&after) - reads(&before), 2);
}

/// Takes a register back to how it was before the likers index: liked, no `likers_sk`.
async fn unindex(app: &TestApp, who: &str, on: &str) {
    aws_sdk_dynamodb::Client::new(&tests::emulator().await)
        .update_item()
        .table_name(app.store().table_name())
        .key(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S(keys::like_register_pk(
                &post(on),
                &user(who),
            )),
        )
        .key(
            "sk",
            aws_sdk_dynamodb::types::AttributeValue::S(keys::like_register_sk(&user(who))),
        )
        .update_expression("REMOVE likers_sk")
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn reconcile_indexes_the_likers_of_registers_from_before_the_likers_list() {
    let app = TestApp::spawn().await;
    let service = service(&app);
    let t0 = OffsetDateTime::now_utc() - Duration::minutes(10);
    apply(
        &service,
        vec![
            op("alice", "p1", LikeAction::Like, t0),
            op("bob", "p1", LikeAction::Like, t0 + secs(1)),
            op("carol", "p1", LikeAction::Like, t0 + secs(2)),
        ],
    )
    .await;
    // As deployed before the index: alice and bob liked, neither is listed.
    unindex(&app, "alice", "p1").await;
    unindex(&app, "bob", "p1").await;
    let listed = |page: shared::store::likers::LikersPage| -> Vec<String> {
        page.items
            .into_iter()
            .map(|l| l.user_id.as_str().to_owned())
            .collect()
    };
    let page = app.store().likers(&post("p1"), 10, None).await.unwrap();
    assert_eq!(listed(page), ["carol"]);
    // bob likes again after the upgrade: his register keeps its first
    // liked_at, and the index gets that time too, not the new like's.
    apply(
        &service,
        vec![op("bob", "p1", LikeAction::Like, t0 + secs(60))],
    )
    .await;
    let page = app.store().likers(&post("p1"), 10, None).await.unwrap();
    let bob_at = page.items.last().unwrap().liked_at.clone();
    assert_eq!(listed(page), ["carol", "bob"]);
    assert_eq!(bob_at, shared::domain::timestamp::format(t0 + secs(1)));

    app.reconciler()
        .run(OffsetDateTime::now_utc())
        .await
        .unwrap();
    let page = app.store().likers(&post("p1"), 10, None).await.unwrap();
    let when: Vec<(String, String)> = page
        .items
        .iter()
        .map(|l| (l.user_id.as_str().to_owned(), l.liked_at.clone()))
        .collect();
    let at = |s: i64| shared::domain::timestamp::format(t0 + secs(s));
    assert_eq!(
        when,
        [
            ("carol".to_owned(), at(2)),
            ("bob".to_owned(), at(1)),
            ("alice".to_owned(), at(0))
        ],
        "every liker indexed at the time their register says"
    );
    // A second run finds nothing left to index.
    app.reconciler()
        .run(OffsetDateTime::now_utc())
        .await
        .unwrap();
    assert_eq!(
        listed(app.store().likers(&post("p1"), 10, None).await.unwrap()),
        ["carol", "bob", "alice"]
    );
}

/// Sets a post counter's recent likers behind the service's back.
async fn set_recent_likers(app: &TestApp, on: &str, likers: Option<Vec<(String, i64)>>) {
    use aws_sdk_dynamodb::types::AttributeValue;
    let request = aws_sdk_dynamodb::Client::new(&tests::emulator().await)
        .update_item()
        .table_name(app.store().table_name())
        .key("pk", AttributeValue::S(keys::counter_pk(&post(on))))
        .key("sk", AttributeValue::S(keys::COUNTER_SK.to_owned()));
    let request = match likers {
        None => request.update_expression("REMOVE recent_likers"),
        Some(likers) => request
            .update_expression("SET recent_likers = :m")
            .expression_attribute_values(
                ":m",
                AttributeValue::M(
                    likers
                        .into_iter()
                        .map(|(u, at)| (u, AttributeValue::N(at.to_string())))
                        .collect(),
                ),
            ),
    };
    request.send().await.unwrap();
}

#[tokio::test]
async fn a_recent_likers_list_grown_long_shrinks_a_bounded_tidy_per_batch() {
    let app = TestApp::spawn().await;
    let service = service(&app);
    let t0 = OffsetDateTime::now_utc() - Duration::minutes(10);
    apply(&service, vec![on_p1(999, LikeAction::Like, t0)]).await;
    // As if many tidies had failed in a row: 200 entries, older than any like here.
    set_recent_likers(
        &app,
        "p1",
        Some((0..200).map(|i| (format!("old{i:03}"), i)).collect()),
    )
    .await;
    let mut lengths = Vec::new();
    for batch in 0..4 {
        apply(
            &service,
            vec![on_p1(batch, LikeAction::Like, t0 + secs(1 + batch))],
        )
        .await;
        lengths.push(
            app.store()
                .like_counter(&post("p1"))
                .await
                .unwrap()
                .recent_likers
                .len(),
        );
    }
    // +1 and -50 a batch, then the trim to the newest ten.
    assert_eq!(lengths, [151, 102, 53, 10]);
    assert_eq!(
        recent(&app, "p1", 5).await["p1"],
        ["u003", "u002", "u001", "u000", "old199"]
    );
}

#[tokio::test]
async fn reconcile_gives_a_counter_from_before_the_recent_likers_its_list() {
    let app = TestApp::spawn().await;
    let service = service(&app);
    let t0 = OffsetDateTime::now_utc() - Duration::minutes(10);
    let likes = (0..3)
        .map(|n| on_p1(n, LikeAction::Like, t0 + secs(n)))
        .collect();
    apply(&service, likes).await;
    app.reconciler()
        .run(OffsetDateTime::now_utc())
        .await
        .unwrap();
    // A counter written before recent likers existed, and not touched since.
    set_recent_likers(&app, "p1", None).await;
    assert_eq!(recent(&app, "p1", 3).await["p1"], Vec::<String>::new());
    // The sweep finds it unmarked, with no list: the settle writes one.
    app.reconciler()
        .run(OffsetDateTime::now_utc())
        .await
        .unwrap();
    assert_eq!(recent(&app, "p1", 3).await["p1"], ["u002", "u001", "u000"]);
}
