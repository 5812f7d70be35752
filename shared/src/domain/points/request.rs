//! What a caller may ask of the ledger, and the rules a request obeys wherever
//! it enters: an HTTP body ([`parse_body`], then [`PointsRequest::validate`]) or a
//! queue message (decoded, then [`PointsOperation::validate`]). A new kind of
//! request is one variant here, one planning rule in [`super::ledger`].

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::{Duration, OffsetDateTime};

use super::{Amount, MAX_AMOUNT, MAX_DESCRIPTION_CHARS, PointTypes, SignedAmount};
use crate::domain::ids::{OperationId, Reference, UserId};
use crate::domain::timestamp::{self, AcceptedAtOutOfRange};

/// A hold's lifetime when the request names none, in seconds.
pub const DEFAULT_HOLD_SECONDS: u64 = 900;
/// The shortest and longest lifetime a hold may ask for, in seconds (a minute, a week).
pub const HOLD_SECONDS: std::ops::RangeInclusive<u64> = 60..=604_800;

/// A points write, as the caller asked for it. Stored with the operation so a
/// retry with the same key can be compared to the original; it is also the
/// queue message's `operation` (see `docs/queue-messages.md`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PointsRequest {
    Grant(Grant),
    Spend(Spend),
    Transfer(Transfer),
    Hold(Hold),
    Capture(Capture),
    Release(Release),
    Refund(Refund),
    Adjust(Adjustment),
}

/// An admin gives `user_id` points of a type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    pub user_id: UserId,
    pub amount: Amount,
    pub point_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<Reference>,
}

/// The caller spends points.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spend {
    pub amount: Amount,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<Reference>,
}

/// The caller gives points to `to_user_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transfer {
    pub to_user_id: UserId,
    pub amount: Amount,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<Reference>,
}

/// The caller reserves points for a checkout; the hold's id is the operation's id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hold {
    pub amount: Amount,
    /// How long the hold lasts unless captured or released (default [`DEFAULT_HOLD_SECONDS`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<Reference>,
}

impl Hold {
    pub fn lifetime(&self) -> Duration {
        // Validation keeps it within HOLD_SECONDS.
        Duration::seconds(self.expires_in_seconds.unwrap_or(DEFAULT_HOLD_SECONDS) as i64)
    }
}

/// Turns all or part of `user_id`'s hold into a spend; the rest returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capture {
    pub user_id: UserId,
    pub hold_id: OperationId,
    /// Default: everything the hold holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<Amount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<Reference>,
}

/// Gives `user_id`'s held points back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Release {
    pub user_id: UserId,
    pub hold_id: OperationId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<Reference>,
}

/// Gives back to `user_id` all or part of what one of their spends or captures took.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Refund {
    pub user_id: UserId,
    /// The spend or capture refunded (or the hold it captured).
    pub operation_id: OperationId,
    /// Default: everything still refundable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<Amount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<Reference>,
}

/// Support corrects `user_id`'s balance by hand, with a reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Adjustment {
    pub user_id: UserId,
    pub amount: SignedAmount,
    /// Required: [`PointsRequest::validate`] says so with its own code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For credits: how long the points last (default: they never expire).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub point_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<Reference>,
}

/// The body of `POST /v1/me/points/holds/{hold_id}/capture`: the holder is the caller.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OwnCapture {
    #[serde(default)]
    pub amount: Option<Amount>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub reference: Option<Reference>,
}

/// The body of `POST /v1/me/points/holds/{hold_id}/release` (may be empty).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OwnRelease {
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub reference: Option<Reference>,
}

impl OwnCapture {
    pub fn of(self, holder: UserId, hold_id: OperationId) -> Capture {
        Capture {
            user_id: holder,
            hold_id,
            amount: self.amount,
            description: self.description,
            reference: self.reference,
        }
    }
}

impl OwnRelease {
    pub fn of(self, holder: UserId, hold_id: OperationId) -> Release {
        Release {
            user_id: holder,
            hold_id,
            description: self.description,
            reference: self.reference,
        }
    }
}

