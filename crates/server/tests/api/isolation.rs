//! Isolation against a hostile tenant. Every test logs in as the tenant
//! itself, over TCP with the password the registry holds for it, and tries
//! what a tenant with bad intentions would: create or alter objects, plant
//! code for an admin or the owner role to run, reach its neighbours, drop
//! its own database, take more connections than its plan allows. The model
//! they hold the implementation to is described in the provisioner's
//! `privileges` module.

use std::time::Duration;

use model::naming::quote_ident;
use model::TenantStatus;
use registry::tenants::{Action, CredentialsError, TenantCredentials, PRIVILEGE_MODEL};
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use crate::helpers::{
    connect_as, run_cli, spawn_app, spawn_app_with, spawn_worker, wait_for_stderr, wait_until,
    TemplateDir, TestApp,
};

const DEADLINE: Duration = Duration::from_secs(90);
const DENIED: SqlState = SqlState::INSUFFICIENT_PRIVILEGE;

/// A new organization's tenant, provisioned: its org id and credentials.
async fn provisioned(app: &TestApp, name: &str) -> (String, TenantCredentials) {
    let org = app.create_org(name).await.org_id.as_str().to_owned();
    app.reconcile().await;
    assert_eq!(app.registry_tenant(&org).await.status, TenantStatus::Active);
    let creds = app.credentials(&org).await;
    (org, creds)
}

/// The tenant's own session in its own database.
async fn login(creds: &TenantCredentials) -> Client {
    connect_as(creds, creds.dbname.as_str())
        .await
        .unwrap_or_else(|e| panic!("the tenant logs in: {e}"))
}

/// An admin session in `db`, for looking at what the tenant cannot.
async fn admin_in(app: &TestApp, db: &str) -> Client {
    let mut target = app.db_config();
    target.config.dbname(db);
    target.connect_spawned().await.expect("admin connects")
}

/// The SQLSTATE of a failed statement or login.
trait Refusal {
    fn state(&self) -> Option<&SqlState>;
}

impl Refusal for tokio_postgres::Error {
    fn state(&self) -> Option<&SqlState> {
        self.code()
    }
}

impl Refusal for registry::tls::ConnectError {
    fn state(&self) -> Option<&SqlState> {
        self.code()
    }
}

fn sqlstate(e: &impl Refusal) -> Option<&str> {
    e.state().map(SqlState::code)
}

/// Runs `sql` and asserts that the server refuses it with `code`.
async fn refused(client: &Client, sql: &str, code: SqlState) {
    match client.batch_execute(sql).await {
        Ok(()) => panic!("the tenant was allowed: {sql}"),
        Err(e) => assert_eq!(e.code(), Some(&code), "{sql}: {}", registry::describe(&e)),
    }
}

