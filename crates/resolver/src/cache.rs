//! Tenant look-ups (by organization, id or slug), cached. Entries are
//! dropped when the registry announces a change to their tenant (NOTIFY: a
//! trigger announces every change to `tenant_registry`, whoever makes it),
//! and expire after a TTL as a backstop for missed notifications.
//!
//! One fetch per key at a time: concurrent misses wait for the one in
//! flight. Every invalidation bumps a generation, and a fetch that began
//! before it answers its callers but is not cached, so a read that raced a
//! suspension's NOTIFY cannot put the tenant back as active. The cache
//! holds at most `max_entries`; past that the oldest entry goes.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use model::{ClerkOrgId, TenantId, TenantStatus};
use registry::crypto::PasswordCipher;
use registry::directory;
use registry::listen::{self, Signal, CHANGED_CHANNEL, TOUCHED_CHANNEL};
use registry::tenants::{self, Tenant, TenantCredentials, TenantKey};
use registry::tls::{ConnectOptions, TlsSettings};
use serde::Serialize;
use tokio::task::JoinHandle;

/// What the resolver knows of a tenant: its registry row as it was read, and
/// its connection credentials (active tenants only).
#[derive(Clone, Serialize)]
pub struct ResolvedTenant {
    #[serde(flatten)]
    pub record: Tenant,
    #[serde(skip)]
    pub(crate) credentials: Option<TenantCredentials>,
    /// Why an active tenant has no credentials (its sealed password did not
    /// open): look-ups still answer, resolves are refused.
    #[serde(skip)]
    pub(crate) credentials_error: Option<Arc<LookupError>>,
    /// What an embedder renders from this entry on first use, kept with it
    /// (dropped with the entry: on a change, at the TTL); see
    /// [`crate::rendered`].
    #[serde(skip)]
    pub rendered: crate::rendered::Rendered,
}

impl std::ops::Deref for ResolvedTenant {
    type Target = Tenant;
    fn deref(&self) -> &Tenant {
        &self.record
    }
}

impl std::fmt::Debug for ResolvedTenant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResolvedTenant")
            .field("id", &self.id)
            .field("clerk_org_id", &self.clerk_org_id)
            .field("status", &self.status)
            .field("placement", &self.placement)
            .finish_non_exhaustive()
    }
}

impl ResolvedTenant {
    /// Connection parameters (host, port, database, role, password, TLS).
    pub fn credentials(&self) -> Option<&TenantCredentials> {
        self.credentials.as_ref()
    }

    /// Why an active tenant's credentials could not be read, if they could not.
    pub fn credentials_error(&self) -> Option<&Arc<LookupError>> {
        self.credentials_error.as_ref()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error(transparent)]
    Registry(#[from] registry::RegistryError),
    #[error(transparent)]
    Credentials(#[from] tenants::TenantCredentialsError),
    /// The failure of a fetch another caller was waiting for.
    #[error(transparent)]
    Shared(Arc<LookupError>),
}

struct Entry {
    tenant: Arc<ResolvedTenant>,
    fetched: Instant,
}

/// What a tenant is looked up by; each kind is cached on its own.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum LookupKey {
    Org(ClerkOrgId),
    Id(TenantId),
    Slug(String),
}

impl LookupKey {
    fn of(key: TenantKey<'_>) -> Self {
        match key {
            TenantKey::ClerkOrg(org) => LookupKey::Org(org.clone()),
            TenantKey::Id(id) => LookupKey::Id(id),
            TenantKey::Slug(slug) => LookupKey::Slug(slug.to_owned()),
        }
    }

    fn as_key(&self) -> TenantKey<'_> {
        match self {
            LookupKey::Org(org) => TenantKey::ClerkOrg(org),
            LookupKey::Id(id) => TenantKey::Id(*id),
            LookupKey::Slug(slug) => TenantKey::Slug(slug),
        }
    }
}

/// The loop of every caller that answers once something holds of a tenant:
/// read, and if it does not hold yet, wait for the next invalidation, up
/// to a deadline. No polling.
pub struct ChangeWaiter {
    changes: tokio::sync::watch::Receiver<u64>,
    deadline: tokio::time::Instant,
}

