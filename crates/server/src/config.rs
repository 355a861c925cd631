//! Layered configuration: built-in defaults (config/default.toml, which
//! documents every key) -> an optional TOML file -> `TENANT_PLANE__A__B`
//! environment variables. Validated after loading; errors name the key.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use model::naming::TenantPrefix;
use provisioner::limits::{Limits, Plans};
use registry::crypto::PasswordCipher;
use registry::pool::{self, PoolOptions};
use registry::session::SessionLimits;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use webhooks::WebhookVerifier;

const DEFAULTS: &str = include_str!("../../../config/default.toml");
pub const ENV_PREFIX: &str = "TENANT_PLANE";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("could not load configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("invalid `{key}`: {reason}")]
    Invalid { key: &'static str, reason: String },
    #[error("`{key}` is required (set {env} or put it in the config file)")]
    Missing {
        key: &'static str,
        env: &'static str,
    },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub http: HttpSettings,
    pub clerk: ClerkSettings,
    pub resolver: ResolverSettings,
    pub internal: InternalSettings,
    pub console: ConsoleSettings,
    pub tenants: TenantSettings,
    pub crypto: CryptoSettings,
    pub worker: WorkerSettings,
    #[serde(default)]
    pub hosts: HashMap<String, HostSecret>,
    /// Per-tenant limits by plan name (the registry's `plan` column).
    #[serde(default)]
    pub plans: BTreeMap<String, PlanSettings>,
    pub log: LogSettings,
}

/// The limits of one plan, applied to each of its tenants' login role.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanSettings {
    pub connection_limit: i32,
    #[serde(default, with = "humantime_serde")]
    pub statement_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub idle_in_transaction_session_timeout: Option<Duration>,
    /// Like PostgreSQL's: a number with kB, MB, GB or TB.
    #[serde(default)]
    pub temp_file_limit: Option<String>,
}

