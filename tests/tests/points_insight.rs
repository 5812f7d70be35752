//! Points insight against the emulator (SPEC section 3): the balance at an
//! instant, statements that add up, leaderboards built by reconcile, and every
//! hostile parameter refused.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // test code: a panic is a failed check

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};
use shared::domain::ids::{OperationId, UserId};
use shared::domain::points::insight::Period;
use shared::domain::points::{
    Adjustment, Amount, Grant, PointsOperation, PointsRequest, SignedAmount, Transfer,
};
use shared::domain::timestamp;
use shared::message::Envelope;
use shared::store::insight::BoardLine;
use tests::{TestApp, sqs_record};
use time::{Duration, OffsetDateTime};

fn user(name: &str) -> UserId {
    UserId::parse(name).unwrap()
}

fn grant(to: &str, amount: u64) -> PointsRequest {
    PointsRequest::Grant(Grant {
        user_id: user(to),
        amount: Amount::new(amount).unwrap(),
        point_type: "bonus".to_owned(),
        description: None,
        reference: None,
    })
}

/// Applies one operation accepted at `accepted_at` through the worker, as a
/// message another service queued, the worker's clock reading `applied_at`.
async fn apply(
    app: &TestApp,
    id: &str,
    caller: &str,
    request: PointsRequest,
    (accepted_at, applied_at): (OffsetDateTime, OffsetDateTime),
) {
    let op = PointsOperation {
        operation_id: OperationId::parse(id).unwrap(),
        caller: user(caller),
        request,
        accepted_at,
    };
    let report = app
        .worker
        .apply_batch_at(
            vec![sqs_record(id, &Envelope::for_points(&op).encode())],
            applied_at,
        )
        .await;
    assert_eq!(
        (report.applied, report.failed.len()),
        (1, 0),
        "{id}: {report:?}"
    );
}

/// Accepted and applied at `at`.
fn then(at: OffsetDateTime) -> (OffsetDateTime, OffsetDateTime) {
    (at, at)
}

fn at(instant: OffsetDateTime) -> String {
    timestamp::format(instant)
}

/// Every page of a statement, checking that each page repeats the same
/// opening, closing and totals, and that they add up.
async fn statement(app: &TestApp, who: &str, query: &str) -> (Value, Vec<Value>) {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    let mut first: Option<Value> = None;
    loop {
        let uri = match &cursor {
            Some(c) => format!("/v1/me/points/statement?{query}&limit=2&cursor={c}"),
            None => format!("/v1/me/points/statement?{query}&limit=2"),
        };
        let page = app.get(who, &uri).await;
        let total: i64 = page["totals"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_i64().unwrap())
            .sum();
        assert_eq!(
            page["opening"]["balance"].as_i64().unwrap() + total,
            page["closing"]["balance"].as_i64().unwrap(),
            "opening + totals = closing: {page}"
        );
        let summary = json!([
            page["opening"],
            page["closing"],
            page["totals"],
            page["entry_count"]
        ]);
        match &first {
            None => first = Some(summary),
            Some(first) => assert_eq!(first, &summary, "every page tells the same numbers"),
        }
        items.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return (page, items),
        }
    }
}

fn seqs(items: &[Value]) -> Vec<u64> {
    items.iter().map(|e| e["seq"].as_u64().unwrap()).collect()
}

