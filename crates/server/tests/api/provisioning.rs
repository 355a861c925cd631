//! organization.created -> an isolated tenant database, and its lifecycle:
//! suspension, deletion with retention, restore.

use model::status::TenantStatus;
use registry::tenants::Action;

use crate::helpers::{connect_as, spawn_app, spawn_app_with};

#[tokio::test]
async fn organization_created_provisions_a_database_cloned_from_the_template() {
    let app = spawn_app().await;
    let ids = app.create_org("Acme").await;
    assert_eq!(
        app.registry_tenant(ids.org_id.as_str()).await.status,
        TenantStatus::Pending
    );
    assert!(app.reconcile().await >= 1);

    let t = app.registry_tenant(ids.org_id.as_str()).await;
    assert_eq!(t.status, TenantStatus::Active);
    assert_eq!(t.template_version, Some(1));
    assert_eq!(t.db_host(), Some("default"));
    let db = t.db_name().unwrap().to_owned();
    let role = t.db_role().unwrap().to_owned();
    assert!(db.starts_with(&app.prefix.prefix), "{db}");
    assert!(db.len() < 63);

    // The database exists, is owned by the tenant's NOLOGIN owner role (the
    // login role owns nothing), and holds the template's tables.
    let owner: String = app
        .client
        .query_one(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = $1",
            &[&db],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(owner, format!("{role}_owner"));
    let creds = app.credentials(ids.org_id.as_str()).await;
    let tenant = connect_as(&creds, &db)
        .await
        .expect("tenant connects to its database");
    let row = tenant
        .query_one("SELECT current_database(), current_user", &[])
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, String>(1)),
        (db.clone(), role.clone())
    );
    let tables: Vec<String> = testkit::column(
        &tenant,
        "SELECT table_name::text FROM information_schema.tables
              WHERE table_schema = 'public' ORDER BY 1",
        &[],
    )
    .await;
    assert_eq!(tables, ["comments", "members", "projects", "tasks",]);
    // The tenant role can use its tables.
    tenant
        .batch_execute(
            "INSERT INTO members (clerk_user_id) VALUES ('user_1');
             INSERT INTO projects (key, name, owner_id) VALUES ('ACME', 'Launch', 1);",
        )
        .await
        .expect("tenant role writes its data");

    assert_eq!(
        app.event_kinds(ids.org_id.as_str()).await,
        ["registered", "provisioning", "active"]
    );
    // The password is stored sealed, never in plain text.
    let stored: Vec<u8> = app
        .client
        .query_one(
            "SELECT db_password_enc FROM tenant_registry WHERE clerk_org_id = $1",
            &[&ids.org_id.as_str()],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!stored
        .windows(creds.password.len())
        .any(|w| w == creds.password.as_bytes()));
    // A second pass has nothing to do.
    assert_eq!(app.reconcile().await, 0);
}

