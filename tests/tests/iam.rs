//! Each function runs with exactly its template policy: the emulator enforces
//! IAM, and every function's clients sign as a role holding that policy. A
//! policy that lacks an action the function needs makes the function fail, as
//! it would on AWS; what a policy does not grant is refused.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // test code: a panic is a failed check

use axum::http::{Method, StatusCode};
use dev_gateway::StackOptions;
use dev_gateway::template::Value;
use serde_json::json;
use tests::{TestApp, test_options};

/// The template with `action` taken out of `function`'s policy statements.
fn without_action(function: &str, action: &str) -> StackOptions {
    let mut options = test_options();
    let resource = options.template.resource_mut(function).unwrap();
    let mut removed = 0;
    for policy in resource.properties["Policies"].as_sequence_mut().unwrap() {
        let statements = policy["Statement"].as_sequence_mut().unwrap();
        for statement in statements.iter_mut() {
            let actions = &mut statement["Action"];
            match actions {
                Value::Sequence(list) => {
                    let before = list.len();
                    list.retain(|a| a.as_str() != Some(action));
                    removed += before - list.len();
                }
                Value::String(single) if single == action => {
                    *actions = Value::Sequence(vec![]);
                    removed += 1;
                }
                _ => {}
            }
        }
        // IAM refuses a statement without actions.
        statements.retain(|statement| {
            statement["Action"]
                .as_sequence()
                .is_none_or(|actions| !actions.is_empty())
        });
    }
    assert!(removed > 0, "{function}'s policy does not grant {action}");
    options
}

#[tokio::test]
async fn a_function_is_refused_what_its_policy_does_not_grant() {
    let app = TestApp::spawn().await;
    let like = app.stack.deployed.function("like").unwrap();
    let dynamodb = aws_sdk_dynamodb::Client::new(&like.aws);
    let write = dynamodb
        .put_item()
        .table_name(app.store().table_name())
        .item(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S("POST#x".into()),
        )
        .item(
            "sk",
            aws_sdk_dynamodb::types::AttributeValue::S("COUNT".into()),
        )
        .send()
        .await;
    let refused = write.expect_err("the like function may not write the table");
    assert_eq!(
        aws_sdk_dynamodb::error::ProvideErrorMetadata::code(&refused),
        Some("AccessDeniedException"),
        "{refused:?}"
    );
    let sqs = aws_sdk_sqs::Client::new(&like.aws);
    let sent = sqs
        .send_message()
        .queue_url(app.stack.points.queue.url())
        .message_body("{}")
        .message_group_id("g")
        .send()
        .await;
    let refused = sent.expect_err("the like function may not send to the points queue");
    // moto answers an SQS refusal as XML, which the JSON client cannot read: the status says it.
    assert_eq!(
        refused.raw_response().map(|raw| raw.status().as_u16()),
        Some(403),
        "{refused:?}"
    );
}

#[tokio::test]
async fn the_like_function_without_sqs_send_message_answers_503_and_queues_nothing() {
    let app = TestApp::spawn_from(without_action("LikeFunction", "sqs:SendMessage")).await;
    let (status, body) = app
        .call(Some("alice"), Method::PUT, "/v1/posts/p1/like")
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(app.stack.likes.queue.depth().await.unwrap(), 0);
    // Reads need no SendMessage.
    let (status, _) = app
        .call(Some("alice"), Method::GET, "/v1/posts/p1/likes")
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn the_worker_without_dynamodb_update_item_applies_no_like() {
    let app = TestApp::spawn_from(without_action("WorkerFunction", "dynamodb:UpdateItem")).await;
    for user in ["u1", "u2"] {
        let (status, body) = app.call(Some(user), Method::PUT, "/v1/posts/p1/like").await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    }
    let poll = app.mapping.poll_once(&app.worker).await.unwrap();
    assert_eq!((poll.received, poll.failed), (2, 2), "{poll:?}");
    assert_eq!(app.get("u1", "/v1/posts/p1/likes").await["count"], 0);
}

#[tokio::test]
async fn the_points_function_without_dynamodb_put_item_records_no_operation() {
    let app = TestApp::spawn_from(without_action("PointsFunction", "dynamodb:PutItem")).await;
    let grant = json!({"user_id": "alice", "amount": 5, "point_type": "bonus"});
    let (status, body) = app.write("admin", "/v1/points/grants", "g1", grant).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(app.stack.points.queue.depth().await.unwrap(), 0);
}

#[tokio::test]
async fn reconcile_without_dynamodb_scan_fails_its_run() {
    let app = TestApp::spawn_from(without_action("ReconcileFunction", "dynamodb:Scan")).await;
    let run = app.reconciler().run(time::OffsetDateTime::now_utc()).await;
    let failed = run.expect_err("reconcile may not scan");
    assert!(
        format!("{:?}", failed).contains("AccessDeniedException"),
        "{failed:?}"
    );
}
