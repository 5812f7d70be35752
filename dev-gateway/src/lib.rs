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
pub use pump::{EventSourceMapping, PollResult};

use shared::queue::{OperationQueue, QueuePair, QueueSettings, mapping};
use shared::store::Store;

/// The table and queues of one local Tally, created if missing.
#[derive(Debug, Clone)]
pub struct LocalStack {
    pub store: Store,
    pub likes: QueuePair,
}

impl LocalStack {
    pub async fn provision(
        aws: &shared::config::SdkConfig,
        table: &str,
        likes_queue: &str,
        settings: QueueSettings,
    ) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let store = Store::from_config(aws, table);
        store.create_table_if_missing().await?;
        let sqs = aws_sdk_sqs::Client::new(aws);
        let likes = OperationQueue::create_with_dead_letters(&sqs, likes_queue, settings).await?;
        Ok(Self { store, likes })
    }

    /// The queue settings `template.yaml` deploys.
    pub fn deployed_queue_settings() -> QueueSettings {
        QueueSettings {
            visibility_timeout: mapping::VISIBILITY_TIMEOUT,
            max_receive_count: mapping::MAX_RECEIVE_COUNT,
        }
    }
}
