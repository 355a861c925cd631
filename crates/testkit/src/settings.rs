//! What a test or bench configures the application with, said once: the
//! `TENANT_PLANE__*` variables the server's `Settings::load_from` reads
//! (testkit cannot build `Settings` itself, since the server crate
//! dev-depends on testkit). [`TestSettings`] holds them as `(key, value)`
//! pairs; hand it to `Settings::load_from(None, &env)`, or to a child
//! process as its environment.

use std::time::Duration;

/// A test app's environment: [`TestSettings::new`] gives what every test
/// app runs with, the `with_` methods and [`TestSettings::set`] change it.
/// A key set twice keeps its last value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestSettings {
    vars: Vec<(String, String)>,
}

const DATABASE_URL: &str = "TENANT_PLANE__DATABASE__URL";
const WEBHOOK_SECRET: &str = "TENANT_PLANE__CLERK__WEBHOOK_SECRET";

impl TestSettings {
    /// The control database at `database_url`, tenants under `prefix` (a
    /// [`crate::PrefixGuard`]'s), a fresh webhook secret and crypto key,
    /// HTTP on 127.0.0.1 port 0, no background worker (tests drain the
    /// reconciler themselves), fast retries (backoff 10 ms to 50 ms, a
    /// 200 ms poll when the worker is turned on), no retention of deleted
    /// tenants and no warm pool (tests of the pool turn it on).
    pub fn new(database_url: &str, prefix: &str) -> Self {
        Self { vars: Vec::new() }
            .set(DATABASE_URL, database_url)
            .set(WEBHOOK_SECRET, crate::secrets::random_webhook_secret())
            .set("TENANT_PLANE__HTTP__BIND", "127.0.0.1:0")
            .set("TENANT_PLANE__TENANTS__PREFIX", prefix)
            .set("TENANT_PLANE__TENANTS__RETENTION", "0s")
            .set("TENANT_PLANE__TENANTS__WARM_POOL", "0")
            .set(
                "TENANT_PLANE__CRYPTO__KEY",
                crate::secrets::random_crypto_key(),
            )
            .set("TENANT_PLANE__WORKER__ENABLED", "false")
            .set("TENANT_PLANE__WORKER__BACKOFF_BASE", "10ms")
            .set("TENANT_PLANE__WORKER__BACKOFF_MAX", "50ms")
            .set("TENANT_PLANE__WORKER__POLL_INTERVAL", "200ms")
    }

