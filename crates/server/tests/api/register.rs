//! Registration from a verified session token: the first session of a new
//! organization often reaches tenant-plane before `organization.created`
//! (or instead of it), so the resolver registers the organization and
//! provisioning starts; the webhook completes the row when it comes. A
//! deleted organization stays deleted, an unverified token writes nothing,
//! and `resolver.register_unknown_orgs = false` keeps the old answer.

use chrono::{DateTime, TimeZone, Utc};
use jsonwebtoken::Algorithm;
use model::TenantStatus;
use serde_json::{json, Value};
use testkit::jwt::{self, sign};
use webhooks::samples::{SampleEvent, SampleIds};

use crate::helpers::TestApp;
use crate::resolve::{
    http_verdict as verdict, library_resolver, post_resolve, spawn_resolving_app, SERVICE_TOKEN,
};

/// A session of `org_id` in the organization with slug `slug`.
fn session(issuer: &str, org_id: &str, slug: &str) -> jwt::Session {
    let mut session = jwt::Session::new(issuer, org_id, jwt::now());
    session.org.slug = slug.to_owned();
    session
}

/// A slug no other test uses (slugs are unique in the registry).
fn unique_slug() -> String {
    format!("org-{}", uuid::Uuid::new_v4().simple())
}

/// POST /internal/v1/resolve asking to wait up to 30 s for the tenant.
async fn resolve_waiting(app: &TestApp, token: &str) -> reqwest::Response {
    app.http
        .post(format!("{}/internal/v1/resolve", app.address))
        .bearer_auth(SERVICE_TOKEN)
        .json(&json!({ "token": token, "wait_ms": 30_000 }))
        .send()
        .await
        .unwrap()
}

/// The audit entries of an organization's tenant: (actor, kind, detail).
async fn audit(app: &TestApp, org_id: &str) -> Vec<(String, String, Value)> {
    app.client
        .query(
            "SELECT e.actor, e.kind, e.detail FROM tenant_events e
               JOIN tenant_registry t ON t.id = e.tenant_id
              WHERE t.clerk_org_id = $1 ORDER BY e.id",
            &[&org_id],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

async fn source_updated_at(app: &TestApp, org_id: &str) -> DateTime<Utc> {
    app.client
        .query_one(
            "SELECT source_updated_at FROM tenant_registry WHERE clerk_org_id = $1",
            &[&org_id],
        )
        .await
        .unwrap()
        .get(0)
}

/// What every registration from a token leaves: a pending row, desired
/// active, with the token's slug, no name yet, the watermark every Clerk
/// event beats, and one audit entry by the resolver.
async fn assert_registered_from_token(app: &TestApp, org_id: &str, slug: &str) {
    let row = app
        .tenant(org_id)
        .await
        .expect("the organization is registered");
    assert_eq!(row.desired_state, "active");
    assert!(
        row.status == "pending" || row.status == "provisioning",
        "{row:?}"
    );
    assert_eq!(row.slug.as_deref(), Some(slug));
    assert_eq!(row.name, "", "the name waits for Clerk's webhook");
    assert_eq!(
        source_updated_at(app, org_id).await,
        registry::directory::TOKEN_WATERMARK
    );
    let audit = audit(app, org_id).await;
    assert_eq!(audit.len(), 1, "{audit:?}");
    let (actor, kind, detail) = &audit[0];
    assert_eq!((actor.as_str(), kind.as_str()), ("resolver", "registered"));
    assert_eq!(
        detail["reason"],
        json!("registered from a verified session token")
    );
    assert_eq!(detail["clerk_org_id"], json!(org_id));
}

#[tokio::test]
async fn a_v2_token_for_an_unseen_organization_registers_it_and_resolves_once_provisioned() {
    let (app, issuer) = spawn_resolving_app(&[]).await;
    let org = SampleIds::random().org_id;
    let slug = unique_slug();
    let token = sign(&session(&issuer, org.as_str(), &slug).v2());

    // Pending, like any tenant being provisioned: 503 with a Retry-After.
    let r = post_resolve(&app, &token).await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "tenant_provisioning");
    assert_registered_from_token(&app, org.as_str(), &slug).await;

    app.reconcile_until(org.as_str(), TenantStatus::Active)
        .await;
    let r = resolve_waiting(&app, &token).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let t = app.registry_tenant(org.as_str()).await;
    assert_eq!(body["tenant"]["id"], json!(t.id.to_string()));
    assert_eq!(body["tenant"]["status"], "active");
    assert_eq!(body["claims"]["org_id"], json!(org.as_str()));
    assert_eq!(
        body["connection"]["database"],
        json!(t.db_name().unwrap().to_owned())
    );
}

#[tokio::test]
async fn a_v1_token_for_an_unseen_organization_registers_it_through_the_library() {
    let (app, issuer) = spawn_resolving_app(&[]).await;
    let resolver = library_resolver(&app).await;
    let org = SampleIds::random().org_id;
    let slug = unique_slug();
    let token = sign(&session(&issuer, org.as_str(), &slug).v1());

    let err = resolver.resolve(&token).await.err().expect("not ready yet");
    assert_eq!(
        (err.status().as_u16(), err.code()),
        (503, "tenant_provisioning")
    );
    assert_registered_from_token(&app, org.as_str(), &slug).await;
    assert_eq!(resolver.cache_stats().registered, 1);

    app.reconcile_until(org.as_str(), TenantStatus::Active)
        .await;
    let ctx = resolver
        .resolve_waiting(&token, std::time::Duration::from_secs(30))
        .await
        .expect("resolves once active");
    let t = app.registry_tenant(org.as_str()).await;
    assert_eq!(ctx.tenant.id, t.id);
    let conn = ctx.pool.get().await.unwrap();
    let row = conn
        .query_one("SELECT current_database(), current_user", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), t.db_name().unwrap().to_owned());
    assert_eq!(row.get::<_, String>(1), t.db_role().unwrap().to_owned());
}

