//! What a db host's admin may do, checked before anything depends on it:
//! `tenant-plane hosts check NAME`. Managed services give a non-superuser
//! admin (RDS `rds_superuser` members, Cloud SQL `cloudsqlsuperuser`, Azure
//! `azure_pg_admin`, Neon `neon_superuser`); tenant-plane needs CREATEDB,
//! CREATEROLE and pg_signal_backend of it, on PostgreSQL 15 to 18.

use registry::hosts::DbHost;
use serde::Serialize;

use crate::connector::{HostConnector, HostError};
use crate::host_ops::{sql, HostSqlError};

/// One thing checked.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub what: &'static str,
    pub ok: bool,
    /// Required for tenant-plane to work, or only advised.
    pub required: bool,
    pub detail: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Host(#[from] HostError),
    #[error(transparent)]
    Sql(#[from] HostSqlError),
}

/// The oldest and newest PostgreSQL major versions tenant-plane is tested on.
const SUPPORTED: std::ops::RangeInclusive<i32> = 15..=18;

pub async fn check(connector: &HostConnector, host: &DbHost) -> Result<Vec<Check>, CheckError> {
    let admin = connector.connect(host, "postgres").await?;
    let row = admin
        .query_one(
            "SELECT current_setting('server_version_num')::int / 10000 AS major,
                    current_setting('server_version') AS version,
                    r.rolsuper, r.rolcreatedb, r.rolcreaterole,
                    pg_has_role(current_user, 'pg_signal_backend', 'USAGE') AS signal,
                    pg_has_role(current_user, 'pg_read_all_stats', 'USAGE') AS stats,
                    current_setting('password_encryption') AS password_encryption,
                    current_setting('ssl') AS ssl
               FROM pg_roles r WHERE r.rolname = current_user",
            &[],
        )
        .await
        .map_err(sql("read the admin's attributes"))?;
    let major: i32 = row.get("major");
    let version: String = row.get("version");
    let superuser: bool = row.get("rolsuper");
    let user = &host.admin_user;
    let privilege = |what: &'static str, ok: bool, detail: String| Check {
        what,
        ok: superuser || ok,
        required: true,
        detail: if superuser {
            format!("{user} is a superuser")
        } else {
            detail
        },
    };
    Ok(vec![
        Check {
            what: "server version",
            ok: SUPPORTED.contains(&major),
            required: true,
            detail: format!("PostgreSQL {version}; tenant-plane supports 15 to 18"),
        },
        privilege(
            "CREATEDB",
            row.get("rolcreatedb"),
            format!("to clone tenant databases: ALTER ROLE {user} CREATEDB"),
        ),
        privilege(
            "CREATEROLE",
            row.get("rolcreaterole"),
            format!("to create each tenant's owner and login roles: ALTER ROLE {user} CREATEROLE"),
        ),
        privilege(
            "pg_signal_backend",
            row.get("signal"),
            format!("to end a suspended tenant's sessions: GRANT pg_signal_backend TO {user}"),
        ),
        Check {
            what: "pg_read_all_stats",
            ok: superuser || row.get::<_, bool>("stats"),
            required: false,
            detail: format!(
                "advised, to see the query state of tenants' sessions: GRANT pg_monitor TO {user}"
            ),
        },
        Check {
            what: "password_encryption",
            ok: row.get::<_, String>("password_encryption") == "scram-sha-256",
            required: false,
            detail: "tenant passwords are sent as SCRAM verifiers whatever it says; \
                     scram-sha-256 keeps other roles' passwords strong too"
                .into(),
        },
        Check {
            what: "ssl",
            ok: row.get::<_, String>("ssl") == "on",
            required: false,
            detail: "the server accepts TLS connections (set sslmode=verify-full for this host)"
                .into(),
        },
    ])
}
