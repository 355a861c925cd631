//! `spawn_app()`: a fresh migrated control-plane database and the application
//! on port 0, with a webhook secret of its own, configured by testkit's
//! `TestSettings`.

use std::sync::Once;

use reqwest::Response;
use tenant_plane::config::{LogFormat, Settings};
use tenant_plane::startup::Application;
use testkit::{FakeClerk, PrefixGuard, TestDatabase, TestSettings};
use tokio_postgres::Client;
use webhooks::samples::SampleEvent;
use webhooks::WebhookVerifier;

static TRACING: Once = Once::new();

/// Logs stay silent unless TEST_LOG is set, so failures are readable.
fn init_tracing() {
    TRACING.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            tenant_plane::telemetry::init(LogFormat::Pretty, "debug");
        }
    });
}

pub use testkit::secrets::{
    random_crypto_key as random_key, random_webhook_secret as random_secret,
};

pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

pub fn new_svix_id() -> String {
    format!("msg_{}", uuid::Uuid::new_v4().simple())
}

pub struct TestApp {
    pub address: String,
    pub settings: Settings,
    /// The environment the app was configured from, for child processes
    /// (workers, the CLI) that must share its database, key and prefix.
    pub env: Vec<(String, String)>,
    /// Tenant databases and roles of this test are dropped with it.
    pub prefix: PrefixGuard,
    pub reconciler: std::sync::Arc<provisioner::reconciler::Reconciler>,
    /// Kept for the test's lifetime: dropping it drops the database.
    _db: TestDatabase,
    pub verifier: WebhookVerifier,
    /// The app's webhook secret, for child processes that sign deliveries.
    pub secret: String,
    pub http: reqwest::Client,
    /// Admin connection to the test database, for assertions.
    pub client: Client,
    /// A fake Clerk the app relies on, kept as long as the app.
    pub clerk: Option<FakeClerk>,
}

/// The application's settings for a test environment: the one place the
/// tests turn testkit's `TestSettings` into `Settings`.
pub fn app_settings(env: &TestSettings) -> Settings {
    Settings::load_from(None, env).expect("test settings are valid")
}

/// Settings for tests that kill workers: a lease that lapses within seconds
/// (and an attempt deadline under it), so a takeover does not wait a minute.
pub const SHORT_LEASE: [(&str, &str); 2] = [
    ("TENANT_PLANE__WORKER__ATTEMPT_TIMEOUT", "5s"),
    ("TENANT_PLANE__WORKER__LEASE", "6s"),
];
const SHORT_LEASE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(90);

pub async fn spawn_app() -> TestApp {
    spawn_app_configured(|env| env).await
}

/// Spawns an app with extra settings (`("TENANT_PLANE__...", value)`).
pub async fn spawn_app_with(overrides: &[(&str, &str)]) -> TestApp {
    spawn_app_configured(|env| env.set_all(overrides)).await
}

/// Spawns an app whose settings `configure` makes from the test defaults.
pub async fn spawn_app_configured(configure: impl FnOnce(TestSettings) -> TestSettings) -> TestApp {
    let db = TestDatabase::migrated().await;
    let url = db.url();
    spawn_app_full(db, &url, configure).await
}

/// Spawns the app on `db`, reaching it through `database_url` (which may be
/// a proxy in front of it).
pub async fn spawn_app_on(db: TestDatabase, database_url: &str) -> TestApp {
    spawn_app_full(db, database_url, |env| env).await
}

