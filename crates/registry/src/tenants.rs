//! Tenants as operators and other services see them: reading the registry,
//! the audit trail, operator actions, and a tenant's connection credentials.

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use serde::Serialize;
use serde_json::{json, Value};
use uuid::Uuid;

use model::{ClerkOrgId, DesiredState, PgIdent, TenantId, TenantStatus};

use crate::tls::HostTls;
use crate::RegistryError;

pub use crate::credentials::{
    credentials, password, CredentialsError, TenantCredentials, TenantCredentialsError,
};
pub use crate::listen::{CHANGED_CHANNEL, WAKE_CHANNEL};

/// The columns of [`Tenant`], read back by these names.
pub const TENANT_COLUMNS: &str = "t.id, t.clerk_org_id, t.slug, t.name, t.status, \
    t.desired_state, t.plan, t.db_host_id, h.name AS db_host, h.host AS db_host_address, \
    h.port AS db_host_port, h.sslmode AS db_host_sslmode, h.sslrootcert AS db_host_sslrootcert, \
    t.db_name, t.db_role, \
    t.template_version, t.attempts, t.next_attempt_at, t.last_error, t.source_updated_at, \
    t.created_at, t.updated_at, t.deleted_at, t.purge_after, t.metadata, t.db_password_enc, \
    t.privilege_model, t.limits_applied";

/// The privilege model the reconciler brings tenant databases to (see the
/// provisioner's `privileges` module). Tenants below it are upgraded.
///
/// - 0: the login role owned its database and could create anything.
/// - 1: a per-tenant owner role owned every object; the login role held
///   grants of its own inside the database.
/// - 2: the template owner owns every object in every clone, the rights
///   inside are PUBLIC's, and CONNECT on the database (the login role's
///   alone) is the boundary, so a clone needs no statement inside it.
pub const PRIVILEGE_MODEL: i32 = 2;

/// The first model whose login role owns nothing and whose password is
/// sealed bound to the tenant: below it, the tenant may have planted objects
/// and its password opens unbound.
pub const MODEL_LOGIN_OWNS_NOTHING: i32 = 1;

/// `FROM` clause matching [`TENANT_COLUMNS`].
pub const TENANT_FROM: &str = "tenant_registry t LEFT JOIN db_hosts h ON h.id = t.db_host_id";

/// One `tenant_registry` row, parsed: ids, states and names are typed, so
/// code that holds a `Tenant` never re-parses a column.
#[derive(Debug, Clone, Serialize)]
pub struct Tenant {
    pub id: TenantId,
    pub clerk_org_id: ClerkOrgId,
    pub slug: Option<String>,
    pub name: String,
    pub status: TenantStatus,
    pub desired_state: DesiredState,
    pub plan: String,
    /// Where the tenant lives, once it has been placed on a host.
    #[serde(flatten)]
    pub placement: Option<Placement>,
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
    /// The privilege model its database was last brought to.
    pub privilege_model: i32,
    /// The fingerprint of the plan limits last applied to its role.
    pub limits_applied: Option<String>,
    #[serde(skip)]
    pub db_password_enc: Option<Vec<u8>>,
}

/// A tenant's host, database and role. Placement writes all three at once,
/// so a row has either all or none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Placement {
    #[serde(rename = "db_host_id")]
    pub host_id: Uuid,
    /// The host's name in `db_hosts`.
    #[serde(rename = "db_host")]
    pub host: String,
    /// Where the host's server listens (from `db_hosts`).
    #[serde(skip)]
    pub address: String,
    #[serde(skip)]
    pub port: u16,
    /// The host's own TLS settings (from `db_hosts`); unset ones inherit
    /// database.url's.
    #[serde(skip)]
    pub tls: HostTls,
    #[serde(rename = "db_name")]
    pub database: PgIdent,
    #[serde(rename = "db_role")]
    pub role: PgIdent,
}

