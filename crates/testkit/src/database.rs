use registry::tls::ConnectOptions;
use tokio_postgres::Client;

/// The environment variables naming the admin URL, in order of preference.
const URL_VARS: [&str; 2] = [
    "TENANT_PLANE_TEST_DATABASE_URL",
    "TENANT_PLANE__DATABASE__URL",
];

/// Whether an admin URL is configured (benches check before they start).
pub fn database_configured() -> bool {
    URL_VARS
        .iter()
        .any(|v| std::env::var(v).is_ok_and(|s| !s.is_empty()))
}

/// The admin URL of the test PostgreSQL. Panics with instructions when unset:
/// integration tests need a real server, and scripts/test provides one.
pub fn admin_url() -> String {
    URL_VARS
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| {
            panic!(
                "integration tests need PostgreSQL: run `scripts/test`, or export \
                 TENANT_PLANE_TEST_DATABASE_URL=$(scripts/dev-db | tail -1)"
            )
        })
}

/// A fresh, migrated control-plane database named `tp_test_<uuid>`, dropped
/// (with its connections) when the value is dropped. Leftovers of crashed
/// runs are dropped by scripts/test.
pub struct TestDatabase {
    pub name: String,
    admin: ConnectOptions,
}

/// Parses an admin URL of the test servers, TLS settings included.
pub fn parse_admin_url(url: &str) -> ConnectOptions {
    ConnectOptions::parse(url).unwrap_or_else(|e| panic!("test database URL: {e}"))
}

impl TestDatabase {
    /// An empty database (no schema).
    pub async fn empty() -> Self {
        Self::empty_on(&admin_url()).await
    }

    /// An empty database on the server of `admin_url` (e.g.
    /// [`tls_admin_url`]).
    pub async fn empty_on(admin_url: &str) -> Self {
        let admin = parse_admin_url(admin_url);
        let name = format!("tp_test_{}", uuid::Uuid::new_v4().simple());
        let client = connect_config(&admin).await;
        client
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .expect("create test database");
        Self { name, admin }
    }

    /// A database with the control-plane schema applied.
    pub async fn migrated() -> Self {
        Self::migrated_on(&admin_url()).await
    }

    /// A migrated database on the server of `admin_url`.
    pub async fn migrated_on(admin_url: &str) -> Self {
        let db = Self::empty_on(admin_url).await;
        let mut client = connect_config(&db.config()).await;
        registry::schema::migrate(&mut client)
            .await
            .expect("migrate test database");
        db
    }

    /// Connection settings for this database (admin credentials, the test
    /// server's TLS settings).
    pub fn config(&self) -> ConnectOptions {
        let mut target = self.admin.clone();
        target.config.dbname(&self.name);
        target
    }

    /// A `postgres://` URL for this database, for child processes, with the
    /// test server's TLS settings.
    pub fn url(&self) -> String {
        let target = self.config();
        let c = &target.config;
        let host = match c.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            _ => "127.0.0.1".to_owned(),
        };
        let port = c.get_ports().first().copied().unwrap_or(5432);
        let user = c.get_user().unwrap_or("postgres");
        let password = c
            .get_password()
            .map(|p| format!(":{}", String::from_utf8_lossy(p)))
            .unwrap_or_default();
        format!(
            "postgres://{user}{password}@{host}:{port}/{}?{}",
            self.name,
            target.tls.url_params()
        )
    }

    /// A plain client on this database.
    pub async fn client(&self) -> Client {
        connect_config(&self.config()).await
    }
}

async fn connect_config(target: &ConnectOptions) -> Client {
    target
        .connect_spawned()
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the test PostgreSQL: {e}"))
}

/// Runs async cleanup from `Drop`, which is not async: on a short-lived
/// runtime of its own thread, so the test's runtime is neither blocked nor
/// re-entered.
fn cleanup_on_drop<F>(cleanup: F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let _ = std::thread::spawn(move || {
        if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            rt.block_on(cleanup);
        }
    })
    .join();
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        let admin = self.admin.clone();
        cleanup_on_drop(async move {
            if let Ok(client) = admin.connect_spawned().await {
                let _ = client
                    .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .await;
            }
        });
    }
}

/// The admin URL of the second test server (`scripts/dev-db --instance 2`),
/// for tests of placement across hosts.
pub fn second_admin_url() -> String {
    std::env::var("TENANT_PLANE_TEST_DATABASE_URL_2")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| {
            panic!(
                "this test needs a second PostgreSQL: run `scripts/test`, or export \
                 TENANT_PLANE_TEST_DATABASE_URL_2=$(scripts/dev-db --instance 2 | tail -1)"
            )
        })
}

/// Drops, when dropped, every database and role whose name starts with
/// `prefix` on the test servers (those of TENANT_PLANE_TEST_DATABASE_URL,
/// _URL_2 and _TLS_DATABASE_URL): the tenant databases a test provisioned.
pub struct PrefixGuard {
    pub prefix: String,
    servers: Vec<ConnectOptions>,
}

impl PrefixGuard {
    /// A fresh prefix (`tp_test_<10 hex>_`) that scripts/test also sweeps.
    pub fn new() -> Self {
        let mut servers = vec![parse_admin_url(&admin_url())];
        for var in [
            "TENANT_PLANE_TEST_DATABASE_URL_2",
            "TENANT_PLANE_TEST_TLS_DATABASE_URL",
        ] {
            if let Some(other) = std::env::var(var)
                .ok()
                .and_then(|u| ConnectOptions::parse(&u).ok())
            {
                servers.push(other);
            }
        }
        let hex = uuid::Uuid::new_v4().simple().to_string();
        Self {
            prefix: format!("tp_test_{}_", &hex[..10]),
            servers,
        }
    }
}

impl Default for PrefixGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for PrefixGuard {
    fn drop(&mut self) {
        let servers = self.servers.clone();
        let pattern = format!("{}%", self.prefix.replace('_', "\\_"));
        cleanup_on_drop(async move {
            for admin in servers {
                drop_prefixed(&admin, &pattern).await;
            }
        });
    }
}

async fn drop_prefixed(admin: &ConnectOptions, pattern: &str) {
    let Ok(client) = admin.connect_spawned().await else {
        return;
    };
    let names = |sql: &'static str| {
        let client = &client;
        async move {
            client
                .query(sql, &[&pattern])
                .await
                .map(|rows| {
                    rows.iter()
                        .map(|r| r.get::<_, String>(0))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
        }
    };
    for name in names("SELECT datname FROM pg_database WHERE datname LIKE $1").await {
        // A template cannot be dropped; one statement per call, since DROP
        // DATABASE refuses to run in a multi-statement batch.
        let _ = client
            .batch_execute(&format!("ALTER DATABASE \"{name}\" IS_TEMPLATE false"))
            .await;
        let _ = client
            .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .await;
    }
    for name in names("SELECT rolname FROM pg_roles WHERE rolname LIKE $1").await {
        let _ = client
            .batch_execute(&format!("DROP ROLE IF EXISTS \"{name}\""))
            .await;
    }
}

/// The admin URL of the TLS test server (`scripts/dev-db --tls`, with
/// `sslmode=verify-full&sslrootcert=<its CA>`), for the TLS tests.
pub fn tls_admin_url() -> String {
    std::env::var("TENANT_PLANE_TEST_TLS_DATABASE_URL")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| {
            panic!(
                "this test needs a PostgreSQL with TLS: run `scripts/test`, or export \
                 TENANT_PLANE_TEST_TLS_DATABASE_URL=$(scripts/dev-db --instance 3 --tls | tail -1)"
            )
        })
}
