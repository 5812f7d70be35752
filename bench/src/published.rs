//! Events (docs/events.md): what publishing adds per operation, in events,
//! `PutEvents` requests, billed entries and dollars, and how long after its
//! 202 a like's `Like Added` reaches a subscriber's queue through a rule.
//!
//! The stack runs as `make dev` runs it: the worker's mappings with the
//! template's batching windows, the stream read into the events function, a
//! rule on the bus delivering every event to a queue. The delay is measured
//! on the emulator, with the local pollers' pauses in it: a benchmark
//! figure, never a test's limit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Method, Request};
use dev_gateway::{LocalStack, StackOptions};
use http_body_util::BodyExt as _;
use serde::Serialize;
use shared::bus::EventBus;
use shared::config::SdkConfig;
use shared::usage::Usage;
use tower::ServiceExt as _;

use crate::cost::PRICES;

#[derive(Debug, Clone, Serialize)]
pub struct EventsResult {
    pub likes: usize,
    pub points_operations: usize,
    /// Distinct events per like (its `Like Added`, and its share of the
    /// `Like Count Changed` of each batch).
    pub events_per_like: f64,
    /// Distinct events per points operation (`Points Operation Settled`).
    pub events_per_points_operation: f64,
    pub put_events_requests_per_operation: f64,
    /// EventBridge bills each entry per started 64 KB.
    pub billed_entries_per_operation: f64,
    pub event_dollars_per_million_operations: f64,
    /// From the like's 202 to its `Like Added` in the subscriber's queue.
    pub delay_ms_p50: f64,
    pub delay_ms_p99: f64,
    pub delay_samples: usize,
}

