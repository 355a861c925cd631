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
use provisioner::reconciler::Reconciler;
use resolver::cache::TenantCache;
use resolver::clock::SystemClock;
use resolver::jwks::KeySource;
use resolver::pools::PoolLimits;
use resolver::token::VerifierConfig;
use resolver::{Resolver, ResolverConfig};
use secrecy::SecretString;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing_actix_web::{RequestId, TracingLogger};
use webhooks::{Inbox, WebhookVerifier};

use crate::config::{ControlPool, Settings};
use crate::{provisioning, routes};

/// Shared by every request handler.
pub struct AppState {
    pub inbox: Inbox,
    pub verifier: Arc<WebhookVerifier>,
    pub body_limit: usize,
    pub body_read_timeout: std::time::Duration,
    pub service_tokens: Vec<SecretString>,
    /// The internal API's control-plane pool (intake has its own, in `inbox`).
    pub api: Pool,
    /// `/readyz` and `/metrics`: a pool of their own, so probes answer
    /// whatever else is busy.
    pub readiness: Pool,
    /// Tenants by organization, id and slug, dropped on the registry's
    /// NOTIFY: the look-ups' and the resolver's.
    pub tenants: Arc<TenantCache>,
    /// Present when `clerk.issuer` is configured.
    pub resolver: Option<Arc<Resolver>>,
    /// Present when `clerk.secret_key` is configured.
    pub clerk: Option<Arc<clerk_api::ClerkClient>>,
    pub expose_passwords: bool,
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
        let pools = ControlPools::build(settings)?;
        let client = pools.workers.get().await.context(
            "cannot reach the control-plane database (database.url); is PostgreSQL running?",
        )?;
        registry::schema::check(&client).await?;
        drop(client);
        let reconciler = provisioning::prepare(settings, &pools.workers).await?;
        let worker = settings
            .worker
            .enabled
            .then(|| spawn_worker(settings, reconciler.clone()))
            .transpose()?;

