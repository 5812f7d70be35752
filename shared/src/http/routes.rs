//! A router that remembers its routes, so tests can hold the code's routes
//! against `openapi.yaml` and `template.yaml`.

use axum::Router;
use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{MethodFilter, on};

/// Bodies over this many bytes answer 413 (SPEC section 3).
pub const MAX_BODY_BYTES: usize = 16 * 1024;

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
            .layer(axum::middleware::from_fn(in_request_span))
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
