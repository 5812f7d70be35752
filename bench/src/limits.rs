//! The emulator's own rate, measured in the same run with the same SDK and the
//! same concurrency, for each request kind an operation needs at minimum. An
//! operation needing requests A and B can go no faster than the emulator serves
//! A then B back to back: limit = 1 / (1/rate(A) + 1/rate(B)).
//!
//! Each scenario measures right after its own phases, on its own table, so
//! the limit sees the emulator in the state the scenario left it in.

use std::time::Instant;

use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes, Put, TransactWriteItem};
use futures::StreamExt as _;
use serde::Serialize;
use shared::config::SdkConfig;

use crate::harness::{Harness, MAX_BACKLOG, functions, functions_cpu};

const CONCURRENCY: usize = 32;

#[derive(Debug, Clone, Serialize)]
pub struct Limits {
    pub scenario: &'static str,
    pub send_message_per_s: f64,
    pub conditional_update_per_s: f64,
    pub transaction_3_items_per_s: f64,
    pub batch_get_20_per_s: f64,
    /// CPU the SDK spends per request on the functions' runtime (signing, HTTP, JSON), by request kind.
    pub sdk_cpu_us_per_send_message: f64,
    pub sdk_cpu_us_per_conditional_update: f64,
    pub sdk_cpu_us_per_transaction: f64,
    /// A like: one SendMessage and one conditional write.
    pub like: f64,
    /// A points operation: one SendMessage and one transaction.
    pub points: f64,
}

impl Limits {
    /// Operations per second the emulator could serve if each operation needed
    /// exactly these requests, back to back: a scenario whose operations also
    /// need a duplicate delivery's write, or come with reads, counts those too.
    pub fn serving(&self, sends: f64, conditional_writes: f64, batch_gets: f64) -> f64 {
        1.0 / (sends / self.send_message_per_s
            + conditional_writes / self.conditional_update_per_s
            + batch_gets / self.batch_get_20_per_s)
    }
}

/// What every raw request needs: the clients, where to send, and the scenario
/// its keys are named after.
#[derive(Clone)]
struct Raw {
    dynamodb: aws_sdk_dynamodb::Client,
    sqs: aws_sdk_sqs::Client,
    table: String,
    queue: String,
    scenario: &'static str,
    /// Items the conditional writes created, for the batch reads to read.
    written: usize,
}

/// Requests per second, and the CPU per request (the SDK's own cost), sent
/// from the functions' runtime as Tally's functions send theirs.
async fn rate<F>(requests: usize, raw: &Raw, call: fn(Raw, usize) -> F) -> (f64, f64)
where
    F: Future<Output = ()> + Send + 'static,
{
    let raw = raw.clone();
    let started = Instant::now();
    let cpu = functions_cpu();
    functions()
        .spawn(async move {
            futures::stream::iter(0..requests)
                .map(|i| call(raw.clone(), i))
                .buffer_unordered(CONCURRENCY)
                .collect::<Vec<()>>()
                .await
        })
        .await
        .expect("raw requests do not panic");
    let cpu_us = (functions_cpu() - cpu).as_secs_f64() * 1e6 / requests as f64;
    (requests as f64 / started.elapsed().as_secs_f64(), cpu_us)
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

async fn send_message(raw: Raw, i: usize) {
    raw.sqs
        .send_message()
        .queue_url(raw.queue)
        .message_body(format!("raw {i}"))
        .send()
        .await
        .unwrap();
}

async fn conditional_update(raw: Raw, i: usize) {
    raw.dynamodb
        .update_item()
        .table_name(raw.table)
        .key("pk", s(format!("RAW#{}#{i}", raw.scenario)))
        .key("sk", s("R"))
        .update_expression("SET v = :v")
        .condition_expression("attribute_not_exists(v) OR v < :v")
        .expression_attribute_values(":v", s("1"))
        .send()
        .await
        .unwrap();
}

async fn transaction_3_items(raw: Raw, i: usize) {
    let items = (0..3)
        .map(|j| {
            let put = Put::builder()
                .table_name(&raw.table)
                .item("pk", s(format!("TX#{}#{i}#{j}", raw.scenario)))
                .item("sk", s("T"))
                .condition_expression("attribute_not_exists(pk)")
                .build()
                .unwrap();
            TransactWriteItem::builder().put(put).build()
        })
        .collect();
    raw.dynamodb
        .transact_write_items()
        .set_transact_items(Some(items))
        .send()
        .await
        .unwrap();
}

async fn batch_get_20(raw: Raw, i: usize) {
    let keys = (0..20)
        .map(|j| {
            let pk = format!("RAW#{}#{}", raw.scenario, (i + j) % raw.written);
            [("pk".to_owned(), s(pk)), ("sk".to_owned(), s("R"))].into()
        })
        .collect();
    let ask = KeysAndAttributes::builder()
        .set_keys(Some(keys))
        .build()
        .unwrap();
    raw.dynamodb
        .batch_get_item()
        .request_items(raw.table, ask)
        .send()
        .await
        .unwrap();
}

pub async fn measure(
    aws: &SdkConfig,
    h: &Harness,
    scenario: &'static str,
    requests: usize,
    needs_transactions: bool,
) -> Limits {
    let sqs = aws_sdk_sqs::Client::new(aws);
    // A queue of its own, created empty and deleted after: sent from empty up
    // to the backlog the scenarios run at, as moto's receive and delete (not
    // its send, see scripts/moto_server.py) still scan the queue.
    let queue = sqs
        .create_queue()
        .queue_name(format!("tally-bench-raw-{}", uuid::Uuid::now_v7().simple()))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let raw = Raw {
        dynamodb: aws_sdk_dynamodb::Client::new(aws),
        sqs: sqs.clone(),
        table: h.table.clone(),
        queue: queue.clone(),
        scenario,
        written: requests,
    };
    let (send_message_per_s, cpu_send_message_per_s) =
        rate(MAX_BACKLOG as usize, &raw, send_message).await;
    sqs.delete_queue().queue_url(&queue).send().await.unwrap();
    let (conditional_update_per_s, cpu_conditional_update_per_s) =
        rate(requests, &raw, conditional_update).await;
    // Measured only where an operation needs them; fewer samples, as each
    // writes three items.
    let (transaction_3_items_per_s, cpu_transaction_3_items_per_s) = if needs_transactions {
        rate(requests / 10, &raw, transaction_3_items).await
    } else {
        (f64::NAN, f64::NAN)
    };
    let (batch_get_20_per_s, _) = rate(requests / 2, &raw, batch_get_20).await;
    let serial = |a: f64, b: f64| 1.0 / (1.0 / a + 1.0 / b);
    Limits {
        scenario,
        like: serial(send_message_per_s, conditional_update_per_s),
        points: serial(send_message_per_s, transaction_3_items_per_s),
        sdk_cpu_us_per_send_message: cpu_send_message_per_s,
        sdk_cpu_us_per_conditional_update: cpu_conditional_update_per_s,
        sdk_cpu_us_per_transaction: cpu_transaction_3_items_per_s,
        send_message_per_s,
        conditional_update_per_s,
        transaction_3_items_per_s,
        batch_get_20_per_s,
    }
}
