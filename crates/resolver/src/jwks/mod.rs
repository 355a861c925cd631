//! The public keys session tokens are verified with.
//!
//! Either one RSA public key in PEM (Clerk's "PEM public key", networkless) or
//! the instance's JWKS (`{issuer}/.well-known/jwks.json`). The JWKS is fetched
//! on first use and cached; a token naming a `kid` the cache does not hold (a
//! key rotation) triggers a refetch, at most once per `min_refetch_interval`
//! so that tokens with made-up kids cannot make us hammer Clerk, and
//! concurrent refetches coalesce into one request. After a failed fetch (at
//! a cold start, say) the next one is allowed sooner: after 250 ms, doubling
//! with each failure up to the same interval, and the error says how long to
//! wait, for an honest `Retry-After`. Redirects are followed only to URLs
//! that pass the same https-or-loopback rule as the configured one. A cache older than
//! [`JWKS_MAX_AGE`] is refreshed in the background on next use (Clerk's SDK
//! refetches after as long), so a key Clerk withdrew stops verifying; the
//! cached keys answer meanwhile, and stay in use if the JWKS is unreachable.
//!
//! Only RSA signing keys are kept (`kty: RSA`, `use` absent or `sig`, `alg`
//! absent or RS256/384/512). Nothing here prints key material.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use tokio::time::Instant;

/// A cache this old is refreshed on next use (Clerk's SDK: 5 minutes).
pub const JWKS_MAX_AGE: Duration = Duration::from_secs(5 * 60);

/// Default for `min_refetch_interval` in [`KeySource::clerk_jwks`].
pub const DEFAULT_MIN_REFETCH_INTERVAL: Duration = Duration::from_secs(30);

/// Longest JWKS document read (Clerk's is about 1 KiB).
const MAX_JWKS_BYTES: usize = 256 * 1024;

const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The wait after a first failed fetch; it doubles with each failure.
const RETRY_AFTER_FAILURE: Duration = Duration::from_millis(250);
const MAX_REDIRECTS: usize = 3;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Where the verification keys come from.
#[derive(Clone, PartialEq, Eq)]
pub enum KeySource {
    /// One RSA public key in PEM (`-----BEGIN PUBLIC KEY-----` or
    /// `-----BEGIN RSA PUBLIC KEY-----`), used whatever the token's `kid`.
    Pem(String),
    /// A JWKS URL (https, or http on a loopback host for tests).
    Jwks {
        url: String,
        min_refetch_interval: Duration,
    },
}

impl KeySource {
    /// The JWKS Clerk publishes for an instance: `{issuer}/.well-known/jwks.json`.
    pub fn clerk_jwks(issuer: &str) -> Self {
        KeySource::Jwks {
            url: format!("{}/.well-known/jwks.json", issuer.trim_end_matches('/')),
            min_refetch_interval: DEFAULT_MIN_REFETCH_INTERVAL,
        }
    }
}

impl fmt::Debug for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::Pem(_) => f.write_str("Pem(<redacted>)"),
            KeySource::Jwks {
                url,
                min_refetch_interval,
            } => f
                .debug_struct("Jwks")
                .field("url", url)
                .field("min_refetch_interval", min_refetch_interval)
                .finish(),
        }
    }
}

/// A key source that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyConfigError {
    #[error("the PEM is not an RSA public key ({0})")]
    InvalidPem(&'static str),
    #[error("invalid JWKS URL: {0}")]
    InvalidUrl(&'static str),
    #[error("cannot build the HTTP client: {0}")]
    HttpClient(String),
}

/// Why no key was found for a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The token names no key we know (or names none, with a JWKS).
    #[error("no signing key with this kid")]
    Unknown,
    /// The JWKS could not be fetched and the key is not cached; the next
    /// fetch is allowed after `retry_after`.
    #[error("signing keys unavailable: {detail}")]
    Unavailable {
        detail: String,
        retry_after: Duration,
    },
}

/// One RSA public key.
#[derive(Clone)]
pub struct PublicKey {
    kid: Option<String>,
    alg: Option<Algorithm>,
    key: DecodingKey,
}

impl PublicKey {
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The algorithm the JWK is restricted to (`alg`), if any.
    pub fn algorithm(&self) -> Option<Algorithm> {
        self.alg
    }

