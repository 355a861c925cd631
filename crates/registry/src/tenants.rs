//! Tenants as operators and other services see them: reading the registry,
//! the audit trail, operator actions, and a tenant's connection credentials.

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use serde::Serialize;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::crypto::{CryptoError, PasswordCipher};
use crate::ids::TenantId;
use crate::status::{DesiredState, TenantStatus};
use crate::RegistryError;

/// Woken workers re-scan the registry; payload-free.
pub const WAKE_CHANNEL: &str = "tenant_plane_reconcile";
/// A tenant's status or desired state changed; the payload is its id, so
/// resolver caches can drop it.
pub const CHANGED_CHANNEL: &str = "tenant_plane_tenant_changed";

/// The columns of [`Tenant`], in order.
pub(crate) const TENANT_COLUMNS: &str = "t.id, t.clerk_org_id, t.slug, t.name, t.status, \
    t.desired_state, t.plan, t.db_host_id, h.name, t.db_name, t.db_role, t.template_version, \
    t.attempts, t.next_attempt_at, t.last_error, t.source_updated_at, t.created_at, \
    t.updated_at, t.deleted_at, t.purge_after, t.metadata, t.db_password_enc";

/// `FROM` clause matching [`TENANT_COLUMNS`].
pub(crate) const TENANT_FROM: &str =
    "tenant_registry t LEFT JOIN db_hosts h ON h.id = t.db_host_id";

/// One `tenant_registry` row.
#[derive(Debug, Clone, Serialize)]
pub struct Tenant {
    pub id: TenantId,
    pub clerk_org_id: String,
    pub slug: Option<String>,
    pub name: String,
    pub status: TenantStatus,
    pub desired_state: DesiredState,
    pub plan: String,
    pub db_host_id: Option<Uuid>,
    pub db_host: Option<String>,
    pub db_name: Option<String>,
    pub db_role: Option<String>,
    pub template_version: Option<i32>,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_error: Option<String>,
    pub source_updated_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
    pub purge_after: Option<DateTime<Utc>>,
    pub metadata: Value,
    #[serde(skip)]
    pub(crate) db_password_enc: Option<Vec<u8>>,
}

impl Tenant {
    pub(crate) fn from_row(r: &tokio_postgres::Row) -> Self {
        Tenant {
            id: TenantId::from(r.get::<_, Uuid>(0)),
            clerk_org_id: r.get(1),
            slug: r.get(2),
            name: r.get(3),
            // The CHECK constraints guarantee these parse.
            status: r.get::<_, &str>(4).parse().unwrap_or(TenantStatus::Failed),
            desired_state: r.get::<_, &str>(5).parse().unwrap_or(DesiredState::Deleted),
            plan: r.get(6),
            db_host_id: r.get(7),
            db_host: r.get(8),
            db_name: r.get(9),
            db_role: r.get(10),
            template_version: r.get(11),
            attempts: r.get(12),
            next_attempt_at: r.get(13),
            last_error: r.get(14),
            source_updated_at: r.get(15),
            created_at: r.get(16),
            updated_at: r.get(17),
            deleted_at: r.get(18),
            purge_after: r.get(19),
            metadata: r.get(20),
            db_password_enc: r.get(21),
        }
    }
}

