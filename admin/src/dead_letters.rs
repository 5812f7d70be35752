//! `tally-admin dead-letters list | show | redrive`: what was set aside, why,
//! and putting it back on the queue it came from.

use std::time::Duration;

use serde::Serialize;
use shared::domain::points::PointTypes;
use shared::message::{Envelope, Operation, Read};
use shared::queue::{HeldMessage, OperationQueue};
use time::OffsetDateTime;

use crate::{BoxError, Tally};

/// Messages read per queue at most.
pub const MAX_LISTED: usize = 1000;
/// How long messages stay hidden while a command looks at them; they are let
/// go (visible again) before it ends, and at the latest after this.
const HOLD: Duration = Duration::from_secs(120);

/// Which dead-letter queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeadLetterQueue {
    Likes,
    Points,
    Events,
}

impl DeadLetterQueue {
    pub const ALL: [DeadLetterQueue; 3] = [Self::Likes, Self::Points, Self::Events];

    /// The dead-letter queue, and the queue its messages came from (the
    /// events function's come from the table's stream, not a queue).
    fn queues(self, tally: &Tally) -> (&OperationQueue, Option<&OperationQueue>) {
        match self {
            Self::Likes => (&tally.likes.dead_letters, Some(&tally.likes.queue)),
            Self::Points => (&tally.points.dead_letters, Some(&tally.points.queue)),
            Self::Events => (&tally.events_dead_letters, None),
        }
    }
}

/// One dead letter, decoded.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    pub queue: DeadLetterQueue,
    pub message_id: String,
    pub sent_at: Option<String>,
    pub receive_count: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_id: Option<String>,
    /// `like`, `unlike`, a points kind (`grant`, `spend`, ...), or `stream-record`.
    pub operation: Option<String>,
    pub caller: Option<String>,
    pub operation_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub post_id: Option<String>,
    /// Why it was set aside, where the message says.
    pub why: String,
    pub body: String,
}

/// Decodes a message of `queue` (pure: the tests hold each case).
pub fn decode(queue: DeadLetterQueue, message: &HeldMessage, now: OffsetDateTime) -> DeadLetter {
    let mut letter = DeadLetter {
        queue,
        message_id: message.message_id.clone(),
        sent_at: message
            .sent_at_ms
            .and_then(|ms| {
                OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()
            })
            .map(shared::domain::timestamp::format),
        receive_count: message.receive_count,
        group_id: message.group_id.clone(),
        operation: None,
        caller: None,
        operation_id: None,
        post_id: None,
        why: String::new(),
        body: message.body.clone(),
    };
    if queue == DeadLetterQueue::Events {
        letter.operation = Some("stream-record".to_owned());
        letter.why = why_stream_record(&message.body);
        return letter;
    }
    match Envelope::read(&message.body, &PointTypes::shipped(), now) {
        Read::Valid(envelope) => {
            letter.caller = Some(envelope.caller.to_string());
            letter.operation_id = Some(envelope.operation_id.to_string());
            let (kind, post) = match &envelope.operation {
                Operation::Like { post_id } => ("like", Some(post_id.to_string())),
                Operation::Unlike { post_id } => ("unlike", Some(post_id.to_string())),
                Operation::Points(request) => (request.kind(), None),
            };
            letter.operation = Some(kind.to_owned());
            letter.post_id = post;
            letter.why = match queue {
                DeadLetterQueue::Points => format!(
                    "a valid operation that failed {} deliveries (the worker's log lines for this message id say why); \
                     reconcile re-drives it from its pending record, and a redrive applies it at most once",
                    message.receive_count.saturating_sub(1).max(1)
                ),
                _ => "a valid operation that failed every delivery (the worker's log lines for this message id say why); \
                      redrive it once the cause is fixed: it applies once"
                    .to_owned(),
            };
        }
        Read::Invalid {
            operation_id,
            caller,
            detail,
            ..
        } => {
            letter.caller = Some(caller.to_string());
            letter.operation_id = Some(operation_id.to_string());
            letter.why = format!("cannot be applied: {detail}");
        }
        Read::Unattributable(detail) => {
            letter.why = format!("names no caller and operation id: {detail}");
        }
    }
    letter
}