#[tokio::test]
async fn the_balance_at_any_instant_and_statements_add_up() {
    let app = TestApp::spawn().await;
    let before = OffsetDateTime::now_utc();
    let write = |who: &'static str, uri: &'static str, key: &'static str, body: Value| {
        let app = &app;
        async move {
            let (status, answer) = app.write(who, uri, key, body).await;
            assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
        }
    };
    write(
        "admin",
        "/v1/points/grants",
        "g1",
        json!({"user_id": "ann", "amount": 100, "point_type": "bonus"}),
    )
    .await;
    app.drain().await;
    let t1 = OffsetDateTime::now_utc();
    write("ann", "/v1/me/points/spend", "s1", json!({"amount": 30})).await;
    write(
        "ann",
        "/v1/me/points/holds",
        "h1",
        json!({"amount": 20, "expires_in_seconds": 900}),
    )
    .await;
    app.drain().await;
    let t2 = OffsetDateTime::now_utc();
    write(
        "ann",
        "/v1/me/points/transfers",
        "t1",
        json!({"to_user_id": "bob", "amount": 10}),
    )
    .await;
    write(
        "admin",
        "/v1/points/grants",
        "g2",
        json!({"user_id": "ann", "amount": 5, "point_type": "bonus"}),
    )
    .await;
    app.drain().await;
    let t3 = OffsetDateTime::now_utc();

    let balance_at = |instant: OffsetDateTime| {
        let app = &app;
        async move {
            app.get("ann", &format!("/v1/me/points?at={}", at(instant)))
                .await
        }
    };
    let zero = balance_at(before).await;
    assert_eq!(
        zero,
        json!({"seq": 0, "balance": 0, "held": 0, "available": 0, "at": at(before)}),
        "before the first entry: zeros"
    );
    let one = balance_at(t1).await;
    assert_eq!(
        (&one["seq"], &one["balance"], &one["held"]),
        (&json!(1), &json!(100), &json!(0))
    );
    let two = balance_at(t2).await;
    assert_eq!(
        (
            &two["seq"],
            &two["balance"],
            &two["held"],
            &two["available"]
        ),
        (&json!(3), &json!(70), &json!(20), &json!(50))
    );
    let now = balance_at(t3).await;
    let live = app.get("ann", "/v1/me/points").await;
    for field in ["balance", "held", "available"] {
        assert_eq!(
            now[field], live[field],
            "{field}: at now is the live answer {live}"
        );
    }
    // An instant equal to an entry's booked time includes it (and every
    // entry the same worker batch booked with it); a microsecond before, not.
    let ledger = app.audited_ledger("ann").await;
    let booked: Vec<OffsetDateTime> = ledger.iter().map(|e| e.booked_time().unwrap()).collect();
    for &b in &booked {
        let through = booked.iter().filter(|x| **x <= b).count();
        let before_it = booked.iter().filter(|x| **x < b).count();
        assert_eq!(balance_at(b).await["seq"], through);
        assert_eq!(
            balance_at(b - Duration::microseconds(1)).await["seq"],
            before_it
        );
    }

    // The whole ledger, two entries a page.
    let (whole, items) =
        statement(&app, "ann", &format!("from={}&to={}", at(before), at(t3))).await;
    assert_eq!(seqs(&items), [1, 2, 3, 4, 5]);
    assert_eq!(
        whole["opening"],
        json!({"seq": 0, "balance": 0, "held": 0, "available": 0})
    );
    assert_eq!(whole["closing"]["balance"], 65);
    assert_eq!(
        whole["totals"],
        json!({"grant": 105, "spend": -30, "hold": 0, "transfer_out": -10})
    );
    assert_eq!(whole["entry_count"], 5);
    // Windows tile: (before, t1] then (t1, t3] is the same ledger.
    let (first, first_items) =
        statement(&app, "ann", &format!("from={}&to={}", at(before), at(t1))).await;
    let (rest, rest_items) =
        statement(&app, "ann", &format!("from={}&to={}", at(t1), at(t3))).await;
    assert_eq!(seqs(&first_items), [1]);
    assert_eq!(seqs(&rest_items), [2, 3, 4, 5]);
    assert_eq!(first["closing"], rest["opening"]);
    assert_eq!(rest["opening"]["balance"], one["balance"]);
    // `to` defaults to now; a statement's ends are what `?at=` answers.
    let (open_ended, _) = statement(&app, "ann", &format!("from={}", at(t1))).await;
    assert_eq!(open_ended["closing"]["balance"], live["balance"]);
    for entry in &ledger {
        let booked = timestamp::parse(entry.booked()).unwrap();
        let (window, _) = statement(
            &app,
            "ann",
            &format!("from={}&to={}", at(before), at(booked)),
        )
        .await;
        let point = balance_at(booked).await;
        assert_eq!(window["closing"]["balance"], point["balance"]);
        assert_eq!(window["closing"]["held"], point["held"]);
        assert_eq!(window["closing"]["seq"], point["seq"]);
        assert!(point["seq"].as_u64() >= Some(entry.seq));
    }
    // bob's ledger starts with the transfer.
    let (bobs, _) = statement(&app, "bob", &format!("from={}", at(before))).await;
    assert_eq!(bobs["totals"], json!({"transfer_in": 10}));

    // `to` left out is the first page's now: a grant landing between pages
    // changes none of the statement's numbers.
    let first_page = app
        .get(
            "ann",
            &format!("/v1/me/points/statement?from={}&limit=1", at(before)),
        )
        .await;
    write(
        "admin",
        "/v1/points/grants",
        "g3",
        json!({"user_id": "ann", "amount": 7, "point_type": "bonus"}),
    )
    .await;
    app.drain().await;
    let cursor = first_page["next_cursor"].as_str().unwrap();
    let second_page = app
        .get(
            "ann",
            &format!(
                "/v1/me/points/statement?from={}&limit=10&cursor={cursor}",
                at(before)
            ),
        )
        .await;
    for field in ["to", "closing", "totals", "entry_count"] {
        assert_eq!(first_page[field], second_page[field], "{field}");
    }
    assert_eq!(seqs(second_page["items"].as_array().unwrap()), [2, 3, 4, 5]);
    // The cursor belongs to its window: another `to` is refused.
    let (status, problem) = app
        .call(
            Some("ann"),
            Method::GET,
            &format!(
                "/v1/me/points/statement?from={}&to={}&cursor={cursor}",
                at(before),
                at(t3)
            ),
        )
        .await;
    assert_eq!(
        (status, &problem["code"]),
        (StatusCode::BAD_REQUEST, &json!("invalid_cursor"))
    );
}

