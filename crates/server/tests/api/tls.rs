//! TLS end to end, against the TLS-only cluster of `scripts/dev-db --tls`
//! (TENANT_PLANE_TEST_TLS_DATABASE_URL, verify-full with its private CA): a
//! db host with TLS settings of its own, and a control database reached
//! over TLS whose settings the default host inherits. Provisioning (admin
//! connections), the resolver's tenant pools, its LISTEN connection and the
//! resolve answer all carry the host's TLS.

use model::TenantStatus;
use registry::hosts::{self, HostState, NewHost};
use registry::tenants::Action;
use registry::tls::{RootCert, SslMode};
use serde_json::Value;
use testkit::jwt::sign;
use testkit::TestDatabase;
use tokio_postgres::config::Host;

use crate::helpers::{run_cli, wait_until, TestApp};
use crate::resolve::{
    library_resolver, post_resolve, spawn_resolving_app, spawn_resolving_app_on, v2_claims,
};

/// The `connection` of a POST /internal/v1/resolve answer.
async fn resolved_connection(app: &TestApp, issuer: &str, org_id: &str) -> Value {
    let r = post_resolve(app, &sign(&v2_claims(issuer, org_id))).await;
    assert_eq!(r.status().as_u16(), 200);
    let body: Value = r.json().await.unwrap();
    body["connection"].clone()
}

