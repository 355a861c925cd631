//! The statements tenant-plane runs on a db host's cluster (roles and
//! databases), written once. What runs inside a tenant database is in
//! `privileges`. Every name reaches SQL through `PgIdent`, whose `Display`
//! quotes it.

use model::naming::quote_literal;
use model::PgIdent;
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use crate::limits::Limits;

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

/// Creates the NOLOGIN role that owns a tenant's database and objects.
pub(crate) async fn ensure_owner_role(admin: &Client, owner: &PgIdent) -> Result<(), HostSqlError> {
    if role_exists(admin, owner).await? {
        return Ok(());
    }
    match admin
        .batch_execute(&format!("CREATE ROLE {owner} NOLOGIN"))
        .await
    {
        Ok(()) => Ok(()),
        Err(e) if e.code() == Some(&SqlState::DUPLICATE_OBJECT) => Ok(()),
        Err(e) => Err(sql("create owner role")(e)),
    }
}

/// Makes the admin able to act as `role` (own its objects, SET ROLE to it,
/// create databases owned by it), as a host admin that is not a superuser
/// must be: on PostgreSQL 16 and later a CREATEROLE admin holds only the
/// ADMIN option on the roles it created, so it grants itself INHERIT and SET;
/// on 15 a plain membership does. A superuser needs nothing.
pub(crate) async fn ensure_admin_member(
    admin: &Client,
    role: &PgIdent,
) -> Result<(), HostSqlError> {
    let row = admin
        .query_one(
            "SELECT r.rolsuper, current_setting('server_version_num')::int >= 160000
               FROM pg_roles r WHERE r.rolname = current_user",
            &[],
        )
        .await
        .map_err(sql("look up the admin"))?;
    let (superuser, v16): (bool, bool) = (row.get(0), row.get(1));
    if superuser {
        return Ok(());
    }
    // Privileges without SET ROLE (USAGE), and SET ROLE itself: 'SET' is a
    // privilege of its own from 16 on, membership before.
    let can_set = if v16 { "SET" } else { "MEMBER" };
    let able: bool = admin
        .query_one(
            &format!(
                "SELECT pg_has_role(current_user, $1, 'USAGE')
                    AND pg_has_role(current_user, $1, '{can_set}')"
            ),
            &[&role.as_str()],
        )
        .await
        .map_err(sql("look up the admin's memberships"))?
        .get(0);
    if able {
        return Ok(());
    }
    let grant = if v16 {
        format!("GRANT {role} TO CURRENT_USER WITH INHERIT TRUE, SET TRUE")
    } else {
        format!("GRANT {role} TO CURRENT_USER")
    };
    admin
        .batch_execute(&grant)
        .await
        .map_err(sql("grant the admin the role"))
}

/// Creates the login role, or brings an existing one back to LOGIN with the
/// password on record, and applies its plan's limits. The password goes over
/// the wire as a SCRAM verifier, so the plaintext never reaches server logs.
pub(crate) async fn ensure_login_role(
    admin: &Client,
    role: &PgIdent,
    password: &str,
    limits: &Limits,
) -> Result<(), HostSqlError> {
    let verifier = postgres_protocol::password::scram_sha_256(password.as_bytes());
    let options = format!("LOGIN NOINHERIT PASSWORD {}", quote_literal(&verifier));
    let mut created = false;
    if !role_exists(admin, role).await? {
        match admin
            .batch_execute(&format!("CREATE ROLE {role} {options}"))
            .await
        {
            Ok(()) => created = true,
            // Created concurrently: fall through to ALTER.
            Err(e) if e.code() == Some(&SqlState::DUPLICATE_OBJECT) => {}
            Err(e) => return Err(sql("create role")(e)),
        }
    }
    if !created {
        admin
            .batch_execute(&format!("ALTER ROLE {role} {options}"))
            .await
            .map_err(sql("alter role"))?;
    }
    admin
        .batch_execute(&limits.statements(role))
        .await
        .map_err(sql("apply plan limits"))
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

/// Clones `template` as `db`, owned by `owner` and closed to connections
/// until [`open_database`]; a database that already exists (an earlier
/// attempt got this far) counts as done.
pub(crate) async fn create_database(
    admin: &Client,
    db: &PgIdent,
    template: &PgIdent,
    owner: &PgIdent,
) -> Result<(), HostSqlError> {
    let create =
        format!("CREATE DATABASE {db} TEMPLATE {template} OWNER {owner} ALLOW_CONNECTIONS false");
    match admin.batch_execute(&create).await {
        Ok(()) => {
            tracing::info!(db = db.as_str(), "created tenant database");
            Ok(())
        }
        Err(e) if e.code() == Some(&SqlState::DUPLICATE_DATABASE) => Ok(()),
        Err(e) => Err(sql("create database")(e)),
    }
}

/// Database-level state, which CREATE DATABASE does not copy from the
/// template and which a tenant of the first model could change as the
/// database's owner: owned by `owner`, no settings, no CREATE for the
/// tenant, and nobody but the admin may connect to a new database (the
/// tenant's role gets CONNECT from [`open_database`], once its privileges
/// inside are set). Then connections are allowed.
pub(crate) async fn secure_database(
    admin: &Client,
    db: &PgIdent,
    owner: &PgIdent,
    login: &PgIdent,
) -> Result<(), HostSqlError> {
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {db} OWNER TO {owner};
             ALTER DATABASE {db} RESET ALL;
             REVOKE ALL ON DATABASE {db} FROM PUBLIC;
             REVOKE CREATE ON DATABASE {db} FROM {login};
             ALTER DATABASE {db} WITH ALLOW_CONNECTIONS true;"
        ))
        .await
        .map_err(sql("secure database"))
}

/// Takes CONNECT and TEMPORARY on `db` from the tenant's role and ends its
/// sessions there (waiting for each to go), so that nothing of the
/// tenant's runs in the database until [`open_database`]. For a database
/// moved from the first model, where the tenant could create objects: a
/// session opened before the move could otherwise go on creating while
/// the move runs, and what it created midway would escape it.
pub(crate) async fn close_database(
    admin: &Client,
    db: &PgIdent,
    login: &PgIdent,
) -> Result<(), HostSqlError> {
    admin
        .batch_execute(&format!(
            "REVOKE CONNECT, TEMPORARY ON DATABASE {db} FROM {login}"
        ))
        .await
        .map_err(sql("close database"))?;
    admin
        .execute(
            "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity
              WHERE usename = $1 AND datname = $2",
            &[&login.as_str(), &db.as_str()],
        )
        .await
        .map_err(sql("end sessions in the database"))?;
    Ok(())
}

/// Lets the tenant's role connect to its database (and create temporary
/// tables there): the last step of provisioning.
pub(crate) async fn open_database(
    admin: &Client,
    db: &PgIdent,
    login: &PgIdent,
) -> Result<(), HostSqlError> {
    admin
        .batch_execute(&format!(
            "GRANT CONNECT, TEMPORARY ON DATABASE {db} TO {login}"
        ))
        .await
        .map_err(sql("open database"))
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
