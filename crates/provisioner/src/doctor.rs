//! Drift between the registry and the servers: what `tenant-plane doctor`
//! reports. Read-only.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use deadpool_postgres::Pool;
use serde::Serialize;
use uuid::Uuid;

use model::TenantPrefix;
use registry::hosts::{self, DbHost};
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

/// A tenant row as the doctor needs it.
struct Row {
    id: Uuid,
    host_id: Option<Uuid>,
    db_name: Option<String>,
    db_role: Option<String>,
    status: String,
    template_version: Option<i32>,
    last_error: Option<String>,
    stuck_for: Option<f64>,
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
    let rows: Vec<Row> = client
        .query(
            "SELECT id, db_host_id, db_name, db_role, status, template_version, last_error,
                    CASE WHEN status IN ('pending', 'provisioning', 'suspending', 'deleting')
                          AND NOT (status = 'deleting' AND purge_after > now())
                          AND updated_at < now() - make_interval(secs => $1)
                         THEN extract(epoch FROM now() - updated_at)::float8 END
               FROM tenant_registry",
            &[&stuck_after.as_secs_f64()],
        )
        .await?
        .iter()
        .map(|r| Row {
            id: r.get(0),
            host_id: r.get(1),
            db_name: r.get(2),
            db_role: r.get(3),
            status: r.get(4),
            template_version: r.get(5),
            last_error: r.get(6),
            stuck_for: r.get(7),
        })
        .collect();

    let mut findings = Vec::new();
    let host_names: HashMap<Uuid, String> =
        all_hosts.iter().map(|h| (h.id, h.name.clone())).collect();
    let latest = templates.latest_version();

    for row in &rows {
        let host = row.host_id.and_then(|h| host_names.get(&h).cloned());
        if let Some(secs) = row.stuck_for {
            findings.push(Finding {
                kind: FindingKind::Stuck,
                host: host.clone(),
                tenant_id: Some(row.id),
                name: row.db_name.clone(),
                detail: format!("{} for {:.0}s", row.status, secs),
            });
        }
        if row.status == "failed" {
            findings.push(Finding {
                kind: FindingKind::Failed,
                host: host.clone(),
                tenant_id: Some(row.id),
                name: row.db_name.clone(),
                detail: row.last_error.clone().unwrap_or_default(),
            });
        }
        if row.status == "active" && row.template_version.unwrap_or(0) < latest {
            findings.push(Finding {
                kind: FindingKind::TemplateSkew,
                host,
                tenant_id: Some(row.id),
                name: row.db_name.clone(),
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
        let live: Vec<&Row> = rows
            .iter()
            .filter(|r| r.host_id == Some(host.id) && r.status != "deleted")
            .collect();
        let expected_dbs: HashSet<&str> =
            live.iter().filter_map(|r| r.db_name.as_deref()).collect();
        let expected_roles: HashSet<&str> =
            live.iter().filter_map(|r| r.db_role.as_deref()).collect();
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
        for row in live
            .iter()
            .filter(|r| r.status == "active" || r.status == "suspended")
        {
            if let Some(db) = &row.db_name {
                if !databases.contains(db) {
                    findings.push(missing(FindingKind::MissingDatabase, host, row, db));
                }
            }
            if let Some(role) = &row.db_role {
                if !roles.contains(role) {
                    findings.push(missing(FindingKind::MissingRole, host, row, role));
                }
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

fn missing(kind: FindingKind, host: &DbHost, row: &Row, name: &str) -> Finding {
    Finding {
        kind,
        host: Some(host.name.clone()),
        tenant_id: Some(row.id),
        name: Some(name.to_owned()),
        detail: format!("tenant is {} but it does not exist", row.status),
    }
}