/// The single `bigint` (or `count(*)`) `sql` answers.
async fn int(
    client: &Client,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> i64 {
    client
        .query_one(sql, params)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {}", registry::describe(&e)))
        .get(0)
}

/// A V2 that, like a real migration with a backfill, writes to every row of
/// `tasks` as the owner role: a trigger left on `tasks` would fire.
const V2_WITH_BACKFILL: &str = "
CREATE TABLE labels (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text NOT NULL UNIQUE);
ALTER TABLE tasks ADD COLUMN label_id bigint REFERENCES labels (id) ON DELETE SET NULL;
UPDATE tasks SET updated_at = updated_at;
";

#[tokio::test]
async fn the_login_role_owns_nothing_and_can_create_or_alter_nothing_but_uses_its_data() {
    let app = spawn_app().await;
    let (_, creds) = provisioned(&app, "hostile").await;
    let db = &creds.dbname;

    // Ownership of anything, in any database of the cluster, is in pg_shdepend.
    let owned = int(
        &app.client,
        "SELECT count(*) FROM pg_shdepend
          WHERE refclassid = 'pg_authid'::regclass AND deptype = 'o'
            AND refobjid = (SELECT oid FROM pg_roles WHERE rolname = $1)",
        &[&creds.role.as_str()],
    )
    .await;
    assert_eq!(owned, 0, "the login role owns nothing");

    let tenant = login(&creds).await;
    // No CREATE on the database or on any schema.
    refused(&tenant, "CREATE SCHEMA planted", DENIED).await;
    refused(&tenant, "CREATE TABLE public.planted (x int)", DENIED).await;
    refused(&tenant, "CREATE TABLE planted (x int)", DENIED).await;
    refused(
        &tenant,
        "CREATE FUNCTION public.planted() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        DENIED,
    )
    .await;
    refused(&tenant, "CREATE VIEW public.planted AS SELECT 1", DENIED).await;
    // No TRIGGER on the template's tables, whatever the function: a built-in
    // one, or one of its own in pg_temp (TEMPORARY is granted, so that much
    // it may create; such a function dies with this session and no other
    // session can see it).
    refused(
        &tenant,
        "CREATE TRIGGER planted BEFORE UPDATE ON public.tasks
           FOR EACH ROW EXECUTE FUNCTION suppress_redundant_updates_trigger()",
        DENIED,
    )
    .await;
    tenant
        .batch_execute(
            "CREATE FUNCTION pg_temp.planted() RETURNS trigger LANGUAGE plpgsql
               AS $$ BEGIN RETURN NEW; END $$",
        )
        .await
        .expect("a temporary function of its own");
    refused(
        &tenant,
        "CREATE TRIGGER planted BEFORE INSERT ON public.tasks
           FOR EACH ROW EXECUTE FUNCTION pg_temp.planted()",
        DENIED,
    )
    .await;
    // The database and the tables are the owner role's to alter.
    refused(
        &tenant,
        &format!("ALTER DATABASE {db} SET search_path = public"),
        DENIED,
    )
    .await;
    refused(
        &tenant,
        "ALTER TABLE public.tasks ADD COLUMN planted int",
        DENIED,
    )
    .await;
    refused(&tenant, "CREATE INDEX ON public.tasks (title)", DENIED).await;
    refused(&tenant, "TRUNCATE public.tasks", DENIED).await;
    // The migration history is out of reach, and not where it used to be.
    refused(
        &tenant,
        "SELECT * FROM tenant_plane.template_history",
        DENIED,
    )
    .await;
    refused(
        &tenant,
        "INSERT INTO tenant_plane.template_history (version) VALUES (999)",
        DENIED,
    )
    .await;
    refused(
        &tenant,
        "GRANT SELECT ON tenant_plane.template_history TO PUBLIC",
        DENIED,
    )
    .await;
    refused(
        &tenant,
        "SELECT * FROM public.tenant_plane_template_history",
        SqlState::UNDEFINED_TABLE,
    )
    .await;
    // The rights inside are PUBLIC's (CONNECT is the boundary): exactly
    // the model's, and the database's ACL holds no entry for PUBLIC.
    let admin = admin_in(&app, db.as_str()).await;
    let public_rights = || async {
        testkit::column::<String>(
            &admin,
            "SELECT format('%s %s %s', k, o, a.privilege_type)
               FROM (SELECT 'relation' AS k, c.oid::regclass::text AS o, c.relacl AS acl
                       FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace
                     UNION ALL
                     SELECT 'schema', n.nspname::text, n.nspacl FROM pg_namespace n
                      WHERE n.nspname IN ('public', 'tenant_plane')
                     UNION ALL
                     SELECT 'database', d.datname::text, d.datacl FROM pg_database d
                      WHERE d.datname = current_database()) x,
                    aclexplode(x.acl) a
              WHERE a.grantee = 0
              ORDER BY 1",
            &[],
        )
        .await
    };
    let before = public_rights().await;
    let kinds: std::collections::BTreeSet<&str> = before
        .iter()
        .map(|r| r.rsplit(' ').next().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["DELETE", "INSERT", "SELECT", "UPDATE", "USAGE"].into(),
        "{before:?}"
    );
    assert!(
        before.contains(&"schema public USAGE".to_owned()),
        "{before:?}"
    );
    assert!(
        before
            .iter()
            .all(|r| !r.starts_with("database ") && !r.contains("tenant_plane")),
        "{before:?}"
    );
    // Granting what it holds without grant option is no error in
    // PostgreSQL, only a warning (01007) that nothing was granted: assert
    // that PUBLIC indeed holds nothing more afterwards.
    tenant
        .batch_execute(&format!(
            "GRANT SELECT ON public.tasks TO PUBLIC;
             GRANT ALL ON ALL TABLES IN SCHEMA public TO PUBLIC;
             GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO PUBLIC;
             GRANT ALL ON SCHEMA public TO PUBLIC;
             GRANT ALL ON DATABASE {db} TO PUBLIC;"
        ))
        .await
        .expect("a GRANT without grant option only warns");
    assert_eq!(
        public_rights().await,
        before,
        "the tenant granted PUBLIC something"
    );

    // What it may do: work with the template's tables.
    let members: Vec<i64> = testkit::column(
        &tenant,
        "INSERT INTO members (clerk_user_id) VALUES ('user_1'), ('user_2') RETURNING id",
        &[],
    )
    .await;
    assert_eq!(members[1], members[0] + 1, "identity columns number rows");
    let next = int(
        &tenant,
        "SELECT nextval(pg_get_serial_sequence('public.members', 'id'))",
        &[],
    )
    .await;
    assert_eq!(next, members[1] + 1, "the sequence is usable");
    let project = int(
        &tenant,
        "INSERT INTO projects (key, name, owner_id) VALUES ('ACME', 'Launch', $1) RETURNING id",
        &[&members[0]],
    )
    .await;
    let task = int(
        &tenant,
        "INSERT INTO tasks (project_id, number, title, assignee_id)
         VALUES ($1, 1, 'Ship it', $2) RETURNING id",
        &[&project, &members[1]],
    )
    .await;
    tenant
        .execute(
            "INSERT INTO comments (task_id, author_id, body) VALUES ($1, $2, 'soon')",
            &[&task, &members[0]],
        )
        .await
        .unwrap();
    let updated = tenant
        .execute("UPDATE tasks SET status = 'done' WHERE id = $1", &[&task])
        .await
        .unwrap();
    assert_eq!(updated, 1);
    let done = int(
        &tenant,
        "SELECT count(*) FROM tasks t JOIN comments c ON c.task_id = t.id
          WHERE t.status = 'done' AND c.body = 'soon'",
        &[],
    )
    .await;
    assert_eq!(done, 1);
    for (table, rows) in [
        ("comments", 1),
        ("tasks", 1),
        ("projects", 1),
        ("members", 2),
    ] {
        let deleted = tenant
            .execute(&format!("DELETE FROM {table}"), &[])
            .await
            .unwrap();
        assert_eq!(deleted, rows, "{table}");
    }
}

#[tokio::test]
async fn the_tenant_cannot_drop_or_alter_its_database_from_another_one() {
    let app = spawn_app().await;
    let (org, creds) = provisioned(&app, "arsonist").await;
    let (db, role) = (&creds.dbname, &creds.role);

    for other in ["postgres", "template1"] {
        // PUBLIC may connect to both by default; where it may not, the
        // tenant is refused here, which counts as refused.
        let session = match connect_as(&creds, other).await {
            Ok(session) => session,
            Err(e) => {
                assert_eq!(sqlstate(&e), Some("42501"), "{other}: {e}");
                continue;
            }
        };
        for sql in [
            format!("DROP DATABASE {db} WITH (FORCE)"),
            format!("ALTER DATABASE {db} RENAME TO planted"),
            format!("ALTER DATABASE {db} OWNER TO {role}"),
            format!("ALTER DATABASE {db} WITH ALLOW_CONNECTIONS false"),
            format!("ALTER DATABASE {db} CONNECTION LIMIT 0"),
            "CREATE DATABASE planted".to_owned(),
        ] {
            refused(&session, &sql, DENIED).await;
        }
        // template1 is what CREATE DATABASE clones by default, and it
        // waits (up to 5 s) while anyone is connected to it: leave at once.
        drop(session);
    }

    let exists = int(
        &app.client,
        "SELECT count(*) FROM pg_database WHERE datname = $1 AND datallowconn",
        &[&db.as_str()],
    )
    .await;
    assert_eq!(exists, 1, "the database is still there, open");
    assert_eq!(app.registry_tenant(&org).await.status, TenantStatus::Active);
    let again = app.credentials(&org).await;
    let session = login(&again).await;
    let current: String = session
        .query_one("SELECT current_database()::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(current, db.as_str());
}

#[tokio::test]
async fn another_tenants_credentials_and_the_template_are_refused() {
    let app = spawn_app().await;
    let (_, a) = provisioned(&app, "A").await;
    let (_, b) = provisioned(&app, "B").await;

    // B's own login, aimed at A's database: authenticated, but no CONNECT.
    let err = connect_as(&b, a.dbname.as_str())
        .await
        .expect_err("B reached A's database");
    assert_eq!(sqlstate(&err), Some("42501"), "{err}");
    // B's password for A's role.
    let mut forged = a.clone();
    forged.password = b.password.clone();
    let err = connect_as(&forged, a.dbname.as_str())
        .await
        .expect_err("a neighbour's password opened A's role");
    assert_eq!(sqlstate(&err), Some("28P01"), "{err}");

    let template = format!("{}template", app.prefix.prefix);
    for creds in [&a, &b] {
        let err = connect_as(creds, &template)
            .await
            .expect_err("a tenant reached the template");
        assert_eq!(sqlstate(&err), Some("55000"), "{err}");
        // The template only accepts connections while it is migrated; even
        // then a tenant holds no CONNECT on it.
        let may = app
            .client
            .query_one(
                "SELECT has_database_privilege($1::name, $2::text, 'CONNECT')",
                &[&creds.role.as_str(), &template],
            )
            .await
            .unwrap()
            .get::<_, bool>(0);
        assert!(!may, "{} may connect to the template", creds.role);
    }
}

#[tokio::test]
async fn the_connection_limit_refuses_one_login_too_many_and_a_new_limit_reaches_existing_tenants()
{
    const LIMIT: &str = "TENANT_PLANE__PLANS__DEFAULT__CONNECTION_LIMIT";
    let app = spawn_app_with(&[(LIMIT, "2")]).await;
    let (org, creds) = provisioned(&app, "greedy").await;

    let first = login(&creds).await;
    let second = login(&creds).await;
    let err = connect_as(&creds, creds.dbname.as_str())
        .await
        .expect_err("a third session under a limit of 2");
    assert_eq!(sqlstate(&err), Some("53300"), "{err}");

    // The plan changes: a reconciler configured like the app but with a
    // limit of 3 runs against the same control database.
    let events = app.event_kinds(&org).await;
    let env: Vec<(String, String)> = app
        .env
        .iter()
        .map(|(k, v)| match k.as_str() {
            LIMIT => (k.clone(), "3".to_owned()),
            _ => (k.clone(), v.clone()),
        })
        .collect();
    assert!(env.iter().any(|(k, v)| k == LIMIT && v == "3"));
    let settings = tenant_plane::config::Settings::load_from(None, env).unwrap();
    let reconciler = tenant_plane::provisioning::reconciler(&settings, app.pool()).unwrap();
    assert_eq!(reconciler.drain().await.unwrap(), 1, "one tenant to repair");

    let limit = int(
        &app.client,
        "SELECT rolconnlimit::bigint FROM pg_roles WHERE rolname = $1",
        &[&creds.role.as_str()],
    )
    .await;
    assert_eq!(limit, 3);
    // The tenant never left `active`: no status was recorded on the way, and
    // its open sessions were left alone.
    let t = app.registry_tenant(&org).await;
    assert_eq!(t.status, TenantStatus::Active);
    assert_eq!(app.event_kinds(&org).await, events);
    for session in [&first, &second] {
        session.simple_query("SELECT 1").await.expect("still open");
    }
    let _third = login(&creds).await;
    let err = connect_as(&creds, creds.dbname.as_str())
        .await
        .expect_err("a fourth session under a limit of 3");
    assert_eq!(sqlstate(&err), Some("53300"), "{err}");
}

/// A DO block that gives every table in `public` and `tenant_plane` to
/// `owner` (SQL: a quoted role name or `CURRENT_USER`).
fn tables_owned_by(owner: &str) -> String {
    format!(
        "DO $$ DECLARE r regclass; BEGIN
           FOR r IN SELECT c.oid FROM pg_class c
                     WHERE c.relnamespace IN ('public'::regnamespace, 'tenant_plane'::regnamespace)
                       AND c.relkind IN ('r', 'p') LOOP
             EXECUTE format('ALTER TABLE %s OWNER TO {owner}', r);
           END LOOP;
         END $$"
    )
}

/// Puts a tenant back into the first privilege model, as its code left a
/// database: the login role owns the database and holds ALL on `public` and
/// its tables, the template's objects are the admin's (who built the
/// template), the history is `public.tenant_plane_template_history`, there
/// is no `tenant_plane` schema, and the registry holds the password sealed
/// in the format from before binding. Answers that sealed password.
async fn revert_to_old_model(app: &TestApp, org: &str, creds: &TenantCredentials) -> Vec<u8> {
    let (db, role) = (&creds.dbname, &creds.role);
    let owner = quote_ident(&format!("{}_owner", role.as_str()));
    admin_in(app, db.as_str())
        .await
        .batch_execute(&format!(
            "-- The first model's admin acted as the login role, which owned
             -- the database (a CREATEROLE admin holds only ADMIN on the roles
             -- it made from PostgreSQL 16 on; a tenant born on the current
             -- model never needed more).
             DO $$ BEGIN
               IF current_setting('server_version_num')::int >= 160000 THEN
                 -- A string: PostgreSQL 15 cannot parse the options.
                 EXECUTE 'GRANT {role} TO CURRENT_USER WITH INHERIT TRUE, SET TRUE';
               ELSE
                 GRANT {role} TO CURRENT_USER;
               END IF;
             END $$;
             -- The template's objects were the admin's, who built it (and
             -- foreign-key checks run as the referenced table's owner); they
             -- are the template owner's now.
             REASSIGN OWNED BY {owner} TO CURRENT_USER;
             ALTER DATABASE {db} OWNER TO {role};
             -- `public` was its database owner's, as on a fresh cluster.
             ALTER SCHEMA public OWNER TO pg_database_owner;
             {tables};
             REVOKE ALL ON DATABASE {db} FROM PUBLIC;
             GRANT CONNECT, TEMPORARY ON DATABASE {db} TO {role};
             ALTER TABLE tenant_plane.template_history SET SCHEMA public;
             ALTER TABLE public.template_history RENAME TO tenant_plane_template_history;
             DROP SCHEMA tenant_plane;
             REVOKE ALL ON SCHEMA public FROM PUBLIC;
             GRANT ALL ON SCHEMA public TO {role};
             GRANT ALL ON ALL TABLES IN SCHEMA public TO {role};
             GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {role};
             GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA public TO {role};",
            tables = tables_owned_by("CURRENT_USER"),
        ))
        .await
        .expect("back to the first model");
    let sealed = app.settings.cipher().unwrap().seal_unbound(&creds.password);
    let id = app.registry_tenant(org).await.id;
    app.client
        .execute(
            "UPDATE tenant_registry SET privilege_model = 0, db_password_enc = $2 WHERE id = $1",
            &[&id.as_uuid(), &sealed],
        )
        .await
        .unwrap();
    sealed
}

/// Rows the tenant's recording trigger wrote as any role but `role`.
async fn run_as_others(admin: &Client, role: &str) -> Vec<(String, String)> {
    admin
        .query(
            "SELECT who, via FROM public.ran_as WHERE who <> $1 ORDER BY 1, 2",
            &[&role],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// Triggers and routines outside the system schemas (the template has none).
async fn code_in(admin: &Client) -> Vec<String> {
    testkit::column(
        admin,
        "SELECT format('trigger %I on %s', tgname, tgrelid::regclass)
               FROM pg_trigger WHERE NOT tgisinternal
             UNION ALL
             SELECT format('routine %s', p.oid::regprocedure)
               FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
              WHERE n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'
             ORDER BY 1",
        &[],
    )
    .await
}

#[tokio::test]
async fn old_model_tenants_are_upgraded_without_ever_running_their_planted_code() {
    let app = spawn_app().await;
    let cipher = app.settings.cipher().unwrap();
    let (org, creds) = provisioned(&app, "planter").await;
    // A second tenant of the first model, which plants nothing.
    let (plain_org, plain) = provisioned(&app, "plain").await;
    let old_sealed = revert_to_old_model(&app, &org, &creds).await;
    let plain_old_sealed = revert_to_old_model(&app, &plain_org, &plain).await;
    let (db, role) = (&creds.dbname, creds.role.as_str());

    // As the tenant, which the first model let own its database.
    let admin_user = app.db_config().config.get_user().unwrap().to_owned();
    let tenant = login(&app.credentials(&org).await).await;
    tenant
        .batch_execute(&format!(
            "-- Data of its own, which must survive the upgrade.
             CREATE TABLE public.mine (x int);
             INSERT INTO public.mine VALUES (1), (2), (3);

             -- Code for others to run: a trigger function that records who
             -- runs it, on the history (which admins and owners write) and
             -- on a template table (which migrations write).
             CREATE TABLE public.ran_as (who text NOT NULL, via text NOT NULL);
             GRANT INSERT ON public.ran_as TO PUBLIC;
             CREATE FUNCTION public.record_who() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 INSERT INTO public.ran_as (who, via) VALUES (current_user, TG_TABLE_NAME);
                 RETURN coalesce(NEW, OLD);
             END $$;
             CREATE TRIGGER record_who BEFORE INSERT OR UPDATE OR DELETE
                 ON public.tenant_plane_template_history
                 FOR EACH ROW EXECUTE FUNCTION public.record_who();
             CREATE TRIGGER record_who BEFORE INSERT OR UPDATE OR DELETE ON public.tasks
                 FOR EACH ROW EXECUTE FUNCTION public.record_who();

             -- A fake history where an admin's default search path looks
             -- first, and that search path for every session.
             CREATE SCHEMA {admin};
             CREATE VIEW {admin}.tenant_plane_template_history AS
                 SELECT 999 AS version, 'planted'::text AS name,
                        now()::text AS applied_on, '0'::text AS checksum;
             ALTER DATABASE {db} SET search_path = {admin}, public;
             -- Another where the current model keeps the real one.
             CREATE SCHEMA tenant_plane;
             CREATE TABLE tenant_plane.template_history AS
                 SELECT * FROM {admin}.tenant_plane_template_history;

             -- A view and a rule over the real history: once the owner role
             -- owns them, they would read and write it with its rights.
             CREATE VIEW public.history_peek AS
                 SELECT * FROM public.tenant_plane_template_history;
             CREATE RULE mine_writes_history AS ON INSERT TO public.mine
                 DO ALSO INSERT INTO public.tenant_plane_template_history
                        (version, name, applied_on, checksum)
                      VALUES (NEW.x + 1000, 'planted', now()::text, '0');

             -- A task, so that the recording is seen to work.
             INSERT INTO members (clerk_user_id) VALUES ('user_old');
             INSERT INTO projects (key, name) VALUES ('OLD', 'Before the upgrade');
             INSERT INTO tasks (project_id, number, title)
                 SELECT id, 1, 'planted' FROM projects;",
            admin = quote_ident(&admin_user),
        ))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "the first model allows all this: {}",
                registry::describe(&e)
            )
        });
    drop(tenant);
    let admin = admin_in(&app, db.as_str()).await;
    let recorded: Vec<(String, String)> = admin
        .query("SELECT who, via FROM public.ran_as", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(recorded, [(role.to_owned(), "tasks".to_owned())]);

    app.reconcile().await;

    for (org, creds, old) in [
        (&org, &creds, &old_sealed),
        (&plain_org, &plain, &plain_old_sealed),
    ] {
        let t = app.registry_tenant(org).await;
        assert_eq!(t.status, TenantStatus::Active, "{org}: {:?}", t.last_error);
        assert_eq!(t.privilege_model, PRIVILEGE_MODEL);
        assert_eq!(t.template_version, Some(1), "the real version, not 999");
        let owner: String = app
            .client
            .query_one(
                "SELECT pg_get_userbyid(datdba)::text FROM pg_database WHERE datname = $1",
                &[&creds.dbname.as_str()],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(owner, format!("{}_owner", creds.role.as_str()));
        // Re-sealed, bound to the tenant and its role; the same password.
        let sealed = t.db_password_enc.clone().expect("a sealed password");
        assert_ne!(&sealed, old);
        assert_eq!(
            cipher.open(&sealed, t.id, &creds.role).unwrap(),
            creds.password
        );
        let now = registry::tenants::credentials(&cipher, &t, &app.db_config().tls)
            .expect("credentials open");
        assert_eq!(now.password, creds.password);
        let session = login(creds).await;
        refused(&session, "CREATE TABLE public.planted (x int)", DENIED).await;
        refused(&session, "CREATE SCHEMA planted", DENIED).await;
        let search_path: String = session
            .query_one("SHOW search_path", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            search_path, "\"$user\", public",
            "database settings were reset"
        );
    }

    // The tenant's data is still its own to use.
    let tenant = login(&creds).await;
    assert_eq!(
        int(&tenant, "SELECT count(*) FROM public.mine", &[]).await,
        3
    );
    tenant
        .batch_execute(
            "INSERT INTO public.mine VALUES (4);
             UPDATE public.mine SET x = 40 WHERE x = 4;
             DELETE FROM public.mine WHERE x = 40;",
        )
        .await
        .expect("the tenant writes its own table");
    refused(&tenant, "ALTER TABLE public.mine ADD COLUMN y int", DENIED).await;
    let aside = int(
        &admin,
        "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'tenant\\_plane\\_planted\\_%'",
        &[],
    )
    .await;
    assert_eq!(aside, 1, "the planted tenant_plane schema was kept, aside");
    // Its code is gone, and with it every way into the history.
    assert_eq!(code_in(&admin).await, Vec::<String>::new());
    let peek = tenant
        .query("SELECT version FROM public.history_peek", &[])
        .await
        .map(|rows| rows.len());
    assert!(
        matches!(&peek, Err(e) if matches!(sqlstate(e), Some("42P01" | "42501"))),
        "the tenant reads the history through its view: {peek:?}"
    );
    let history: Vec<i32> = testkit::column(
        &admin,
        "SELECT version FROM tenant_plane.template_history ORDER BY 1",
        &[],
    )
    .await;
    assert_eq!(history, [1], "the rule on mine wrote the history");
    assert_eq!(run_as_others(&admin, role).await, []);

    // Suspended and resumed, then a rollout that writes every task as the
    // owner role: still nothing of the tenant's runs as anyone else.
    app.act(&org, Action::Suspend).await;
    app.reconcile().await;
    assert_eq!(
        app.registry_tenant(&org).await.status,
        TenantStatus::Suspended
    );
    app.act(&org, Action::Resume).await;
    app.reconcile().await;
    assert_eq!(app.registry_tenant(&org).await.status, TenantStatus::Active);
    let dir = TemplateDir::with_v2(V2_WITH_BACKFILL);
    let (code, out, err) = run_cli(&app, &["tenants", "migrate"], &dir.env()).await;
    assert_eq!(code, 0, "{out}{err}");
    for org in [&org, &plain_org] {
        assert_eq!(app.registry_tenant(org).await.template_version, Some(2));
    }
    let history: Vec<i32> = testkit::column(
        &admin,
        "SELECT version FROM tenant_plane.template_history ORDER BY 1",
        &[],
    )
    .await;
    assert_eq!(history, [1, 2]);
    assert_eq!(run_as_others(&admin, role).await, []);
    login(&creds)
        .await
        .batch_execute(
            "INSERT INTO labels (name) VALUES ('urgent');
             UPDATE tasks SET label_id = (SELECT id FROM labels);",
        )
        .await
        .expect("the tenant uses what the rollout added");
}

/// Puts a tenant back into the second privilege model: every object of
/// its database the tenant's own owner role's, the rights inside the login
/// role's own grants, PUBLIC holding none.
async fn revert_to_model_1(app: &TestApp, org: &str, creds: &TenantCredentials) {
    let (db, role) = (&creds.dbname, &creds.role);
    let owner = quote_ident(&format!("{}_owner", role.as_str()));
    admin_in(app, db.as_str())
        .await
        .batch_execute(&format!(
            "SET search_path = pg_catalog;
             ALTER SCHEMA public OWNER TO {owner};
             ALTER SCHEMA tenant_plane OWNER TO {owner};
             {tables};
             REVOKE ALL ON SCHEMA public FROM PUBLIC;
             REVOKE ALL ON ALL TABLES IN SCHEMA public FROM PUBLIC;
             REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM PUBLIC;
             GRANT USAGE ON SCHEMA public TO {role};
             GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role};
             GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO {role};",
            tables = tables_owned_by(&owner),
        ))
        .await
        .expect("back to model 1");
    app.client
        .execute(
            "UPDATE tenant_registry SET privilege_model = 1 WHERE clerk_org_id = $1",
            &[&org],
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn a_model_1_tenant_is_moved_to_public_rights_without_losing_its_sessions_or_data() {
    let app = spawn_app().await;
    let (org, creds) = provisioned(&app, "second model").await;
    revert_to_model_1(&app, &org, &creds).await;
    let session = login(&creds).await;
    session
        .batch_execute("INSERT INTO members (clerk_user_id) VALUES ('user_before')")
        .await
        .expect("model 1 rights are the login role's own");

    app.reconcile().await;

    let t = app.registry_tenant(&org).await;
    assert_eq!(t.status, TenantStatus::Active, "{:?}", t.last_error);
    assert_eq!(t.privilege_model, PRIVILEGE_MODEL);
    // The session from before the move goes on, now with PUBLIC's rights.
    session
        .batch_execute("INSERT INTO members (clerk_user_id) VALUES ('user_after')")
        .await
        .expect("the session writes after the move");
    let members = int(&session, "SELECT count(*) FROM members", &[]).await;
    assert_eq!(members, 2, "the data from before the move is there");

    let admin = admin_in(&app, creds.dbname.as_str()).await;
    let own_rights = int(
        &admin,
        "SELECT (SELECT count(*) FROM pg_class c, aclexplode(c.relacl) a
                  WHERE a.grantee = to_regrole($1))
              + (SELECT count(*) FROM pg_namespace n, aclexplode(n.nspacl) a
                  WHERE a.grantee = to_regrole($1))",
        &[&creds.role.as_str()],
    )
    .await;
    assert_eq!(own_rights, 0, "the login role keeps grants of its own");
    let template_owner = app.settings.prefix().unwrap().template_owner_ident();
    let foreign = int(
        &admin,
        "SELECT (SELECT count(*) FROM pg_class c
                  WHERE c.relnamespace IN ('public'::regnamespace, 'tenant_plane'::regnamespace)
                    AND c.relowner <> to_regrole($1))
              + (SELECT count(*) FROM pg_namespace n
                  WHERE n.nspname IN ('public', 'tenant_plane') AND n.nspowner <> to_regrole($1))",
        &[&template_owner.as_str()],
    )
    .await;
    assert_eq!(foreign, 0, "objects not the template owner's");
    refused(
        &session,
        "SELECT * FROM tenant_plane.template_history",
        DENIED,
    )
    .await;
    refused(&session, "CREATE TABLE public.planted (x int)", DENIED).await;
}

#[tokio::test]
async fn a_new_database_is_unreachable_until_it_is_opened() {
    let app = crate::helpers::spawn_app_with(&crate::helpers::SHORT_LEASE).await;
    // Paused once the roles exist, and again after CREATE DATABASE (the
    // roles are made beside the clone, so both pauses come once both are
    // done). The login role cannot log in at either step: it is NOLOGIN
    // until the transaction that opens the clone. The clone is closed to
    // connections until that same transaction, which revokes PUBLIC's
    // default CONNECT first.
    for step in ["role", "database"] {
        let org = app.create_org(step).await.org_id.as_str().to_owned();
        let mut worker = spawn_worker(&app, Some(step));
        wait_for_stderr(&mut worker, &format!("paused at step {step}"), DEADLINE).await;

        let t = app.registry_tenant(&org).await;
        assert_eq!(t.status, TenantStatus::Provisioning);
        let creds = app.credentials(&org).await;
        let err = connect_as(&creds, creds.dbname.as_str())
            .await
            .expect_err("the tenant reached a database still being provisioned");
        assert_eq!(sqlstate(&err), Some("28000"), "at {step}: {err}");
        let can_login: bool = app
            .client
            .query_one(
                "SELECT rolcanlogin FROM pg_roles WHERE rolname = $1",
                &[&creds.role.as_str()],
            )
            .await
            .unwrap()
            .get(0);
        assert!(!can_login, "LOGIN before the clone is open at {step}");
        let db = app
            .client
            .query_opt(
                "SELECT datallowconn FROM pg_database WHERE datname = $1",
                &[&creds.dbname.as_str()],
            )
            .await
            .unwrap()
            .map(|row| row.get::<_, bool>(0));
        assert_eq!(db, Some(false), "datallowconn at {step}");

        worker.kill().await.expect("SIGKILL the worker");
        app.reconcile_until(&org, TenantStatus::Active).await;
        login(&creds).await;
    }
}

#[tokio::test]
async fn a_sealed_password_moved_to_another_tenants_row_does_not_open() {
    let (app, issuer) = crate::resolve::spawn_resolving_app(&[]).await;
    let cipher = app.settings.cipher().unwrap();
    let (a_org, a) = provisioned(&app, "A").await;
    let (b_org, b) = provisioned(&app, "B").await;
    let (a_id, b_id) = (
        app.registry_tenant(&a_org).await.id,
        app.registry_tenant(&b_org).await.id,
    );
    app.client
        .execute(
            "UPDATE tenant_registry
                SET db_password_enc = (SELECT db_password_enc FROM tenant_registry WHERE id = $1)
              WHERE id = $2",
            &[&a_id.as_uuid(), &b_id.as_uuid()],
        )
        .await
        .unwrap();

    let moved = app.registry_tenant(&b_org).await;
    assert_eq!(moved.privilege_model, PRIVILEGE_MODEL);
    let err = registry::tenants::credentials(&cipher, &moved, &app.db_config().tls)
        .expect_err("A's ciphertext opened for B");
    assert!(
        matches!(
            err,
            registry::tenants::TenantCredentialsError::Credentials(CredentialsError::Crypto(_))
        ),
        "{err}"
    );

    // The internal resolve hands out A's password for A, and nothing for B.
    let resolve = |org: String| {
        let token = testkit::jwt::sign(
            &testkit::jwt::Session::new(&issuer, &org, testkit::jwt::now()).v2(),
        );
        app.http
            .post(format!("{}/internal/v1/resolve", app.address))
            .bearer_auth(crate::resolve::SERVICE_TOKEN)
            .json(&serde_json::json!({ "token": token }))
            .send()
    };
    let ok = resolve(a_org.clone()).await.unwrap();
    assert_eq!(ok.status(), 200);
    let body: serde_json::Value = ok.json().await.unwrap();
    assert_eq!(body["connection"]["password"], a.password.as_str());
    let refused = resolve(b_org.clone()).await.unwrap();
    assert_eq!(refused.status(), 503);
    let body = refused.text().await.unwrap();
    assert!(!body.contains(&a.password), "{body}");
    assert!(body.contains("unavailable"), "{body}");

    // A reconciler pass over B (its limits marked stale, so it is repaired)
    // cannot open the password either: it fails, B stays active, and its
    // role keeps its own password.
    app.client
        .execute(
            "UPDATE tenant_registry SET limits_applied = NULL WHERE id = $1",
            &[&b_id.as_uuid()],
        )
        .await
        .unwrap();
    app.reconcile().await;
    let t = app.registry_tenant(&b_org).await;
    assert_eq!(t.status, TenantStatus::Active);
    let error = t.last_error.unwrap_or_default();
    assert!(error.contains("could not be decrypted"), "{error}");
    let mut with_a_password = b.clone();
    with_a_password.password = a.password.clone();
    let err = connect_as(&with_a_password, b.dbname.as_str())
        .await
        .expect_err("B's role took A's password");
    assert_eq!(sqlstate(&err), Some("28P01"), "{err}");
    login(&b).await;
    login(&a).await;
}

/// Makes the registry row of `org` name `db` and `role`.
async fn point_at(app: &TestApp, org: &str, db: &str, role: &str) {
    let updated = app
        .client
        .execute(
            "UPDATE tenant_registry SET db_name = $2, db_role = $3 WHERE clerk_org_id = $1",
            &[&org, &db, &role],
        )
        .await
        .unwrap();
    assert_eq!(updated, 1);
}

/// Points each row at the other's database and role (names are unique in
/// the registry, hence the detour).
async fn swap_names(app: &TestApp, a: (&str, &TenantCredentials), b: (&str, &TenantCredentials)) {
    point_at(app, b.0, "swapping", "swapping").await;
    point_at(app, a.0, b.1.dbname.as_str(), b.1.role.as_str()).await;
    point_at(app, b.0, a.1.dbname.as_str(), a.1.role.as_str()).await;
}

#[tokio::test]
async fn a_deletion_touches_only_the_names_its_tenant_id_derives() {
    let app = spawn_app_with(&[("TENANT_PLANE__TENANTS__RETENTION", "0s")]).await;
    let (a_org, a) = provisioned(&app, "A").await;
    let (b_org, b) = provisioned(&app, "B").await;
    swap_names(&app, (&a_org, &a), (&b_org, &b)).await;
    assert_eq!(
        app.registry_tenant(&a_org).await.db_name(),
        Some(b.dbname.as_str())
    );

    app.act(&a_org, Action::Delete).await;
    app.reconcile().await;

    let t = app.registry_tenant(&a_org).await;
    assert_ne!(t.status, TenantStatus::Deleted);
    let error = t.last_error.unwrap_or_default();
    assert!(error.contains("refusing"), "{error}");
    for creds in [&b, &a] {
        assert!(
            app.prefixed_databases()
                .await
                .contains(&creds.dbname.as_str().to_owned()),
            "{} was dropped",
            creds.dbname
        );
        assert!(app.role_exists(creds.role.as_str()).await);
        login(creds).await;
    }
}

#[tokio::test]
async fn a_rollout_of_a_row_naming_another_tenants_database_changes_nothing_there() {
    let app = spawn_app().await;
    let (a_org, a) = provisioned(&app, "A").await;
    let (b_org, b) = provisioned(&app, "B").await;
    swap_names(&app, (&a_org, &a), (&b_org, &b)).await;

    // A's migrations run as A's owner role, which has no rights in B's
    // database: A's rollout fails there, and is not recorded.
    let dir = TemplateDir::with_v2(V2_WITH_BACKFILL);
    let (code, out, err) = run_cli(
        &app,
        &["tenants", "migrate", "--tenant", &a_org],
        &dir.env(),
    )
    .await;
    assert_ne!(code, 0, "{out}{err}");
    assert!(out.contains(&a_org) && out.contains("FAILED"), "{out}{err}");
    assert!(
        format!("{out}{err}").contains("refusing to touch them"),
        "the rollout checks the names before it connects: {out}{err}"
    );
    assert_eq!(app.registry_tenant(&a_org).await.template_version, Some(1));
    for creds in [&a, &b] {
        let admin = admin_in(&app, creds.dbname.as_str()).await;
        let history = int(
            &admin,
            "SELECT max(version)::bigint FROM tenant_plane.template_history",
            &[],
        )
        .await;
        assert_eq!(history, 1, "{} was migrated", creds.dbname);
        let labels = int(
            &admin,
            "SELECT count(*) FROM pg_class WHERE relname = 'labels'",
            &[],
        )
        .await;
        assert_eq!(labels, 0);
        // Default privileges only ever name the template owner, who owns
        // every object in every clone.
        let template_owner = app.settings.prefix().unwrap().template_owner_ident();
        let foreign = int(
            &admin,
            "SELECT count(*) FROM pg_default_acl WHERE defaclrole::regrole::text <> $1",
            &[&template_owner.as_str()],
        )
        .await;
        assert_eq!(foreign, 0, "{}", creds.dbname);
    }
}

#[tokio::test]
async fn an_upgrade_shuts_out_the_tenants_open_sessions_so_nothing_planted_meanwhile_survives() {
    let app = spawn_app().await;
    let (org, creds) = provisioned(&app, "racer").await;
    revert_to_old_model(&app, &org, &creds).await;
    let (db, owner) = (
        creds.dbname.as_str(),
        format!("{}_owner", creds.role.as_str()),
    );
    // `tasks` already the owner role's, so the upgrade never locks it. (The
    // owner needs CREATE on `public` to own a table there; under the first
    // model only the tenant, owning the database, could give it that.)
    login(&creds)
        .await
        .batch_execute(&format!(
            "GRANT CREATE ON SCHEMA public TO {}",
            quote_ident(&owner)
        ))
        .await
        .unwrap();
    admin_in(&app, db)
        .await
        .batch_execute(&format!(
            "ALTER TABLE public.tasks OWNER TO {}",
            quote_ident(&owner)
        ))
        .await
        .unwrap();

    // Two sessions opened under the first model, before the upgrade. One
    // holds a lock on a table of its own, which the upgrade must take to
    // hand the table over: it stops there, after it looked for the
    // tenant's code and before it took the tenant's rights away.
    let holder = login(&creds).await;
    let planter = login(&creds).await;
    holder
        .batch_execute("CREATE TABLE public.mine (x int)")
        .await
        .unwrap();
    holder
        .batch_execute("BEGIN; LOCK TABLE public.mine IN ACCESS SHARE MODE;")
        .await
        .unwrap();
    let reconciler = app.reconciler.clone();
    let upgrade = tokio::spawn(async move { reconciler.drain().await });
    wait_until("the upgrade to wait for the lock, or to finish", DEADLINE, || async {
        upgrade.is_finished()
            || int(
                &app.client,
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'",
                &[&db],
            )
            .await
                > 0
    })
    .await;

    // Meanwhile the other session plants a trigger on a template table, its
    // function to be handed to the owner role with everything else.
    let planted = planter
        .batch_execute(
            "CREATE FUNCTION public.late() RETURNS trigger LANGUAGE plpgsql
               AS $$ BEGIN RETURN NEW; END $$;
             CREATE TRIGGER late BEFORE UPDATE ON public.tasks
               FOR EACH ROW EXECUTE FUNCTION public.late();",
        )
        .await;
    let _ = holder.batch_execute("COMMIT").await;
    upgrade.await.unwrap().expect("reconciler pass");

    let t = app.registry_tenant(&org).await;
    assert_eq!(t.status, TenantStatus::Active, "{:?}", t.last_error);
    assert_eq!(t.privilege_model, PRIVILEGE_MODEL);
    assert_eq!(
        code_in(&admin_in(&app, db).await).await,
        Vec::<String>::new(),
        "planted while the upgrade ran ({planted:?})"
    );
    login(&creds).await;
}