impl Tenant {
    /// Reads a row selected with [`TENANT_COLUMNS`], by column name.
    pub fn from_row(r: &tokio_postgres::Row) -> Result<Self, RegistryError> {
        let id = TenantId::from(r.try_get::<_, Uuid>("id")?);
        let corrupt = |detail: String| RegistryError::Corrupt {
            table: "tenant_registry",
            id: id.to_string(),
            detail,
        };
        let org: String = r.try_get("clerk_org_id")?;
        let clerk_org_id =
            ClerkOrgId::parse(&org).map_err(|e| corrupt(format!("clerk_org_id: {e}")))?;
        let status = r
            .try_get::<_, &str>("status")?
            .parse::<TenantStatus>()
            .map_err(|e| corrupt(e.to_string()))?;
        let desired_state = r
            .try_get::<_, &str>("desired_state")?
            .parse::<DesiredState>()
            .map_err(|e| corrupt(e.to_string()))?;
        let ident = |column: &str| -> Result<Option<PgIdent>, RegistryError> {
            match r.try_get::<_, Option<&str>>(column)? {
                None => Ok(None),
                Some(name) => PgIdent::parse(name)
                    .map(Some)
                    .ok_or_else(|| corrupt(format!("{column} {name:?} is not a valid name"))),
            }
        };
        let placement = match (
            r.try_get::<_, Option<Uuid>>("db_host_id")?,
            r.try_get::<_, Option<String>>("db_host")?,
            ident("db_name")?,
            ident("db_role")?,
        ) {
            (Some(host_id), Some(host), Some(database), Some(role)) => Some(Placement {
                host_id,
                host,
                address: r.try_get("db_host_address")?,
                port: u16::try_from(r.try_get::<_, i32>("db_host_port")?)
                    .map_err(|_| corrupt("db_hosts.port out of range".into()))?,
                tls: HostTls::from_columns(
                    r.try_get("db_host_sslmode")?,
                    r.try_get("db_host_sslrootcert")?,
                )
                .map_err(|e| corrupt(format!("db_hosts TLS settings: {e}")))?,
                database,
                role,
            }),
            (None, _, _, _) => None,
            _ => return Err(corrupt("db_host_id set without db_name and db_role".into())),
        };
        Ok(Tenant {
            id,
            clerk_org_id,
            slug: r.try_get("slug")?,
            name: r.try_get("name")?,
            status,
            desired_state,
            plan: r.try_get("plan")?,
            placement,
            template_version: r.try_get("template_version")?,
            attempts: r.try_get("attempts")?,
            next_attempt_at: r.try_get("next_attempt_at")?,
            last_error: r.try_get("last_error")?,
            source_updated_at: r.try_get("source_updated_at")?,
            created_at: r.try_get("created_at")?,
            updated_at: r.try_get("updated_at")?,
            deleted_at: r.try_get("deleted_at")?,
            purge_after: r.try_get("purge_after")?,
            metadata: r.try_get("metadata")?,
            privilege_model: r.try_get("privilege_model")?,
            limits_applied: r.try_get("limits_applied")?,
            db_password_enc: r.try_get("db_password_enc")?,
        })
    }

    /// Reads every row of a query selected with [`TENANT_COLUMNS`].
    pub fn from_rows(rows: &[tokio_postgres::Row]) -> Result<Vec<Self>, RegistryError> {
        rows.iter().map(Tenant::from_row).collect()
    }

    /// The host's name, once placed.
    pub fn db_host(&self) -> Option<&str> {
        self.placement.as_ref().map(|p| p.host.as_str())
    }

    /// The database's name, once placed.
    pub fn db_name(&self) -> Option<&str> {
        self.placement.as_ref().map(|p| p.database.as_str())
    }

    /// The login role's name, once placed.
    pub fn db_role(&self) -> Option<&str> {
        self.placement.as_ref().map(|p| p.role.as_str())
    }
}

