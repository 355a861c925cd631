//! The warm pool's ledger (`warm_spares`): spare tenant databases cloned
//! ahead on each host, and their claims by new tenants. What runs on the
//! hosts is the provisioner's `warm_pool` module; every query on the table
//! is here.
//!
//! A spare is `building` under its builder's lease, `ready` once complete,
//! `claimed` by one tenant (in the same transaction as the tenant's own
//! claim, so two workers never take the same spare), and deleted once the
//! claim's rename is recorded; `retiring` while it is dropped.

use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::{GenericClient, Transaction};
use serde::Serialize;
use uuid::Uuid;

use model::{PgIdent, TenantId};

use crate::tenants::PRIVILEGE_MODEL;
use crate::RegistryError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SpareState {
    Building,
    Ready,
    Claimed,
    Retiring,
}

impl SpareState {
    pub fn as_str(self) -> &'static str {
        match self {
            SpareState::Building => "building",
            SpareState::Ready => "ready",
            SpareState::Claimed => "claimed",
            SpareState::Retiring => "retiring",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "building" => SpareState::Building,
            "ready" => SpareState::Ready,
            "claimed" => SpareState::Claimed,
            "retiring" => SpareState::Retiring,
            _ => return None,
        })
    }
}

/// One `warm_spares` row.
#[derive(Debug, Clone, Serialize)]
pub struct Spare {
    pub id: Uuid,
    pub host_id: Uuid,
    /// Its database and login role; the owner role is this and `_owner`.
    pub name: PgIdent,
    pub state: SpareState,
    pub template_version: Option<i32>,
    pub tenant: Option<TenantId>,
    pub created_at: DateTime<Utc>,
    /// The login role's password, sealed to the spare (id and name).
    #[serde(skip)]
    pub password_enc: Option<Vec<u8>>,
}

const COLUMNS: &str = "s.id, s.db_host_id, s.name, s.state, s.template_version, s.tenant_id, \
     s.created_at, s.password_enc";

fn from_row(r: &tokio_postgres::Row) -> Result<Spare, RegistryError> {
    let id: Uuid = r.get("id");
    let corrupt = |detail: String| RegistryError::Corrupt {
        table: "warm_spares",
        id: id.to_string(),
        detail,
    };
    let name: String = r.get("name");
    let state: String = r.get("state");
    Ok(Spare {
        id,
        host_id: r.get("db_host_id"),
        name: PgIdent::parse(&name).ok_or_else(|| corrupt(format!("bad name {name:?}")))?,
        state: SpareState::parse(&state).ok_or_else(|| corrupt(format!("bad state {state:?}")))?,
        template_version: r.get("template_version"),
        tenant: r.get::<_, Option<Uuid>>("tenant_id").map(TenantId::from),
        created_at: r.get("created_at"),
        password_enc: r.get("password_enc"),
    })
}

/// The host's current template version, as `template_versions` records it.
const CURRENT_VERSION: &str = "coalesce((SELECT max(v.version) FROM template_versions v
                                         WHERE v.db_host_id = s.db_host_id), 0)";

/// Records a new spare of `host` as `building` under a lease, if the host
/// is accepting, answering, has free capacity and holds fewer than `target`
/// spares. Hosts are serialised by an advisory lock for the rest of `tx`, so
/// concurrent refills never overshoot the target. `name` is derived from
/// `id` by the caller (the prefix is its setting).
pub async fn begin_build(
    tx: &Transaction<'_>,
    host: Uuid,
    id: Uuid,
    name: &PgIdent,
    target: usize,
    lease: Duration,
) -> Result<bool, RegistryError> {
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('tenant_plane_warm_pool'), hashtext($1::uuid::text))",
        &[&host],
    )
    .await?;
    let inserted = tx
        .execute(
            "INSERT INTO warm_spares (id, db_host_id, name, state, lease_expires_at, privilege_model)
             SELECT $1, h.id, $3, 'building', now() + make_interval(secs => $4), $6
               FROM db_hosts h
              WHERE h.id = $2 AND h.state = 'accepting'
                AND coalesce(h.retry_after <= now(), true)
                AND h.capacity
                    - (SELECT count(*) FROM tenant_registry t
                        WHERE t.db_host_id = h.id AND t.status <> 'deleted')
                    - (SELECT count(*) FROM warm_spares s
                        WHERE s.db_host_id = h.id AND s.tenant_id IS NULL) > 0
                AND (SELECT count(*) FROM warm_spares s
                      WHERE s.db_host_id = h.id AND s.state IN ('building', 'ready')) < $5",
            &[
                &id,
                &host,
                &name.as_str(),
                &lease.as_secs_f64(),
                &(target as i64),
                &PRIVILEGE_MODEL,
            ],
        )
        .await?;
    Ok(inserted == 1)
}

/// Marks a built spare `ready` at `version` with its login role's sealed
/// password; false if it is no longer ours to finish (its lease lapsed and
/// it was taken for retiring).
pub async fn finish_build(
    client: &impl GenericClient,
    id: Uuid,
    version: i32,
    password_enc: &[u8],
) -> Result<bool, RegistryError> {
    Ok(client
        .execute(
            "UPDATE warm_spares
                SET state = 'ready', template_version = $2, password_enc = $3,
                    ready_at = now(), lease_expires_at = NULL
              WHERE id = $1 AND state = 'building'",
            &[&id, &version, &password_enc],
        )
        .await?
        == 1)
}

