//! The dev gateway: what API Gateway and Lambda's SQS event source mapping do
//! on AWS, played on one machine against the emulator.
//!
//! - [`Gateway`] turns each HTTP request into the API Gateway HTTP API (v2) event
//!   a Lambda would receive, with the JWT authorizer context built from the
//!   `X-Dev-User` / `X-Dev-Scopes` headers, and hands it to the function's
//!   router in-process, as `lambda_http` would.
//! - [`EventSourceMapping`] pumps the queue into the worker in batches shaped as
//!   Lambda delivers them, and deletes only what the worker did not report failed.

mod gateway;
mod pump;

pub use gateway::Gateway;
pub use pump::{EventSourceMapping, Fault, PollResult};

use std::time::Duration;

use shared::queue::{OperationQueue, QueuePair, QueueSettings, mapping};
use shared::store::Store;

/// The table and queues of one local Tally, created if missing.
#[derive(Debug, Clone)]
pub struct LocalStack {
    pub store: Store,
    pub likes: QueuePair,
    pub points: QueuePair,
    /// The functions' clock (the system clock but under the fault simulator).
    pub clock: shared::clock::Clock,
}

impl LocalStack {
    pub async fn provision(
        aws: &shared::config::SdkConfig,
        names: &Names,
        settings: QueueSettings,
    ) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let store = Store::from_config(aws, &names.table);
        store.create_table_if_missing().await?;
        let sqs = aws_sdk_sqs::Client::new(aws);
        let likes =
            OperationQueue::create_with_dead_letters(&sqs, &names.likes_queue, settings).await?;
        let points = OperationQueue::create_with_dead_letters(
            &sqs,
            &names.points_queue,
            QueueSettings {
                fifo: true,
                ..settings
            },
        )
        .await?;
        Ok(Self {
            store,
            likes,
            points,
            clock: shared::clock::Clock::system(),
        })
    }

    /// The queue settings `template.yaml` deploys.
    pub fn deployed_queue_settings() -> QueueSettings {
        QueueSettings {
            visibility_timeout: mapping::VISIBILITY_TIMEOUT,
            max_receive_count: mapping::MAX_RECEIVE_COUNT,
            fifo: false,
        }
    }

    /// The HTTP API, wired to this stack's table and queues.
    pub fn gateway(&self) -> Gateway {
        let mut like_api = like::LikeApi::new(self.store.clone(), self.likes.queue.clone());
        like_api.service.clock = self.clock.clone();
        let mut points_api = points::PointsApi::new(self.store.clone(), self.points.queue.clone());
        points_api.service.clock = self.clock.clone();
        Gateway::new(like::router(like_api), points::router(points_api))
    }

    /// The worker, setting unusable points messages aside on the points dead-letter queue.
    pub fn worker(&self) -> sqs_worker::Worker {
        let mut worker = sqs_worker::Worker::new(self.store.clone())
            .with_dead_letters(self.points.dead_letters.clone());
        worker.clock = self.clock.clone();
        worker
    }

    /// The worker's event source mappings: the likes queue, then the points FIFO queue.
    pub async fn mappings(
        &self,
        batching_window: Duration,
    ) -> Result<[EventSourceMapping; 2], shared::queue::QueueError> {
        Ok([
            EventSourceMapping::new(
                self.likes.queue.clone(),
                mapping::BATCH_SIZE,
                batching_window,
            )
            .await?,
            EventSourceMapping::new(
                self.points.queue.clone(),
                mapping::POINTS_BATCH_SIZE,
                Duration::ZERO,
            )
            .await?,
        ])
    }
}

/// What the local table and queues are called.
#[derive(Debug, Clone)]
pub struct Names {
    pub table: String,
    /// Without `.fifo`: the points queue is FIFO and gets the suffix.
    pub likes_queue: String,
    pub points_queue: String,
}
