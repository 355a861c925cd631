//! Admin connections to the servers that hold tenant databases. Admin
//! passwords are never stored in the registry: they come from configuration,
//! keyed by host name. TLS: the host's own `sslmode`/`sslrootcert`, else
//! database.url's (see `registry::tls`).

use std::collections::HashMap;
use std::fmt;
use std::ops::Deref;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::{Object, Pool, PoolError};
use registry::hosts::DbHost;
use registry::pool::{build_pool, PoolOptions};
use registry::session::SessionLimits;
use registry::tls::{ClientCert, ConnectError, ConnectOptions, TlsError, TlsSettings};
use tokio_postgres::Client;

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("no admin password configured for db host {0:?} (set hosts.{0}.password, e.g. TENANT_PLANE__HOSTS__{1}__PASSWORD)")]
    NoPassword(String, String),
    #[error("cannot connect to db host {host:?} ({addr}) as {user}: {}", registry::describe(.source))]
    Connect {
        host: String,
        addr: String,
        user: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("TLS settings of db host {host:?}: {source}")]
    Tls {
        host: String,
        #[source]
        source: TlsError,
    },
    /// The host accepted the connection and never finished the handshake,
    /// or went silent during an attempt (the attempt deadline).
    #[error("db host {host:?} ({addr}) did not answer within {}s", .after.as_secs_f64())]
    Timeout {
        host: String,
        addr: String,
        after: Duration,
    },
}

impl HostError {
    /// The host did not answer (or finish its work) within `after`: the
    /// attempt deadline's error, wherever a deadline cuts work on a host off.
    pub fn timeout(host: &DbHost, after: Duration) -> Self {
        HostError::Timeout {
            host: host.name.clone(),
            addr: format!("{}:{}", host.host, host.port),
            after,
        }
    }

    /// The host itself could not be reached (or did not answer in time),
    /// rather than a setting being wrong: such a host backs off as a whole.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, HostError::Connect { .. } | HostError::Timeout { .. })
    }
}

/// Opens admin connections to hosts with passwords from configuration, and
/// keeps a small pool of admin sessions in each host's `postgres` database
/// for the reconciler's statements on roles and databases: a SCRAM handshake
/// (and a TLS one) per tenant step was most of the cost of a claim.
#[derive(Clone, Default)]
pub struct HostConnector {
    passwords: HashMap<String, String>,
    connect_timeout: Option<Duration>,
    session: SessionLimits,
    tls_defaults: TlsSettings,
    client_certs: HashMap<String, ClientCert>,
    admin_pool_size: usize,
    /// Per host name: the settings the pool was built with, and the pool.
    /// A host whose address, user or TLS changed gets a new pool.
    admin_pools: Arc<Mutex<HashMap<String, (String, Pool)>>>,
}

/// Idle admin sessions kept per host unless `with_admin_pool` says otherwise.
const DEFAULT_ADMIN_POOL: usize = 4;

/// An admin session in a host's `postgres` database, from the host's pool.
/// It goes back to the pool only through [`AdminSession::release`], after
/// work that ended cleanly; dropped otherwise (an error, or an attempt cut
/// off by its deadline with a statement possibly still running), it is
/// closed, so no later step inherits a session in an unknown state.
pub struct AdminSession {
    conn: Option<Object>,
}

impl AdminSession {
    /// Returns the session to its pool.
    pub fn release(mut self) {
        drop(self.conn.take());
    }
}

impl Deref for AdminSession {
    type Target = Client;

    fn deref(&self) -> &Client {
        self.conn
            .as_ref()
            .expect("an admin session holds its connection until dropped")
    }
}

impl Drop for AdminSession {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            drop(Object::take(conn));
        }
    }
}

impl fmt::Debug for HostConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostConnector")
            .field("hosts", &self.passwords.keys().collect::<Vec<_>>())
            .field("tls_defaults", &self.tls_defaults)
            .finish_non_exhaustive()
    }
}

impl HostConnector {
    pub fn new(connect_timeout: Duration) -> Self {
        Self {
            passwords: HashMap::new(),
            connect_timeout: Some(connect_timeout),
            session: SessionLimits::default(),
            tls_defaults: TlsSettings::default(),
            client_certs: HashMap::new(),
            admin_pool_size: DEFAULT_ADMIN_POOL,
            admin_pools: Arc::default(),
        }
    }

    /// At most `size` admin sessions per host (the workers' concurrency,
    /// plus the warm pool's refill).
    pub fn with_admin_pool(mut self, size: usize) -> Self {
        self.admin_pool_size = size.max(1);
        self
    }

    /// The TLS settings of hosts that leave theirs unset: database.url's
    /// (its client certificate is not carried over; see `with_client_cert`).
    pub fn with_tls_defaults(mut self, defaults: TlsSettings) -> Self {
        self.tls_defaults = defaults.without_client_cert();
        self
    }

    /// Server-side deadlines for admin sessions (statement and lock timeouts).
    pub fn with_session_limits(mut self, session: SessionLimits) -> Self {
        self.session = session;
        self
    }

    /// A client certificate for admin connections to `host`.
    pub fn with_client_cert(mut self, host: &str, cert: ClientCert) -> Self {
        self.client_certs.insert(host.to_owned(), cert);
        self
    }