/// How to look a tenant up.
#[derive(Debug, Clone)]
pub enum TenantKey<'a> {
    Id(TenantId),
    ClerkOrg(&'a str),
    Slug(&'a str),
}

pub async fn get(
    client: &impl GenericClient,
    key: TenantKey<'_>,
) -> Result<Option<Tenant>, RegistryError> {
    // Prepared once per connection: look-ups are the hot path of the
    // internal API and of the resolver's cold start.
    let (column, param): (&str, &(dyn tokio_postgres::types::ToSql + Sync)) = match &key {
        TenantKey::Id(id) => ("t.id", id.uuid_ref()),
        TenantKey::ClerkOrg(org) => ("t.clerk_org_id", org),
        TenantKey::Slug(slug) => ("t.slug", slug),
    };
    let stmt = client
        .prepare_cached(&format!(
            "SELECT {TENANT_COLUMNS} FROM {TENANT_FROM} WHERE {column} = $1"
        ))
        .await?;
    let row = client.query_opt(&stmt, &[param]).await?;
    Ok(row.as_ref().map(Tenant::from_row))
}

/// A page of tenants, oldest first, optionally of one status. `after` is the
/// last id of the previous page (ids are UUID v7, so they sort by creation).
pub async fn list(
    client: &impl GenericClient,
    status: Option<TenantStatus>,
    after: Option<TenantId>,
    limit: i64,
) -> Result<Vec<Tenant>, RegistryError> {
    let sql = format!(
        "SELECT {TENANT_COLUMNS} FROM {TENANT_FROM}
          WHERE ($1::text IS NULL OR t.status = $1)
            AND ($2::uuid IS NULL OR t.id > $2)
          ORDER BY t.id LIMIT $3"
    );
    let rows = client
        .query(
            &sql,
            &[
                &status.map(|s| s.as_str()),
                &after.map(|a| a.as_uuid()),
                &limit,
            ],
        )
        .await?;
    Ok(rows.iter().map(Tenant::from_row).collect())
}

/// One entry of the `tenant_events` audit.
#[derive(Debug, Clone, Serialize)]
pub struct TenantEvent {
    pub at: DateTime<Utc>,
    pub actor: String,
    pub kind: String,
    pub from_status: Option<String>,
    pub to_status: Option<String>,
    pub from_desired: Option<String>,
    pub to_desired: Option<String>,
    pub detail: Value,
}

pub async fn events(
    client: &impl GenericClient,
    tenant: TenantId,
) -> Result<Vec<TenantEvent>, RegistryError> {
    let rows = client
        .query(
            "SELECT at, actor, kind, from_status, to_status, from_desired, to_desired, detail
               FROM tenant_events WHERE tenant_id = $1 ORDER BY id",
            &[&tenant.as_uuid()],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| TenantEvent {
            at: r.get(0),
            actor: r.get(1),
            kind: r.get(2),
            from_status: r.get(3),
            to_status: r.get(4),
            from_desired: r.get(5),
            to_desired: r.get(6),
            detail: r.get(7),
        })
        .collect())
}

/// Appends to the `tenant_events` audit.
pub async fn record_event(
    client: &impl GenericClient,
    tenant: TenantId,
    actor: &str,
    kind: &str,
    from: Option<(TenantStatus, DesiredState)>,
    to: (TenantStatus, DesiredState),
    detail: Value,
) -> Result<(), RegistryError> {
    let stmt = client
        .prepare_cached(
            "INSERT INTO tenant_events
                 (tenant_id, actor, kind, from_status, from_desired, to_status, to_desired, detail)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .await?;
    client
        .execute(
            &stmt,
            &[
                &tenant.as_uuid(),
                &actor,
                &kind,
                &from.map(|(s, _)| s.as_str()),
                &from.map(|(_, d)| d.as_str()),
                &to.0.as_str(),
                &to.1.as_str(),
                &detail,
            ],
        )
        .await?;
    Ok(())
}

/// Wakes the reconcilers and tells resolvers that `tenant` changed; both
/// are delivered when the surrounding transaction commits.
pub async fn notify_changed(
    client: &impl GenericClient,
    tenant: TenantId,
) -> Result<(), RegistryError> {
    let stmt = client
        .prepare_cached("SELECT pg_notify($1, ''), pg_notify($2, $3)")
        .await?;
    client
        .execute(
            &stmt,
            &[&WAKE_CHANNEL, &CHANGED_CHANNEL, &tenant.to_string()],
        )
        .await?;
    Ok(())
}

/// An operator action on a tenant's desired state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Suspend,
    Resume,
    Delete,
    Restore,
    Retry,
}

