//! At-least-once delivery: the same svix-id, however often and however
//! concurrently, is recorded and applied once.

use futures::future::join_all;
use webhooks::samples::{SampleEvent, SampleIds};

use crate::helpers::{new_svix_id, outcome, spawn_app};

#[tokio::test]
async fn the_same_delivery_fifty_times_concurrently_is_recorded_and_applied_once() {
    let app = spawn_app().await;
    let ids = SampleIds::random();
    let body = SampleEvent::new("organization.created", &ids)
        .unwrap()
        .to_body();
    let id = new_svix_id();
    let responses = join_all((0..50).map(|_| app.deliver(&id, body.clone()))).await;
    let mut outcomes = Vec::new();
    for r in responses {
        assert_eq!(r.status(), 200);
        outcomes.push(outcome(r).await);
    }
    assert_eq!(outcomes.iter().filter(|o| *o == "applied").count(), 1);
    assert_eq!(outcomes.iter().filter(|o| *o == "duplicate").count(), 49);
    assert_eq!(app.count("webhook_events").await, 1);
    assert_eq!(app.count("tenant_registry").await, 1);
    assert_eq!(app.count("tenant_events").await, 1);
}

#[tokio::test]
async fn distinct_deliveries_of_one_new_organization_racing_create_one_tenant() {
    let app = spawn_app().await;
    let ids = SampleIds::random();
    let created = SampleEvent::new("organization.created", &ids)
        .unwrap()
        .updated_at_ms(1_000);
    let updated = SampleEvent::new("organization.updated", &ids)
        .unwrap()
        .name("Newest")
        .updated_at_ms(2_000);
    let svix_ids: Vec<String> = (0..20).map(|_| new_svix_id()).collect();
    let sends = svix_ids.iter().enumerate().map(|(i, id)| {
        let e = if i % 2 == 0 { &created } else { &updated };
        app.deliver(id, e.to_body())
    });
    for r in join_all(sends).await {
        let status = r.status();
        assert_eq!(status, 200, "{}", r.text().await.unwrap_or_default());
    }
    assert_eq!(app.count("tenant_registry").await, 1);
    assert_eq!(app.count("webhook_events").await, 20);
    assert_eq!(
        app.tenant(ids.org_id.as_str()).await.unwrap().name,
        "Newest"
    );
}

#[tokio::test]
async fn a_redelivery_after_success_changes_nothing() {
    let app = spawn_app().await;
    let ids = SampleIds::random();
    let id = new_svix_id();
    let body = SampleEvent::new("organization.created", &ids)
        .unwrap()
        .to_body();
    assert_eq!(
        outcome(app.deliver(&id, body.clone()).await).await,
        "applied"
    );
    let before: chrono::DateTime<chrono::Utc> = app
        .client
        .query_one("SELECT updated_at FROM tenant_registry", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(outcome(app.deliver(&id, body).await).await, "duplicate");
    let after: chrono::DateTime<chrono::Utc> = app
        .client
        .query_one("SELECT updated_at FROM tenant_registry", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(before, after);
    assert_eq!(app.stored_outcome(&id).await.as_deref(), Some("applied"));
}