    pub fn decoding_key(&self) -> &DecodingKey {
        &self.key
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// The RSA algorithms session tokens may use, by JOSE name.
pub fn rsa_algorithm(name: &str) -> Option<Algorithm> {
    match name {
        "RS256" => Some(Algorithm::RS256),
        "RS384" => Some(Algorithm::RS384),
        "RS512" => Some(Algorithm::RS512),
        _ => None,
    }
}

/// Verification keys by `kid`.
pub struct KeyStore {
    inner: Inner,
}

enum Inner {
    Pem(Arc<PublicKey>),
    Jwks(Arc<Jwks>),
}

impl fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            Inner::Pem(_) => f.write_str("KeyStore::Pem(<redacted>)"),
            Inner::Jwks(jwks) => {
                let cached = jwks.cache.read().map(|c| c.keys.len()).unwrap_or(0);
                f.debug_struct("KeyStore::Jwks")
                    .field("url", &jwks.url.as_str())
                    .field("min_refetch_interval", &jwks.min_refetch_interval)
                    .field("cached_keys", &cached)
                    .finish()
            }
        }
    }
}

impl KeyStore {
    pub fn new(source: KeySource) -> Result<Self, KeyConfigError> {
        let inner = match source {
            KeySource::Pem(pem) => Inner::Pem(Arc::new(parse_pem(&pem)?)),
            KeySource::Jwks {
                url,
                min_refetch_interval,
            } => {
                let url = parse_jwks_url(&url)?;
                let client = reqwest::Client::builder()
                    .timeout(FETCH_TIMEOUT)
                    .connect_timeout(CONNECT_TIMEOUT)
                    .redirect(reqwest::redirect::Policy::custom(|attempt| {
                        if attempt.previous().len() > MAX_REDIRECTS {
                            attempt.error("too many redirects")
                        } else if check_jwks_url(attempt.url()).is_err() {
                            attempt.error("redirected to a URL that is neither https nor loopback")
                        } else {
                            attempt.follow()
                        }
                    }))
                    .user_agent(concat!("tenant-plane-resolver/", env!("CARGO_PKG_VERSION")))
                    .build()
                    .map_err(|e| KeyConfigError::HttpClient(e.to_string()))?;
                Inner::Jwks(Arc::new(Jwks::new(url, client, min_refetch_interval)))
            }
        };
        Ok(Self { inner })
    }

    /// Whether `key` is still the one held for its `kid`: false once the
    /// JWKS no longer lists it, or a fetch replaced it.
    pub fn is_current(&self, key: &Arc<PublicKey>) -> bool {
        match &self.inner {
            Inner::Pem(pem) => Arc::ptr_eq(pem, key),
            Inner::Jwks(jwks) => key
                .kid()
                .and_then(|kid| jwks.read().keys.get(kid).cloned())
                .is_some_and(|held| Arc::ptr_eq(&held, key)),
        }
    }

    /// The key for a token's `kid`. With a PEM, its one key whatever the kid.
    pub async fn key(&self, kid: Option<&str>) -> Result<Arc<PublicKey>, KeyError> {
        match &self.inner {
            Inner::Pem(key) => Ok(key.clone()),
            Inner::Jwks(jwks) => {
                let kid = kid.ok_or(KeyError::Unknown)?;
                match jwks.cached(kid) {
                    (Some(key), true) => return Ok(key),
                    (Some(key), false) => {
                        // Stale: answer at once, refresh behind.
                        jwks.refresh_in_background();
                        return Ok(key);
                    }
                    (None, _) => {}
                }
                // In a task of its own, so that a caller going away mid-fetch
                // does not cancel a fetch other callers are waiting for.
                let jwks = jwks.clone();
                let kid = kid.to_owned();
                tokio::spawn(async move { jwks.refresh_for(&kid).await })
                    .await
                    .unwrap_or_else(|_| {
                        Err(KeyError::Unavailable {
                            detail: "key refresh failed".into(),
                            retry_after: RETRY_AFTER_FAILURE,
                        })
                    })
            }
        }
    }
}

struct Jwks {
    url: reqwest::Url,
    client: reqwest::Client,
    min_refetch_interval: Duration,
    max_age: Duration,
    cache: RwLock<Cache>,
    /// Held while deciding on and running a fetch: concurrent refetches wait
    /// for the one in flight instead of starting their own.
    fetch_lock: tokio::sync::Mutex<()>,
    /// A background refresh is under way.
    refreshing: AtomicBool,
}