#[tokio::test]
async fn an_operation_applied_late_counts_from_when_the_ledger_took_it() {
    let app = TestApp::spawn().await;
    // A minute ago: every instant below is in the past.
    let now = OffsetDateTime::now_utc() - Duration::minutes(1);
    let applied = now + Duration::seconds(1);
    apply(&app, "g1", "admin", grant("cy", 40), then(now)).await;
    // Accepted two hours ago, applied now (a backlog, a message re-driven):
    // it counts from when the ledger took it, so what `?at=` and a statement
    // answered for the past two hours stays true.
    let late = (now - Duration::hours(2), applied);
    apply(&app, "g2", "admin", grant("cy", 2), late).await;
    // On a quiet account too: its first entry is booked when applied.
    apply(&app, "g3", "admin", grant("dot", 5), late).await;
    let ledger = app.audited_ledger("cy").await;
    assert_eq!(ledger[1].created_at, at(now - Duration::hours(2)));
    assert_eq!(ledger[1].booked(), at(applied));
    assert_eq!(app.audited_ledger("dot").await[0].booked(), at(applied));
    let between = at(now + Duration::microseconds(500_000));
    let before = app.get("cy", &format!("/v1/me/points?at={between}")).await;
    assert_eq!(
        (&before["balance"], &before["seq"]),
        (&json!(40), &json!(1)),
        "{before}"
    );
    let dot = app.get("dot", &format!("/v1/me/points?at={between}")).await;
    assert_eq!(dot["balance"], 0, "{dot}");
    // A statement that ended before g2 was applied keeps its numbers; the next one has g2.
    let (first, _) = statement(
        &app,
        "cy",
        &format!("from={}&to={between}", at(now - Duration::hours(3))),
    )
    .await;
    let (second, items) = statement(&app, "cy", &format!("from={between}")).await;
    assert_eq!(first["closing"]["balance"], 40);
    assert_eq!(
        (seqs(&items), &second["closing"]["balance"]),
        (vec![2], &json!(42))
    );
}

#[tokio::test]
async fn hostile_insight_parameters_are_refused_with_the_rule_they_broke() {
    let app = TestApp::spawn().await;
    app.write(
        "admin",
        "/v1/points/grants",
        "g1",
        json!({"user_id": "dee", "amount": 10, "point_type": "bonus"}),
    )
    .await;
    app.drain().await;
    let now = OffsetDateTime::now_utc();
    let tomorrow = at(now + Duration::days(1));
    let long_ago = at(now - Duration::days(400));
    let yesterday = at(now - Duration::days(1));
    let today = at(now);
    let cases: Vec<(String, &str)> = vec![
        (format!("/v1/me/points?at={tomorrow}"), "time_in_future"),
        ("/v1/me/points?at=yesterday".into(), "invalid_time"),
        (
            "/v1/me/points?at=2026-13-01T00:00:00Z".into(),
            "invalid_time",
        ),
        ("/v1/me/points?at=2026-12-01".into(), "invalid_time"),
        ("/v1/me/points?at=1&at=2".into(), "invalid_query"),
        ("/v1/me/points?when=now".into(), "invalid_query"),
        ("/v1/me/points/statement".into(), "invalid_query"),
        (
            format!("/v1/me/points/statement?from={today}&to={yesterday}"),
            "invalid_window",
        ),
        (
            format!("/v1/me/points/statement?from={today}&to={today}"),
            "invalid_window",
        ),
        (
            format!("/v1/me/points/statement?from={long_ago}&to={today}"),
            "window_too_long",
        ),
        (
            format!("/v1/me/points/statement?from={long_ago}"),
            "window_too_long",
        ),
        (
            format!("/v1/me/points/statement?from={yesterday}&to={tomorrow}"),
            "time_in_future",
        ),
        (
            format!("/v1/me/points/statement?from={yesterday}&limit=0"),
            "invalid_limit",
        ),
        (
            format!("/v1/me/points/statement?from={yesterday}&cursor=bm9wZQ"),
            "invalid_cursor",
        ),
        // A cursor past the window's entries (seq 7 of a one-entry ledger).
        (
            format!("/v1/me/points/statement?from={yesterday}&cursor=Nw"),
            "invalid_cursor",
        ),
        ("/v1/points/leaderboard".into(), "invalid_query"),
        (
            "/v1/points/leaderboard?period=year".into(),
            "invalid_period",
        ),
        ("/v1/points/leaderboard?period=DAY".into(), "invalid_period"),
        (
            "/v1/points/leaderboard?period=day&limit=101".into(),
            "invalid_limit",
        ),
        (
            "/v1/points/leaderboard?period=day&limit=0".into(),
            "invalid_limit",
        ),
        (
            "/v1/points/leaderboard?period=day&limit=-1".into(),
            "invalid_limit",
        ),
        ("/v1/me/points/rank?period=hour".into(), "invalid_period"),
        (
            "/v1/me/points/rank?period=day&user_id=dee".into(),
            "invalid_query",
        ),
    ];
    for (uri, code) in cases {
        let (status, body) = app.call(Some("dee"), Method::GET, &uri).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some(code)),
            "{uri}: {body}"
        );
    }
    let (status, _) = app
        .call(None, Method::GET, "/v1/points/leaderboard?period=day")
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        app.get("dee", "/v1/me/points").await["balance"],
        10,
        "reads change nothing"
    );
}

