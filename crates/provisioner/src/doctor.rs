//! Drift between the registry and the servers: what `tenant-plane doctor`
//! reports. Read-only.

use std::collections::HashSet;
use std::time::Duration;

use deadpool_postgres::Pool;
use serde::Serialize;
use uuid::Uuid;

use model::{TenantPrefix, TenantStatus};
use registry::hosts::{self, DbHost};
use registry::spares::{self, SpareState};
use registry::tenants::{self, Placement, Tenant};
use registry::{template_versions, RegistryError};

use crate::connector::{HostConnector, HostError};
use crate::privileges;
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
    /// Registry names that are not the ones the tenant's id and the
    /// configured prefix derive: the reconciler refuses to touch them.
    ForeignName,
    /// The tenant's login role owns its database or objects in it.
    TenantOwnsObjects,
    /// The tenant's login role may create objects in a schema.
    SchemaCreate,
    /// PUBLIC, or a role other than the tenant's, may connect to a tenant
    /// database: the rights inside are PUBLIC's, so CONNECT gives the
    /// tenant's data.
    TenantDatabaseOpen,
    /// Triggers or routines the template does not have: the tenant's own.
    TenantCode,
    /// The tenant database's own history disagrees with the registry.
    TemplateVersionMismatch,
    /// Any role may connect to a maintenance database (`postgres`,
    /// `template1`); `tenant-plane hosts harden` revokes it.
    MaintenanceDatabaseOpen,
    /// The tenant database could not be inspected.
    TenantUnreachable,
    /// A ready warm-pool spare whose database or roles are gone: a claim
    /// would fail on it (the refill retires it once it is behind or extra;
    /// `DELETE FROM warm_spares WHERE name = ...` retires it now).
    MissingSpare,
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
    let all_spares = spares::list(&client).await?;
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
        // What the registry expects to exist on this host, looked up by the
        // names it holds (whatever prefix they were made with), beside
        // everything under the configured prefix (for orphans).
        let live: Vec<(&Tenant, &Placement)> = rows
            .iter()
            .filter_map(|(t, _)| Some((t, t.placement.as_ref()?)))
            .filter(|(t, p)| p.host_id == host.id && t.status != TenantStatus::Deleted)
            .collect();
        let expected_dbs: HashSet<&str> = live.iter().map(|(_, p)| p.database.as_str()).collect();
        let owners: Vec<String> = live
            .iter()
            .map(|(_, p)| format!("{}_owner", p.role.as_str()))
            .collect();
        let expected_roles: HashSet<&str> = live
            .iter()
            .map(|(_, p)| p.role.as_str())
            .chain(owners.iter().map(String::as_str))
            .collect();
        // The warm pool's spares on this host: theirs, not orphans.
        let host_spares: Vec<_> = all_spares.iter().filter(|s| s.host_id == host.id).collect();
        let spare_owners: Vec<String> = host_spares
            .iter()
            .map(|s| prefix.spare_owner_ident(s.id).as_str().to_owned())
            .collect();
        let spare_names: HashSet<&str> = host_spares
            .iter()
            .map(|s| s.name.as_str())
            .chain(spare_owners.iter().map(String::as_str))
            .collect();
        let pattern = prefix.like_pattern();
        let names = |sql: &'static str, expected: Vec<String>| {
            let admin = &admin;
            let pattern = pattern.clone();
            async move {
                admin.query(sql, &[&pattern, &expected]).await.map(|rows| {
                    rows.iter()
                        .map(|r| r.get::<_, String>(0))
                        .collect::<HashSet<_>>()
                })
            }
        };
        let (Ok(databases), Ok(roles)) = (
            names(
                "SELECT datname FROM pg_database WHERE datname LIKE $1 OR datname = ANY($2)",
                expected_dbs.iter().map(|s| s.to_string()).collect(),
            )
            .await,
            names(
                "SELECT rolname FROM pg_roles WHERE rolname LIKE $1 OR rolname = ANY($2)",
                expected_roles.iter().map(|s| s.to_string()).collect(),
            )
            .await,
        ) else {
            continue;
        };
        findings.extend(maintenance_databases(&admin, host).await);
        let template_name = prefix.template_ident();
        for db in &databases {
            let orphan_tenant = prefix.owns_tenant_name(db)
                && !expected_dbs.contains(db.as_str())
                && db != template_name.as_str();
            let orphan_spare = prefix.owns_spare_name(db) && !spare_names.contains(db.as_str());
            if orphan_tenant || orphan_spare {
                findings.push(orphan(FindingKind::OrphanDatabase, host, db));
            }
        }
        for role in &roles {
            let orphan_tenant = (prefix.owns_tenant_name(role) || prefix.owns_owner_name(role))
                && !expected_roles.contains(role.as_str());
            let orphan_spare = prefix.owns_spare_name(role) && !spare_names.contains(role.as_str());
            if orphan_tenant || orphan_spare {
                findings.push(orphan(FindingKind::OrphanRole, host, role));
            }
        }
        for spare in host_spares.iter().filter(|s| s.state == SpareState::Ready) {
            let owner = prefix.spare_owner_ident(spare.id);
            let gone: Vec<&str> = [
                (databases.contains(spare.name.as_str()), "database"),
                (roles.contains(spare.name.as_str()), "login role"),
                (roles.contains(owner.as_str()), "owner role"),
            ]
            .into_iter()
            .filter_map(|(present, what)| (!present).then_some(what))
            .collect();
            if !gone.is_empty() {
                findings.push(Finding {
                    kind: FindingKind::MissingSpare,
                    host: Some(host.name.clone()),
                    tenant_id: None,
                    name: Some(spare.name.as_str().to_owned()),
                    detail: format!("ready spare without its {}", gone.join(", ")),
                });
            }
        }
        for (row, p) in &live {
            let expected = prefix.tenant_ident(row.id);
            if p.database != expected || p.role != expected {
                findings.push(Finding {
                    kind: FindingKind::ForeignName,
                    host: Some(host.name.clone()),
                    tenant_id: Some(row.id.as_uuid()),
                    name: Some(p.database.as_str().to_owned()),
                    detail: format!(
                        "registry names database {:?} and role {:?}; tenants.prefix {:?} gives {:?}",
                        p.database.as_str(),
                        p.role.as_str(),
                        prefix.as_str(),
                        expected.as_str()
                    ),
                });
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
                continue;
            }
            if !roles.contains(p.role.as_str()) {
                findings.push(missing(
                    FindingKind::MissingRole,
                    host,
                    row,
                    p.role.as_str(),
                ));
            }
            findings.extend(inspect_tenant_database(connector, host, row, p).await);
        }
    }
    Ok(findings)
}

