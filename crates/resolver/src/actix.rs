//! The actix-web extractor (feature `actix`): a handler that takes
//! [`TenantConn`] receives the verified session, its tenant and a pooled
//! connection to the tenant's database, or the request is answered with the
//! resolver's error.
//!
//! ```no_run
//! use std::sync::Arc;
//!
//! use actix_web::{error::ErrorInternalServerError, web, HttpResponse};
//! use tenant_plane_resolver::{Resolver, TenantConn};
//!
//! async fn list_projects(t: TenantConn) -> actix_web::Result<HttpResponse> {
//!     let rows = t.conn.query("SELECT name FROM projects", &[]).await;
//!     let names: Vec<String> = rows.map_err(ErrorInternalServerError)?.iter().map(|r| r.get(0)).collect();
//!     Ok(HttpResponse::Ok().json(names))
//! }
//!
//! fn routes(resolver: Arc<Resolver>, cfg: &mut web::ServiceConfig) {
//!     cfg.app_data(web::Data::from(resolver))
//!         .route("/projects", web::get().to(list_projects));
//! }
//! ```

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::{header, StatusCode};
use actix_web::{web, FromRequest, HttpRequest, HttpResponse, ResponseError};

use crate::resolver::Resolver;
use crate::session::{self, ExtractError, TenantConn};

impl ResponseError for ExtractError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status().as_u16()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        if let Some(secs) = self.retry_after() {
            response.insert_header((header::RETRY_AFTER, secs.to_string()));
        }
        response.json(self.body())
    }
}

/// The session token of an actix request.
pub fn session_token(req: &HttpRequest) -> Option<String> {
    let headers = req.headers();
    let authorization = match headers.get(header::AUTHORIZATION) {
        Some(v) => Some(v.to_str().ok()?),
        None => None,
    };
    let cookies = headers
        .get_all(header::COOKIE)
        .filter_map(|v| v.to_str().ok());
    session::session_token(authorization, cookies).map(str::to_owned)
}

impl FromRequest for TenantConn {
    type Error = ExtractError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let resolver = req.app_data::<web::Data<Resolver>>().cloned();
        let token = session_token(req);
        Box::pin(async move {
            let resolver = resolver.ok_or(ExtractError::NotConfigured)?;
            session::connect(&resolver, token.as_deref()).await
        })
    }
}
