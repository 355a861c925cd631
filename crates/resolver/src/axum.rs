//! The axum extractor (feature `axum`): a handler that takes [`TenantConn`]
//! receives the verified session, its tenant and a pooled connection to the
//! tenant's database, or the request is answered with the resolver's error.
//! The router's state must give an `Arc<Resolver>` (`FromRef`).
//!
//! ```no_run
//! use std::sync::Arc;
//!
//! use axum::{routing::get, Json, Router};
//! use tenant_plane_resolver::{Resolver, TenantConn};
//!
//! async fn list_projects(t: TenantConn) -> Json<Vec<String>> {
//!     let rows = t.conn.query("SELECT name FROM projects", &[]).await;
//!     Json(rows.unwrap_or_default().iter().map(|r| r.get(0)).collect())
//! }
//!
//! fn routes(resolver: Arc<Resolver>) -> Router {
//!     Router::new().route("/projects", get(list_projects)).with_state(resolver)
//! }
//! ```

use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::{header, request::Parts, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::resolver::Resolver;
use crate::session::{self, ExtractError, TenantConn};

impl IntoResponse for ExtractError {
    fn into_response(self) -> Response {
        let mut response = (self.status(), Json(self.body())).into_response();
        if let Some(secs) = self.retry_after() {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

impl<S> FromRequestParts<S> for TenantConn
where
    Arc<Resolver>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ExtractError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let resolver = Arc::<Resolver>::from_ref(state);
        let authorization = match parts.headers.get(header::AUTHORIZATION) {
            Some(v) => Some(v.to_str().map_err(|_| ExtractError::MissingToken)?),
            None => None,
        };
        let cookies = parts
            .headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok());
        let token = session::session_token(authorization, cookies).map(str::to_owned);
        session::connect(&resolver, token.as_deref()).await
    }
}