/// A size as PostgreSQL writes one (`1024kB`, `512MB`, `2GB`, `1TB`), in kB.
fn kilobytes(text: &str) -> Option<u64> {
    let text = text.trim();
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = text.split_at(digits);
    let factor = match unit.trim() {
        "kB" => 1,
        "MB" => 1024,
        "GB" => 1024 * 1024,
        "TB" => 1024 * 1024 * 1024,
        _ => return None,
    };
    number.parse::<u64>().ok()?.checked_mul(factor)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantSettings {
    pub prefix: String,
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    pub default_host_capacity: i32,
    pub template_dir: Option<PathBuf>,
    /// How CREATE DATABASE copies the template: `wal_log` or `file_copy`.
    pub clone_strategy: provisioner::CloneStrategy,
    /// Spare databases kept ready per accepting host (0 turns the pool off).
    pub warm_pool: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CryptoSettings {
    pub key: Option<SecretString>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSettings {
    pub enabled: bool,
    pub concurrency: usize,
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    pub max_attempts: i32,
    #[serde(with = "humantime_serde")]
    pub backoff_base: Duration,
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
    #[serde(with = "humantime_serde")]
    pub attempt_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    #[serde(with = "humantime_serde")]
    pub statement_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub lock_timeout: Duration,
}

/// The admin password of a db host, by host name.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostSecret {
    pub password: SecretString,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    pub url: Option<SecretString>,
    pub max_connections: usize,
    pub api_connections: usize,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub acquire_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub statement_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub lock_timeout: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    pub bind: String,
    pub body_limit: usize,
    /// Longest time a client may take to send a request's head.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Longest time a client may take to send a request's body.
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClerkSettings {
    pub webhook_secret: Option<SecretString>,
    pub issuer: Option<String>,
    pub jwks_url: Option<String>,
    pub jwt_public_key: Option<String>,
    #[serde(deserialize_with = "comma_list")]
    pub authorized_parties: Vec<String>,
    pub api_url: String,
    pub secret_key: Option<SecretString>,
    pub write_back: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolverSettings {
    #[serde(with = "humantime_serde")]
    pub clock_skew: Duration,
    pub tenant_claim: Option<String>,
    #[serde(with = "humantime_serde")]
    pub cache_ttl: Duration,
    /// Most tenants the resolver caches at once.
    pub cache_max_entries: usize,
    pub token_cache_max_entries: usize,
    pub pool_per_tenant: usize,
    pub pool_budget: usize,
    #[serde(with = "humantime_serde")]
    pub jwks_min_refetch: Duration,
    /// Register organizations first seen in a verified session token.
    pub register_unknown_orgs: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InternalSettings {
    #[serde(deserialize_with = "secret_list")]
    pub tokens: Vec<SecretString>,
    pub expose_passwords: bool,
}

/// The operator console (`console.*`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleSettings {
    #[serde(deserialize_with = "secret_list")]
    pub tokens: Vec<SecretString>,
    #[serde(with = "humantime_serde")]
    pub session_lifetime: Duration,
    pub login_attempts: u32,
    #[serde(with = "humantime_serde")]
    pub login_window: Duration,
    #[serde(with = "humantime_serde")]
    pub stuck_after: Duration,
}

/// "a, b,c" (as environment variables give lists) -> ["a", "b", "c"].
fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn comma_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(split_list(&String::deserialize(d)?))
}

fn secret_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<SecretString>, D::Error> {
    Ok(split_list(&String::deserialize(d)?)
        .into_iter()
        .map(SecretString::from)
        .collect())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    pub level: String,
}

impl Settings {
    /// Loads defaults, then `file` if given, then the environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_from(file, std::env::vars())
    }

    /// As [`Settings::load`], with the environment passed in (for tests).
    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut builder = config::Config::builder()
            .add_source(config::File::from_str(DEFAULTS, config::FileFormat::Toml));
        if let Some(path) = file {
            builder = builder.add_source(config::File::from(path).required(true));
        }
        let env: config::Map<String, String> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}__")))
            .collect();
        builder = builder.add_source(
            config::Environment::with_prefix(ENV_PREFIX)
                .prefix_separator("__")
                .separator("__")
                .source(Some(env)),
        );
        let settings: Settings = builder.build()?.try_deserialize()?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.database.url {
            pool::parse_url(url.expose_secret()).map_err(|e| ConfigError::Invalid {
                key: "database.url",
                reason: e.to_string(),
            })?;
        }
        self.http_addr()?;
        if self.http.body_limit == 0 {
            return Err(invalid("http.body_limit", "must be greater than 0"));
        }
        if self.database.max_connections == 0 {
            return Err(invalid(
                "database.max_connections",
                "must be greater than 0",
            ));
        }
        if let Some(secret) = &self.clerk.webhook_secret {
            WebhookVerifier::new(secret.expose_secret()).map_err(|e| ConfigError::Invalid {
                key: "clerk.webhook_secret",
                reason: e.to_string(),
            })?;
        }
        self.prefix()?;
        if let Some(key) = &self.crypto.key {
            PasswordCipher::from_base64(key.expose_secret()).map_err(|e| ConfigError::Invalid {
                key: "crypto.key",
                reason: e.to_string(),
            })?;
        }
        if let Some(issuer) = &self.clerk.issuer {
            if !issuer.starts_with("https://") && !issuer.starts_with("http://") {
                return Err(invalid(
                    "clerk.issuer",
                    "must be the instance's URL (https://...)",
                ));
            }
        }
        if self.resolver.pool_per_tenant == 0 || self.resolver.pool_budget == 0 {
            return Err(invalid(
                "resolver.pool_budget",
                "pool sizes must be greater than 0",
            ));
        }
        if self
            .internal
            .tokens
            .iter()
            .any(|t| t.expose_secret().len() < 16)
        {
            return Err(invalid(
                "internal.tokens",
                "each token must be at least 16 characters",
            ));
        }
        if self
            .console
            .tokens
            .iter()
            .any(|t| t.expose_secret().len() < 16)
        {
            return Err(invalid(
                "console.tokens",
                "each token must be at least 16 characters",
            ));
        }
        if self.console.session_lifetime.is_zero()
            || self.console.session_lifetime > Duration::from_secs(366 * 86_400)
        {
            return Err(invalid(
                "console.session_lifetime",
                "must be greater than 0 and at most a year",
            ));
        }
        if self.console.login_attempts == 0 {
            return Err(invalid("console.login_attempts", "must be at least 1"));
        }
        if self.worker.concurrency == 0 {
            return Err(invalid("worker.concurrency", "must be greater than 0"));
        }
        if self.worker.attempt_timeout.is_zero() {
            return Err(invalid("worker.attempt_timeout", "must be greater than 0"));
        }
        if self.worker.lease <= self.worker.attempt_timeout {
            return Err(invalid(
                "worker.lease",
                "must be longer than worker.attempt_timeout, or a live worker could lose its claim",
            ));
        }
        if self.database.api_connections == 0 {
            return Err(invalid(
                "database.api_connections",
                "must be greater than 0",
            ));
        }
        if self.worker.max_attempts < 1 {
            return Err(invalid("worker.max_attempts", "must be at least 1"));
        }
        if self.tenants.default_host_capacity < 0 {
            return Err(invalid(
                "tenants.default_host_capacity",
                "must not be negative",
            ));
        }
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map_err(|e| invalid("log.level", &e.to_string()))?;
        Ok(())
    }

    pub fn http_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.http
            .bind
            .parse()
            .map_err(|e: std::net::AddrParseError| invalid("http.bind", &e.to_string()))
    }

    /// The control-plane database URL, required by every command that talks
    /// to the database.
    pub fn database_url(&self) -> Result<&str, ConfigError> {
        self.database
            .url
            .as_ref()
            .map(|u| u.expose_secret())
            .ok_or(ConfigError::Missing {
                key: "database.url",
                env: "TENANT_PLANE__DATABASE__URL",
            })
    }

    /// The options of one control-plane pool (see [`ControlPool`]).
    pub fn pool_options(&self, pool: ControlPool) -> PoolOptions {
        let request = session_limits(self.database.statement_timeout, self.database.lock_timeout);
        let (max_size, session) = match pool {
            ControlPool::Intake => (self.database.max_connections, request),
            ControlPool::Api => (self.database.api_connections, request),
            ControlPool::Readiness => (2, request),
            ControlPool::Workers => (self.worker.concurrency + 2, self.worker_session_limits()),
        };
        PoolOptions {
            max_size,
            connect_timeout: self.database.connect_timeout,
            wait_timeout: self.database.acquire_timeout,
            session,
        }
    }

    /// Deadlines of the workers' sessions, control and host admin ones.
    pub fn worker_session_limits(&self) -> SessionLimits {
        session_limits(self.worker.statement_timeout, self.worker.lock_timeout)
    }

    /// The plans, validated.
    pub fn plans(&self) -> Result<Plans, ConfigError> {
        let mut plans = BTreeMap::new();
        for (name, p) in &self.plans {
            if p.connection_limit < 1 {
                return Err(ConfigError::Invalid {
                    key: "plans.*.connection_limit",
                    reason: format!("plan {name:?}: must be at least 1"),
                });
            }
            let temp_file_limit_kb = match &p.temp_file_limit {
                None => None,
                Some(text) => Some(kilobytes(text).ok_or_else(|| ConfigError::Invalid {
                    key: "plans.*.temp_file_limit",
                    reason: format!("plan {name:?}: {text:?} is not a size such as 512MB or 2GB"),
                })?),
            };
            plans.insert(
                name.clone(),
                Limits {
                    connection_limit: p.connection_limit,
                    statement_timeout: p.statement_timeout,
                    idle_in_transaction_session_timeout: p.idle_in_transaction_session_timeout,
                    temp_file_limit_kb,
                },
            );
        }
        Ok(Plans::new(plans))
    }

    pub fn prefix(&self) -> Result<TenantPrefix, ConfigError> {
        TenantPrefix::parse(&self.tenants.prefix)
            .map_err(|e| invalid("tenants.prefix", &e.to_string()))
    }

    pub fn cipher(&self) -> Result<PasswordCipher, ConfigError> {
        let key = self.crypto.key.as_ref().ok_or(ConfigError::Missing {
            key: "crypto.key",
            env: "TENANT_PLANE__CRYPTO__KEY",
        })?;
        PasswordCipher::from_base64(key.expose_secret()).map_err(|e| ConfigError::Invalid {
            key: "crypto.key",
            reason: e.to_string(),
        })
    }

    /// The Clerk Backend API client (`clerk.api_url`, `clerk.secret_key`).
    pub fn clerk_client(&self) -> Result<clerk_api::ClerkClient, ConfigError> {
        let key = self.clerk.secret_key.as_ref().ok_or(ConfigError::Missing {
            key: "clerk.secret_key",
            env: "TENANT_PLANE__CLERK__SECRET_KEY",
        })?;
        let mut config = clerk_api::ClerkConfig::new(key.clone());
        config.api_url = self.clerk.api_url.clone();
        clerk_api::ClerkClient::new(config).map_err(|e| ConfigError::Invalid {
            key: "clerk.api_url",
            reason: e.to_string(),
        })
    }

    pub fn webhook_verifier(&self) -> Result<WebhookVerifier, ConfigError> {
        let secret = self
            .clerk
            .webhook_secret
            .as_ref()
            .ok_or(ConfigError::Missing {
                key: "clerk.webhook_secret",
                env: "TENANT_PLANE__CLERK__WEBHOOK_SECRET",
            })?;
        WebhookVerifier::new(secret.expose_secret()).map_err(|e| ConfigError::Invalid {
            key: "clerk.webhook_secret",
            reason: e.to_string(),
        })
    }
}