#[tokio::test]
async fn a_resolve_that_waits_registers_and_answers_once_the_tenant_is_active() {
    let (app, issuer) = spawn_resolving_app(&[]).await;
    let resolver = library_resolver(&app).await;
    let org = SampleIds::random().org_id;
    let token = sign(&session(&issuer, org.as_str(), &unique_slug()).v2());

    let waiting = tokio::spawn({
        let resolver = resolver.clone();
        let token = token.clone();
        async move {
            resolver
                .resolve_waiting(&token, std::time::Duration::from_secs(60))
                .await
        }
    });
    // The waiting resolve registered the organization; provision it.
    crate::helpers::wait_until(
        "the waiting resolve to register the organization",
        std::time::Duration::from_secs(10),
        || async { app.tenant(org.as_str()).await.is_some() },
    )
    .await;
    app.reconcile_until(org.as_str(), TenantStatus::Active)
        .await;
    let ctx = waiting.await.unwrap().expect("the ready tenant");
    assert_eq!(ctx.tenant.status, TenantStatus::Active);
    assert_eq!(ctx.tenant.id, app.registry_tenant(org.as_str()).await.id);
}

#[tokio::test]
async fn concurrent_first_requests_register_an_organization_once() {
    let (app, issuer) = spawn_resolving_app(&[]).await;
    let resolver = library_resolver(&app).await;
    let org = SampleIds::random().org_id;
    let token = sign(&session(&issuer, org.as_str(), &unique_slug()).v2());

    let answers = futures::future::join_all((0..20).map(|_| resolver.resolve(&token))).await;
    for a in &answers {
        let err = a.as_ref().err().expect("pending");
        assert_eq!(err.code(), "tenant_provisioning");
    }
    // And once more through the server's own resolver (its own cache).
    assert_eq!(
        verdict(&app, &token).await,
        (503, "tenant_provisioning".into())
    );
    assert_eq!(app.count("tenant_registry").await, 1);
    assert_eq!(audit(&app, org.as_str()).await.len(), 1);
    assert_eq!(resolver.cache_stats().registered, 1);
}

