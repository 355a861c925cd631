//! Building the application: pools, state and the HTTP server, from settings
//! and an already-bound listener (tests bind port 0).

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::body::MessageBody;
use actix_web::dev::{Server, ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, App, HttpMessage, HttpServer};
use anyhow::Context;
use deadpool_postgres::Pool;
use registry::reconciler::Reconciler;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing_actix_web::{RequestId, TracingLogger};
use webhooks::{Inbox, WebhookVerifier};

use crate::config::Settings;
use crate::{provisioning, routes};

/// Shared by every request handler.
pub struct AppState {
    pub inbox: Inbox,
    pub verifier: Arc<WebhookVerifier>,
    pub body_limit: usize,
}

pub struct Application {
    port: u16,
    server: Server,
    reconciler: Arc<Reconciler>,
    worker: Option<(watch::Sender<bool>, JoinHandle<()>)>,
}

impl Application {
    /// Builds the server over `listener`, and the provisioning worker beside
    /// it when `worker.enabled`. Refuses to start when the control-plane
    /// schema is missing, behind or ahead of this binary.
    pub async fn build(settings: &Settings, listener: TcpListener) -> anyhow::Result<Self> {
        let verifier = settings.webhook_verifier()?;
        let pool = control_pool(settings)?;
        let client = pool.get().await.context(
            "cannot reach the control-plane database (database.url); is PostgreSQL running?",
        )?;
        registry::schema::check(&client).await?;
        drop(client);
        let reconciler = provisioning::prepare(settings, &pool).await?;
        let worker = settings
            .worker
            .enabled
            .then(|| spawn_worker(settings, reconciler.clone()))
            .transpose()?;

        let port = listener.local_addr()?.port();
        let state = web::Data::new(AppState {
            inbox: Inbox::new(pool),
            verifier: Arc::new(verifier),
            body_limit: settings.http.body_limit,
        });
        let server = HttpServer::new(move || {
            App::new()
                .wrap(from_fn(echo_request_id))
                .wrap(TracingLogger::default())
                .app_data(state.clone())
                .service(routes::webhooks::clerk_webhook)
                .service(routes::health::healthz)
                .service(routes::health::readyz)
        })
        .listen(listener)?
        .run();
        Ok(Self {
            port,
            server,
            reconciler,
            worker,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn reconciler(&self) -> Arc<Reconciler> {
        self.reconciler.clone()
    }

    /// Serves until a shutdown signal, then lets the worker finish its pass.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let served = self.server.await;
        if let Some((stop, handle)) = self.worker {
            let _ = stop.send(true);
            let _ = handle.await;
        }
        served
    }
}

/// Starts the reconciler workers; they stop when the sender says `true`.
pub fn spawn_worker(
    settings: &Settings,
    reconciler: Arc<Reconciler>,
) -> anyhow::Result<(watch::Sender<bool>, JoinHandle<()>)> {
    let listen = registry::pool::parse_url(settings.database_url()?)?;
    let (stop, stopped) = watch::channel(false);
    let handle = tokio::spawn(reconciler.run(
        settings.worker.concurrency,
        settings.worker.poll_interval,
        listen,
        stopped,
    ));
    Ok((stop, handle))
}

/// The control-plane pool, from settings.
pub fn control_pool(settings: &Settings) -> anyhow::Result<Pool> {
    let config = registry::pool::parse_url(settings.database_url()?)?;
    Ok(registry::pool::build_pool(
        config,
        &settings.pool_options(),
    )?)
}

/// Returns the request id that tracing-actix-web put on the request's span as
/// `x-request-id`, so a caller can quote it when reporting a problem.
async fn echo_request_id(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let id = req.extensions().get::<RequestId>().copied();
    let mut res = next.call(req).await?;
    if let Some(id) = id {
        if let Ok(value) = HeaderValue::from_str(&id.to_string()) {
            res.headers_mut()
                .insert(HeaderName::from_static("x-request-id"), value);
        }
    }
    Ok(res)
}
