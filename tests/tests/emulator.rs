//! The emulator behaves as DynamoDB does where Tally relies on it, with the
//! changes `scripts/moto_server.py` makes to moto: a cancelled transaction
//! leaves every item it named as it was, and a successful one writes them all;
//! IAM is checked per transaction item and per index, as on AWS.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // test code: a panic is a failed check

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem, Update};
use tests::TestApp;

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_owned())
}

fn put(table: &str, pk: &str, v: &str, condition: Option<&str>) -> TransactWriteItem {
    let put = Put::builder()
        .table_name(table)
        .item("pk", s(pk))
        .item("sk", s("ITEM"))
        .item("v", s(v))
        .set_condition_expression(condition.map(str::to_owned))
        .build()
        .unwrap();
    TransactWriteItem::builder().put(put).build()
}

fn update(table: &str, pk: &str, v: &str) -> TransactWriteItem {
    let update = Update::builder()
        .table_name(table)
        .key("pk", s(pk))
        .key("sk", s("ITEM"))
        .update_expression("SET v = :v")
        .expression_attribute_values(":v", s(v))
        .build()
        .unwrap();
    TransactWriteItem::builder().update(update).build()
}

async fn value(client: &Client, table: &str, pk: &str) -> Option<String> {
    let item = client
        .get_item()
        .table_name(table)
        .key("pk", s(pk))
        .key("sk", s("ITEM"))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item?;
    item.get("v")?.as_s().ok().cloned()
}

#[tokio::test]
async fn a_cancelled_transaction_leaves_every_item_as_it_was_and_a_successful_one_writes_all() {
    let app = TestApp::spawn().await;
    let table = app.store().table_name().to_owned();
    let client = Client::new(&tests::emulator().await);
    for pk in ["existing", "updated"] {
        client
            .put_item()
            .table_name(&table)
            .item("pk", s(pk))
            .item("sk", s("ITEM"))
            .item("v", s("before"))
            .send()
            .await
            .unwrap();
    }

    // moto applies items in order: the first two are written before the
    // third's condition fails, and must be undone.
    let cancelled = client
        .transact_write_items()
        .transact_items(put(&table, "new", "during", None))
        .transact_items(update(&table, "updated", "during"))
        .transact_items(put(
            &table,
            "existing",
            "during",
            Some("attribute_not_exists(pk)"),
        ))
        .send()
        .await;
    let error = cancelled.expect_err("the third item's condition fails");
    let TransactWriteItemsError::TransactionCanceledException(cancellation) =
        error.into_service_error()
    else {
        panic!("a cancelled transaction");
    };
    let reasons: Vec<&str> = cancellation
        .cancellation_reasons()
        .iter()
        .map(|r| r.code().unwrap_or_default())
        .collect();
    assert_eq!(reasons, ["None", "None", "ConditionalCheckFailed"]);
    assert_eq!(value(&client, &table, "new").await, None);
    assert_eq!(
        value(&client, &table, "updated").await.as_deref(),
        Some("before")
    );
    assert_eq!(
        value(&client, &table, "existing").await.as_deref(),
        Some("before")
    );

    client
        .transact_write_items()
        .transact_items(put(
            &table,
            "new",
            "after",
            Some("attribute_not_exists(pk)"),
        ))
        .transact_items(update(&table, "updated", "after"))
        .send()
        .await
        .expect("both conditions hold");
    assert_eq!(
        value(&client, &table, "new").await.as_deref(),
        Some("after")
    );
    assert_eq!(
        value(&client, &table, "updated").await.as_deref(),
        Some("after")
    );

    // The table's stream holds what committed, and nothing of the cancelled
    // transaction (moto wrote its first items, then rolled them back).
    let streams = aws_sdk_dynamodbstreams::Client::new(&tests::emulator().await);
    let stream_arn = app.stack.deployed.resources["Table"].attributes["StreamArn"].clone();
    let shards = streams
        .describe_stream()
        .stream_arn(&stream_arn)
        .send()
        .await
        .unwrap()
        .stream_description
        .unwrap()
        .shards
        .unwrap();
    let mut written = Vec::new();
    for shard in shards {
        let iterator = streams
            .get_shard_iterator()
            .stream_arn(&stream_arn)
            .shard_id(shard.shard_id.unwrap())
            .shard_iterator_type(aws_sdk_dynamodbstreams::types::ShardIteratorType::TrimHorizon)
            .send()
            .await
            .unwrap()
            .shard_iterator
            .unwrap();
        let records = streams
            .get_records()
            .shard_iterator(iterator)
            .send()
            .await
            .unwrap()
            .records
            .unwrap_or_default();
        for record in records {
            let image = record.dynamodb.unwrap().new_image.unwrap_or_default();
            let text = |name: &str| image.get(name).and_then(|v| v.as_s().ok()).cloned();
            if let (Some(pk), Some(v)) = (text("pk"), text("v")) {
                written.push(format!("{pk}={v}"));
            }
        }
    }
    assert_eq!(
        written,
        [
            "existing=before",
            "updated=before",
            "new=after",
            "updated=after"
        ]
    );
}

/// As on AWS, a transaction is authorized item by item (each item's own action
/// on its table), and a query on an index needs the index's own resource.
#[tokio::test]
async fn iam_authorizes_a_transaction_per_item_and_a_query_per_index() {
    let app = TestApp::spawn().await;
    let table = app.store().table_name().to_owned();
    // The worker's policy grants PutItem, UpdateItem and GetItem on the table.
    let worker = Client::new(&app.stack.deployed.function("sqs-worker").unwrap().aws);
    let allowed = worker
        .transact_write_items()
        .transact_items(put(&table, "a", "1", None))
        .transact_items(update(&table, "b", "1"))
        .send()
        .await;
    assert!(allowed.is_ok(), "{allowed:?}");
    let check = aws_sdk_dynamodb::types::ConditionCheck::builder()
        .table_name(&table)
        .key("pk", s("a"))
        .key("sk", s("ITEM"))
        .condition_expression("attribute_exists(pk)")
        .build()
        .unwrap();
    let refused = worker
        .transact_write_items()
        .transact_items(put(&table, "c", "1", None))
        .transact_items(TransactWriteItem::builder().condition_check(check).build())
        .send()
        .await
        .expect_err("the worker may not ConditionCheckItem");
    assert_eq!(
        aws_sdk_dynamodb::error::ProvideErrorMetadata::code(&refused),
        Some("AccessDeniedException")
    );
    let operator = Client::new(&tests::emulator().await);
    assert_eq!(value(&operator, &table, "c").await, None);

    // The like function may query gsi1, not gsi2.
    let like = Client::new(&app.stack.deployed.function("like").unwrap().aws);
    let query = |index: &str| {
        like.query()
            .table_name(&table)
            .index_name(index)
            .key_condition_expression("#k = :v")
            .expression_attribute_names("#k", format!("{index}pk"))
            .expression_attribute_values(":v", s("x"))
            .send()
    };
    assert!(query("gsi1").await.is_ok());
    let refused = query("gsi2")
        .await
        .expect_err("gsi2 is not the like function's");
    assert_eq!(
        aws_sdk_dynamodb::error::ProvideErrorMetadata::code(&refused),
        Some("AccessDeniedException")
    );
}
