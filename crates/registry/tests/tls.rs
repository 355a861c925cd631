//! TLS against a real PostgreSQL: the cluster of `scripts/dev-db --tls`
//! (ssl = on, a private CA, hostssl-only pg_hba.conf), whose URL scripts/test
//! exports as TENANT_PLANE_TEST_TLS_DATABASE_URL (sslmode=verify-full and
//! sslrootcert=<its CA>).

use std::path::PathBuf;
use std::time::Duration;

use registry::listen::{self, Signal};
use registry::pool::{build_pool, PoolOptions};
use registry::tls::{ConnectOptions, RootCert, SslMode, TlsSettings};
use tenant_plane_registry as registry;
use tokio_postgres::config::ChannelBinding;

/// The TLS test server's admin settings (verify-full with its CA).
fn tls_target() -> ConnectOptions {
    testkit::parse_admin_url(&testkit::tls_admin_url())
}

/// The same target with other TLS settings (same CA unless `root` says).
fn with_tls(mode: SslMode, root: Option<RootCert>) -> ConnectOptions {
    let mut target = tls_target();
    let root = root.or_else(|| target.tls.root_cert().cloned());
    target.tls = TlsSettings::new(Some(mode), root, None).expect("valid TLS settings");
    target
}

/// A connection attempt that must fail.
trait Refused {
    async fn refused(&self, why: &str) -> registry::tls::ConnectError;
}

impl Refused for ConnectOptions {
    async fn refused(&self, why: &str) -> registry::tls::ConnectError {
        match self.connect().await {
            Ok(_) => panic!("connected, but should not have: {why}"),
            Err(e) => e,
        }
    }
}

/// Whether the session of `client` is encrypted, as the server sees it.
async fn server_says_ssl(client: &tokio_postgres::Client) -> bool {
    client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .expect("pg_stat_ssl")
        .get(0)
}

/// A CA of its own, unrelated to the server's, made with openssl.
struct OtherCa {
    dir: PathBuf,
}