    /// The TLS settings admin connections to `host` use.
    pub fn tls_for(&self, host: &DbHost) -> Result<TlsSettings, HostError> {
        let tls = self
            .tls_defaults
            .for_host(&host.tls)
            .map_err(|source| HostError::Tls {
                host: host.name.clone(),
                source,
            })?;
        Ok(tls.with_client_cert(self.client_certs.get(&host.name).cloned()))
    }

    /// The TLS settings tenant connections to `host` use: the host's, without
    /// a client certificate.
    pub fn tenant_tls_for(&self, host: &DbHost) -> Result<TlsSettings, HostError> {
        Ok(self.tls_for(host)?.without_client_cert())
    }

    pub fn with_password(mut self, host: &str, password: &str) -> Self {
        self.passwords.insert(host.to_owned(), password.to_owned());
        self
    }

    /// What connecting to `dbname` on `host` as its admin user takes.
    fn options(&self, host: &DbHost, dbname: &str) -> Result<ConnectOptions, HostError> {
        let password = self.passwords.get(&host.name).ok_or_else(|| {
            HostError::NoPassword(host.name.clone(), host.name.to_ascii_uppercase())
        })?;
        let mut config = tokio_postgres::Config::new();
        config
            .host(&host.host)
            .port(host.port)
            .user(&host.admin_user)
            .password(password)
            .dbname(dbname)
            .application_name("tenant-plane");
        if let Some(t) = self.connect_timeout {
            config.connect_timeout(t);
        }
        Ok(ConnectOptions::new(config, self.tls_for(host)?))
    }

    /// A new connection to `dbname` on `host` as its admin user.
    pub async fn connect(&self, host: &DbHost, dbname: &str) -> Result<Client, HostError> {
        let mut options = self.options(host, dbname)?;
        self.session.apply(&mut options.config);
        options.connect_spawned().await.map_err(|e| match e {
            ConnectError::Settings(source) => HostError::Tls {
                host: host.name.clone(),
                source,
            },
            ConnectError::Connect { source, .. } => connect_failed(host, source),
            ConnectError::Timeout { after, .. } => HostError::timeout(host, after),
        })
    }

    /// An admin session in `host`'s `postgres` database, from its pool (a
    /// new connection when none is idle).
    pub async fn admin(&self, host: &DbHost) -> Result<AdminSession, HostError> {
        let pool = self.admin_pool(host)?;
        let conn = pool
            .get()
            .await
            .map_err(|e| self.checkout_failed(host, e))?;
        Ok(AdminSession { conn: Some(conn) })
    }

    /// A second admin session for work beside one already held, if the
    /// pool has one to spare now (`None` otherwise, never waiting: a worker
    /// waiting for a second session while holding its first could wait on
    /// every other worker doing the same).
    pub async fn spare_admin(&self, host: &DbHost) -> Result<Option<AdminSession>, HostError> {
        let pool = self.admin_pool(host)?;
        let timeouts = deadpool_postgres::Timeouts {
            wait: Some(Duration::ZERO),
            ..pool.timeouts()
        };
        match pool.timeout_get(&timeouts).await {
            Ok(conn) => Ok(Some(AdminSession { conn: Some(conn) })),
            Err(PoolError::Timeout(deadpool_postgres::TimeoutType::Wait)) => Ok(None),
            Err(e) => Err(self.checkout_failed(host, e)),
        }
    }

    /// Why an admin session could not be had: the host refused or failed
    /// the connection, or it did not come in time.
    fn checkout_failed(&self, host: &DbHost, e: PoolError) -> HostError {
        match e {
            PoolError::Backend(source) => connect_failed(host, source),
            _ => HostError::timeout(host, self.connect_timeout.unwrap_or(DEFAULT_WAIT)),
        }
    }

    fn admin_pool(&self, host: &DbHost) -> Result<Pool, HostError> {
        let key = format!(
            "{}:{}:{}:{:?}",
            host.host,
            host.port,
            host.admin_user,
            self.tls_for(host)?
        );
        let mut pools = self
            .admin_pools
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((built_for, pool)) = pools.get(&host.name) {
            if *built_for == key {
                return Ok(pool.clone());
            }
        }
        let timeout = self.connect_timeout.unwrap_or(DEFAULT_WAIT);
        let pool = build_pool(
            self.options(host, "postgres")?,
            &PoolOptions {
                max_size: self.admin_pool_size.max(1),
                connect_timeout: timeout,
                wait_timeout: timeout,
                session: self.session,
            },
        )
        .map_err(|e| match e {
            registry::pool::PoolSetupError::Url(source) => HostError::Tls {
                host: host.name.clone(),
                source,
            },
            registry::pool::PoolSetupError::Build(_) => {
                unreachable!("a pool with a runtime and timeouts always builds")
            }
        })?;
        pools.insert(host.name.clone(), (key, pool.clone()));
        Ok(pool)
    }
}

/// How long a checkout waits when no connect timeout is configured.
const DEFAULT_WAIT: Duration = Duration::from_secs(10);

fn connect_failed(host: &DbHost, source: tokio_postgres::Error) -> HostError {
    HostError::Connect {
        host: host.name.clone(),
        addr: format!("{}:{}", host.host, host.port),
        user: host.admin_user.clone(),
        source,
    }
}
