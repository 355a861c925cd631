//! The whole life cycle with a host admin that is not a superuser, as on
//! managed PostgreSQL: LOGIN, CREATEDB, CREATEROLE, pg_signal_backend and
//! pg_monitor, and CONNECT on `postgres`; it also owns the control database.

use std::time::Duration;

use model::status::TenantStatus;
use registry::tenants::Action;
use testkit::TestDatabase;

use crate::helpers::{connect_as, run_cli, spawn_app_full, TemplateDir, TestApp, TEMPLATE_V2};

/// A managed-style admin role on the test server; returns its name and a
/// URL of `db` that logs in as it.
async fn managed_admin(db: &TestDatabase) -> (String, String) {
    let name = format!(
        "tp_test_{}_admin",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    );
    let password = uuid::Uuid::new_v4().simple().to_string();
    let superuser = db.client().await;
    superuser
        .batch_execute(&format!(
            "CREATE ROLE \"{name}\" LOGIN CREATEDB CREATEROLE PASSWORD '{password}';
             GRANT pg_signal_backend, pg_monitor TO \"{name}\";
             GRANT CONNECT ON DATABASE postgres TO \"{name}\";
             ALTER DATABASE \"{db}\" OWNER TO \"{name}\";",
            db = db.name
        ))
        .await
        .unwrap();
    let mut url: url_parts::Url = db.url().parse().unwrap();
    url.set_credentials(&name, &password);
    (name, url.to_string())
}

/// Minimal URL surgery for `postgres://user:password@host:port/db`.
mod url_parts {
    pub struct Url {
        rest: String,
        user: String,
        password: String,
    }

    impl std::str::FromStr for Url {
        type Err = String;
        fn from_str(s: &str) -> Result<Self, String> {
            let body = s.strip_prefix("postgres://").ok_or("not a postgres URL")?;
            let (credentials, rest) = body.split_once('@').ok_or("no credentials")?;
            let (user, password) = credentials.split_once(':').unwrap_or((credentials, ""));
            Ok(Url {
                rest: rest.to_owned(),
                user: user.to_owned(),
                password: password.to_owned(),
            })
        }
    }

    impl Url {
        pub fn set_credentials(&mut self, user: &str, password: &str) {
            self.user = user.to_owned();
            self.password = password.to_owned();
        }
    }

    impl std::fmt::Display for Url {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(
                f,
                "postgres://{}:{}@{}",
                self.user, self.password, self.rest
            )
        }
    }
}

/// An app whose control database and default host are reached as a
/// managed-style admin.
async fn managed_app(extra: &[(&str, &str)]) -> (TestApp, String) {
    let db = TestDatabase::empty().await;
    let (admin, url) = managed_admin(&db).await;
    let config: tokio_postgres::Config = url.parse().unwrap();
    let (mut client, conn) = config.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    registry::schema::migrate(&mut client)
        .await
        .expect("the admin migrates the control database it owns");
    let app = spawn_app_full(db, &url, |env| env.set_all(extra)).await;
    (app, admin)
}

