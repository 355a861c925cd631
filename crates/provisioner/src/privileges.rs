//! The privilege model inside a tenant database, and the admin's work there.
//!
//! Every object of a tenant database (its schemas, `public` included,
//! relations, routines and types) is owned by the host's NOLOGIN template
//! owner, as in the template it was cloned from; the database itself
//! belongs to a per-tenant NOLOGIN owner role. The rights inside are
//! PUBLIC's: USAGE on the schemas, SELECT/INSERT/UPDATE/DELETE on tables,
//! USAGE/SELECT/UPDATE on sequences and EXECUTE on routines, with default
//! privileges for what later template migrations add. No role has CREATE on
//! any schema, TRIGGER, REFERENCES or TRUNCATE, so nothing can be planted
//! for anyone else to run.
//!
//! The boundary is the database: PUBLIC may not connect to it, and CONNECT
//! is the tenant's login role's alone (PostgreSQL has no query across
//! databases, so a role that cannot connect reaches nothing inside). The
//! rights are all in the template, so a clone is complete as it is: the
//! tenant's roles, the database's owner and its ACL live in shared catalogs
//! and are set from the admin's own session, with no connection into the
//! new database (see `host_ops::open_clone`).
//!
//! Admin sessions in a tenant database never look a name up where the tenant
//! could have written: every statement here runs with `search_path =
//! pg_catalog` and names objects by their catalog oid (`regclass`,
//! `regprocedure`, whose text the server quotes), the migration history lives
//! in the `tenant_plane` schema, which PUBLIC cannot touch, and template
//! migrations run as the template owner (`SET ROLE`), never with the admin's
//! own rights.
//!
//! Tenants provisioned under earlier models are moved by [`apply`]. Under
//! the first (their login role owned the database and could create
//! anything), what they created is handed to the template owner, so their
//! data stays theirs to use, except triggers and routines, which are
//! dropped (they hold no data, and no tenant code may run inside an admin's
//! or owner's session), and views and rules over `tenant_plane`, which are
//! dropped too (owned by the template owner, they would open the history to
//! the tenant); the reconciler ends the tenant's sessions in the database
//! before that move, so that nothing is created while it runs. Under the
//! second (a per-tenant owner role owned the objects, the login role held
//! grants of its own), the objects change owner and the login role's grants
//! become PUBLIC's, in one transaction.

use model::naming::quote_literal;
use model::PgIdent;
use tokio_postgres::{Client, GenericClient};

use crate::host_ops::{sql, HostSqlError};

/// The schema of tenant-plane's own bookkeeping inside each database.
pub const SCHEMA: &str = "tenant_plane";
/// The template migration history (refinery's table), schema-qualified.
pub const HISTORY_TABLE: &str = "tenant_plane.template_history";
/// Where the first model kept the history.
const LEGACY_HISTORY_TABLE: &str = "public.tenant_plane_template_history";

/// Schemas that are ours or the tenant's, not the system's.
const USER_SCHEMAS: &str = "n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'";

