//! The client: requests, retries, pagination.

use std::collections::HashSet;
use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use model::ids::{ClerkOrgId, ClerkUserId};
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Method, Response, Url};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use crate::config::{ClerkConfig, CLERK_API_VERSION};
use crate::error::{http_error, status_text, ClerkError};
use crate::limiter::KeyedRateLimiter;
use model::clerk::{Organization, OrganizationMembership, User};

use crate::page::Page;
use crate::retry::{retry_after, retryable_status, wait_before_retry};

/// Largest success answer read (a page of 500 users is a few MiB at most).
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
/// Largest part of an error answer read.
const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Walks oldest first, so that items created during a walk join its end
/// instead of shifting every later offset by one.
const ORDER_OLDEST_FIRST: &str = "+created_at";

/// A Clerk Backend API client. Cheap to clone; clones share the connection
/// pool and the metadata rate limiter.
#[derive(Clone)]
pub struct ClerkClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    /// `{api_url}/v1/`
    base: Url,
    authorization: HeaderValue,
    secret_key: SecretString,
    max_retries: u32,
    min_retry_wait: Duration,
    max_retry_wait: Duration,
    page_size: u32,
    metadata_limiter: KeyedRateLimiter<ClerkOrgId>,
}

/// What a request's attempts are charged against, besides Clerk's own limits.
#[derive(Clone, Copy)]
enum Limit<'a> {
    None,
    Metadata(&'a ClerkOrgId),
}

