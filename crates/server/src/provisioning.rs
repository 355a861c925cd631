//! Wiring of the provisioning engine from configuration: the default db host
//! (the server of `database.url`), admin credentials per host, the template
//! set and the reconciler.

use std::sync::Arc;

use anyhow::Context;
use deadpool_postgres::Pool;
use provisioner::reconciler::{Reconciler, ReconcilerSettings};
use provisioner::template::Templates;
use provisioner::HostConnector;
use registry::hosts::{self, NewHost};
use registry::tls::HostTls;
use secrecy::ExposeSecret;
use tokio_postgres::config::Host;

use crate::config::Settings;

/// The name of the host seeded from `database.url`.
pub const DEFAULT_HOST: &str = "default";

/// Environment variable that makes a worker stop at a named step and wait to
/// be killed: the crash-safety tests use it. Not a configuration key, so it
/// cannot be set by accident in a config file.
pub const PAUSE_AT_ENV: &str = "TENANT_PLANE_PAUSE_AT";

/// The server of `database.url`, as a db host. Its TLS columns stay unset:
/// it inherits database.url's TLS settings, whatever they become.
fn default_host(settings: &Settings) -> anyhow::Result<(NewHost, Option<String>)> {
    let target = registry::pool::parse_url(settings.database_url()?)?;
    let config = &target.config;
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(path)) => path.display().to_string(),
        None => "localhost".to_owned(),
    };
    let password = config
        .get_password()
        .map(|p| String::from_utf8_lossy(p).into_owned());
    Ok((
        NewHost {
            name: DEFAULT_HOST.to_owned(),
            host,
            port: config.get_ports().first().copied().unwrap_or(5432),
            admin_user: config.get_user().unwrap_or("postgres").to_owned(),
            capacity: settings.tenants.default_host_capacity,
            tls: HostTls::default(),
        },
        password,
    ))
}

/// Admin connections to every host we have a password for, with
/// database.url's TLS settings for hosts that set none of their own, and
/// its client certificate (if any) for the default host, its own server.
pub fn host_connector(settings: &Settings) -> anyhow::Result<HostConnector> {
    let (_, default_password) = default_host(settings)?;
    let tls = registry::pool::parse_url(settings.database_url()?)?.tls;
    let mut connector = HostConnector::new(settings.database.connect_timeout)
        .with_tls_defaults(tls.clone())
        .with_session_limits(settings.worker_session_limits())
        // Two admin sessions per worker (a fresh clone makes its roles on a
        // second beside it), and two for the warm pool's refill.
        .with_admin_pool(2 * (settings.worker.concurrency + 1));
    if let Some(cert) = tls.client_cert() {
        connector = connector.with_client_cert(DEFAULT_HOST, cert.clone());
    }
    if let Some(pw) = default_password {
        connector = connector.with_password(DEFAULT_HOST, &pw);
    }
    for (name, secret) in &settings.hosts {
        connector = connector.with_password(name, secret.password.expose_secret());
    }
    Ok(connector)
}

/// Registers the default host if it is not registered yet.
pub async fn seed_default_host(pool: &Pool, settings: &Settings) -> anyhow::Result<()> {
    let (host, _) = default_host(settings)?;
    let client = pool.get().await?;
    hosts::seed(&client, &host).await?;
    Ok(())
}

pub fn templates(settings: &Settings) -> anyhow::Result<Templates> {
    Ok(match &settings.tenants.template_dir {
        Some(dir) => Templates::from_dir(dir).context("tenants.template_dir")?,
        None => Templates::embedded(),
    })
}

pub fn reconciler(settings: &Settings, pool: Pool) -> anyhow::Result<Arc<Reconciler>> {
    Ok(Arc::new(Reconciler::new(
        pool,
        host_connector(settings)?,
        settings.cipher()?,
        templates(settings)?,
        ReconcilerSettings {
            prefix: settings.prefix()?,
            retention: settings.tenants.retention,
            max_attempts: settings.worker.max_attempts,
            backoff_base: settings.worker.backoff_base,
            backoff_max: settings.worker.backoff_max,
            plans: settings.plans()?,
            attempt_timeout: settings.worker.attempt_timeout,
            lease: settings.worker.lease,
            clone_strategy: settings.tenants.clone_strategy,
            warm_pool: settings.tenants.warm_pool,
            pause_at: std::env::var(PAUSE_AT_ENV).ok().filter(|s| !s.is_empty()),
        },
    )))
}

/// Everything `serve` and `worker` do before working: register the default
/// host and bring every host's template up to date. A host that cannot be
/// reached is logged and left for later (its tenants back off meanwhile);
/// a template that is wrong (an applied migration edited) stops start-up.
pub async fn prepare(settings: &Settings, pool: &Pool) -> anyhow::Result<Arc<Reconciler>> {
    seed_default_host(pool, settings).await?;
    let reconciler = reconciler(settings, pool.clone())?;
    for built in reconciler.build_templates_each().await? {
        match built {
            Ok(report) if report.created || !report.applied.is_empty() => {
                tracing::info!(host = %report.host, created = report.created, applied = ?report.applied, "template built");
            }
            Ok(_) => {}
            Err(e) if e.host_unreachable() => {
                tracing::warn!(error = %e, "template not built: db host unreachable; starting without it");
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(reconciler)
}
