//! `spawn_app()`: a fresh migrated control-plane database and the application
//! on port 0, with a webhook secret of its own.

use std::sync::Once;

use base64::Engine;
use reqwest::Response;
use tenant_plane::config::{LogFormat, Settings};
use tenant_plane::startup::Application;
use testkit::TestDatabase;
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

pub fn random_secret() -> String {
    let bytes: [u8; 24] = rand::random();
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

pub fn new_svix_id() -> String {
    format!("msg_{}", uuid::Uuid::new_v4().simple())
}

pub struct TestApp {
    pub address: String,
    /// Kept for the test's lifetime: dropping it drops the database.
    _db: TestDatabase,
    pub verifier: WebhookVerifier,
    /// The app's webhook secret, for child processes that sign deliveries.
    pub secret: String,
    pub http: reqwest::Client,
    /// Admin connection to the test database, for assertions.
    pub client: Client,
}

/// Settings for an app over `database_url`, as the environment would give them.
pub fn settings_for(database_url: &str, secret: &str) -> Settings {
    Settings::load_from(
        None,
        [
            ("TENANT_PLANE__DATABASE__URL", database_url),
            ("TENANT_PLANE__CLERK__WEBHOOK_SECRET", secret),
            ("TENANT_PLANE__HTTP__BIND", "127.0.0.1:0"),
            ("TENANT_PLANE__DATABASE__CONNECT_TIMEOUT", "1s"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    )
    .expect("test settings are valid")
}

pub async fn spawn_app() -> TestApp {
    let db = TestDatabase::migrated().await;
    let url = db.url();
    spawn_app_on(db, &url).await
}

/// Spawns the app on `db`, reaching it through `database_url` (which may be
/// a proxy in front of it).
pub async fn spawn_app_on(db: TestDatabase, database_url: &str) -> TestApp {
    init_tracing();
    let secret = random_secret();
    let settings = settings_for(database_url, &secret);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    let app = Application::build(&settings, listener)
        .await
        .expect("application builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    let client = db.client().await;
    TestApp {
        address,
        _db: db,
        verifier: WebhookVerifier::new(&secret).expect("valid secret"),
        secret,
        http: reqwest::Client::new(),
        client,
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
