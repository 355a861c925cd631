//! Backfill from Clerk: the local Clerk server holds organizations the
//! webhooks never delivered and lacks one the registry has.

use std::time::Duration;

use serde_json::{json, Value};
use testkit::fake_clerk::{FakeClerk, SECRET_KEY};
use webhooks::samples::{SampleEvent, SampleIds};

use crate::helpers::{run_cli as run, spawn_app_configured, wait_until, TestApp};
use crate::resolve::SERVICE_TOKEN;

const T0: i64 = 1_716_883_200_000;

/// An app whose Clerk Backend API is `clerk`.
async fn app_with(clerk: &FakeClerk, extra: &[(&str, &str)]) -> TestApp {
    spawn_app_configured(|env| env.with_clerk_api(&clerk.url, SECRET_KEY).set_all(extra)).await
}

/// Sample ids for a given organization.
fn ids_for(org: &str) -> SampleIds {
    SampleIds {
        org_id: org.parse().unwrap(),
        ..SampleIds::random()
    }
}

async fn desired(app: &TestApp, org: &str) -> String {
    app.tenant(org)
        .await
        .map(|t| t.desired_state)
        .unwrap_or_default()
}

#[tokio::test]
async fn sync_creates_missing_updates_stale_reports_extra_and_prunes_only_when_asked() {
    let clerk = FakeClerk::start(SECRET_KEY).await;
    clerk.put_org("org_known", "Known Renamed", "known-renamed", T0 + 5_000);
    clerk.put_org("org_missed1", "Missed One", "missed-one", T0);
    clerk.put_org("org_missed2", "Missed Two", "missed-two", T0);
    clerk.put_user("user_ada", "ada@example.com", T0);
    clerk.put_user("user_bob", "bob@example.com", T0);
    clerk.put_membership("orgmem_1", "org_missed1", "user_ada", "org:admin", T0);
    clerk.put_membership("orgmem_2", "org_known", "user_bob", "org:member", T0);
    // The first request is throttled: the sync waits and goes on.
    clerk.fail_next_with_429(1);
    let app = app_with(&clerk, &[]).await;
    // Seen by webhooks: org_known (an older name) and org_gone (which Clerk
    // no longer has).
    let known = ids_for("org_known");
    app.send(
        &SampleEvent::new("organization.created", &known)
            .unwrap()
            .name("Known")
            .slug(Some("known".into()))
            .updated_at_ms(T0),
    )
    .await;
    let gone = ids_for("org_gone");
    app.send(
        &SampleEvent::new("organization.created", &gone)
            .unwrap()
            .updated_at_ms(T0),
    )
    .await;

    let (code, out, err) = run(&app, &["sync"], &[]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("created 2 tenants: org_missed1 org_missed2"),
        "{out}"
    );
    assert!(out.contains("updated 1 tenants: org_known"), "{out}");
    assert!(out.contains("org_gone") && out.contains("--prune"), "{out}");
    assert_eq!(app.tenant("org_known").await.unwrap().name, "Known Renamed");
    assert_eq!(
        app.tenant("org_missed1").await.unwrap().slug.as_deref(),
        Some("missed-one")
    );
    assert_eq!(
        desired(&app, "org_gone").await,
        "active",
        "reported, not pruned"
    );
    assert_eq!(app.count("users").await, 2);
    assert_eq!(app.count("organization_memberships").await, 2);

    // The 429 was honoured: the retry came after the Retry-After second.
    let log = clerk.requests();
    assert_eq!(log[0].status, 429);
    assert_eq!(
        (&log[1].method, &log[1].path),
        (&log[0].method, &log[0].path),
        "the same request was retried"
    );
    let waited = log[1].at.duration_since(log[0].at);
    assert!(
        waited >= Duration::from_millis(900),
        "retried after {waited:?}"
    );

    // A second run changes nothing; --prune marks org_gone deleted.
    let (_, out, _) = run(&app, &["sync", "--json"], &[]).await;
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["created"], json!([]));
    assert_eq!(report["updated"], json!([]));
    assert_eq!(report["missing_in_clerk"], json!(["org_gone"]));
    let (code, out, _) = run(&app, &["sync", "--prune"], &[]).await;
    assert_eq!(code, 0);
    assert!(
        out.contains("marked deleted 1 tenants whose organization Clerk no longer has: org_gone"),
        "{out}"
    );
    assert_eq!(desired(&app, "org_gone").await, "deleted");
    assert_eq!(desired(&app, "org_missed1").await, "active");
}

