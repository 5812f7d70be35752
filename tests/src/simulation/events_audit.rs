//! Events under the simulator (SPEC section 8): a step that reads the table's
//! stream into the events function under faults, and the auditor's checks of
//! every event the bus delivered once everything has settled.
//!
//! - Every settled points operation produced exactly one distinct `event_id`,
//!   with its status, reason and the entries its ledgers hold; nothing else
//!   produced a `Points Operation Settled`.
//! - Each account's entries, gathered from its events and ordered by `seq`,
//!   are its ledger exactly, and replay to its balance.
//! - Each (user, post)'s `Like Added` / `Like Removed` name operations the
//!   workload sent for it with that action, each once, alternate in version
//!   order starting with an add, and end in the state the model expects.
//! - Each post's `Like Count Changed` of the highest revision carries its count.
//! - An id seen twice carries the same event; every event matches its schema.

use std::collections::{BTreeMap, BTreeSet};

use dev_gateway::StreamFault;
use rand::Rng as _;
use serde_json::Value;
use shared::domain::events;
use shared::domain::ids::{OperationId, PostId, UserId};
use shared::domain::points::{EntryKind, OperationStatus, WrittenEntry};

use super::{Sim, Violation};
use crate::published::schema_errors;

impl Sim {
    /// The stream read into the events function once, which may die before
    /// its checkpoint (its batch comes again) under the faults armed.
    pub(super) async fn publish_events(&mut self) -> Result<(), Violation> {
        let fault = if self.rng.random_bool(0.75) {
            StreamFault::CrashBeforeCheckpoint
        } else {
            StreamFault::None
        };
        let poll = self
            .app
            .stream
            .poll_once_with(&self.app.publisher, fault)
            .await
            .map_err(|e| Violation(format!("reading the stream: {e}")))?;
        if fault == StreamFault::CrashBeforeCheckpoint && poll.received > 0 {
            self.fault("publisher_crash");
        }
        self.log(format!(
            "events: {} records, {} delivered again ({fault:?})",
            poll.received, poll.failed
        ));
        let received = self.subscriber.received_unchecked().await;
        self.events.extend(received);
        Ok(())
    }

