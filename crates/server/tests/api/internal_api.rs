//! The internal API: authentication on every route, look-ups, actions,
//! errors as JSON, and an OpenAPI document that lists every route.

use reqwest::Method;
use serde_json::Value;

use crate::helpers::{spawn_app_configured, spawn_app_with};
use crate::resolve::SERVICE_TOKEN;

/// Every internal route, with a placeholder for ids.
const ROUTES: &[(&str, &str)] = &[
    ("GET", "/internal/v1/tenants"),
    ("GET", "/internal/v1/tenants/{id}"),
    ("GET", "/internal/v1/tenants/by-org/{clerk_org_id}"),
    ("GET", "/internal/v1/tenants/by-slug/{slug}"),
    ("POST", "/internal/v1/tenants/{id}/suspend"),
    ("POST", "/internal/v1/tenants/{id}/resume"),
    ("POST", "/internal/v1/tenants/{id}/retry"),
    ("POST", "/internal/v1/tenants/{id}/restore"),
    ("DELETE", "/internal/v1/tenants/{id}"),
    ("POST", "/internal/v1/resolve"),
    ("POST", "/internal/v1/sync/organizations/{clerk_org_id}"),
    ("POST", "/internal/v1/sync/all"),
    ("GET", "/internal/v1/sync/status"),
];

fn fill(path: &str, id: &str, org: &str, slug: &str) -> String {
    path.replace("{id}", id)
        .replace("{clerk_org_id}", org)
        .replace("{slug}", slug)
}

