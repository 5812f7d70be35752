//! HTTP in, API Gateway v2 event out, function router in-process.

use std::collections::HashMap;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use http_body_util::BodyExt as _;
use lambda_http::aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use lambda_http::request::LambdaRequest;
use serde_json::json;
use shared::http::Problem;
use tower::ServiceExt as _;

/// Headers only the dev gateway reads; the functions never see them.
pub const DEV_USER: &str = "x-dev-user";
pub const DEV_SCOPES: &str = "x-dev-scopes";
/// API Gateway HTTP APIs take payloads up to 10 MB.
const MAX_PAYLOAD: usize = 10 * 1024 * 1024;

/// Routes requests to the function that serves them, like the HTTP API's routes.
#[derive(Clone)]
pub struct Gateway {
    like: Router,
    points: Router,
}

impl Gateway {
    pub fn new(like: Router, points: Router) -> Self {
        Self { like, points }
    }

    /// An axum router that serves every route through the functions.
    pub fn router(self) -> Router {
        Router::new().fallback(move |request: Request| {
            let gateway = self.clone();
            async move { gateway.dispatch(request).await }
        })
    }

    async fn dispatch(&self, request: Request) -> Response {
        let event = match api_gateway_event(request).await {
            Ok(event) => event,
            Err(problem) => return problem.into_response(),
        };
        let function = if is_points_route(&event.raw_path.clone().unwrap_or_default()) {
            self.points.clone()
        } else {
            self.like.clone()
        };
        let request: lambda_http::Request = LambdaRequest::ApiGatewayV2(event).into();
        match function.oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }
}

/// Routes under these prefixes belong to the points function (as in `template.yaml`).
fn is_points_route(path: &str) -> bool {
    ["/v1/points/", "/v1/me/points"]
        .iter()
        .any(|prefix| path.starts_with(prefix))
}

/// The event API Gateway's HTTP API (payload v2.0) sends a Lambda for this request.
async fn api_gateway_event(request: Request) -> Result<ApiGatewayV2httpRequest, Problem> {
    let (parts, body) = request.into_parts();
    let bytes = http_body_util::Limited::new(body, MAX_PAYLOAD)
        .collect()
        .await
        .map_err(|_| {
            Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "Payload too large",
                "API Gateway accepts at most 10 MB",
            )
        })?
        .to_bytes();
    let (body, is_base64) = match std::str::from_utf8(&bytes) {
        _ if bytes.is_empty() => (None, false),
        Ok(text) => (Some(text.to_owned()), false),
        Err(_) => (
            Some(base64::engine::general_purpose::STANDARD.encode(&bytes)),
            true,
        ),
    };
    let authorizer = authorizer_context(&parts.headers);
    let headers: HashMap<String, String> = header_map(&parts.headers);
    let now = time::OffsetDateTime::now_utc();
    let path = parts.uri.path();
    let event = json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": parts.uri.query().unwrap_or(""),
        "headers": headers,
        "requestContext": {
            "accountId": "000000000000",
            "apiId": "dev-gateway",
            "domainName": "127.0.0.1",
            "domainPrefix": "127",
            "requestId": uuid::Uuid::now_v7().to_string(),
            "routeKey": "$default",
            "stage": "$default",
            "time": now.to_string(),
            "timeEpoch": now.unix_timestamp() * 1000 + i64::from(now.millisecond()),
            "authorizer": authorizer,
            "http": {
                "method": parts.method.as_str(),
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": parts.headers.get("user-agent").and_then(|v| v.to_str().ok()).unwrap_or(""),
            },
        },
        "body": body,
        "isBase64Encoded": is_base64,
    });
    serde_json::from_value(event).map_err(|err| Problem::unavailable(&err))
}

/// What API Gateway's JWT authorizer puts in the context for a verified token.
fn authorizer_context(headers: &HeaderMap) -> serde_json::Value {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    match header(DEV_USER) {
        None => header("authorization").and_then(bearer_claims).map_or(
            serde_json::Value::Null,
            |claims| json!({ "jwt": { "claims": claims, "scopes": null } }),
        ),
        Some(user) => {
            let scope = header(DEV_SCOPES).unwrap_or("");
            let scopes: Vec<&str> = scope.split_whitespace().collect();
            json!({
                "jwt": {
                    "claims": { "sub": user, "scope": scope, "iss": "dev-gateway" },
                    "scopes": if scopes.is_empty() { serde_json::Value::Null } else { json!(scopes) },
                }
            })
        }
    }
}

/// The claims of a bearer token, read **without checking its signature or
/// issuer**: locally a token stands in for API Gateway's JWT authorizer, which
/// checks both when deployed (so `make smoke` runs the same against both).
fn bearer_claims(authorization: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
    let token = authorization.strip_prefix("Bearer ")?;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let serde_json::Value::Object(claims) = serde_json::from_slice(&bytes).ok()? else {
        return None;
    };
    // API Gateway hands the function every claim as text: numbers as their
    // digits, arrays as `[a b]`.
    Some(
        claims
            .into_iter()
            .map(|(name, value)| {
                let text = match value {
                    serde_json::Value::String(text) => text,
                    serde_json::Value::Array(items) => format!(
                        "[{}]",
                        items
                            .iter()
                            .map(|item| item
                                .as_str()
                                .map_or_else(|| item.to_string(), str::to_owned))
                            .collect::<Vec<_>>()
                            .join(" ")
                    ),
                    other => other.to_string(),
                };
                (name, serde_json::Value::String(text))
            })
            .collect(),
    )
}

/// Lower-cased headers, repeated ones joined by commas, the dev identity removed.
fn header_map(headers: &HeaderMap) -> HashMap<String, String> {
    let mut map: HashMap<String, String> = HashMap::new();
    for (name, value) in headers {
        if name == DEV_USER || name == DEV_SCOPES {
            continue;
        }
        // API Gateway hands the function header values as UTF-8 text.
        let value = String::from_utf8_lossy(value.as_bytes());
        let value = value.as_ref();
        map.entry(name.as_str().to_owned())
            .and_modify(|joined| {
                joined.push(',');
                joined.push_str(value);
            })
            .or_insert_with(|| value.to_owned());
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bearer_tokens_claims_stand_in_for_the_authorizers() {
        let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(r#"{"sub":"smoke","scope":"points:admin","exp":1796373819,"scp":["a","b"]}"#);
        let mut headers = HeaderMap::new();
        headers.insert(
            "authorization",
            format!("Bearer e30.{claims}.").parse().unwrap(),
        );
        let context = authorizer_context(&headers);
        assert_eq!(context["jwt"]["claims"]["sub"], "smoke");
        assert_eq!(context["jwt"]["claims"]["scope"], "points:admin");
        assert_eq!(
            context["jwt"]["claims"]["exp"], "1796373819",
            "claims are text"
        );
        assert_eq!(context["jwt"]["claims"]["scp"], "[a b]");
        for bad in [
            "Bearer nonsense",
            "Bearer a.!!!.c",
            "Basic dXNlcg==",
            "Bearer a.bnVsbA.c",
        ] {
            headers.insert("authorization", bad.parse().unwrap());
            assert_eq!(
                authorizer_context(&headers),
                serde_json::Value::Null,
                "{bad}"
            );
        }
    }
}
