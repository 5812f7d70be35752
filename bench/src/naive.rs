//! The designs a team would otherwise run, implemented here only (never in the
//! product) and measured against the same emulator in the same run, so the
//! cost comparison is counted, not assumed. Each is one synchronous handler
//! (API Gateway → Lambda → DynamoDB), with no queue and no worker.
//!
//! - **insert + increment:** a like is a conditional PutItem of the (user,
//!   post) item and, if it was new, an UpdateItem adding 1 to the post's count.
//!   A lost answer after the increment makes a retry count twice.
//! - **transaction per like:** the same two writes in one TransactWriteItems.
//! - **balance + ledger transaction:** a spend is one TransactWriteItems: the
//!   balance lowered if high enough, and a ledger item put if its operation id
//!   is new.

use std::time::{Duration, Instant};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem, Update};
use futures::StreamExt as _;
use rand::Rng as _;
use serde::Serialize;
use shared::config::SdkConfig;

use crate::cost::PerOp;
use crate::harness::{Harness, functions, functions_cpu};

/// Requests in flight at once, as in Tally's scenarios.
const CLIENTS: usize = 32;

#[derive(Debug, Clone, Serialize)]
pub struct NaiveRow {
    pub design: &'static str,
    pub kind: &'static str,
    pub ops: u64,
    pub dynamodb_requests_per_op: f64,
    pub write_units_per_op: f64,
    pub read_units_per_op: f64,
    /// CPU of the handler per operation, on the functions' runtime as Tally's.
    pub cpu_us_per_op: f64,
    /// Measured against the emulator (an upper bound, as for Tally's rows).
    pub handler_mean_ms: f64,
}

impl NaiveRow {
    pub fn per_op(&self) -> PerOp {
        PerOp {
            write_units: self.write_units_per_op,
            read_units: self.read_units_per_op,
            lambda_invocations: 1.0,
            // Its requests are made one after another.
            lambda_ms: crate::cost::modelled_lambda_ms(
                self.cpu_us_per_op,
                self.dynamodb_requests_per_op,
            ),
            api_requests: 1.0,
            ..PerOp::default()
        }
    }
}

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// What one operation asked of DynamoDB: requests and units, by its billing rules.
#[derive(Default)]
struct Asked {
    requests: u64,
    write_units: f64,
}

/// Runs `ops` operations `CLIENTS` at a time on the functions' runtime (as
/// Tally's handlers run) and sums what they asked.
async fn measure<F, Fut>(design: &'static str, kind: &'static str, ops: u64, op: F) -> NaiveRow
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = Asked> + Send + 'static,
{
    let cpu = functions_cpu();
    let results: Vec<(Asked, Duration)> = futures::stream::iter(0..ops)
        .map(|i| {
            let operation = op(i);
            async move {
                functions()
                    .spawn(async move {
                        let started = Instant::now();
                        let asked = operation.await;
                        (asked, started.elapsed())
                    })
                    .await
                    .expect("a naive operation")
            }
        })
        .buffer_unordered(CLIENTS)
        .collect()
        .await;
    let cpu = functions_cpu() - cpu;
    let per = |x: f64| x / ops.max(1) as f64;
    NaiveRow {
        design,
        kind,
        ops,
        dynamodb_requests_per_op: per(results.iter().map(|(a, _)| a.requests as f64).sum()),
        write_units_per_op: per(results.iter().map(|(a, _)| a.write_units).sum()),
        read_units_per_op: 0.0,
        cpu_us_per_op: per(cpu.as_secs_f64() * 1e6),
        handler_mean_ms: per(results.iter().map(|(_, d)| d.as_secs_f64() * 1000.0).sum()),
    }
}

fn like_item(i: u64) -> (String, String) {
    (format!("NAIVE#POST#p{}", i % 100), format!("USER#u{i}"))
}

fn counter_key(i: u64) -> [(String, AttributeValue); 2] {
    [
        ("pk".into(), s(format!("NAIVE#POST#p{}", i % 100))),
        ("sk".into(), s("COUNT")),
    ]
}

