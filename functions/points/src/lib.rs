//! The points function: every points route of SPEC section 3, as one axum router.
//!
//! A write is recorded as a pending operation under the caller's
//! `Idempotency-Key` (the idempotency guard), then put on the points FIFO queue,
//! grouped by account; the worker applies it. Reads go straight to DynamoDB.
//!
//! The record is a transactional outbox: once it is written the answer is 202,
//! whatever SendMessage does, because the operation will be applied or rejected
//! (a same-key retry queues it again at once; reconcile re-drives it otherwise).
//! Only a failed record write answers 503: then Tally cannot know whether it
//! recorded the operation, and a same-key retry answers its real status.

mod body;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use shared::clock::Clock;
use shared::domain::ids::{OperationId, UserId};
use shared::domain::likes::parse_page_size;
use shared::domain::points::{
    Entry, Grant, PointTypes, PointsOperation, PointsRequest, Rejection, Spend, Transfer,
};
use shared::http::{ApiQuery, Caller, Problem, Routes};
use shared::message::Envelope;
use shared::queue::OperationQueue;
use shared::store::Store;
use shared::store::points::{HistoryError, OperationStatus, Recorded};

/// The scope a token needs to grant points.
pub const ADMIN_SCOPE: &str = "points:admin";

/// What every request borrows: clients and point types, loaded once per cold start.
#[derive(Debug, Clone)]
pub struct PointsApi {
    pub store: Store,
    pub queue: OperationQueue,
    pub point_types: PointTypes,
    /// When operations are accepted and points expire.
    pub clock: Clock,
}

impl PointsApi {
    pub fn new(store: Store, queue: OperationQueue) -> Self {
        Self {
            store,
            queue,
            point_types: PointTypes::shipped(),
            clock: Clock::system(),
        }
    }

    /// Reads the configuration `template.yaml` sets and builds the clients.
    pub async fn from_env() -> Result<Self, shared::config::ConfigError> {
        let table = shared::config::table_name()?;
        let queue_url = shared::config::points_queue_url()?;
        let aws = shared::config::aws().await;
        Ok(Self::new(
            Store::from_config(&aws, table),
            OperationQueue::from_config(&aws, queue_url),
        ))
    }
}

/// Every points route, as `template.yaml` and `openapi.yaml` list them.
pub fn routes() -> Routes<PointsApi> {
    Routes::default()
        .route(Method::POST, "/v1/points/grants", grant)
        .route(Method::POST, "/v1/me/points/spend", spend)
        .route(Method::POST, "/v1/me/points/transfers", transfer)
        .route(Method::GET, "/v1/me/points", balance)
        .route(Method::GET, "/v1/me/points/history", history)
        .route(
            Method::GET,
            "/v1/me/points/operations/{operation_id}",
            operation,
        )
}

