//! Template rollout: bringing existing tenant databases to the newest
//! template version.
//!
//! Each tenant database carries its own refinery history (cloned from the
//! template), so a tenant's pending migrations are exactly those its history
//! lacks: an interrupted run resumes without re-applying anything. The
//! registry's `template_version` is advanced only after the tenant's
//! migrations committed, and read back from the tenant's own history.

use deadpool_postgres::Pool;
use model::{ClerkOrgId, TenantId};
use registry::hosts;
use registry::tenants::{self, Tenant};
use registry::RegistryError;
use serde::Serialize;
use serde_json::json;

use crate::connector::{HostConnector, HostError};
use crate::host_ops::{self, HostSqlError};
use crate::template::Templates;

#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Host(#[from] HostError),
    #[error("migration failed: {0}")]
    Migrate(#[from] refinery::Error),
    #[error(transparent)]
    Sql(#[from] HostSqlError),
    #[error("tenant row is inconsistent: {0}")]
    Inconsistent(&'static str),
}

/// What happened to one tenant.
#[derive(Debug, Clone, Serialize)]
pub struct Migrated {
    pub tenant: TenantId,
    pub clerk_org_id: ClerkOrgId,
    pub from: i32,
    pub to: i32,
    pub applied: Vec<i32>,
}

/// Active tenants behind `latest`, or just `only` (if it is behind).
pub async fn behind(
    control: &Pool,
    latest: i32,
    only: Option<TenantId>,
) -> Result<Vec<Tenant>, RegistryError> {
    tenants::behind_template(&control.get().await?, latest, only).await
}

/// The first half of a tenant's rollout: applies its pending template
/// migrations and grants the tenant role the new objects. Nothing is recorded
/// in the registry yet; [`record`] does that once this has committed.
pub async fn apply(
    control: &Pool,
    connector: &HostConnector,
    templates: &Templates,
    tenant: &Tenant,
) -> Result<Migrated, RolloutError> {
    let p = tenant
        .placement
        .as_ref()
        .ok_or(RolloutError::Inconsistent("active tenant without a host"))?;
    let client = control.get().await.map_err(RegistryError::from)?;
    let host = hosts::get_by_id(&client, p.host_id)
        .await?
        .ok_or(RolloutError::Inconsistent("db_host_id names no host"))?;
    drop(client);
    let mut tenant_db = connector.connect(&host, p.database.as_str()).await?;
    let applied = templates.migrate(&mut tenant_db).await?;
    // Objects created by the migrations belong to the admin; the tenant role
    // gets the same rights as on the objects it was cloned with.
    host_ops::grant_objects(&tenant_db, &p.role).await?;
    let to = host_ops::template_version_of(&tenant_db).await?;
    Ok(Migrated {
        tenant: tenant.id,
        clerk_org_id: tenant.clerk_org_id.clone(),
        from: tenant.template_version.unwrap_or(0),
        to,
        applied,
    })
}

/// The second half: records the version the tenant's own history shows.
pub async fn record(control: &Pool, tenant: &Tenant, m: &Migrated) -> Result<(), RegistryError> {
    let client = control.get().await?;
    tenants::set_template_version(&client, tenant.id, m.to).await?;
    tenants::record_event(
        &client,
        tenant.id,
        "rollout",
        "template_migrated",
        Some((tenant.status, tenant.desired_state)),
        (tenant.status, tenant.desired_state),
        json!({ "from": m.from, "to": m.to, "applied": m.applied }),
    )
    .await
}
