//! A db host that accepts connections and never answers (a stuck server, a
//! dead network path) fails an attempt within the connect deadline, with
//! the host named, instead of hanging the reconciler.

use std::time::Duration;

use registry::hosts::{self, HostState, NewHost};

use crate::helpers::spawn_app_with;

/// Accepts TCP connections and holds them open without a byte in reply.
async fn black_hole() -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (port, task)
}

#[tokio::test]
async fn a_host_that_never_answers_fails_the_attempt_within_the_deadline() {
    let (port, hole) = black_hole().await;
    let app = spawn_app_with(&[
        ("TENANT_PLANE__HOSTS__STUCK__PASSWORD", "never-checked"),
        ("TENANT_PLANE__DATABASE__CONNECT_TIMEOUT", "1s"),
    ])
    .await;
    let client = app.pool().get().await.unwrap();
    hosts::upsert(
        &client,
        &NewHost {
            name: "stuck".into(),
            host: "127.0.0.1".into(),
            port,
            admin_user: "postgres".into(),
            tls: Default::default(),
            capacity: 10,
        },
    )
    .await
    .unwrap();
    hosts::set_state(&client, "default", HostState::Draining)
        .await
        .unwrap();
    let ids = app.create_org("on a stuck host").await;

    // The pass ends (the bound here only keeps a regression from hanging
    // the suite; the deadline under test is the 1 s connect timeout).
    tokio::time::timeout(Duration::from_secs(60), app.reconcile())
        .await
        .expect("the reconciler came back from the stuck host");
    let t = app.registry_tenant(ids.org_id.as_str()).await;
    let error = t.last_error.expect("the attempt was recorded");
    assert!(
        error.contains("\"stuck\"") && error.contains("did not answer"),
        "{error}"
    );
    // Every attempt came back, so the reconciler got to give up.
    assert_eq!(
        t.status,
        model::TenantStatus::Failed,
        "after {} attempts",
        t.attempts
    );
    hole.abort();
}