    pub(super) async fn audit_events(&mut self) -> Result<(), Violation> {
        self.faults.clear();
        for _ in 0..1000 {
            let poll = self
                .app
                .stream
                .poll_once(&self.app.publisher)
                .await
                .map_err(|e| Violation(format!("reading the stream: {e}")))?;
            if poll.received == 0 {
                break;
            }
        }
        let received = self.subscriber.received_unchecked().await;
        self.events.extend(received);
        let events = std::mem::take(&mut self.events);

        let mut by_id: BTreeMap<String, &Value> = BTreeMap::new();
        for event in &events {
            let errors = schema_errors(event);
            check!(self, errors.is_empty(), "{errors:?}: {event}");
            let id = event["detail"]["event_id"].as_str().unwrap_or_default();
            if let Some(first) = by_id.insert(id.to_owned(), event) {
                check!(
                    self,
                    first["detail"] == event["detail"]
                        && first["detail-type"] == event["detail-type"],
                    "event {id} came twice with different content: {first} and {event}"
                );
            }
        }
        let distinct: Vec<&Value> = by_id.values().copied().collect();
        let of_type = |detail_type: &str| -> Vec<&Value> {
            distinct
                .iter()
                .filter(|e| e["detail-type"] == detail_type)
                .map(|e| &e["detail"])
                .collect()
        };

        // Points Operation Settled: one per settled operation, as recorded.
        let mut settled: BTreeMap<(String, String), &Value> = BTreeMap::new();
        for detail in of_type(events::POINTS_OPERATION_SETTLED) {
            let key = (
                detail["caller"].as_str().unwrap_or_default().to_owned(),
                detail["operation_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            );
            check!(
                self,
                settled.insert(key.clone(), detail).is_none(),
                "{key:?} settled under two event ids"
            );
        }
        let mut expected: BTreeSet<(String, String)> = BTreeSet::new();
        let mut operations: Vec<(String, String)> = self.model.writes.keys().cloned().collect();
        operations.extend(
            self.model
                .direct
                .iter()
                .map(|d| (d.caller.clone(), d.operation_id.clone())),
        );
        for (caller, id) in operations {
            let (Ok(user), Ok(operation_id)) = (UserId::parse(&caller), OperationId::parse(&id))
            else {
                continue;
            };
            let record = self
                .store
                .operation(&user, &operation_id)
                .await
                .map_err(|e| Violation(format!("read: {e}")))?;
            let Some(record) = record.filter(|r| r.status != OperationStatus::Pending) else {
                continue;
            };
            expected.insert((caller.clone(), id.clone()));
            let Some(detail) = settled.get(&(caller.clone(), id.clone())) else {
                check!(self, false, "{caller}/{id} settled but published nothing");
                continue;
            };
            let status = serde_json::to_value(record.status).unwrap_or_default();
            let entries: Vec<WrittenEntry> =
                serde_json::from_value(detail["entries"].clone()).unwrap_or_default();
            check!(
                self,
                detail["status"] == status
                    && detail["reason"].as_str() == record.reason.map(|r| r.code())
                    && entries == record.entries,
                "{caller}/{id}: event {detail} for record {record:?}"
            );
        }
        for key in settled.keys() {
            check!(
                self,
                expected.contains(key),
                "{key:?}: a settled event for no operation the workload settled"
            );
        }

        // Each account's entries, from its events, are its ledger.
        let mut reported: BTreeMap<String, BTreeMap<u64, (String, i64, u64)>> = BTreeMap::new();
        let mut report = |user: &str, seq: u64, kind: &str, amount: i64, after: u64| {
            reported
                .entry(user.to_owned())
                .or_default()
                .insert(seq, (kind.to_owned(), amount, after))
                .is_none()
        };
        let mut twice = Vec::new();
        for detail in settled.values() {
            for entry in detail["entries"].as_array().into_iter().flatten() {
                let user = entry["user_id"].as_str().unwrap_or_default();
                let seq = entry["seq"].as_u64().unwrap_or_default();
                let kind = entry["kind"].as_str().unwrap_or_default();
                let amount = entry["amount"].as_i64().unwrap_or_default();
                let after = entry["balance_after"].as_u64().unwrap_or_default();
                if !report(user, seq, kind, amount, after) {
                    twice.push(format!("{user}#{seq}"));
                }
            }
        }
        for (detail_type, kind) in [
            (events::POINTS_EXPIRED, "expire"),
            (events::HOLD_EXPIRED, "release"),
        ] {
            for detail in of_type(detail_type) {
                let user = detail["user_id"].as_str().unwrap_or_default();
                let seq = detail["seq"].as_u64().unwrap_or_default();
                let amount = detail["amount"].as_i64().unwrap_or_default();
                let after = detail["balance_after"].as_u64().unwrap_or_default();
                if !report(user, seq, kind, amount, after) {
                    twice.push(format!("{user}#{seq}"));
                }
            }
        }
        check!(self, twice.is_empty(), "entries reported twice: {twice:?}");
        let accounts = super::workload::accounts();
        for account in accounts {
            let user = UserId::parse(&account).expect("a sim user");
            let ledger = self
                .store
                .ledger(&user)
                .await
                .map_err(|e| Violation(format!("ledger: {e}")))?;
            let from_events = reported.remove(&account).unwrap_or_default();
            let mut balance = 0i64;
            for (seq, (kind, amount, after)) in &from_events {
                balance += amount;
                check!(
                    self,
                    *after as i64 == balance,
                    "{account}: events replay to {balance} at seq {seq}, the event says {after}"
                );
                let stored = usize::try_from(*seq)
                    .ok()
                    .and_then(|seq| ledger.get(seq.wrapping_sub(1)));
                check!(
                    self,
                    stored.is_some_and(|e| e.kind.name() == kind && e.amount == *amount),
                    "{account}#{seq}: event says {kind} {amount}, the ledger {stored:?}"
                );
            }
            let seqs: Vec<u64> = from_events.keys().copied().collect();
            let whole: Vec<u64> = (1..=ledger.len() as u64).collect();
            check!(
                self,
                seqs == whole,
                "{account}: events report seqs {seqs:?} of a ledger of {}",
                ledger.len()
            );
            let hold_expiries = ledger
                .iter()
                .filter(|e| e.kind == EntryKind::Release && e.hold_expired)
                .count();
            *self
                .entries_by_kind
                .entry("hold_expired_event")
                .or_default() += hold_expiries as u64;
        }
        check!(
            self,
            reported.is_empty(),
            "entries reported for accounts the workload never used: {:?}",
            reported.keys()
        );

        // Like flips: alternating, each an operation sent for that register.
        let mut flips: BTreeMap<(String, String), Vec<(String, bool)>> = BTreeMap::new();
        for (detail_type, liked) in [(events::LIKE_ADDED, true), (events::LIKE_REMOVED, false)] {
            for detail in of_type(detail_type) {
                let user = detail["user_id"].as_str().unwrap_or_default().to_owned();
                let post = detail["post_id"].as_str().unwrap_or_default().to_owned();
                let op = detail["operation_id"].as_str().unwrap_or_default();
                let sent = self.model.like_ops.get(op).cloned();
                check!(
                    self,
                    sent.as_ref()
                        .is_some_and(|(u, p, l, _)| *u == user && *p == post && *l == liked),
                    "{detail_type} {detail} names no {} sent for {user}/{post}",
                    if liked { "like" } else { "unlike" }
                );
                let version = sent.map(|s| s.3).unwrap_or_default();
                flips
                    .entry((user, post))
                    .or_default()
                    .push((version, liked));
            }
        }
        for ((user, post), (_, liked)) in self.model.registers.clone() {
            let mut seen = flips
                .remove(&(user.clone(), post.clone()))
                .unwrap_or_default();
            seen.sort();
            let alternate = seen
                .iter()
                .enumerate()
                .all(|(i, (_, added))| *added == (i % 2 == 0));
            let ends = seen.last().is_some_and(|(_, added)| *added);
            check!(
                self,
                alternate && ends == liked,
                "{user}/{post}: flips {seen:?} for a register that ends liked={liked}"
            );
        }
        check!(
            self,
            flips.is_empty(),
            "flips of registers never written: {:?}",
            flips.keys()
        );

        // The count of a post's newest counter write.
        let mut newest: BTreeMap<String, (u64, i64)> = BTreeMap::new();
        for detail in of_type(events::LIKE_COUNT_CHANGED) {
            let post = detail["post_id"].as_str().unwrap_or_default().to_owned();
            let revision = detail["revision"].as_u64().unwrap_or_default();
            let count = detail["count"].as_i64().unwrap_or_default();
            let entry = newest.entry(post).or_insert((revision, count));
            if revision > entry.0 {
                *entry = (revision, count);
            }
        }
        for post in self.model.posts() {
            let Ok(id) = PostId::parse(&post) else {
                continue;
            };
            let counter = self
                .store
                .counter_snapshot(&id)
                .await
                .map_err(|e| Violation(format!("counter: {e}")))?;
            let published = newest.get(&post).map_or(0, |(_, count)| *count);
            check!(
                self,
                published == counter.count,
                "{post}: the newest count published is {published}, the counter holds {}",
                counter.count
            );
        }
        Ok(())
    }
}
