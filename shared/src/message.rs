//! The queue message: one versioned JSON envelope per accepted operation.
//!
//! This is a documented contract (see `docs/queue-messages.md`): other internal
//! services may put operations on the queue directly. Version 1:
//!
//! ```json
//! {
//!   "version": 1,
//!   "operation_id": "0193f1c4-...",
//!   "caller": "alice",
//!   "accepted_at": "2026-11-21T05:30:10.123456Z",
//!   "operation": { "type": "like", "post_id": "p1" }
//! }
//! ```
//!
//! Decoding is strict (unknown fields, unknown versions and invalid identifiers
//! are errors), and [`Envelope::read`] says what a worker can do with a message
//! that breaks a rule: one that still names its caller and operation id can be
//! given a final outcome; one that does not can only be set aside.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::domain::ids::{OperationId, PostId, UserId};
use crate::domain::likes::{LikeAction, LikeOperation};
use crate::domain::points::{InvalidRequest, PointTypes, PointsOperation, PointsRequest};
use crate::domain::timestamp::{self, AcceptedAtOutOfRange};

pub const ENVELOPE_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    pub version: u32,
    pub operation_id: OperationId,
    /// The user on whose behalf the operation was accepted.
    pub caller: UserId,
    #[serde(with = "timestamp::serde_fixed")]
    pub accepted_at: OffsetDateTime,
    pub operation: Operation,
}

/// What the message asks: `{"type": ..., fields}`. A points operation's
/// fields are its request's ([`PointsRequest`]), so every points kind is a
/// message type with nothing to add here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    /// The caller likes the post.
    Like {
        post_id: PostId,
    },
    /// The caller takes their like back.
    Unlike {
        post_id: PostId,
    },
    Points(PointsRequest),
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum LikeMessage {
    Like { post_id: PostId },
    Unlike { post_id: PostId },
}

impl Serialize for Operation {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Operation::Like { post_id } => LikeMessage::Like {
                post_id: post_id.clone(),
            }
            .serialize(serializer),
            Operation::Unlike { post_id } => LikeMessage::Unlike {
                post_id: post_id.clone(),
            }
            .serialize(serializer),
            Operation::Points(request) => request.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for Operation {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        let like = matches!(
            value.get("type").and_then(serde_json::Value::as_str),
            Some("like" | "unlike")
        );
        if like {
            match LikeMessage::deserialize(value).map_err(serde::de::Error::custom)? {
                LikeMessage::Like { post_id } => Ok(Operation::Like { post_id }),
                LikeMessage::Unlike { post_id } => Ok(Operation::Unlike { post_id }),
            }
        } else {
            PointsRequest::deserialize(value)
                .map(Operation::Points)
                .map_err(serde::de::Error::custom)
        }
    }
}

/// An operation as a queue delivered it: the id of the message it came in, and
/// the message's span (carrying both ids), which every line about it goes to.
#[derive(Debug, Clone)]
pub struct Delivered<T> {
    pub message_id: String,
    pub span: tracing::Span,
    pub operation: T,
}

/// What a queue message turned out to be.
#[derive(Debug)]
pub enum Read {
    Valid(Envelope),
    /// Breaks a rule, but names a valid caller and operation id: it can be
    /// answered (a points operation ends `rejected`, `invalid_operation`).
    Invalid {
        operation_id: OperationId,
        caller: UserId,
        /// Whether it claims to be a like or unlike (which have no outcome to record).
        like: bool,
        detail: ReadError,
    },
    /// Names no valid caller and operation id: nobody to answer.
    Unattributable(ReadError),
}

