//! PostgreSQL servers that hold tenant databases (`db_hosts`) and placement
//! of new tenants.
//!
//! Admin passwords are never stored in the registry: they come from
//! configuration, keyed by host name (see the provisioner's connector).

use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use serde::Serialize;
use uuid::Uuid;

use crate::tls::HostTls;
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
    /// Warm-pool spares it holds that no tenant has claimed yet: they count
    /// against its capacity beside its tenants.
    pub spares: i64,
    /// Failed attempts to reach it in a row (0 when it last answered).
    pub failures: i32,
    /// While set and in the future, its tenants wait (per-host backoff).
    pub retry_after: Option<DateTime<Utc>>,
    /// Its own `sslmode`/`sslrootcert`; unset ones inherit database.url's.
    #[serde(flatten)]
    pub tls: HostTls,
}

/// A new host, as `hosts add` or the configuration describes it.
#[derive(Debug, Clone)]
pub struct NewHost {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub admin_user: String,
    pub capacity: i32,
    /// `None` fields inherit database.url's TLS settings.
    pub tls: HostTls,
}

#[derive(Debug, thiserror::Error)]
#[error("db host name {0:?} is invalid: use 1-40 lowercase letters, digits and '_'")]
pub struct BadHostName(pub String);

const HOST_COLUMNS: &str = "h.id, h.name, h.host, h.port, h.admin_user, h.capacity, h.state,
    h.sslmode, h.sslrootcert, h.failures, h.retry_after,
    (SELECT count(*) FROM tenant_registry t
      WHERE t.db_host_id = h.id AND t.status <> 'deleted') AS tenants,
    (SELECT count(*) FROM warm_spares s
      WHERE s.db_host_id = h.id AND s.tenant_id IS NULL) AS spares";

fn host_from_row(r: &tokio_postgres::Row) -> Result<DbHost, RegistryError> {
    let name: String = r.get("name");
    // The CHECK constraints keep both columns to what HostTls accepts.
    let tls = HostTls::from_columns(r.get("sslmode"), r.get("sslrootcert")).map_err(|e| {
        RegistryError::Corrupt {
            table: "db_hosts",
            id: name.clone(),
            detail: e.to_string(),
        }
    })?;
    Ok(DbHost {
        id: r.get("id"),
        name,
        host: r.get("host"),
        // The CHECK constraint keeps the port within 1..=65535.
        port: r.get::<_, i32>("port") as u16,
        admin_user: r.get("admin_user"),
        capacity: r.get("capacity"),
        state: HostState::parse(r.get("state")),
        tenants: r.get("tenants"),
        spares: r.get("spares"),
        failures: r.get("failures"),
        retry_after: r.get("retry_after"),
        tls,
    })
}

fn valid_host_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 40
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Adds a host, or updates its address, capacity and TLS settings if the
/// name exists.
pub async fn upsert(client: &impl GenericClient, host: &NewHost) -> Result<DbHost, RegistryError> {
    insert(
        client,
        host,
        "DO UPDATE SET host = EXCLUDED.host, port = EXCLUDED.port,
                       admin_user = EXCLUDED.admin_user, capacity = EXCLUDED.capacity,
                       sslmode = EXCLUDED.sslmode, sslrootcert = EXCLUDED.sslrootcert,
                       updated_at = now()",
    )
    .await?;
    Ok(get(client, &host.name)
        .await?
        .expect("the host was just written"))
}

/// Validates a host name for `hosts add`.
pub fn check_name(name: &str) -> Result<(), BadHostName> {
    if valid_host_name(name) {
        Ok(())
    } else {
        Err(BadHostName(name.to_owned()))
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
                "INSERT INTO db_hosts (id, name, host, port, admin_user, capacity, sslmode, sslrootcert)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (name) {on_conflict}"
            ),
            &[
                &Uuid::now_v7(),
                &host.name,
                &host.host,
                &i32::from(host.port),
                &host.admin_user,
                &host.capacity,
                &host.tls.sslmode.map(|m| m.as_str()),
                &host.tls.sslrootcert.as_ref().map(|r| r.as_str().into_owned()),
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
    rows.iter().map(host_from_row).collect()
}

pub async fn get(client: &impl GenericClient, name: &str) -> Result<Option<DbHost>, RegistryError> {
    let row = client
        .query_opt(
            &format!("SELECT {HOST_COLUMNS} FROM db_hosts h WHERE h.name = $1"),
            &[&name],
        )
        .await?;
    row.as_ref().map(host_from_row).transpose()
}

pub async fn get_by_id(
    client: &impl GenericClient,
    id: Uuid,
) -> Result<Option<DbHost>, RegistryError> {
    // Cached: every pass that works on a host reads it.
    let stmt = client
        .prepare_cached(&format!(
            "SELECT {HOST_COLUMNS} FROM db_hosts h WHERE h.id = $1"
        ))
        .await?;
    let row = client.query_opt(&stmt, &[&id]).await?;
    row.as_ref().map(host_from_row).transpose()
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

/// Records that `host` could not be reached: its tenants wait `delay`, and
/// then one attempt at a time probes it.
pub async fn record_unreachable(
    client: &impl GenericClient,
    host: Uuid,
    error: &str,
    delay: Duration,
) -> Result<(), RegistryError> {
    client
        .execute(
            "UPDATE db_hosts
                SET failures = failures + 1, last_failure = $2,
                    retry_after = now() + make_interval(secs => $3), updated_at = now()
              WHERE id = $1",
            &[&host, &error, &delay.as_secs_f64()],
        )
        .await?;
    Ok(())
}

/// Records that `host` answered, ending its backoff (a write only when it
/// was in one).
pub async fn record_reachable(
    client: &impl GenericClient,
    host: Uuid,
) -> Result<(), RegistryError> {
    let stmt = client
        .prepare_cached(
            "UPDATE db_hosts SET failures = 0, retry_after = NULL, last_failure = NULL,
                                 updated_at = now()
              WHERE id = $1 AND failures > 0",
        )
        .await?;
    client.execute(&stmt, &[&host]).await?;
    Ok(())
}

/// Picks the accepting host with the most free capacity (spares count as
/// used), or None when every host is draining or full. Hosts in a backoff come last: a new tenant
/// goes to one that answers when there is one. The hosts are locked for the rest of the
/// transaction so that concurrent placements see each other's counts.
pub async fn place(
    tx: &deadpool_postgres::Transaction<'_>,
) -> Result<Option<DbHost>, RegistryError> {
    let lock = tx
        .prepare_cached("SELECT id FROM db_hosts WHERE state = 'accepting' ORDER BY id FOR UPDATE")
        .await?;
    tx.execute(&lock, &[]).await?;
    let pick = tx
        .prepare_cached(&format!(
            "SELECT * FROM (SELECT {HOST_COLUMNS} FROM db_hosts h WHERE h.state = 'accepting') x
              WHERE x.capacity - x.tenants - x.spares > 0
              ORDER BY coalesce(x.retry_after > now(), false),
                       x.capacity - x.tenants - x.spares DESC, x.name
              LIMIT 1"
        ))
        .await?;
    let row = tx.query_opt(&pick, &[]).await?;
    row.as_ref().map(host_from_row).transpose()
}
