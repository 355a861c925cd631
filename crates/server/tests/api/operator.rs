//! The operator CLI run as a child process against a real control database:
//! output and exit codes, and the template fan-out.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::{
    run_cli as run, spawn_app, spawn_cli, wait_for_stderr, TemplateDir, TestApp, TEMPLATE_V2,
};

#[tokio::test]
async fn tenant_host_and_webhook_commands_report_and_act() {
    let app = spawn_app().await;

    let (code, out, err) = run(
        &app,
        &[
            "tenants",
            "provision",
            "org_byhand1",
            "--name",
            "By Hand",
            "--slug",
            "by-hand",
        ],
        &[],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("registered for org_byhand1"), "{out}");
    let (code, _, err) = run(&app, &["tenants", "provision", "org_byhand1"], &[]).await;
    assert_eq!(code, 1);
    assert!(err.contains("already has tenant"), "{err}");
    let (code, _, err) = run(&app, &["tenants", "provision", "org_'; drop"], &[]).await;
    assert_eq!(code, 2, "clap refuses a malformed id: {err}");
    app.reconcile().await;

    let (code, out, _) = run(&app, &["tenants", "list"], &[]).await;
    assert_eq!(code, 0);
    assert!(
        out.contains("org_byhand1") && out.contains("active") && out.contains("by-hand"),
        "{out}"
    );
    let (_, out, _) = run(
        &app,
        &["tenants", "list", "--json", "--status", "active"],
        &[],
    )
    .await;
    let list: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert!(
        list[0].get("db_password_enc").is_none(),
        "sealed password never printed"
    );
    let (code, out, _) = run(&app, &["tenants", "show", "by-hand"], &[]).await;
    assert_eq!(code, 0);
    assert!(
        out.contains("registered") && out.contains("provisioning") && out.contains("cli:"),
        "{out}"
    );

    for (action, want) in [
        ("suspend", "desired suspended"),
        ("resume", "desired active"),
        ("delete", "desired deleted"),
        ("restore", "desired active"),
    ] {
        let (code, out, err) = run(&app, &["tenants", action, "org_byhand1"], &[]).await;
        assert_eq!(code, 0, "{action}: {err}");
        assert!(out.contains(want), "{action}: {out}");
    }
    let (code, _, err) = run(&app, &["tenants", "retry", "org_byhand1"], &[]).await;
    assert_eq!(code, 1);
    assert!(err.contains("has not failed"), "{err}");
    let (code, _, err) = run(&app, &["tenants", "show", "org_nosuchorg"], &[]).await;
    assert_eq!(code, 1);
    assert!(err.contains("no tenant"), "{err}");

    let (code, out, _) = run(&app, &["hosts", "list"], &[]).await;
    assert_eq!(code, 0);
    assert!(
        out.contains("default") && out.contains("accepting"),
        "{out}"
    );
    let (code, out, err) = run(
        &app,
        &[
            "hosts",
            "add",
            "spare",
            "--host",
            "127.0.0.1",
            "--port",
            "5999",
            "--capacity",
            "3",
        ],
        &[],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("host spare registered"));
    assert!(
        err.contains("TENANT_PLANE__HOSTS__SPARE__PASSWORD"),
        "{err}"
    );
    let (code, _, _) = run(&app, &["hosts", "drain", "spare"], &[]).await;
    assert_eq!(code, 0);
    let (_, out, _) = run(&app, &["hosts", "list", "--json"], &[]).await;
    let hosts: Value = serde_json::from_str(&out).unwrap();
    let spare = hosts
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == "spare")
        .unwrap();
    assert_eq!(spare["state"], "draining");
    let (code, _, err) = run(&app, &["hosts", "drain", "nope"], &[]).await;
    assert_eq!(code, 1);
    assert!(err.contains("no db host named"), "{err}");
    let (code, _, _) = run(&app, &["hosts", "add", "Bad-Name", "--host", "x"], &[]).await;
    assert_eq!(code, 1);

    // A delivery dead-lettered by an older version, replayed after the fix.
    let ids = webhooks::samples::SampleIds::random();
    let body = webhooks::samples::SampleEvent::new("organization.created", &ids)
        .unwrap()
        .to_json();
    app.client
        .execute(
            "INSERT INTO webhook_events (svix_id, event_type, payload, outcome, error)
             VALUES ('msg_dead1', 'organization.created', $1, 'dead', 'old parser bug')",
            &[&body],
        )
        .await
        .unwrap();
    let (code, out, _) = run(&app, &["webhooks", "list", "--outcome", "dead"], &[]).await;
    assert_eq!(code, 0);
    assert!(
        out.contains("msg_dead1") && out.contains("old parser bug"),
        "{out}"
    );
    let (code, out, _) = run(&app, &["webhooks", "show", "msg_dead1"], &[]).await;
    assert_eq!(code, 0);
    let shown: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["body"]["data"]["id"], ids.org_id.as_str());
    let (code, out, _) = run(&app, &["webhooks", "replay", "msg_dead1"], &[]).await;
    assert_eq!((code, out.trim()), (0, "msg_dead1: applied"));
    assert!(app.tenant(ids.org_id.as_str()).await.is_some());
    assert_eq!(
        app.stored_outcome("msg_dead1").await.as_deref(),
        Some("applied")
    );
    let (_, out, _) = run(&app, &["webhooks", "replay", "msg_dead1"], &[]).await;
    assert_eq!(
        out.trim(),
        "msg_dead1: stale",
        "a second replay changes nothing"
    );
    let (code, _, err) = run(&app, &["webhooks", "replay", "msg_unknown"], &[]).await;
    assert_eq!(code, 1);
    assert!(err.contains("no delivery"), "{err}");
    let (code, _, _) = run(&app, &["webhooks", "list", "--outcome", "weird"], &[]).await;
    assert_eq!(code, 1);
}

