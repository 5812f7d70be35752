//! Delivery: what the queues and Lambda do. Messages collected off SQS,
//! delivered to the worker in batches the seed picks (duplicated, reordered,
//! redelivered, crashed), dead letters redriven, reconcile run, and the end of
//! the run settled.

use std::collections::{HashSet, VecDeque};
use std::time::Duration as StdDuration;

use aws_lambda_events::sqs::{SqsEvent, SqsMessage};
use axum::http::{Method, StatusCode};
use lambda_runtime::{Context, LambdaEvent};
use rand::Rng as _;
use rand::seq::{IndexedRandom as _, SliceRandom as _};
use serde_json::Value;

use super::{Sim, Violation};

/// Receives after which the simulated SQS moves a message to its dead-letter
/// queue (as the template's `maxReceiveCount`).
const MAX_RECEIVES: u32 = 5;
/// A message the simulator holds, and how often SQS has handed it out.
pub(super) struct Pending {
    pub(super) message: SqsMessage,
    pub(super) receives: u32,
}

/// The (user, post) a like message's register belongs to.
pub(super) fn register_of(message: &SqsMessage) -> (String, String) {
    let envelope: Value =
        serde_json::from_str(message.body.as_deref().unwrap_or_default()).unwrap_or(Value::Null);
    (
        envelope["caller"].as_str().unwrap_or_default().to_owned(),
        envelope["operation"]["post_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

impl Sim {
    /// Takes every message off both queues into the simulator's pools, and
    /// tells the model what reached the queue.
    pub(super) async fn collect(&mut self) -> Result<(), Violation> {
        for points in [false, true] {
            let queue = if points {
                &self.points_queue
            } else {
                &self.likes_queue
            };
            let arn = &self.arns[usize::from(points)];
            loop {
                let received = queue
                    .receive(10, StdDuration::ZERO, arn, "us-east-1")
                    .await
                    .map_err(|e| Violation(format!("receive: {e}")))?;
                if received.is_empty() {
                    break;
                }
                let handles: Vec<String> = received
                    .iter()
                    .filter_map(|m| m.receipt_handle.clone())
                    .collect();
                queue
                    .delete(&handles)
                    .await
                    .map_err(|e| Violation(format!("delete: {e}")))?;
                for message in received {
                    let envelope: Value =
                        serde_json::from_str(message.body.as_deref().unwrap_or_default())
                            .unwrap_or(Value::Null);
                    if points {
                        self.model.queued_points(&envelope);
                        let group = message
                            .attributes
                            .get("MessageGroupId")
                            .cloned()
                            .unwrap_or_default();
                        self.points.entry(group).or_default().push_back(Pending {
                            message,
                            receives: 0,
                        });
                    } else {
                        self.model.queued_like(&envelope);
                        self.likes.push(Pending {
                            message,
                            receives: 0,
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// Invokes the worker's SQS event handler; `None` when it crashed.
    /// Notes that the worker or reconcile runs now (see `apply_times`).
    fn ran_now(&mut self) {
        let now = self.micros.load(std::sync::atomic::Ordering::SeqCst);
        self.apply_times.insert(now);
    }

    async fn invoke(&mut self, records: Vec<SqsMessage>) -> Option<HashSet<String>> {
        self.ran_now();
        let mut event = SqsEvent::default();
        event.records = records.clone();
        let answer = self
            .app
            .worker
            .handle(LambdaEvent::new(event, Context::default()))
            .await;
        if self.faults.restart() {
            self.fault("crash");
            return None;
        }
        Some(match answer {
            Ok(response) => response
                .batch_item_failures
                .into_iter()
                .map(|f| f.item_identifier)
                .collect(),
            Err(_) => records.into_iter().filter_map(|r| r.message_id).collect(),
        })
    }

    /// [`invoke`](Self::invoke); now and then messages of the batch are
    /// delivered again, to a second invocation, while the first still runs (their
    /// visibility timeout passed). From the likes queue that is any of them (here
    /// the later half); from the FIFO queue a group comes back from its first
    /// undeleted message, in order, so the whole batch. The first invocation's
    /// answer decides.
    async fn invoke_maybe_twice(
        &mut self,
        records: Vec<SqsMessage>,
        fifo: bool,
    ) -> Option<HashSet<String>> {
        if records.len() < 2 || !self.rng.random_bool(0.5) {
            return self.invoke(records).await;
        }
        self.fault("concurrent_redelivery");
        let mut event = SqsEvent::default();
        let from = if fifo { 0 } else { records.len() / 2 };
        event.records = records[from..].to_vec();
        let second = self.app.worker.clone();
        let (first, _) = futures::join!(
            self.invoke(records),
            second.handle(LambdaEvent::new(event, Context::default()))
        );
        first
    }

    fn maybe_crash(&mut self, rate: f64) {
        if self.rng.random_bool(rate) {
            let calls = self.rng.random_range(0..8);
            self.faults.crash_after(calls);
            self.faulty_step = true;
            self.log(format!("fault: crash after {calls} calls"));
        }
    }

    /// A failed or crashed message goes back, or to the dead-letter queue after
    /// [`MAX_RECEIVES`].
    fn redeliver_later(&mut self, mut pending: Pending, points_group: Option<&str>, front: bool) {
        pending.receives += 1;
        if pending.receives >= MAX_RECEIVES {
            self.dead.push(pending);
            return;
        }
        match points_group {
            None => self.likes.push(pending),
            Some(group) => {
                let queue = self.points.entry(group.to_owned()).or_default();
                if front {
                    queue.push_front(pending);
                } else {
                    queue.push_back(pending);
                }
            }
        }
    }

    pub(super) async fn deliver_likes(&mut self) -> Result<(), Violation> {
        if self.likes.is_empty() {
            return Ok(());
        }
        // Mostly the newest half first, the older ones held back for a later
        // batch (reordering across batches); otherwise any order.
        let take = if self.rng.random_bool(0.8) {
            self.likes.reverse();
            *self.faults_by_kind.entry("reordered").or_default() += 1;
            self.likes.len().div_ceil(2)
        } else {
            self.likes.shuffle(&mut self.rng);
            self.rng.random_range(1..=self.likes.len().min(25))
        };
        let batch: Vec<Pending> = self.likes.drain(..take).collect();
        let mut records: Vec<SqsMessage> = batch.iter().map(|p| p.message.clone()).collect();
        if self.rng.random_bool(0.9) {
            // The same message twice in one batch (an at-least-once duplicate).
            let twin = records.choose(&mut self.rng).cloned().expect("a batch");
            records.push(twin);
            self.fault("duplicate");
        }
        self.maybe_crash(0.5);
        self.log(format!("deliver {} likes", records.len()));
        let failed = self.invoke_maybe_twice(records, false).await;
        let mut touched = Vec::new();
        for pending in batch {
            let id = pending.message.message_id.clone().unwrap_or_default();
            touched.push(register_of(&pending.message));
            let done = failed.as_ref().is_some_and(|failed| !failed.contains(&id));
            if !done {
                self.redeliver_later(pending, None, false);
            } else if self.rng.random_bool(0.2) {
                // The delete was lost: SQS delivers it again.
                self.fault("lost_delete");
                self.likes.push(pending);
            }
        }
        self.check_settled_registers(touched).await
    }

    pub(super) async fn deliver_points(&mut self) -> Result<(), Violation> {
        let groups: Vec<String> = self
            .points
            .iter()
            .filter(|(_, q)| !q.is_empty())
            .map(|(g, _)| g.clone())
            .collect();
        if groups.is_empty() {
            return Ok(());
        }
        let chosen: Vec<String> = groups
            .choose_multiple(&mut self.rng, 3.min(groups.len()))
            .cloned()
            .collect();
        let mut taken: Vec<(String, Vec<Pending>)> = Vec::new();
        for group in chosen {
            let queue = self.points.get_mut(&group).expect("chosen from the pools");
            let take = self.rng.random_range(1..=queue.len().min(4));
            taken.push((group, queue.drain(..take).collect()));
        }
        let records: Vec<SqsMessage> = taken
            .iter()
            .flat_map(|(_, p)| p.iter().map(|p| p.message.clone()))
            .collect();
        self.maybe_crash(0.5);
        self.log(format!("deliver {} points messages", records.len()));
        let failed = self.invoke_maybe_twice(records, true).await;
        for (group, batch) in taken {
            // SQS FIFO: from the first failure on, the group's messages come back in order.
            let mut back: Vec<Pending> = Vec::new();
            let mut blocked = false;
            let mut last_done = None;
            for pending in batch {
                let id = pending.message.message_id.clone().unwrap_or_default();
                blocked = blocked || failed.as_ref().is_none_or(|failed| failed.contains(&id));
                if blocked {
                    back.push(pending);
                } else {
                    last_done = Some(pending);
                }
            }
            if let Some(done) = last_done
                && back.is_empty()
                && self.rng.random_bool(0.4)
            {
                // Its delete was lost: SQS delivers it again, before the rest of its group.
                self.fault("lost_delete");
                back.push(done);
            }
            for pending in back.into_iter().rev() {
                self.redeliver_later(pending, Some(&group), true);
            }
        }
        Ok(())
    }

    pub(super) async fn reconcile(&mut self) -> Result<(), Violation> {
        self.maybe_crash(0.5);
        let reconciler = self.app.reconciler();
        self.ran_now();
        let result = reconciler.run(self.now()).await;
        if self.faults.restart() {
            self.fault("crash");
        }
        self.log(format!(
            "reconcile: {:?}",
            result.as_ref().map_err(|e| e.to_string())
        ));
        self.collect().await
    }

    /// Delivers everything pending, with no faults, until the pools are empty;
    /// the operator redrives the dead-letter queue first (always safe).
    pub(super) async fn flush(&mut self) -> Result<(), Violation> {
        self.faults.clear();
        self.faults.restart();
        self.redrive_dead_letters();
        for _ in 0..200 {
            self.collect().await?;
            if self.likes.is_empty() && self.points.values().all(VecDeque::is_empty) {
                return Ok(());
            }
            let likes: Vec<Pending> = std::mem::take(&mut self.likes);
            for chunk in likes.chunks(25) {
                let records = chunk.iter().map(|p| p.message.clone()).collect();
                let failed = self.invoke(records).await.unwrap_or_default();
                for pending in chunk {
                    let id = pending.message.message_id.clone().unwrap_or_default();
                    if failed.contains(&id) {
                        self.redeliver_later(
                            Pending {
                                message: pending.message.clone(),
                                receives: pending.receives,
                            },
                            None,
                            false,
                        );
                    }
                }
            }
            while self.points.values().any(|q| !q.is_empty()) {
                self.deliver_points_all().await;
            }
        }
        Err(Violation("the queues never drained".into()))
    }

    fn redrive_dead_letters(&mut self) {
        for pending in std::mem::take(&mut self.dead) {
            let group = pending.message.attributes.get("MessageGroupId").cloned();
            let pending = Pending {
                message: pending.message,
                receives: 0,
            };
            match group {
                Some(group) => self.points.entry(group).or_default().push_back(pending),
                None => self.likes.push(pending),
            }
        }
    }

    async fn deliver_points_all(&mut self) {
        let groups: Vec<String> = self
            .points
            .iter()
            .filter(|(_, q)| !q.is_empty())
            .map(|(g, _)| g.clone())
            .collect();
        for group in groups {
            let batch: Vec<Pending> = {
                let queue = self.points.get_mut(&group).expect("a group");
                let take = queue.len().min(10);
                queue.drain(..take).collect()
            };
            let records = batch.iter().map(|p| p.message.clone()).collect();
            let failed = self.invoke(records).await.unwrap_or_default();
            let mut back = Vec::new();
            let mut blocked = false;
            for pending in batch {
                let id = pending.message.message_id.clone().unwrap_or_default();
                blocked = blocked || failed.contains(&id);
                if blocked {
                    back.push(pending);
                }
            }
            for pending in back.into_iter().rev() {
                self.redeliver_later(pending, Some(&group), true);
            }
        }
    }

    /// The end of the run: faults stop, uncertain writes are retried under their
    /// keys, dead letters are redriven, and reconcile runs until nothing is pending.
    pub(super) async fn settle(&mut self) -> Result<(), Violation> {
        self.faults.clear();
        self.faults.restart();
        self.faulty_step = false;
        self.log("settle".into());
        let uncertain: Vec<(String, String)> = self
            .model
            .writes
            .iter()
            .filter(|(_, w)| w.uncertain())
            .map(|(k, _)| k.clone())
            .collect();
        for id in uncertain {
            let write = self.model.writes[&id].clone();
            let (status, answer) = self
                .http(
                    &write.caller,
                    Method::POST,
                    &write.uri,
                    Some(&write.key),
                    Some(&write.body),
                )
                .await?;
            check!(
                self,
                status == StatusCode::ACCEPTED,
                "{}: a same-key retry after a 5xx answered {status}: {answer}",
                write.key
            );
            if let Some(w) = self.model.writes.get_mut(&id) {
                w.answers.push(status.as_u16());
            }
        }
        self.flush().await?;
        self.flush().await?;
        for _ in 0..3 {
            self.advance(16 * 60 * 1_000_000);
            let reconciler = self.app.reconciler();
            self.ran_now();
            let report = reconciler
                .run(self.now())
                .await
                .map_err(|e| Violation(format!("reconcile failed with no fault: {e}")))?;
            self.log(format!("reconcile: {report:?}"));
            self.flush().await?;
        }
        Ok(())
    }
}
