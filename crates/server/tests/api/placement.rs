//! Placement across several PostgreSQL servers.

use model::status::TenantStatus;
use registry::hosts::{self, HostState, NewHost};

use crate::helpers::spawn_app_with;

#[tokio::test]
async fn tenants_spread_by_free_capacity_and_a_draining_host_gets_none() {
    let second_target = testkit::parse_admin_url(&testkit::second_admin_url());
    let second = &second_target.config;
    let password = String::from_utf8(second.get_password().unwrap().to_vec()).unwrap();
    let app = spawn_app_with(&[
        ("TENANT_PLANE__HOSTS__SECOND__PASSWORD", &password),
        ("TENANT_PLANE__TENANTS__DEFAULT_HOST_CAPACITY", "4"),
    ])
    .await;
    let client = app.pool().get().await.unwrap();
    let tokio_postgres::config::Host::Tcp(host) = &second.get_hosts()[0] else {
        panic!("second server must be reached over TCP")
    };
    hosts::upsert(
        &client,
        &NewHost {
            name: "second".into(),
            host: host.clone(),
            port: second.get_ports()[0],
            admin_user: second.get_user().unwrap().into(),
            tls: (&second_target.tls).into(),
            capacity: 8,
        },
    )
    .await
    .unwrap();

    // 4 free on default, 8 on second: the first four go to second, then
    // they alternate (ties go to the first name).
    let mut orgs = Vec::new();
    for i in 0..8 {
        orgs.push(app.create_org(&format!("spread {i}")).await);
        app.reconcile().await;
    }
    let placed = |name: &'static str| {
        let client = &client;
        async move { hosts::get(client, name).await.unwrap().unwrap().tenants }
    };
    assert_eq!((placed("default").await, placed("second").await), (2, 6));
    for ids in &orgs {
        let t = app.registry_tenant(ids.org_id.as_str()).await;
        assert_eq!(t.status, TenantStatus::Active);
        // Each tenant reaches its own database on its own server.
        let creds = app.credentials(ids.org_id.as_str()).await;
        crate::helpers::connect_as(&creds, creds.dbname.as_str())
            .await
            .unwrap();
    }

    assert!(hosts::set_state(&client, "second", HostState::Draining)
        .await
        .unwrap());
    for i in 0..2 {
        let ids = app.create_org(&format!("after drain {i}")).await;
        app.reconcile().await;
        let t = app.registry_tenant(ids.org_id.as_str()).await;
        assert_eq!(t.db_host(), Some("default"));
    }
    assert_eq!((placed("default").await, placed("second").await), (4, 6));

    // Every host full or draining: the tenant waits with a clear error.
    let ids = app.create_org("no room").await;
    app.reconcile().await;
    let t = app.registry_tenant(ids.org_id.as_str()).await;
    assert_eq!(t.db_host(), None);
    assert!(t
        .last_error
        .unwrap()
        .contains("no db host is accepting tenants"));
    assert!(t.attempts >= 1);
}
