//! What becomes of a points operation: it is recorded `pending` when accepted,
//! then ends `applied` or `rejected`, once. The record is what a same-key retry
//! and `GET /v1/me/points/operations/{id}` are answered from.

use serde::{Deserialize, Serialize};

use super::ledger::{Entry, EntryKind};
use super::{Lots, PointsOperation, PointsRequest};
use crate::domain::ids::{OperationId, UserId};
use crate::domain::timestamp;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperationStatus {
    /// Accepted, not yet applied.
    Pending,
    Applied,
    /// Final: retrying the same key answers the same rejection.
    Rejected,
}

/// Why an operation was rejected. Final: the same key answers it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
pub enum Rejection {
    #[error("the account does not hold enough available points")]
    InsufficientPoints,
    #[error("the point type is not one this service knows")]
    UnknownPointType,
    /// A queued message that breaks a rule HTTP would have answered 400 for.
    #[error("the operation breaks a rule of the API")]
    InvalidOperation,
    #[error("the account would hold more than the largest balance Tally keeps")]
    BalanceLimitExceeded,
    #[error("the account has as many open holds as it may")]
    TooManyHolds,
    #[error("the user has no hold with this id")]
    HoldNotFound,
    #[error("the hold was already captured or released")]
    HoldClosed,
    #[error("the hold expired and its points were released")]
    HoldExpired,
    #[error("the capture asks for more points than the hold holds")]
    CaptureExceedsHold,
    #[error("the user has no operation with this id")]
    OriginalNotFound,
    #[error("only an applied spend or capture can be refunded")]
    NotRefundable,
    #[error("the refund would give back more than the operation took")]
    RefundExceedsOriginal,
}

impl Rejection {
    pub fn code(self) -> &'static str {
        match self {
            Rejection::InsufficientPoints => "insufficient_points",
            Rejection::UnknownPointType => "unknown_point_type",
            Rejection::InvalidOperation => "invalid_operation",
            Rejection::BalanceLimitExceeded => "balance_limit_exceeded",
            Rejection::TooManyHolds => "too_many_holds",
            Rejection::HoldNotFound => "hold_not_found",
            Rejection::HoldClosed => "hold_closed",
            Rejection::HoldExpired => "hold_expired",
            Rejection::CaptureExceedsHold => "capture_exceeds_hold",
            Rejection::OriginalNotFound => "original_not_found",
            Rejection::NotRefundable => "not_refundable",
            Rejection::RefundExceedsOriginal => "refund_exceeds_original",
        }
    }
}

/// What Tally knows of one points operation, readable by its caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperationRecord {
    pub operation_id: OperationId,
    pub caller: UserId,
    pub status: OperationStatus,
    /// What was asked; absent for a queued message too malformed to read as a request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<PointsRequest>,
    pub accepted_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Rejection>,
    /// For `invalid_operation`: which rule the message broke.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The first account's side of the ledger change, once applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry: Option<Entry>,
    /// A spend, or a hold once captured: the points refunds may still give
    /// back, with the expiry each had when taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refundable: Option<Lots>,
    /// A hold once captured or released: the operation that closed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_by: Option<OperationId>,
    /// Once applied, each account's entry of the operation itself (a
    /// transfer's two sides), for the `Points Operation Settled` event.
    /// Absent on records applied before events existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entries: Vec<WrittenEntry>,
}

/// One account's entry of an applied operation, as its event reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrittenEntry {
    pub user_id: UserId,
    pub seq: u64,
    pub kind: EntryKind,
    pub amount: i64,
    pub balance_after: u64,
    #[serde(default)]
    pub held_after: u64,
}

impl WrittenEntry {
    pub fn of(user: &UserId, entry: &Entry) -> Self {
        Self {
            user_id: user.clone(),
            seq: entry.seq,
            kind: entry.kind,
            amount: entry.amount,
            balance_after: entry.balance_after,
            held_after: entry.held_after,
        }
    }
}

impl OperationRecord {
    pub fn pending(op: &PointsOperation) -> Self {
        Self {
            operation_id: op.operation_id.clone(),
            caller: op.caller.clone(),
            status: OperationStatus::Pending,
            request: Some(op.request.clone()),
            accepted_at: timestamp::format(op.accepted_at),
            reason: None,
            detail: None,
            entry: None,
            refundable: None,
            closed_by: None,
            entries: Vec::new(),
        }
    }

    /// The record of an operation rejected for good.
    pub fn rejected(op: &PointsOperation, reason: Rejection, detail: Option<String>) -> Self {
        Self {
            status: OperationStatus::Rejected,
            reason: Some(reason),
            detail,
            ..Self::pending(op)
        }
    }

    /// The operation a pending record stands for, to queue it again.
    pub fn operation(&self) -> Option<PointsOperation> {
        Some(PointsOperation {
            operation_id: self.operation_id.clone(),
            caller: self.caller.clone(),
            request: self.request.clone()?,
            accepted_at: timestamp::parse(&self.accepted_at)?,
        })
    }

    /// Whether this is an applied hold (open or closed).
    pub fn is_applied_hold(&self) -> bool {
        self.status == OperationStatus::Applied
            && matches!(self.request, Some(PointsRequest::Hold(_)))
    }
}