/// Any role may connect to `postgres` or `template1` on this host.
async fn maintenance_databases(admin: &tokio_postgres::Client, host: &DbHost) -> Vec<Finding> {
    let rows = admin
        .query(
            "SELECT datname::text FROM pg_database
              WHERE datname IN ('postgres', 'template1')
                AND has_database_privilege('public', oid, 'CONNECT')
              ORDER BY 1",
            &[],
        )
        .await
        .unwrap_or_default();
    rows.iter()
        .map(|r| Finding {
            kind: FindingKind::MaintenanceDatabaseOpen,
            host: Some(host.name.clone()),
            tenant_id: None,
            name: Some(r.get(0)),
            detail: format!(
                "PUBLIC may connect; `tenant-plane hosts harden {}` revokes it",
                host.name
            ),
        })
        .collect()
}

/// Inside one tenant database: does it hold to the privilege model, and
/// does its own history agree with the registry?
async fn inspect_tenant_database(
    connector: &HostConnector,
    host: &DbHost,
    t: &Tenant,
    p: &Placement,
) -> Vec<Finding> {
    let finding = |kind, detail: String| Finding {
        kind,
        host: Some(host.name.clone()),
        tenant_id: Some(t.id.as_uuid()),
        name: Some(p.database.as_str().to_owned()),
        detail,
    };
    let checks = async {
        let db = connector.connect(host, p.database.as_str()).await?;
        privileges::pin_search_path(&db).await?;
        let mut found = Vec::new();
        let row = db
            .query_one(
                "SELECT pg_get_userbyid(d.datdba),
                        array(SELECT CASE a.grantee WHEN 0 THEN 'PUBLIC'
                                     ELSE pg_get_userbyid(a.grantee)::text END
                                FROM aclexplode(coalesce(d.datacl,
                                                         acldefault('d', d.datdba))) a
                               WHERE a.privilege_type = 'CONNECT'
                                 AND a.grantee NOT IN (d.datdba, to_regrole($1))
                               ORDER BY 1)
                   FROM pg_database d WHERE d.datname = current_database()",
                &[&p.role.to_string()],
            )
            .await
            .map_err(crate::host_ops::sql("read the database owner and ACL"))?;
        let db_owner: String = row.get(0);
        let may_connect: Vec<String> = row.get(1);
        if !may_connect.is_empty() {
            found.push(finding(
                FindingKind::TenantDatabaseOpen,
                format!(
                    "{} may connect, and so use the tenant's data",
                    may_connect.join(", ")
                ),
            ));
        }
        let mut owned = privileges::owned_by(&db, &p.role).await?;
        if db_owner == p.role.as_str() {
            owned.insert(0, "the database itself".to_owned());
        }
        if !owned.is_empty() {
            found.push(finding(
                FindingKind::TenantOwnsObjects,
                format!("the tenant's login role owns {}", owned.join(", ")),
            ));
        }
        let creatable = privileges::creatable_schemas(&db, &p.role).await?;
        if !creatable.is_empty() {
            found.push(finding(
                FindingKind::SchemaCreate,
                format!(
                    "the tenant's login role may create in schema {}",
                    creatable.join(", ")
                ),
            ));
        }
        let code = privileges::tenant_code(&db, &p.role).await?;
        if !code.is_empty() {
            found.push(finding(
                FindingKind::TenantCode,
                format!("not from the template: {}", code.join(", ")),
            ));
        }
        // A database on the first model keeps its history elsewhere; the
        // reconciler moves it.
        if t.privilege_model >= registry::tenants::PRIVILEGE_MODEL {
            let version = privileges::template_version(&db).await?;
            if Some(version) != t.template_version {
                found.push(finding(
                    FindingKind::TemplateVersionMismatch,
                    format!(
                        "the database's history shows v{version}, the registry v{}",
                        t.template_version.unwrap_or(0)
                    ),
                ));
            }
        }
        Ok::<_, InspectError>(found)
    };
    match checks.await {
        Ok(found) => found,
        Err(e) => vec![finding(FindingKind::TenantUnreachable, e.to_string())],
    }
}

#[derive(Debug, thiserror::Error)]
enum InspectError {
    #[error(transparent)]
    Host(#[from] HostError),
    #[error(transparent)]
    Sql(#[from] crate::host_ops::HostSqlError),
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
