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
    admin
        .batch_execute(&admin_grant(role, v16))
        .await
        .map_err(sql("grant the admin the role"))
}

/// Grants the admin what it needs to act as `role`: INHERIT and SET on 16
/// and later, membership on 15.
fn admin_grant(role: &PgIdent, v16: bool) -> String {
    if v16 {
        format!("GRANT {role} TO CURRENT_USER WITH INHERIT TRUE, SET TRUE;")
    } else {
        format!("GRANT {role} TO CURRENT_USER;")
    }
}

/// What a host holds of one tenant, read in one round trip before any
/// change, so the changes can go in one batch.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Survey {
    superuser: bool,
    v16: bool,
    pub template: bool,
    pub database: bool,
    owner: bool,
    login: bool,
    /// The admin can already act as the owner role.
    admin_is_owner: bool,
}

pub(crate) async fn survey(
    admin: &Client,
    template: &PgIdent,
    database: &PgIdent,
    owner: &PgIdent,
    login: &PgIdent,
) -> Result<Survey, HostSqlError> {
    let row = admin
        .query_one(
            "SELECT r.rolsuper, current_setting('server_version_num')::int >= 160000,
                    EXISTS (SELECT 1 FROM pg_database WHERE datname = $1),
                    EXISTS (SELECT 1 FROM pg_database WHERE datname = $2),
                    EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $3),
                    EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $4),
                    CASE WHEN NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $3) THEN false
                         WHEN current_setting('server_version_num')::int >= 160000
                         THEN pg_has_role(current_user, $3, 'USAGE')
                              AND pg_has_role(current_user, $3, 'SET')
                         ELSE pg_has_role(current_user, $3, 'USAGE')
                              AND pg_has_role(current_user, $3, 'MEMBER') END
               FROM pg_roles r WHERE r.rolname = current_user",
            &[
                &template.as_str(),
                &database.as_str(),
                &owner.as_str(),
                &login.as_str(),
            ],
        )
        .await
        .map_err(sql("survey the host"))?;
    Ok(Survey {
        superuser: row.get(0),
        v16: row.get(1),
        template: row.get(2),
        database: row.get(3),
        owner: row.get(4),
        login: row.get(5),
        admin_is_owner: row.get(6),
    })
}

/// Brings a tenant's two roles to the model in one batch (one transaction):
/// the NOLOGIN owner, the admin able to act as it, and the login role with
/// the password on record and its plan's limits. A new login role starts
/// NOLOGIN; [`open_sql`] lets it in once its database is ready. An existing
/// one keeps its LOGIN state. A warm-pool spare's login role gets its
/// password now and its limits (`None`) from the plan of the tenant that
/// claims it.
pub(crate) async fn prepare_roles(
    admin: &Client,
    found: &Survey,
    owner: &PgIdent,
    login: &PgIdent,
    password: &Verifier,
    limits: Option<&Limits>,
) -> Result<(), HostSqlError> {
    let mut batch = String::new();
    if !found.owner {
        batch.push_str(&format!("CREATE ROLE {owner} NOLOGIN;"));
    }
    if !found.superuser && !found.admin_is_owner {
        batch.push_str(&admin_grant(owner, found.v16));
    }
    let password = format!("PASSWORD {}", password.0);
    if found.login {
        batch.push_str(&format!("ALTER ROLE {login} NOINHERIT {password};"));
    } else {
        batch.push_str(&format!(
            "CREATE ROLE {login} NOLOGIN NOINHERIT {password};"
        ));
    }
    if let Some(limits) = limits {
        batch.push_str(&limits.statements(login));
    }
    admin
        .batch_execute(&batch)
        .await
        .map_err(sql("prepare roles"))
}

/// A password as a quoted SCRAM verifier, so the plaintext never reaches
/// the server (or its logs).
pub(crate) struct Verifier(String);

impl Verifier {
    /// Made on the blocking pool: its 4096 rounds of PBKDF2 take about a
    /// millisecond of CPU, which on the async thread would hold back the
    /// statements of the pass that waits for it (the clone's among them).
    pub(crate) async fn of(password: &str) -> Self {
        let owned = password.to_owned();
        let verifier = tokio::task::spawn_blocking(move || scram(&owned))
            .await
            // Refused only while the runtime shuts down: made here instead.
            .unwrap_or_else(|_| scram(password));
        Self(quote_literal(&verifier))
    }
}

fn scram(password: &str) -> String {
    postgres_protocol::password::scram_sha_256(password.as_bytes())
}

/// A warm-pool spare's names: its database and login role (one name), and
/// its owner role. Both derive from the spare's id and the prefix.
pub(crate) struct SpareNames {
    pub database: PgIdent,
    pub owner: PgIdent,
}

impl SpareNames {
    pub(crate) fn new(prefix: &model::TenantPrefix, spare: uuid::Uuid) -> Self {
        Self {
            database: prefix.spare_ident(spare),
            owner: prefix.spare_owner_ident(spare),
        }
    }
}

