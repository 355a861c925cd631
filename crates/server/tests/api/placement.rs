//! Placement across several PostgreSQL servers.

use model::status::TenantStatus;
use registry::hosts::{self, HostState};

use crate::helpers::spawn_app_with;

#[tokio::test]
async fn tenants_spread_by_free_capacity_and_a_draining_host_gets_none() {
    let password = crate::helpers::second_host_password();
    let app = spawn_app_with(&[
        ("TENANT_PLANE__HOSTS__SECOND__PASSWORD", &password),
        ("TENANT_PLANE__TENANTS__DEFAULT_HOST_CAPACITY", "4"),
    ])
    .await;
    app.add_second_host(8).await;
    let client = app.pool().get().await.unwrap();

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

#[tokio::test]
async fn a_host_backing_off_gets_new_tenants_only_when_no_other_has_room() {
    let password = crate::helpers::second_host_password();
    let app = spawn_app_with(&[("TENANT_PLANE__HOSTS__SECOND__PASSWORD", &password)]).await;
    app.add_second_host(1000).await;
    let client = app.pool().get().await.unwrap();
    let second = hosts::get(&client, "second").await.unwrap().unwrap();
    assert_eq!(second.failures, 0);
    // "second" has the most room, but could not be reached a moment ago.
    hosts::record_unreachable(
        &client,
        second.id,
        "test",
        std::time::Duration::from_secs(600),
    )
    .await
    .unwrap();
    let ids = app.create_org("avoids the failing host").await;
    app.reconcile().await;
    let t = app.registry_tenant(ids.org_id.as_str()).await;
    assert_eq!(t.db_host(), Some("default"));

    // With the other host draining, it is still used (better late than
    // never), and its first attempt there, answered, ends the backoff.
    assert!(hosts::set_state(&client, "default", HostState::Draining)
        .await
        .unwrap());
    let ids = app.create_org("waits for the failing host").await;
    app.reconcile().await;
    let t = app.registry_tenant(ids.org_id.as_str()).await;
    assert_eq!(t.db_host(), Some("second"));
    assert_eq!(t.status, TenantStatus::Active);
    let second = hosts::get(&client, "second").await.unwrap().unwrap();
    assert_eq!((second.failures, second.retry_after), (0, None));
}

#[tokio::test]
async fn a_tenant_on_a_host_backing_off_waits_for_the_backoff_to_end() {
    let app = crate::helpers::spawn_app().await;
    let org = app.create_org("on a flaky host").await.org_id;
    app.reconcile().await;
    let client = app.pool().get().await.unwrap();
    let default = hosts::get(&client, "default").await.unwrap().unwrap();
    hosts::record_unreachable(
        &client,
        default.id,
        "test",
        std::time::Duration::from_secs(600),
    )
    .await
    .unwrap();

    app.act(org.as_str(), registry::tenants::Action::Suspend)
        .await;
    assert_eq!(
        app.reconcile().await,
        0,
        "no attempt while the host backs off"
    );
    assert_eq!(
        app.registry_tenant(org.as_str()).await.status,
        TenantStatus::Active
    );

    hosts::record_reachable(&client, default.id).await.unwrap();
    app.reconcile().await;
    assert_eq!(
        app.registry_tenant(org.as_str()).await.status,
        TenantStatus::Suspended
    );
}