/// Runs `statements` (one per row of `query`, built server-side with
/// `format`) on `client`.
async fn run_generated(
    client: &impl GenericClient,
    step: &'static str,
    query: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Vec<String>, HostSqlError> {
    let rows = client.query(query, params).await.map_err(sql(step))?;
    let statements: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    for statement in &statements {
        client.batch_execute(statement).await.map_err(sql(step))?;
    }
    Ok(statements)
}

/// A `DO` block that runs, server-side, each statement `query` yields
/// (its first column). For steps whose statements need not come back to us.
fn execute_each(query: &str) -> String {
    format!(
        "DO $tenant_plane$ DECLARE s text; BEGIN FOR s IN {query} LOOP EXECUTE s; END LOOP; END \
         $tenant_plane$;"
    )
}

/// The first column of every row of `query`, run with the login role's name.
async fn names(
    client: &impl GenericClient,
    step: &'static str,
    query: &str,
    login: &str,
) -> Result<Vec<String>, HostSqlError> {
    let rows = client.query(query, &[&login]).await.map_err(sql(step))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Pins the session's search path so that nothing a tenant created can be
/// found by an unqualified name.
pub(crate) async fn pin_search_path(client: &impl GenericClient) -> Result<(), HostSqlError> {
    client
        .batch_execute("SET search_path = pg_catalog")
        .await
        .map_err(sql("pin search_path"))
}

/// Makes `tenant_plane` and its history table exist, owned by `owner`:
/// moves the first model's history out of `public`, moves aside a
/// `tenant_plane` schema the tenant created itself, and drops any trigger on
/// the history table. Returns what it moved or dropped.
pub(crate) async fn prepare_history(
    client: &impl GenericClient,
    owner: &PgIdent,
    login: Option<&PgIdent>,
) -> Result<Vec<String>, HostSqlError> {
    let mut changed = Vec::new();
    if let Some(login) = login {
        changed.extend(
            run_generated(
                client,
                "move a planted schema aside",
                "SELECT format('ALTER SCHEMA %I RENAME TO %I', nspname,
                               nspname || '_planted_' || extract(epoch FROM now())::bigint)
                   FROM pg_namespace
                  WHERE nspname = $1 AND nspowner = to_regrole($2)",
                &[&SCHEMA, &login.to_string()],
            )
            .await?,
        );
    }
    client
        .batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {SCHEMA} AUTHORIZATION {owner}"
        ))
        .await
        .map_err(sql("create the tenant_plane schema"))?;
    // The first model's history table, if it is a real table not created by
    // the tenant, moves into the schema under its new name.
    let legacy_owner_ok = match login {
        Some(login) => format!(
            "c.relowner <> to_regrole({})",
            quote_literal(login.as_str())
        ),
        None => "true".to_owned(),
    };
    changed.extend(
        run_generated(
            client,
            "move the template history",
            &format!(
                "SELECT format('ALTER TABLE %s SET SCHEMA {SCHEMA}; \
                                ALTER TABLE {SCHEMA}.tenant_plane_template_history \
                                RENAME TO template_history', c.oid::regclass)
                   FROM pg_class c
                  WHERE c.oid = to_regclass('{LEGACY_HISTORY_TABLE}') AND c.relkind = 'r'
                    AND to_regclass('{HISTORY_TABLE}') IS NULL AND {legacy_owner_ok}"
            ),
            &[],
        )
        .await?,
    );
    changed.extend(
        run_generated(
            client,
            "drop triggers on the template history",
            &format!(
                "SELECT format('DROP TRIGGER %I ON %s', t.tgname, t.tgrelid::regclass)
                   FROM pg_trigger t
                  WHERE t.tgrelid = to_regclass('{HISTORY_TABLE}') AND NOT t.tgisinternal"
            ),
            &[],
        )
        .await?,
    );
    Ok(changed)
}

/// The triggers and routines of the tenant's own making: routines its login
/// role owns, and triggers that call them. The template has none (its
/// objects are owned by the template owner), and under the current model
/// the login role cannot create any.
pub async fn tenant_code(
    client: &impl GenericClient,
    login: &PgIdent,
) -> Result<Vec<String>, HostSqlError> {
    names(
        client,
        "look for tenant code",
        &format!(
            "SELECT format('trigger %I on %s', t.tgname, t.tgrelid::regclass)
                   FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid
                  WHERE NOT t.tgisinternal AND p.proowner = to_regrole($1)
                 UNION ALL
                 SELECT format('routine %s', p.oid::regprocedure)
                   FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                  WHERE {USER_SCHEMAS} AND p.proowner = to_regrole($1)
                  ORDER BY 1"
        ),
        login.to_string().as_str(),
    )
    .await
}

/// Drops the tenant's own triggers and routines (see [`tenant_code`]), and
/// its views and rules that read or write `tenant_plane`: a view or rule
/// checks access with its relation owner's rights, which are the owner
/// role's once [`hand_over`] ran, so the tenant would reach the history
/// through them.
async fn drop_tenant_code(
    client: &impl GenericClient,
    login: &PgIdent,
) -> Result<Vec<String>, HostSqlError> {
    let mut dropped = run_generated(
        client,
        "drop tenant views and rules over tenant_plane",
        "SELECT DISTINCT
                CASE WHEN r.rulename = '_RETURN'
                     THEN format('DROP %s IF EXISTS %s CASCADE',
                                 CASE c.relkind WHEN 'm' THEN 'MATERIALIZED VIEW'
                                                ELSE 'VIEW' END,
                                 c.oid::regclass)
                     ELSE format('DROP RULE IF EXISTS %I ON %s', r.rulename, c.oid::regclass)
                END
           FROM pg_rewrite r
           JOIN pg_class c ON c.oid = r.ev_class
           JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
                           AND d.refclassid = 'pg_class'::regclass
           JOIN pg_class target ON target.oid = d.refobjid
          WHERE c.relowner = to_regrole($1)
            AND target.relnamespace = to_regnamespace($2)
            AND c.relnamespace <> target.relnamespace",
        &[&login.to_string(), &SCHEMA],
    )
    .await?;
    dropped.extend(
        run_generated(
            client,
            "drop tenant triggers",
            "SELECT format('DROP TRIGGER %I ON %s', t.tgname, t.tgrelid::regclass)
               FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid
              WHERE NOT t.tgisinternal AND p.proowner = to_regrole($1)",
            &[&login.to_string()],
        )
        .await?,
    );
    dropped.extend(
        run_generated(
            client,
            "drop tenant routines",
            &format!(
                "SELECT format('DROP %s IF EXISTS %s CASCADE',
                               CASE p.prokind WHEN 'p' THEN 'PROCEDURE'
                                              WHEN 'a' THEN 'AGGREGATE' ELSE 'FUNCTION' END,
                               p.oid::regprocedure)
                   FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                  WHERE {USER_SCHEMAS} AND p.proowner = to_regrole($1)"
            ),
            &[&login.to_string()],
        )
        .await?,
    );
    Ok(dropped)
}

