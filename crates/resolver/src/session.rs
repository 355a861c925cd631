//! What every framework integration shares: finding the session token in a
//! request's headers, and the resolver's verdict as an HTTP answer (status,
//! `Retry-After`, and the one JSON error body, `api::ErrorBody`).
//!
//! The integrations themselves are behind cargo features: `actix`
//! ([`crate::actix`]) and `axum` ([`crate::axum`]).

use std::sync::Arc;

use http::StatusCode;

use crate::cache::ResolvedTenant;
use crate::pools::PooledConn;
use crate::resolver::{ResolveError, Resolver};
use crate::token::VerifiedSession;

/// Clerk's session cookie, used by same-origin requests from the browser.
pub const SESSION_COOKIE: &str = "__session";

/// A resolved request: the verified session, its tenant, and a connection
/// to the tenant's database as the tenant's own role.
pub struct TenantConn {
    pub tenant: Arc<ResolvedTenant>,
    pub session: Arc<VerifiedSession>,
    pub conn: PooledConn,
}

/// Why a request got no [`TenantConn`].
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error("missing session token: send `Authorization: Bearer <token>` or the __session cookie")]
    MissingToken,
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error("the resolver is not configured in this application")]
    NotConfigured,
}

impl ExtractError {
    pub fn status(&self) -> StatusCode {
        match self {
            ExtractError::MissingToken => StatusCode::UNAUTHORIZED,
            ExtractError::Resolve(e) => e.status(),
            ExtractError::NotConfigured => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ExtractError::MissingToken => "token_missing",
            ExtractError::Resolve(e) => e.code(),
            ExtractError::NotConfigured => "internal",
        }
    }

    /// Seconds for `Retry-After`, when a retry may succeed.
    pub fn retry_after(&self) -> Option<u32> {
        match self {
            ExtractError::Resolve(e) => e.retry_after(),
            _ => None,
        }
    }

    /// The JSON body every tenant-plane error answer carries.
    pub fn body(&self) -> api::ErrorBody {
        api::ErrorBody::new(self.code(), self.to_string())
    }
}

/// The session token of a request: the bearer token of `Authorization`,
/// else Clerk's `__session` cookie. An `Authorization` header of another
/// scheme is not a session, and the cookie is not consulted then.
pub fn session_token<'a>(
    authorization: Option<&'a str>,
    cookie_headers: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    if let Some(value) = authorization {
        let (scheme, token) = value.split_once(' ')?;
        let token = token.trim();
        return (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token);
    }
    cookie_headers
        .into_iter()
        .flat_map(|header| header.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value)
}

/// Resolves a token all the way to a connection: what every extractor does.
pub async fn connect(resolver: &Resolver, token: Option<&str>) -> Result<TenantConn, ExtractError> {
    let token = token.ok_or(ExtractError::MissingToken)?;
    let ctx = resolver.resolve(token).await?;
    let conn = ctx.pool.get().await.map_err(ResolveError::from)?;
    Ok(TenantConn {
        tenant: ctx.tenant,
        session: ctx.session,
        conn,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_come_first_then_the_session_cookie() {
        assert_eq!(session_token(Some("Bearer abc"), []), Some("abc"));
        assert_eq!(session_token(Some("bearer  abc "), []), Some("abc"));
        assert_eq!(
            session_token(Some("Bearer abc"), ["__session=xyz"]),
            Some("abc")
        );
        assert_eq!(
            session_token(None, ["theme=dark; __session=xyz; lang=en"]),
            Some("xyz")
        );
        assert_eq!(
            session_token(None, ["theme=dark", "__session=xyz"]),
            Some("xyz")
        );
    }

    #[test]
    fn other_schemes_and_empty_tokens_are_no_session() {
        assert_eq!(
            session_token(Some("Basic dXNlcjpwdw=="), ["__session=xyz"]),
            None
        );
        assert_eq!(session_token(Some("Bearer "), []), None);
        assert_eq!(session_token(Some("Bearer"), []), None);
        assert_eq!(session_token(None, ["__sessionx=1; other=2"]), None);
        assert_eq!(session_token(None, []), None);
    }

    #[test]
    fn errors_carry_status_code_and_body() {
        let e = ExtractError::MissingToken;
        assert_eq!(e.status(), StatusCode::UNAUTHORIZED);
        let body = e.body();
        assert_eq!(body.error, "token_missing");
        assert!(body.message.contains("Bearer"));
        let e = ExtractError::Resolve(ResolveError::Provisioning);
        assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(e.retry_after(), Some(2));
        assert_eq!(e.code(), "tenant_provisioning");
    }
}