#[tokio::test]
async fn leaderboards_rank_points_earned_as_of_the_last_full_reconcile_run() {
    let app = TestApp::spawn().await;
    let board = app.get("ann", "/v1/points/leaderboard?period=all").await;
    assert_eq!(
        board,
        json!({"period": "all", "from": null, "as_of": null, "items": []})
    );

    let now = OffsetDateTime::now_utc();
    let long_ago = now - Duration::days(40); // in no period but all time
    let day_start = Period::Day.start(now).unwrap();
    let earlier_today = (now - Duration::minutes(5)).max(day_start);
    apply(&app, "g-old", "admin", grant("ann", 100), then(long_ago)).await;
    for (id, who, amount) in [
        ("g-ann", "ann", 10),
        ("g-bob", "bob", 50),
        ("g-dan", "dan", 1),
        ("g-fay", "fay", 20),
    ] {
        apply(&app, id, "admin", grant(who, amount), then(earlier_today)).await;
    }
    // An incoming transfer is earned; the sender's spend of it is not unearned.
    let transfer = PointsRequest::Transfer(Transfer {
        to_user_id: user("cat"),
        amount: Amount::new(30).unwrap(),
        description: None,
        reference: None,
    });
    apply(&app, "t-bob", "bob", transfer, then(earlier_today)).await;
    // A credit adjustment counts; a debit, a spend and a refund do not.
    let adjust = |to: &str, amount: i64| {
        PointsRequest::Adjust(Adjustment {
            user_id: user(to),
            amount: SignedAmount::new(amount).unwrap(),
            point_type: None,
            reason: Some("support".to_owned()),
            reference: None,
        })
    };
    apply(
        &app,
        "a-dan",
        "admin",
        adjust("dan", 19),
        then(earlier_today),
    )
    .await;
    apply(
        &app,
        "a-dan-2",
        "admin",
        adjust("dan", -5),
        then(earlier_today),
    )
    .await;
    let (status, _) = app
        .write("dan", "/v1/me/points/spend", "s-dan", json!({"amount": 10}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    app.drain().await;
    let (status, _) = app
        .write(
            "admin",
            "/v1/points/refunds",
            "r-dan",
            json!({"user_id": "dan", "operation_id": "s-dan", "amount": 10, "reason": "returned"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    app.drain().await;
    assert_eq!(app.status_of("admin", "r-dan").await["status"], "applied");

    let run_at = OffsetDateTime::now_utc();
    let report = app.reconciler().run(run_at).await.unwrap();
    assert_eq!(report.steps_cut_short, 0);
    let lines = |board: Value| -> Vec<(u64, String, u64)> {
        board["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                (
                    l["rank"].as_u64().unwrap(),
                    l["user_id"].as_str().unwrap().to_owned(),
                    l["earned"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    let line = |rank: u64, who: &str, earned: u64| (rank, who.to_owned(), earned);
    let all = app
        .get("ann", "/v1/points/leaderboard?period=all&limit=100")
        .await;
    assert_eq!(all["as_of"], at(run_at));
    assert_eq!(all["from"], Value::Null);
    assert_eq!(
        lines(all),
        [
            line(1, "ann", 110),
            line(2, "bob", 50),
            line(3, "cat", 30),
            line(4, "dan", 20),
            line(4, "fay", 20)
        ]
    );
    let day = app.get("ann", "/v1/points/leaderboard?period=day").await;
    assert_eq!(day["from"], at(day_start));
    assert_eq!(
        lines(day),
        [
            line(1, "bob", 50),
            line(2, "cat", 30),
            line(3, "dan", 20),
            line(3, "fay", 20),
            line(5, "ann", 10)
        ]
    );
    let two = app
        .get("ann", "/v1/points/leaderboard?period=week&limit=2")
        .await;
    assert_eq!(lines(two), [line(1, "bob", 50), line(2, "cat", 30)]);

    let rank = |who: &'static str, period: &'static str| {
        let app = &app;
        async move {
            app.get(who, &format!("/v1/me/points/rank?period={period}"))
                .await
        }
    };
    let fay = rank("fay", "day").await;
    assert_eq!(
        fay,
        json!({"period": "day", "from": at(day_start), "as_of": at(run_at), "user_id": "fay", "earned": 20, "rank": 3})
    );
    assert_eq!(rank("ann", "all").await["rank"], 1);
    let nobody = rank("eve", "month").await;
    assert_eq!(
        (&nobody["earned"], &nobody["rank"]),
        (&json!(0), &Value::Null)
    );

    // Points operations write no leaderboard line: until reconcile runs
    // again, the boards stay exactly as of `as_of`.
    let (status, _) = app
        .write(
            "admin",
            "/v1/points/grants",
            "g-ann-2",
            json!({"user_id": "ann", "amount": 100, "point_type": "bonus"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    app.drain().await;
    assert_eq!(rank("ann", "day").await["earned"], 10);
    let ann_lines = app.store().board_lines(&user("ann")).await.unwrap();
    assert!(
        ann_lines.contains(&BoardLine {
            board: Period::Day.board(run_at),
            earned: 10
        }),
        "{ann_lines:?}"
    );

    // A run cut short leaves `as_of` where it was (the boards are only exact
    // as of a run that reached every changed account).
    let mut hurried = app.reconciler();
    hurried.budget = std::time::Duration::ZERO;
    hurried.run(OffsetDateTime::now_utc()).await.unwrap();
    assert_eq!(
        app.get("ann", "/v1/points/leaderboard?period=day").await["as_of"],
        at(run_at)
    );

    let second = OffsetDateTime::now_utc();
    app.reconciler().run(second).await.unwrap();
    let ann = rank("ann", "day").await;
    assert_eq!(
        (&ann["earned"], &ann["rank"], &ann["as_of"]),
        (&json!(110), &json!(1), &json!(at(second)))
    );
    // A run over unchanged accounts writes nothing.
    let third = app
        .reconciler()
        .run(OffsetDateTime::now_utc())
        .await
        .unwrap();
    assert_eq!(third.leaderboard_lines_written, 0);
}

#[tokio::test]
async fn a_rank_counts_the_lines_above_it_and_stops_at_its_bound() {
    let app = TestApp::spawn().await;
    let store = app.store();
    let board = "day#2026-12-04";
    for (who, earned) in [("a", 9), ("b", 7), ("c", 7), ("d", 5), ("e", 1)] {
        let line = BoardLine {
            board: board.to_owned(),
            earned,
        };
        assert!(
            store
                .put_board_line(&user(who), &line, None, false)
                .await
                .unwrap()
        );
    }
    // A line only grows: a smaller count from a slower run is not written.
    let smaller = BoardLine {
        board: board.to_owned(),
        earned: 3,
    };
    assert!(
        !store
            .put_board_line(&user("a"), &smaller, None, true)
            .await
            .unwrap()
    );
    assert_eq!(
        store.board_earned(&user("a"), board).await.unwrap(),
        Some(9)
    );
    assert_eq!(
        store.board_count_ahead(board, 5, 100).await.unwrap(),
        Some(3)
    );
    assert_eq!(
        store.board_count_ahead(board, 7, 100).await.unwrap(),
        Some(1)
    );
    assert_eq!(
        store.board_count_ahead(board, 9, 100).await.unwrap(),
        Some(0)
    );
    assert_eq!(
        store.board_count_ahead(board, 1, 3).await.unwrap(),
        None,
        "4 ahead, counting at most 3"
    );
    assert_eq!(store.board_count_ahead(board, 1, 4).await.unwrap(), Some(4));
    let top = store.board_top(board, 3).await.unwrap();
    assert_eq!(top, [(user("a"), 9), (user("b"), 7), (user("c"), 7)]);
}
