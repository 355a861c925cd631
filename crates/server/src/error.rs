//! The one place where errors become HTTP responses: JSON `{error, message}`
//! (`api::ErrorBody`) with a stable machine-readable `error` code, for the
//! handlers' own errors and for actix's extractor errors (bad JSON, query or
//! path) and unknown routes alike. Internal failures get an opaque message;
//! the detail goes to the log, once, here.

use actix_web::error::JsonPayloadError;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse, ResponseError};
use registry::RegistryError;
use webhooks::SignatureError;

/// Refusals are logged a few a second at most (see `log_limit`).
static REFUSALS_LOGGED: crate::log_limit::LogLimit = crate::log_limit::LogLimit::new();

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("invalid webhook signature: {0}")]
    Signature(#[from] SignatureError),
    #[error("request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("could not read the request body: {0}")]
    BadBody(String),
    #[error("the request body was not received within {}", humantime::format_duration(*.0))]
    BodyTimeout(std::time::Duration),
    #[error("missing or invalid service token")]
    Unauthorized,
    #[error("{0}")]
    NotFound(&'static str),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotConfigured(&'static str),
    #[error("upstream error: {0}")]
    Upstream(String),
    #[error(transparent)]
    Resolve(#[from] resolver::ResolveError),
    #[error("not ready: {0}")]
    NotReady(String),
    #[error("the control-plane database is unavailable; retry later")]
    Unavailable(#[source] RegistryError),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        if e.is_unavailable() {
            ApiError::Unavailable(e)
        } else {
            ApiError::Internal(e.into())
        }
    }
}

/// A tenant look-up through the cache: the registry's errors as usual;
/// anything else (a fetch shared with another request that failed) is the
/// resolver's 503.
impl From<resolver::cache::LookupError> for ApiError {
    fn from(e: resolver::cache::LookupError) -> Self {
        match e {
            resolver::cache::LookupError::Registry(e) => e.into(),
            other => ApiError::Resolve(resolver::ResolveError::Lookup(other)),
        }
    }
}

impl From<registry::tenants::ActionError> for ApiError {
    fn from(e: registry::tenants::ActionError) -> Self {
        use registry::tenants::ActionError;
        match e {
            ActionError::NotFound(_) => ApiError::NotFound("no such tenant"),
            ActionError::Conflict { .. } => ApiError::Conflict(e.to_string()),
            ActionError::Registry(e) => e.into(),
        }
    }
}

impl ApiError {
    fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized => "unauthorized",
            ApiError::NotFound(_) => "not_found",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Conflict(_) => "conflict",
            ApiError::NotConfigured(_) => "not_configured",
            ApiError::Upstream(_) => "upstream",
            ApiError::Resolve(e) => e.code(),
            ApiError::Signature(_) => "invalid_signature",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::BadBody(_) => "bad_request",
            ApiError::BodyTimeout(_) => "request_timeout",
            ApiError::NotReady(_) => "not_ready",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Signature(_) | ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::NotConfigured(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Upstream(_) => StatusCode::BAD_GATEWAY,
            ApiError::Resolve(e) => StatusCode::from_u16(e.status().as_u16())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BadBody(_) => StatusCode::BAD_REQUEST,
            ApiError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::NotReady(_) | ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            ApiError::Unavailable(e) => tracing::warn!(error = %e, "answering 503"),
            ApiError::Internal(e) => tracing::error!(error = ?e, "answering 500"),
            other => {
                metrics::counter!("tenant_plane_http_refusals_total", "error" => other.code())
                    .increment(1);
                if let Some(left_out) = REFUSALS_LOGGED.admit() {
                    tracing::info!(error = %other, left_out, "request refused");
                }
            }
        }
        let mut response = HttpResponse::build(self.status_code());
        let retry_after = match self {
            ApiError::Unavailable(_) => Some(5),
            ApiError::Resolve(e) => e.retry_after(),
            _ => None,
        };
        if let Some(secs) = retry_after {
            response.insert_header(("Retry-After", secs.to_string()));
        }
        response.json(api::ErrorBody::new(self.code(), self.to_string()))
    }
}

/// Turns actix's extractor errors into [`ApiError`]s, so a malformed JSON
/// body, query string or path segment gets the same JSON body as any other
/// refusal instead of actix's plain text.
pub fn extractor_configs() -> (web::JsonConfig, web::QueryConfig, web::PathConfig) {
    let json = web::JsonConfig::default().error_handler(|e, _| {
        match e {
            JsonPayloadError::Overflow { limit }
            | JsonPayloadError::OverflowKnownLength { limit, .. } => {
                ApiError::PayloadTooLarge { limit }
            }
            other => ApiError::BadRequest(format!("invalid JSON body: {other}")),
        }
        .into()
    });
    let query = web::QueryConfig::default()
        .error_handler(|e, _| ApiError::BadRequest(format!("invalid query string: {e}")).into());
    let path = web::PathConfig::default()
        .error_handler(|e, _| ApiError::BadRequest(format!("invalid path: {e}")).into());
    (json, query, path)
}

/// Every request no route matches.
pub async fn no_route() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound("no such route"))
}