#[tokio::test]
async fn sync_routes_and_status_over_the_internal_api() {
    let clerk = FakeClerk::start(SECRET_KEY).await;
    clerk.put_org("org_viahttp", "Via HTTP", "via-http", T0);
    let app = app_with(&clerk, &[("TENANT_PLANE__INTERNAL__TOKENS", SERVICE_TOKEN)]).await;
    let post = |path: String| {
        app.http
            .post(format!("{}{path}", app.address))
            .bearer_auth(SERVICE_TOKEN)
            .send()
    };
    let r = post("/internal/v1/sync/organizations/org_viahttp".into())
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let report: Value = r.json().await.unwrap();
    assert_eq!(report["created"], json!(["org_viahttp"]));
    let r = post("/internal/v1/sync/organizations/org_notinclerk".into())
        .await
        .unwrap();
    let report: Value = r.json().await.unwrap();
    assert_eq!(report["missing_in_clerk"], json!(["org_notinclerk"]));
    let r = post("/internal/v1/sync/organizations/bad'id".into())
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    let r = post("/internal/v1/sync/all".into()).await.unwrap();
    assert_eq!(r.status(), 202);
    let status = || async {
        app.http
            .get(format!("{}/internal/v1/sync/status", app.address))
            .bearer_auth(SERVICE_TOKEN)
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    wait_until(
        "the full sync to finish",
        Duration::from_secs(20),
        || async {
            let s = status().await;
            s["last_sync"]["scope"] == "all" && !s["last_sync"]["finished_at"].is_null()
        },
    )
    .await;
    let s = status().await;
    assert_eq!(s["last_sync"]["report"]["organizations_in_clerk"], 1);
    assert_eq!(s["tenants"], 1);
    assert_eq!(s["webhooks_dead"], 0);
    let r = app
        .http
        .get(format!("{}/internal/v1/sync/status", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn without_a_secret_key_sync_says_what_to_configure() {
    let app = spawn_app_configured(|env| env.with_internal_tokens(&[SERVICE_TOKEN])).await;
    let (code, _, err) = run(&app, &["sync"], &[]).await;
    assert_eq!(code, 1);
    assert!(err.contains("clerk.secret_key"), "{err}");
    let r = app
        .http
        .post(format!("{}/internal/v1/sync/all", app.address))
        .bearer_auth(SERVICE_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
}

#[tokio::test]
async fn write_back_puts_the_tenant_id_into_the_organization_metadata_once() {
    let clerk = FakeClerk::start(SECRET_KEY).await;
    clerk.put_org("org_writeback", "WB", "wb", T0);
    let app = app_with(&clerk, &[]).await;
    let ids = ids_for("org_writeback");
    app.send(
        &SampleEvent::new("organization.created", &ids)
            .unwrap()
            .slug(Some("wb".into())),
    )
    .await;
    let client = app.settings.clerk_client().unwrap();
    assert_eq!(
        directory_sync::writeback::run_once(&app.pool(), &client)
            .await
            .unwrap(),
        0,
        "not active yet"
    );
    app.reconcile().await;
    assert_eq!(
        directory_sync::writeback::run_once(&app.pool(), &client)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        directory_sync::writeback::run_once(&app.pool(), &client)
            .await
            .unwrap(),
        0,
        "written once"
    );
    let t = app.registry_tenant("org_writeback").await;
    let stored = clerk.org("org_writeback")["public_metadata"].clone();
    assert_eq!(
        stored,
        json!({ "tenant_id": t.id.to_string(), "tenant_slug": "wb" })
    );
    let patches = clerk
        .requests()
        .iter()
        .filter(|r| r.method == "PATCH")
        .count();
    assert_eq!(patches, 1);
}

/// Live (not soft-deleted) memberships of the directory.
async fn live_memberships(app: &TestApp) -> Vec<String> {
    testkit::column(
        &app.client,
        "SELECT clerk_membership_id FROM organization_memberships
              WHERE deleted_at IS NULL ORDER BY 1",
        &[],
    )
    .await
}

#[tokio::test]
async fn sync_prune_soft_deletes_memberships_clerk_no_longer_has() {
    let clerk = FakeClerk::start(SECRET_KEY).await;
    clerk.put_org("org_team", "Team", "team", T0);
    clerk.put_user("user_ada", "ada@example.com", T0);
    clerk.put_membership("orgmem_kept", "org_team", "user_ada", "org:admin", T0);
    let app = app_with(&clerk, &[]).await;
    // A membership the webhooks delivered and Clerk has since lost.
    let ids = SampleIds {
        membership_id: "orgmem_lost".parse().unwrap(),
        ..ids_for("org_team")
    };
    app.send(&SampleEvent::new("organizationMembership.created", &ids).unwrap())
        .await;

    let (code, out, err) = run(&app, &["sync"], &[]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        live_memberships(&app).await,
        ["orgmem_kept", "orgmem_lost"],
        "reported, not pruned"
    );
    let (code, out, err) = run(&app, &["sync", "--prune", "--json"], &[]).await;
    assert_eq!(code, 0, "{out}{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["memberships_pruned"], 1, "{report}");
    assert_eq!(live_memberships(&app).await, ["orgmem_kept"]);
}

#[tokio::test]
async fn write_back_takes_the_tenant_id_out_again_when_the_tenant_is_deleted() {
    let clerk = FakeClerk::start(SECRET_KEY).await;
    clerk.put_org("org_leaving", "Leaving", "leaving", T0);
    clerk.put_org("org_vanished", "Vanished", "vanished", T0);
    let app = app_with(&clerk, &[]).await;
    let leaving = ids_for("org_leaving");
    let vanished = ids_for("org_vanished");
    for ids in [&leaving, &vanished] {
        app.send(&SampleEvent::new("organization.created", ids).unwrap())
            .await;
    }
    app.reconcile().await;
    let client = app.settings.clerk_client().unwrap();
    let pool = app.pool();
    let write_back = || directory_sync::writeback::run_once(&pool, &client);
    assert_eq!(write_back().await.unwrap(), 2);
    assert!(clerk.org("org_leaving")["public_metadata"]["tenant_id"].is_string());

    // One tenant is deleted by an operator while its organization lives on;
    // the other's organization was deleted in Clerk (the API answers 404).
    app.act("org_leaving", registry::tenants::Action::Delete)
        .await;
    clerk.remove_org("org_vanished");
    app.delete_org(&vanished).await;
    assert_eq!(write_back().await.unwrap(), 2);
    assert_eq!(
        clerk.org("org_leaving")["public_metadata"],
        json!({}),
        "tenant_id and tenant_slug removed"
    );
    assert_eq!(write_back().await.unwrap(), 0, "erased once");
}
