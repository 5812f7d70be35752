//! The like function: every like route of SPEC section 3, as one axum router.
//!
//! Each handler reads as parse, call, map: it parses the path and query, calls
//! the likes service ([`LikesService`]: [`accept`](LikesService::accept) puts
//! one SQS message on the likes queue, which the sqs-worker applies; the reads
//! go to DynamoDB) and maps the answer to JSON or a problem.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use shared::domain::ids::{OperationId, PostId, UserId};
use shared::domain::likers;
use shared::domain::likes::{self, LikeAction};
use shared::http::{ApiQuery, Caller, Problem, Routes};
use shared::likes_service::{CountCache, LikesService};
use shared::queue::OperationQueue;
use shared::store::Store;

/// The SDK timeouts of every AWS call this function makes (see [`shared::config::Timeouts`]).
pub const TIMEOUTS: shared::config::Timeouts = shared::config::Timeouts::HTTP;

/// The environment variables `from_env` reads (template.yaml sets exactly these).
pub const ENVIRONMENT: &[&str] = &[
    shared::config::TABLE_NAME,
    shared::config::LIKES_QUEUE_URL,
    shared::config::COUNT_CACHE_SECONDS,
];

/// What every request borrows: the likes service and the queue, built once per cold start.
#[derive(Debug, Clone)]
pub struct LikeApi {
    pub service: LikesService,
    pub queue: OperationQueue,
}

impl LikeApi {
    pub fn new(store: Store, queue: OperationQueue) -> Self {
        Self {
            service: LikesService::new(store),
            queue,
        }
    }

    /// The same API, serving count reads from memory for `window`.
    pub fn with_count_cache(mut self, window: std::time::Duration) -> Self {
        self.service.count_cache = CountCache::new(window);
        self
    }

    /// Reads the configuration `template.yaml` sets and builds the clients.
    pub async fn from_env() -> Result<Self, shared::config::ConfigError> {
        let table = shared::config::table_name()?;
        let queue_url = shared::config::likes_queue_url()?;
        let window = shared::config::count_cache_window()?;
        let aws = shared::config::aws(TIMEOUTS).await;
        Ok(Self::new(
            Store::from_config(&aws, table),
            OperationQueue::from_config(&aws, queue_url),
        )
        .with_count_cache(window))
    }
}

/// Every like route, as `template.yaml` and `openapi.yaml` list them.
pub fn routes() -> Routes<LikeApi> {
    Routes::default()
        .route(Method::PUT, "/v1/posts/{post_id}/like", like)
        .route(Method::DELETE, "/v1/posts/{post_id}/like", unlike)
        .route(Method::GET, "/v1/posts/{post_id}/likes", count)
        .route(Method::GET, "/v1/posts/{post_id}/likers", likers)
        .route(Method::GET, "/v1/likes/counts", counts)
        .route(Method::GET, "/v1/me/likes", my_likes)
}

pub fn router(api: LikeApi) -> Router {
    routes().into_router().with_state(api)
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Accepted {
    pub operation_id: OperationId,
    pub status: String,
}

async fn like(
    State(api): State<LikeApi>,
    caller: Caller,
    Path(post_id): Path<String>,
) -> Result<(StatusCode, Json<Accepted>), Problem> {
    accept(&api, caller, &post_id, LikeAction::Like).await
}

async fn unlike(
    State(api): State<LikeApi>,
    caller: Caller,
    Path(post_id): Path<String>,
) -> Result<(StatusCode, Json<Accepted>), Problem> {
    accept(&api, caller, &post_id, LikeAction::Unlike).await
}

/// 202 only once SQS has stored the operation; 503 when it could not confirm that.
async fn accept(
    api: &LikeApi,
    caller: Caller,
    post_id: &str,
    action: LikeAction,
) -> Result<(StatusCode, Json<Accepted>), Problem> {
    let post = PostId::parse(post_id).map_err(Problem::invalid_post_id)?;
    let operation_id = api
        .service
        .accept(&api.queue, caller.user, post, action)
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Accepted {
            operation_id,
            status: "accepted".to_owned(),
        }),
    ))
}

#[derive(Debug, Serialize)]
struct PostCount {
    post_id: PostId,
    count: u64,
}

