//! Configuration from environment variables, read once per cold start.
//! The names are the ones `template.yaml` sets.

use std::time::Duration;

use aws_config::BehaviorVersion;
pub use aws_config::SdkConfig;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;

pub const TABLE_NAME: &str = "TALLY_TABLE_NAME";
pub const LIKES_QUEUE_URL: &str = "TALLY_LIKES_QUEUE_URL";
pub const POINTS_QUEUE_URL: &str = "TALLY_POINTS_QUEUE_URL";
pub const POINTS_DEAD_LETTER_QUEUE_URL: &str = "TALLY_POINTS_DEAD_LETTER_QUEUE_URL";
pub const COUNT_CACHE_SECONDS: &str = "TALLY_COUNT_CACHE_SECONDS";
pub const EVENT_BUS_NAME: &str = "TALLY_EVENT_BUS_NAME";
pub const EVENTS_DEAD_LETTER_QUEUE_URL: &str = "TALLY_EVENTS_DEAD_LETTER_QUEUE_URL";

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

pub fn event_bus_name() -> Result<String, ConfigError> {
    required(
        EVENT_BUS_NAME,
        "the EventBridge bus the events function publishes to",
    )
}

pub fn events_dead_letter_queue_url() -> Result<String, ConfigError> {
    required(
        EVENTS_DEAD_LETTER_QUEUE_URL,
        "the queue where the events function sets aside stream records it cannot read",
    )
}

/// How long the like function serves a count from memory before reading it
/// again: whole seconds, 0 to 60 (0 reads every time).
pub fn count_cache_window() -> Result<Duration, ConfigError> {
    const WHY: &str = "how long count reads are cached, in whole seconds from 0 to 60";
    parse_count_cache_window(&required(COUNT_CACHE_SECONDS, WHY)?).ok_or(ConfigError {
        name: COUNT_CACHE_SECONDS,
        why: WHY,
    })
}

pub fn parse_count_cache_window(text: &str) -> Option<Duration> {
    let seconds: u64 = text.trim().parse().ok()?;
    (seconds <= 60).then(|| Duration::from_secs(seconds))
}

/// How long one function lets an AWS call take: every client a function builds
/// carries these, so a dependency that stops answering costs a caller a bounded
/// wait and an error, never a hang.
///
/// - `connect`: a TCP and TLS connect to a regional endpoint takes milliseconds
///   inside AWS; 1 s means a dead one is abandoned quickly.
/// - `attempt`: one request. DynamoDB's single-item calls and SendMessage answer
///   in well under 100 ms at the 99.9th percentile, so an attempt still waiting
///   after 2 s has stalled; the standard retry mode (3 attempts, jittered
///   backoff) then tries again on a fresh connection.
/// - `operation`: all attempts together, which bounds what one call can cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub attempt: Duration,
    pub operation: Duration,
}

impl Timeouts {
    /// The HTTP functions (`Timeout: 10` in template.yaml; API Gateway gives up
    /// at 30 s). A write makes two calls one after the other (a points write:
    /// the conditional put, then SendMessage): 2 × 4 s fits the request's own
    /// budget ([`crate::http::REQUEST_BUDGET`], 8 s), which also bounds a read
    /// that makes several calls, so the function answers 503 problem+json
    /// itself before Lambda's timeout.
    pub const HTTP: Timeouts = Timeouts {
        connect: Duration::from_secs(1),
        attempt: Duration::from_secs(2),
        operation: Duration::from_secs(4),
    };
    /// The worker (`Timeout: 30`). These bound each of its writes, so a stalled
    /// store fails messages; a batch of many writes is also held to the
    /// invocation's deadline less a margin (the worker's `DEADLINE_MARGIN`),
    /// after which it is reported failed whole and redelivered.
    pub const WORKER: Timeouts = Timeouts {
        connect: Duration::from_secs(1),
        attempt: Duration::from_secs(2),
        operation: Duration::from_secs(5),
    };
    /// Reconcile (`Timeout: 300`, a run budget of 240 s). Its scans and
    /// queries read pages of up to 1 MB, which take longer than a single
    /// item; a stalled step fails after at most 15 s and the next run resumes it.
    pub const RECONCILE: Timeouts = Timeouts {
        connect: Duration::from_secs(1),
        attempt: Duration::from_secs(5),
        operation: Duration::from_secs(15),
    };

    /// The SDK's form of these timeouts.
    pub fn config(self) -> TimeoutConfig {
        TimeoutConfig::builder()
            .connect_timeout(self.connect)
            .operation_attempt_timeout(self.attempt)
            .operation_timeout(self.operation)
            .build()
    }
}

/// AWS settings from the standard chain (region, credentials, and
/// `AWS_ENDPOINT_URL` when pointing at a local emulator), with `timeouts` on
/// every call and the standard retry mode.
pub async fn aws(timeouts: Timeouts) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(timeouts.config())
        .retry_config(RetryConfig::standard())
        .load()
        .await
}
