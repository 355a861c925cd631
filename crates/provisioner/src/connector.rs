//! Admin connections to the servers that hold tenant databases. Admin
//! passwords are never stored in the registry: they come from configuration,
//! keyed by host name. TLS: the host's own `sslmode`/`sslrootcert`, else
//! database.url's (see `registry::tls`).

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use registry::hosts::DbHost;
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
    /// The host itself could not be reached (or did not answer in time),
    /// rather than a setting being wrong: such a host backs off as a whole.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, HostError::Connect { .. } | HostError::Timeout { .. })
    }
}

/// Opens admin connections to hosts with passwords from configuration.
#[derive(Clone, Default)]
pub struct HostConnector {
    passwords: HashMap<String, String>,
    connect_timeout: Option<Duration>,
    session: SessionLimits,
    tls_defaults: TlsSettings,
    client_certs: HashMap<String, ClientCert>,
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
        }
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

    /// A connection to `dbname` on `host` as its admin user.
    pub async fn connect(&self, host: &DbHost, dbname: &str) -> Result<Client, HostError> {
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
        self.session.apply(&mut config);
        ConnectOptions::new(config, self.tls_for(host)?)
            .connect_spawned()
            .await
            .map_err(|e| match e {
                ConnectError::Settings(source) => HostError::Tls {
                    host: host.name.clone(),
                    source,
                },
                ConnectError::Connect { source, .. } => HostError::Connect {
                    host: host.name.clone(),
                    addr: format!("{}:{}", host.host, host.port),
                    user: host.admin_user.clone(),
                    source,
                },
                ConnectError::Timeout { after, .. } => HostError::Timeout {
                    host: host.name.clone(),
                    addr: format!("{}:{}", host.host, host.port),
                    after,
                },
            })
    }
}
