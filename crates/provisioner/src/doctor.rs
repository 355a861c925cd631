//! Drift between the registry and the servers: what `tenant-plane doctor`
//! reports. Read-only.

use std::collections::HashSet;
use std::time::Duration;

use deadpool_postgres::Pool;
use serde::Serialize;
use uuid::Uuid;

use model::{TenantPrefix, TenantStatus};
use registry::hosts::{self, DbHost};
use registry::tenants::{self, Placement, Tenant};
use registry::{template_versions, RegistryError};

use crate::connector::HostConnector;
use crate::template::Templates;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// A database with the tenant prefix that no live tenant owns.
    OrphanDatabase,
    /// A role with the tenant prefix that no live tenant owns.
    OrphanRole,
    /// An active or suspended tenant whose database is gone.
    MissingDatabase,
    /// An active or suspended tenant whose role is gone.
    MissingRole,
    /// A tenant in a transitional status for longer than the threshold.
    Stuck,
    /// A tenant that gave up after its attempts.
    Failed,
    /// A template or tenant behind the newest template version.
    TemplateSkew,
    /// A host that could not be inspected.
    HostUnreachable,
}

#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub kind: FindingKind,
    pub host: Option<String>,
    pub tenant_id: Option<Uuid>,
    pub name: Option<String>,
    pub detail: String,
}

pub async fn diagnose(
    control: &Pool,
    connector: &HostConnector,
    prefix: &TenantPrefix,
    templates: &Templates,
    stuck_after: Duration,
) -> Result<Vec<Finding>, RegistryError> {
    let client = control.get().await?;
    let all_hosts = hosts::list(&client).await?;
    let rows = tenants::with_stuck_time(&client, stuck_after).await?;
    let mut findings = Vec::new();
    let latest = templates.latest_version();

    for (row, stuck_for) in &rows {
        let host = row.db_host().map(str::to_owned);
        let name = row.db_name().map(str::to_owned);
        let id = Some(row.id.as_uuid());
        if let Some(secs) = stuck_for {
            findings.push(Finding {
                kind: FindingKind::Stuck,
                host: host.clone(),
                tenant_id: id,
                name: name.clone(),
                detail: format!("{} for {:.0}s", row.status, secs),
            });
        }
        if row.status == TenantStatus::Failed {
            findings.push(Finding {
                kind: FindingKind::Failed,
                host: host.clone(),
                tenant_id: id,
                name: name.clone(),
                detail: row.last_error.clone().unwrap_or_default(),
            });
        }
        if row.status == TenantStatus::Active && row.template_version.unwrap_or(0) < latest {
            findings.push(Finding {
                kind: FindingKind::TemplateSkew,
                host,
                tenant_id: id,
                name,
                detail: format!(
                    "tenant at template v{}, newest is v{latest}",
                    row.template_version.unwrap_or(0)
                ),
            });
        }
    }

    for host in &all_hosts {
        let version = template_versions::host_version(&client, host.id).await?;
        if version < latest {
            findings.push(Finding {
                kind: FindingKind::TemplateSkew,
                host: Some(host.name.clone()),
                tenant_id: None,
                name: Some(prefix.template_ident().as_str().to_owned()),
                detail: format!(
                    "template at v{version}, newest is v{latest}; run `tenant-plane template sync`"
                ),
            });
        }
        let admin = match connector.connect(host, "postgres").await {
            Ok(c) => c,
            Err(e) => {
                findings.push(Finding {
                    kind: FindingKind::HostUnreachable,
                    host: Some(host.name.clone()),
                    tenant_id: None,
                    name: None,
                    detail: e.to_string(),
                });
                continue;
            }
        };
        let pattern = prefix.like_pattern();
        let names = |sql: &'static str| {
            let admin = &admin;
            let pattern = pattern.clone();
            async move {
                admin.query(sql, &[&pattern]).await.map(|rows| {
                    rows.iter()
                        .map(|r| r.get::<_, String>(0))
                        .collect::<HashSet<_>>()
                })
            }
        };
        let (Ok(databases), Ok(roles)) = (
            names("SELECT datname FROM pg_database WHERE datname LIKE $1").await,
            names("SELECT rolname FROM pg_roles WHERE rolname LIKE $1").await,
        ) else {
            continue;
        };
        // What the registry expects to exist on this host.
        let live: Vec<(&Tenant, &Placement)> = rows
            .iter()
            .filter_map(|(t, _)| Some((t, t.placement.as_ref()?)))
            .filter(|(t, p)| p.host_id == host.id && t.status != TenantStatus::Deleted)
            .collect();
        let expected_dbs: HashSet<&str> = live.iter().map(|(_, p)| p.database.as_str()).collect();
        let expected_roles: HashSet<&str> = live.iter().map(|(_, p)| p.role.as_str()).collect();
        let template_name = prefix.template_ident();
        for db in &databases {
            if prefix.owns_tenant_name(db)
                && !expected_dbs.contains(db.as_str())
                && db != template_name.as_str()
            {
                findings.push(orphan(FindingKind::OrphanDatabase, host, db));
            }
        }
        for role in &roles {
            if prefix.owns_tenant_name(role) && !expected_roles.contains(role.as_str()) {
                findings.push(orphan(FindingKind::OrphanRole, host, role));
            }
        }
        for (row, p) in live
            .iter()
            .filter(|(t, _)| matches!(t.status, TenantStatus::Active | TenantStatus::Suspended))
        {
            if !databases.contains(p.database.as_str()) {
                findings.push(missing(
                    FindingKind::MissingDatabase,
                    host,
                    row,
                    p.database.as_str(),
                ));
            }
            if !roles.contains(p.role.as_str()) {
                findings.push(missing(
                    FindingKind::MissingRole,
                    host,
                    row,
                    p.role.as_str(),
                ));
            }
        }
    }
    Ok(findings)
}

fn orphan(kind: FindingKind, host: &DbHost, name: &str) -> Finding {
    Finding {
        kind,
        host: Some(host.name.clone()),
        tenant_id: None,
        name: Some(name.to_owned()),
        detail: "no live tenant in the registry owns it".into(),
    }
}

fn missing(kind: FindingKind, host: &DbHost, row: &Tenant, name: &str) -> Finding {
    Finding {
        kind,
        host: Some(host.name.clone()),
        tenant_id: Some(row.id.as_uuid()),
        name: Some(name.to_owned()),
        detail: format!("tenant is {} but it does not exist", row.status),
    }
}