/// How to look a tenant up.
#[derive(Debug, Clone)]
pub enum TenantKey<'a> {
    Id(TenantId),
    ClerkOrg(&'a ClerkOrgId),
    Slug(&'a str),
}

pub async fn get(
    client: &impl GenericClient,
    key: TenantKey<'_>,
) -> Result<Option<Tenant>, RegistryError> {
    // Prepared once per connection: look-ups are the hot path of the
    // internal API and of the resolver's cold start.
    let text = match &key {
        TenantKey::Id(_) => "",
        TenantKey::ClerkOrg(org) => org.as_str(),
        TenantKey::Slug(slug) => slug,
    };
    let (column, param): (&str, &(dyn tokio_postgres::types::ToSql + Sync)) = match &key {
        TenantKey::Id(id) => ("t.id", id.uuid_ref()),
        TenantKey::ClerkOrg(_) => ("t.clerk_org_id", &text),
        TenantKey::Slug(_) => ("t.slug", &text),
    };
    let stmt = client
        .prepare_cached(&format!(
            "SELECT {TENANT_COLUMNS} FROM {TENANT_FROM} WHERE {column} = $1"
        ))
        .await?;
    let row = client.query_opt(&stmt, &[param]).await?;
    row.as_ref().map(Tenant::from_row).transpose()
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
    Tenant::from_rows(&rows)
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

/// Wakes the reconcilers when the surrounding transaction commits. Caches
/// need no word of their own: the `tenant_registry_announce` trigger (V8)
/// announces every change to the row.
pub async fn wake_workers(client: &impl GenericClient) -> Result<(), RegistryError> {
    let stmt = client.prepare_cached("SELECT pg_notify($1, '')").await?;
    client.execute(&stmt, &[&WAKE_CHANNEL]).await?;
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
    // Lock, then read the whole row in a statement of its own: a locking
    // statement re-checks a concurrently updated row alone, so the host
    // columns it joined could be those of the version before.
    tx.query_opt(
        "SELECT id FROM tenant_registry WHERE id = $1 FOR UPDATE",
        &[&id.as_uuid()],
    )
    .await?
    .ok_or(ActionError::NotFound(id))?;
    let t = get(&tx, TenantKey::Id(id))
        .await?
        .ok_or(ActionError::NotFound(id))?;
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
    wake_workers(&tx).await?;
    let t = get(&tx, TenantKey::Id(id))
        .await?
        .ok_or(ActionError::NotFound(id))?;
    tx.commit().await?;
    Ok(t)
}

/// How many tenants are in each status (every status, zeros included).
pub async fn count_by_status(
    client: &impl GenericClient,
) -> Result<Vec<(TenantStatus, i64)>, RegistryError> {
    let rows = client
        .query(
            "SELECT status, count(*) AS n FROM tenant_registry GROUP BY status",
            &[],
        )
        .await?;
    Ok(TenantStatus::ALL
        .iter()
        .map(|s| {
            let n = rows
                .iter()
                .find(|r| r.get::<_, &str>("status") == s.as_str())
                .map_or(0, |r| r.get("n"));
            (*s, n)
        })
        .collect())
}

/// What the operator console's tenant table shows: optionally one status,
/// optionally a text matched against the organization id (exact or
/// prefix), the slug and the name (case-insensitive substring).
#[derive(Debug, Clone, Default)]
pub struct TenantSearch<'a> {
    pub status: Option<TenantStatus>,
    pub text: Option<&'a str>,
    /// The last (oldest) id of the previous page.
    pub before: Option<TenantId>,
}

/// A page of tenants, newest first (an operator looks for what just
/// happened), as [`TenantSearch`] filters them.
pub async fn search(
    client: &impl GenericClient,
    filter: &TenantSearch<'_>,
    limit: i64,
) -> Result<Vec<Tenant>, RegistryError> {
    // strpos, not LIKE: the text is the operator's, and %/_ in it are
    // meant literally.
    let sql = format!(
        "SELECT {TENANT_COLUMNS} FROM {TENANT_FROM}
          WHERE ($1::text IS NULL OR t.status = $1)
            AND ($2::uuid IS NULL OR t.id < $2)
            AND ($3::text IS NULL
                 OR starts_with(t.clerk_org_id, $3)
                 OR strpos(lower(coalesce(t.slug, '')), lower($3)) > 0
                 OR strpos(lower(t.name), lower($3)) > 0)
          ORDER BY t.id DESC LIMIT $4"
    );
    let rows = client
        .query(
            &sql,
            &[
                &filter.status.map(|s| s.as_str()),
                &filter.before.map(|a| a.as_uuid()),
                &filter.text,
                &limit,
            ],
        )
        .await?;
    Tenant::from_rows(&rows)
}

/// Webhook-to-active latency of the tenants that first became active in one
/// hour: the time from the row's creation (when the organization's webhook
/// was applied) to its first `active` event.
#[derive(Debug, Clone, Serialize)]
pub struct ActivationLatency {
    pub hour: DateTime<Utc>,
    pub tenants: i64,
    pub p50_seconds: f64,
    pub p99_seconds: f64,
}

/// [`ActivationLatency`] per hour over the last `hours`, oldest first; hours
/// in which no tenant became active are absent.
pub async fn activation_latency(
    client: &impl GenericClient,
    hours: i32,
) -> Result<Vec<ActivationLatency>, RegistryError> {
    let rows = client
        .query(
            "WITH first_active AS (
                 SELECT e.tenant_id, min(e.at) AS at FROM tenant_events e
                  WHERE e.to_status = 'active'
                    AND e.at > now() - make_interval(hours => $1)
                  GROUP BY e.tenant_id)
             SELECT date_trunc('hour', f.at) AS hour, count(*) AS tenants,
                    percentile_cont(0.5) WITHIN GROUP
                        (ORDER BY extract(epoch FROM f.at - t.created_at)::float8) AS p50,
                    percentile_cont(0.99) WITHIN GROUP
                        (ORDER BY extract(epoch FROM f.at - t.created_at)::float8) AS p99
               FROM first_active f JOIN tenant_registry t ON t.id = f.tenant_id
              WHERE NOT EXISTS (SELECT 1 FROM tenant_events p
                                 WHERE p.tenant_id = f.tenant_id AND p.to_status = 'active'
                                   AND p.at <= now() - make_interval(hours => $1))
              GROUP BY 1 ORDER BY 1",
            &[&hours],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| ActivationLatency {
            hour: r.get("hour"),
            tenants: r.get("tenants"),
            p50_seconds: r.get("p50"),
            p99_seconds: r.get("p99"),
        })
        .collect())
}

