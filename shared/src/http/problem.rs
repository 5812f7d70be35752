//! `application/problem+json` errors (RFC 9457) with a stable `code`.

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::domain::ids::InvalidIdentifier;
use crate::domain::likes::{InvalidPageSize, PostIdsError};
use crate::queue::QueueError;
use crate::store::StoreError;
use crate::store::likes::PageError;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: &'static str,
    #[serde(serialize_with = "as_u16")]
    pub status: StatusCode,
    pub detail: String,
    pub code: &'static str,
}

fn as_u16<S: serde::Serializer>(status: &StatusCode, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u16(status.as_u16())
}

impl Problem {
    pub fn new(
        status: StatusCode,
        code: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            kind: format!("urn:tally:problem:{code}"),
            title,
            status,
            detail: detail.into(),
            code,
        }
    }

    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, "Invalid request", detail)
    }

    pub fn unauthenticated(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "Authentication required",
            detail,
        )
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", "Not allowed", detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "Not found", detail)
    }

    pub fn method_not_allowed(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "Method not allowed",
            detail,
        )
    }

    /// A fault on our side. The cause is logged here; the client only learns to retry.
    pub fn unavailable(cause: &(dyn std::error::Error + 'static)) -> Self {
        tracing::error!(error = %error_chain(cause), "request failed");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
            "Service unavailable",
            "Tally could not confirm that it completed the request; retrying is safe \
             (a points write under the same Idempotency-Key answers the operation's real status)",
        )
    }
}

/// Answers every error response as problem+json: those Tally writes pass through,
/// and those axum's extractors write as text (a path that does not decode, a
/// query they cannot read) become a problem with the same status and their text.
pub(super) async fn as_problem(response: Response) -> Response {
    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == b"application/problem+json");
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return response;
    }
    let text = match axum::body::to_bytes(response.into_body(), 4096).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(_) => String::new(),
    };
    let problem = match status {
        StatusCode::NOT_FOUND => Problem::not_found(text),
        StatusCode::METHOD_NOT_ALLOWED => Problem::method_not_allowed(text),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => Problem::new(
            status,
            "unsupported_media_type",
            "Unsupported media type",
            text,
        ),
        s if s.is_server_error() => {
            tracing::error!(status = s.as_u16(), body = %text, "unexpected error response");
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable",
                "Service unavailable",
                "Tally could not confirm that it completed the request; retrying is safe",
            )
        }
        _ => Problem::new(status, "invalid_request", "Invalid request", text),
    };
    problem.into_response()
}

/// The error and all its sources on one line, for the log.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status;
        let mut response = (status, Json(self)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/problem+json"),
        );
        response
    }
}

impl From<PostIdsError> for Problem {
    fn from(err: PostIdsError) -> Self {
        let code = match err {
            PostIdsError::Empty => "post_ids_required",
            PostIdsError::TooMany(_) => "too_many_post_ids",
            PostIdsError::Invalid { .. } => "invalid_post_id",
        };
        Problem::bad_request(code, err.to_string())
    }
}

impl Problem {
    pub fn invalid_post_id(err: InvalidIdentifier) -> Self {
        Problem::bad_request("invalid_post_id", format!("post id {err}"))
    }
}

impl From<InvalidPageSize> for Problem {
    fn from(err: InvalidPageSize) -> Self {
        Problem::bad_request("invalid_limit", err.to_string())
    }
}

impl From<crate::domain::likers::InvalidLikersCount> for Problem {
    fn from(err: crate::domain::likers::InvalidLikersCount) -> Self {
        Problem::bad_request("invalid_likers", err.to_string())
    }
}

impl From<StoreError> for Problem {
    fn from(err: StoreError) -> Self {
        Problem::unavailable(&err)
    }
}

impl From<QueueError> for Problem {
    fn from(err: QueueError) -> Self {
        Problem::unavailable(&err)
    }
}

impl From<PageError> for Problem {
    fn from(err: PageError) -> Self {
        match err {
            PageError::InvalidCursor => Problem::bad_request("invalid_cursor", err.to_string()),
            PageError::Store(err) => err.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_that_could_not_complete_answers_503_and_retrying_is_safe() {
        for err in [
            StoreError::Throttled("slow down".into()),
            StoreError::Unavailable("no route".into()),
            StoreError::Contended { attempts: 10 },
        ] {
            let problem = Problem::from(err);
            assert_eq!(problem.status, StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(problem.code, "service_unavailable");
            assert!(!problem.detail.contains("contended"), "no internals");
        }
    }
}
