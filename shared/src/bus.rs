//! The EventBridge adapter. Every EventBridge call Tally makes is in this module.
//!
//! [`EventBus::publish`] sends events in order, ten per `PutEvents` (its
//! limit), and retries what EventBridge did not take: a call that failed whole,
//! or the entries a partial answer (`FailedEntryCount` > 0) marks failed. A
//! failed entry is sent again with every later entry that shares one of its
//! ordering keys (the accounts whose entries it reports, the post), so each
//! account's events are sent again in their order, not one overtaking another. What is still unpublished after the last attempt is
//! answered, never dropped: the caller retries it from there.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_eventbridge::Client;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;

use crate::domain::events::Event;
use crate::usage::Usage;

/// EventBridge takes at most this many entries per `PutEvents`.
pub const PUT_EVENTS_MAX_ENTRIES: usize = 10;
/// Attempts per event before the caller is told it is unpublished.
pub const PUBLISH_ATTEMPTS: u32 = 4;
/// EventBridge bills `PutEvents` per entry per started 64 KB.
pub const BILLED_CHUNK_BYTES: usize = 64 * 1024;

/// An event and the keys its order is kept within (an account, a post).
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    pub event: Event,
    pub ordering_keys: Vec<String>,
}

/// The first event not published, and why.
#[derive(Debug, thiserror::Error)]
#[error("event {first} of the batch and those after it were not published: {reason}")]
pub struct Unpublished {
    /// Its index in what was given to [`EventBus::publish`].
    pub first: usize,
    pub reason: String,
}

#[derive(Debug, Clone)]
pub struct EventBus {
    client: Client,
    name: String,
    usage: Arc<Usage>,
    /// Pause before the second attempt; doubled before each later one.
    first_backoff: Duration,
}

impl EventBus {
    pub fn new(client: Client, name: impl Into<String>) -> Self {
        Self {
            client,
            name: name.into(),
            usage: Arc::default(),
            first_backoff: Duration::from_millis(100),
        }
    }

    pub fn from_config(aws: &aws_config::SdkConfig, name: impl Into<String>) -> Self {
        Self::new(Client::new(aws), name)
    }

    /// The same bus, counting its calls on `usage`.
    pub fn with_usage(self, usage: Arc<Usage>) -> Self {
        Self { usage, ..self }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Publishes `events` in order. `Err` names the first that is still
    /// unpublished after [`PUBLISH_ATTEMPTS`], or when `until` comes (the
    /// caller's deadline); some after it may have been published (a consumer
    /// dedupes them by `event_id`).
    pub async fn publish(
        &self,
        events: &[Outgoing],
        until: Option<tokio::time::Instant>,
    ) -> Result<(), Unpublished> {
        let mut waiting: Vec<usize> = (0..events.len()).collect();
        let mut backoff = self.first_backoff;
        let mut reason = String::new();
        let out_of_time = || until.is_some_and(|until| tokio::time::Instant::now() >= until);
        for attempt in 0..PUBLISH_ATTEMPTS {
            if waiting.is_empty() {
                return Ok(());
            }
            if attempt > 0 {
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
            let mut failed = Vec::new();
            for chunk in waiting.chunks(PUT_EVENTS_MAX_ENTRIES) {
                if out_of_time() {
                    reason = "out of time before the invocation's deadline".to_owned();
                    failed.extend_from_slice(chunk);
                    continue;
                }
                match self.put(chunk.iter().filter_map(|&i| events.get(i))).await {
                    Ok(rejected) => {
                        failed.extend(rejected.into_iter().filter_map(|(position, why)| {
                            reason = why;
                            chunk.get(position).copied()
                        }))
                    }
                    Err(why) => {
                        reason = why;
                        failed.extend_from_slice(chunk);
                    }
                }
            }
            waiting = with_later_of_same_key(events, &waiting, &failed);
        }
        match waiting.first() {
            None => Ok(()),
            Some(&first) => Err(Unpublished { first, reason }),
        }
    }

    /// One `PutEvents`: the positions of the entries it did not take, with why.
    async fn put<'a>(
        &self,
        events: impl Iterator<Item = &'a Outgoing>,
    ) -> Result<Vec<(usize, String)>, String> {
        let mut entries = Vec::new();
        let mut billed = 0;
        for outgoing in events {
            let event = &outgoing.event;
            let detail = event.detail.to_string();
            billed += (event.source.len() + event.detail_type.len() + detail.len())
                .div_ceil(BILLED_CHUNK_BYTES);
            entries.push(
                PutEventsRequestEntry::builder()
                    .event_bus_name(&self.name)
                    .source(event.source)
                    .detail_type(event.detail_type)
                    .detail(detail)
                    .build(),
            );
        }
        let output = self
            .client
            .put_events()
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|err| crate::http::error_chain(&err))?;
        self.usage.record("events:PutEvents", 0.0, 0.0);
        for _ in 0..billed {
            self.usage.record("events:PutEvents entry", 0.0, 0.0);
        }
        if output.failed_entry_count == 0 {
            return Ok(Vec::new());
        }
        Ok(output
            .entries
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .filter(|(_, result)| result.error_code.is_some())
            .map(|(position, result)| {
                let why = format!(
                    "{}: {}",
                    result.error_code.unwrap_or_default(),
                    result.error_message.unwrap_or_default()
                );
                (position, why)
            })
            .collect())
    }
}