pub async fn spawn_app_full(
    db: TestDatabase,
    database_url: &str,
    configure: impl FnOnce(TestSettings) -> TestSettings,
) -> TestApp {
    init_tracing();
    let prefix = PrefixGuard::new();
    let env = configure(TestSettings::new(database_url, &prefix.prefix));
    let settings = app_settings(&env);
    let secret = env.webhook_secret().to_owned();
    let env = env.env();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    let app = Application::build(&settings, listener)
        .await
        .expect("application builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let reconciler = app.reconciler();
    tokio::spawn(app.run_until_stopped());
    let client = db.client().await;
    TestApp {
        address,
        settings,
        env,
        prefix,
        reconciler,
        _db: db,
        verifier: WebhookVerifier::new(&secret).expect("valid secret"),
        secret,
        http: reqwest::Client::new(),
        client,
        clerk: None,
    }
}

/// A tenant_registry row, as the tests look at it.
#[derive(Debug)]
pub struct TenantRow {
    pub id: uuid::Uuid,
    pub name: String,
    pub slug: Option<String>,
    pub status: String,
    pub desired_state: String,
}

impl TestApp {
    /// Runs the reconciler until nothing is left to do.
    pub async fn reconcile(&self) -> usize {
        self.reconciler.drain().await.expect("reconciler pass")
    }

    /// Runs the reconciler until `org`'s tenant is `want`: after a worker
    /// was killed, its tenant waits for the lease to lapse.
    pub async fn reconcile_until(&self, org: &str, want: model::TenantStatus) {
        wait_until(
            &format!("{org} to become {want}"),
            SHORT_LEASE_DEADLINE,
            || async {
                self.reconcile().await;
                self.registry_tenant(org).await.status == want
            },
        )
        .await;
    }

    pub fn webhook_url(&self) -> String {
        format!("{}/webhooks/clerk", self.address)
    }

    /// POSTs `body` with exactly `headers`.
    pub async fn post_raw(&self, body: Vec<u8>, headers: http::HeaderMap) -> Response {
        let mut req = self
            .http
            .post(self.webhook_url())
            .header("content-type", "application/json")
            .body(body);
        for (name, value) in &headers {
            req = req.header(name.as_str(), value.as_bytes());
        }
        req.send().await.expect("request reaches the app")
    }

    /// Delivers `body` as Svix would: signed now, under `svix_id`.
    pub async fn deliver(&self, svix_id: &str, body: Vec<u8>) -> Response {
        let headers = self.verifier.signed_headers(svix_id, now(), &body);
        self.post_raw(body, headers).await
    }

    /// Delivers a sample event under a new svix-id and returns the outcome.
    pub async fn send(&self, event: &SampleEvent) -> String {
        let response = self.deliver(&new_svix_id(), event.to_body()).await;
        assert_eq!(
            response.status(),
            200,
            "delivery of {} refused",
            event.event_type
        );
        outcome(response).await
    }

    pub async fn count(&self, table: &str) -> i64 {
        self.client
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .expect("count")
            .get(0)
    }

    pub async fn tenant(&self, org_id: &str) -> Option<TenantRow> {
        self.client
            .query_opt(
                "SELECT id, name, slug, status, desired_state FROM tenant_registry
                  WHERE clerk_org_id = $1",
                &[&org_id],
            )
            .await
            .expect("query tenant")
            .map(|r| TenantRow {
                id: r.get(0),
                name: r.get(1),
                slug: r.get(2),
                status: r.get(3),
                desired_state: r.get(4),
            })
    }

    /// The stored outcome of a delivery.
    pub async fn stored_outcome(&self, svix_id: &str) -> Option<String> {
        self.client
            .query_opt(
                "SELECT outcome FROM webhook_events WHERE svix_id = $1",
                &[&svix_id],
            )
            .await
            .expect("query webhook_events")
            .map(|r| r.get(0))
    }
}

/// The `outcome` field of a 200 answer.
pub async fn outcome(response: Response) -> String {
    let body: serde_json::Value = response.json().await.expect("JSON answer");
    body["outcome"].as_str().expect("outcome field").to_owned()
}

impl TestApp {
    /// Admin connection settings of the test server.
    pub fn db_config(&self) -> registry::tls::ConnectOptions {
        testkit::parse_admin_url(self.settings.database_url().unwrap())
    }

    /// A pool on the control database, for registry calls.
    pub fn pool(&self) -> deadpool_postgres::Pool {
        tenant_plane::startup::control_pool(&self.settings).expect("control pool")
    }

    /// The registry's view of a tenant, by Clerk organization id.
    pub async fn registry_tenant(&self, org_id: &str) -> registry::tenants::Tenant {
        let client = self.pool().get().await.expect("control connection");
        registry::tenants::get(
            &client,
            registry::tenants::TenantKey::ClerkOrg(
                &model::ClerkOrgId::parse(org_id).expect("an org id"),
            ),
        )
        .await
        .expect("query tenant")
        .unwrap_or_else(|| panic!("no tenant for {org_id}"))
    }

    /// The tenant's own connection credentials, password decrypted.
    pub async fn credentials(&self, org_id: &str) -> registry::tenants::TenantCredentials {
        let tenant = self.registry_tenant(org_id).await;
        let cipher = self.settings.cipher().expect("crypto key");
        let tls = self.db_config().tls;
        registry::tenants::credentials(&cipher, &tenant, &tls).expect("credentials")
    }

    /// Sends organization.created for a new organization; returns its ids.
    pub async fn create_org(&self, name: &str) -> webhooks::samples::SampleIds {
        let ids = webhooks::samples::SampleIds::random();
        let event = SampleEvent::new("organization.created", &ids)
            .unwrap()
            .name(name)
            .slug(None);
        assert_eq!(self.send(&event).await, "applied");
        ids
    }

    pub async fn delete_org(&self, ids: &webhooks::samples::SampleIds) {
        let event = SampleEvent::new("organization.deleted", ids).unwrap();
        assert_eq!(self.send(&event).await, "applied");
    }

    /// Applies an operator action as the CLI would.
    pub async fn act(
        &self,
        org_id: &str,
        action: registry::tenants::Action,
    ) -> registry::tenants::Tenant {
        let tenant = self.registry_tenant(org_id).await;
        let mut client = self.pool().get().await.expect("control connection");
        registry::tenants::act(&mut client, tenant.id, action, "test")
            .await
            .expect("action applies")
    }

    /// Registers the second test server as db host `second` (its admin
    /// password must be configured: [`second_host_password`]); returns its
    /// admin config.
    pub async fn add_second_host(&self, capacity: i32) -> tokio_postgres::Config {
        let target = testkit::parse_admin_url(&testkit::second_admin_url());
        let second = target.config.clone();
        let tokio_postgres::config::Host::Tcp(host) = &second.get_hosts()[0] else {
            panic!("second server must be reached over TCP")
        };
        let client = self.pool().get().await.expect("control connection");
        registry::hosts::upsert(
            &client,
            &registry::hosts::NewHost {
                name: "second".into(),
                host: host.clone(),
                port: second.get_ports()[0],
                admin_user: second.get_user().unwrap().into(),
                tls: (&target.tls).into(),
                capacity,
            },
        )
        .await
        .expect("host registered");
        second
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.address))
            .send()
            .await
            .expect("/metrics answers")
            .text()
            .await
            .expect("/metrics has a body")
    }

    /// Names of databases on the test server under this test's prefix.
    pub async fn prefixed_databases(&self) -> Vec<String> {
        self.client
            .query(
                "SELECT datname FROM pg_database WHERE starts_with(datname, $1) ORDER BY 1",
                &[&self.prefix.prefix],
            )
            .await
            .expect("list databases")
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    pub async fn role_exists(&self, role: &str) -> bool {
        self.client
            .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&role])
            .await
            .expect("look up role")
            .is_some()
    }

    /// The kinds of a tenant's audit events, in order.
    pub async fn event_kinds(&self, org_id: &str) -> Vec<String> {
        self.client
            .query(
                "SELECT e.kind FROM tenant_events e JOIN tenant_registry t ON t.id = e.tenant_id
                  WHERE t.clerk_org_id = $1 ORDER BY e.id",
                &[&org_id],
            )
            .await
            .expect("events")
            .iter()
            .map(|r| r.get(0))
            .collect()
    }
}

