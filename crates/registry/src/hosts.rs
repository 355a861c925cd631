//! PostgreSQL servers that hold tenant databases (`db_hosts`), placement of
//! new tenants, and admin connections to the servers.
//!
//! Admin passwords are never stored in the registry: they come from
//! configuration, keyed by host name.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use deadpool_postgres::GenericClient;
use serde::Serialize;
use tokio_postgres::{Client, NoTls};
use uuid::Uuid;

use crate::RegistryError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HostState {
    Accepting,
    Draining,
}

impl HostState {
    fn parse(s: &str) -> Self {
        if s == "draining" {
            HostState::Draining
        } else {
            HostState::Accepting
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            HostState::Accepting => "accepting",
            HostState::Draining => "draining",
        }
    }
}

/// A `db_hosts` row and how many live tenants it holds.
#[derive(Debug, Clone, Serialize)]
pub struct DbHost {
    pub id: Uuid,
    pub name: String,
    pub host: String,
    pub port: u16,
    pub admin_user: String,
    pub capacity: i32,
    pub state: HostState,
    pub tenants: i64,
}

/// A new host, as `hosts add` or the configuration describes it.
#[derive(Debug, Clone)]
pub struct NewHost {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub admin_user: String,
    pub capacity: i32,
}

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("no admin password configured for db host {0:?} (set hosts.{0}.password, e.g. TENANT_PLANE__HOSTS__{1}__PASSWORD)")]
    NoPassword(String, String),
    #[error("cannot connect to db host {host:?} ({addr}) as {user}: {}", crate::describe(.source))]
    Connect {
        host: String,
        addr: String,
        user: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("db host name {0:?} is invalid: use lowercase letters, digits and '_'")]
    BadName(String),
}

const HOST_COLUMNS: &str = "h.id, h.name, h.host, h.port, h.admin_user, h.capacity, h.state,
    (SELECT count(*) FROM tenant_registry t WHERE t.db_host_id = h.id AND t.status <> 'deleted')";

fn host_from_row(r: &tokio_postgres::Row) -> DbHost {
    DbHost {
        id: r.get(0),
        name: r.get(1),
        host: r.get(2),
        port: r.get::<_, i32>(3) as u16,
        admin_user: r.get(4),
        capacity: r.get(5),
        state: HostState::parse(r.get(6)),
        tenants: r.get(7),
    }
}

fn valid_host_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 40
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Adds a host, or updates its address and capacity if the name exists.
pub async fn upsert(client: &impl GenericClient, host: &NewHost) -> Result<DbHost, RegistryError> {
    insert(
        client,
        host,
        "DO UPDATE SET host = EXCLUDED.host, port = EXCLUDED.port,
                       admin_user = EXCLUDED.admin_user, capacity = EXCLUDED.capacity,
                       updated_at = now()",
    )
    .await?;
    Ok(get(client, &host.name)
        .await?
        .expect("the host was just written"))
}

/// Validates a host name for `hosts add`.
pub fn check_name(name: &str) -> Result<(), HostError> {
    if valid_host_name(name) {
        Ok(())
    } else {
        Err(HostError::BadName(name.to_owned()))
    }
}

/// Adds the host only if no host of that name exists (start-up seeding must
/// not undo an operator's `hosts drain`).
pub async fn seed(client: &impl GenericClient, host: &NewHost) -> Result<(), RegistryError> {
    insert(client, host, "DO NOTHING").await
}

async fn insert(
    client: &impl GenericClient,
    host: &NewHost,
    on_conflict: &'static str,
) -> Result<(), RegistryError> {
    client
        .execute(
            &format!(
                "INSERT INTO db_hosts (id, name, host, port, admin_user, capacity)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (name) {on_conflict}"
            ),
            &[
                &Uuid::now_v7(),
                &host.name,
                &host.host,
                &i32::from(host.port),
                &host.admin_user,
                &host.capacity,
            ],
        )
        .await?;
    Ok(())
}

pub async fn list(client: &impl GenericClient) -> Result<Vec<DbHost>, RegistryError> {
    let rows = client
        .query(
            &format!("SELECT {HOST_COLUMNS} FROM db_hosts h ORDER BY h.name"),
            &[],
        )
        .await?;
    Ok(rows.iter().map(host_from_row).collect())
}

pub async fn get(client: &impl GenericClient, name: &str) -> Result<Option<DbHost>, RegistryError> {
    let row = client
        .query_opt(
            &format!("SELECT {HOST_COLUMNS} FROM db_hosts h WHERE h.name = $1"),
            &[&name],
        )
        .await?;
    Ok(row.as_ref().map(host_from_row))
}

pub async fn get_by_id(
    client: &impl GenericClient,
    id: Uuid,
) -> Result<Option<DbHost>, RegistryError> {
    let row = client
        .query_opt(
            &format!("SELECT {HOST_COLUMNS} FROM db_hosts h WHERE h.id = $1"),
            &[&id],
        )
        .await?;
    Ok(row.as_ref().map(host_from_row))
}

/// Sets a host accepting or draining. Returns false if there is no such host.
pub async fn set_state(
    client: &impl GenericClient,
    name: &str,
    state: HostState,
) -> Result<bool, RegistryError> {
    let n = client
        .execute(
            "UPDATE db_hosts SET state = $2, updated_at = now() WHERE name = $1",
            &[&name, &state.as_str()],
        )
        .await?;
    Ok(n == 1)
}

/// Picks the accepting host with the most free capacity, or None when every
/// host is draining or full. The hosts are locked for the rest of the
/// transaction so that concurrent placements see each other's counts.
pub async fn place(
    tx: &deadpool_postgres::Transaction<'_>,
) -> Result<Option<DbHost>, RegistryError> {
    tx.execute(
        "SELECT id FROM db_hosts WHERE state = 'accepting' ORDER BY id FOR UPDATE",
        &[],
    )
    .await?;
    let row = tx
        .query_opt(
            &format!(
                "SELECT * FROM (SELECT {HOST_COLUMNS} FROM db_hosts h WHERE h.state = 'accepting') x
                  WHERE x.capacity - x.count > 0
                  ORDER BY x.capacity - x.count DESC, x.name
                  LIMIT 1"
            ),
            &[],
        )
        .await?;
    Ok(row.as_ref().map(host_from_row))
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