/// What to send again: each failed event, and every later one (in `waiting`'s
/// order) that shares an ordering key with a failed event before it.
fn with_later_of_same_key(events: &[Outgoing], waiting: &[usize], failed: &[usize]) -> Vec<usize> {
    let mut keys_failed = std::collections::HashSet::new();
    waiting
        .iter()
        .copied()
        .filter(|i| {
            let keys = events
                .get(*i)
                .map_or(&[][..], |e| e.ordering_keys.as_slice());
            let again =
                failed.contains(i) || keys.iter().any(|key| keys_failed.contains(key.as_str()));
            if again {
                keys_failed.extend(keys.iter().map(String::as_str));
            }
            again
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outgoing(keys: &[&str]) -> Outgoing {
        Outgoing {
            event: Event {
                source: "tally.points",
                detail_type: "Points Operation Settled",
                event_id: String::new(),
                detail: serde_json::Value::Null,
            },
            ordering_keys: keys.iter().map(|k| (*k).to_owned()).collect(),
        }
    }

    #[test]
    fn a_failed_event_is_sent_again_with_the_later_events_of_its_key_only() {
        let events: Vec<Outgoing> = ["a", "b", "a", "c", "b", "a"]
            .iter()
            .map(|k| outgoing(&[k]))
            .collect();
        let waiting: Vec<usize> = (0..6).collect();
        // Event 2 (key a) failed: 5 (a) goes again with it; 0 (a, before it) does not.
        assert_eq!(with_later_of_same_key(&events, &waiting, &[2]), vec![2, 5]);
        assert_eq!(
            with_later_of_same_key(&events, &waiting, &[1, 3]),
            vec![1, 3, 4]
        );
        assert!(with_later_of_same_key(&events, &waiting, &[]).is_empty());
    }

    #[test]
    fn an_event_of_two_accounts_holds_back_the_later_events_of_both() {
        // A transfer (a and b) fails: b's later event goes again, and so do
        // the events after it that share c with that one.
        let events = vec![
            outgoing(&["a", "b"]),
            outgoing(&["c"]),
            outgoing(&["b", "c"]),
            outgoing(&["c"]),
            outgoing(&["d"]),
        ];
        let waiting: Vec<usize> = (0..5).collect();
        assert_eq!(
            with_later_of_same_key(&events, &waiting, &[0]),
            vec![0, 2, 3]
        );
    }
}