/// What the events function wrote when it set a record aside, or what Lambda
/// wrote when a batch aged out of the stream mapping's retries.
fn why_stream_record(body: &str) -> String {
    let Ok(json) = serde_json::from_str::<serde_json::Value>(body) else {
        return "not JSON".to_owned();
    };
    if let Some(problem) = json.get("problem").and_then(|p| p.as_str()) {
        return format!("unreadable stream record: {problem}");
    }
    if let Some(batch) = json.get("DDBStreamBatchInfo") {
        return format!(
            "a batch Lambda gave up on (its events were not published): shard {} sequence numbers {} to {}",
            batch["shardId"].as_str().unwrap_or("?"),
            batch["startSequenceNumber"].as_str().unwrap_or("?"),
            batch["endSequenceNumber"].as_str().unwrap_or("?"),
        );
    }
    "unknown shape".to_owned()
}

/// Every dead letter of `queue` (up to [`MAX_LISTED`]), decoded. The
/// messages are visible again when this returns.
pub async fn list(
    tally: &Tally,
    queue: DeadLetterQueue,
    now: OffsetDateTime,
) -> Result<Vec<DeadLetter>, BoxError> {
    let (dead_letters, _) = queue.queues(tally);
    let held = dead_letters.hold(MAX_LISTED, HOLD).await?;
    let letters = held.iter().map(|m| decode(queue, m, now)).collect();
    dead_letters.let_go(&held).await?;
    Ok(letters)
}

/// What a redrive did.
#[derive(Debug, Default, Serialize)]
pub struct Redriven {
    /// Moved back to the source queue, by message id.
    pub moved: Vec<String>,
    /// Asked for, not found among the messages read.
    pub not_found: Vec<String>,
    /// Set when SQS's own move task took the whole queue.
    pub move_task: Option<String>,
    /// Why the move task was not used, when it was tried.
    pub move_task_refused: Option<String>,
}

/// Which messages to put back.
#[derive(Debug, Clone)]
pub enum Chosen {
    All,
    Ids(Vec<String>),
}

/// Puts dead letters back on their source queue: all of them with SQS's
/// `StartMessageMoveTask` where the queue takes it, else (and for chosen
/// messages) by receive, send, delete ([`OperationQueue::move_back`]): none
/// lost, and none applied twice.
pub async fn redrive(
    tally: &Tally,
    queue: DeadLetterQueue,
    chosen: &Chosen,
) -> Result<Redriven, BoxError> {
    let (dead_letters, source) = queue.queues(tally);
    let Some(source) = source else {
        return Err(
            "the events dead-letter queue holds stream records, not queue messages: \
                    nothing to redrive them to (docs/operations.md, \"Events dead letters\")"
                .into(),
        );
    };
    let mut report = Redriven::default();
    if matches!(chosen, Chosen::All) {
        match dead_letters.start_move_task(source).await {
            Ok(handle) => {
                report.move_task = Some(handle);
                return Ok(report);
            }
            Err(err) => report.move_task_refused = Some(shared::http::error_chain(&err)),
        }
    }
    let mut wanted: Vec<String> = match chosen {
        Chosen::All => Vec::new(),
        Chosen::Ids(ids) => ids.clone(),
    };
    // All: the messages there now, and no more. A message that fails again
    // comes back as a new one, and is left for the operator to look at.
    let mut left = match chosen {
        Chosen::All => dead_letters.figures().await?.visible,
        Chosen::Ids(ids) => ids.len() as u64,
    };
    // A FIFO queue shows ten messages of a group at a time: read again after
    // each round's moves free their groups, until a round finds nothing to move.
    while left > 0 {
        let held = dead_letters.hold(MAX_LISTED, HOLD).await?;
        let (mut take, mut keep): (Vec<_>, Vec<_>) = held.into_iter().partition(|m| match chosen {
            Chosen::All => true,
            Chosen::Ids(_) => wanted.contains(&m.message_id),
        });
        if take.len() as u64 > left {
            keep.extend(take.split_off(left as usize));
        }
        let mut failure = None;
        for message in &take {
            if let Err(err) = dead_letters.move_back(message, source).await {
                failure = Some(err);
                break;
            }
            report.moved.push(message.message_id.clone());
            wanted.retain(|id| id != &message.message_id);
            left -= 1;
        }
        dead_letters.let_go(&keep).await?;
        if let Some(err) = failure {
            return Err(err.into());
        }
        if take.is_empty() {
            break;
        }
    }
    report.not_found = wanted;
    Ok(report)
}
