//! The console's errors, each answered as a page with its status. A 500
//! shows no detail (it is logged once, here).

use actix_web::http::header::{self, ContentType};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use askama::Template;
use registry::RegistryError;

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// Not logged in (or the session ended): pages send the browser to the
    /// login form.
    #[error("log in to use the console")]
    LoginRequired,
    /// Not logged in, where a redirect makes no sense (a form post, the
    /// event stream).
    #[error("your session has ended; log in again")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Conflict(String),
    #[error("too many failed logins from your address; wait a minute and try again")]
    TooManyAttempts,
    #[error("the control-plane database is unavailable; try again shortly")]
    Unavailable,
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<RegistryError> for ConsoleError {
    fn from(e: RegistryError) -> Self {
        if e.is_unavailable() {
            ConsoleError::Unavailable
        } else {
            ConsoleError::Internal(registry::with_sources(&e))
        }
    }
}

impl From<deadpool_postgres::PoolError> for ConsoleError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        ConsoleError::from(RegistryError::from(e))
    }
}

impl From<askama::Error> for ConsoleError {
    fn from(e: askama::Error) -> Self {
        ConsoleError::Internal(format!("template: {e}"))
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    status: u16,
    reason: &'a str,
    message: String,
}

impl ResponseError for ConsoleError {
    fn status_code(&self) -> StatusCode {
        match self {
            ConsoleError::LoginRequired => StatusCode::SEE_OTHER,
            ConsoleError::Unauthorized => StatusCode::UNAUTHORIZED,
            ConsoleError::Forbidden(_) => StatusCode::FORBIDDEN,
            ConsoleError::NotFound(_) => StatusCode::NOT_FOUND,
            ConsoleError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ConsoleError::Conflict(_) => StatusCode::CONFLICT,
            ConsoleError::TooManyAttempts => StatusCode::TOO_MANY_REQUESTS,
            ConsoleError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ConsoleError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        if let ConsoleError::LoginRequired = self {
            return HttpResponse::SeeOther()
                .insert_header((header::LOCATION, "/console/login"))
                .finish();
        }
        let message = match self {
            ConsoleError::Internal(detail) => {
                tracing::error!(error = %detail, "console: request failed");
                "something went wrong; the server's log has the details".to_owned()
            }
            other => other.to_string(),
        };
        let page = ErrorPage {
            status: status.as_u16(),
            reason: status.canonical_reason().unwrap_or("Error"),
            message,
        };
        let mut res = HttpResponse::build(status);
        res.content_type(ContentType::html());
        if status == StatusCode::TOO_MANY_REQUESTS {
            res.insert_header((header::RETRY_AFTER, "60"));
        }
        match page.render() {
            Ok(html) => res.body(html),
            Err(_) => res
                .content_type(ContentType::plaintext())
                .body(page.message),
        }
    }
}