/// The admin password of the second test server, for
/// `TENANT_PLANE__HOSTS__SECOND__PASSWORD`.
pub fn second_host_password() -> String {
    let target = testkit::parse_admin_url(&testkit::second_admin_url());
    String::from_utf8(target.config.get_password().unwrap().to_vec()).unwrap()
}

/// Connects over TCP with password authentication, as a tenant application
/// would (with the host's TLS settings). `dbname` overrides the
/// credentials' database.
pub async fn connect_as(
    creds: &registry::tenants::TenantCredentials,
    dbname: &str,
) -> Result<Client, registry::tls::ConnectError> {
    let mut target = creds.connect_options();
    target
        .config
        .dbname(dbname)
        .connect_timeout(std::time::Duration::from_secs(5));
    target.connect_spawned().await
}

/// `tenant-plane <args>` as a child process configured like `app`, with
/// stderr piped so tests can watch for the pause marker.
pub fn spawn_cli(
    app: &TestApp,
    args: &[&str],
    extra_env: &[(&str, &str)],
) -> tokio::process::Child {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_tenant-plane"));
    for (k, _) in std::env::vars() {
        if k.starts_with("TENANT_PLANE") {
            cmd.env_remove(k);
        }
    }
    cmd.args(args)
        .envs(app.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .envs(extra_env.iter().copied())
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    cmd.spawn().expect("spawn tenant-plane")
}

/// Runs `tenant-plane <args>` configured like `app` to completion: exit
/// code, stdout, stderr.
pub async fn run_cli(app: &TestApp, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = spawn_cli(app, args, env).wait_with_output().await.unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A `tenant-plane worker`, optionally told to pause (and wait to be
/// killed) at a reconciler step.
pub fn spawn_worker(app: &TestApp, pause_at: Option<&str>) -> tokio::process::Child {
    let pause = pause_at.map(|s| [("TENANT_PLANE_PAUSE_AT", s)]);
    spawn_cli(app, &["worker"], pause.as_ref().map_or(&[][..], |p| &p[..]))
}

/// Reads the child's stderr until a line contains `needle`. Panics after
/// `deadline` (a liveness bound, not a speed assertion), with what was read.
pub async fn wait_for_stderr(
    child: &mut tokio::process::Child,
    needle: &str,
    deadline: std::time::Duration,
) {
    use tokio::io::AsyncBufReadExt;
    let stderr = child.stderr.as_mut().expect("stderr piped");
    let mut lines = tokio::io::BufReader::new(stderr).lines();
    let mut seen = Vec::new();
    let found = tokio::time::timeout(deadline, async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains(needle) {
                return true;
            }
            seen.push(line);
        }
        false
    })
    .await;
    assert_eq!(
        found,
        Ok(true),
        "never saw {needle:?}; stderr was:\n{}",
        seen.join("\n")
    );
}

/// Polls `check` until it holds; panics after `deadline` (a liveness bound).
pub async fn wait_until<F, Fut>(what: &str, deadline: std::time::Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    while !check().await {
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// The built-in first template migration.
pub const TEMPLATE_V1: &str = include_str!("../../../../templates/tenant/V1__initial_schema.sql");

/// A second template migration, as a rollout would bring.
pub const TEMPLATE_V2: &str =
    "CREATE TABLE labels (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text NOT NULL UNIQUE);";

/// A directory of template migrations, removed on drop.
pub struct TemplateDir(std::path::PathBuf);

impl TemplateDir {
    pub fn with(files: &[(&str, &str)]) -> Self {
        let dir = std::env::temp_dir().join(format!("tp-templates-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, sql) in files {
            std::fs::write(dir.join(name), sql).unwrap();
        }
        Self(dir)
    }

    /// The built-in V1 and `v2` as V2.
    pub fn with_v2(v2: &str) -> Self {
        Self::with(&[
            ("V1__initial_schema.sql", TEMPLATE_V1),
            ("V2__labels.sql", v2),
        ])
    }

    pub fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }

    /// The environment that points a CLI run at this directory.
    pub fn env(&self) -> [(&'static str, &str); 1] {
        [("TENANT_PLANE__TENANTS__TEMPLATE_DIR", self.path())]
    }
}

impl Drop for TemplateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
