//! Crash safety: a real worker process killed with SIGKILL at each step of
//! provisioning and of deletion; once its lease lapses, a restarted worker
//! takes the tenant over and finishes the job, and the doctor finds nothing
//! left behind.

use std::time::Duration;

use model::status::TenantStatus;

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