async fn session_is_encrypted(conn: &tokio_postgres::Client) -> bool {
    conn.query_one(
        "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

#[tokio::test]
async fn a_db_host_with_its_own_tls_settings_is_provisioned_and_resolved_over_tls() {
    let tls = testkit::parse_admin_url(&testkit::tls_admin_url());
    assert_eq!(tls.tls.mode(), SslMode::VerifyFull);
    let Some(RootCert::File(ca)) = tls.tls.root_cert().cloned() else {
        panic!("the TLS test URL names its CA file")
    };
    let password = String::from_utf8(tls.config.get_password().unwrap().to_vec()).unwrap();
    let (app, issuer) =
        spawn_resolving_app(&[("TENANT_PLANE__HOSTS__SECURE__PASSWORD", &password)]).await;
    let Host::Tcp(address) = &tls.config.get_hosts()[0] else {
        panic!("the TLS server is reached over TCP")
    };
    let client = app.pool().get().await.unwrap();
    let host = hosts::upsert(
        &client,
        &NewHost {
            name: "secure".into(),
            host: address.clone(),
            port: tls.config.get_ports()[0],
            admin_user: tls.config.get_user().unwrap().into(),
            capacity: 10,
            tls: (&tls.tls).into(),
        },
    )
    .await
    .unwrap();
    assert_eq!(host.tls.sslmode, Some(SslMode::VerifyFull));
    hosts::set_state(&client, "default", HostState::Draining)
        .await
        .unwrap();

    let ids = app.create_org("on the TLS host").await;
    app.reconcile().await;
    let t = app.registry_tenant(ids.org_id.as_str()).await;
    assert_eq!(t.status, TenantStatus::Active, "{:?}", t.last_error);
    assert_eq!(t.db_host(), Some("secure"));
    let creds = app.credentials(ids.org_id.as_str()).await;
    assert_eq!(creds.tls.effective_mode(), SslMode::VerifyFull);

    let connection = resolved_connection(&app, &issuer, ids.org_id.as_str()).await;
    assert_eq!(connection["sslmode"], "verify-full");
    assert_eq!(connection["sslrootcert"], ca.display().to_string());

    let resolver = library_resolver(&app).await;
    let ctx = resolver
        .resolve(&sign(&v2_claims(&issuer, ids.org_id.as_str())))
        .await
        .unwrap();
    let conn = ctx.pool.get().await.unwrap();
    assert!(session_is_encrypted(&conn).await, "tenant pools use TLS");

    // The host's settings apply; a host that would need a CA it lacks is
    // refused by name rather than reached in plaintext.
    hosts::upsert(
        &client,
        &NewHost {
            tls: registry::tls::HostTls {
                sslmode: Some(SslMode::VerifyFull),
                sslrootcert: None,
            },
            ..NewHost {
                name: "secure".into(),
                host: address.clone(),
                port: tls.config.get_ports()[0],
                admin_user: tls.config.get_user().unwrap().into(),
                capacity: 10,
                tls: Default::default(),
            }
        },
    )
    .await
    .unwrap();
    let t = app.registry_tenant(ids.org_id.as_str()).await;
    let cipher = app.settings.cipher().unwrap();
    let err = registry::tenants::credentials(&cipher, &t, &app.db_config().tls).unwrap_err();
    assert!(
        err.to_string()
            .contains("db host \"secure\": sslmode=verify-full needs sslrootcert"),
        "{err}"
    );
}

#[tokio::test]
async fn a_control_database_over_tls_gives_the_default_host_its_tls() {
    let db = TestDatabase::migrated_on(&testkit::tls_admin_url()).await;
    assert!(db.url().contains("sslmode=verify-full"), "{}", db.url());
    let (app, issuer) = spawn_resolving_app_on(db, &[]).await;
    let default = hosts::get(&app.pool().get().await.unwrap(), "default")
        .await
        .unwrap()
        .unwrap();
    assert!(default.tls.is_inherited(), "the default host inherits");

    let ids = app.create_org("over TLS").await;
    app.reconcile().await;
    let t = app.registry_tenant(ids.org_id.as_str()).await;
    assert_eq!(t.status, TenantStatus::Active, "{:?}", t.last_error);
    let connection = resolved_connection(&app, &issuer, ids.org_id.as_str()).await;
    assert_eq!(connection["sslmode"], "verify-full");

    let resolver = library_resolver(&app).await;
    let ctx = resolver
        .resolve(&sign(&v2_claims(&issuer, ids.org_id.as_str())))
        .await
        .unwrap();
    assert!(session_is_encrypted(&ctx.pool.get().await.unwrap()).await);
    drop(ctx);

    // The resolver's LISTEN connection is over TLS too: a suspension
    // reaches it and closes the tenant's pool.
    app.act(ids.org_id.as_str(), Action::Suspend).await;
    app.reconcile().await;
    wait_until(
        "the suspended tenant's pool to close",
        std::time::Duration::from_secs(10),
        || async { !resolver.has_pool(t.id) },
    )
    .await;
}

#[tokio::test]
async fn hosts_add_takes_tls_flags_and_refuses_settings_that_cannot_work() {
    let app = crate::helpers::spawn_app().await;
    let tls = testkit::parse_admin_url(&testkit::tls_admin_url());
    let Some(RootCert::File(ca)) = tls.tls.root_cert().cloned() else {
        panic!("the TLS test URL names its CA file")
    };
    let ca = ca.display().to_string();
    let port = tls.config.get_ports()[0].to_string();
    let add = [
        "hosts",
        "add",
        "secure",
        "--host",
        "127.0.0.1",
        "--port",
        &port,
    ];

    let (code, _, stderr) = run_cli(
        &app,
        &[&add[..], &["--sslmode", "verify-full"]].concat(),
        &[],
    )
    .await;
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("sslmode=verify-full needs sslrootcert"),
        "{stderr}"
    );
    let (code, _, stderr) = run_cli(
        &app,
        &[&add[..], &["--sslmode", "verify_full"]].concat(),
        &[],
    )
    .await;
    assert_eq!(code, 2, "clap refuses the value: {stderr}");
    assert!(stderr.contains("invalid sslmode"), "{stderr}");

    let flags = ["--sslmode", "verify-full", "--sslrootcert", &ca];
    let (code, stdout, stderr) = run_cli(&app, &[&add[..], &flags[..]].concat(), &[]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("TLS verify-full, sslrootcert="), "{stdout}");
    let (code, stdout, _) = run_cli(&app, &["hosts", "list"], &[]).await;
    assert_eq!(code, 0);
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("default") && l.contains("(from database.url)")),
        "{stdout}"
    );
    let (_, json, _) = run_cli(&app, &["hosts", "list", "--json"], &[]).await;
    let hosts: Value = serde_json::from_str(&json).unwrap();
    let secure = hosts
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == "secure")
        .unwrap();
    assert_eq!(secure["sslmode"], "verify-full");
    assert_eq!(secure["sslrootcert"], ca);
}