impl ChangeWaiter {
    /// Marks the changes so far as seen: call it before each read, so that
    /// a change landing after the read still wakes [`ChangeWaiter::changed`].
    pub fn seen(&mut self) {
        self.changes.borrow_and_update();
    }

    /// Waits for a change since the last [`ChangeWaiter::seen`]; false when
    /// the deadline came first (or the cache is going away).
    pub async fn changed(&mut self) -> bool {
        matches!(
            tokio::time::timeout_at(self.deadline, self.changes.changed()).await,
            Ok(Ok(()))
        )
    }
}

/// How much of a tenant changed, as the registry announced it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Status, desired state, placement or password: what a connection
    /// depends on.
    Hard,
    /// Anything else (a rename, an attempt counted, a lease written).
    Soft,
}

/// Hit and miss counts since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    /// Organizations registered from session tokens
    /// ([`TenantCache::get_or_register`]).
    pub registered: u64,
}

type Fetched = Result<Option<Arc<ResolvedTenant>>, Arc<LookupError>>;

/// A fetch in flight, shared by every caller that missed meanwhile.
struct Load {
    result: tokio::sync::OnceCell<Fetched>,
    /// The generation when the fetch began.
    generation: u64,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<LookupKey, Entry>,
    loads: HashMap<LookupKey, Arc<Load>>,
    /// Bumped by every invalidation.
    generation: u64,
}

/// The default bound on cached tenants.
pub const DEFAULT_MAX_ENTRIES: usize = 10_000;

pub struct TenantCache {
    control: Pool,
    cipher: PasswordCipher,
    tls_defaults: TlsSettings,
    ttl: Duration,
    max_entries: usize,
    inner: Mutex<Inner>,
    hits: AtomicU64,
    misses: AtomicU64,
    /// Organizations registered from session tokens.
    registered: AtomicU64,
    /// Bumped by every invalidation: what waiters ([`TenantCache::wait_for`])
    /// wake on.
    changes: tokio::sync::watch::Sender<u64>,
}