async fn count(
    State(api): State<LikeApi>,
    _caller: Caller,
    Path(post_id): Path<String>,
) -> Result<Response, Problem> {
    let post = PostId::parse(post_id).map_err(Problem::invalid_post_id)?;
    let count = api.service.count(&post).await?.count;
    Ok(cacheable(
        &api,
        Json(PostCount {
            post_id: post,
            count,
        }),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CountsQuery {
    post_ids: Option<String>,
    likers: Option<String>,
}

#[derive(Debug, Serialize)]
struct Counts {
    counts: BTreeMap<PostId, u64>,
    /// With `likers=N`: each post's N most recent likers, newest first.
    #[serde(skip_serializing_if = "Option::is_none")]
    likers: Option<BTreeMap<PostId, Vec<UserId>>>,
}

async fn counts(
    State(api): State<LikeApi>,
    _caller: Caller,
    ApiQuery(query): ApiQuery<CountsQuery>,
) -> Result<Response, Problem> {
    let posts = likes::parse_post_ids(query.post_ids.as_deref().unwrap_or_default())?;
    let recent = query
        .likers
        .as_deref()
        .map(likers::parse_recent_likers_count)
        .transpose()?;
    let counters = api.service.counts(&posts).await?;
    let counts = counters
        .iter()
        .map(|(post, view)| (post.clone(), view.count))
        .collect();
    let likers = recent.map(|n| {
        counters
            .iter()
            .map(|(post, view)| (post.clone(), view.recent_likers.newest(n)))
            .collect()
    });
    Ok(cacheable(&api, Json(Counts { counts, likers })))
}

/// A count answer with `Cache-Control`: clients and CDNs may keep it for the
/// function's own window (SPEC section 3, hot reads). A count shown anywhere
/// is then at most two windows older than the counter it was read from: one
/// in the function's memory, one in the client's or the CDN's.
fn cacheable(api: &LikeApi, body: impl IntoResponse) -> Response {
    let seconds = api.service.count_cache.window().as_secs();
    let policy = if seconds == 0 {
        "no-cache".to_owned()
    } else {
        format!("public, max-age={seconds}")
    };
    ([(header::CACHE_CONTROL, policy)], body).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PageQuery {
    limit: Option<String>,
    cursor: Option<String>,
}

#[derive(Debug, Serialize)]
struct LikersPage {
    items: Vec<LikerItem>,
    next_cursor: Option<String>,
}

#[derive(Debug, Serialize)]
struct LikerItem {
    user_id: UserId,
    liked_at: String,
}

/// Who likes the post, newest first.
async fn likers(
    State(api): State<LikeApi>,
    _caller: Caller,
    Path(post_id): Path<String>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<LikersPage>, Problem> {
    let post = PostId::parse(post_id).map_err(Problem::invalid_post_id)?;
    let limit = likes::parse_page_size(query.limit.as_deref())?;
    let page = api
        .service
        .likers(&post, limit, query.cursor.as_deref())
        .await?;
    Ok(Json(LikersPage {
        items: page
            .items
            .into_iter()
            .map(|liker| LikerItem {
                user_id: liker.user_id,
                liked_at: liker.liked_at,
            })
            .collect(),
        next_cursor: page.next_cursor,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MyLikesQuery {
    post_ids: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

#[derive(Debug, Serialize)]
struct Liked {
    liked: BTreeMap<PostId, bool>,
}

#[derive(Debug, Serialize)]
struct MyLikesPage {
    items: Vec<MyLike>,
    next_cursor: Option<String>,
}

#[derive(Debug, Serialize)]
struct MyLike {
    post_id: PostId,
    liked_at: String,
}

/// `?post_ids=` asks "did I like these"; otherwise it lists my likes, newest first.
async fn my_likes(
    State(api): State<LikeApi>,
    caller: Caller,
    ApiQuery(query): ApiQuery<MyLikesQuery>,
) -> Result<Response, Problem> {
    if let Some(post_ids) = query.post_ids {
        if query.limit.is_some() || query.cursor.is_some() {
            return Err(Problem::bad_request(
                "conflicting_parameters",
                "post_ids cannot be combined with limit or cursor",
            ));
        }
        let posts = likes::parse_post_ids(&post_ids)?;
        let liked = api.service.liked(&caller.user, posts).await?;
        return Ok(Json(Liked { liked }).into_response());
    }
    let limit = likes::parse_page_size(query.limit.as_deref())?;
    let page = api
        .service
        .my_likes(&caller.user, limit, query.cursor.as_deref())
        .await?;
    Ok(Json(MyLikesPage {
        items: page
            .items
            .into_iter()
            .map(|item| MyLike {
                post_id: item.post_id,
                liked_at: item.liked_at,
            })
            .collect(),
        next_cursor: page.next_cursor,
    })
    .into_response())
}
