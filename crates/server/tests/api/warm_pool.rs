//! The warm pool: spares cloned ahead, claimed by renaming, refilled, kept
//! at the template's version, counted against capacity, retired on drain,
//! known to the doctor, and safe against a worker killed mid-claim.

use std::time::Duration;

use model::status::TenantStatus;
use tokio_postgres::Client;

use crate::helpers::{
    connect_as, run_cli, spawn_app_with, spawn_worker, wait_for_stderr, wait_until, TemplateDir,
    TestApp, SHORT_LEASE, TEMPLATE_V2,
};

const DEADLINE: Duration = Duration::from_secs(90);

/// A spare as the registry and the host see it.
#[derive(Debug)]
struct SpareRow {
    name: String,
    state: String,
    template_version: Option<i32>,
}

async fn spares(app: &TestApp) -> Vec<SpareRow> {
    app.client
        .query(
            "SELECT name, state, template_version FROM warm_spares ORDER BY created_at",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| SpareRow {
            name: r.get(0),
            state: r.get(1),
            template_version: r.get(2),
        })
        .collect()
}

/// Spares claimed by a tenant that has not finished taking them over.
async fn claimed(app: &TestApp) -> i64 {
    app.client
        .query_one(
            "SELECT count(*) FROM warm_spares WHERE state = 'claimed'",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

async fn database_oid(client: &Client, name: &str) -> Option<u32> {
    client
        .query_opt("SELECT oid FROM pg_database WHERE datname = $1", &[&name])
        .await
        .unwrap()
        .map(|r| r.get(0))
}

async fn refill(app: &TestApp) -> provisioner::reconciler::Refilled {
    app.reconciler.refill_once().await.expect("refill")
}

fn pool_of(n: &'static str) -> Vec<(&'static str, &'static str)> {
    let mut env = vec![("TENANT_PLANE__TENANTS__WARM_POOL", n)];
    env.extend(SHORT_LEASE);
    env
}

#[tokio::test]
async fn a_tenant_takes_a_ready_spare_and_the_refill_replaces_it() {
    let app = spawn_app_with(&pool_of("2")).await;
    let built = refill(&app).await;
    assert_eq!((built.built, built.retired), (2, 0));
    let before = spares(&app).await;
    assert!(before.iter().all(|s| s.state == "ready"), "{before:?}");
    assert!(before.iter().all(|s| s.template_version == Some(1)));
    let oldest = &before[0].name;
    let oldest_oid = database_oid(&app.client, oldest).await.expect("spare db");

    let org = app.create_org("Warm").await.org_id.as_str().to_owned();
    app.reconcile().await;
    let t = app.registry_tenant(&org).await;
    assert_eq!(t.status, TenantStatus::Active);
    assert_eq!(t.template_version, Some(1));
    // The tenant's database is the oldest spare, renamed.
    assert_eq!(
        database_oid(&app.client, t.db_name().unwrap()).await,
        Some(oldest_oid)
    );
    assert_eq!(database_oid(&app.client, oldest).await, None);
    assert!(!app.role_exists(oldest).await);
    assert!(!app.role_exists(&format!("{oldest}_owner")).await);
    let left = spares(&app).await;
    assert_eq!(left.len(), 1, "the claim's row is gone: {left:?}");
    // The claim's audit event names the spare it took.
    let taken: Vec<Option<String>> = app
        .client
        .query(
            "SELECT e.detail ->> 'warm_spare' FROM tenant_events e
               JOIN tenant_registry t ON t.id = e.tenant_id
              WHERE t.clerk_org_id = $1 AND e.kind = 'provisioning'",
            &[&org],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(taken, vec![Some(oldest.clone())]);

    // The tenant's own credentials work, with its plan's limits, on the
    // template's tables.
    let creds = app.credentials(&org).await;
    let tenant = connect_as(&creds, creds.dbname.as_str()).await.unwrap();
    tenant
        .batch_execute("INSERT INTO members (clerk_user_id) VALUES ('user_first')")
        .await
        .expect("the tenant writes to its tables");
    let limit: i32 = app
        .client
        .query_one(
            "SELECT rolconnlimit FROM pg_roles WHERE rolname = $1",
            &[&creds.role.as_str()],
        )
        .await
        .unwrap()
        .get(0);
    assert!(limit > 0, "plan limits applied to the renamed role");

    // It cannot reach the other spare.
    let other = &left[0].name;
    let err = connect_as(&creds, other)
        .await
        .expect_err("a tenant reached a spare");
    assert_eq!(err.code().map(|c| c.code()), Some("42501"), "{err}");

    let again = refill(&app).await;
    assert_eq!(again.built, 1);
    assert_eq!(spares(&app).await.len(), 2);
}

#[tokio::test]
async fn spares_are_closed_to_everyone_until_claimed() {
    let app = spawn_app_with(&pool_of("1")).await;
    refill(&app).await;
    let spare = spares(&app).await.remove(0).name;
    let row = app
        .client
        .query_one(
            "SELECT r.rolcanlogin, starts_with(a.rolpassword, 'SCRAM-SHA-256$'),
                    has_database_privilege('public', d.oid, 'CONNECT'),
                    (SELECT count(*) FROM pg_stat_activity WHERE datname = $1)
               FROM pg_roles r JOIN pg_authid a ON a.oid = r.oid, pg_database d
              WHERE r.rolname = $1 AND d.datname = $1",
            &[&spare],
        )
        .await
        .unwrap();
    assert!(!row.get::<_, bool>(0), "a spare's role cannot log in");
    // Its password is set now (a claim needs no new verifier) and sealed
    // in its row, never stored in the clear.
    assert!(row.get::<_, bool>(1), "a spare's role has a SCRAM verifier");
    let sealed: Vec<u8> = app
        .client
        .query_one(
            "SELECT password_enc FROM warm_spares WHERE name = $1",
            &[&spare],
        )
        .await
        .unwrap()
        .get(0);
    assert!(sealed.len() > 28, "sealed: nonce, ciphertext and tag");
    assert!(!row.get::<_, bool>(2), "PUBLIC may not connect to a spare");
    assert_eq!(row.get::<_, i64>(3), 0, "nobody is connected to a spare");
    // Nor does it show as a tenant anywhere.
    assert_eq!(app.count("tenant_registry").await, 0);
}

#[tokio::test]
async fn two_workers_racing_for_the_last_spare_take_it_once() {
    let app = spawn_app_with(&pool_of("1")).await;
    refill(&app).await;
    let spare = spares(&app).await.remove(0).name;
    let spare_oid = database_oid(&app.client, &spare).await.unwrap();
    let a = app.create_org("Racer A").await.org_id.as_str().to_owned();
    let b = app.create_org("Racer B").await.org_id.as_str().to_owned();

    let (first, second) = tokio::join!(app.reconciler.run_once(), app.reconciler.run_once());
    first.unwrap();
    second.unwrap();
    app.reconcile().await;

    let mut owners = Vec::new();
    for org in [&a, &b] {
        let t = app.registry_tenant(org).await;
        assert_eq!(t.status, TenantStatus::Active, "{org}");
        if database_oid(&app.client, t.db_name().unwrap()).await == Some(spare_oid) {
            owners.push(org.clone());
        }
    }
    assert_eq!(owners.len(), 1, "exactly one tenant has the spare");
    assert!(spares(&app).await.is_empty());
}

#[tokio::test]
async fn spares_count_against_capacity() {
    let mut env = pool_of("2");
    env.push(("TENANT_PLANE__TENANTS__DEFAULT_HOST_CAPACITY", "3"));
    let app = spawn_app_with(&env).await;
    let host = |app: &TestApp| {
        let pool = app.pool();
        async move {
            let client = pool.get().await.unwrap();
            let h = registry::hosts::list(&client).await.unwrap().remove(0);
            (h.tenants, h.spares)
        }
    };
    assert_eq!(refill(&app).await.built, 2);
    assert_eq!(host(&app).await, (0, 2));

    app.create_org("One").await;
    app.reconcile().await;
    assert_eq!(host(&app).await, (1, 1));
    // One slot left: one spare more, then the host is full.
    assert_eq!(refill(&app).await.built, 1);
    assert_eq!(host(&app).await, (1, 2));
    assert_eq!(refill(&app).await.built, 0);

    let (code, out, _) = run_cli(&app, &["hosts", "list"], &[]).await;
    assert_eq!(code, 0);
    assert!(out.contains("SPARES"), "{out}");

    for name in ["Two", "Three"] {
        app.create_org(name).await;
    }
    app.reconcile().await;
    assert_eq!(host(&app).await, (3, 0));
    assert_eq!(refill(&app).await.built, 0, "no room for spares");
    let org = app.create_org("Four").await.org_id.as_str().to_owned();
    app.reconcile().await;
    let t = app.registry_tenant(&org).await;
    assert!(t.placement.is_none(), "placed beyond capacity");
    assert!(
        t.last_error.as_deref().unwrap_or("").contains("no db host"),
        "{:?}",
        t.last_error
    );

    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"tenant_plane_warm_spares{host="default",state="ready"} 0"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_burst_drains_the_pool_and_the_refill_waits_then_catches_up() {
    let app = spawn_app_with(&pool_of("2")).await;
    refill(&app).await;
    let mut orgs = Vec::new();
    for i in 0..5 {
        orgs.push(
            app.create_org(&format!("Burst {i}"))
                .await
                .org_id
                .as_str()
                .to_owned(),
        );
    }
    // Tenants waiting for databases come first: no spare is built for now.
    let waiting = refill(&app).await;
    assert!(waiting.deferred);
    assert_eq!(waiting.built, 0);

    app.reconcile().await;
    for org in &orgs {
        assert_eq!(app.registry_tenant(org).await.status, TenantStatus::Active);
    }
    assert!(spares(&app).await.is_empty(), "the burst took both spares");
    let after = refill(&app).await;
    assert_eq!((after.built, after.deferred), (2, false));
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"tenant_plane_warm_spares{host="default",state="ready"} 2"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_template_change_retires_older_spares_and_no_tenant_gets_one() {
    let app = spawn_app_with(&pool_of("2")).await;
    refill(&app).await;
    let old: Vec<String> = spares(&app).await.into_iter().map(|s| s.name).collect();

    let dir = TemplateDir::with_v2(TEMPLATE_V2);
    let (code, out, err) = run_cli(&app, &["template", "sync"], &dir.env()).await;
    assert_eq!(code, 0, "{out}{err}");

    // A spare behind the template is never claimed: this one is cloned.
    let org = app.create_org("After v2").await.org_id.as_str().to_owned();
    app.reconcile().await;
    let t = app.registry_tenant(&org).await;
    assert_eq!(t.status, TenantStatus::Active);
    assert_eq!(t.template_version, Some(2));
    assert_eq!(spares(&app).await.len(), 2, "no spare was taken");

    let done = refill(&app).await;
    assert_eq!((done.retired, done.built), (2, 2));
    let now = spares(&app).await;
    assert!(now.iter().all(|s| s.template_version == Some(2)), "{now:?}");
    for name in &old {
        assert_eq!(
            database_oid(&app.client, name).await,
            None,
            "{name} dropped"
        );
        assert!(!app.role_exists(name).await);
    }
    let next = app.create_org("Warm v2").await.org_id.as_str().to_owned();
    app.reconcile().await;
    let t = app.registry_tenant(&next).await;
    assert_eq!(t.template_version, Some(2));
    assert_eq!(spares(&app).await.len(), 1, "this one took a spare");
    let creds = app.credentials(&next).await;
    connect_as(&creds, creds.dbname.as_str())
        .await
        .unwrap()
        .batch_execute("INSERT INTO labels (name) VALUES ('v2 table')")
        .await
        .expect("the claimed spare has the v2 table");
}

#[tokio::test]
async fn a_spare_built_on_an_earlier_privilege_model_is_retired_and_never_claimed() {
    let app = spawn_app_with(&pool_of("1")).await;
    refill(&app).await;
    let old = spares(&app).await.remove(0).name;
    app.client
        .execute("UPDATE warm_spares SET privilege_model = 1", &[])
        .await
        .unwrap();

    let org = app.create_org("Model 2").await.org_id.as_str().to_owned();
    app.reconcile().await;
    let t = app.registry_tenant(&org).await;
    assert_eq!(t.status, TenantStatus::Active);
    assert_eq!(spares(&app).await.len(), 1, "the old spare was not taken");
    assert!(database_oid(&app.client, &old).await.is_some());

    let done = refill(&app).await;
    assert_eq!((done.retired, done.built), (1, 1));
    assert_eq!(database_oid(&app.client, &old).await, None, "{old} dropped");
    let model: i32 = app
        .client
        .query_one("SELECT privilege_model FROM warm_spares", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(model, registry::tenants::PRIVILEGE_MODEL);
}

#[tokio::test]
async fn draining_a_host_retires_its_spares_and_turning_the_pool_off_retires_the_rest() {
    let app = spawn_app_with(&pool_of("2")).await;
    refill(&app).await;
    let (code, _, err) = run_cli(&app, &["hosts", "drain", "default"], &[]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(refill(&app).await.retired, 2);
    assert!(spares(&app).await.is_empty());
    assert!(app
        .prefixed_databases()
        .await
        .iter()
        .all(|d| !d.contains("spare_")));

    let (code, _, err) = run_cli(&app, &["hosts", "undrain", "default"], &[]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(refill(&app).await.built, 2);
    // A worker started with the pool off retires what is left.
    let mut worker = crate::helpers::spawn_cli(
        &app,
        &["worker"],
        &[("TENANT_PLANE__TENANTS__WARM_POOL", "0")],
    );
    wait_until("the spares to be retired", DEADLINE, || async {
        spares(&app).await.is_empty()
    })
    .await;
    worker.kill().await.expect("stop the worker");
    assert!(app
        .prefixed_databases()
        .await
        .iter()
        .all(|d| !d.contains("spare_")));
}

#[tokio::test]
async fn the_doctor_knows_spares_and_reports_lost_ones() {
    let app = spawn_app_with(&pool_of("2")).await;
    refill(&app).await;
    let doctor = || async {
        let (code, out, _) = run_cli(&app, &["doctor", "--json"], &[]).await;
        (
            code,
            serde_json::from_str::<serde_json::Value>(&out).unwrap(),
        )
    };
    assert_eq!(
        doctor().await,
        (0, serde_json::json!([])),
        "spares are not orphans"
    );

    let all = spares(&app).await;
    // A ready spare whose database vanished, and a spare database the
    // registry forgot.
    app.client
        .batch_execute(&format!("DROP DATABASE \"{}\"", all[0].name))
        .await
        .unwrap();
    app.client
        .execute("DELETE FROM warm_spares WHERE name = $1", &[&all[1].name])
        .await
        .unwrap();
    let (code, findings) = doctor().await;
    assert_ne!(code, 0);
    let kinds: Vec<(String, String)> = findings
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["kind"].as_str().unwrap().to_owned(),
                f["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(
        kinds.contains(&("missing_spare".into(), all[0].name.clone())),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&("orphan_database".into(), all[1].name.clone())),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&("orphan_role".into(), all[1].name.clone())),
        "{kinds:?}"
    );
}

#[tokio::test]
async fn a_worker_killed_at_any_claim_step_leaves_no_half_claimed_spare() {
    // The worker process runs the pool too, but the spares these tenants
    // take are built here first.
    let app = spawn_app_with(&pool_of("2")).await;
    for step in ["claimed", "spare_taken"] {
        refill(&app).await;
        let org = app.create_org(step).await.org_id.as_str().to_owned();
        let mut worker = spawn_worker(&app, Some(step));
        wait_for_stderr(&mut worker, &format!("paused at step {step}"), DEADLINE).await;
        worker.kill().await.expect("SIGKILL the worker");
        assert_eq!(
            claimed(&app).await,
            1,
            "killed at {step}: the claim is recorded"
        );

        app.reconcile_until(&org, TenantStatus::Active).await;
        let creds = app.credentials(&org).await;
        connect_as(&creds, creds.dbname.as_str())
            .await
            .unwrap_or_else(|e| panic!("after a kill at {step}: {e}"));
        assert_eq!(
            claimed(&app).await,
            0,
            "after a kill at {step}: no claim left half-done"
        );
    }
    // Builds the killed workers left are retired once their leases lapse.
    wait_until("abandoned builds to be retired", DEADLINE, || async {
        refill(&app).await;
        spares(&app).await.iter().all(|s| s.state == "ready")
    })
    .await;
    let (code, out, _) = run_cli(&app, &["doctor", "--json"], &[]).await;
    assert_eq!((code, out.trim()), (0, "[]"), "nothing left behind");
}
