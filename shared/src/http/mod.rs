//! What the HTTP functions share: the caller's identity, problem+json errors and
//! the mapping of every domain error to its status, in one place.

mod caller;
mod problem;
mod routes;

pub use caller::{Caller, caller_from_context};
pub use problem::{Problem, error_chain};
pub use routes::{MAX_BODY_BYTES, REQUEST_BUDGET, Routes};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

/// Query parameters parsed into `T`; a malformed or unknown parameter is a 400
/// problem that says which.
#[derive(Debug, Clone)]
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|axum::extract::Query(value)| ApiQuery(value))
            .map_err(|rejection| Problem::bad_request("invalid_query", rejection.body_text()))
    }
}

/// Answers routes that do not exist.
pub async fn unknown_route() -> Problem {
    Problem::not_found("no such route")
}

/// Answers known routes called with the wrong method, except a browser's
/// CORS preflight (`OPTIONS`): on AWS the `$default` catch-all route takes
/// it, so the function answers 204 and API Gateway adds the CORS headers the
/// template configures (`CorsAllowedOrigins`).
pub async fn wrong_method(method: axum::http::Method) -> axum::response::Response {
    use axum::response::IntoResponse;
    if method == axum::http::Method::OPTIONS {
        return axum::http::StatusCode::NO_CONTENT.into_response();
    }
    Problem::method_not_allowed("this route does not take that method").into_response()
}