        let tenants = tenant_cache(settings, pools.api.clone())?;
        let resolver = build_resolver_with(settings, tenants.clone())?;
        let control = registry::pool::parse_url(settings.database_url()?)?;
        match &resolver {
            Some(resolver) => drop(resolver.listen_for_changes(control)),
            None => drop(tenants.listen_for_changes(control, |_, _| {})),
        }
        let clerk = match settings.clerk.secret_key {
            Some(_) => Some(Arc::new(settings.clerk_client()?)),
            None => None,
        };
        if let (Some(clerk), true, Some((stop, _))) = (&clerk, settings.clerk.write_back, &worker) {
            directory_sync::writeback::spawn(
                pools.workers.clone(),
                clerk.clone(),
                settings.worker.poll_interval,
                stop.subscribe(),
            );
        }
        let port = listener.local_addr()?.port();
        crate::telemetry::prometheus();
        let console = crate::console::state(settings)?;
        let state = web::Data::new(AppState {
            inbox: Inbox::new(pools.intake),
            verifier: Arc::new(verifier),
            body_limit: settings.http.body_limit,
            body_read_timeout: settings.http.body_read_timeout,
            service_tokens: settings.internal.tokens.clone(),
            api: pools.api,
            readiness: pools.readiness,
            tenants,
            resolver,
            clerk,
            expose_passwords: settings.internal.expose_passwords,
        });
        let server = HttpServer::new(move || {
            let (json, query, path) = crate::error::extractor_configs();
            App::new()
                .wrap(from_fn(echo_request_id))
                .wrap(TracingLogger::default())
                .app_data(state.clone())
                .app_data(json)
                .app_data(query)
                .app_data(path)
                .service(routes::webhooks::clerk_webhook)
                .service(routes::health::healthz)
                .service(routes::health::readyz)
                .service(routes::health::metrics_route)
                .configure(routes::internal::configure)
                .configure(|cfg| {
                    if let Some(console) = &console {
                        console::configure(cfg, console.clone());
                    }
                })
                .default_service(web::to(crate::error::no_route))
        })
        .client_request_timeout(settings.http.header_read_timeout)
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

/// The resolver, when `clerk.issuer` is configured, with a tenant cache of
/// its own.
pub fn build_resolver(settings: &Settings, control: Pool) -> anyhow::Result<Option<Arc<Resolver>>> {
    build_resolver_with(settings, tenant_cache(settings, control)?)
}

/// The tenant cache of the internal API's look-ups and the resolver.
pub fn tenant_cache(settings: &Settings, control: Pool) -> anyhow::Result<Arc<TenantCache>> {
    Ok(Arc::new(TenantCache::new(
        control,
        settings.cipher()?,
        registry::pool::parse_url(settings.database_url()?)?.tls,
        settings.resolver.cache_ttl,
        settings.resolver.cache_max_entries,
    )))
}

/// The resolver over `cache`, when `clerk.issuer` is configured.
pub fn build_resolver_with(
    settings: &Settings,
    cache: Arc<TenantCache>,
) -> anyhow::Result<Option<Arc<Resolver>>> {
    let Some(issuer) = settings.clerk.issuer.clone() else {
        return Ok(None);
    };
    let keys = match &settings.clerk.jwt_public_key {
        Some(pem) => KeySource::Pem(pem.clone()),
        None => KeySource::Jwks {
            url: settings.clerk.jwks_url.clone().unwrap_or_else(|| {
                format!("{}/.well-known/jwks.json", issuer.trim_end_matches('/'))
            }),
            min_refetch_interval: settings.resolver.jwks_min_refetch,
        },
    };
    let config = ResolverConfig {
        token: VerifierConfig {
            issuer,
            keys,
            authorized_parties: settings.clerk.authorized_parties.clone(),
            clock_skew: settings.resolver.clock_skew,
            allow_pending_sessions: false,
            tenant_claim: settings.resolver.tenant_claim.clone(),
            verdict_cache_entries: settings.resolver.token_cache_max_entries,
        },
        pools: PoolLimits {
            per_tenant: settings.resolver.pool_per_tenant,
            budget: settings.resolver.pool_budget,
            acquire_timeout: settings.database.acquire_timeout,
            ..PoolLimits::default()
        },
        cache_ttl: settings.resolver.cache_ttl,
        cache_max_entries: settings.resolver.cache_max_entries,
        tls: registry::pool::parse_url(settings.database_url()?)?.tls,
        register_unknown_orgs: settings.resolver.register_unknown_orgs,
    };
    let resolver = Resolver::with_cache(config, cache, Arc::new(SystemClock))
        .context("clerk.jwt_public_key")?;
    Ok(Some(Arc::new(resolver)))
}

/// The control-plane pools (see [`ControlPool`]).
///
/// They serve the actix workers (each on a runtime of its own) and the
/// reconciler (on the caller's runtime). A connection's I/O task runs on the
/// runtime that opened it, so whichever runtime built the application must
/// keep running: an embedder (or a test) that blocks it starves requests that
/// happen to get such a connection.
pub struct ControlPools {
    pub intake: Pool,
    pub api: Pool,
    pub readiness: Pool,
    pub workers: Pool,
}

impl ControlPools {
    pub fn build(settings: &Settings) -> anyhow::Result<Self> {
        Ok(Self {
            intake: pool_of(settings, ControlPool::Intake)?,
            api: pool_of(settings, ControlPool::Api)?,
            readiness: pool_of(settings, ControlPool::Readiness)?,
            workers: pool_of(settings, ControlPool::Workers)?,
        })
    }
}

fn pool_of(settings: &Settings, which: ControlPool) -> anyhow::Result<Pool> {
    let target = registry::pool::parse_url(settings.database_url()?)?;
    Ok(registry::pool::build_pool(
        target,
        &settings.pool_options(which),
    )?)
}

/// A control-plane pool for the CLI and one-off jobs, with the workers'
/// deadlines (its commands run as long as a worker's steps).
pub fn control_pool(settings: &Settings) -> anyhow::Result<Pool> {
    pool_of(settings, ControlPool::Workers)
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