/// Tenants whose row changed at or after `since`, oldest change first, at
/// most `limit`: what a live page missed between rendering and listening.
pub async fn changed_since(
    client: &impl GenericClient,
    since: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<Tenant>, RegistryError> {
    let rows = client
        .query(
            &format!(
                "SELECT {TENANT_COLUMNS} FROM {TENANT_FROM}
                  WHERE t.updated_at >= $1 ORDER BY t.updated_at, t.id LIMIT $2"
            ),
            &[&since, &limit],
        )
        .await?;
    Tenant::from_rows(&rows)
}

/// The organizations of every tenant not marked for deletion.
pub async fn live_organizations(
    client: &impl GenericClient,
) -> Result<Vec<ClerkOrgId>, RegistryError> {
    let rows = client
        .query(
            "SELECT clerk_org_id FROM tenant_registry
              WHERE desired_state <> 'deleted' ORDER BY clerk_org_id",
            &[],
        )
        .await?;
    rows.iter()
        .map(|r| {
            let org: &str = r.get("clerk_org_id");
            ClerkOrgId::parse(org).map_err(|e| RegistryError::Corrupt {
                table: "tenant_registry",
                id: org.to_owned(),
                detail: e.to_string(),
            })
        })
        .collect()
}

/// What the Clerk write-back has to do for a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteBack {
    /// Active and not written yet: put its id and slug into Clerk.
    Write,
    /// Marked for deletion after it was written: take them out again.
    Erase,
}

