//! The control-plane database going away: 503 so Svix retries, nothing lost,
//! and the redelivery applied once when it is back.

use testkit::{TestDatabase, ToggleProxy};
use webhooks::samples::{SampleEvent, SampleIds};

use crate::helpers::{new_svix_id, outcome, spawn_app_on};

#[tokio::test]
async fn database_down_answers_503_and_a_redelivery_applies_once_when_it_returns() {
    let db = TestDatabase::migrated().await;
    let config = db.config().config;
    let host = match &config.get_hosts()[0] {
        tokio_postgres::config::Host::Tcp(h) => h.clone(),
        other => panic!("tests need TCP, got {other:?}"),
    };
    let upstream = format!("{host}:{}", config.get_ports()[0]).parse().unwrap();
    let proxy = ToggleProxy::start(upstream).await;
    let via_proxy = db.url().replacen(
        &format!("@{host}:{}", config.get_ports()[0]),
        &format!("@{}", proxy.addr()),
        1,
    );
    assert_ne!(via_proxy, db.url());
    let app = spawn_app_on(db, &via_proxy).await;

    let ids = SampleIds::random();
    let body = SampleEvent::new("organization.created", &ids)
        .unwrap()
        .to_body();
    let id = new_svix_id();

    proxy.down();
    let response = app.deliver(&id, body.clone()).await;
    assert_eq!(response.status(), 503);
    // Still down: every retry is answered quickly, and still 503.
    let retry = app.deliver(&id, body.clone()).await;
    assert_eq!(retry.status(), 503);
    assert_eq!(response.headers()["retry-after"], "5");
    let json: serde_json::Value = response.json().await.unwrap();
    assert_eq!(json["error"], "unavailable");
    let ready = app
        .http
        .get(format!("{}/readyz", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    assert_eq!(app.count("webhook_events").await, 0);

    proxy.up();
    // Svix redelivers the same message (same svix-id), possibly twice.
    assert_eq!(
        outcome(app.deliver(&id, body.clone()).await).await,
        "applied"
    );
    assert_eq!(outcome(app.deliver(&id, body).await).await, "duplicate");
    assert_eq!(app.count("webhook_events").await, 1);
    assert_eq!(app.count("tenant_registry").await, 1);
}
