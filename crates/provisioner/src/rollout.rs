//! Template rollout: bringing existing tenant databases to the newest
//! template version.
//!
//! Each tenant database carries its own refinery history (cloned from the
//! template), so a tenant's pending migrations are exactly those its history
//! lacks: an interrupted run resumes without re-applying anything. The
//! registry's `template_version` is advanced only after the tenant's
//! migrations committed, and read back from the tenant's own history.

use deadpool_postgres::Pool;
use model::{ClerkOrgId, TenantId, TenantPrefix};
use registry::hosts;
use registry::tenants::{self, Tenant};
use registry::RegistryError;
use serde::Serialize;
use serde_json::json;

use crate::connector::{HostConnector, HostError};
use crate::host_ops::HostSqlError;
use crate::privileges;
use crate::template::{MigrateError, Templates};

#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Host(#[from] HostError),
    #[error("migration failed: {0}")]
    Migrate(#[from] MigrateError),
    #[error(
        "the registry names database {database:?} and role {role:?}, but this tenant's are \
         {expected:?}; refusing to touch them"
    )]
    ForeignNames {
        database: String,
        role: String,
        expected: String,
    },
    #[error("tenant {0} is not on the current privilege model yet; the reconciler moves it first")]
    NotOnModel(TenantId),
    #[error("the tenant database holds code of the tenant's own ({0}); not migrating it")]
    TenantCode(String),
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
    prefix: &TenantPrefix,
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
    let expected = prefix.tenant_ident(tenant.id);
    if p.database != expected || p.role != expected {
        return Err(RolloutError::ForeignNames {
            database: p.database.as_str().to_owned(),
            role: p.role.as_str().to_owned(),
            expected: expected.as_str().to_owned(),
        });
    }
    if tenant.privilege_model < tenants::PRIVILEGE_MODEL {
        return Err(RolloutError::NotOnModel(tenant.id));
    }
    // Every object is the template owner's, in the template and in each clone.
    let owner = prefix.template_owner_ident();
    let mut tenant_db = connector.connect(&host, p.database.as_str()).await?;
    privileges::pin_search_path(&tenant_db).await?;
    // Migrations run as the template owner; nothing of the tenant's may fire
    // there.
    let code = privileges::tenant_code(&tenant_db, &p.role).await?;
    if !code.is_empty() {
        return Err(RolloutError::TenantCode(code.join(", ")));
    }
    let applied = templates.migrate_as(&mut tenant_db, &owner).await?;
    // Default privileges cover what the owner created in existing schemas;
    // granting again also covers new schemas and objects a migration
    // created as another role.
    privileges::grant(&tenant_db, &owner, Some(&p.role)).await?;
    let to = privileges::template_version(&tenant_db).await?;
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
