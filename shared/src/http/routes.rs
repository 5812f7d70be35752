//! A router that remembers its routes, so tests can hold the code's routes
//! against `openapi.yaml` and `template.yaml`.

use std::time::Duration;

use axum::Router;
use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{MethodFilter, on};

/// Bodies over this many bytes answer 413 (SPEC section 3).
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// How long one request may take in all. Each AWS call is bounded
/// ([`crate::config::Timeouts::HTTP`]), but a read may make several in a row
/// (BatchGetItem retrying unprocessed keys, a query following pages): past
/// this the function answers 503 problem+json itself, 2 s before the HTTP
/// functions' 10 s `Timeout` would have Lambda cut it off (and API Gateway
/// answer its own 503, not problem+json).
pub const REQUEST_BUDGET: Duration = Duration::from_secs(8);

pub struct Routes<S> {
    router: Router<S>,
    list: Vec<(Method, &'static str)>,
}

impl<S: Clone + Send + Sync + 'static> Default for Routes<S> {
    fn default() -> Self {
        Self {
            router: Router::new(),
            list: Vec::new(),
        }
    }
}

impl<S: Clone + Send + Sync + 'static> Routes<S> {
    /// Adds `method path` served by `handler`.
    pub fn route<H, T>(mut self, method: Method, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, S>,
        T: 'static,
    {
        #[allow(
            clippy::expect_used,
            reason = "routes are declared in code with the standard methods"
        )]
        let filter = MethodFilter::try_from(method.clone()).expect("a standard HTTP method");
        self.router = self.router.route(path, on(filter, handler));
        self.list.push((method, path));
        self
    }

    /// Every (method, path) added, in the order added.
    pub fn list(&self) -> Vec<(Method, &'static str)> {
        self.list.clone()
    }

    /// The router, answering unknown routes and wrong methods with problem+json,
    /// refusing bodies over [`MAX_BODY_BYTES`] on every route (413), and turning
    /// every error axum's own extractors answer (a path that is not UTF-8) into
    /// problem+json too.
    pub fn into_router(self) -> Router<S> {
        self.router
            .fallback(super::unknown_route)
            .method_not_allowed_fallback(super::wrong_method)
            .layer(axum::middleware::map_response(super::problem::as_problem))
            .layer(axum::middleware::from_fn(limit_body))
            .layer(axum::middleware::from_fn(within_budget))
            .layer(axum::middleware::from_fn(in_request_span))
    }
}

/// Answers 503 problem+json when the request is not done within
/// [`REQUEST_BUDGET`]. What the request had written stays written: a like not
/// confirmed queued may or may not take effect, and a points write retried
/// under its key answers its real status.
async fn within_budget(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    match tokio::time::timeout(REQUEST_BUDGET, next.run(request)).await {
        Ok(response) => response,
        Err(elapsed) => super::Problem::unavailable(&elapsed).into_response(),
    }
}

/// Runs each request in a span of its own, `request` (method, path, and the
/// `operation_id` once a write is given one), so every line it logs carries them.
async fn in_request_span(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use tracing::Instrument as _;
    let span = tracing::info_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path(),
        operation_id = tracing::field::Empty
    );
    next.run(request).instrument(span).await
}

/// Reads the body up to [`MAX_BODY_BYTES`] before any route sees it, whether the
/// route reads a body or not.
async fn limit_body(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let (parts, body) = request.into_parts();
    match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(bytes) => {
            let request = axum::extract::Request::from_parts(parts, axum::body::Body::from(bytes));
            next.run(request).await
        }
        Err(_) => super::Problem::new(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            "Payload too large",
            format!("the body may be at most {MAX_BODY_BYTES} bytes"),
        )
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Method, Request, StatusCode};
    use tower::ServiceExt as _;

    use super::*;

    /// A request still running at the budget answers 503 problem+json (the
    /// clock is paused: the hour passes at once).
    #[tokio::test(start_paused = true)]
    async fn a_request_past_its_budget_answers_503_problem_json() {
        let router: Router = Routes::default()
            .route(Method::GET, "/slow", || async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                "done"
            })
            .route(Method::GET, "/fast", || async { "done" })
            .into_router();
        let get = |uri: &str| Request::get(uri).body(Body::empty()).unwrap();
        let slow = router.clone().oneshot(get("/slow")).await.unwrap();
        assert_eq!(slow.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(slow.headers()["content-type"], "application/problem+json");
        let fast = router.oneshot(get("/fast")).await.unwrap();
        assert_eq!(fast.status(), StatusCode::OK);
    }
}
