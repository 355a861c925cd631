//! Organization -> tenant look-ups, cached. Entries are dropped when the
//! registry announces a change to their tenant (NOTIFY), and expire after a
//! TTL as a backstop for missed notifications.
//!
//! One fetch per organization at a time: concurrent misses wait for the one
//! in flight. Every invalidation bumps a generation, and a fetch that began
//! before it answers its callers but is not cached, so a read that raced a
//! suspension's NOTIFY cannot put the tenant back as active. The cache
//! holds at most `max_entries`; past that the oldest entry goes.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use model::{ClerkOrgId, TenantId, TenantStatus};
use registry::crypto::PasswordCipher;
use registry::tenants::{self, Tenant, TenantCredentials, TenantKey};
use registry::tls::TlsSettings;
use serde::Serialize;

/// What the resolver knows of a tenant: its registry row as it was read, and
/// its connection credentials (active tenants only).
#[derive(Clone, Serialize)]
pub struct ResolvedTenant {
    #[serde(flatten)]
    pub record: Tenant,
    #[serde(skip)]
    pub(crate) credentials: Option<TenantCredentials>,
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

/// Hit and miss counts since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
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
    entries: HashMap<ClerkOrgId, Entry>,
    loads: HashMap<ClerkOrgId, Arc<Load>>,
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
    stats: Mutex<CacheStats>,
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
            stats: Mutex::new(CacheStats::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The tenant of an organization, or None if the registry has none.
    pub async fn get(&self, org: &ClerkOrgId) -> Result<Option<Arc<ResolvedTenant>>, LookupError> {
        self.get_or_fetch(org, || self.fetch(org)).await
    }

    /// The cached tenant, or the result of the one fetch in flight for
    /// `org` (starting `fetch` if none is).
    async fn get_or_fetch<F, Fut>(
        &self,
        org: &ClerkOrgId,
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
                self.stats.lock().expect("stats lock").hits += 1;
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
                self.stats.lock().expect("stats lock").misses += 1;
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
    async fn fetch(&self, org: &ClerkOrgId) -> Result<Option<Arc<ResolvedTenant>>, LookupError> {
        let client = self
            .control
            .get()
            .await
            .map_err(registry::RegistryError::from)?;
        let Some(t) = tenants::get(&client, TenantKey::ClerkOrg(org)).await? else {
            return Ok(None);
        };
        let credentials = if t.status == TenantStatus::Active {
            Some(tenants::credentials(&self.cipher, &t, &self.tls_defaults)?)
        } else {
            None
        };
        Ok(Some(Arc::new(ResolvedTenant {
            record: t,
            credentials,
        })))
    }

    /// Forgets a tenant (its status or placement changed).
    pub fn invalidate(&self, tenant: TenantId) {
        let mut inner = self.lock();
        inner.generation += 1;
        inner.entries.retain(|_, e| e.tenant.id != tenant);
    }

    /// Forgets everything (after missing notifications).
    pub fn clear(&self) {
        let mut inner = self.lock();
        inner.generation += 1;
        inner.entries.clear();
    }

    pub fn stats(&self) -> CacheStats {
        *self.stats.lock().expect("stats lock")
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
                        .get_or_fetch(&o, || async {
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
        let fetch = cache.get_or_fetch(&o, || async {
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
            .get_or_fetch(&o, || async {
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
                .get_or_fetch(&o, || async { Ok(Some(tenant(&o))) })
                .await
                .unwrap();
        }
        assert_eq!(cache.len(), 3);
        let fetched_again = AtomicUsize::new(0);
        for n in [4, 3, 2, 0] {
            let o = org(n);
            cache
                .get_or_fetch(&o, || async {
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
            .get_or_fetch(&o, || async {
                Err(LookupError::Credentials(
                    tenants::CredentialsError::NotPlaced(TenantId::new()).into(),
                ))
            })
            .await
            .unwrap_err();
        assert!(matches!(err, LookupError::Shared(_)), "{err:?}");
        let got = cache
            .get_or_fetch(&o, || async { Ok(Some(tenant(&o))) })
            .await
            .unwrap();
        assert!(got.is_some(), "the failure was not cached");
    }
}
