//! Failed steps: attempts with backoff, `failed` after the last one, and
//! `retry` after the cause is fixed; and the worker woken by NOTIFY.

use std::time::Duration;

use model::status::TenantStatus;
use registry::hosts::{self, HostState, NewHost};
use registry::tenants::Action;

use crate::helpers::{spawn_app_with, wait_until};

#[tokio::test]
async fn an_unreachable_host_fails_with_backoff_then_retry_recovers() {
    let app = spawn_app_with(&[
        ("TENANT_PLANE__WORKER__MAX_ATTEMPTS", "3"),
        ("TENANT_PLANE__HOSTS__BROKEN__PASSWORD", "irrelevant"),
    ])
    .await;
    let client = app.pool().get().await.unwrap();
    // The only accepting host points at a closed port.
    hosts::upsert(
        &client,
        &NewHost {
            name: "broken".into(),
            host: "127.0.0.1".into(),
            port: 1,
            admin_user: "postgres".into(),
            capacity: 10,
            tls: Default::default(),
        },
    )
    .await
    .unwrap();
    hosts::set_state(&client, "default", HostState::Draining)
        .await
        .unwrap();

    let ids = app.create_org("unlucky").await;
    let org = ids.org_id.as_str();
    wait_until("the tenant to fail", Duration::from_secs(30), || async {
        app.reconcile().await;
        app.registry_tenant(org).await.status == TenantStatus::Failed
    })
    .await;
    let t = app.registry_tenant(org).await;
    assert_eq!(t.attempts, 3);
    assert!(
        t.last_error
            .as_deref()
            .unwrap()
            .contains("cannot connect to db host \"broken\""),
        "{:?}",
        t.last_error
    );
    assert!(
        !t.last_error.unwrap().contains("irrelevant"),
        "no password in errors"
    );
    assert_eq!(
        app.event_kinds(org).await,
        [
            "registered",
            "provisioning",
            "attempt_failed",
            "attempt_failed",
            "failed"
        ]
    );
    // Failed tenants are left alone until an operator retries.
    assert_eq!(app.reconcile().await, 0);

    // Fix the host's address (the same server as default) and retry.
    let default = hosts::get(&client, "default").await.unwrap().unwrap();
    hosts::upsert(
        &client,
        &NewHost {
            name: "broken".into(),
            host: default.host.clone(),
            port: default.port,
            admin_user: default.admin_user.clone(),
            capacity: 10,
            tls: default.tls.clone(),
        },
    )
    .await
    .unwrap();
    let retried = app.act(org, Action::Retry).await;
    assert_eq!(
        (retried.status, retried.attempts),
        (TenantStatus::Pending, 0)
    );
    // The broken host's password was wrong too: that is the next failure,
    // recorded with its own message once the host's backoff (at most 50 ms
    // here) lets an attempt probe it.
    wait_until(
        "the next attempt's failure",
        Duration::from_secs(30),
        || async {
            app.reconcile().await;
            let error = app.registry_tenant(org).await.last_error;
            error.is_some_and(|e| !e.contains("127.0.0.1:1"))
        },
    )
    .await;
    let t = app.registry_tenant(org).await;
    assert_ne!(t.status, TenantStatus::Active);
    let error = t.last_error.unwrap_or_default();
    assert!(error.contains("password authentication failed"), "{error}");
}

#[tokio::test]
async fn the_background_worker_is_woken_by_notify_not_by_polling() {
    // An hour between polls: only NOTIFY can wake the worker in time.
    let app = spawn_app_with(&[
        ("TENANT_PLANE__WORKER__ENABLED", "true"),
        ("TENANT_PLANE__WORKER__POLL_INTERVAL", "1h"),
    ])
    .await;
    // Let the worker finish its first (empty) pass and go idle.
    tokio::time::sleep(Duration::from_millis(500)).await;
    // A closed loop: each organization arrives right after the previous one
    // became active, i.e. while the worker is between passes. A wake-up lost
    // in that gap would leave a tenant pending for the hour.
    for i in 0..15 {
        let ids = app.create_org(&format!("wake up {i}")).await;
        wait_until(
            "the worker to provision",
            Duration::from_secs(30),
            || async {
                app.registry_tenant(ids.org_id.as_str()).await.status == TenantStatus::Active
            },
        )
        .await;
    }
}
