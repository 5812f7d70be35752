//! A test world's events, received as a consumer receives them: an
//! EventBridge rule on its bus, with a pattern, targeting a queue of its own.
//! Every event received is checked against its JSON Schema in
//! `schemas/events/`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;

use crate::TestApp;

/// A rule and the queue it delivers to.
pub struct Subscriber {
    sqs: aws_sdk_sqs::Client,
    url: String,
}

impl Subscriber {
    /// Every event Tally publishes (`source` prefix `tally.`).
    pub async fn all(app: &TestApp) -> Self {
        Self::with_pattern(
            app,
            "all",
            serde_json::json!({ "source": [{ "prefix": "tally." }] }),
        )
        .await
    }

    /// The events `pattern` matches, as an EventBridge rule named `name` matches them.
    pub async fn with_pattern(app: &TestApp, name: &str, pattern: Value) -> Self {
        let url = app
            .stack
            .subscribe(name, &pattern.to_string())
            .await
            .expect("a rule on the bus, to a queue");
        let sqs = aws_sdk_sqs::Client::new(&crate::emulator().await);
        Self { sqs, url }
    }

    /// Every event delivered since the last call, in the order received, each
    /// checked against its schema.
    pub async fn received(&self) -> Vec<Value> {
        let events = self.received_unchecked().await;
        for event in &events {
            check_schema(event);
        }
        events
    }

    /// [`received`](Self::received), leaving the schema check to the caller.
    pub async fn received_unchecked(&self) -> Vec<Value> {
        let mut events = Vec::new();
        loop {
            let messages = self
                .sqs
                .receive_message()
                .queue_url(&self.url)
                .max_number_of_messages(10)
                .send()
                .await
                .unwrap()
                .messages
                .unwrap_or_default();
            if messages.is_empty() {
                return events;
            }
            for message in messages {
                let event: Value = serde_json::from_str(message.body().unwrap()).unwrap();
                events.push(event);
                self.sqs
                    .delete_message()
                    .queue_url(&self.url)
                    .receipt_handle(message.receipt_handle().unwrap())
                    .send()
                    .await
                    .unwrap();
            }
        }
    }
}

/// The schema file of a detail-type: `Like Added` → `like-added.json`.
pub fn schema_path(detail_type: &str) -> PathBuf {
    let slug = detail_type.to_ascii_lowercase().replace(' ', "-");
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../schemas/events")
        .join(format!("{slug}.json"))
}

/// Panics with every error when `event` does not match its detail-type's schema.
pub fn check_schema(event: &Value) {
    let errors = schema_errors(event);
    assert!(errors.is_empty(), "{errors:?}\n{event}");
}

/// How `event` breaks its detail-type's schema (an unknown type is an error).
pub fn schema_errors(event: &Value) -> Vec<String> {
    let Some(detail_type) = event["detail-type"].as_str() else {
        return vec!["no detail-type".to_owned()];
    };
    let path = schema_path(detail_type);
    let Ok(text) = std::fs::read_to_string(&path) else {
        return vec![format!("{detail_type}: no schema at {}", path.display())];
    };
    let schema: Value = serde_json::from_str(&text).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    validator
        .iter_errors(event)
        .map(|error| format!("{detail_type}: {error} at {}", error.instance_path))
        .collect()
}

/// Events by `detail.event_id`, each with how many times it was received.
pub fn by_id(events: &[Value]) -> BTreeMap<String, (Value, usize)> {
    let mut seen: BTreeMap<String, (Value, usize)> = BTreeMap::new();
    for event in events {
        let id = event["detail"]["event_id"].as_str().unwrap().to_owned();
        seen.entry(id).or_insert_with(|| (event.clone(), 0)).1 += 1;
    }
    seen
}
