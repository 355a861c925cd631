//! Connection pools to the control-plane database.

use std::time::Duration;

use deadpool_postgres::{ManagerConfig, Pool, RecyclingMethod, Runtime};

use crate::session::SessionLimits;
use crate::tls::{ConnectOptions, TlsError};

/// How a pool behaves when the database is slow or gone. Short timeouts are
/// deliberate: a webhook that cannot be stored must fail fast (503) so Svix
/// retries, rather than hold the request open.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    pub max_size: usize,
    pub connect_timeout: Duration,
    pub wait_timeout: Duration,
    /// Server-side deadlines for every session of the pool.
    pub session: SessionLimits,
}

impl Default for PoolOptions {
    fn default() -> Self {
        Self {
            max_size: 16,
            connect_timeout: Duration::from_secs(3),
            wait_timeout: Duration::from_secs(5),
            session: SessionLimits::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PoolSetupError {
    /// The URL, or its TLS settings (sslmode, sslrootcert, ...), are wrong.
    #[error(transparent)]
    Url(#[from] TlsError),
    #[error("could not build the connection pool: {0}")]
    Build(#[from] deadpool_postgres::BuildError),
}

/// Parses a `postgres://` URL, TLS keys included (see [`crate::tls`]). The
/// error never repeats the URL: it may hold a password.
pub fn parse_url(url: &str) -> Result<ConnectOptions, PoolSetupError> {
    Ok(ConnectOptions::parse(url)?)
}

/// Builds a lazily-connecting pool: no connection is made until first use, so
/// a server can start (and answer 503) while its database is down. The TLS
/// files (sslrootcert, sslcert, sslkey) are read now, so a missing one is an
/// error here rather than at the first checkout.
pub fn build_pool(
    mut target: ConnectOptions,
    options: &PoolOptions,
) -> Result<Pool, PoolSetupError> {
    target.config.connect_timeout(options.connect_timeout);
    options.session.apply(&mut target.config);
    if target.config.get_application_name().is_none() {
        target.config.application_name("tenant-plane");
    }
    let manager = target.manager(ManagerConfig {
        // A closed connection (server restarted, network cut) is noticed
        // by its socket and dropped on checkout; verifying every checkout
        // with a round trip would cost more than the queries it guards
        // (the lookup benchmark measured ~100 us of ~700).
        recycling_method: RecyclingMethod::Fast,
    })?;
    Ok(Pool::builder(manager)
        .max_size(options.max_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(options.wait_timeout))
        .create_timeout(Some(options.connect_timeout))
        .recycle_timeout(Some(options.connect_timeout))
        .build()?)
}