impl TenantCache {
    /// `tls_defaults` are database.url's: they fill in what a tenant's db
    /// host leaves unset.
    pub fn new(
        control: Pool,
        cipher: PasswordCipher,
        tls_defaults: TlsSettings,
        ttl: Duration,
        max_entries: usize,
    ) -> Self {
        Self {
            control,
            cipher,
            tls_defaults: tls_defaults.without_client_cert(),
            ttl,
            max_entries: max_entries.max(1),
            inner: Mutex::new(Inner::default()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            registered: AtomicU64::new(0),
            changes: tokio::sync::watch::channel(0).0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The tenant of an organization, or None if the registry has none.
    pub async fn get(&self, org: &ClerkOrgId) -> Result<Option<Arc<ResolvedTenant>>, LookupError> {
        self.get_by(TenantKey::ClerkOrg(org)).await
    }

    /// The tenant by organization, id or slug, or None if the registry has
    /// none.
    pub async fn get_by(
        &self,
        key: TenantKey<'_>,
    ) -> Result<Option<Arc<ResolvedTenant>>, LookupError> {
        let key = LookupKey::of(key);
        self.get_or_fetch(&key, || self.fetch(key.as_key())).await
    }

    /// As [`TenantCache::get`], but an organization the registry confirms
    /// it has never seen is registered first, as `actor`, pending and
    /// desired active (`registry::directory::register_from_token`: the
    /// slug is display-only, a tombstone is never replaced). The read and
    /// the registration are one load: concurrent misses of the organization
    /// share it, so a burst of first requests writes once. `None` only when
    /// the registration wrote nothing and the row is still missing (a
    /// caller of [`TenantCache::get`] started the load this one joined).
    pub async fn get_or_register(
        &self,
        org: &ClerkOrgId,
        slug: Option<&str>,
        actor: &str,
    ) -> Result<Option<Arc<ResolvedTenant>>, LookupError> {
        let key = LookupKey::Org(org.clone());
        self.get_or_fetch(&key, || async {
            if let Some(found) = self.fetch(key.as_key()).await? {
                return Ok(Some(found));
            }
            self.register(org, slug, actor).await?;
            // Read back whatever is there now: the new row, or the one a
            // webhook wrote meanwhile (a tombstone stays one).
            self.fetch(key.as_key()).await
        })
        .await
    }

    async fn register(
        &self,
        org: &ClerkOrgId,
        slug: Option<&str>,
        actor: &str,
    ) -> Result<(), LookupError> {
        let mut client = self
            .control
            .get()
            .await
            .map_err(registry::RegistryError::from)?;
        let tx = client
            .transaction()
            .await
            .map_err(registry::RegistryError::from)?;
        let change = directory::register_from_token(&tx, org, slug, actor).await?;
        tx.commit().await.map_err(registry::RegistryError::from)?;
        if change == directory::Change::Applied {
            self.registered.fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                org_id = org.as_str(),
                "registered an organization from a verified session token"
            );
        }
        Ok(())
    }

    /// The cached tenant, or the result of the one fetch in flight for
    /// `key` (starting `fetch` if none is).
    async fn get_or_fetch<F, Fut>(
        &self,
        org: &LookupKey,
        fetch: F,
    ) -> Result<Option<Arc<ResolvedTenant>>, LookupError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<Arc<ResolvedTenant>>, LookupError>>,
    {
        let load = {
            let mut inner = self.lock();
            if let Some(e) = inner
                .entries
                .get(org)
                .filter(|e| e.fetched.elapsed() < self.ttl)
            {
                let hit = e.tenant.clone();
                drop(inner);
                self.hits.fetch_add(1, Ordering::Relaxed);
                return Ok(Some(hit));
            }
            let generation = inner.generation;
            inner
                .loads
                .entry(org.clone())
                .or_insert_with(|| {
                    Arc::new(Load {
                        result: tokio::sync::OnceCell::new(),
                        generation,
                    })
                })
                .clone()
        };
        let mut ran = false;
        let result = load
            .result
            .get_or_init(|| async {
                ran = true;
                self.misses.fetch_add(1, Ordering::Relaxed);
                fetch().await.map_err(Arc::new)
            })
            .await
            .clone();
        if ran {
            let mut inner = self.lock();
            if inner.loads.get(org).is_some_and(|l| Arc::ptr_eq(l, &load)) {
                inner.loads.remove(org);
            }
            // Unknown organizations are not cached (the next webhook may
            // register them), nor is what an invalidation overtook.
            if let Ok(Some(tenant)) = &result {
                if inner.generation == load.generation {
                    if inner.entries.len() >= self.max_entries && !inner.entries.contains_key(org) {
                        let oldest = inner
                            .entries
                            .iter()
                            .min_by_key(|(_, e)| e.fetched)
                            .map(|(k, _)| k.clone());
                        if let Some(oldest) = oldest {
                            inner.entries.remove(&oldest);
                        }
                    }
                    inner.entries.insert(
                        org.clone(),
                        Entry {
                            tenant: tenant.clone(),
                            fetched: Instant::now(),
                        },
                    );
                }
            }
        }
        result.map_err(LookupError::Shared)
    }

    /// Reads the tenant (and, when active, its credentials) from the registry.
    async fn fetch(&self, key: TenantKey<'_>) -> Result<Option<Arc<ResolvedTenant>>, LookupError> {
        let client = self
            .control
            .get()
            .await
            .map_err(registry::RegistryError::from)?;
        let Some(t) = tenants::get(&client, key).await? else {
            return Ok(None);
        };
        let (credentials, credentials_error) = if t.status == TenantStatus::Active {
            match tenants::credentials(&self.cipher, &t, &self.tls_defaults) {
                Ok(c) => (Some(c), None),
                Err(e) => (None, Some(Arc::new(LookupError::from(e)))),
            }
        } else {
            (None, None)
        };
        Ok(Some(Arc::new(ResolvedTenant {
            record: t,
            credentials,
            credentials_error,
            rendered: Default::default(),
        })))
    }

    /// Forgets a tenant (its status or placement changed).
    pub fn invalidate(&self, tenant: TenantId) {
        let mut inner = self.lock();
        inner.generation += 1;
        inner.entries.retain(|_, e| e.tenant.id != tenant);
        drop(inner);
        self.changes.send_modify(|n| *n += 1);
    }

    /// Forgets everything (after missing notifications).
    pub fn clear(&self) {
        let mut inner = self.lock();
        inner.generation += 1;
        inner.entries.clear();
        drop(inner);
        self.changes.send_modify(|n| *n += 1);
    }

    /// Waits for this cache's invalidations (every change the registry
    /// announces) for at most `timeout`.
    pub fn waiter(&self, timeout: Duration) -> ChangeWaiter {
        ChangeWaiter {
            changes: self.changes.subscribe(),
            deadline: tokio::time::Instant::now() + timeout,
        }
    }

    /// The tenant under `key` once `done` holds of it (`None`: not
    /// registered), or as it is when `timeout` is up. Woken by the
    /// registry's announcements, not by polling, so it needs
    /// [`TenantCache::listen_for_changes`] running.
    pub async fn wait_for(
        &self,
        key: TenantKey<'_>,
        timeout: Duration,
        done: impl Fn(Option<&ResolvedTenant>) -> bool,
    ) -> Result<Option<Arc<ResolvedTenant>>, LookupError> {
        let mut waiter = self.waiter(timeout);
        loop {
            waiter.seen();
            let current = self.get_by(key.clone()).await?;
            if done(current.as_deref()) || !waiter.changed().await {
                return Ok(current);
            }
        }
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            registered: self.registered.load(Ordering::Relaxed),
        }
    }

    /// Follows the registry's announcements on the control database until
    /// the returned task is aborted: each changed tenant is forgotten, and
    /// `on_change` is told of it (with whether its status, desired state,
    /// placement or password changed); (re)subscribing forgets everything,
    /// since announcements may have been missed meanwhile.
    pub fn listen_for_changes(
        self: &Arc<Self>,
        control: ConnectOptions,
        on_change: impl Fn(TenantId, Change) + Send + Sync + 'static,
    ) -> JoinHandle<()> {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            // Never told to stop: the task ends when it is aborted.
            let (_keep, shutdown) = tokio::sync::watch::channel(false);
            let on_signal = |signal: Signal<'_>| match signal {
                Signal::Listening => this.clear(),
                Signal::Notification { channel, payload } => match payload.parse::<uuid::Uuid>() {
                    Ok(id) => {
                        let id = TenantId::from(id);
                        this.invalidate(id);
                        on_change(
                            id,
                            if channel == CHANGED_CHANNEL {
                                Change::Hard
                            } else {
                                Change::Soft
                            },
                        );
                    }
                    Err(_) => this.clear(),
                },
            };
            listen::listen(
                control,
                &[CHANGED_CHANNEL, TOUCHED_CHANNEL],
                on_signal,
                shutdown,
            )
            .await;
        })
    }

    /// How many tenants are cached.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use chrono::Utc;
    use model::DesiredState;
    use registry::tenants::Tenant;

    use super::*;

    fn cache(max_entries: usize) -> TenantCache {
        // Never connects: every fetch here is the test's own.
        let target = registry::pool::parse_url("postgres://nobody@127.0.0.1:1/none").unwrap();
        let pool = registry::pool::build_pool(target.clone(), &Default::default()).unwrap();
        let cipher =
            PasswordCipher::from_base64("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=").unwrap();
        TenantCache::new(
            pool,
            cipher,
            target.tls,
            Duration::from_secs(60),
            max_entries,
        )
    }

    fn org(n: usize) -> ClerkOrgId {
        ClerkOrgId::parse(format!("org_{n}")).unwrap()
    }

    fn tenant(org: &ClerkOrgId) -> Arc<ResolvedTenant> {
        let now = Utc::now();
        Arc::new(ResolvedTenant {
            record: Tenant {
                id: TenantId::new(),
                clerk_org_id: org.clone(),
                slug: None,
                name: "t".into(),
                status: TenantStatus::Active,
                desired_state: DesiredState::Active,
                plan: "default".into(),
                placement: None,
                template_version: Some(1),
                attempts: 0,
                next_attempt_at: now,
                last_error: None,
                source_updated_at: now,
                created_at: now,
                updated_at: now,
                deleted_at: None,
                purge_after: None,
                metadata: serde_json::json!({}),
                privilege_model: 1,
                limits_applied: None,
                db_password_enc: None,
            },
            credentials: None,
            credentials_error: None,
            rendered: Default::default(),
        })
    }

    #[tokio::test]
    async fn concurrent_misses_of_one_organization_fetch_once() {
        let cache = Arc::new(cache(10));
        let fetches = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(tokio::sync::Notify::new());
        let o = org(1);
        let waiters: Vec<_> = (0..500)
            .map(|_| {
                let (cache, fetches, gate, o) =
                    (cache.clone(), fetches.clone(), gate.clone(), o.clone());
                tokio::spawn(async move {
                    cache
                        .get_or_fetch(&LookupKey::Org(o.clone()), || async {
                            fetches.fetch_add(1, Ordering::SeqCst);
                            gate.notified().await;
                            Ok(Some(tenant(&o)))
                        })
                        .await
                })
            })
            .collect();
        // Let every task reach the cache, then let the one fetch finish.
        while Arc::strong_count(&gate) > 1 && fetches.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        gate.notify_waiters();
        let mut ids = std::collections::HashSet::new();
        for w in waiters {
            ids.insert(w.await.unwrap().unwrap().unwrap().id);
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        assert_eq!(ids.len(), 1, "every caller got the one fetched tenant");
        assert_eq!(cache.stats().misses, 1);
    }

    #[tokio::test]
    async fn a_fetch_overtaken_by_an_invalidation_is_not_cached() {
        let cache = cache(10);
        let o = org(1);
        let (started_tx, started) = tokio::sync::oneshot::channel();
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let stale = tenant(&o);
        let key = LookupKey::Org(o.clone());
        let fetch = cache.get_or_fetch(&key, || async {
            let _ = started_tx.send(());
            let _ = released.await;
            Ok(Some(stale.clone()))
        });
        let race = async {
            started.await.unwrap();
            // The NOTIFY of a suspension arrives while the read is in flight.
            cache.invalidate(stale.id);
            release.send(()).unwrap();
        };
        let (got, ()) = tokio::join!(fetch, race);
        assert!(got.unwrap().is_some(), "the caller still gets its answer");
        assert!(cache.is_empty(), "but it is not cached");
        let refetched = AtomicUsize::new(0);
        cache
            .get_or_fetch(&LookupKey::Org(o.clone()), || async {
                refetched.fetch_add(1, Ordering::SeqCst);
                Ok(Some(tenant(&o)))
            })
            .await
            .unwrap();
        assert_eq!(
            refetched.load(Ordering::SeqCst),
            1,
            "the next look-up reads again"
        );
    }

    #[tokio::test]
    async fn the_cache_holds_at_most_its_bound_dropping_the_oldest() {
        let cache = cache(3);
        for n in 0..5 {
            let o = org(n);
            cache
                .get_or_fetch(&LookupKey::Org(o.clone()), || async {
                    Ok(Some(tenant(&o)))
                })
                .await
                .unwrap();
        }
        assert_eq!(cache.len(), 3);
        let fetched_again = AtomicUsize::new(0);
        for n in [4, 3, 2, 0] {
            let o = org(n);
            cache
                .get_or_fetch(&LookupKey::Org(o.clone()), || async {
                    fetched_again.fetch_add(1, Ordering::SeqCst);
                    Ok(Some(tenant(&o)))
                })
                .await
                .unwrap();
        }
        // 4, 3 and 2 were cached; 0 (among the oldest) had to be read again.
        assert_eq!(fetched_again.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_failed_fetch_is_shared_then_retried() {
        let cache = cache(10);
        let o = org(1);
        let err = cache
            .get_or_fetch(&LookupKey::Org(o.clone()), || async {
                Err(LookupError::Credentials(
                    tenants::CredentialsError::NotPlaced(TenantId::new()).into(),
                ))
            })
            .await
            .unwrap_err();
        assert!(matches!(err, LookupError::Shared(_)), "{err:?}");
        let got = cache
            .get_or_fetch(&LookupKey::Org(o.clone()), || async {
                Ok(Some(tenant(&o)))
            })
            .await
            .unwrap();
        assert!(got.is_some(), "the failure was not cached");
    }
}