/// The three designs, each over as many operations as Tally's matching rows.
pub async fn measure_all(aws: &SdkConfig, scale: f64) -> Vec<NaiveRow> {
    let h = Harness::new(aws).await;
    let client = Client::new(aws);
    let table = h.table.clone();
    let likes = (2000.0 * scale).round() as u64;
    let insert_increment = measure("insert + increment", "like", likes, |i| {
        let (client, table) = (client.clone(), table.clone());
        async move {
            let (pk, sk) = like_item(i);
            let put = client
                .put_item()
                .table_name(&table)
                .item("pk", s(pk))
                .item("sk", s(sk))
                .condition_expression("attribute_not_exists(pk)")
                .send()
                .await;
            let mut asked = Asked {
                requests: 1,
                write_units: 1.0,
            };
            if put.is_ok() {
                client
                    .update_item()
                    .table_name(&table)
                    .set_key(Some(counter_key(i).into()))
                    .update_expression("ADD like_count :one")
                    .expression_attribute_values(":one", n(1))
                    .send()
                    .await
                    .expect("counter increment");
                asked.requests += 1;
                asked.write_units += 1.0;
            }
            asked
        }
    })
    .await;
    let transaction = measure("transaction per like", "like", likes, |i| {
        let (client, table) = (client.clone(), table.clone());
        async move {
            let (pk, sk) = like_item(i + likes);
            let put = Put::builder()
                .table_name(&table)
                .item("pk", s(pk))
                .item("sk", s(sk))
                .condition_expression("attribute_not_exists(pk)")
                .build()
                .expect("put");
            let update = Update::builder()
                .table_name(&table)
                .set_key(Some(counter_key(i).into()))
                .update_expression("ADD like_count :one")
                .expression_attribute_values(":one", n(1))
                .build()
                .expect("update");
            client
                .transact_write_items()
                .transact_items(TransactWriteItem::builder().put(put).build())
                .transact_items(TransactWriteItem::builder().update(update).build())
                .send()
                .await
                .expect("like transaction");
            Asked {
                requests: 1,
                write_units: 4.0,
            }
        }
    })
    .await;
    // Spends over 500 accounts that start with plenty (not measured).
    const ACCOUNTS: u64 = 500;
    futures::stream::iter(0..ACCOUNTS)
        .for_each_concurrent(CLIENTS, async |a| {
            client
                .put_item()
                .table_name(&table)
                .item("pk", s(format!("NAIVE#ACCOUNT#a{a}")))
                .item("sk", s("STATE"))
                .item("balance", n(1_000_000))
                .send()
                .await
                .expect("account");
        })
        .await;
    let spends = (2000.0 * scale).round() as u64;
    let ledger = measure("balance + ledger transaction", "spend", spends, |i| {
        let (client, table) = (client.clone(), table.clone());
        async move {
            let account = rand::rng().random_range(0..ACCOUNTS);
            let amount = rand::rng().random_range(1..=50u64);
            let pk = format!("NAIVE#ACCOUNT#a{account}");
            let debit = Update::builder()
                .table_name(&table)
                .key("pk", s(pk.clone()))
                .key("sk", s("STATE"))
                .update_expression("SET balance = balance - :amount")
                .condition_expression("balance >= :amount")
                .expression_attribute_values(":amount", n(amount))
                .build()
                .expect("update");
            let entry = Put::builder()
                .table_name(&table)
                .item("pk", s(pk))
                .item("sk", s(format!("ENTRY#op{i}")))
                .item("amount", n(amount))
                .condition_expression("attribute_not_exists(pk)")
                .build()
                .expect("put");
            client
                .transact_write_items()
                .transact_items(TransactWriteItem::builder().update(debit).build())
                .transact_items(TransactWriteItem::builder().put(entry).build())
                .send()
                .await
                .expect("spend transaction");
            Asked {
                requests: 1,
                write_units: 4.0,
            }
        }
    })
    .await;
    vec![insert_increment, transaction, ledger]
}
