//! Configuration from environment variables, read once per cold start.
//! The names are the ones `template.yaml` sets.

use aws_config::BehaviorVersion;
pub use aws_config::SdkConfig;

pub const TABLE_NAME: &str = "TALLY_TABLE_NAME";
pub const LIKES_QUEUE_URL: &str = "TALLY_LIKES_QUEUE_URL";
pub const POINTS_QUEUE_URL: &str = "TALLY_POINTS_QUEUE_URL";
pub const POINTS_DEAD_LETTER_QUEUE_URL: &str = "TALLY_POINTS_DEAD_LETTER_QUEUE_URL";

#[derive(Debug, thiserror::Error)]
#[error("environment variable {name} must be set: {why}")]
pub struct ConfigError {
    pub name: &'static str,
    pub why: &'static str,
}

/// The value of a required environment variable, or an error naming it.
pub fn required(name: &'static str, why: &'static str) -> Result<String, ConfigError> {
    match std::env::var(name) {
        Ok(value) if !value.trim().is_empty() => Ok(value),
        _ => Err(ConfigError { name, why }),
    }
}

pub fn table_name() -> Result<String, ConfigError> {
    required(
        TABLE_NAME,
        "the DynamoDB table holding likes, counters and points",
    )
}

pub fn likes_queue_url() -> Result<String, ConfigError> {
    required(
        LIKES_QUEUE_URL,
        "the SQS queue that like operations are sent to",
    )
}

pub fn points_queue_url() -> Result<String, ConfigError> {
    required(
        POINTS_QUEUE_URL,
        "the SQS FIFO queue that points operations are sent to",
    )
}

pub fn points_dead_letter_queue_url() -> Result<String, ConfigError> {
    required(
        POINTS_DEAD_LETTER_QUEUE_URL,
        "the points dead-letter queue, where the worker sets aside messages that can never be applied",
    )
}

/// AWS settings from the standard chain (region, credentials, and
/// `AWS_ENDPOINT_URL` when pointing at a local emulator).
pub async fn aws() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest()).load().await
}