#[tokio::test]
async fn a_tenant_role_reaches_only_its_own_database() {
    let app = spawn_app().await;
    let a = app.create_org("A").await;
    let b = app.create_org("B").await;
    app.reconcile().await;
    let creds_a = app.credentials(a.org_id.as_str()).await;
    let creds_b = app.credentials(b.org_id.as_str()).await;
    assert_ne!(creds_a.dbname, creds_b.dbname);

    assert!(connect_as(&creds_a, creds_a.dbname.as_str()).await.is_ok());
    let template = format!("{}template", app.prefix.prefix);
    let control = app.db_config().config.get_dbname().unwrap().to_owned();
    for other in [creds_b.dbname.as_str(), template.as_str(), control.as_str()] {
        let err = connect_as(&creds_a, other)
            .await
            .err()
            .unwrap_or_else(|| panic!("tenant A reached {other}"));
        let code = err.code().map(|c| c.code().to_owned());
        // 42501: permission denied for database; 55000: not accepting
        // connections (the template).
        assert!(
            matches!(code.as_deref(), Some("42501") | Some("55000")),
            "{other}: {err}"
        );
    }
    // B's credentials against A's database, and a wrong password.
    assert!(connect_as(&creds_b, creds_a.dbname.as_str()).await.is_err());
    let mut forged = creds_a.clone();
    forged.password = creds_b.password.clone();
    let err = connect_as(&forged, creds_a.dbname.as_str())
        .await
        .expect_err("wrong password refused");
    assert_eq!(err.code().map(|c| c.code()), Some("28P01"), "{err}");

    // PUBLIC holds no CONNECT on any tenant database.
    let public_connect: i64 = app
        .client
        .query_one(
            "SELECT count(*) FROM pg_database d, aclexplode(d.datacl) a
              WHERE starts_with(d.datname, $1) AND a.grantee = 0
                AND a.privilege_type = 'CONNECT'",
            &[&app.prefix.prefix],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(public_connect, 0);
    let acl_missing: i64 = app
        .client
        .query_one(
            "SELECT count(*) FROM pg_database WHERE starts_with(datname, $1) AND datacl IS NULL",
            &[&app.prefix.prefix],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        acl_missing, 0,
        "a NULL acl would mean the default PUBLIC CONNECT"
    );
}

#[tokio::test]
async fn suspension_locks_the_role_out_and_ends_its_sessions() {
    let app = spawn_app().await;
    let ids = app.create_org("Sus").await;
    app.reconcile().await;
    let creds = app.credentials(ids.org_id.as_str()).await;
    let session = connect_as(&creds, creds.dbname.as_str()).await.unwrap();

    app.act(ids.org_id.as_str(), Action::Suspend).await;
    app.reconcile().await;
    assert_eq!(
        app.registry_tenant(ids.org_id.as_str()).await.status,
        TenantStatus::Suspended
    );
    assert!(
        session.simple_query("SELECT 1").await.is_err(),
        "open session was ended"
    );
    assert!(
        connect_as(&creds, creds.dbname.as_str()).await.is_err(),
        "no new logins"
    );

    app.act(ids.org_id.as_str(), Action::Resume).await;
    app.reconcile().await;
    assert_eq!(
        app.registry_tenant(ids.org_id.as_str()).await.status,
        TenantStatus::Active
    );
    assert!(connect_as(&creds, creds.dbname.as_str()).await.is_ok());
}

#[tokio::test]
async fn deletion_with_no_retention_drops_database_and_role() {
    let app = spawn_app().await;
    let ids = app.create_org("Gone").await;
    app.reconcile().await;
    let t = app.registry_tenant(ids.org_id.as_str()).await;
    let (db, role) = (
        t.db_name().unwrap().to_owned(),
        t.db_role().unwrap().to_owned(),
    );

    app.delete_org(&ids).await;
    app.reconcile().await;
    let t = app.registry_tenant(ids.org_id.as_str()).await;
    assert_eq!(t.status, TenantStatus::Deleted);
    assert!(t.deleted_at.is_some());
    assert!(!app.prefixed_databases().await.contains(&db));
    assert!(!app.role_exists(&role).await);
    // The tombstone stays, and restore is refused once purged.
    let mut client = app.pool().get().await.unwrap();
    let err = registry::tenants::act(&mut client, t.id, Action::Restore, "test")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("purged"), "{err}");
}

#[tokio::test]
async fn deletion_within_retention_keeps_the_data_locked_and_restore_brings_it_back() {
    let app = spawn_app_with(&[("TENANT_PLANE__TENANTS__RETENTION", "1h")]).await;
    let ids = app.create_org("Kept").await;
    app.reconcile().await;
    let creds = app.credentials(ids.org_id.as_str()).await;
    connect_as(&creds, creds.dbname.as_str())
        .await
        .unwrap()
        .batch_execute("INSERT INTO members (clerk_user_id) VALUES ('user_keep')")
        .await
        .unwrap();

    app.delete_org(&ids).await;
    app.reconcile().await;
    let t = app.registry_tenant(ids.org_id.as_str()).await;
    assert_eq!(t.status, TenantStatus::Deleting);
    let purge_after = t.purge_after.expect("purge time set");
    assert!(purge_after > chrono::Utc::now() + chrono::Duration::minutes(59));
    assert!(
        app.prefixed_databases()
            .await
            .contains(&creds.dbname.as_str().to_owned()),
        "database kept"
    );
    assert!(
        connect_as(&creds, creds.dbname.as_str()).await.is_err(),
        "unreachable for the tenant"
    );
    assert_eq!(
        app.reconcile().await,
        0,
        "nothing to do until the retention ends"
    );

    app.act(ids.org_id.as_str(), Action::Restore).await;
    app.reconcile().await;
    let t = app.registry_tenant(ids.org_id.as_str()).await;
    assert_eq!(t.status, TenantStatus::Active);
    assert_eq!(t.purge_after, None);
    let tenant = connect_as(&creds, creds.dbname.as_str())
        .await
        .expect("reachable again");
    let n: i64 = tenant
        .query_one(
            "SELECT count(*) FROM members WHERE clerk_user_id = 'user_keep'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1, "data survived");
}

#[tokio::test]
async fn an_organization_deleted_before_provisioning_never_gets_a_database() {
    let app = spawn_app().await;
    let ids = app.create_org("Brief").await;
    app.delete_org(&ids).await;
    app.reconcile().await;
    assert_eq!(
        app.registry_tenant(ids.org_id.as_str()).await.status,
        TenantStatus::Deleted
    );
    let template = format!("{}template", app.prefix.prefix);
    assert_eq!(app.prefixed_databases().await, [template]);
}