pub async fn measure(aws: &SdkConfig, scale: f64) -> EventsResult {
    let id = uuid::Uuid::now_v7().simple().to_string();
    let stack = LocalStack::provision(aws, &StackOptions::deployed(&format!("b-{id}")).unwrap())
        .await
        .expect("provision the benchmark's stack");
    let usage = Arc::new(Usage::default());
    let publisher = events::Publisher::new(
        EventBus::from_config(aws, &stack.event_bus).with_usage(usage.clone()),
        stack.events_dead_letters.clone(),
    );
    let subscriber = (
        aws_sdk_sqs::Client::new(aws),
        stack
            .subscribe("subscriber", r#"{"source": [{"prefix": "tally."}]}"#)
            .await
            .expect("a rule on the bus"),
    );
    let worker = stack.worker().unwrap();
    let mut pumps = Vec::new();
    for mapping in stack.mappings(None).unwrap() {
        pumps.push(tokio::spawn(mapping.run(worker.clone())));
    }
    pumps.push(tokio::spawn(stack.stream_mapping().unwrap().run(publisher)));
    let gateway = stack.gateway().unwrap().router();

    // Arrivals, by the operation id a Like Added names; every event by id.
    let arrivals: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let seen: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let receiver = {
        let (sqs, url) = subscriber.clone();
        let (arrivals, seen) = (arrivals.clone(), seen.clone());
        tokio::spawn(async move {
            loop {
                let Ok(output) = sqs
                    .receive_message()
                    .queue_url(&url)
                    .max_number_of_messages(10)
                    .wait_time_seconds(1)
                    .send()
                    .await
                else {
                    continue;
                };
                let now = Instant::now();
                for message in output.messages.unwrap_or_default() {
                    let event: serde_json::Value =
                        serde_json::from_str(message.body().unwrap_or("{}")).unwrap_or_default();
                    let detail = &event["detail"];
                    let detail_type = event["detail-type"].as_str().unwrap_or("").to_owned();
                    if detail_type == shared::domain::events::LIKE_ADDED {
                        let op = detail["operation_id"].as_str().unwrap_or("").to_owned();
                        arrivals.lock().unwrap().entry(op).or_insert(now);
                    }
                    let event_id = detail["event_id"].as_str().unwrap_or("").to_owned();
                    seen.lock().unwrap().insert(event_id, detail_type);
                    if let Some(receipt) = message.receipt_handle() {
                        let _ = sqs
                            .delete_message()
                            .queue_url(&url)
                            .receipt_handle(receipt)
                            .send()
                            .await;
                    }
                }
            }
        })
    };

    // Likes at a steady 20 a second, from distinct users on 10 posts.
    let likes = ((1000.0 * scale) as usize).max(50);
    let mut sent = HashMap::new();
    let mut pace = tokio::time::interval(Duration::from_millis(50));
    for i in 0..likes {
        pace.tick().await;
        let uri = format!("/v1/posts/post-{}/like", i % 10);
        let (status, body) = call(&gateway, Method::PUT, &uri, &format!("user-{i}"), None).await;
        assert_eq!(status, 202, "{body}");
        let op = body["operation_id"].as_str().unwrap().to_owned();
        sent.insert(op, Instant::now());
    }
    let waited = Instant::now();
    while arrivals.lock().unwrap().len() < likes && waited.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // What each source published, counted by detail-type.
    let of_source = |source: &str| {
        seen.lock()
            .unwrap()
            .values()
            .filter(|detail_type| {
                shared::domain::events::ALL
                    .iter()
                    .any(|(s, t)| *s == source && t == detail_type)
            })
            .count()
    };

    // Points: grants, then spends, one account each.
    let points_operations = ((200.0 * scale) as usize).max(20);
    for i in 0..points_operations {
        let (uri, user, body) = if i % 2 == 0 {
            (
                "/v1/points/grants",
                "admin".to_owned(),
                serde_json::json!({"user_id": format!("member-{i}"), "amount": 100, "point_type": "bonus"}),
            )
        } else {
            (
                "/v1/me/points/spend",
                format!("member-{}", i - 1),
                serde_json::json!({"amount": 10}),
            )
        };
        let key = format!("op-{i}");
        let (status, body) = call(&gateway, Method::POST, uri, &user, Some((&key, body))).await;
        assert_eq!(status, 202, "{body}");
    }
    let waited = Instant::now();
    while of_source(shared::domain::events::POINTS_SOURCE) < points_operations
        && waited.elapsed() < Duration::from_secs(120)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (like_events, points_events) = (
        of_source(shared::domain::events::LIKES_SOURCE),
        of_source(shared::domain::events::POINTS_SOURCE),
    );
    receiver.abort();
    for pump in pumps {
        pump.abort();
    }

    let mut delays: Vec<f64> = arrivals
        .lock()
        .unwrap()
        .iter()
        .filter_map(|(op, arrived)| {
            let accepted = sent.get(op)?;
            Some(arrived.duration_since(*accepted).as_secs_f64() * 1000.0)
        })
        .collect();
    delays.sort_by(f64::total_cmp);
    let percentile = |p: f64| {
        delays
            .get(((delays.len() as f64 * p).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or(f64::NAN)
    };
    let counted = usage.snapshot();
    let count = |snapshot: &std::collections::BTreeMap<&str, shared::usage::Counts>, call: &str| {
        snapshot.get(call).map_or(0, |c| c.requests) as f64
    };
    let operations = (likes + points_operations) as f64;
    let billed = count(&counted, "events:PutEvents entry");
    EventsResult {
        likes,
        points_operations,
        events_per_like: like_events as f64 / likes as f64,
        events_per_points_operation: points_events as f64 / points_operations as f64,
        put_events_requests_per_operation: count(&counted, "events:PutEvents") / operations,
        billed_entries_per_operation: billed / operations,
        event_dollars_per_million_operations: billed / operations
            * PRICES.eventbridge_per_million_events,
        delay_ms_p50: percentile(0.50),
        delay_ms_p99: percentile(0.99),
        delay_samples: delays.len(),
    }
}

async fn call(
    gateway: &axum::Router,
    method: Method,
    uri: &str,
    user: &str,
    write: Option<(&str, serde_json::Value)>,
) -> (u16, serde_json::Value) {
    let mut request = Request::builder()
        .method(method)
        .uri(uri)
        .header("x-dev-user", user)
        .header("x-dev-scopes", "likes:write points:admin")
        .header("content-type", "application/json");
    let body = match write {
        Some((key, json)) => {
            request = request.header("idempotency-key", key);
            Body::from(json.to_string())
        }
        None => Body::empty(),
    };
    let response = gateway
        .clone()
        .oneshot(request.body(body).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or_default())
}

pub fn print(result: &EventsResult) {
    println!();
    println!(
        "events ({} likes at 20/s, {} points operations; make dev's pumps and windows on the emulator):",
        result.likes, result.points_operations
    );
    println!(
        "  events per like {:.2}, per points operation {:.2}; PutEvents requests per operation {:.3}; billed entries per operation {:.2} → ${:.2} per million operations (EventBridge ${:.2} per million entries)",
        result.events_per_like,
        result.events_per_points_operation,
        result.put_events_requests_per_operation,
        result.billed_entries_per_operation,
        result.event_dollars_per_million_operations,
        PRICES.eventbridge_per_million_events,
    );
    println!(
        "  a like's 202 to its Like Added in a subscriber's queue: p50 {:.0} ms, p99 {:.0} ms ({} samples)",
        result.delay_ms_p50, result.delay_ms_p99, result.delay_samples
    );
}
