//! `tenant-plane doctor` against planted drift, run as a child process.

use crate::helpers::{spawn_app_with, spawn_cli, TestApp};

async fn doctor(app: &TestApp) -> (i32, serde_json::Value) {
    let out = spawn_cli(app, &["doctor", "--json", "--stuck-after", "1s"], &[])
        .wait_with_output()
        .await
        .unwrap();
    let json = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code().unwrap(), json)
}

fn kinds(findings: &serde_json::Value) -> Vec<String> {
    let mut k: Vec<String> = findings
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["kind"].as_str().unwrap().to_owned())
        .collect();
    k.sort();
    k
}

#[tokio::test]
async fn doctor_reports_orphans_missing_stuck_and_failed_tenants() {
    let app = spawn_app_with(&[("TENANT_PLANE__WORKER__MAX_ATTEMPTS", "1")]).await;
    let healthy = app.create_org("healthy").await;
    let broken = app.create_org("broken").await;
    app.reconcile().await;
    let (code, findings) = doctor(&app).await;
    assert_eq!(
        (code, findings),
        (0, serde_json::json!([])),
        "clean at first"
    );

    // An orphan database and role under the prefix, with no registry row.
    let orphan = format!("{}{}", app.prefix.prefix, "0".repeat(32));
    app.client
        .batch_execute(&format!("CREATE DATABASE \"{orphan}\""))
        .await
        .unwrap();
    app.client
        .batch_execute(&format!("CREATE ROLE \"{orphan}\""))
        .await
        .unwrap();
    // An active tenant whose database vanished behind our back.
    let gone = app
        .registry_tenant(broken.org_id.as_str())
        .await
        .db_name()
        .unwrap()
        .to_owned();
    app.client
        .batch_execute(&format!("DROP DATABASE \"{gone}\" WITH (FORCE)"))
        .await
        .unwrap();
    // A tenant stuck mid-way, and one that gave up.
    app.client
        .execute(
            "UPDATE tenant_registry SET status = 'provisioning', updated_at = now() - interval '1 hour'
              WHERE clerk_org_id = $1",
            &[&healthy.org_id.as_str()],
        )
        .await
        .unwrap();
    app.client
        .execute(
            "INSERT INTO tenant_registry (id, clerk_org_id, status, desired_state, source_updated_at, last_error)
             VALUES (gen_random_uuid(), 'org_failedone', 'failed', 'active', now(), 'boom')",
            &[],
        )
        .await
        .unwrap();

    let (code, findings) = doctor(&app).await;
    assert_eq!(code, 2, "{findings}");
    assert_eq!(
        kinds(&findings),
        [
            "failed",
            "missing_database",
            "orphan_database",
            "orphan_role",
            "stuck"
        ]
    );
    let text = findings.to_string();
    assert!(text.contains(&orphan) && text.contains(&gone), "{text}");

    // The human table says the same.
    let out = spawn_cli(&app, &["doctor"], &[])
        .wait_with_output()
        .await
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        table.contains("orphan_database") && table.contains("5 finding(s)"),
        "{table}"
    );
}
