//! Connection pools to tenant databases, one per tenant, opened with the
//! tenant role's own credentials, under a global budget of open connections.
//!
//! The budget is enforced where connections are born: every connection holds
//! a permit of one shared semaphore from before it connects until it is
//! closed. When the budget is spent, idle connections of the least recently
//! used pools are closed to make room; if none is idle, the request waits
//! (up to the acquire timeout) for one to be returned.

use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use deadpool::managed::{self, Metrics, RecycleResult, Timeouts};
use deadpool_postgres::{ClientWrapper, ManagerConfig, RecyclingMethod};
use model::TenantId;
use registry::tenants::TenantCredentials;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Limits of the tenant pools.
#[derive(Debug, Clone)]
pub struct PoolLimits {
    /// Connections one tenant may hold open.
    pub per_tenant: usize,
    /// Connections all tenants together may hold open.
    pub budget: usize,
    /// How long a checkout may wait for a connection.
    pub acquire_timeout: Duration,
    /// Pools unused for this long are closed by [`PoolManager::sweep`].
    pub idle_timeout: Duration,
}

impl Default for PoolLimits {
    fn default() -> Self {
        Self {
            per_tenant: 5,
            budget: 50,
            acquire_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(300),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("all {0} tenant database connections are in use; retry shortly")]
    Exhausted(usize),
    #[error("cannot connect to the tenant database: {}", registry::describe(.0))]
    Connect(tokio_postgres::Error),
    /// The host's TLS files (sslrootcert) could not be used.
    #[error("cannot connect to the tenant database: {0}")]
    Tls(#[from] registry::tls::TlsError),
    #[error("the tenant's pool was closed (suspended or deleted)")]
    Closed,
}

/// A connection that holds one permit of the global budget while it lives.
pub struct BudgetedClient {
    client: ClientWrapper,
    _permit: OwnedSemaphorePermit,
}

impl Deref for BudgetedClient {
    type Target = ClientWrapper;
    fn deref(&self) -> &ClientWrapper {
        &self.client
    }
}

impl DerefMut for BudgetedClient {
    fn deref_mut(&mut self) -> &mut ClientWrapper {
        &mut self.client
    }
}

/// Creates tenant connections, taking a budget permit first.
struct BudgetedManager {
    inner: deadpool_postgres::Manager,
    tenant: TenantId,
    shared: Weak<Shared>,
}

impl managed::Manager for BudgetedManager {
    type Type = BudgetedClient;
    type Error = PoolError;

    async fn create(&self) -> Result<BudgetedClient, PoolError> {
        let shared = self.shared.upgrade().ok_or(PoolError::Closed)?;
        let permit = shared.permit_for(self.tenant).await?;
        let client = managed::Manager::create(&self.inner)
            .await
            .map_err(PoolError::Connect)?;
        Ok(BudgetedClient {
            client,
            _permit: permit,
        })
    }

    async fn recycle(
        &self,
        obj: &mut BudgetedClient,
        metrics: &Metrics,
    ) -> RecycleResult<PoolError> {
        managed::Manager::recycle(&self.inner, &mut obj.client, metrics)
            .await
            .map_err(|e| match e {
                managed::RecycleError::Message(m) => managed::RecycleError::Message(m),
                managed::RecycleError::Backend(b) => {
                    managed::RecycleError::Backend(PoolError::Connect(b))
                }
            })
    }

    fn detach(&self, obj: &mut BudgetedClient) {
        managed::Manager::detach(&self.inner, &mut obj.client);
    }
}

type BudgetedPool = managed::Pool<BudgetedManager>;

struct Entry {
    pool: BudgetedPool,
    last_used: Instant,
}

struct Shared {
    limits: PoolLimits,
    budget: Arc<Semaphore>,
    pools: Mutex<HashMap<TenantId, Entry>>,
}

impl Shared {
    /// A budget permit, closing other tenants' idle connections (least
    /// recently used pool first) when the budget is spent.
    async fn permit_for(&self, tenant: TenantId) -> Result<OwnedSemaphorePermit, PoolError> {
        let deadline = Instant::now() + self.limits.acquire_timeout;
        loop {
            if let Ok(permit) = self.budget.clone().try_acquire_owned() {
                return Ok(permit);
            }
            if self.evict_idle_connection(tenant) {
                continue;
            }
            // Nothing idle to close: wait for a connection to be closed.
            let remaining = deadline.saturating_duration_since(Instant::now());
            let wait = remaining.min(Duration::from_millis(50));
            if remaining.is_zero() {
                return Err(PoolError::Exhausted(self.limits.budget));
            }
            if let Ok(Ok(permit)) =
                tokio::time::timeout(wait, self.budget.clone().acquire_owned()).await
            {
                return Ok(permit);
            }
        }
    }

    /// Closes the idle connections of the least recently used pool (other
    /// than `except`) that has any. Returns whether something was closed.
    fn evict_idle_connection(&self, except: TenantId) -> bool {
        let pools = self.pools.lock().expect("pool map lock");
        let victim = pools
            .iter()
            .filter(|(id, e)| **id != except && e.pool.status().available > 0)
            .min_by_key(|(_, e)| e.last_used)
            .map(|(_, e)| e.pool.clone());
        drop(pools);
        match victim {
            // Dropping the removed connections returns their permits.
            Some(pool) => !pool.retain(|_, _| false).removed.is_empty(),
            None => false,
        }
    }
}

/// A pooled connection to a tenant's database, returned to its pool on drop.
pub struct PooledConn {
    obj: managed::Object<BudgetedManager>,
}

impl Deref for PooledConn {
    type Target = tokio_postgres::Client;
    fn deref(&self) -> &tokio_postgres::Client {
        &self.obj.client
    }
}

impl DerefMut for PooledConn {
    fn deref_mut(&mut self) -> &mut tokio_postgres::Client {
        // A checked-out connection is ours alone; transactions need &mut.
        &mut self.obj.client
    }
}

/// Point-in-time figures of the pools, for metrics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    pub pools: usize,
    pub open: usize,
    pub in_use: usize,
    pub budget: usize,
}

/// All tenant pools of a process.
#[derive(Clone)]
pub struct PoolManager {
    shared: Arc<Shared>,
}

impl PoolManager {
    pub fn new(limits: PoolLimits) -> Self {
        Self {
            shared: Arc::new(Shared {
                budget: Arc::new(Semaphore::new(limits.budget)),
                limits,
                pools: Mutex::new(HashMap::new()),
            }),
        }
    }