/// Tenants the write-back has work for, oldest first.
pub async fn awaiting_write_back(
    client: &impl GenericClient,
    limit: i64,
) -> Result<Vec<(Tenant, WriteBack)>, RegistryError> {
    let rows = client
        .query(
            &format!(
                "SELECT {TENANT_COLUMNS}, t.desired_state = 'active' AS write FROM {TENANT_FROM}
                  WHERE (t.status = 'active' AND t.desired_state = 'active'
                         AND NOT t.metadata ? 'clerk_written_at')
                     OR (t.desired_state = 'deleted' AND t.metadata ? 'clerk_written_at')
                  ORDER BY t.id LIMIT $1"
            ),
            &[&limit],
        )
        .await?;
    rows.iter()
        .map(|r| {
            let action = if r.get::<_, bool>("write") {
                WriteBack::Write
            } else {
                WriteBack::Erase
            };
            Ok((Tenant::from_row(r)?, action))
        })
        .collect()
}

/// Records that the write-back did `action` for the tenant.
pub async fn mark_written_back(
    client: &impl GenericClient,
    tenant: TenantId,
    action: WriteBack,
) -> Result<(), RegistryError> {
    let sql = match action {
        WriteBack::Write => {
            "UPDATE tenant_registry
                SET metadata = metadata || jsonb_build_object('clerk_written_at', now())
              WHERE id = $1"
        }
        WriteBack::Erase => {
            "UPDATE tenant_registry
                SET metadata = (metadata - 'clerk_written_at')
                               || jsonb_build_object('clerk_erased_at', now())
              WHERE id = $1"
        }
    };
    client.execute(sql, &[tenant.uuid_ref()]).await?;
    Ok(())
}

/// Every tenant, with how long it has sat in a transitional status past
/// `stuck_after` (None when it is not stuck): what the doctor reads.
pub async fn with_stuck_time(
    client: &impl GenericClient,
    stuck_after: std::time::Duration,
) -> Result<Vec<(Tenant, Option<f64>)>, RegistryError> {
    let rows = client
        .query(
            &format!(
                "SELECT {TENANT_COLUMNS},
                        CASE WHEN t.status IN ('pending', 'provisioning', 'suspending', 'deleting')
                              AND NOT (t.status = 'deleting' AND t.purge_after > now())
                              AND t.updated_at < now() - make_interval(secs => $1)
                             THEN extract(epoch FROM now() - t.updated_at)::float8 END AS stuck_for
                   FROM {TENANT_FROM} ORDER BY t.id"
            ),
            &[&stuck_after.as_secs_f64()],
        )
        .await?;
    rows.iter()
        .map(|r| Ok((Tenant::from_row(r)?, r.get("stuck_for"))))
        .collect()
}

/// Active tenants whose template version is behind `latest`, or just `only`
/// (if it is behind), oldest first.
pub async fn behind_template(
    client: &impl GenericClient,
    latest: i32,
    only: Option<TenantId>,
) -> Result<Vec<Tenant>, RegistryError> {
    let sql = format!(
        "SELECT {TENANT_COLUMNS} FROM {TENANT_FROM}
          WHERE t.status = 'active' AND coalesce(t.template_version, 0) < $1
            AND ($2::uuid IS NULL OR t.id = $2)
          ORDER BY t.id"
    );
    let rows = client
        .query(&sql, &[&latest, &only.map(|t| t.as_uuid())])
        .await?;
    Tenant::from_rows(&rows)
}

/// Records the template version a tenant's database now holds.
pub async fn set_template_version(
    client: &impl GenericClient,
    tenant: TenantId,
    version: i32,
) -> Result<(), RegistryError> {
    client
        .execute(
            "UPDATE tenant_registry SET template_version = $2, updated_at = now() WHERE id = $1",
            &[tenant.uuid_ref(), &version],
        )
        .await?;
    Ok(())
}

/// True while some tenant that should be active has no database yet
/// (pending or provisioning) and is due for an attempt: the warm pool's
/// refill waits for them, so that their clones do not queue behind spares.
pub async fn any_awaiting_database(client: &impl GenericClient) -> Result<bool, RegistryError> {
    Ok(client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM tenant_registry
                             WHERE desired_state = 'active'
                               AND status IN ('pending', 'provisioning')
                               AND next_attempt_at <= now())",
            &[],
        )
        .await?
        .get(0))
}
