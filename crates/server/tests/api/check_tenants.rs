//! `scripts/check-tenants` (bash + psql) against planted drift, run as a
//! child process with the environment an operator would give it.

use std::process::{Command, Output, Stdio};

use crate::helpers::{spawn_app, TestApp};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/check-tenants");

/// Runs the script with only `database_url` and `args`: no inherited
/// TENANT_PLANE__* or libpq PG* variables that could point it elsewhere.
async fn check_tenants(database_url: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(SCRIPT);
    for (k, _) in std::env::vars() {
        if k.starts_with("TENANT_PLANE") || k.starts_with("PG") {
            cmd.env_remove(k);
        }
    }
    cmd.args(args)
        .env("TENANT_PLANE__DATABASE__URL", database_url)
        .stdin(Stdio::null());
    // Blocking wait, off the runtime that serves the app.
    tokio::task::spawn_blocking(move || cmd.output().expect("run scripts/check-tenants"))
        .await
        .unwrap()
}

async fn check_app(app: &TestApp) -> (i32, String, String) {
    let out = check_tenants(
        app.settings.database_url().unwrap(),
        &["--prefix", &app.prefix.prefix],
    )
    .await;
    (
        out.status.code().expect("exited, not killed"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The password of a `postgres://user:password@host/...` URL.
fn password_of(url: &str) -> &str {
    let authority = &url[url.find("://").unwrap() + 3..];
    let userinfo = &authority[..authority.find('@').expect("URL with credentials")];
    &userinfo[userinfo.find(':').expect("URL with a password") + 1..]
}

async fn set_status(app: &TestApp, org_id: &str, sql_set: &str) {
    let n = app
        .client
        .execute(
            &format!("UPDATE tenant_registry SET {sql_set} WHERE clerk_org_id = $1"),
            &[&org_id],
        )
        .await
        .unwrap();
    assert_eq!(n, 1, "tenant {org_id} updated");
}

#[tokio::test]
async fn check_tenants_reports_stuck_failed_and_orphans() {
    let app = spawn_app().await;
    let steady = app.create_org("steady").await;
    let stuck = app.create_org("stuck").await;
    let failed = app.create_org("failed").await;
    let waiting = app.create_org("waiting").await;
    app.reconcile().await;
    let steady_db = app
        .registry_tenant(steady.org_id.as_str())
        .await
        .db_name()
        .expect("provisioned")
        .to_owned();
    let password = password_of(app.settings.database_url().unwrap()).to_owned();

    let (code, stdout, stderr) = check_app(&app).await;
    assert_eq!(code, 0, "clean at first\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("OK: no stuck, failed or orphan findings") && stdout.contains("active"),
        "{stdout}"
    );
    assert!(!stdout.contains(&password) && !stderr.contains(&password));

    // An orphan database under the prefix, with no registry row.
    let orphan = format!("{}{}", app.prefix.prefix, "0".repeat(32));
    app.client
        .batch_execute(&format!("CREATE DATABASE \"{orphan}\""))
        .await
        .unwrap();
    // A tenant stuck mid-way for an hour, and one that gave up.
    set_status(
        &app,
        stuck.org_id.as_str(),
        "status = 'provisioning', updated_at = now() - interval '1 hour'",
    )
    .await;
    set_status(
        &app,
        failed.org_id.as_str(),
        "status = 'failed', last_error = 'could not create role: planted failure 7f3a'",
    )
    .await;
    // Deleting for an hour, but still inside its retention: waiting, not
    // stuck (and its database, still held, is no orphan).
    set_status(
        &app,
        waiting.org_id.as_str(),
        "status = 'deleting', desired_state = 'deleted', updated_at = now() - interval '1 hour',
         deleted_at = now() - interval '1 hour', purge_after = now() + interval '1 day'",
    )
    .await;

    let (code, stdout, stderr) = check_app(&app).await;
    assert_eq!(code, 1, "findings\n{stdout}\n{stderr}");
    assert!(stdout.contains(&orphan), "orphan named\n{stdout}");
    assert!(
        stdout.contains(stuck.org_id.as_str()),
        "stuck tenant named\n{stdout}"
    );
    assert!(
        stdout.contains("could not create role: planted failure 7f3a"),
        "failed tenant's error shown\n{stdout}"
    );
    assert!(
        stdout.contains("FINDINGS: 1 stuck, 1 failed, 1 orphan database(s)"),
        "{stdout}"
    );
    assert!(
        !stdout.contains(waiting.org_id.as_str()),
        "a deleting tenant within its retention is not stuck\n{stdout}"
    );
    assert!(
        !stdout.contains(&steady_db),
        "a healthy tenant's database is no orphan\n{stdout}"
    );
    assert!(!stdout.contains(&password) && !stderr.contains(&password));

    // A longer threshold: the stuck tenant is not stuck yet.
    let out = check_tenants(
        app.settings.database_url().unwrap(),
        &["--prefix", &app.prefix.prefix, "--stuck-after", "2 hours"],
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("FINDINGS: 0 stuck, 1 failed, 1 orphan database(s)"),
        "{stdout}"
    );
}

#[tokio::test]
async fn check_tenants_exits_2_on_connection_and_usage_errors_without_leaking_the_password() {
    let app = spawn_app().await;
    let url = app.settings.database_url().unwrap();
    let secret = "Sekr1t-never-printed-4c1d";
    let wrong_password = url.replacen(password_of(url), secret, 1);
    let nothing_listens = format!("postgres://postgres:{secret}@127.0.0.1:1/tenant_plane");
    let not_a_url = format!("postgres//postgres:{secret}@127.0.0.1:1/tenant_plane");

    for bad in [&wrong_password, &nothing_listens, &not_a_url] {
        let out = check_tenants(bad, &["--prefix", &app.prefix.prefix]).await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad}\n{stdout}\n{stderr}");
        assert!(
            stderr.contains("check-tenants: error:"),
            "says what went wrong\n{stderr}"
        );
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "password leaked\n{stdout}\n{stderr}"
        );
    }

    // Usage errors, and a working connection with an invalid interval.
    for args in [
        &["--no-such-option"][..],
        &["--prefix", "Not-A-Prefix"],
        &["--prefix", &app.prefix.prefix, "--stuck-after", "soonish"],
    ] {
        let out = check_tenants(url, args).await;
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.stdout.is_empty(), "no partial report for {args:?}");
    }

    let out = check_tenants(url, &["--help"]).await;
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Exit status"));
}