/// Whether the spare's database and the tenant's exist, in one round trip.
pub(crate) async fn spare_and_tenant_exist(
    admin: &Client,
    spare: &PgIdent,
    tenant: &PgIdent,
) -> Result<(bool, bool), HostSqlError> {
    let row = admin
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1),
                    EXISTS (SELECT 1 FROM pg_database WHERE datname = $2)",
            &[&spare.as_str(), &tenant.as_str()],
        )
        .await
        .map_err(sql("look up the spare"))?;
    Ok((row.get(0), row.get(1)))
}

/// Makes a spare the tenant's, in one transaction: database, login and
/// owner roles renamed to the tenant's names (grants and default
/// privileges follow, being held by oid; so does the SCRAM verifier, which
/// is the tenant's password from the claim on), the login role given the
/// tenant's limits, then let in. A crash leaves either the spare untouched
/// or the tenant complete. The rename waits for (and then fails on)
/// sessions in the spare's database; nothing connects to one.
pub(crate) async fn take_spare(
    admin: &Client,
    spare: &SpareNames,
    tenant_db: &PgIdent,
    login: &PgIdent,
    owner: &PgIdent,
    limits: &Limits,
) -> Result<(), HostSqlError> {
    let SpareNames {
        database: spare_db,
        owner: spare_owner,
    } = spare;
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {spare_db} RENAME TO {tenant_db};
             ALTER ROLE {spare_db} RENAME TO {login};
             ALTER ROLE {spare_owner} RENAME TO {owner};
             {}
             {}",
            limits.statements(login),
            open_sql(tenant_db, login),
        ))
        .await
        .map_err(sql("take a warm spare"))
}

/// Drops a spare's database and roles, whichever exist.
pub(crate) async fn drop_spare(admin: &Client, spare: &SpareNames) -> Result<(), HostSqlError> {
    drop_database(admin, &spare.database).await?;
    drop_role(admin, &spare.database).await?;
    drop_role(admin, &spare.owner).await
}

/// Lets the tenant in: LOGIN for its role, CONNECT and TEMPORARY on its
/// database. Runs on any database of the host (roles and database ACLs are
/// cluster-wide), so it can share a transaction with the last step.
pub(crate) fn open_sql(db: &PgIdent, login: &PgIdent) -> String {
    format!("ALTER ROLE {login} LOGIN; GRANT CONNECT, TEMPORARY ON DATABASE {db} TO {login};")
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

/// How CREATE DATABASE copies the template (`tenants.clone_strategy`).
/// `wal_log` (PostgreSQL's default since 15) copies block by block through
/// the WAL; `file_copy` copies the files and checkpoints twice, which wins
/// for large templates and loses for small ones on a busy server (see
/// docs/benchmarks.md, provisioning).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CloneStrategy {
    #[default]
    WalLog,
    FileCopy,
}

impl CloneStrategy {
    fn sql(self) -> &'static str {
        match self {
            CloneStrategy::WalLog => "WAL_LOG",
            CloneStrategy::FileCopy => "FILE_COPY",
        }
    }
}

/// Clones `template` as `db`, owned by `owner` (by the admin when `None`)
/// and closed to connections until [`open_clone`] or [`secure_database`]; a database that already
/// exists (an earlier attempt got this far) counts as done.
pub(crate) async fn create_database(
    admin: &Client,
    db: &PgIdent,
    template: &PgIdent,
    owner: Option<&PgIdent>,
    strategy: CloneStrategy,
) -> Result<(), HostSqlError> {
    // Without an owner, the admin owns it until it is handed over.
    let owner = owner.map_or(String::new(), |o| format!("OWNER {o} "));
    let create = format!(
        "CREATE DATABASE {db} TEMPLATE {template} {owner}STRATEGY {} ALLOW_CONNECTIONS false",
        strategy.sql()
    );
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
             REVOKE CREATE ON DATABASE {db} FROM {login};
             {}",
            admit_admin_sql(db)
        ))
        .await
        .map_err(sql("secure database"))
}

/// Closed to PUBLIC, then open to connections: only the admin (as owner,
/// or member of the owner) may connect until the tenant's role is let in.
fn admit_admin_sql(db: &PgIdent) -> String {
    format!(
        "REVOKE ALL ON DATABASE {db} FROM PUBLIC;
         ALTER DATABASE {db} WITH ALLOW_CONNECTIONS true;"
    )
}

/// Completes a clone this pass has just made (the admin owns it): the
/// rights inside came with the template, so what is left is the database's
/// owner and ACL, closed to PUBLIC, then connections allowed, and `open`
/// (the tenant's LOGIN and CONNECT; nothing for a spare), in one
/// transaction from the admin's session. A fresh clone has no settings of
/// its own to reset (CREATE DATABASE copies none), and nobody could connect
/// to it before this commits.
pub(crate) async fn open_clone(
    admin: &Client,
    db: &PgIdent,
    owner: &PgIdent,
    open: &str,
) -> Result<(), HostSqlError> {
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {db} OWNER TO {owner}; {}{open}",
            admit_admin_sql(db)
        ))
        .await
        .map_err(sql("open the new database"))
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

/// Lets the tenant's role log in and connect to its database (and create
/// temporary tables there): the last step of provisioning.
pub(crate) async fn open_database(
    admin: &Client,
    db: &PgIdent,
    login: &PgIdent,
) -> Result<(), HostSqlError> {
    admin
        .batch_execute(&open_sql(db, login))
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