impl ClerkClient {
    /// Checks `config` (see [`ClerkConfig`]) and builds the HTTP client.
    pub fn new(config: ClerkConfig) -> Result<Self, ClerkError> {
        let base = config.validate()?;
        let mut authorization =
            HeaderValue::from_str(&format!("Bearer {}", config.secret_key.expose_secret()))
                .map_err(|_| {
                    ClerkError::InvalidConfig(
                        "secret_key holds characters not allowed in an HTTP header".into(),
                    )
                })?;
        authorization.set_sensitive(true);

        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        headers.insert(
            "Clerk-API-Version",
            HeaderValue::from_static(CLERK_API_VERSION),
        );
        let http = reqwest::Client::builder()
            .user_agent(concat!(
                env!("CARGO_PKG_NAME"),
                "/",
                env!("CARGO_PKG_VERSION")
            ))
            .default_headers(headers)
            .timeout(config.request_timeout)
            .connect_timeout(config.request_timeout.min(MAX_CONNECT_TIMEOUT))
            // Clerk does not redirect; following one could carry the key elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ClerkError::InvalidConfig(format!("HTTP client: {e}")))?;

        let (max, window) = config.metadata_rate;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                base,
                authorization,
                secret_key: config.secret_key,
                max_retries: config.max_retries,
                min_retry_wait: config.min_retry_wait,
                max_retry_wait: config.max_retry_wait,
                page_size: config.page_size,
                metadata_limiter: KeyedRateLimiter::new(max, window),
            }),
        })
    }

    /// The `limit` of every list request.
    pub fn page_size(&self) -> u32 {
        self.inner.page_size
    }

    /// One page of `GET /v1/organizations`, oldest first, from `offset`.
    pub async fn list_organizations_page(
        &self,
        offset: u64,
    ) -> Result<Page<Organization>, ClerkError> {
        self.offset_page(&["organizations"], offset).await
    }

    /// Every organization of the instance, oldest first, following `offset`
    /// until a page is empty or `total_count` is reached. An organization met
    /// twice (the list shifted during the walk) is kept once.
    pub async fn list_all_organizations(&self) -> Result<Vec<Organization>, ClerkError> {
        self.offset_walk(&["organizations"], |o: &Organization| o.id.clone())
            .await
    }

    /// `GET /v1/organizations/{id}`; `None` when Clerk answers 404.
    pub async fn get_organization(
        &self,
        id: &ClerkOrgId,
    ) -> Result<Option<Organization>, ClerkError> {
        let url = self.url(&["organizations", id.as_str()], &[]);
        match self.fetch(Method::GET, url, None, Limit::None).await {
            Ok(body) => Ok(Some(decode("GET /v1/organizations/{id}", &body)?)),
            Err(ClerkError::Http { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// One page of `GET /v1/organizations/{id}/memberships`, oldest first.
    pub async fn list_organization_memberships_page(
        &self,
        org_id: &ClerkOrgId,
        offset: u64,
    ) -> Result<Page<OrganizationMembership>, ClerkError> {
        self.offset_page(&["organizations", org_id.as_str(), "memberships"], offset)
            .await
    }

    /// Every membership of one organization (all pages).
    pub async fn list_organization_memberships(
        &self,
        org_id: &ClerkOrgId,
    ) -> Result<Vec<OrganizationMembership>, ClerkError> {
        self.offset_walk(
            &["organizations", org_id.as_str(), "memberships"],
            |m: &OrganizationMembership| m.id.clone(),
        )
        .await
    }

    /// One page of `GET /v1/users`, oldest first: the users created after
    /// `starting_after` (Clerk's cursor), or the first page. The spec answers
    /// this endpoint with a bare array, without `total_count`.
    pub async fn list_users_page(
        &self,
        starting_after: Option<&ClerkUserId>,
    ) -> Result<Vec<User>, ClerkError> {
        let limit = self.inner.page_size.to_string();
        let mut query = vec![("limit", limit.as_str()), ("order_by", ORDER_OLDEST_FIRST)];
        if let Some(cursor) = starting_after {
            query.push(("starting_after", cursor.as_str()));
        }
        let url = self.url(&["users"], &query);
        let body = self.fetch(Method::GET, url, None, Limit::None).await?;
        decode("GET /v1/users", &body)
    }

    /// Every user of the instance, oldest first. Pages with the
    /// `starting_after` cursor, as the spec recommends for walking more than
    /// a few pages (a large `offset` gets slower and can time out), and stops
    /// at the first page shorter than the page size.
    pub async fn list_all_users(&self) -> Result<Vec<User>, ClerkError> {
        let limit = self.inner.page_size as usize;
        let mut seen = HashSet::new();
        let mut all = Vec::new();
        let mut cursor: Option<ClerkUserId> = None;
        loop {
            let page = self.list_users_page(cursor.as_ref()).await?;
            let full = page.len() >= limit;
            let last = page.last().map(|u| u.id.clone());
            all.extend(page.into_iter().filter(|u| seen.insert(u.id.clone())));
            match last {
                // The same cursor twice would loop for ever.
                Some(last) if full && cursor.as_ref() != Some(&last) => cursor = Some(last),
                _ => return Ok(all),
            }
        }
    }

    /// `PATCH /v1/organizations/{id}/metadata` with `{"public_metadata": ...}`:
    /// Clerk deep-merges it into the stored metadata (a `null` value removes
    /// that key) and answers the updated organization. `public_metadata` must
    /// be a JSON object.
    ///
    /// At most `metadata_rate` calls (default 10 per 10 s, Clerk's limit for
    /// this endpoint) go out per organization; further calls, retries
    /// included, wait for a slot. Other organizations are not held up.
    pub async fn merge_organization_metadata(
        &self,
        org_id: &ClerkOrgId,
        public_metadata: Value,
    ) -> Result<Organization, ClerkError> {
        if !public_metadata.is_object() {
            return Err(ClerkError::InvalidRequest(
                "public_metadata must be a JSON object".into(),
            ));
        }
        let body = serde_json::to_vec(&json!({ "public_metadata": public_metadata }))
            .map_err(|e| ClerkError::InvalidRequest(format!("public_metadata: {e}")))?;
        let url = self.url(&["organizations", org_id.as_str(), "metadata"], &[]);
        let answer = self
            .fetch(Method::PATCH, url, Some(body), Limit::Metadata(org_id))
            .await?;
        decode("PATCH /v1/organizations/{id}/metadata", &answer)
    }

    async fn offset_page<T: DeserializeOwned>(
        &self,
        path: &[&str],
        offset: u64,
    ) -> Result<Page<T>, ClerkError> {
        let limit = self.inner.page_size.to_string();
        let offset = offset.to_string();
        let url = self.url(
            path,
            &[
                ("limit", &limit),
                ("offset", &offset),
                ("order_by", ORDER_OLDEST_FIRST),
            ],
        );
        let what = format!("GET {}", url.path());
        let body = self.fetch(Method::GET, url, None, Limit::None).await?;
        decode(&what, &body)
    }

    async fn offset_walk<T, K>(
        &self,
        path: &[&str],
        key: impl Fn(&T) -> K,
    ) -> Result<Vec<T>, ClerkError>
    where
        T: DeserializeOwned,
        K: Eq + Hash,
    {
        let mut seen = HashSet::new();
        let mut all = Vec::new();
        let mut offset = 0u64;
        loop {
            let page: Page<T> = self.offset_page(path, offset).await?;
            if page.data.is_empty() {
                return Ok(all);
            }
            offset += page.data.len() as u64;
            all.extend(page.data.into_iter().filter(|item| seen.insert(key(item))));
            if offset >= page.total_count {
                return Ok(all);
            }
        }
    }

    /// `{base}/{segments...}?{query}`; segments are percent-encoded.
    fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> Url {
        let mut url = self.inner.base.clone();
        url.path_segments_mut()
            .expect("validated http(s) base URL")
            .pop_if_empty()
            .extend(segments);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    /// Sends a request until it succeeds, fails for good or runs out of
    /// retries; answers the body of the 2xx answer.
    async fn fetch(
        &self,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
        limit: Limit<'_>,
    ) -> Result<Vec<u8>, ClerkError> {
        let inner = &*self.inner;
        let mut retry = 0u32;
        loop {
            // Held until this attempt's answer is read; see limiter.rs.
            let slot = match limit {
                Limit::Metadata(org) => Some(inner.metadata_limiter.acquire(org).await),
                Limit::None => None,
            };
            let mut request = inner
                .http
                .request(method.clone(), url.clone())
                .header(AUTHORIZATION, inner.authorization.clone());
            if let Some(body) = &body {
                request = request
                    .header(CONTENT_TYPE, "application/json")
                    .body(body.clone());
            }
            tracing::debug!(%method, path = url.path(), attempt = retry + 1, "Clerk request");

            let (failure, last_status, after) = match request.send().await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    if response.status().is_success() {
                        match read_capped(response, MAX_BODY_BYTES).await {
                            Ok((body, false)) => return Ok(body),
                            Ok((_, true)) => {
                                return Err(ClerkError::Decode {
                                    what: format!("{method} {}", url.path()),
                                    message: format!("answer larger than {MAX_BODY_BYTES} bytes"),
                                })
                            }
                            Err(e) if retryable_transport(&e) => {
                                (self.describe_transport(&e), None, None)
                            }
                            Err(e) => {
                                return Err(ClerkError::Transport(self.describe_transport(&e)))
                            }
                        }
                    } else {
                        let after = retry_after(response.headers());
                        let body = match read_capped(response, MAX_ERROR_BODY_BYTES).await {
                            Ok((body, _)) => body,
                            Err(_) => Vec::new(),
                        };
                        let error = http_error(status, &body, |s| self.scrub(s));
                        if !retryable_status(status) {
                            return Err(error);
                        }
                        (error.to_string(), Some(status), after)
                    }
                }
                Err(e) if retryable_transport(&e) => (self.describe_transport(&e), None, None),
                Err(e) => return Err(ClerkError::Transport(self.describe_transport(&e))),
            };

            drop(slot);
            if retry >= inner.max_retries {
                return Err(ClerkError::RetriesExhausted {
                    attempts: retry + 1,
                    last_status,
                    last_error: failure,
                });
            }
            let wait = wait_before_retry(retry, after, inner.min_retry_wait, inner.max_retry_wait);
            tracing::warn!(
                %method,
                path = url.path(),
                status = last_status.map(status_text),
                retry_after = after.map(|d| d.as_secs_f64()),
                wait_ms = wait.as_millis() as u64,
                error = %failure,
                "Clerk request failed; retrying"
            );
            tokio::time::sleep(wait).await;
            retry += 1;
        }
    }

    /// The error and its causes on one line ("error sending request for url
    /// (...): client error (Connect): tcp connect error: Connection refused").
    fn describe_transport(&self, e: &reqwest::Error) -> String {
        let mut text = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(cause) = source {
            let part = cause.to_string();
            if !text.contains(&part) {
                text.push_str(": ");
                text.push_str(&part);
            }
            source = cause.source();
        }
        self.scrub(&text)
    }

    /// `text` with the secret key, should it be there, redacted.
    fn scrub(&self, text: &str) -> String {
        let secret = self.inner.secret_key.expose_secret();
        if secret.len() >= 4 && text.contains(secret) {
            text.replace(secret, "<redacted>")
        } else {
            text.to_owned()
        }
    }
}

impl fmt::Debug for ClerkClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClerkClient")
            .field("base", &self.inner.base.as_str())
            .field("page_size", &self.inner.page_size)
            .field("max_retries", &self.inner.max_retries)
            .finish_non_exhaustive()
    }
}

/// Whether a failure to send or read is worth another attempt: connection
/// failures, timeouts, broken bodies. Not a request that cannot be built or
/// a redirect (which is refused).
fn retryable_transport(e: &reqwest::Error) -> bool {
    !(e.is_builder() || e.is_redirect())
}

/// Reads at most `cap` bytes of the body; `true` when there was more.
async fn read_capped(
    mut response: Response,
    cap: usize,
) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > cap {
            body.extend_from_slice(&chunk[..cap - body.len()]);
            return Ok((body, true));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, false))
}

fn decode<T: DeserializeOwned>(what: &str, body: &[u8]) -> Result<T, ClerkError> {
    serde_json::from_slice(body).map_err(|e| ClerkError::Decode {
        what: what.to_owned(),
        message: e.to_string(),
    })
}