impl OtherCa {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("tp-other-ca-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = std::process::Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .arg("ec_paramgen_curve:prime256v1")
            .args(["-nodes", "-days", "1", "-subj", "/CN=another CA"])
            .arg("-keyout")
            .arg(dir.join("ca.key"))
            .arg("-out")
            .arg(dir.join("ca.crt"))
            .output()
            .expect("openssl runs (it makes the test's second CA)");
        assert!(
            out.status.success(),
            "openssl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self { dir }
    }

    fn cert(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
}

impl Drop for OtherCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn verify_full_connects_encrypted() {
    let target = tls_target();
    assert_eq!(target.tls.effective_mode(), SslMode::VerifyFull);
    let client = target
        .connect_spawned()
        .await
        .expect("verify-full connects");
    assert!(server_says_ssl(&client).await);
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused_naming_the_host_and_the_problem() {
    let other = OtherCa::new();
    for mode in [SslMode::VerifyFull, SslMode::VerifyCa] {
        let target = with_tls(mode, Some(RootCert::File(other.cert())));
        let err = target
            .refused("a server whose CA is not trusted is refused")
            .await
            .to_string();
        assert!(
            err.contains("127.0.0.1"),
            "{mode}: the host is named: {err}"
        );
        assert!(
            err.contains("not signed by a trusted CA")
                && err.contains(&other.cert().display().to_string()),
            "{mode}: the problem is named: {err}"
        );
    }
}

#[tokio::test]
async fn a_host_name_the_certificate_does_not_name_fails_verify_full_but_passes_verify_ca() {
    // Reach the server at its address, but as a name its certificate
    // (localhost, 127.0.0.1) does not carry: the name is what TLS checks.
    let as_other_name = |mode| {
        let mut target = with_tls(mode, None);
        let admin = &target.config;
        let mut config = tokio_postgres::Config::new();
        config
            .host("db.wrong-name.invalid")
            .hostaddr("127.0.0.1".parse().unwrap())
            .port(admin.get_ports()[0])
            .user(admin.get_user().unwrap())
            .password(admin.get_password().unwrap())
            .dbname(admin.get_dbname().unwrap());
        target.config = config;
        target
    };
    let err = as_other_name(SslMode::VerifyFull)
        .refused("verify-full checks the host name")
        .await
        .to_string();
    assert!(
        err.contains("db.wrong-name.invalid")
            && err.contains("not valid for the host name")
            && err.contains("localhost"),
        "{err}"
    );
    let client = as_other_name(SslMode::VerifyCa)
        .connect_spawned()
        .await
        .expect("verify-ca checks the chain only");
    assert!(server_says_ssl(&client).await);
}

#[tokio::test]
async fn require_encrypts_without_verifying_and_with_a_ca_verifies_the_chain() {
    let other = OtherCa::new();
    let mut unverified = with_tls(SslMode::Require, None);
    unverified.tls = TlsSettings::new(Some(SslMode::Require), None, None).unwrap();
    let client = unverified
        .connect_spawned()
        .await
        .expect("require connects");
    assert!(server_says_ssl(&client).await);
    // libpq: require with sslrootcert behaves as verify-ca.
    let err = with_tls(SslMode::Require, Some(RootCert::File(other.cert())))
        .refused("require with a CA checks the chain")
        .await;
    assert!(
        err.to_string().contains("not signed by a trusted CA"),
        "{err}"
    );
    let client = with_tls(SslMode::Prefer, None)
        .connect_spawned()
        .await
        .expect("prefer connects");
    assert!(
        server_says_ssl(&client).await,
        "prefer encrypts when it can"
    );
}

#[tokio::test]
async fn plaintext_is_refused_by_the_server() {
    let err = with_tls(SslMode::Disable, None)
        .refused("hostssl-only pg_hba.conf refuses plaintext")
        .await;
    assert_eq!(err.code().map(|c| c.code()), Some("28000"), "{err}");
    assert!(err.to_string().contains("no encryption"), "{err}");
}

#[tokio::test]
async fn channel_binding_is_used_over_tls() {
    // tokio-postgres refuses to authenticate without channel binding when it
    // is required: success means SCRAM-SHA-256-PLUS with tls-server-end-point.
    let mut target = tls_target();
    target.config.channel_binding(ChannelBinding::Require);
    let client = target
        .connect_spawned()
        .await
        .expect("SCRAM with channel binding over verify-full");
    assert!(server_says_ssl(&client).await);
    let mut target = with_tls(SslMode::Require, None);
    target.tls = TlsSettings::new(Some(SslMode::Require), None, None).unwrap();
    target.config.channel_binding(ChannelBinding::Require);
    target
        .connect_spawned()
        .await
        .expect("channel binding needs no verification of the chain");
}

#[tokio::test]
async fn channel_binding_required_fails_without_tls() {
    // The same requirement on a plaintext session cannot be met.
    let mut target = testkit::parse_admin_url(&testkit::admin_url());
    target.tls = TlsSettings::new(Some(SslMode::Disable), None, None).unwrap();
    target.config.channel_binding(ChannelBinding::Require);
    let err = target
        .refused("no channel binding without TLS")
        .await
        .to_string();
    assert!(
        err.contains("channel binding") || err.contains("no encryption"),
        "{err}"
    );
}

#[tokio::test]
async fn pools_and_listeners_use_the_url_tls_settings() {
    let pool = build_pool(tls_target(), &PoolOptions::default()).expect("pool");
    let client = pool.get().await.expect("a pooled TLS connection");
    assert!(server_says_ssl(&client).await);

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let (heard, mut hear) = tokio::sync::mpsc::unbounded_channel();
    let listener = tokio::spawn(listen::listen(
        tls_target(),
        &["tp_tls_test"],
        move |s: Signal<'_>| {
            let _ = heard.send(matches!(s, Signal::Listening));
        },
        stopped,
    ));
    let listening = tokio::time::timeout(Duration::from_secs(10), hear.recv())
        .await
        .expect("LISTEN over TLS within 10 s");
    assert_eq!(listening, Some(true));
    client.batch_execute("NOTIFY tp_tls_test").await.unwrap();
    let notified = tokio::time::timeout(Duration::from_secs(10), hear.recv())
        .await
        .expect("the notification over TLS");
    assert_eq!(notified, Some(false));
    stop.send(true).unwrap();
    listener.await.unwrap();

    // A CA file that is not there is an error when the pool is built.
    let mut missing = tls_target();
    missing.tls = TlsSettings::new(
        Some(SslMode::VerifyFull),
        Some(RootCert::File("/nonexistent/ca.crt".into())),
        None,
    )
    .unwrap();
    let err = build_pool(missing, &PoolOptions::default()).unwrap_err();
    assert!(
        err.to_string()
            .contains("cannot read sslrootcert /nonexistent/ca.crt"),
        "{err}"
    );
}