/// Hands every schema (`public` too: a clone's `public` otherwise belongs to
/// its database's owner, and migrations rolled out later create there),
/// relation, routine and type of the database that `owner` does not own
/// yet to `owner`.
pub(crate) async fn hand_over(
    client: &impl GenericClient,
    owner: &PgIdent,
) -> Result<(), HostSqlError> {
    client
        .batch_execute(&hand_over_sql(owner))
        .await
        .map_err(sql("hand objects to the owner"))
}

/// The statements of [`hand_over`], run server-side: one round trip, not
/// one per object of the template.
fn hand_over_sql(owner: &PgIdent) -> String {
    // The quoted identifier (`Display`), as a literal: `%s` and
    // `to_regrole` take it as written.
    let owner = owner.to_string();
    let owner = quote_literal(&owner);
    [
        format!(
            "SELECT format('ALTER SCHEMA %I OWNER TO %s', n.nspname, $1::text)
               FROM pg_namespace n
              WHERE {USER_SCHEMAS} AND n.nspowner <> to_regrole($1)"
),
        format!(
            "SELECT format('ALTER %s %s OWNER TO %s',
                           CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                                          WHEN 'f' THEN 'FOREIGN TABLE' WHEN 'S' THEN 'SEQUENCE'
                                          ELSE 'TABLE' END,
                           c.oid::regclass, $1::text)
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE {USER_SCHEMAS} AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
                AND c.relowner <> to_regrole($1)
                -- Sequences of serial and identity columns follow their table.
                AND NOT (c.relkind = 'S' AND EXISTS (
                        SELECT 1 FROM pg_depend d
                         WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                           AND d.deptype IN ('a', 'i')))
                -- Partitions follow their parent.
                AND NOT c.relispartition"
),
        format!(
            "SELECT format('ALTER ROUTINE %s OWNER TO %s', p.oid::regprocedure, $1::text)
               FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
              WHERE {USER_SCHEMAS} AND p.prokind IN ('f', 'p') AND p.proowner <> to_regrole($1)"
),
        format!(
            "SELECT format('ALTER %s %s OWNER TO %s',
                           CASE t.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END,
                           t.oid::regtype, $1::text)
               FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
              WHERE {USER_SCHEMAS} AND t.typowner <> to_regrole($1)
                AND (t.typtype IN ('e', 'd', 'r')
                     OR (t.typtype = 'c' AND EXISTS (
                            SELECT 1 FROM pg_class c WHERE c.oid = t.typrelid AND c.relkind = 'c')))"
),
    ]
    .iter()
    .map(|q| execute_each(&q.replace("$1", &owner)))
    .collect()
}

/// PUBLIC's rights: exactly the model's, on every schema but
/// `tenant_plane`, and as default privileges for what `owner` creates later.
/// `login`, a tenant's login role, loses any rights of its own (the second
/// model's grants, or what the first model let it hold).
pub(crate) async fn grant(
    client: &impl GenericClient,
    owner: &PgIdent,
    login: Option<&PgIdent>,
) -> Result<(), HostSqlError> {
    client
        .batch_execute(&grant_sql(owner, login))
        .await
        .map_err(sql("grant PUBLIC its rights"))
}