/// A request that breaks a rule of SPEC section 3, wherever it entered (HTTP
/// answers 400 with [`code`](InvalidRequest::code); a queued one ends rejected
/// `invalid_operation` with this text as its detail).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidRequest {
    /// The body is not the JSON the route takes: `code` names what is wrong.
    #[error("{detail}")]
    Malformed { code: &'static str, detail: String },
    #[error("description may be at most {MAX_DESCRIPTION_CHARS} characters, got {0}")]
    DescriptionTooLong(usize),
    #[error("reason may be at most {MAX_DESCRIPTION_CHARS} characters, got {0}")]
    ReasonTooLong(usize),
    #[error("an adjustment needs a reason")]
    ReasonRequired,
    #[error("point_type {given:?} is not one of {known}")]
    UnknownPointType { given: String, known: String },
    #[error("point_type applies to credits only; this adjustment takes points")]
    PointTypeOnDebit,
    #[error("to_user_id must name another user than the caller")]
    TransferToSelf,
    #[error("expires_in_seconds must be from {min} to {max}, got {0}", min = HOLD_SECONDS.start(), max = HOLD_SECONDS.end())]
    ExpiresInOutOfRange(u64),
    #[error(transparent)]
    AcceptedAt(#[from] AcceptedAtOutOfRange),
}

impl InvalidRequest {
    pub fn code(&self) -> &'static str {
        match self {
            InvalidRequest::Malformed { code, .. } => code,
            InvalidRequest::DescriptionTooLong(_) => "description_too_long",
            InvalidRequest::ReasonTooLong(_) => "reason_too_long",
            InvalidRequest::ReasonRequired => "reason_required",
            InvalidRequest::UnknownPointType { .. } => "unknown_point_type",
            InvalidRequest::PointTypeOnDebit => "point_type_on_debit",
            InvalidRequest::TransferToSelf => "transfer_to_self",
            InvalidRequest::ExpiresInOutOfRange(_) => "expires_in_out_of_range",
            InvalidRequest::AcceptedAt(_) => "invalid_accepted_at",
        }
    }

    fn malformed(code: &'static str, detail: impl Into<String>) -> Self {
        InvalidRequest::Malformed {
            code,
            detail: detail.into(),
        }
    }
}

impl PointsRequest {
    /// The rules a request obeys beyond its field types (which deserializing
    /// already checked: identifiers, amounts), the same for HTTP and the queue.
    pub fn validate(&self, caller: &UserId, types: &PointTypes) -> Result<(), InvalidRequest> {
        let known_type = |name: &String| match types.lifetime(name) {
            Some(_) => Ok(()),
            None => Err(InvalidRequest::UnknownPointType {
                given: name.clone(),
                known: types.names().collect::<Vec<_>>().join(", "),
            }),
        };
        match self {
            PointsRequest::Grant(grant) => known_type(&grant.point_type)?,
            PointsRequest::Transfer(transfer) if transfer.to_user_id == *caller => {
                return Err(InvalidRequest::TransferToSelf);
            }
            PointsRequest::Hold(hold) => {
                if let Some(seconds) = hold.expires_in_seconds
                    && !HOLD_SECONDS.contains(&seconds)
                {
                    return Err(InvalidRequest::ExpiresInOutOfRange(seconds));
                }
            }
            PointsRequest::Adjust(adjustment) => {
                if adjustment
                    .reason
                    .as_deref()
                    .is_none_or(|reason| reason.trim().is_empty())
                {
                    return Err(InvalidRequest::ReasonRequired);
                }
                if let Some(point_type) = &adjustment.point_type {
                    if adjustment.amount.get() < 0 {
                        return Err(InvalidRequest::PointTypeOnDebit);
                    }
                    known_type(point_type)?;
                }
            }
            _ => {}
        }
        let chars = |text: &Option<String>| text.as_deref().map_or(0, |t| t.chars().count());
        let (description, reason) = match self {
            PointsRequest::Grant(r) => (chars(&r.description), 0),
            PointsRequest::Spend(r) => (chars(&r.description), 0),
            PointsRequest::Transfer(r) => (chars(&r.description), 0),
            PointsRequest::Hold(r) => (chars(&r.description), 0),
            PointsRequest::Capture(r) => (chars(&r.description), 0),
            PointsRequest::Release(r) => (chars(&r.description), 0),
            PointsRequest::Refund(r) => (0, chars(&r.reason)),
            PointsRequest::Adjust(r) => (0, chars(&r.reason)),
        };
        if description > MAX_DESCRIPTION_CHARS {
            return Err(InvalidRequest::DescriptionTooLong(description));
        }
        if reason > MAX_DESCRIPTION_CHARS {
            return Err(InvalidRequest::ReasonTooLong(reason));
        }
        Ok(())
    }

