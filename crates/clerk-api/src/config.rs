//! What a [`crate::ClerkClient`] is built from.

use std::fmt;
use std::time::Duration;

use reqwest::Url;
use secrecy::{ExposeSecret, SecretString};

use crate::ClerkError;

/// Clerk's Backend API.
pub const DEFAULT_API_URL: &str = "https://api.clerk.com";
/// The Backend API version this crate models, sent as `Clerk-API-Version`.
pub const CLERK_API_VERSION: &str = "2026-05-12";
pub const DEFAULT_MAX_RETRIES: u32 = 5;
pub const DEFAULT_MAX_RETRY_WAIT: Duration = Duration::from_secs(30);
/// First backoff step (the spec's own retry hint: 500 ms initial interval).
pub const DEFAULT_MIN_RETRY_WAIT: Duration = Duration::from_millis(500);
pub const DEFAULT_PAGE_SIZE: u32 = 100;
/// Largest `limit` the list endpoints accept.
pub const MAX_PAGE_SIZE: u32 = 500;
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Clerk's limit on `PATCH /organizations/{id}/metadata`: 10 requests per
/// 10 seconds per organization.
pub const DEFAULT_METADATA_RATE: (u32, Duration) = (10, Duration::from_secs(10));

/// Settings of a [`crate::ClerkClient`]. [`ClerkConfig::new`] fills in the
/// defaults; every field is public so callers can adjust any of them.
#[derive(Clone)]
pub struct ClerkConfig {
    /// Base URL without `/v1` (default [`DEFAULT_API_URL`]). http is allowed
    /// for tests against a local server; credentials in the URL are refused.
    pub api_url: String,
    /// The instance's secret key (`sk_live_...` / `sk_test_...`).
    pub secret_key: SecretString,
    /// Retries after the first attempt of a request (429, 5xx, connection
    /// errors). 0 disables retrying.
    pub max_retries: u32,
    /// Longest wait between two attempts, `Retry-After` included.
    pub max_retry_wait: Duration,
    /// First backoff step; each further retry doubles it (with jitter).
    pub min_retry_wait: Duration,
    /// `limit` of list requests, 1..=500.
    pub page_size: u32,
    /// Whole-request timeout of one attempt.
    pub request_timeout: Duration,
    /// At most `.0` metadata merges per `.1` for one organization; further
    /// calls wait for a slot.
    pub metadata_rate: (u32, Duration),
}

impl ClerkConfig {
    /// Defaults for everything but the secret key.
    pub fn new(secret_key: impl Into<SecretString>) -> Self {
        Self {
            api_url: DEFAULT_API_URL.to_owned(),
            secret_key: secret_key.into(),
            max_retries: DEFAULT_MAX_RETRIES,
            max_retry_wait: DEFAULT_MAX_RETRY_WAIT,
            min_retry_wait: DEFAULT_MIN_RETRY_WAIT,
            page_size: DEFAULT_PAGE_SIZE,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            metadata_rate: DEFAULT_METADATA_RATE,
        }
    }

    /// Checks every field; returns the `/v1/` base URL requests are built on.
    pub(crate) fn validate(&self) -> Result<Url, ClerkError> {
        let invalid = |msg: String| Err(ClerkError::InvalidConfig(msg));
        if self.secret_key.expose_secret().trim().is_empty() {
            return invalid("secret_key is empty".into());
        }
        if !(1..=MAX_PAGE_SIZE).contains(&self.page_size) {
            return invalid(format!(
                "page_size must be within 1..={MAX_PAGE_SIZE}, not {}",
                self.page_size
            ));
        }
        if self.max_retry_wait.is_zero() {
            return invalid("max_retry_wait must be more than zero".into());
        }
        if self.min_retry_wait > self.max_retry_wait {
            return invalid("min_retry_wait must not exceed max_retry_wait".into());
        }
        if self.request_timeout.is_zero() {
            return invalid("request_timeout must be more than zero".into());
        }
        if self.metadata_rate.0 == 0 || self.metadata_rate.1.is_zero() {
            return invalid("metadata_rate needs at least one request per non-zero window".into());
        }
        api_base(&self.api_url)
    }
}