/// Why a queue message cannot be applied as it stands.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// SQS delivered a record without a body.
    #[error("message has no body")]
    NoBody,
    /// Not an envelope this worker reads.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A like whose accept time is not a sane one.
    #[error(transparent)]
    AcceptedAt(#[from] AcceptedAtOutOfRange),
    /// A points operation that breaks a rule HTTP applies (its accept time among them).
    #[error(transparent)]
    Rule(#[from] InvalidRequest),
}

/// The two fields that make a message answerable, read loosely.
#[derive(Deserialize)]
struct Attribution {
    operation_id: String,
    caller: String,
    #[serde(default)]
    operation: Option<OperationType>,
}

#[derive(Deserialize)]
struct OperationType {
    #[serde(rename = "type")]
    kind: Option<serde_json::Value>,
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("message is not a valid envelope: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("envelope version {0} is not supported (this worker reads version {ENVELOPE_VERSION})")]
    UnsupportedVersion(u32),
}

impl Envelope {
    pub fn new(operation_id: OperationId, caller: UserId, operation: Operation) -> Self {
        Self {
            version: ENVELOPE_VERSION,
            operation_id,
            caller,
            accepted_at: OffsetDateTime::now_utc(),
            operation,
        }
    }

    pub fn for_like(like: &LikeOperation) -> Self {
        let post_id = like.post.clone();
        Self {
            version: ENVELOPE_VERSION,
            operation_id: like.operation_id.clone(),
            caller: like.user.clone(),
            accepted_at: like.accepted_at,
            operation: match like.action {
                LikeAction::Like => Operation::Like { post_id },
                LikeAction::Unlike => Operation::Unlike { post_id },
            },
        }
    }

    pub fn for_points(op: &PointsOperation) -> Self {
        Self {
            version: ENVELOPE_VERSION,
            operation_id: op.operation_id.clone(),
            caller: op.caller.clone(),
            accepted_at: op.accepted_at,
            operation: Operation::Points(op.request.clone()),
        }
    }

    /// The points operation this envelope carries, if it carries one.
    pub fn points_operation(&self) -> Option<PointsOperation> {
        let Operation::Points(request) = &self.operation else {
            return None;
        };
        Some(PointsOperation {
            operation_id: self.operation_id.clone(),
            caller: self.caller.clone(),
            request: request.clone(),
            accepted_at: self.accepted_at,
        })
    }

    /// Decodes a queue message and holds it to every rule HTTP applies (SPEC
    /// section 4), its accept time checked against `now`.
    pub fn read(body: &str, types: &PointTypes, now: OffsetDateTime) -> Read {
        let broken = match Self::decode(body) {
            Ok(envelope) => match envelope.check(types, now) {
                Ok(()) => return Read::Valid(envelope),
                Err(reason) => reason,
            },
            Err(err) => err.into(),
        };
        let Ok(attribution) = serde_json::from_str::<Attribution>(body) else {
            return Read::Unattributable(broken);
        };
        match (
            OperationId::parse(attribution.operation_id),
            UserId::parse(attribution.caller),
        ) {
            (Ok(operation_id), Ok(caller)) => Read::Invalid {
                operation_id,
                caller,
                like: attribution
                    .operation
                    .and_then(|op| op.kind)
                    .is_some_and(|kind| kind == "like" || kind == "unlike"),
                detail: broken,
            },
            _ => Read::Unattributable(broken),
        }
    }

    /// The rules beyond the field types: the accept time, and the request rules
    /// of points operations.
    fn check(&self, types: &PointTypes, now: OffsetDateTime) -> Result<(), ReadError> {
        match self.points_operation() {
            Some(op) => Ok(op.validate(types, now)?),
            None => Ok(timestamp::check_accepted_at(
                self.accepted_at,
                now,
                timestamp::MAX_LIKE_AGE,
            )?),
        }
    }

    pub fn decode(body: &str) -> Result<Self, DecodeError> {
        let envelope: Envelope = serde_json::from_str(body)?;
        if envelope.version != ENVELOPE_VERSION {
            return Err(DecodeError::UnsupportedVersion(envelope.version));
        }
        Ok(envelope)
    }

    #[allow(
        clippy::expect_used,
        reason = "a struct of strings, numbers and string-keyed maps always serializes"
    )]
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("an envelope always serializes")
    }

    /// The like operation this envelope carries, if it carries one.
    pub fn like_operation(&self) -> Option<LikeOperation> {
        let (post, action) = match &self.operation {
            Operation::Like { post_id } => (post_id, LikeAction::Like),
            Operation::Unlike { post_id } => (post_id, LikeAction::Unlike),
            _ => return None,
        };
        Some(LikeOperation {
            operation_id: self.operation_id.clone(),
            user: self.caller.clone(),
            post: post.clone(),
            action,
            accepted_at: self.accepted_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIKE: &str = r#"{"version":1,"operation_id":"op-1","caller":"alice","accepted_at":"2026-11-21T05:30:10.123456Z","operation":{"type":"like","post_id":"p1"}}"#;

    #[test]
    fn a_documented_like_message_decodes_and_round_trips() {
        let envelope = Envelope::decode(LIKE).unwrap();
        assert_eq!(
            envelope.operation,
            Operation::Like {
                post_id: PostId::parse("p1").unwrap()
            }
        );
        assert_eq!(envelope.encode(), LIKE);
        let like = envelope.like_operation().unwrap();
        assert_eq!(Envelope::for_like(&like), envelope);
    }

    #[test]
    fn malformed_messages_are_rejected_with_the_reason() {
        for (body, needle) in [
            ("not json", "expected"),
            (&LIKE.replace("\"p1\"", "\"p 1\""), "may contain only"),
            (&LIKE.replace("\"like\"", "\"poke\""), "unknown variant"),
            (&LIKE.replace("\"caller\"", "\"user\""), "unknown field"),
            (&LIKE.replace("\"p1\"}", "\"p1\",\"x\":1}"), "unknown field"),
            (&LIKE.replace("05:30:10", "25:30:10"), "hour"),
        ] {
            let err = Envelope::decode(body).unwrap_err().to_string();
            assert!(err.contains(needle), "{body}: {err}");
        }
    }

    #[test]
    fn points_messages_decode_strictly() {
        let spend = r#"{"version":1,"operation_id":"s1","caller":"alice","accepted_at":"2026-11-21T05:30:10.123456Z","operation":{"type":"spend","amount":30}}"#;
        let envelope = Envelope::decode(spend).unwrap();
        let op = envelope.points_operation().unwrap();
        assert_eq!(Envelope::for_points(&op).encode(), spend);
        assert!(envelope.like_operation().is_none());
        for bad in [
            spend.replace("30", "0"),
            spend.replace("30", "1.5"),
            spend.replace("30", "\"30\""),
            spend.replace("30}", "30,\"extra\":1}"),
        ] {
            assert!(Envelope::decode(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_message_that_breaks_a_rule_says_which_kind_of_rule() {
        let now = OffsetDateTime::parse(
            "2026-11-21T05:31:00Z",
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        let types = PointTypes::shipped();
        let stale_like = LIKE.replace("2026-11-21", "2026-10-01");
        let to_self = r#"{"version":1,"operation_id":"t1","caller":"alice","accepted_at":"2026-11-21T05:30:10.123456Z","operation":{"type":"transfer","to_user_id":"alice","amount":5}}"#;
        let zero = to_self.replace("\"amount\":5", "\"amount\":0");
        let read = |body: &str| Envelope::read(body, &types, now);
        assert!(matches!(read(LIKE), Read::Valid(_)));
        assert!(matches!(
            read(&stale_like),
            Read::Invalid {
                like: true,
                detail: ReadError::AcceptedAt(_),
                ..
            }
        ));
        assert!(matches!(
            read(to_self),
            Read::Invalid {
                like: false,
                detail: ReadError::Rule(InvalidRequest::TransferToSelf),
                ..
            }
        ));
        assert!(matches!(
            read(&zero),
            Read::Invalid {
                detail: ReadError::Decode(DecodeError::Malformed(_)),
                ..
            }
        ));
        assert!(matches!(
            read("not json"),
            Read::Unattributable(ReadError::Decode(_))
        ));
    }

    #[test]
    fn an_unknown_envelope_version_is_rejected() {
        let err = Envelope::decode(&LIKE.replace("\"version\":1", "\"version\":2")).unwrap_err();
        assert!(matches!(err, DecodeError::UnsupportedVersion(2)));
    }
}