    /// The account whose operations must apply in order with this one: the
    /// account the points come from, or the one it credits or acts on.
    pub fn ordering_account<'a>(&'a self, caller: &'a UserId) -> &'a UserId {
        match self {
            PointsRequest::Spend(_) | PointsRequest::Transfer(_) | PointsRequest::Hold(_) => caller,
            PointsRequest::Grant(Grant { user_id, .. })
            | PointsRequest::Capture(Capture { user_id, .. })
            | PointsRequest::Release(Release { user_id, .. })
            | PointsRequest::Refund(Refund { user_id, .. })
            | PointsRequest::Adjust(Adjustment { user_id, .. }) => user_id,
        }
    }

    /// Every account this request changes; the first is the one whose entry
    /// the operation's record shows.
    pub fn accounts<'a>(&'a self, caller: &'a UserId) -> Vec<&'a UserId> {
        match self {
            PointsRequest::Transfer(transfer) => vec![caller, &transfer.to_user_id],
            _ => vec![self.ordering_account(caller)],
        }
    }

    /// The hold a capture or release closes: (holder, hold id).
    pub fn hold(&self) -> Option<(&UserId, &OperationId)> {
        match self {
            PointsRequest::Capture(Capture {
                user_id, hold_id, ..
            })
            | PointsRequest::Release(Release {
                user_id, hold_id, ..
            }) => Some((user_id, hold_id)),
            _ => None,
        }
    }

    /// The caller's own reference for the operation (an order id), if given.
    pub fn reference(&self) -> Option<&Reference> {
        match self {
            PointsRequest::Grant(Grant { reference, .. })
            | PointsRequest::Spend(Spend { reference, .. })
            | PointsRequest::Transfer(Transfer { reference, .. })
            | PointsRequest::Hold(Hold { reference, .. })
            | PointsRequest::Capture(Capture { reference, .. })
            | PointsRequest::Release(Release { reference, .. })
            | PointsRequest::Refund(Refund { reference, .. })
            | PointsRequest::Adjust(Adjustment { reference, .. }) => reference.as_ref(),
        }
    }

    /// The kind's name, as the queue's `type` and metrics name it.
    pub fn kind(&self) -> &'static str {
        match self {
            PointsRequest::Grant(_) => "grant",
            PointsRequest::Spend(_) => "spend",
            PointsRequest::Transfer(_) => "transfer",
            PointsRequest::Hold(_) => "hold",
            PointsRequest::Capture(_) => "capture",
            PointsRequest::Release(_) => "release",
            PointsRequest::Refund(_) => "refund",
            PointsRequest::Adjust(_) => "adjust",
        }
    }
}

/// One accepted points operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PointsOperation {
    pub operation_id: OperationId,
    pub caller: UserId,
    pub request: PointsRequest,
    pub accepted_at: OffsetDateTime,
}