#[derive(Default)]
struct Cache {
    keys: HashMap<String, Arc<PublicKey>>,
    /// Last successful fetch.
    fetched_at: Option<Instant>,
    /// Last fetch started, successful or not: the rate limit.
    attempted_at: Option<Instant>,
    last_error: Option<String>,
    /// Failed fetches since the last success.
    failures: u32,
}

impl Jwks {
    fn new(url: reqwest::Url, client: reqwest::Client, min_refetch_interval: Duration) -> Self {
        Self {
            url,
            client,
            min_refetch_interval,
            max_age: JWKS_MAX_AGE,
            cache: RwLock::new(Cache::default()),
            fetch_lock: tokio::sync::Mutex::new(()),
            refreshing: AtomicBool::new(false),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Cache> {
        self.cache.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Cache> {
        self.cache.write().unwrap_or_else(|e| e.into_inner())
    }

    fn is_fresh(&self, cache: &Cache) -> bool {
        cache.fetched_at.is_some_and(|t| t.elapsed() < self.max_age)
    }

    /// The cached key of `kid`, and whether the cache is fresh.
    fn cached(&self, kid: &str) -> (Option<Arc<PublicKey>>, bool) {
        let cache = self.read();
        (cache.keys.get(kid).cloned(), self.is_fresh(&cache))
    }

    /// How long until the rate limit allows the next fetch: the minimum
    /// refetch interval after a success, a short doubling backoff after a
    /// failure.
    fn wait_before_next(&self, cache: &Cache) -> Duration {
        let gap = if cache.failures > 0 {
            RETRY_AFTER_FAILURE
                .saturating_mul(1 << (cache.failures - 1).min(16))
                .min(self.min_refetch_interval)
        } else {
            self.min_refetch_interval
        };
        match cache.attempted_at {
            None => Duration::ZERO,
            Some(t) => gap.saturating_sub(t.elapsed()),
        }
    }

    /// Claims the right to fetch now, if the rate limit allows it.
    fn start_attempt(&self, cache: &mut Cache) -> bool {
        let allowed = self.wait_before_next(cache).is_zero();
        if allowed {
            cache.attempted_at = Some(Instant::now());
        }
        allowed
    }

    fn unavailable(&self, detail: String) -> KeyError {
        let retry_after = self.wait_before_next(&self.read());
        KeyError::Unavailable {
            detail,
            retry_after,
        }
    }

    /// Fetches, and replaces the cached keys when that worked.
    async fn fetch_and_store(&self) -> Result<(), String> {
        let fetched = self.fetch().await;
        let mut cache = self.write();
        match fetched {
            Ok(keys) => {
                tracing::debug!(url = %self.url, keys = keys.len(), "fetched JWKS");
                cache.keys = keys;
                cache.fetched_at = Some(Instant::now());
                cache.last_error = None;
                cache.failures = 0;
                Ok(())
            }
            Err(error) => {
                tracing::warn!(url = %self.url, %error, "cannot fetch JWKS");
                cache.last_error = Some(error.clone());
                cache.failures = cache.failures.saturating_add(1);
                Err(error)
            }
        }
    }

    async fn refresh_for(&self, kid: &str) -> Result<Arc<PublicKey>, KeyError> {
        let _fetching = self.fetch_lock.lock().await;
        // Whoever held the lock before us may have fetched this kid.
        if let (Some(key), true) = self.cached(kid) {
            return Ok(key);
        }
        {
            let mut cache = self.write();
            if !self.start_attempt(&mut cache) {
                if let Some(key) = cache.keys.get(kid) {
                    return Ok(key.clone());
                }
                return Err(match (&cache.fetched_at, &cache.last_error) {
                    (None, Some(error)) => KeyError::Unavailable {
                        detail: error.clone(),
                        retry_after: self.wait_before_next(&cache),
                    },
                    _ => KeyError::Unknown,
                });
            }
        }
        let fetched = self.fetch_and_store().await;
        let key = self.read().keys.get(kid).cloned();
        match (key, fetched) {
            (Some(key), _) => Ok(key),
            (None, Ok(())) => Err(KeyError::Unknown),
            (None, Err(error)) => Err(self.unavailable(error)),
        }
    }

    /// Starts refreshing a stale cache, unless a refresh is under way or the
    /// rate limit forbids it; the cached keys stay in use meanwhile (and
    /// after, if the JWKS cannot be fetched).
    fn refresh_in_background(self: &Arc<Self>) {
        if self.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let jwks = self.clone();
        tokio::spawn(async move {
            {
                let _fetching = jwks.fetch_lock.lock().await;
                let go = {
                    let mut cache = jwks.write();
                    !jwks.is_fresh(&cache) && jwks.start_attempt(&mut cache)
                };
                if go {
                    let _ = jwks.fetch_and_store().await;
                }
            }
            jwks.refreshing.store(false, Ordering::Release);
        });
    }

    async fn fetch(&self) -> Result<HashMap<String, Arc<PublicKey>>, String> {
        let mut response = self
            .client
            .get(self.url.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| format!("GET JWKS: {}", registry::with_sources(&e)))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("GET JWKS: HTTP {status}"));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| format!("reading JWKS: {e}"))?
        {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(format!("JWKS larger than {MAX_JWKS_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        parse_jwks(&body)
    }
}

#[derive(Deserialize)]
struct JwkSet {
    keys: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawJwk {
    kty: String,
    kid: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    alg: Option<String>,
    n: Option<String>,
    e: Option<String>,
}

/// The RSA signing keys of a JWKS document, by kid; other keys are skipped.
fn parse_jwks(body: &[u8]) -> Result<HashMap<String, Arc<PublicKey>>, String> {
    let set: JwkSet =
        serde_json::from_slice(body).map_err(|e| format!("JWKS is not a JWK set: {e}"))?;
    let mut keys = HashMap::new();
    for value in set.keys {
        let Ok(jwk) = serde_json::from_value::<RawJwk>(value) else {
            continue;
        };
        if jwk.kty != "RSA" || jwk.use_.as_deref().is_some_and(|u| u != "sig") {
            continue;
        }
        let alg = match jwk.alg.as_deref() {
            None => None,
            Some(name) => match rsa_algorithm(name) {
                Some(alg) => Some(alg),
                None => continue,
            },
        };
        let (Some(kid), Some(n), Some(e)) = (jwk.kid, jwk.n, jwk.e) else {
            continue;
        };
        let Ok(key) = DecodingKey::from_rsa_components(&n, &e) else {
            continue;
        };
        keys.entry(kid.clone()).or_insert_with(|| {
            Arc::new(PublicKey {
                kid: Some(kid),
                alg,
                key,
            })
        });
    }
    Ok(keys)
}

#[cfg(test)]
impl PublicKey {
    /// The test fixture key `rsa-a`.
    pub(crate) fn test_key() -> Self {
        parse_pem(include_str!("../../../testkit/fixtures/rsa-a.pub.pem")).expect("fixture key")
    }
}

fn parse_pem(pem: &str) -> Result<PublicKey, KeyConfigError> {
    let label = pem
        .trim_start()
        .strip_prefix("-----BEGIN ")
        .and_then(|rest| rest.split_once("-----"))
        .map(|(label, _)| label)
        .ok_or(KeyConfigError::InvalidPem("not PEM"))?;
    if label != "PUBLIC KEY" && label != "RSA PUBLIC KEY" {
        return Err(KeyConfigError::InvalidPem(
            "expected BEGIN PUBLIC KEY or BEGIN RSA PUBLIC KEY",
        ));
    }
    let key = DecodingKey::from_rsa_pem(pem.as_bytes())
        .map_err(|_| KeyConfigError::InvalidPem("not an RSA public key"))?;
    Ok(PublicKey {
        kid: None,
        alg: None,
        key,
    })
}

fn parse_jwks_url(url: &str) -> Result<reqwest::Url, KeyConfigError> {
    let url = reqwest::Url::parse(url).map_err(|_| KeyConfigError::InvalidUrl("not a URL"))?;
    check_jwks_url(&url)?;
    Ok(url)
}

/// JWKS URLs are https, or plain http on a loopback host (tests, sidecars).
fn check_jwks_url(url: &reqwest::Url) -> Result<(), KeyConfigError> {
    let loopback = url.host_str().is_some_and(|host| {
        host == "localhost"
            || host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    });
    match url.scheme() {
        "https" if url.host_str().is_some_and(|h| !h.is_empty()) => Ok(()),
        "http" if loopback => Ok(()),
        "http" => Err(KeyConfigError::InvalidUrl(
            "plain http is only allowed on a loopback host",
        )),
        _ => Err(KeyConfigError::InvalidUrl("expected an https URL")),
    }
}

#[cfg(test)]
mod tests;