async fn call(
    app: &crate::helpers::TestApp,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> (u16, Value) {
    let mut req = app.http.request(
        Method::from_bytes(method.as_bytes()).unwrap(),
        format!("{}{path}", app.address),
    );
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if path.ends_with("/resolve") {
        req = req.json(&serde_json::json!({ "token": "x.y.z" }));
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn every_internal_route_requires_a_service_token() {
    let app = spawn_app_configured(|env| env.with_internal_tokens(&[SERVICE_TOKEN])).await;
    let ids = app.create_org("Authz").await;
    let t = app.registry_tenant(ids.org_id.as_str()).await;
    let id = t.id.to_string();
    for (method, path) in ROUTES {
        let path = fill(path, &id, ids.org_id.as_str(), "authz");
        for token in [None, Some("wrong-token-0123456789"), Some("Bearer")] {
            let (status, body) = call(&app, method, &path, token).await;
            assert_eq!(status, 401, "{method} {path} with {token:?}");
            assert_eq!(body["error"], "unauthorized");
        }
    }
    // The refused actions changed nothing.
    let after = app.registry_tenant(ids.org_id.as_str()).await;
    assert_eq!(after.desired_state, t.desired_state);
    assert_eq!(after.updated_at, t.updated_at);
    assert_eq!(app.event_kinds(ids.org_id.as_str()).await, ["registered"]);

    for (method, path) in ROUTES {
        let path = fill(path, &id, ids.org_id.as_str(), "authz");
        let (status, _) = call(&app, method, &path, Some(SERVICE_TOKEN)).await;
        assert_ne!(status, 401, "{method} {path} with the right token");
    }
}

#[tokio::test]
async fn look_ups_and_actions_answer_json_and_unknown_ids_are_404() {
    let app = spawn_app_configured(|env| env.with_internal_tokens(&[SERVICE_TOKEN])).await;
    let ids = app.create_org("Lookup").await;
    let event = webhooks::samples::SampleEvent::new("organization.updated", &ids)
        .unwrap()
        .name("Lookup")
        .slug(Some("lookup-co".into()));
    app.send(&event).await;
    app.reconcile().await;
    let t = app.registry_tenant(ids.org_id.as_str()).await;
    let id = t.id.to_string();

    for path in [
        format!("/internal/v1/tenants/{id}"),
        format!("/internal/v1/tenants/by-org/{}", ids.org_id),
        "/internal/v1/tenants/by-slug/lookup-co".to_owned(),
    ] {
        let (status, body) = call(&app, "GET", &path, Some(SERVICE_TOKEN)).await;
        assert_eq!(status, 200, "{path}");
        assert_eq!(body["id"], id.as_str());
        assert_eq!(body["clerk_org_id"], ids.org_id.as_str());
        assert_eq!(body["status"], "active");
        assert_eq!(body["db_host"], "default");
        assert_eq!(body["db_name"], t.db_name().unwrap().to_owned().as_str());
        assert_eq!(body["template_version"], 1);
    }
    for path in [
        "/internal/v1/tenants/0190b7a4-1d1f-7000-8000-000000000000".to_owned(),
        "/internal/v1/tenants/not-a-uuid".to_owned(),
        "/internal/v1/tenants/by-org/org_nope".to_owned(),
        "/internal/v1/tenants/by-slug/nope".to_owned(),
        "/internal/v1/tenants/0190b7a4-1d1f-7000-8000-000000000000/suspend".to_owned(),
    ] {
        let method = if path.ends_with("suspend") {
            "POST"
        } else {
            "GET"
        };
        let (status, body) = call(&app, method, &path, Some(SERVICE_TOKEN)).await;
        assert_eq!(status, 404, "{path}");
        assert_eq!(body["error"], "not_found");
        assert!(body["message"].is_string());
    }

    // Actions move the desired state; a conflicting one is 409.
    let (status, body) = call(
        &app,
        "POST",
        &format!("/internal/v1/tenants/{id}/suspend"),
        Some(SERVICE_TOKEN),
    )
    .await;
    assert_eq!(
        (status, body["desired_state"].as_str()),
        (200, Some("suspended"))
    );
    let (status, body) = call(
        &app,
        "POST",
        &format!("/internal/v1/tenants/{id}/retry"),
        Some(SERVICE_TOKEN),
    )
    .await;
    assert_eq!((status, body["error"].as_str()), (409, Some("conflict")));
    let (status, body) = call(
        &app,
        "POST",
        &format!("/internal/v1/tenants/{id}/resume"),
        Some(SERVICE_TOKEN),
    )
    .await;
    assert_eq!(
        (status, body["desired_state"].as_str()),
        (200, Some("active"))
    );
    let (status, body) = call(
        &app,
        "DELETE",
        &format!("/internal/v1/tenants/{id}"),
        Some(SERVICE_TOKEN),
    )
    .await;
    assert_eq!(
        (status, body["desired_state"].as_str()),
        (200, Some("deleted"))
    );
    let (status, body) = call(
        &app,
        "POST",
        &format!("/internal/v1/tenants/{id}/restore"),
        Some(SERVICE_TOKEN),
    )
    .await;
    assert_eq!(
        (status, body["desired_state"].as_str()),
        (200, Some("active"))
    );

    // Listing, filtered and paginated.
    for i in 0..3 {
        app.create_org(&format!("page {i}")).await;
    }
    let (status, page) = call(
        &app,
        "GET",
        "/internal/v1/tenants?limit=2",
        Some(SERVICE_TOKEN),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(page["data"].as_array().unwrap().len(), 2);
    let after = page["next_after"].as_str().unwrap();
    let (_, rest) = call(
        &app,
        "GET",
        &format!("/internal/v1/tenants?limit=2&after={after}"),
        Some(SERVICE_TOKEN),
    )
    .await;
    assert_eq!(rest["data"].as_array().unwrap().len(), 2);
    assert!(rest["next_after"].is_string());
    let (_, pending) = call(
        &app,
        "GET",
        "/internal/v1/tenants?status=pending",
        Some(SERVICE_TOKEN),
    )
    .await;
    assert_eq!(pending["data"].as_array().unwrap().len(), 3);
    let (status, body) = call(
        &app,
        "GET",
        "/internal/v1/tenants?status=bogus",
        Some(SERVICE_TOKEN),
    )
    .await;
    assert_eq!((status, body["error"].as_str()), (400, Some("bad_request")));
    let (status, _) = call(
        &app,
        "GET",
        "/internal/v1/tenants?limit=501",
        Some(SERVICE_TOKEN),
    )
    .await;
    assert_eq!(status, 400);

    // Without clerk.issuer the resolver route says it is not configured.
    let (status, body) = call(&app, "POST", "/internal/v1/resolve", Some(SERVICE_TOKEN)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("not_configured"))
    );
}

#[tokio::test]
async fn the_openapi_document_lists_every_route_and_metrics_are_exposed() {
    let app = spawn_app_with(&[]).await;
    let doc: Value = app
        .http
        .get(format!("{}/openapi.json", app.address))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let paths = doc["paths"].as_object().unwrap();
    for (method, path) in
        ROUTES
            .iter()
            .chain(&[("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics")])
    {
        let op = &paths
            .get(*path)
            .unwrap_or_else(|| panic!("{path} missing from openapi.json"))[method.to_lowercase()];
        assert!(op.is_object(), "{method} {path} missing");
    }
    assert_eq!(
        paths.len(),
        ROUTES.len() - 1 /* two methods share /tenants/{id} */ + 3
    );
    assert!(doc["components"]["securitySchemes"]["service_token"].is_object());

    app.create_org("metered").await;
    app.reconcile().await;
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(
            "tenant_plane_webhooks_total{type=\"organization.created\",outcome=\"applied\"}"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("tenant_plane_tenants{status=\"active\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tenant_plane_provisioning_seconds"),
        "{metrics}"
    );
}

/// The count of a `/metrics` gauge.
fn gauge(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics"))
}

#[tokio::test]
async fn look_ups_come_from_the_cache_and_follow_every_change_of_the_row_at_once() {
    let app = spawn_app_configured(|env| env.with_internal_tokens(&[SERVICE_TOKEN])).await;
    let ids = app.create_org("Cached").await;
    let org = ids.org_id.as_str();
    app.reconcile().await;
    let id = app.registry_tenant(org).await.id.to_string();
    let by_org = format!("/internal/v1/tenants/by-org/{org}");
    let by_id = format!("/internal/v1/tenants/{id}");

    let (_, first) = call(&app, "GET", &by_org, Some(SERVICE_TOKEN)).await;
    let misses = gauge(&app.metrics().await, "tenant_plane_resolver_cache_misses");
    for _ in 0..5 {
        let (status, again) = call(&app, "GET", &by_org, Some(SERVICE_TOKEN)).await;
        assert_eq!((status, &again), (200, &first));
    }
    let metrics = app.metrics().await;
    assert_eq!(
        gauge(&metrics, "tenant_plane_resolver_cache_misses"),
        misses,
        "answered from the cache"
    );
    assert!(gauge(&metrics, "tenant_plane_resolver_cache_hits") >= 5.0);
    call(&app, "GET", &by_id, Some(SERVICE_TOKEN)).await;

    // An operator edits the row with psql: the trigger's NOTIFY drops it.
    app.client
        .execute(
            "UPDATE tenant_registry SET name = 'Renamed by psql', slug = 'psql-slug'
              WHERE clerk_org_id = $1",
            &[&org],
        )
        .await
        .unwrap();
    for path in [&by_org, &by_id] {
        crate::helpers::wait_until(
            "the look-up to follow",
            std::time::Duration::from_secs(5),
            || async {
                call(&app, "GET", path, Some(SERVICE_TOKEN)).await.1["name"] == "Renamed by psql"
            },
        )
        .await;
    }
    let (status, by_slug) = call(
        &app,
        "GET",
        "/internal/v1/tenants/by-slug/psql-slug",
        Some(SERVICE_TOKEN),
    )
    .await;
    assert_eq!((status, by_slug["id"].as_str()), (200, Some(id.as_str())));

    // A status change through the API is seen by the next look-up.
    let (status, _) = call(
        &app,
        "POST",
        &format!("{by_id}/suspend"),
        Some(SERVICE_TOKEN),
    )
    .await;
    assert_eq!(status, 200);
    crate::helpers::wait_until(
        "the desired state to show",
        std::time::Duration::from_secs(5),
        || async {
            call(&app, "GET", &by_org, Some(SERVICE_TOKEN)).await.1["desired_state"] == "suspended"
        },
    )
    .await;

    // A slug changed again: the cached answer for the old one goes.
    app.client
        .execute(
            "UPDATE tenant_registry SET slug = 'psql-slug-2' WHERE clerk_org_id = $1",
            &[&org],
        )
        .await
        .unwrap();
    crate::helpers::wait_until(
        "the old slug to name nothing",
        std::time::Duration::from_secs(5),
        || async {
            call(
                &app,
                "GET",
                "/internal/v1/tenants/by-slug/psql-slug",
                Some(SERVICE_TOKEN),
            )
            .await
            .0 == 404
        },
    )
    .await;
    let (status, _) = call(
        &app,
        "GET",
        "/internal/v1/tenants/by-slug/psql-slug-2",
        Some(SERVICE_TOKEN),
    )
    .await;
    assert_eq!(status, 200);
}
