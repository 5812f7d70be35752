//! A router that remembers its routes, so tests can hold the code's routes
//! against `openapi.yaml` and `template.yaml`.

use axum::Router;
use axum::extract::DefaultBodyLimit;
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
    /// taking bodies up to [`MAX_BODY_BYTES`], and turning every error axum's own
    /// extractors answer (a body too large, a path that is not UTF-8) into
    /// problem+json too.
    pub fn into_router(self) -> Router<S> {
        self.router
            .fallback(super::unknown_route)
            .method_not_allowed_fallback(super::wrong_method)
            .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
            .layer(axum::middleware::map_response(super::problem::as_problem))
    }
}
