//! The tenant-ready signal: a look-up that long-polls until the tenant is
//! active, woken by the registry's NOTIFY, and a resolve that waits for its
//! tenant instead of answering 503 at once.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::TestApp;
use crate::resolve::{spawn_resolving_app, v2_claims, SERVICE_TOKEN};

/// A liveness bound, never a speed assertion: far above what any answer
/// here takes, far below the waits asked for.
const WOKEN_WITHIN: Duration = Duration::from_secs(8);

async fn get(app: &TestApp, path: &str) -> (u16, Value) {
    let r = app
        .http
        .get(format!("{}{path}", app.address))
        .bearer_auth(SERVICE_TOKEN)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_look_up_waiting_for_active_is_answered_when_the_tenant_becomes_active() {
    let (app, _) = spawn_resolving_app(&[]).await;
    let org = app.create_org("Waited for").await.org_id;
    let path = format!(
        "/internal/v1/tenants/by-org/{}?wait_for=active&timeout=30s",
        org.as_str()
    );
    let started = Instant::now();
    let waiting = get(&app, &path);
    tokio::pin!(waiting);
    // Not active yet: the look-up is still waiting.
    assert!(
        tokio::time::timeout(Duration::from_millis(700), &mut waiting)
            .await
            .is_err(),
        "answered before the tenant was active"
    );
    app.reconcile().await;
    let (status, body) = tokio::time::timeout(WOKEN_WITHIN, waiting)
        .await
        .expect("woken by the tenant's NOTIFY, not by the 30 s timeout");
    assert_eq!((status, body["status"].as_str()), (200, Some("active")));
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[tokio::test]
async fn a_look_up_whose_time_is_up_answers_the_current_status() {
    let (app, _) = spawn_resolving_app(&[]).await;
    let org = app.create_org("Still pending").await.org_id;
    let started = Instant::now();
    let (status, body) = get(
        &app,
        &format!(
            "/internal/v1/tenants/by-org/{}?wait_for=active&timeout=1s",
            org.as_str()
        ),
    )
    .await;
    assert_eq!((status, body["status"].as_str()), (200, Some("pending")));
    assert!(started.elapsed() >= Duration::from_secs(1), "it waited");

    // An organization nobody registered: 404 when the time is up.
    let (status, body) = get(
        &app,
        "/internal/v1/tenants/by-org/org_neverregistered0000000000?wait_for=active&timeout=300ms",
    )
    .await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));
}

#[tokio::test]
async fn bad_wait_parameters_are_refused() {
    let (app, _) = spawn_resolving_app(&[]).await;
    let org = app.create_org("Params").await.org_id;
    for query in [
        "wait_for=ready",
        "wait_for=active&timeout=soon",
        "wait_for=active&timeout=61s",
        "timeout=5s",
    ] {
        let (status, body) = get(
            &app,
            &format!("/internal/v1/tenants/by-org/{}?{query}", org.as_str()),
        )
        .await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error"], "bad_request", "{query}");
    }
}

#[tokio::test]
async fn a_resolve_asked_to_wait_answers_once_the_tenant_is_provisioned() {
    let (app, issuer) = spawn_resolving_app(&[]).await;
    let org = app.create_org("First request").await.org_id;
    let token = testkit::jwt::sign(&v2_claims(&issuer, org.as_str()));
    let post = |wait_ms: Option<u64>| {
        let mut body = json!({ "token": token });
        if let Some(ms) = wait_ms {
            body["wait_ms"] = json!(ms);
        }
        app.http
            .post(format!("{}/internal/v1/resolve", app.address))
            .bearer_auth(SERVICE_TOKEN)
            .json(&body)
            .send()
    };
    // Without a wait: 503 at once, as before.
    assert_eq!(post(None).await.unwrap().status(), 503);

    let waiting = post(Some(30_000));
    tokio::pin!(waiting);
    assert!(
        tokio::time::timeout(Duration::from_millis(700), &mut waiting)
            .await
            .is_err(),
        "answered while the tenant was provisioning"
    );
    app.reconcile().await;
    let answer = tokio::time::timeout(WOKEN_WITHIN, waiting)
        .await
        .expect("woken by the tenant's NOTIFY")
        .unwrap();
    assert_eq!(answer.status(), 200);
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["tenant"]["status"], "active");
    assert_eq!(body["tenant"]["clerk_org_id"], org.as_str());

    // A wait longer than a minute is refused.
    assert_eq!(post(Some(60_001)).await.unwrap().status(), 400);
}
