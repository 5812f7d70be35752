//! `tally-admin`: what an operator runs against a Tally, the emulator under
//! `make dev` or a deployed stack alike (docs/operations.md).
//!
//! Each command is a module whose function takes a [`Tally`] and answers a
//! serializable report; `main.rs` parses the arguments and prints the report,
//! as text or (`--json`) as one JSON document per line.

pub mod cloudwatch;
pub mod dead_letters;
pub mod erase;
pub mod import;
pub mod status;
pub mod user;

use shared::config::Timeouts;
use shared::queue::{OperationQueue, QueuePair};
use shared::store::Store;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The operator's calls: reads of whole partitions and queues take longer
/// than a function's single item, as reconcile's do.
pub const TIMEOUTS: Timeouts = Timeouts::RECONCILE;

/// Against the emulator (`AWS_ENDPOINT_URL` set): ten times longer. The
/// emulator applies requests one at a time, in Python, and a table of tens
/// of thousands of items (an import) makes a recount's burst of queries
/// wait seconds in its queue, where DynamoDB answers in milliseconds.
pub const EMULATOR_TIMEOUTS: Timeouts = Timeouts {
    connect: std::time::Duration::from_secs(10),
    attempt: std::time::Duration::from_secs(50),
    operation: std::time::Duration::from_secs(150),
};

/// One Tally's resources, as its operator reaches them.
#[derive(Debug, Clone)]
pub struct Tally {
    pub store: Store,
    pub likes: QueuePair,
    pub points: QueuePair,
    pub events_dead_letters: OperationQueue,
    /// Queue ages come from CloudWatch (SQS has no attribute for them);
    /// `None` where there is no CloudWatch to ask.
    pub metrics: Option<cloudwatch::QueueAges>,
}

/// Where each resource's name comes from: the variable the functions read
/// (`scripts/stack-env.sh STACK` exports them from a deployed stack's
/// outputs), else the local stack's name for it, `{stack}-{LogicalId}`.
const RESOURCES: [(&str, &str); 6] = [
    ("TALLY_TABLE_NAME", "Table"),
    ("TALLY_LIKES_QUEUE_URL", "LikesQueue"),
    ("TALLY_LIKES_DEAD_LETTER_QUEUE_URL", "LikesDeadLetterQueue"),
    ("TALLY_POINTS_QUEUE_URL", "PointsQueue.fifo"),
    (
        "TALLY_POINTS_DEAD_LETTER_QUEUE_URL",
        "PointsDeadLetterQueue.fifo",
    ),
    (
        "TALLY_EVENTS_DEAD_LETTER_QUEUE_URL",
        "EventsDeadLetterQueue",
    ),
];

impl Tally {
    /// The Tally the environment names: AWS settings from the standard chain
    /// (with `AWS_ENDPOINT_URL`, the emulator), each resource from its
    /// variable or, failing that, by its local name in stack `stack`.
    pub async fn from_env(stack: &str) -> Result<Self, BoxError> {
        let local = std::env::var_os("AWS_ENDPOINT_URL").is_some();
        let aws = shared::config::aws(if local { EMULATOR_TIMEOUTS } else { TIMEOUTS }).await;
        let sqs = aws_sdk_sqs_client(&aws);
        let mut names = Vec::new();
        for (variable, logical_id) in RESOURCES {
            let name = match std::env::var(variable) {
                Ok(value) if !value.is_empty() => value,
                _ if logical_id == "Table" => format!("{stack}-{logical_id}"),
                _ => shared::queue::queue_url(&sqs, &format!("{stack}-{logical_id}"))
                    .await
                    .map_err(|err| {
                        format!(
                            "no {variable}, and no queue {stack}-{logical_id} ({err}): \
                             run `make dev`, or export a deployed stack's names \
                             with scripts/stack-env.sh"
                        )
                    })?,
            };
            names.push(name);
        }
        let queue =
            |i: usize| OperationQueue::new(sqs.clone(), names.get(i).cloned().unwrap_or_default());
        Ok(Self {
            store: Store::from_config(&aws, names.first().cloned().unwrap_or_default()),
            likes: QueuePair {
                queue: queue(1),
                dead_letters: queue(2),
            },
            points: QueuePair {
                queue: queue(3),
                dead_letters: queue(4),
            },
            events_dead_letters: queue(5),
            metrics: (!local).then(|| cloudwatch::QueueAges::new(&aws)),
        })
    }
}

fn aws_sdk_sqs_client(aws: &aws_config::SdkConfig) -> shared::queue::Client {
    shared::queue::Client::new(aws)
}