    pub fn limits(&self) -> &PoolLimits {
        &self.shared.limits
    }

    /// Checks out a connection to `tenant`'s database, creating its pool
    /// from `credentials` on first use.
    pub async fn get(
        &self,
        tenant: TenantId,
        credentials: &TenantCredentials,
    ) -> Result<PooledConn, PoolError> {
        let pool = self.pool_for(tenant, credentials)?;
        let timeouts = Timeouts {
            wait: Some(self.shared.limits.acquire_timeout),
            create: Some(self.shared.limits.acquire_timeout),
            recycle: Some(self.shared.limits.acquire_timeout),
        };
        match pool.timeout_get(&timeouts).await {
            Ok(obj) => Ok(PooledConn { obj }),
            Err(managed::PoolError::Backend(e)) => Err(e),
            Err(managed::PoolError::Closed) => Err(PoolError::Closed),
            Err(_) => Err(PoolError::Exhausted(self.shared.limits.budget)),
        }
    }

    fn pool_for(
        &self,
        tenant: TenantId,
        credentials: &TenantCredentials,
    ) -> Result<BudgetedPool, PoolError> {
        let mut pools = self.shared.pools.lock().expect("pool map lock");
        if let Some(entry) = pools.get_mut(&tenant) {
            entry.last_used = Instant::now();
            return Ok(entry.pool.clone());
        }
        let mut target = credentials.connect_options();
        target
            .config
            .application_name("tenant-plane-resolver")
            .connect_timeout(self.shared.limits.acquire_timeout);
        let manager = BudgetedManager {
            inner: target.manager(ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            })?,
            tenant,
            shared: Arc::downgrade(&self.shared),
        };
        let pool = managed::Pool::builder(manager)
            .max_size(self.shared.limits.per_tenant)
            .runtime(deadpool::Runtime::Tokio1)
            .build()
            .map_err(|_| PoolError::Closed)?;
        pools.insert(
            tenant,
            Entry {
                pool: pool.clone(),
                last_used: Instant::now(),
            },
        );
        Ok(pool)
    }

    /// Closes a tenant's pool at once (suspended or deleted tenant): idle
    /// connections now, checked-out ones when they are returned.
    pub fn close(&self, tenant: TenantId) {
        let entry = self
            .shared
            .pools
            .lock()
            .expect("pool map lock")
            .remove(&tenant);
        if let Some(entry) = entry {
            entry.pool.close();
        }
    }

    /// Whether `tenant` has a pool (open or not yet closed).
    pub fn has_pool(&self, tenant: TenantId) -> bool {
        self.shared
            .pools
            .lock()
            .expect("pool map lock")
            .contains_key(&tenant)
    }

    /// Closes pools unused for longer than the idle timeout.
    pub fn sweep(&self) -> usize {
        let idle_timeout = self.shared.limits.idle_timeout;
        let mut pools = self.shared.pools.lock().expect("pool map lock");
        let stale: Vec<TenantId> = pools
            .iter()
            .filter(|(_, e)| {
                e.last_used.elapsed() > idle_timeout
                    && e.pool.status().available == e.pool.status().size
            })
            .map(|(id, _)| *id)
            .collect();
        for id in &stale {
            if let Some(e) = pools.remove(id) {
                e.pool.close();
            }
        }
        stale.len()
    }

    pub fn stats(&self) -> PoolStats {
        let pools = self.shared.pools.lock().expect("pool map lock");
        let (open, in_use) = pools.values().fold((0, 0), |(open, used), e| {
            let s = e.pool.status();
            (open + s.size, used + (s.size - s.available))
        });
        PoolStats {
            pools: pools.len(),
            open,
            in_use,
            budget: self.shared.limits.budget,
        }
    }
}