#[tokio::test]
async fn the_whole_life_cycle_works_with_an_admin_that_is_not_a_superuser() {
    let (app, admin) = managed_app(&[("TENANT_PLANE__TENANTS__RETENTION", "1h")]).await;
    let superuser: bool = app
        .client
        .query_one(
            "SELECT rolsuper FROM pg_roles WHERE rolname = $1",
            &[&admin],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!superuser);

    // Provisioning.
    let ids = app.create_org("managed").await;
    let org = ids.org_id.as_str();
    app.reconcile().await;
    let t = app.registry_tenant(org).await;
    assert_eq!(t.status, TenantStatus::Active, "{:?}", t.last_error);
    let creds = app.credentials(org).await;
    let session = connect_as(&creds, creds.dbname.as_str()).await.unwrap();
    session
        .batch_execute("INSERT INTO members (clerk_user_id) VALUES ('user_1')")
        .await
        .unwrap();

    // Suspension ends the tenant's sessions and refuses new ones.
    app.act(org, Action::Suspend).await;
    app.reconcile().await;
    assert_eq!(
        app.registry_tenant(org).await.status,
        TenantStatus::Suspended
    );
    let ended = tokio::time::timeout(Duration::from_secs(5), session.simple_query("SELECT 1"))
        .await
        .expect("answered");
    assert!(ended.is_err(), "the session was terminated");
    assert!(connect_as(&creds, creds.dbname.as_str()).await.is_err());
    app.act(org, Action::Resume).await;
    app.reconcile().await;
    assert_eq!(app.registry_tenant(org).await.status, TenantStatus::Active);
    connect_as(&creds, creds.dbname.as_str()).await.unwrap();

    // Rollout of a new template version, as the tenant's owner role.
    let dir = TemplateDir::with_v2(TEMPLATE_V2);
    let (code, out, err) = run_cli(
        &app,
        &["tenants", "migrate"],
        &[("TENANT_PLANE__TENANTS__TEMPLATE_DIR", dir.path())],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(app.registry_tenant(org).await.template_version, Some(2));

    // The doctor finds nothing wrong.
    let (code, out, err) = run_cli(&app, &["doctor"], &[]).await;
    assert_eq!(code, 0, "{out}{err}");

    // Deletion keeps the data through retention; restore brings it back.
    app.act(org, Action::Delete).await;
    app.reconcile().await;
    assert_eq!(
        app.registry_tenant(org).await.status,
        TenantStatus::Deleting
    );
    assert!(connect_as(&creds, creds.dbname.as_str()).await.is_err());
    app.act(org, Action::Restore).await;
    app.reconcile().await;
    assert_eq!(app.registry_tenant(org).await.status, TenantStatus::Active);
    let back = connect_as(&creds, creds.dbname.as_str()).await.unwrap();
    let n: i64 = back
        .query_one("SELECT count(*) FROM members", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1, "the data survived");

    // Past retention the database and both roles are dropped.
    app.act(org, Action::Delete).await;
    app.reconcile().await;
    app.client
        .execute(
            "UPDATE tenant_registry SET purge_after = now(), next_attempt_at = now()
              WHERE clerk_org_id = $1",
            &[&org],
        )
        .await
        .unwrap();
    app.reconcile().await;
    assert_eq!(app.registry_tenant(org).await.status, TenantStatus::Deleted);
    assert!(!app
        .prefixed_databases()
        .await
        .contains(&creds.dbname.as_str().to_owned()));
    assert!(!app.role_exists(creds.role.as_str()).await);
    assert!(
        !app.role_exists(&format!("{}_owner", creds.role.as_str()))
            .await
    );
}

#[tokio::test]
async fn hosts_check_says_which_privilege_the_admin_lacks() {
    let (app, admin) = managed_app(&[]).await;
    let (code, out, err) = run_cli(&app, &["hosts", "check", "default"], &[]).await;
    assert_eq!(code, 0, "{out}{err}");
    for what in [
        "CREATEDB",
        "CREATEROLE",
        "pg_signal_backend",
        "server version",
    ] {
        assert!(
            out.lines().any(|l| l.starts_with("ok") && l.contains(what)),
            "{what}: {out}"
        );
    }

    app.client
        .batch_execute(&format!(
            "ALTER ROLE \"{admin}\" NOCREATEROLE; REVOKE pg_signal_backend FROM \"{admin}\";"
        ))
        .await
        .unwrap();
    let (code, out, err) = run_cli(&app, &["hosts", "check", "default"], &[]).await;
    assert_eq!(code, 2, "{out}{err}");
    let missing: Vec<&str> = out.lines().filter(|l| l.starts_with("MISSING")).collect();
    assert_eq!(missing.len(), 2, "{out}");
    assert!(
        missing[0].contains("CREATEROLE") && missing[0].contains("ALTER ROLE"),
        "{out}"
    );
    assert!(
        missing[1].contains("pg_signal_backend") && missing[1].contains("GRANT pg_signal_backend"),
        "{out}"
    );
    let (code, out, _) = run_cli(&app, &["hosts", "check", "nope"], &[]).await;
    assert_eq!(code, 1, "{out}");
}
