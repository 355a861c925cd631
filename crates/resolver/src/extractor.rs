//! The actix-web extractor: a handler that takes [`TenantConn`] receives the
//! verified session, its tenant and a pooled connection to the tenant's
//! database, or the request is answered with the resolver's error.
//!
//! ```ignore
//! async fn list_projects(t: TenantConn) -> impl Responder {
//!     let rows = t.conn.query("SELECT name FROM projects", &[]).await?;
//!     ...
//! }
//! App::new().app_data(web::Data::from(resolver))
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse, ResponseError};
use serde::Serialize;

use crate::cache::ResolvedTenant;
use crate::pools::PooledConn;
use crate::resolver::{ResolveError, Resolver};
use crate::token::VerifiedSession;

/// Clerk's session cookie, used by same-origin requests from the browser.
const SESSION_COOKIE: &str = "__session";

pub struct TenantConn {
    pub tenant: Arc<ResolvedTenant>,
    pub session: VerifiedSession,
    pub conn: PooledConn,
}

/// The resolver's verdict as an HTTP answer.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error("missing session token: send `Authorization: Bearer <token>` or the __session cookie")]
    MissingToken,
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error("the resolver is not configured in this application (web::Data<Resolver>)")]
    NotConfigured,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: String,
}

impl ResponseError for ExtractError {
    fn status_code(&self) -> actix_web::http::StatusCode {
        match self {
            ExtractError::MissingToken => actix_web::http::StatusCode::UNAUTHORIZED,
            ExtractError::Resolve(e) => e.status(),
            ExtractError::NotConfigured => actix_web::http::StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let code = match self {
            ExtractError::MissingToken => "token_missing",
            ExtractError::Resolve(e) => e.code(),
            ExtractError::NotConfigured => "internal",
        };
        let mut response = HttpResponse::build(self.status_code());
        if let ExtractError::Resolve(e) = self {
            if let Some(secs) = e.retry_after() {
                response.insert_header((header::RETRY_AFTER, secs.to_string()));
            }
        }
        response.json(ErrorBody {
            error: code,
            message: self.to_string(),
        })
    }
}

/// The session token of a request: the bearer token, else Clerk's cookie.
pub fn session_token(req: &HttpRequest) -> Option<String> {
    if let Some(value) = req.headers().get(header::AUTHORIZATION) {
        let value = value.to_str().ok()?;
        let (scheme, token) = value.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim().to_owned())
            .filter(|t| !t.is_empty());
    }
    req.cookie(SESSION_COOKIE).map(|c| c.value().to_owned())
}

impl FromRequest for TenantConn {
    type Error = ExtractError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let resolver = req.app_data::<web::Data<Resolver>>().cloned();
        let token = session_token(req);
        Box::pin(async move {
            let resolver = resolver.ok_or(ExtractError::NotConfigured)?;
            let token = token.ok_or(ExtractError::MissingToken)?;
            let ctx = resolver.resolve(&token).await?;
            let conn = ctx.pool.get().await.map_err(ResolveError::from)?;
            Ok(TenantConn {
                tenant: ctx.tenant,
                session: ctx.session,
                conn,
            })
        })
    }
}
