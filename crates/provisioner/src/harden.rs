//! Hardening a db host's maintenance databases: on a fresh cluster PUBLIC
//! may connect to `postgres` and `template1`, so a tenant's role reaches
//! databases other than its own there. `tenant-plane hosts harden` revokes
//! that, keeping the admin's own access first.

use registry::hosts::DbHost;

use crate::connector::{HostConnector, HostError};
use crate::host_ops::{sql, HostSqlError};

#[derive(Debug, thiserror::Error)]
pub enum HardenError {
    #[error(transparent)]
    Host(#[from] HostError),
    #[error(transparent)]
    Sql(#[from] HostSqlError),
}

/// The statements that close `postgres` and `template1` to PUBLIC on `host`
/// (none when they are closed already); run them when `apply`.
pub async fn maintenance_databases(
    connector: &HostConnector,
    host: &DbHost,
    apply: bool,
) -> Result<Vec<String>, HardenError> {
    let admin = connector.connect(host, "postgres").await?;
    let statements: Vec<String> = admin
        .query(
            "SELECT format('GRANT CONNECT ON DATABASE %1$I TO CURRENT_USER; \
                            REVOKE CONNECT ON DATABASE %1$I FROM PUBLIC', datname)
               FROM pg_database
              WHERE datname IN ('postgres', 'template1')
                AND has_database_privilege('public', oid, 'CONNECT')
              ORDER BY datname",
            &[],
        )
        .await
        .map_err(sql("list maintenance databases"))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if apply {
        for statement in &statements {
            admin
                .batch_execute(statement)
                .await
                .map_err(sql("revoke CONNECT from PUBLIC"))?;
        }
    }
    Ok(statements)
}
