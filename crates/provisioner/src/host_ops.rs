//! The statements tenant-plane runs on a db host, written once: the
//! reconciler and rollout both use them. Every name reaches SQL through
//! `PgIdent`, whose `Display` quotes it.

use model::naming::quote_literal;
use model::PgIdent;
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use crate::template::HISTORY_TABLE;

/// A statement on a host failed; `step` says which.
#[derive(Debug, thiserror::Error)]
#[error("{step} failed: {}", registry::describe(.source))]
pub struct HostSqlError {
    pub step: &'static str,
    #[source]
    pub source: tokio_postgres::Error,
}

pub(crate) fn sql(step: &'static str) -> impl Fn(tokio_postgres::Error) -> HostSqlError {
    move |source| HostSqlError { step, source }
}

pub(crate) async fn role_exists(admin: &Client, role: &PgIdent) -> Result<bool, HostSqlError> {
    Ok(admin
        .query_opt(
            "SELECT 1 FROM pg_roles WHERE rolname = $1",
            &[&role.as_str()],
        )
        .await
        .map_err(sql("look up role"))?
        .is_some())
}

pub(crate) async fn database_exists(admin: &Client, db: &PgIdent) -> Result<bool, HostSqlError> {
    Ok(admin
        .query_opt(
            "SELECT 1 FROM pg_database WHERE datname = $1",
            &[&db.as_str()],
        )
        .await
        .map_err(sql("look up database"))?
        .is_some())
}

/// Creates the role, or brings an existing one back to LOGIN with the
/// password on record. The password goes over the wire as a SCRAM verifier,
/// so the plaintext never reaches server logs.
pub(crate) async fn ensure_login_role(
    admin: &Client,
    role: &PgIdent,
    password: &str,
) -> Result<(), HostSqlError> {
    let verifier = postgres_protocol::password::scram_sha_256(password.as_bytes());
    let options = format!("LOGIN NOINHERIT PASSWORD {}", quote_literal(&verifier));
    if !role_exists(admin, role).await? {
        match admin
            .batch_execute(&format!("CREATE ROLE {role} {options}"))
            .await
        {
            Ok(()) => return Ok(()),
            // Created concurrently: fall through to ALTER.
            Err(e) if e.code() == Some(&SqlState::DUPLICATE_OBJECT) => {}
            Err(e) => return Err(sql("create role")(e)),
        }
    }
    admin
        .batch_execute(&format!("ALTER ROLE {role} {options}"))
        .await
        .map_err(sql("alter role"))
}

/// NOLOGIN, then end the role's sessions so that it is locked out now, not at
/// its next connection.
pub(crate) async fn disable_role(admin: &Client, role: &PgIdent) -> Result<(), HostSqlError> {
    if role_exists(admin, role).await? {
        admin
            .batch_execute(&format!("ALTER ROLE {role} NOLOGIN"))
            .await
            .map_err(sql("disable role"))?;
    }
    admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1",
            &[&role.as_str()],
        )
        .await
        .map_err(sql("terminate sessions"))?;
    Ok(())
}

/// Clones `template` as `db`, owned by `role`; a database that already
/// exists (an earlier attempt got this far) counts as done.
pub(crate) async fn create_database(
    admin: &Client,
    db: &PgIdent,
    template: &PgIdent,
    role: &PgIdent,
) -> Result<(), HostSqlError> {
    let create = format!("CREATE DATABASE {db} TEMPLATE {template} OWNER {role}");
    match admin.batch_execute(&create).await {
        Ok(()) => {
            tracing::info!(db = db.as_str(), "created tenant database");
            Ok(())
        }
        Err(e) if e.code() == Some(&SqlState::DUPLICATE_DATABASE) => Ok(()),
        Err(e) => Err(sql("create database")(e)),
    }
}

/// Database-level privileges, which CREATE DATABASE does not copy from the
/// template: only the tenant's role may connect.
pub(crate) async fn grant_database(
    admin: &Client,
    db: &PgIdent,
    role: &PgIdent,
) -> Result<(), HostSqlError> {
    admin
        .batch_execute(&format!(
            "REVOKE ALL ON DATABASE {db} FROM PUBLIC;
             GRANT CONNECT, TEMPORARY ON DATABASE {db} TO {role};"
        ))
        .await
        .map_err(sql("database privileges"))
}

/// The tenant role's rights on the objects of its database; run after a
/// clone and after every template migration, whose new objects belong to the
/// admin.
pub(crate) async fn grant_objects(tenant_db: &Client, role: &PgIdent) -> Result<(), HostSqlError> {
    tenant_db
        .batch_execute(&format!(
            "GRANT ALL ON ALL TABLES IN SCHEMA public TO {role};
             GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {role};
             GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA public TO {role};"
        ))
        .await
        .map_err(sql("grant objects"))
}

/// The tenant role's rights on its database's schema, and on its objects.
pub(crate) async fn grant_schema(tenant_db: &Client, role: &PgIdent) -> Result<(), HostSqlError> {
    tenant_db
        .batch_execute(&format!(
            "REVOKE ALL ON SCHEMA public FROM PUBLIC;
             GRANT ALL ON SCHEMA public TO {role};"
        ))
        .await
        .map_err(sql("schema privileges"))?;
    grant_objects(tenant_db, role).await
}

/// The template version a tenant database's own migration history shows.
pub(crate) async fn template_version_of(tenant_db: &Client) -> Result<i32, HostSqlError> {
    let row = tenant_db
        .query_one(
            &format!(
                "SELECT coalesce(max(version), 0) FROM {}",
                model::naming::quote_ident(HISTORY_TABLE)
            ),
            &[],
        )
        .await
        .map_err(sql("read template version"))?;
    Ok(row.get(0))
}

pub(crate) async fn drop_database(admin: &Client, db: &PgIdent) -> Result<(), HostSqlError> {
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
        .await
        .map_err(sql("drop database"))
}

pub(crate) async fn drop_role(admin: &Client, role: &PgIdent) -> Result<(), HostSqlError> {
    admin
        .batch_execute(&format!("DROP ROLE IF EXISTS {role}"))
        .await
        .map_err(sql("drop role"))
}
