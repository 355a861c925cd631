//! Admin connections to the servers that hold tenant databases. Admin
//! passwords are never stored in the registry: they come from configuration,
//! keyed by host name.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use registry::hosts::DbHost;
use tokio_postgres::{Client, NoTls};

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
}

/// Opens admin connections to hosts with passwords from configuration.
#[derive(Clone, Default)]
pub struct HostConnector {
    passwords: HashMap<String, String>,
    connect_timeout: Option<Duration>,
}

impl fmt::Debug for HostConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostConnector")
            .field("hosts", &self.passwords.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl HostConnector {
    pub fn new(connect_timeout: Duration) -> Self {
        Self {
            passwords: HashMap::new(),
            connect_timeout: Some(connect_timeout),
        }
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
        let (client, connection) =
            config
                .connect(NoTls)
                .await
                .map_err(|source| HostError::Connect {
                    host: host.name.clone(),
                    addr: format!("{}:{}", host.host, host.port),
                    user: host.admin_user.clone(),
                    source,
                })?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "db host connection closed");
            }
        });
        Ok(client)
    }
}
