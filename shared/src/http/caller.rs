//! The caller, as API Gateway's JWT authorizer vouches for them.
//!
//! Identity comes only from `requestContext.authorizer.jwt` (SPEC section 2):
//! the `sub` claim names the user; scopes are what the token grants, whether it
//! carries them as `scope` (space separated, OAuth 2.0) or `scp` (an array, as
//! Okta and Azure AD issue it: API Gateway hands array claims to the function
//! as text such as `[points:admin read]`), plus the authorizer's own `scopes`
//! list. Nothing in the body, query or headers can change who the caller is.

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
    let jwt = match context {
        Some(RequestContext::ApiGatewayV2(context)) => context
            .authorizer
            .as_ref()
            .and_then(|authorizer| authorizer.jwt.as_ref()),
        _ => None,
    };
    let Some((jwt, sub)) = jwt.and_then(|jwt| Some((jwt, jwt.claims.get("sub")?))) else {
        return Err(Problem::unauthenticated(
            "the request carries no verified identity",
        ));
    };
    let user = UserId::parse(sub.as_str()).map_err(|reason| {
        Problem::unauthenticated(format!(
            "the token's subject is not a valid user id: {reason}"
        ))
    })?;
    let mut scopes: Vec<String> = jwt.scopes.clone().unwrap_or_default();
    for claim in ["scope", "scp"] {
        if let Some(value) = jwt.claims.get(claim) {
            scopes.extend(scope_list(value));
        }
    }
    Ok(Caller { user, scopes })
}

/// The scopes in a claim as API Gateway renders it: `a b`, `[a b]`, or a JSON
/// array `["a","b"]`.
fn scope_list(claim: &str) -> Vec<String> {
    if let Ok(list) = serde_json::from_str::<Vec<String>>(claim) {
        return list;
    }
    claim
        .trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|scope| !scope.is_empty())
        .map(str::to_owned)
        .collect()
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        caller_from_context(parts.extensions.get::<RequestContext>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_are_read_as_every_provider_writes_them() {
        assert_eq!(scope_list("points:admin read"), ["points:admin", "read"]);
        assert_eq!(scope_list("[points:admin read]"), ["points:admin", "read"]);
        assert_eq!(
            scope_list(r#"["points:admin","read"]"#),
            ["points:admin", "read"]
        );
        assert_eq!(scope_list("[]"), Vec::<String>::new());
        assert_eq!(scope_list(""), Vec::<String>::new());
    }
}