    /// Sets `key` (a `TENANT_PLANE__SECTION__FIELD` name) to `value`.
    pub fn set(mut self, key: &str, value: impl Into<String>) -> Self {
        let value = value.into();
        match self.vars.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value,
            None => self.vars.push((key.to_owned(), value)),
        }
        self
    }

    /// Sets each `(key, value)` of `overrides`, in order.
    pub fn set_all(self, overrides: &[(&str, &str)]) -> Self {
        overrides.iter().fold(self, |env, (k, v)| env.set(k, *v))
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The webhook (Svix) signing secret the app verifies deliveries with.
    pub fn webhook_secret(&self) -> &str {
        self.get(WEBHOOK_SECRET)
            .expect("TestSettings::new sets a webhook secret")
    }

    /// `clerk.webhook_secret`, instead of a fresh one.
    pub fn with_webhook_secret(self, secret: &str) -> Self {
        self.set(WEBHOOK_SECRET, secret)
    }

    /// `crypto.key` (base64 of 32 bytes), instead of a fresh one.
    pub fn with_crypto_key(self, key: &str) -> Self {
        self.set("TENANT_PLANE__CRYPTO__KEY", key)
    }

    /// `internal.tokens`: the bearer tokens of the internal API.
    pub fn with_internal_tokens(self, tokens: &[&str]) -> Self {
        self.set("TENANT_PLANE__INTERNAL__TOKENS", tokens.join(","))
    }

    /// `clerk.issuer`: the Clerk instance whose session tokens the resolver
    /// verifies (keys from `<issuer>/.well-known/jwks.json`).
    pub fn with_clerk_issuer(self, issuer: &str) -> Self {
        self.set("TENANT_PLANE__CLERK__ISSUER", issuer)
    }

    /// `clerk.authorized_parties`: the `azp` values tokens may carry.
    pub fn with_authorized_parties(self, parties: &[&str]) -> Self {
        self.set("TENANT_PLANE__CLERK__AUTHORIZED_PARTIES", parties.join(","))
    }

    /// `clerk.api_url` and `clerk.secret_key`: the Backend API (a
    /// [`crate::FakeClerk`]'s URL and secret).
    pub fn with_clerk_api(self, api_url: &str, secret_key: &str) -> Self {
        self.set("TENANT_PLANE__CLERK__API_URL", api_url)
            .set("TENANT_PLANE__CLERK__SECRET_KEY", secret_key)
    }

    /// `worker.enabled`: the background provisioning worker on or off.
    pub fn with_worker(self, enabled: bool) -> Self {
        self.set("TENANT_PLANE__WORKER__ENABLED", enabled.to_string())
    }

    /// `worker.concurrency`.
    pub fn with_worker_concurrency(self, workers: usize) -> Self {
        self.set("TENANT_PLANE__WORKER__CONCURRENCY", workers.to_string())
    }

    /// `worker.poll_interval`: the workers' backstop poll.
    pub fn with_worker_poll_interval(self, interval: Duration) -> Self {
        self.set(
            "TENANT_PLANE__WORKER__POLL_INTERVAL",
            format!("{}ms", interval.as_millis()),
        )
    }

    /// `database.max_connections` of the control-database pool.
    pub fn with_database_max_connections(self, connections: usize) -> Self {
        self.set(
            "TENANT_PLANE__DATABASE__MAX_CONNECTIONS",
            connections.to_string(),
        )
    }

    /// The pairs, in the order they were first set.
    pub fn env(&self) -> Vec<(String, String)> {
        self.vars.clone()
    }
}

impl IntoIterator for TestSettings {
    type Item = (String, String);
    type IntoIter = std::vec::IntoIter<(String, String)>;

    fn into_iter(self) -> Self::IntoIter {
        self.vars.into_iter()
    }
}

impl<'a> IntoIterator for &'a TestSettings {
    type Item = (String, String);
    type IntoIter = std::iter::Cloned<std::slice::Iter<'a, (String, String)>>;

    fn into_iter(self) -> Self::IntoIter {
        self.vars.iter().cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_values_replace_earlier_ones_in_place() {
        let env = TestSettings::new("postgres://u:p@localhost/db", "tp_test_x_")
            .with_worker(true)
            .with_internal_tokens(&["a-token-of-16-chars", "another-token-0123"])
            .with_worker_poll_interval(Duration::from_secs(1))
            .set("TENANT_PLANE__TENANTS__RETENTION", "1h");
        assert_eq!(env.get("TENANT_PLANE__WORKER__ENABLED"), Some("true"));
        assert_eq!(
            env.get("TENANT_PLANE__WORKER__POLL_INTERVAL"),
            Some("1000ms")
        );
        assert_eq!(env.get("TENANT_PLANE__TENANTS__RETENTION"), Some("1h"));
        assert_eq!(
            env.get("TENANT_PLANE__INTERNAL__TOKENS"),
            Some("a-token-of-16-chars,another-token-0123")
        );
        assert_eq!(
            env.get("TENANT_PLANE__DATABASE__URL"),
            Some("postgres://u:p@localhost/db")
        );
        assert!(env.webhook_secret().starts_with("whsec_"));
        let pairs = env.env();
        assert_eq!(pairs[0].0, "TENANT_PLANE__DATABASE__URL");
        let keys: std::collections::HashSet<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys.len(), pairs.len(), "no key twice");
        assert_eq!((&env).into_iter().count(), pairs.len());
    }
}