#[tokio::test]
async fn the_late_organization_created_webhook_completes_a_token_registered_row() {
    let (app, issuer) = spawn_resolving_app(&[]).await;
    let ids = SampleIds::random();
    let org = ids.org_id.as_str();
    let slug = unique_slug();
    let token = sign(&session(&issuer, org, &slug).v2());
    assert_eq!(verdict(&app, &token).await.0, 503);
    assert_registered_from_token(&app, org, &slug).await;
    app.reconcile_until(org, TenantStatus::Active).await;
    let provisioned = app.registry_tenant(org).await;

    let created = SampleEvent::new("organization.created", &ids)
        .unwrap()
        .name("Late Corp")
        .slug(Some(slug.clone()));
    assert_eq!(app.send(&created).await, "applied");

    let row = app.tenant(org).await.unwrap();
    assert_eq!(row.name, "Late Corp");
    assert_eq!(row.slug.as_deref(), Some(slug.as_str()));
    assert_eq!(
        source_updated_at(&app, org).await,
        Utc.timestamp_millis_opt(created.updated_at_ms).unwrap()
    );
    assert_eq!(app.count("tenant_registry").await, 1, "a single row");
    // Provisioning is unaffected: the same tenant, still active, in the
    // same database, and nothing left for the reconciler.
    let after = app.registry_tenant(org).await;
    assert_eq!(after.id, provisioned.id);
    assert_eq!(after.status, TenantStatus::Active);
    assert_eq!(after.db_name(), provisioned.db_name());
    assert_eq!(app.reconcile().await, 0);
    let kinds: Vec<String> = audit(&app, org).await.into_iter().map(|a| a.1).collect();
    assert_eq!(
        kinds.iter().filter(|k| *k == "registered").count(),
        1,
        "{kinds:?}"
    );

    // The webhook's watermark holds from now on: an older update is stale.
    let older = SampleEvent::new("organization.updated", &ids)
        .unwrap()
        .name("Older name")
        .updated_at_ms(created.updated_at_ms - 1_000);
    assert_eq!(app.send(&older).await, "stale");
    assert_eq!(verdict(&app, &token).await, (200, "ok".into()));
}

#[tokio::test]
async fn a_token_never_brings_back_a_deleted_organization() {
    let (app, issuer) = spawn_resolving_app(&[]).await;
    // Created, then deleted, by webhooks.
    let deleted = app.create_org("Gone").await;
    app.delete_org(&deleted).await;
    app.reconcile().await;
    // Deleted before tenant-plane ever heard of it: a tombstone.
    let tombstoned = SampleIds::random();
    app.delete_org(&tombstoned).await;

    for ids in [&deleted, &tombstoned] {
        let org = ids.org_id.as_str();
        let before = audit(&app, org).await;
        let token = sign(&session(&issuer, org, &unique_slug()).v2());
        assert_eq!(verdict(&app, &token).await, (410, "tenant_deleted".into()));
        let row = app.tenant(org).await.unwrap();
        assert_eq!(
            (row.status.as_str(), row.desired_state.as_str()),
            ("deleted", "deleted")
        );
        assert_eq!(row.slug, None, "the token's slug was not taken");
        assert_eq!(audit(&app, org).await, before, "nothing recorded");
    }
    assert_eq!(app.count("tenant_registry").await, 2);
    assert_eq!(app.reconcile().await, 0, "nothing to provision");
}

#[tokio::test]
async fn with_registration_off_an_unseen_organization_is_refused_and_nothing_written() {
    let (app, issuer) =
        spawn_resolving_app(&[("TENANT_PLANE__RESOLVER__REGISTER_UNKNOWN_ORGS", "false")]).await;
    assert!(!app.settings.resolver.register_unknown_orgs);
    let resolver = library_resolver(&app).await;
    let org = SampleIds::random().org_id;
    let token = sign(&session(&issuer, org.as_str(), &unique_slug()).v2());

    assert_eq!(verdict(&app, &token).await, (404, "tenant_unknown".into()));
    let err = resolver.resolve(&token).await.err().expect("refused");
    assert_eq!((err.status().as_u16(), err.code()), (404, "tenant_unknown"));
    assert_eq!(app.count("tenant_registry").await, 0);
    assert_eq!(app.count("tenant_events").await, 0);
    assert_eq!(resolver.cache_stats().registered, 0);
}

#[tokio::test]
async fn a_token_that_fails_verification_registers_nothing() {
    let (app, issuer) = spawn_resolving_app(&[]).await;
    let org = SampleIds::random().org_id;
    let good = session(&issuer, org.as_str(), &unique_slug()).v2();
    let mut expired = good.clone();
    expired["exp"] = json!(jwt::now() - 60);
    let mut foreign = good.clone();
    foreign["iss"] = json!("https://evil.example.com");

    for (name, token) in [
        ("expired", sign(&expired)),
        (
            "signed by another key",
            jwt::mint(Algorithm::RS256, Some(jwt::KID_A), "rsa-c", &good),
        ),
        ("another issuer", sign(&foreign)),
    ] {
        let (status, _) = verdict(&app, &token).await;
        assert_eq!(status, 401, "{name}");
    }
    assert_eq!(app.count("tenant_registry").await, 0);
    assert_eq!(app.count("tenant_events").await, 0);
}