impl Action {
    pub fn as_str(&self) -> &'static str {
        match self {
            Action::Suspend => "suspend",
            Action::Resume => "resume",
            Action::Delete => "delete",
            Action::Restore => "restore",
            Action::Retry => "retry",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error("no tenant with id {0}")]
    NotFound(TenantId),
    #[error("cannot {action} tenant {tenant}: {reason}")]
    Conflict {
        action: &'static str,
        tenant: TenantId,
        reason: String,
    },
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

impl From<tokio_postgres::Error> for ActionError {
    fn from(e: tokio_postgres::Error) -> Self {
        ActionError::Registry(e.into())
    }
}

/// Applies an operator action, recording who did it. The reconciler does
/// the work; this only moves the goal (or, for retry, clears the failure).
pub async fn act(
    client: &mut deadpool_postgres::Client,
    id: TenantId,
    action: Action,
    actor: &str,
) -> Result<Tenant, ActionError> {
    let tx = client.transaction().await?;
    let sql = format!("SELECT {TENANT_COLUMNS} FROM {TENANT_FROM} WHERE t.id = $1 FOR UPDATE OF t");
    let row = tx
        .query_opt(&sql, &[&id.as_uuid()])
        .await?
        .ok_or(ActionError::NotFound(id))?;
    let t = Tenant::from_row(&row);
    let conflict = |reason: &str| ActionError::Conflict {
        action: action.as_str(),
        tenant: id,
        reason: reason.to_owned(),
    };
    use DesiredState as D;
    use TenantStatus as S;
    let (status, desired) = match action {
        Action::Suspend => match t.desired_state {
            D::Deleted => return Err(conflict("it is deleted")),
            _ => (t.status, D::Suspended),
        },
        Action::Resume => match t.desired_state {
            D::Deleted => return Err(conflict("it is deleted; use restore")),
            _ => (t.status, D::Active),
        },
        Action::Delete => (t.status, D::Deleted),
        Action::Restore => {
            if t.desired_state != D::Deleted {
                return Err(conflict("it is not deleted"));
            }
            if t.status == S::Deleted {
                return Err(conflict(
                    "its database was already purged after the retention period",
                ));
            }
            (t.status, D::Active)
        }
        Action::Retry => {
            if t.status != S::Failed {
                return Err(conflict("it has not failed"));
            }
            (S::Pending, t.desired_state)
        }
    };
    tx.execute(
        "UPDATE tenant_registry
            SET status = $2, desired_state = $3, next_attempt_at = now(), updated_at = now(),
                attempts = CASE WHEN $4 THEN 0 ELSE attempts END,
                purge_after = CASE WHEN $3 = 'deleted' THEN purge_after END
          WHERE id = $1",
        &[
            &id.as_uuid(),
            &status.as_str(),
            &desired.as_str(),
            &(action == Action::Retry),
        ],
    )
    .await?;
    record_event(
        &tx,
        id,
        actor,
        action.as_str(),
        Some((t.status, t.desired_state)),
        (status, desired),
        json!({}),
    )
    .await?;
    notify_changed(&tx, id).await?;
    let row = tx.query_one(&sql, &[&id.as_uuid()]).await?;
    tx.commit().await?;
    Ok(Tenant::from_row(&row))
}

/// How to connect to a tenant's database as the tenant's own role.
#[derive(Clone)]
pub struct TenantCredentials {
    pub host: String,
    pub port: u16,
    pub dbname: String,
    pub role: String,
    pub password: String,
}

impl std::fmt::Debug for TenantCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantCredentials")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("dbname", &self.dbname)
            .field("role", &self.role)
            .field("password", &"[redacted]")
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("tenant {0} has no database yet")]
    NotPlaced(TenantId),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// The tenant's connection parameters, with its password decrypted.
pub async fn credentials(
    client: &impl GenericClient,
    cipher: &PasswordCipher,
    tenant: &Tenant,
) -> Result<TenantCredentials, CredentialsError> {
    let (Some(host_id), Some(dbname), Some(role), Some(sealed)) = (
        tenant.db_host_id,
        &tenant.db_name,
        &tenant.db_role,
        &tenant.db_password_enc,
    ) else {
        return Err(CredentialsError::NotPlaced(tenant.id));
    };
    let host = crate::hosts::get_by_id(client, host_id)
        .await?
        .ok_or(CredentialsError::NotPlaced(tenant.id))?;
    Ok(TenantCredentials {
        host: host.host,
        port: host.port,
        dbname: dbname.clone(),
        role: role.clone(),
        password: cipher.open(sealed)?,
    })
}