/// `{api_url}/v1/`, from an http(s) URL with no credentials, query or fragment.
fn api_base(api_url: &str) -> Result<Url, ClerkError> {
    let invalid = |why: &str| Err(ClerkError::InvalidConfig(format!("api_url {why}")));
    let Ok(mut url) = Url::parse(api_url.trim()) else {
        return invalid("is not a URL");
    };
    if !matches!(url.scheme(), "http" | "https") {
        return invalid("must be http or https");
    }
    if !url.username().is_empty() || url.password().is_some() {
        // Not echoed: it would print the credentials.
        return invalid("must not carry credentials (the secret key goes in secret_key)");
    }
    if url.query().is_some() || url.fragment().is_some() {
        return invalid("must not have a query or fragment");
    }
    if url.host_str().unwrap_or_default().is_empty() {
        return invalid("has no host");
    }
    let path = url.path().trim_end_matches('/');
    let path = path.strip_suffix("/v1").unwrap_or(path).to_owned();
    url.set_path(&format!("{path}/v1/"));
    Ok(url)
}

impl fmt::Debug for ClerkConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClerkConfig")
            .field("api_url", &self.api_url)
            .field("secret_key", &"<redacted>")
            .field("max_retries", &self.max_retries)
            .field("max_retry_wait", &self.max_retry_wait)
            .field("min_retry_wait", &self.min_retry_wait)
            .field("page_size", &self.page_size)
            .field("request_timeout", &self.request_timeout)
            .field("metadata_rate", &self.metadata_rate)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ClerkConfig {
        ClerkConfig::new("sk_test_abc".to_owned())
    }

    #[test]
    fn defaults() {
        let c = config();
        assert_eq!(c.api_url, "https://api.clerk.com");
        assert_eq!(c.max_retries, 5);
        assert_eq!(c.max_retry_wait, Duration::from_secs(30));
        assert_eq!(c.page_size, 100);
        assert_eq!(c.metadata_rate, (10, Duration::from_secs(10)));
        assert_eq!(c.validate().unwrap().as_str(), "https://api.clerk.com/v1/");
    }

    #[test]
    fn base_url_forms() {
        for (given, want) in [
            ("https://api.clerk.com/", "https://api.clerk.com/v1/"),
            ("https://api.clerk.com/v1", "https://api.clerk.com/v1/"),
            ("https://api.clerk.com/v1/", "https://api.clerk.com/v1/"),
            ("http://127.0.0.1:9999", "http://127.0.0.1:9999/v1/"),
            ("http://proxy.local/clerk", "http://proxy.local/clerk/v1/"),
        ] {
            assert_eq!(api_base(given).unwrap().as_str(), want, "{given}");
        }
    }

    /// A setting to spoil.
    type Change = fn(&mut ClerkConfig);

    #[test]
    fn refuses_bad_settings() {
        let cases: Vec<(&str, Change)> = vec![
            ("page_size", |c| c.page_size = 0),
            ("page_size", |c| c.page_size = 501),
            ("secret_key", |c| c.secret_key = " ".to_owned().into()),
            ("max_retry_wait", |c| c.max_retry_wait = Duration::ZERO),
            ("min_retry_wait", |c| {
                c.min_retry_wait = Duration::from_secs(60)
            }),
            ("metadata_rate", |c| c.metadata_rate.0 = 0),
            ("api_url", |c| c.api_url = "ftp://api.clerk.com".into()),
            ("api_url", |c| c.api_url = "not a url".into()),
            ("api_url", |c| {
                c.api_url = "https://api.clerk.com/?x=1".into()
            }),
            ("api_url", |c| {
                c.api_url = "https://user:sk_live_leak@api.clerk.com".into()
            }),
        ];
        for (key, change) in cases {
            let mut c = config();
            change(&mut c);
            let err = c.validate().unwrap_err();
            let text = err.to_string();
            assert!(matches!(err, ClerkError::InvalidConfig(_)), "{text}");
            assert!(text.contains(key), "{text} should name {key}");
            assert!(!text.contains("sk_live_leak"), "{text}");
        }
    }

    #[test]
    fn debug_hides_the_secret() {
        let text = format!("{:?}", ClerkConfig::new("sk_live_topsecret".to_owned()));
        assert!(!text.contains("topsecret"), "{text}");
        assert!(text.contains("<redacted>"), "{text}");
    }
}
