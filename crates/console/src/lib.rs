//! The operator console: server-rendered pages under `/console` for the
//! on-call engineer (tenants, webhooks, hosts, doctor, provisioning), with
//! live tenant updates over server-sent events.
//!
//! Everything it does goes through the registry, provisioner and webhooks
//! crates, as the CLI does; it holds no logic of its own beyond the pages,
//! the operator session and its CSRF tokens.
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::{from_fn, Next};
use actix_web::web;
use deadpool_postgres::Pool;
use model::naming::TenantPrefix;
use provisioner::limits::Plans;
use provisioner::template::Templates;
use provisioner::HostConnector;
use registry::tls::ConnectOptions;
use secrecy::SecretString;

pub mod chart;
mod error;
pub mod live;
mod pages;
pub mod session;

pub use error::ConsoleError;

/// The console's settings (`console.*`).
#[derive(Clone)]
pub struct ConsoleConfig {
    /// Operator tokens accepted by the login form. Empty: no console.
    pub tokens: Vec<SecretString>,
    /// How long a session lasts after login.
    pub session_lifetime: Duration,
    /// Failed logins from one address within `login_window` before further
    /// attempts are refused until it ends.
    pub login_attempts: u32,
    pub login_window: Duration,
}

/// What the pages need of the provisioning configuration: the plans (a
/// tenant's limits) and what `provisioner::doctor::diagnose` takes, as
/// `tenant-plane doctor` passes it.
#[derive(Clone)]
pub struct Provisioning {
    pub plans: Plans,
    pub connector: HostConnector,
    pub prefix: TenantPrefix,
    pub templates: Templates,
    pub stuck_after: Duration,
}

/// Shared by the console's handlers.
pub struct ConsoleState {
    pool: Pool,
    keys: session::Keys,
    revoked: session::Revoked,
    limiter: session::LoginLimiter,
    session_lifetime: Duration,
    provisioning: Provisioning,
    live: live::Live,
    /// Turned true by [`ConsoleState::close`]: event streams end.
    closing: tokio::sync::watch::Sender<bool>,
}

impl ConsoleState {
    /// `pool` is the console's control-plane pool; `listen` the control
    /// database's connection settings, for the NOTIFY listener that feeds
    /// live updates (started here: call within a tokio runtime). None when
    /// `config.tokens` is empty: then nothing is served under /console.
    pub fn new(
        config: &ConsoleConfig,
        pool: Pool,
        listen: ConnectOptions,
        provisioning: Provisioning,
    ) -> Option<Arc<Self>> {
        if config.tokens.is_empty() {
            return None;
        }
        Some(Arc::new(Self {
            live: live::Live::spawn(pool.clone(), listen),
            pool,
            keys: session::Keys::new(&config.tokens),
            revoked: session::Revoked::default(),
            limiter: session::LoginLimiter::new(config.login_attempts, config.login_window),
            session_lifetime: config.session_lifetime,
            provisioning,
            closing: tokio::sync::watch::Sender::new(false),
        }))
    }

    /// Ends every open event stream (and any opened later), so that a
    /// graceful shutdown is not held up by pages left open; they reconnect
    /// to another replica, or to this one when it is back.
    pub fn close(&self) {
        self.closing.send_replace(true);
    }
}

/// Mounts the console under `/console`.
pub fn configure(cfg: &mut web::ServiceConfig, state: Arc<ConsoleState>) {
    cfg.service(
        web::scope("/console")
            .app_data(web::Data::from(state))
            .app_data(web::FormConfig::default().error_handler(|e, _| {
                ConsoleError::BadRequest(format!("the form could not be read: {e}")).into()
            }))
            .app_data(web::QueryConfig::default().error_handler(|e, _| {
                ConsoleError::BadRequest(format!("the address could not be read: {e}")).into()
            }))
            .app_data(
                web::PathConfig::default().error_handler(|e, _| {
                    ConsoleError::NotFound(format!("no such page ({e})")).into()
                }),
            )
            .wrap(from_fn(security_headers))
            .configure(pages::routes)
            .default_service(web::to(|| async {
                Err::<actix_web::HttpResponse, _>(ConsoleError::NotFound(
                    "there is no such page in the console".into(),
                ))
            })),
    );
}

/// Scripts only from /console/static (no inline script, no eval), nothing
/// from elsewhere, no framing; pages are never cached (they show live state
/// and carry CSRF tokens).
async fn security_headers(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let is_static = req.path().starts_with("/console/static/");
    let mut res = next.call(req).await?;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !is_static {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    Ok(res)
}