impl PointsOperation {
    /// Everything [`PointsRequest::validate`] checks, and an accept time that is
    /// sane at `now`: what the worker holds a queued operation to.
    pub fn validate(&self, types: &PointTypes, now: OffsetDateTime) -> Result<(), InvalidRequest> {
        timestamp::check_accepted_at(self.accepted_at, now, timestamp::MAX_POINTS_AGE)?;
        self.request.validate(&self.caller, types)
    }
}

/// A JSON body a points route takes.
pub trait RequestBody: DeserializeOwned {
    /// Whether `amount` may be negative (never 0).
    const SIGNED_AMOUNT: bool = false;
    /// Whether `amount` may be left out (or `null`, the same).
    const OPTIONAL_AMOUNT: bool = false;
}

impl RequestBody for Grant {}
impl RequestBody for Spend {}
impl RequestBody for Transfer {}
impl RequestBody for Hold {}
impl RequestBody for Capture {
    const OPTIONAL_AMOUNT: bool = true;
}
impl RequestBody for Release {}
impl RequestBody for Refund {
    const OPTIONAL_AMOUNT: bool = true;
}
impl RequestBody for OwnCapture {
    const OPTIONAL_AMOUNT: bool = true;
}
impl RequestBody for OwnRelease {}
impl RequestBody for Adjustment {
    const SIGNED_AMOUNT: bool = true;
}

/// Reads a request body strictly, with a `detail` that names the field and
/// what is wrong with it, and a code for the field when it has one.
pub fn parse_body<T: RequestBody>(bytes: &[u8]) -> Result<T, InvalidRequest> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        InvalidRequest::malformed("invalid_json", format!("the body is not valid JSON: {e}"))
    })?;
    if !value.is_object() {
        return Err(InvalidRequest::malformed(
            "invalid_body",
            "the body must be a JSON object",
        ));
    }
    match value.get("amount") {
        Some(Value::Null) if T::OPTIONAL_AMOUNT => {}
        Some(amount) => check_amount(amount, T::SIGNED_AMOUNT)?,
        None => {}
    }
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        let unknown_field = err.inner().to_string().starts_with("unknown field");
        let code = match path.as_str() {
            _ if unknown_field => "invalid_body",
            "user_id" | "to_user_id" => "invalid_user_id",
            "hold_id" => "invalid_hold_id",
            "operation_id" => "invalid_operation_id",
            "reference" => "invalid_reference",
            _ => "invalid_body",
        };
        let detail = if path == "." {
            err.inner().to_string()
        } else {
            format!("{path}: {}", err.inner())
        };
        InvalidRequest::malformed(code, detail)
    })
}

/// Amounts get their own codes: the wrong type, a fraction, or a whole number
/// out of range (1 to [`MAX_AMOUNT`], or for a signed amount, either sign but not 0).
fn check_amount(amount: &Value, signed: bool) -> Result<(), InvalidRequest> {
    let out_of_range = |shown: String| {
        let range = if signed {
            format!("from -{MAX_AMOUNT} to {MAX_AMOUNT}, not 0")
        } else {
            format!("from 1 to {MAX_AMOUNT}")
        };
        InvalidRequest::malformed(
            "amount_out_of_range",
            format!("amount must be {range}, got {shown}"),
        )
    };
    let in_range = |n: f64| {
        let magnitude = if signed { n.abs() } else { n };
        magnitude != 0.0 && (1.0..=MAX_AMOUNT as f64).contains(&magnitude)
    };
    match amount {
        Value::Number(number) => match number.as_f64() {
            // Integers and `30.0` or `3e1`, the whole number 30 (JSON Schema's `integer`).
            Some(n) if n.fract() == 0.0 && in_range(n) => Ok(()),
            Some(n) if n.fract() == 0.0 => Err(out_of_range(number.to_string())),
            _ => Err(InvalidRequest::malformed(
                "invalid_amount",
                format!("amount must be a whole number of points, got {number}"),
            )),
        },
        other => Err(InvalidRequest::malformed(
            "invalid_amount",
            format!("amount must be an integer, got {}", json_type(other)),
        )),
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
