//! Test support shared by every crate's integration tests and the benches:
//! an isolated database per test on the PostgreSQL that `scripts/dev-db`
//! starts, a TCP proxy that can take that database "down" and back, a fake
//! Clerk (Backend API and JWKS), Clerk session tokens signed with the test
//! RSA keys of `fixtures/`, the environment a test app is configured with,
//! and fresh secrets.
#![forbid(unsafe_code)]

mod database;
pub mod fake_clerk;
pub mod jwt;
mod proxy;
pub mod secrets;
pub mod settings;

pub use database::{
    admin_url, database_configured, parse_admin_url, second_admin_url, tls_admin_url, PrefixGuard,
    TestDatabase,
};
pub use fake_clerk::FakeClerk;
pub use proxy::{ProxyMode, ToggleProxy};
pub use settings::TestSettings;

/// The first column of every row `sql` answers: what most test look-ups
/// want. Panics with the statement when it fails.
pub async fn column<T>(
    client: &tokio_postgres::Client,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Vec<T>
where
    T: for<'a> tokio_postgres::types::FromSql<'a>,
{
    client
        .query(sql, params)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .map(|r| r.get(0))
        .collect()
}
