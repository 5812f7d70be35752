//! The caller, as API Gateway's JWT authorizer vouches for them.
//!
//! Identity comes only from `requestContext.authorizer.jwt.claims` (SPEC section 2):
//! `sub` names the user and `scope` (space separated) grants scopes. Nothing in
//! the body, query or headers can change who the caller is.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use lambda_http::request::RequestContext;

use super::Problem;
use crate::domain::ids::UserId;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub user: UserId,
    pub scopes: Vec<String>,
}

impl Caller {
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}

/// Reads the caller from a request context; `Err` is the 401 to answer.
pub fn caller_from_context(context: Option<&RequestContext>) -> Result<Caller, Problem> {
    let claims = match context {
        Some(RequestContext::ApiGatewayV2(context)) => context
            .authorizer
            .as_ref()
            .and_then(|authorizer| authorizer.jwt.as_ref())
            .map(|jwt| &jwt.claims),
        _ => None,
    };
    let Some(sub) = claims.and_then(|claims| claims.get("sub")) else {
        return Err(Problem::unauthenticated(
            "the request carries no verified identity",
        ));
    };
    let user = UserId::parse(sub.as_str()).map_err(|reason| {
        Problem::unauthenticated(format!(
            "the token's subject is not a valid user id: {reason}"
        ))
    })?;
    let scopes = claims
        .and_then(|claims| claims.get("scope"))
        .map(|scope| scope.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default();
    Ok(Caller { user, scopes })
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        caller_from_context(parts.extensions.get::<RequestContext>())
    }
}
