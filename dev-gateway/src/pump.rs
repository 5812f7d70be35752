//! Lambda's SQS event source mapping, played locally: receive a batch, invoke the
//! worker, delete what it did not report failed. Failed messages become visible
//! again after the visibility timeout, and the queue's redrive policy moves them
//! to the dead-letter queue after `maxReceiveCount` receives.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::{Context, Error, LambdaEvent};
use shared::http::error_chain;
use shared::queue::{OperationQueue, QueueError, SQS_MAX_BATCH};
use sqs_worker::Worker;
use tokio::runtime::Handle;
use tokio::time::Instant;

/// An invocation's context as Lambda gives it: its deadline, in ms since the
/// epoch, `timeout` from now.
pub(crate) fn invocation_context(timeout: Duration) -> Context {
    let mut context = Context::default();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    context.deadline = u64::try_from((now + timeout).as_millis()).unwrap_or(u64::MAX);
    context
}

/// Long-poll wait for the first message of a batch.
const LONG_POLL: Duration = Duration::from_secs(1);
/// Pause between receives while a partial batch waits out its batching window.
const PARTIAL_BATCH_PAUSE: Duration = Duration::from_millis(100);

/// An event source mapping's settings, as `template.yaml` gives them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MappingSettings {
    pub batch_size: usize,
    pub batching_window: Duration,
    /// Worker invocations at once (`ScalingConfig.MaximumConcurrency`).
    pub maximum_concurrency: Option<u32>,
    /// The worker's `Timeout`: each invocation's context carries its deadline.
    pub function_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct EventSourceMapping {
    queue: OperationQueue,
    source_arn: String,
    region: String,
    settings: MappingSettings,
    /// Worker invocations so far (a redelivered batch counts again).
    invocations: Arc<AtomicU64>,
    /// Their wall time, in nanoseconds: what Lambda would bill as duration.
    invoked_nanos: Arc<AtomicU64>,
    /// Where the worker runs; the caller's runtime when `None`.
    worker_runtime: Option<Handle>,
}

/// A fault to inject into one poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    /// The process dies after the worker returned, before any message is deleted.
    CrashBeforeDelete,
    /// The worker gets every batch twice (an at-least-once delivery, played out).
    DeliverTwice,
}

/// What one poll did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PollResult {
    pub received: usize,
    pub failed: usize,
}

impl EventSourceMapping {
    /// A mapping of `queue` (whose ARN is `source_arn`) to the worker.
    pub fn new(queue: OperationQueue, source_arn: &str, settings: MappingSettings) -> Self {
        let region = source_arn
            .split(':')
            .nth(3)
            .unwrap_or("us-east-1")
            .to_owned();
        Self {
            queue,
            source_arn: source_arn.to_owned(),
            region,
            settings,
            invocations: Arc::default(),
            invoked_nanos: Arc::default(),
            worker_runtime: None,
        }
    }

    /// The ARN of the queue it reads.
    pub fn source_arn(&self) -> &str {
        &self.source_arn
    }

    /// Runs the worker on `runtime` (its own "process"), apart from the polling,
    /// which Lambda does outside the function: the benchmark counts the
    /// worker's CPU alone this way.
    pub fn with_worker_runtime(mut self, runtime: Handle) -> Self {
        self.worker_runtime = Some(runtime);
        self
    }

    async fn invoke(&self, worker: &Worker, event: SqsEvent) -> Result<SqsBatchResponse, Error> {
        self.invocations.fetch_add(1, Ordering::Relaxed);
        let started = std::time::Instant::now();
        let event = LambdaEvent::new(event, invocation_context(self.settings.function_timeout));
        let response = match &self.worker_runtime {
            None => worker.handle(event).await,
            Some(runtime) => {
                let worker = worker.clone();
                runtime
                    .spawn(async move { worker.handle(event).await })
                    .await
                    .unwrap_or_else(|panicked| Err(panicked.into()))
            }
        };
        let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.invoked_nanos.fetch_add(nanos, Ordering::Relaxed);
        response
    }

    /// Receives one batch (up to the batch size, within the batching window),
    /// invokes the worker with it, and deletes the messages it did not report failed.
    pub async fn poll_once(&self, worker: &Worker) -> Result<PollResult, QueueError> {
        self.poll_once_with(worker, Fault::None).await
    }

    /// [`poll_once`](Self::poll_once) with an injected fault, for tests.
    pub async fn poll_once_with(
        &self,
        worker: &Worker,
        fault: Fault,
    ) -> Result<PollResult, QueueError> {
        let mut records = Vec::new();
        let deadline = Instant::now() + self.settings.batching_window;
        while records.len() < self.settings.batch_size {
            let wait = if records.is_empty() {
                LONG_POLL
            } else {
                Duration::ZERO
            };
            let want = (self.settings.batch_size - records.len()).min(SQS_MAX_BATCH);
            let received = self
                .queue
                .receive(want, wait, &self.source_arn, &self.region)
                .await?;
            let got_none = received.is_empty();
            records.extend(received);
            let now = Instant::now();
            if records.is_empty() || now >= deadline {
                break;
            }
            if got_none {
                // A partial batch and, for now, an empty queue: wait a little
                // within the window rather than ask SQS again at once.
                tokio::time::sleep((deadline - now).min(PARTIAL_BATCH_PAUSE)).await;
            }
        }
        if records.is_empty() {
            return Ok(PollResult::default());
        }
        let received = records.len();
        let mut event = SqsEvent::default();
        event.records = records.clone();
        if fault == Fault::DeliverTwice {
            let _ = self.invoke(worker, event.clone()).await;
        }
        let failed: Vec<String> = match self.invoke(worker, event).await {
            Ok(response) => response
                .batch_item_failures
                .into_iter()
                .map(|f| f.item_identifier)
                .collect(),
            Err(err) => {
                // A failed invocation leaves the whole batch to be redelivered.
                tracing::error!(error = %err, "worker invocation failed");
                return Ok(PollResult {
                    received,
                    failed: received,
                });
            }
        };
        if fault == Fault::CrashBeforeDelete {
            // The worker did its writes, but nothing is deleted: SQS redelivers the
            // whole batch once the visibility timeout passes.
            return Ok(PollResult {
                received,
                failed: received,
            });
        }
        let done: Vec<String> = records
            .into_iter()
            .filter(|r| !failed.iter().any(|id| Some(id) == r.message_id.as_ref()))
            .filter_map(|r| r.receipt_handle)
            .collect();
        self.queue.delete(&done).await?;
        Ok(PollResult {
            received,
            failed: failed.len(),
        })
    }

    /// Worker invocations this mapping made so far.
    pub fn invocations(&self) -> u64 {
        self.invocations.load(Ordering::Relaxed)
    }

    /// The wall time of those invocations, summed.
    pub fn invoked_time(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(self.invoked_nanos.load(Ordering::Relaxed))
    }

    pub fn settings(&self) -> MappingSettings {
        self.settings
    }

    /// Polls until the process stops, logging (not dying on) queue errors.
    pub async fn run(self, worker: Worker) {
        loop {
            if let Err(err) = self.poll_once(&worker).await {
                tracing::warn!(error = %error_chain(&err), "polling the queue failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}