pub fn router(api: PointsApi) -> Router {
    routes().into_router().with_state(api)
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Accepted {
    pub operation_id: OperationId,
    pub status: OperationStatus,
}

type Answer = Result<(StatusCode, Json<Accepted>), Problem>;

async fn grant(
    State(api): State<PointsApi>,
    caller: Caller,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Answer {
    if !caller.has_scope(ADMIN_SCOPE) {
        return Err(Problem::forbidden(format!(
            "granting points needs the {ADMIN_SCOPE} scope"
        )));
    }
    let key = idempotency_key(&headers)?;
    let grant: Grant = body::parse(&body)?;
    accept(&api, caller.user, key, PointsRequest::Grant(grant)).await
}

async fn spend(
    State(api): State<PointsApi>,
    caller: Caller,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Answer {
    let key = idempotency_key(&headers)?;
    let spend: Spend = body::parse(&body)?;
    accept(&api, caller.user, key, PointsRequest::Spend(spend)).await
}

async fn transfer(
    State(api): State<PointsApi>,
    caller: Caller,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Answer {
    let key = idempotency_key(&headers)?;
    let transfer: Transfer = body::parse(&body)?;
    accept(&api, caller.user, key, PointsRequest::Transfer(transfer)).await
}

fn idempotency_key(headers: &HeaderMap) -> Result<OperationId, Problem> {
    let value = headers.get("idempotency-key").ok_or_else(|| {
        Problem::bad_request(
            "idempotency_key_required",
            "writes need an Idempotency-Key header",
        )
    })?;
    let text = value.to_str().map_err(|_| {
        Problem::bad_request("invalid_idempotency_key", "Idempotency-Key must be ASCII")
    })?;
    OperationId::parse(text).map_err(|reason| {
        Problem::bad_request(
            "invalid_idempotency_key",
            format!("Idempotency-Key {reason}"),
        )
    })
}

/// Checks the request by the domain's rules, records it under the caller's key
/// and queues it. A key used before answers what it holds (and queues it again
/// while it is pending, which the worker and the FIFO queue's deduplication
/// make harmless).
async fn accept(
    api: &PointsApi,
    caller: UserId,
    key: OperationId,
    request: PointsRequest,
) -> Answer {
    request
        .validate(&caller, &api.point_types)
        .map_err(|invalid| Problem::bad_request(invalid.code(), invalid.to_string()))?;
    let op = PointsOperation {
        operation_id: key,
        caller,
        request,
        accepted_at: api.clock.now(),
    };
    let status = match api.store.record_operation(&op).await? {
        Recorded::New => {
            enqueue(api, &op).await;
            tracing::info!(operation_id = %op.operation_id, caller = %op.caller, "accepted");
            OperationStatus::Pending
        }
        Recorded::Existing(record) => {
            if record.request.as_ref() != Some(&op.request) {
                return Err(Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "idempotency_key_reused",
                    "Idempotency key reused",
                    "this Idempotency-Key was used for a different request",
                ));
            }
            if let Some(original) = record.operation()
                && record.status == OperationStatus::Pending
            {
                enqueue(api, &original).await;
            }
            tracing::info!(operation_id = %op.operation_id, status = ?record.status, "replayed");
            record.status
        }
    };
    Ok((
        StatusCode::ACCEPTED,
        Json(Accepted {
            operation_id: op.operation_id,
            status,
        }),
    ))
}

/// Queues a recorded operation. A failure (or a lost answer) is logged, not
/// answered: the record is the outbox, and reconcile re-drives what stays pending.
async fn enqueue(api: &PointsApi, op: &PointsOperation) {
    let group = op.request.ordering_account(&op.caller);
    if let Err(err) = api
        .queue
        .send_ordered(&Envelope::for_points(op), group.as_str())
        .await
    {
        tracing::warn!(operation_id = %op.operation_id, error = %shared::http::error_chain(&err), "recorded but not queued: a same-key retry or reconcile's re-drive queues it");
    }
}

#[derive(Debug, Serialize)]
struct Balance {
    balance: u64,
    expiring: Vec<Expiring>,
}

#[derive(Debug, Serialize)]
struct Expiring {
    amount: u64,
    expires_at: String,
}

async fn balance(State(api): State<PointsApi>, caller: Caller) -> Result<Json<Balance>, Problem> {
    // Points past their expiry are gone now, whether or not the expiry run has
    // written their `expire` entry yet.
    let account = api
        .store
        .account(&caller.user)
        .await?
        .as_of(api.clock.now());
    Ok(Json(Balance {
        balance: account.balance,
        expiring: account
            .expiring()
            .map(|(at, amount)| Expiring {
                amount,
                expires_at: shared::domain::timestamp::format(at),
            })
            .collect(),
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryQuery {
    limit: Option<String>,
    cursor: Option<String>,
}

#[derive(Debug, Serialize)]
struct History {
    items: Vec<Entry>,
    next_cursor: Option<String>,
}

async fn history(
    State(api): State<PointsApi>,
    caller: Caller,
    ApiQuery(query): ApiQuery<HistoryQuery>,
) -> Result<Json<History>, Problem> {
    let limit = parse_page_size(query.limit.as_deref())?;
    let page = api
        .store
        .history(&caller.user, limit, query.cursor.as_deref())
        .await
        .map_err(|err| match err {
            HistoryError::InvalidCursor => Problem::bad_request("invalid_cursor", err.to_string()),
            HistoryError::Store(err) => err.into(),
        })?;
    Ok(Json(History {
        items: page.items,
        next_cursor: page.next_cursor,
    }))
}

#[derive(Debug, Serialize)]
struct OperationAnswer {
    operation_id: OperationId,
    status: OperationStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    entry: Option<Entry>,
}

async fn operation(
    State(api): State<PointsApi>,
    caller: Caller,
    Path(operation_id): Path<String>,
) -> Result<Json<OperationAnswer>, Problem> {
    let id = OperationId::parse(operation_id).map_err(|reason| {
        Problem::bad_request("invalid_operation_id", format!("operation id {reason}"))
    })?;
    let record = api
        .store
        .operation(&caller.user, &id)
        .await?
        .ok_or_else(|| {
            Problem::new(
                StatusCode::NOT_FOUND,
                "operation_not_found",
                "Not found",
                "you have no operation with this id",
            )
        })?;
    Ok(Json(OperationAnswer {
        operation_id: record.operation_id,
        status: record.status,
        reason: record.reason.map(Rejection::code),
        detail: record.detail,
        entry: record.entry,
    }))
}