/// The control-plane pools: separate, so that a flood of webhooks, a burst
/// of look-ups or workers stuck on a host never take another's connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlPool {
    /// Webhook intake (`database.max_connections`).
    Intake,
    /// The internal API and the resolver (`database.api_connections`).
    Api,
    /// `/readyz` and `/metrics`: two connections of their own.
    Readiness,
    /// The reconciler and write-back, with the workers' longer deadlines;
    /// also the CLI's, whose commands run as long as a worker's.
    Workers,
}

/// A zero duration means the server's own setting.
fn session_limits(statement: Duration, lock: Duration) -> SessionLimits {
    let set = |d: Duration| (!d.is_zero()).then_some(d);
    SessionLimits {
        statement_timeout: set(statement),
        lock_timeout: set(lock),
    }
}

fn invalid(key: &'static str, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        key,
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        Settings::load_from(
            None,
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn defaults_load_without_anything_set() {
        let s = load(&[]).unwrap();
        assert_eq!(s.http.bind, "127.0.0.1:8080");
        assert_eq!(s.http.body_limit, 1024 * 1024);
        assert_eq!(s.database.connect_timeout, Duration::from_secs(3));
        assert_eq!(s.worker.attempt_timeout, Duration::from_secs(30));
        assert!(s.worker.lease > s.worker.attempt_timeout);
        assert_eq!(s.log.format, LogFormat::Pretty);
        assert!(s.database_url().is_err());
    }

    #[test]
    fn environment_overrides_with_double_underscores() {
        let s = load(&[
            ("TENANT_PLANE__HTTP__BIND", "0.0.0.0:9000"),
            ("TENANT_PLANE__DATABASE__URL", "postgres://u:p@localhost/db"),
            ("TENANT_PLANE__LOG__FORMAT", "json"),
            ("TENANT_PLANE_UNRELATED", "x"),
        ])
        .unwrap();
        assert_eq!(s.http.bind, "0.0.0.0:9000");
        assert_eq!(s.log.format, LogFormat::Json);
        assert_eq!(s.database_url().unwrap(), "postgres://u:p@localhost/db");
    }

    #[test]
    fn a_file_sits_between_defaults_and_environment() {
        let dir = std::env::temp_dir().join(format!("tp-config-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.toml");
        std::fs::write(
            &path,
            "[http]\nbind = \"127.0.0.1:7000\"\nbody_limit = 10\n",
        )
        .unwrap();
        let s = Settings::load_from(
            Some(&path),
            [(
                "TENANT_PLANE__HTTP__BODY_LIMIT".to_string(),
                "20".to_string(),
            )],
        )
        .unwrap();
        assert_eq!(s.http.bind, "127.0.0.1:7000");
        assert_eq!(s.http.body_limit, 20);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn invalid_values_name_the_key() {
        for (env, key) in [
            (("TENANT_PLANE__HTTP__BIND", "not an address"), "http.bind"),
            (
                (
                    "TENANT_PLANE__DATABASE__URL",
                    "postgres://x:y@h:notaport/db",
                ),
                "database.url",
            ),
            (
                ("TENANT_PLANE__CLERK__WEBHOOK_SECRET", "whsec_!!!"),
                "clerk.webhook_secret",
            ),
            (("TENANT_PLANE__HTTP__BODY_LIMIT", "0"), "http.body_limit"),
            (("TENANT_PLANE__WORKER__LEASE", "30s"), "worker.lease"),
            (
                ("TENANT_PLANE__WORKER__ATTEMPT_TIMEOUT", "0s"),
                "worker.attempt_timeout",
            ),
            (
                ("TENANT_PLANE__DATABASE__API_CONNECTIONS", "0"),
                "database.api_connections",
            ),
        ] {
            let err = load(&[env]).unwrap_err().to_string();
            assert!(err.contains(key), "{err}");
        }
        let err = load(&[("TENANT_PLANE__LOG__FORMAT", "xml")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("format"), "{err}");
    }

    #[test]
    fn provisioning_settings_load_and_validate() {
        let s = load(&[
            ("TENANT_PLANE__TENANTS__RETENTION", "0s"),
            ("TENANT_PLANE__HOSTS__EU_2__PASSWORD", "pw"),
            (
                "TENANT_PLANE__CRYPTO__KEY",
                "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
            ),
        ])
        .unwrap();
        assert_eq!(s.tenants.retention, Duration::ZERO);
        assert_eq!(s.prefix().unwrap().as_str(), "tenant_");
        assert!(s.hosts.contains_key("eu_2"));
        assert!(s.cipher().is_ok());
        let default = load(&[]).unwrap();
        assert_eq!(
            default.tenants.retention,
            Duration::from_secs(7 * 24 * 3600)
        );
        assert!(default
            .cipher()
            .unwrap_err()
            .to_string()
            .contains("crypto.key"));
        for (env, key) in [
            (
                ("TENANT_PLANE__TENANTS__PREFIX", "Bad-Prefix"),
                "tenants.prefix",
            ),
            (("TENANT_PLANE__CRYPTO__KEY", "c2hvcnQ="), "crypto.key"),
            (
                ("TENANT_PLANE__WORKER__CONCURRENCY", "0"),
                "worker.concurrency",
            ),
        ] {
            let err = load(&[env]).unwrap_err().to_string();
            assert!(err.contains(key), "{err}");
        }
    }

    #[test]
    fn lists_come_comma_separated() {
        let s = load(&[
            (
                "TENANT_PLANE__CLERK__AUTHORIZED_PARTIES",
                "https://a.example, https://b.example",
            ),
            (
                "TENANT_PLANE__INTERNAL__TOKENS",
                "0123456789abcdef0123,fedcba9876543210fedc",
            ),
        ])
        .unwrap();
        assert_eq!(
            s.clerk.authorized_parties,
            ["https://a.example", "https://b.example"]
        );
        assert_eq!(s.internal.tokens.len(), 2);
        assert!(!format!("{s:?}").contains("0123456789abcdef0123"));
        let err = load(&[("TENANT_PLANE__INTERNAL__TOKENS", "short")]).unwrap_err();
        assert!(err.to_string().contains("internal.tokens"));
    }

    #[test]
    fn console_tokens_come_from_the_environment_and_stay_secret() {
        let s = load(&[]).unwrap();
        assert!(s.console.tokens.is_empty(), "no console by default");
        let s = load(&[
            (
                "TENANT_PLANE__CONSOLE__TOKENS",
                "console-token-0123456789, console-token-abcdefghij",
            ),
            ("TENANT_PLANE__CONSOLE__SESSION_LIFETIME", "30m"),
        ])
        .unwrap();
        assert_eq!(s.console.tokens.len(), 2);
        assert_eq!(s.console.session_lifetime, Duration::from_secs(1800));
        assert!(!format!("{s:?}").contains("console-token-0123456789"));
        let err = load(&[("TENANT_PLANE__CONSOLE__TOKENS", "short")]).unwrap_err();
        assert!(err.to_string().contains("console.tokens"), "{err}");
        let err = load(&[("TENANT_PLANE__CONSOLE__SESSION_LIFETIME", "0s")]).unwrap_err();
        assert!(
            err.to_string().contains("console.session_lifetime"),
            "{err}"
        );
    }

    #[test]
    fn each_control_pool_gets_its_size_and_the_deadlines_of_its_callers() {
        let s = load(&[
            ("TENANT_PLANE__DATABASE__MAX_CONNECTIONS", "12"),
            ("TENANT_PLANE__DATABASE__API_CONNECTIONS", "6"),
            ("TENANT_PLANE__DATABASE__LOCK_TIMEOUT", "0s"),
            ("TENANT_PLANE__WORKER__CONCURRENCY", "3"),
        ])
        .unwrap();
        let intake = s.pool_options(ControlPool::Intake);
        assert_eq!(intake.max_size, 12);
        assert_eq!(
            intake.session,
            SessionLimits {
                statement_timeout: Some(Duration::from_secs(5)),
                // 0 leaves the server's own setting.
                lock_timeout: None,
            }
        );
        assert_eq!(s.pool_options(ControlPool::Api).max_size, 6);
        assert_eq!(s.pool_options(ControlPool::Readiness).max_size, 2);
        let workers = s.pool_options(ControlPool::Workers);
        assert_eq!(workers.max_size, 5);
        assert_eq!(
            workers.session,
            SessionLimits::new(Duration::from_secs(30), Duration::from_secs(10))
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = load(&[("TENANT_PLANE__HTTP__BIN", "x")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("bin"), "{err}");
    }

    #[test]
    fn secrets_never_appear_in_debug_output_or_errors() {
        let s = load(&[
            (
                "TENANT_PLANE__DATABASE__URL",
                "postgres://u:hunter2pass@localhost/db",
            ),
            (
                "TENANT_PLANE__CLERK__WEBHOOK_SECRET",
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            ),
        ])
        .unwrap();
        let printed = format!("{s:?}");
        assert!(!printed.contains("hunter2pass"), "{printed}");
        assert!(!printed.contains("MfKQ9r8"), "{printed}");
        let err = load(&[(
            "TENANT_PLANE__DATABASE__URL",
            "postgres://u:hunter2pass@h:x/db",
        )])
        .unwrap_err()
        .to_string();
        assert!(!err.contains("hunter2pass"), "{err}");
    }
}