/// The statements of [`grant`], run server-side in one round trip.
fn grant_sql(owner: &PgIdent, login: Option<&PgIdent>) -> String {
    // `%2$s`: the grantees that lose everything first.
    let revoked = match login {
        Some(login) => format!("PUBLIC, {login}"),
        None => "PUBLIC".to_owned(),
    };
    let query = format!(
        "SELECT format(
                 'REVOKE ALL ON SCHEMA %1$I FROM %2$s;
                  REVOKE ALL ON ALL TABLES IN SCHEMA %1$I FROM %2$s;
                  REVOKE ALL ON ALL SEQUENCES IN SCHEMA %1$I FROM %2$s;
                  REVOKE ALL ON ALL ROUTINES IN SCHEMA %1$I FROM %2$s;'
                 || CASE WHEN n.nspname = $3 THEN '' ELSE
                    'GRANT USAGE ON SCHEMA %1$I TO PUBLIC;
                     GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA %1$I TO PUBLIC;
                     GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA %1$I TO PUBLIC;
                     GRANT EXECUTE ON ALL ROUTINES IN SCHEMA %1$I TO PUBLIC;
                     ALTER DEFAULT PRIVILEGES FOR ROLE %4$s IN SCHEMA %1$I
                           GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO PUBLIC;
                     ALTER DEFAULT PRIVILEGES FOR ROLE %4$s IN SCHEMA %1$I
                           GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO PUBLIC;
                     ALTER DEFAULT PRIVILEGES FOR ROLE %4$s IN SCHEMA %1$I
                           GRANT EXECUTE ON ROUTINES TO PUBLIC;'
                 END,
                 n.nspname, $1::text, $3::text, $2::text)
               FROM pg_namespace n
              WHERE {USER_SCHEMAS}
              ORDER BY n.nspname"
    );
    // The quoted identifier (`Display`), as a literal.
    let owner = owner.to_string();
    execute_each(
        &query
            .replace("$1", &quote_literal(&revoked))
            .replace("$2", &quote_literal(&owner))
            .replace("$3", &quote_literal(SCHEMA)),
    )
}

/// Brings a tenant database to the current model, in one transaction:
/// history in place, the tenant's own code dropped, every object `owner`'s
/// (the template owner), PUBLIC's rights exactly the model's and the login
/// role's none of its own. Idempotent. Returns what it had to move or drop
/// (empty for a database already on the model).
pub async fn apply(
    client: &mut Client,
    owner: &PgIdent,
    login: &PgIdent,
) -> Result<Vec<String>, HostSqlError> {
    let tx = client.transaction().await.map_err(sql("begin"))?;
    tx.batch_execute("SET LOCAL search_path = pg_catalog")
        .await
        .map_err(sql("pin search_path"))?;
    let mut changed = prepare_history(&tx, owner, Some(login)).await?;
    changed.extend(drop_tenant_code(&tx, login).await?);
    hand_over(&tx, owner).await?;
    grant(&tx, owner, Some(login)).await?;
    tx.commit().await.map_err(sql("commit"))?;
    Ok(changed)
}

/// The template version the database's own migration history shows.
pub async fn template_version(client: &impl GenericClient) -> Result<i32, HostSqlError> {
    let row = client
        .query_one(
            &format!("SELECT coalesce(max(version), 0) FROM {HISTORY_TABLE}"),
            &[],
        )
        .await
        .map_err(sql("read template version"))?;
    Ok(row.get(0))
}

/// Objects of the database the login role owns (nothing, on the model).
pub async fn owned_by(
    client: &impl GenericClient,
    login: &PgIdent,
) -> Result<Vec<String>, HostSqlError> {
    names(
        client,
        "look for objects the tenant role owns",
        &format!(
            "SELECT format('schema %I', n.nspname) FROM pg_namespace n
                  WHERE {USER_SCHEMAS} AND n.nspowner = to_regrole($1)
                 UNION ALL
                 SELECT format('relation %s', c.oid::regclass)
                   FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE {USER_SCHEMAS} AND c.relowner = to_regrole($1)
                 UNION ALL
                 SELECT format('routine %s', p.oid::regprocedure)
                   FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                  WHERE {USER_SCHEMAS} AND p.proowner = to_regrole($1)
                  ORDER BY 1"
        ),
        login.to_string().as_str(),
    )
    .await
}

/// Schemas the login role may create objects in (none, on the model).
pub async fn creatable_schemas(
    client: &impl GenericClient,
    login: &PgIdent,
) -> Result<Vec<String>, HostSqlError> {
    names(
        client,
        "check schema privileges",
        &format!(
            "SELECT n.nspname::text FROM pg_namespace n
                  WHERE {USER_SCHEMAS} AND has_schema_privilege($1, n.oid, 'CREATE')
                  ORDER BY 1"
        ),
        login.as_str(),
    )
    .await
}
