//! Crash safety: a real worker process killed with SIGKILL at each step of
//! provisioning and of deletion; once its lease lapses, a restarted worker
//! takes the tenant over and finishes the job, and the doctor finds nothing
//! left behind.

use std::time::Duration;

use model::status::TenantStatus;
use registry::tenants::PRIVILEGE_MODEL;

use crate::helpers::{
    spawn_app_with, spawn_cli, spawn_worker, wait_for_stderr, wait_until, TestApp, SHORT_LEASE,
};

const DEADLINE: Duration = Duration::from_secs(90);

async fn kill_at(app: &TestApp, step: &str) {
    let mut worker = spawn_worker(app, Some(step));
    wait_for_stderr(&mut worker, &format!("paused at step {step}"), DEADLINE).await;
    worker.kill().await.expect("SIGKILL the worker");
}

async fn restart_until(app: &TestApp, org: &str, want: TenantStatus) {
    let mut worker = spawn_worker(app, None);
    wait_until(&format!("{org} to become {want}"), DEADLINE, || async {
        app.registry_tenant(org).await.status == want
    })
    .await;
    worker.kill().await.expect("stop the worker");
}

#[tokio::test]
async fn a_worker_killed_at_any_step_is_repaired_by_the_next_one() {
    let app = spawn_app_with(&SHORT_LEASE).await;

    for step in ["claimed", "role", "database", "opened"] {
        let ids = app.create_org(step).await;
        let org = ids.org_id.as_str();
        kill_at(&app, step).await;
        assert_eq!(
            app.registry_tenant(org).await.status,
            TenantStatus::Provisioning,
            "killed at {step}: mid-way"
        );
        restart_until(&app, org, TenantStatus::Active).await;
        let creds = app.credentials(org).await;
        crate::helpers::connect_as(&creds, creds.dbname.as_str())
            .await
            .unwrap_or_else(|e| panic!("after a kill at {step}: {e}"));
    }

    for step in ["claimed", "disabled", "dropped_database"] {
        let ids = app.create_org(&format!("doomed-{step}")).await;
        let org = ids.org_id.as_str();
        app.reconcile().await;
        let role = app.registry_tenant(org).await.db_role().unwrap().to_owned();
        app.delete_org(&ids).await;
        kill_at(&app, step).await;
        restart_until(&app, org, TenantStatus::Deleted).await;
        assert!(
            !app.role_exists(&role).await,
            "role dropped after a kill at {step}"
        );
    }

    // Seven tenants were created: four live databases remain, plus the template.
    assert_eq!(app.prefixed_databases().await.len(), 5);
    let doctor = spawn_cli(&app, &["doctor", "--json"], &[])
        .wait_with_output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&doctor.stdout);
    assert!(doctor.status.success(), "doctor found: {stdout}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&stdout).unwrap(),
        serde_json::json!([])
    );
}

/// A tenant's first claim places it while nothing of it exists on any
/// host, so it is born on the current privilege model: the pass then sets
/// its fresh clone up in one transaction instead of taking the path that
/// moves a first-model database (closing it, moving objects, resealing).
/// A tenant placed before, on the first model, keeps model 0 through its
/// claim until its database is moved (`isolation.rs` checks that move).
#[tokio::test]
async fn a_tenant_placed_by_its_claim_is_born_on_the_current_privilege_model() {
    let app = spawn_app_with(&SHORT_LEASE).await;
    let ids = app.create_org("born").await;
    let org = ids.org_id.as_str();
    let before = app.registry_tenant(org).await;
    assert!(before.placement.is_none());
    assert_eq!(before.privilege_model, 0, "the column's default");

    kill_at(&app, "claimed").await;
    let claimed = app.registry_tenant(org).await;
    assert!(claimed.placement.is_some(), "placed by the claim");
    assert_eq!(claimed.privilege_model, PRIVILEGE_MODEL);

    restart_until(&app, org, TenantStatus::Active).await;
    let active = app.registry_tenant(org).await;
    assert_eq!(active.privilege_model, PRIVILEGE_MODEL);
    // Sealed once, bound to the tenant, at the claim: nothing resealed it.
    assert_eq!(active.db_password_enc, claimed.db_password_enc);
    let creds = app.credentials(org).await;
    crate::helpers::connect_as(&creds, creds.dbname.as_str())
        .await
        .expect("the tenant connects to its database");
}
