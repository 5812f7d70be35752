//! The points function: every points route of SPEC section 3, as one axum router.
//!
//! Each write handler reads as parse, call, map: it parses the body by the
//! domain's rules, hands the request to [`PointsService::accept`] (which records
//! it under the caller's `Idempotency-Key` and queues it for the worker) and maps
//! the answer: a status is 202, a broken rule 400, a reused key 422, and only a
//! record write Tally could not confirm 503. Reads go straight to DynamoDB;
//! the insight routes (the balance at an instant, statements, leaderboards)
//! through [`shared::points_insight`].

use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse as _, Response};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use shared::domain::ids::{OperationId, UserId};
use shared::domain::likes::parse_page_size;
use shared::domain::points::insight::{self, InvalidInsight, Standing};
use shared::domain::points::request::{OwnCapture, OwnRelease};
use shared::domain::points::{
    Entry, InvalidRequest, OperationStatus, PointsRequest, Rejection, RequestBody, lots_total,
    parse_body,
};
use shared::http::{ApiQuery, Caller, Problem, Routes};
use shared::points_insight::{self, StatementError, StatementQuery};
use shared::points_service::{AcceptError, PointsService};
use shared::queue::OperationQueue;
use shared::store::Store;
use shared::store::points::HistoryError;

/// The SDK timeouts of every AWS call this function makes (see [`shared::config::Timeouts`]).
pub const TIMEOUTS: shared::config::Timeouts = shared::config::Timeouts::HTTP;

/// The environment variables `from_env` reads (template.yaml sets exactly these).
pub const ENVIRONMENT: &[&str] = &[shared::config::TABLE_NAME, shared::config::POINTS_QUEUE_URL];

/// The scope a token needs to grant, capture or release for others, refund and adjust.
pub const ADMIN_SCOPE: &str = "points:admin";

/// What every request borrows: the points service and the queue, built once per cold start.
#[derive(Debug, Clone)]
pub struct PointsApi {
    pub service: PointsService,
    pub queue: OperationQueue,
}

impl PointsApi {
    pub fn new(store: Store, queue: OperationQueue) -> Self {
        Self {
            service: PointsService::new(store),
            queue,
        }
    }

