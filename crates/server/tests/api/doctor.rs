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

/// An admin connection to a tenant's database on the test server.
async fn admin_in(app: &TestApp, db: &str) -> tokio_postgres::Client {
    let mut target = app.db_config();
    target.config.dbname(db);
    target.connect_spawned().await.unwrap()
}

#[tokio::test]
async fn doctor_reports_tenants_off_the_privilege_model_and_names_it_did_not_derive() {
    let app = spawn_app_with(&[]).await;
    let drifted = app.create_org("drifted").await;
    let renamed = app.create_org("renamed").await;
    app.reconcile().await;
    let (code, findings) = doctor(&app).await;
    assert_eq!(
        (code, &findings),
        (0, &serde_json::json!([])),
        "clean at first"
    );

    // Drift inside one tenant database, as the first privilege model left
    // it or a hand-made change would: the tenant's login role owns the
    // database, may create in public and has code of its own there; and
    // its history disagrees with the registry.
    let t = app.registry_tenant(drifted.org_id.as_str()).await;
    let (db, role) = (t.db_name().unwrap(), t.db_role().unwrap());
    admin_in(&app, db)
        .await
        .batch_execute(&format!(
            "ALTER DATABASE \"{db}\" OWNER TO \"{role}\";
             GRANT CREATE ON SCHEMA public TO \"{role}\";
             GRANT CONNECT ON DATABASE \"{db}\" TO PUBLIC;"
        ))
        .await
        .unwrap();
    let creds = app.credentials(drifted.org_id.as_str()).await;
    let tenant = crate::helpers::connect_as(&creds, db).await.unwrap();
    tenant
        .batch_execute(
            "CREATE FUNCTION public.planted() RETURNS trigger LANGUAGE plpgsql
               AS $$ BEGIN RETURN NEW; END $$;",
        )
        .await
        .unwrap();
    app.client
        .execute(
            "UPDATE tenant_registry SET template_version = 7 WHERE id = $1",
            &[&t.id.as_uuid()],
        )
        .await
        .unwrap();
    // Another tenant's row names a database and role its id does not give.
    app.client
        .execute(
            "UPDATE tenant_registry SET db_name = 'other_db', db_role = 'other_role'
              WHERE clerk_org_id = $1",
            &[&renamed.org_id.as_str()],
        )
        .await
        .unwrap();

    let (code, findings) = doctor(&app).await;
    assert_eq!(code, 2, "{findings}");
    assert_eq!(
        kinds(&findings),
        [
            "foreign_name",
            "missing_database",
            // The prefix's database and role of `renamed` now belong to no row.
            "orphan_database",
            "orphan_role",
            "orphan_role",
            "schema_create",
            "template_version_mismatch",
            "tenant_code",
            "tenant_database_open",
            "tenant_owns_objects",
        ],
        "{findings:#}"
    );
    let text = findings.to_string();
    assert!(text.contains("public.planted()"), "{text}");
    assert!(text.contains("the database itself"), "{text}");
    assert!(text.contains("PUBLIC may connect"), "{text}");
    assert!(text.contains("v1, the registry v7"), "{text}");
}

#[tokio::test]
async fn doctor_looks_tenants_up_by_their_registry_names_whatever_the_prefix() {
    let app = spawn_app_with(&[]).await;
    app.create_org("prefixed").await;
    app.reconcile().await;
    // Run with another prefix than the one the tenants were made with: their
    // databases exist, so none is missing; the names are reported as not
    // derived from the configured prefix.
    let out = spawn_cli(
        &app,
        &["doctor", "--json"],
        &[("TENANT_PLANE__TENANTS__PREFIX", "someone_else_")],
    )
    .wait_with_output()
    .await
    .unwrap();
    let findings: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    let k = kinds(&findings);
    assert!(!k.contains(&"missing_database".to_owned()), "{findings:#}");
    assert!(!k.contains(&"missing_role".to_owned()), "{findings:#}");
    assert!(k.contains(&"foreign_name".to_owned()), "{findings:#}");
}

#[tokio::test]
async fn hosts_harden_closes_maintenance_databases_to_tenant_roles() {
    use registry::hosts::{self, HostState};
    let password = crate::helpers::second_host_password();
    let app = spawn_app_with(&[("TENANT_PLANE__HOSTS__SECOND__PASSWORD", &password)]).await;
    let second = app.add_second_host(10).await;
    let client = app.pool().get().await.unwrap();
    hosts::set_state(&client, "default", HostState::Draining)
        .await
        .unwrap();
    let ids = app.create_org("on the second host").await;
    app.reconcile().await;
    let creds = app.credentials(ids.org_id.as_str()).await;
    assert_eq!(creds.port, second.get_ports()[0]);

    // The second server as a fresh cluster has it: PUBLIC may connect to
    // its maintenance databases, and so may the tenant.
    let admin = testkit::parse_admin_url(&testkit::second_admin_url())
        .connect_spawned()
        .await
        .unwrap();
    admin
        .batch_execute(
            "GRANT CONNECT ON DATABASE postgres TO PUBLIC;
             GRANT CONNECT ON DATABASE template1 TO PUBLIC;",
        )
        .await
        .unwrap();
    assert!(crate::helpers::connect_as(&creds, "postgres").await.is_ok());
    let (_, findings) = doctor(&app).await;
    let open: Vec<&str> = findings
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == "maintenance_database_open")
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(open, ["postgres", "template1"], "{findings:#}");

    // Without --yes it only shows what it would run.
    let (code, out, err) = crate::helpers::run_cli(&app, &["hosts", "harden", "second"], &[]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("would run") && out.contains("REVOKE CONNECT"),
        "{out}"
    );
    assert!(crate::helpers::connect_as(&creds, "postgres").await.is_ok());

    let (code, out, err) =
        crate::helpers::run_cli(&app, &["hosts", "harden", "second", "--yes"], &[]).await;
    assert_eq!(code, 0, "{out}{err}");
    for db in ["postgres", "template1"] {
        let err = crate::helpers::connect_as(&creds, db).await.unwrap_err();
        assert!(
            err.to_string().contains("CONNECT") || format!("{err:?}").contains("CONNECT"),
            "{db}: {err:?}"
        );
    }
    // Its own database it still reaches, and the admin keeps its access.
    crate::helpers::connect_as(&creds, creds.dbname.as_str())
        .await
        .unwrap();
    let (_, findings) = doctor(&app).await;
    assert!(
        !findings.to_string().contains("maintenance_database_open"),
        "{findings:#}"
    );
    let (code, out, _) = crate::helpers::run_cli(&app, &["hosts", "harden", "second"], &[]).await;
    assert_eq!(code, 0);
    assert!(out.contains("already closed"), "{out}");
}