/// Claims for `tenant` the oldest ready spare at its host's current
/// template version and the current privilege model, on an accepting host
/// that is not backing off; `None` when there is none. Skips spares another transaction is claiming.
pub async fn take(tx: &Transaction<'_>, tenant: TenantId) -> Result<Option<Spare>, RegistryError> {
    let stmt = tx
        .prepare_cached(&format!(
            "UPDATE warm_spares s
                    SET state = 'claimed', tenant_id = $1, claimed_at = now()
                  WHERE s.id = (
                        SELECT s.id FROM warm_spares s JOIN db_hosts h ON h.id = s.db_host_id
                         WHERE s.state = 'ready' AND h.state = 'accepting'
                           AND coalesce(h.retry_after <= now(), true)
                           AND s.template_version = {CURRENT_VERSION}
                           AND s.privilege_model = $2
                         ORDER BY s.ready_at, s.id
                         LIMIT 1
                           FOR UPDATE OF s SKIP LOCKED)
                RETURNING {COLUMNS}"
        ))
        .await?;
    let row = tx
        .query_opt(&stmt, &[&tenant.as_uuid(), &PRIVILEGE_MODEL])
        .await?;
    row.as_ref().map(from_row).transpose()
}

/// The spare `tenant` claimed and has not finished taking over, if any.
pub async fn claimed_by(
    client: &impl GenericClient,
    tenant: TenantId,
) -> Result<Option<Spare>, RegistryError> {
    let stmt = client
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM warm_spares s WHERE s.tenant_id = $1"
        ))
        .await?;
    let row = client.query_opt(&stmt, &[&tenant.as_uuid()]).await?;
    row.as_ref().map(from_row).transpose()
}

/// Forgets the spare `tenant` claimed: its database and roles are the
/// tenant's now (or were dropped with the tenant's).
pub async fn forget_claim(
    client: &impl GenericClient,
    tenant: TenantId,
) -> Result<(), RegistryError> {
    let stmt = client
        .prepare_cached("DELETE FROM warm_spares WHERE tenant_id = $1")
        .await?;
    client.execute(&stmt, &[&tenant.as_uuid()]).await?;
    Ok(())
}

/// Takes one spare that must go, as `retiring` under a lease: a build or a
/// retirement whose lease lapsed (its worker died), a ready spare behind its
/// host's template or the privilege model or on a host that is draining, or
/// a ready spare beyond `target` for its host (the newest go first).
pub async fn next_to_retire(
    tx: &Transaction<'_>,
    target: usize,
    lease: Duration,
) -> Result<Option<Spare>, RegistryError> {
    let row = tx
        .query_opt(
            &format!(
                "UPDATE warm_spares s
                    SET state = 'retiring', lease_expires_at = now() + make_interval(secs => $2)
                  WHERE s.id = (
                        SELECT s.id FROM warm_spares s JOIN db_hosts h ON h.id = s.db_host_id
                         WHERE (s.state IN ('building', 'retiring') AND s.lease_expires_at < now())
                            OR (s.state = 'ready'
                                AND (h.state <> 'accepting'
                                     OR s.template_version < {CURRENT_VERSION}
                                     OR s.privilege_model < $3
                                     OR (SELECT count(*) FROM warm_spares o
                                          WHERE o.db_host_id = s.db_host_id
                                            AND o.state IN ('building', 'ready')
                                            AND (o.created_at, o.id) <= (s.created_at, s.id)) > $1))
                         ORDER BY s.created_at DESC
                         LIMIT 1
                           FOR UPDATE OF s SKIP LOCKED)
                RETURNING {COLUMNS}"
            ),
            &[&(target as i64), &lease.as_secs_f64(), &PRIVILEGE_MODEL],
        )
        .await?;
    row.as_ref().map(from_row).transpose()
}

/// Deletes a spare's row once its database and roles are gone.
pub async fn delete(client: &impl GenericClient, id: Uuid) -> Result<(), RegistryError> {
    client
        .execute("DELETE FROM warm_spares WHERE id = $1", &[&id])
        .await?;
    Ok(())
}

/// Every spare, oldest first.
pub async fn list(client: &impl GenericClient) -> Result<Vec<Spare>, RegistryError> {
    client
        .query(
            &format!("SELECT {COLUMNS} FROM warm_spares s ORDER BY s.created_at, s.id"),
            &[],
        )
        .await?
        .iter()
        .map(from_row)
        .collect()
}

/// Spares by host name and state, for `/metrics`.
pub async fn count_by_host(
    client: &impl GenericClient,
) -> Result<Vec<(String, SpareState, i64)>, RegistryError> {
    client
        .query(
            "SELECT h.name, s.state, count(*) AS n
               FROM warm_spares s JOIN db_hosts h ON h.id = s.db_host_id
              GROUP BY h.name, s.state ORDER BY h.name, s.state",
            &[],
        )
        .await?
        .iter()
        .map(|r| {
            let state: String = r.get("state");
            let state = SpareState::parse(&state).ok_or_else(|| RegistryError::Corrupt {
                table: "warm_spares",
                id: r.get("name"),
                detail: format!("bad state {state:?}"),
            })?;
            Ok((r.get("name"), state, r.get("n")))
        })
        .collect()
}