    /// Reads the configuration `template.yaml` sets and builds the clients.
    pub async fn from_env() -> Result<Self, shared::config::ConfigError> {
        let table = shared::config::table_name()?;
        let queue_url = shared::config::points_queue_url()?;
        let aws = shared::config::aws(TIMEOUTS).await;
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
        .route(Method::POST, "/v1/me/points/holds", hold)
        .route(
            Method::POST,
            "/v1/me/points/holds/{hold_id}/capture",
            capture_own,
        )
        .route(
            Method::POST,
            "/v1/me/points/holds/{hold_id}/release",
            release_own,
        )
        .route(Method::POST, "/v1/points/holds/capture", capture)
        .route(Method::POST, "/v1/points/holds/release", release)
        .route(Method::POST, "/v1/points/refunds", refund)
        .route(Method::POST, "/v1/points/adjustments", adjust)
        .route(Method::GET, "/v1/me/points", balance)
        .route(Method::GET, "/v1/me/points/history", history)
        .route(Method::GET, "/v1/me/points/statement", statement)
        .route(Method::GET, "/v1/me/points/rank", rank)
        .route(Method::GET, "/v1/points/leaderboard", leaderboard)
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
    let caller = admin(caller, "granting points")?;
    write(&api, caller, &headers, &body, PointsRequest::Grant).await
}

async fn spend(
    State(api): State<PointsApi>,
    caller: Caller,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Answer {
    write(&api, caller.user, &headers, &body, PointsRequest::Spend).await
}

async fn transfer(
    State(api): State<PointsApi>,
    caller: Caller,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Answer {
    write(&api, caller.user, &headers, &body, PointsRequest::Transfer).await
}

async fn hold(
    State(api): State<PointsApi>,
    caller: Caller,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Answer {
    write(&api, caller.user, &headers, &body, PointsRequest::Hold).await
}

async fn capture_own(
    State(api): State<PointsApi>,
    caller: Caller,
    Path(hold_id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Answer {
    let hold_id = hold_id_in_path(hold_id)?;
    let holder = caller.user.clone();
    write(
        &api,
        caller.user,
        &headers,
        optional(&body),
        |own: OwnCapture| PointsRequest::Capture(own.of(holder, hold_id)),
    )
    .await
}

async fn release_own(
    State(api): State<PointsApi>,
    caller: Caller,
    Path(hold_id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Answer {
    let hold_id = hold_id_in_path(hold_id)?;
    let holder = caller.user.clone();
    write(
        &api,
        caller.user,
        &headers,
        optional(&body),
        |own: OwnRelease| PointsRequest::Release(own.of(holder, hold_id)),
    )
    .await
}

async fn capture(
    State(api): State<PointsApi>,
    caller: Caller,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Answer {
    let caller = admin(caller, "capturing another user's hold")?;
    write(&api, caller, &headers, &body, PointsRequest::Capture).await
}

async fn release(
    State(api): State<PointsApi>,
    caller: Caller,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Answer {
    let caller = admin(caller, "releasing another user's hold")?;
    write(&api, caller, &headers, &body, PointsRequest::Release).await
}

async fn refund(
    State(api): State<PointsApi>,
    caller: Caller,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Answer {
    let caller = admin(caller, "refunding points")?;
    write(&api, caller, &headers, &body, PointsRequest::Refund).await
}

async fn adjust(
    State(api): State<PointsApi>,
    caller: Caller,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Answer {
    let caller = admin(caller, "adjusting a balance")?;
    write(&api, caller, &headers, &body, PointsRequest::Adjust).await
}

/// Parse, call, map: the `Idempotency-Key`, then the body by the domain's
/// rules, then [`accept`].
async fn write<T: RequestBody>(
    api: &PointsApi,
    caller: UserId,
    headers: &HeaderMap,
    body: &[u8],
    request: impl FnOnce(T) -> PointsRequest,
) -> Answer {
    let key = idempotency_key(headers)?;
    let parsed: T = parse_body(body).map_err(invalid)?;
    accept(api, caller, key, request(parsed)).await
}

/// The body of a route whose fields are all optional (capturing or releasing
/// one's own hold): no body at all reads as `{}`, the same request.
fn optional(body: &[u8]) -> &[u8] {
    if body.is_empty() { b"{}" } else { body }
}

/// The caller, if its token carries [`ADMIN_SCOPE`].
fn admin(caller: Caller, what: &str) -> Result<UserId, Problem> {
    if caller.has_scope(ADMIN_SCOPE) {
        Ok(caller.user)
    } else {
        Err(Problem::forbidden(format!(
            "{what} needs the {ADMIN_SCOPE} scope"
        )))
    }
}

fn invalid(invalid: InvalidRequest) -> Problem {
    Problem::bad_request(invalid.code(), invalid.to_string())
}

fn hold_id_in_path(hold_id: String) -> Result<OperationId, Problem> {
    OperationId::parse(hold_id)
        .map_err(|reason| Problem::bad_request("invalid_hold_id", format!("hold id {reason}")))
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

/// Hands the request to the points service and maps its answer.
async fn accept(
    api: &PointsApi,
    caller: UserId,
    key: OperationId,
    request: PointsRequest,
) -> Answer {
    let status = api
        .service
        .accept(&api.queue, caller, key.clone(), request)
        .await
        .map_err(|err| match err {
            AcceptError::Invalid(invalid_request) => invalid(invalid_request),
            AcceptError::KeyReused => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "Idempotency key reused",
                err.to_string(),
            ),
            AcceptError::Store(err) => err.into(),
        })?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Accepted {
            operation_id: key,
            status,
        }),
    ))
}

#[derive(Debug, Serialize)]
struct Balance {
    /// Every point the caller owns, held ones included.
    balance: u64,
    /// Points in open holds.
    held: u64,
    /// What may be spent, transferred or held: `balance - held`.
    available: u64,
    /// The available points that expire, soonest first.
    expiring: Vec<Expiring>,
}

#[derive(Debug, Serialize)]
struct Expiring {
    amount: u64,
    expires_at: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BalanceQuery {
    at: Option<String>,
}

/// The balance at an instant, from the entries: the fields of [`Balance`]
/// that entries record (which lot each point came from, and so `expiring`,
/// they do not), the instant, and the entry it is after.
#[derive(Debug, Serialize)]
struct BalanceAt {
    #[serde(flatten)]
    standing: Standing,
    #[serde(with = "shared::domain::timestamp::serde_fixed")]
    at: time::OffsetDateTime,
}

async fn balance(
    State(api): State<PointsApi>,
    caller: Caller,
    ApiQuery(query): ApiQuery<BalanceQuery>,
) -> Result<Response, Problem> {
    if let Some(at) = query.at {
        let at = insight::past_instant("at", &at, api.service.clock.now()).map_err(refused)?;
        let standing = points_insight::balance_at(&api.service.store, &caller.user, at).await?;
        return Ok(Json(BalanceAt { standing, at }).into_response());
    }
    let account = api.service.account(&caller.user).await?;
    Ok(Json(Balance {
        balance: account.balance,
        held: account.held(),
        available: account.available(),
        expiring: account
            .expiring()
            .map(|(at, amount)| Expiring {
                amount,
                expires_at: shared::domain::timestamp::format(at),
            })
            .collect(),
    })
    .into_response())
}

fn refused(invalid: InvalidInsight) -> Problem {
    Problem::bad_request(invalid.code(), invalid.to_string())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StatementParams {
    from: String,
    to: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

async fn statement(
    State(api): State<PointsApi>,
    caller: Caller,
    ApiQuery(query): ApiQuery<StatementParams>,
) -> Result<Json<points_insight::Statement>, Problem> {
    let limit = parse_page_size(query.limit.as_deref())?;
    let asked = StatementQuery {
        from: &query.from,
        to: query.to.as_deref(),
        cursor: query.cursor.as_deref(),
    };
    let now = api.service.clock.now();
    let statement = points_insight::statement(&api.service.store, &caller.user, asked, limit, now)
        .await
        .map_err(|err| match err {
            StatementError::Invalid(invalid) => refused(invalid),
            StatementError::InvalidCursor => {
                Problem::bad_request("invalid_cursor", err.to_string())
            }
            StatementError::Store(err) => err.into(),
        })?;
    Ok(Json(statement))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LeaderboardQuery {
    period: String,
    limit: Option<String>,
}

async fn leaderboard(
    State(api): State<PointsApi>,
    _caller: Caller,
    ApiQuery(query): ApiQuery<LeaderboardQuery>,
) -> Result<Json<points_insight::Leaderboard>, Problem> {
    let period = insight::Period::parse(&query.period).map_err(refused)?;
    let limit = insight::leaderboard_limit(query.limit.as_deref()).map_err(refused)?;
    Ok(Json(
        points_insight::leaderboard(&api.service.store, period, limit).await?,
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RankQuery {
    period: String,
}

async fn rank(
    State(api): State<PointsApi>,
    caller: Caller,
    ApiQuery(query): ApiQuery<RankQuery>,
) -> Result<Json<points_insight::Rank>, Problem> {
    let period = insight::Period::parse(&query.period).map_err(refused)?;
    Ok(Json(
        points_insight::rank(&api.service.store, &caller.user, period).await?,
    ))
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
        .service
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
    /// A hold once captured or released: the operation that closed it.
    #[serde(skip_serializing_if = "Option::is_none")]
    closed_by: Option<OperationId>,
    /// A spend, or a captured hold: the points refunds may still give back.
    #[serde(skip_serializing_if = "Option::is_none")]
    refundable: Option<u64>,
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
        .service
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
        closed_by: record.closed_by,
        refundable: record
            .refundable
            .as_ref()
            .map(|lots| u64::try_from(lots_total(lots)).unwrap_or(u64::MAX)),
    }))
}
