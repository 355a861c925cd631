//! What the intake stores for each kind of delivery, and the directory
//! effects of each event type, using Clerk's published examples.

use webhooks::samples::{SampleEvent, SampleIds};

use crate::helpers::{new_svix_id, outcome, spawn_app};

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/../../fixtures/clerk/webhooks/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[tokio::test]
async fn an_oversized_body_is_refused_with_413_and_nothing_stored() {
    let app = spawn_app().await;
    let mut event = SampleEvent::new("organization.created", &SampleIds::random()).unwrap();
    event = event.name("x".repeat(1024 * 1024 + 1));
    let body = event.to_body();
    let response = app.deliver(&new_svix_id(), body).await;
    assert_eq!(response.status(), 413);
    let json: serde_json::Value = response.json().await.unwrap();
    assert_eq!(json["error"], "payload_too_large");
    assert_eq!(app.count("webhook_events").await, 0);

    // Without a Content-Length (chunked), the limit still holds.
    let big = vec![b' '; 2 * 1024 * 1024];
    let stream = futures::stream::iter(
        big.chunks(64 * 1024)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    );
    let response = app
        .http
        .post(app.webhook_url())
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    assert_eq!(app.count("webhook_events").await, 0);
}

#[tokio::test]
async fn an_unknown_event_type_is_stored_as_ignored() {
    let app = spawn_app().await;
    let id = new_svix_id();
    let body = br#"{"type":"session.created","object":"event","timestamp":1716883200000,"data":{"id":"sess_1"}}"#;
    let response = app.deliver(&id, body.to_vec()).await;
    assert_eq!(response.status(), 200);
    assert_eq!(outcome(response).await, "ignored");
    assert_eq!(app.stored_outcome(&id).await.as_deref(), Some("ignored"));
    assert_eq!(app.count("tenant_registry").await, 0);
}

#[tokio::test]
async fn a_signed_but_unparseable_payload_is_dead_lettered_with_its_raw_body() {
    let app = spawn_app().await;
    for body in [
        "this is not JSON {".to_owned(),
        r#"{"type":"organization.created","data":{"id":"org_1","name":"no timestamps"}}"#.to_owned(),
        r#"{"type":"organization.created","data":{"id":"org_1","name":"nul\u0000","created_at":1,"updated_at":1}}"#.to_owned(),
    ] {
        let id = new_svix_id();
        let response = app.deliver(&id, body.clone().into_bytes()).await;
        assert_eq!(response.status(), 200, "{body}");
        assert_eq!(outcome(response).await, "dead");
        let row = app
            .client
            .query_one(
                "SELECT outcome, error, coalesce(raw_body, payload::text) FROM webhook_events WHERE svix_id = $1",
                &[&id],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), "dead");
        assert!(!row.get::<_, String>(1).is_empty(), "an error is recorded");
        let stored: String = row.get(2);
        if body.starts_with("this") || body.contains("\\u0000") {
            assert_eq!(stored, body, "raw body kept byte for byte");
        } else {
            assert!(stored.contains("no timestamps"));
        }
    }
    assert_eq!(app.count("tenant_registry").await, 0);
}

#[tokio::test]
async fn clerk_published_examples_are_applied_to_the_directory() {
    let app = spawn_app().await;
    for name in [
        "user.created.openapi-example.json",
        "organization.created.openapi-example.json",
        "organizationMembership.created.openapi-example.json",
        "organization.updated.openapi-example.json",
        "organizationMembership.updated.openapi-example.json",
        "user.updated.openapi-example.json",
        "user.created.clerk-docs-overview.json",
    ] {
        let response = app.deliver(&new_svix_id(), fixture(name)).await;
        assert_eq!(response.status(), 200, "{name}");
        assert_eq!(outcome(response).await, "applied", "{name}");
    }
    let tenant = app.tenant("org_2g7np7Hrk0SN6kj5EDMLDaKNL0S").await.unwrap();
    assert_eq!(tenant.name, "Acme Corp Updated");
    assert_eq!(tenant.slug.as_deref(), Some("acme-corp-updated"));
    assert_eq!(
        (tenant.status.as_str(), tenant.desired_state.as_str()),
        ("pending", "active")
    );

    let role: String = app
        .client
        .query_one("SELECT role FROM organization_memberships WHERE clerk_membership_id = 'orgmem_2g7np7Hrk0SN6kj5EDMLDaKNL0S'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(role, "org:admin");
    let row = app
        .client
        .query_one("SELECT username, last_name FROM users WHERE clerk_user_id = 'user_2g7np7Hrk0SN6kj5EDMLDaKNL0S'", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, Option<String>>(0).as_deref(), Some("johndoe"));
    assert_eq!(
        row.get::<_, Option<String>>(1).as_deref(),
        Some("Doe Updated")
    );
    let email: Option<String> = app
        .client
        .query_one("SELECT primary_email FROM users WHERE clerk_user_id = 'user_29w83sxmDNGwOuEthce5gg56FcC'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(email.as_deref(), Some("example@example.org"));

    // The deletions soft-delete and mark for retirement.
    for name in [
        "organizationMembership.deleted.openapi-example.json",
        "user.deleted.openapi-example.json",
        "organization.deleted.openapi-example.json",
    ] {
        let response = app.deliver(&new_svix_id(), fixture(name)).await;
        assert_eq!(outcome(response).await, "applied", "{name}");
    }
    let tenant = app.tenant("org_2g7np7Hrk0SN6kj5EDMLDaKNL0S").await.unwrap();
    assert_eq!(tenant.desired_state, "deleted");
    let deleted: i64 = app
        .client
        .query_one(
            "SELECT (SELECT count(*) FROM users WHERE deleted_at IS NOT NULL)
                  + (SELECT count(*) FROM organization_memberships WHERE deleted_at IS NOT NULL)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(deleted, 2);
    assert_eq!(app.count("users").await, 2, "soft-deleted, never removed");

    let kinds: Vec<String> = testkit::column(
        &app.client,
        "SELECT kind FROM tenant_events ORDER BY id",
        &[],
    )
    .await;
    assert_eq!(kinds, ["registered", "deletion_requested"]);
}

#[tokio::test]
async fn healthz_and_readyz_answer() {
    let app = spawn_app().await;
    let r = app
        .http
        .get(format!("{}/healthz", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = app
        .http
        .get(format!("{}/readyz", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