async fn versions(app: &TestApp) -> Vec<i32> {
    testkit::column(
        &app.client,
        "SELECT template_version FROM tenant_registry WHERE status = 'active' ORDER BY 1",
        &[],
    )
    .await
}

/// How many times V2 is recorded in each tenant database's own history.
async fn v2_applications(app: &TestApp) -> Vec<i64> {
    let mut counts = Vec::new();
    for db in app.prefixed_databases().await {
        if db.ends_with("template") {
            continue;
        }
        let mut config = app.db_config();
        config.config.dbname(&db);
        let client = config.connect_spawned().await.unwrap();
        counts.push(
            client
                .query_one(
                    "SELECT count(*) FROM tenant_plane.template_history WHERE version = 2",
                    &[],
                )
                .await
                .unwrap()
                .get(0),
        );
    }
    counts
}

#[tokio::test]
async fn rollout_migrates_thirty_tenants_reports_a_failure_and_resumes_after_a_kill() {
    let app = spawn_app().await;
    let mut orgs = Vec::new();
    for i in 0..30 {
        orgs.push(app.create_org(&format!("fan {i}")).await);
    }
    app.reconcile().await;
    assert_eq!(versions(&app).await, vec![1; 30]);
    let dir = TemplateDir::with_v2(TEMPLATE_V2);
    let env = [("TENANT_PLANE__TENANTS__TEMPLATE_DIR", dir.path())];

    // One tenant already has a `labels` table: V2 fails there.
    let broken = app.registry_tenant(orgs[7].org_id.as_str()).await;
    let mut config = app.db_config();
    config.config.dbname(broken.db_name().unwrap());
    let client = config.connect_spawned().await.unwrap();
    client
        .batch_execute("CREATE TABLE labels (id int)")
        .await
        .unwrap();

    // Interrupted: killed right after a tenant's migration committed, before
    // the registry recorded it.
    let mut child = spawn_cli(
        &app,
        &["tenants", "migrate", "--concurrency", "4"],
        &[env[0], ("TENANT_PLANE_PAUSE_AT", "rollout_applied")],
    );
    wait_for_stderr(
        &mut child,
        "paused at step rollout_applied",
        Duration::from_secs(90),
    )
    .await;
    child.kill().await.unwrap();
    let after_kill = versions(&app).await;
    assert!(
        after_kill.iter().all(|v| *v == 1),
        "nothing recorded yet: {after_kill:?}"
    );

    // Resumed: every tenant but the broken one reaches v2; the broken one is
    // named, and the run exits 3.
    let (code, out, err) = run(&app, &["tenants", "migrate", "--concurrency", "4"], &env).await;
    assert_eq!(code, 3, "{out}{err}");
    assert!(
        out.contains(&format!("{}", orgs[7].org_id)) && out.contains("FAILED"),
        "{out}"
    );
    assert!(out.contains("29 migrated to v2, 1 failed"), "{out}");
    let mut want = vec![1];
    want.extend(vec![2; 29]);
    assert_eq!(versions(&app).await, want);
    assert_eq!(
        app.registry_tenant(orgs[7].org_id.as_str())
            .await
            .template_version,
        Some(1)
    );
    // Nothing was applied twice, including in the tenants the killed run had
    // migrated without recording.
    let counts = v2_applications(&app).await;
    assert_eq!(counts.iter().filter(|c| **c == 1).count(), 29);
    assert_eq!(counts.iter().filter(|c| **c == 0).count(), 1);

    // The tenant role can use the new table.
    let creds = app.credentials(orgs[0].org_id.as_str()).await;
    crate::helpers::connect_as(&creds, creds.dbname.as_str())
        .await
        .unwrap()
        .batch_execute("INSERT INTO labels (name) VALUES ('urgent')")
        .await
        .expect("granted on the migrated table");

    // After fixing the broken tenant, a run for it alone finishes the job.
    client.batch_execute("DROP TABLE labels").await.unwrap();
    let (code, out, _) = run(
        &app,
        &[
            "tenants",
            "migrate",
            "--tenant",
            orgs[7].org_id.as_str(),
            "--json",
        ],
        &env,
    )
    .await;
    assert_eq!(code, 0, "{out}");
    let results: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(results[0]["to"], 2);
    let (code, out, _) = run(&app, &["tenants", "migrate"], &env).await;
    assert_eq!(
        (code, out.trim()),
        (0, "every active tenant is at template v2")
    );
    // New tenants are cloned at v2.
    let (code, _, _) = run(&app, &["template", "sync"], &env).await;
    assert_eq!(code, 0);
}
