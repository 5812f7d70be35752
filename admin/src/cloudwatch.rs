//! The one CloudWatch read `tally-admin` makes: how old each queue's oldest
//! message is. SQS publishes `ApproximateAgeOfOldestMessage` as a metric
//! only; its API has no attribute for it, and receiving a message to look at
//! it would count against the queue's `maxReceiveCount`.

use std::time::Duration;

use aws_sdk_cloudwatch::Client;
use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricStat};

#[derive(Debug, Clone)]
pub struct QueueAges {
    client: Client,
}

/// How far back a datapoint may be: SQS publishes every minute.
const LOOK_BACK: Duration = Duration::from_secs(600);

impl QueueAges {
    pub fn new(aws: &aws_config::SdkConfig) -> Self {
        Self {
            client: Client::new(aws),
        }
    }

    /// The newest minute's maximum age of the oldest message, in seconds;
    /// `None` without a datapoint in the last 10 minutes (an idle queue
    /// publishes none, or the caller may not read CloudWatch).
    pub async fn oldest_age(&self, queue_url: &str) -> Option<u64> {
        let name = queue_url.rsplit('/').next()?;
        let now = std::time::SystemTime::now();
        let metric = Metric::builder()
            .namespace("AWS/SQS")
            .metric_name("ApproximateAgeOfOldestMessage")
            .dimensions(Dimension::builder().name("QueueName").value(name).build())
            .build();
        let query = MetricDataQuery::builder()
            .id("age")
            .metric_stat(
                MetricStat::builder()
                    .metric(metric)
                    .period(60)
                    .stat("Maximum")
                    .build(),
            )
            .build();
        let output = self
            .client
            .get_metric_data()
            .metric_data_queries(query)
            .start_time((now - LOOK_BACK).into())
            .end_time(now.into())
            .send()
            .await
            .map_err(|err| tracing::warn!(error = %err, "CloudWatch GetMetricData failed"))
            .ok()?;
        // Newest first (the default ScanBy).
        let values = output.metric_data_results?.into_iter().next()?.values?;
        values.first().map(|age| *age as u64)
    }
}
