//! Organization -> tenant look-ups, cached. Entries are dropped when the
//! registry announces a change to their tenant (NOTIFY), and expire after a
//! TTL as a backstop for missed notifications.

use std::collections::HashMap;
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

pub struct TenantCache {
    control: Pool,
    cipher: PasswordCipher,
    tls_defaults: TlsSettings,
    ttl: Duration,
    entries: Mutex<HashMap<ClerkOrgId, Entry>>,
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
    ) -> Self {
        Self {
            control,
            cipher,
            tls_defaults: tls_defaults.without_client_cert(),
            ttl,
            entries: Mutex::new(HashMap::new()),
            stats: Mutex::new(CacheStats::default()),
        }
    }

    /// The tenant of an organization, or None if the registry has none.
    pub async fn get(&self, org: &ClerkOrgId) -> Result<Option<Arc<ResolvedTenant>>, LookupError> {
        if let Some(hit) = self.cached(org) {
            self.stats.lock().expect("stats lock").hits += 1;
            return Ok(Some(hit));
        }
        self.stats.lock().expect("stats lock").misses += 1;
        let client = self
            .control
            .get()
            .await
            .map_err(registry::RegistryError::from)?;
        let Some(t) = tenants::get(&client, TenantKey::ClerkOrg(org)).await? else {
            // Unknown organizations are not cached: the tenant may be
            // registered by the next webhook.
            return Ok(None);
        };
        let credentials = if t.status == TenantStatus::Active {
            Some(tenants::credentials(&self.cipher, &t, &self.tls_defaults)?)
        } else {
            None
        };
        let resolved = Arc::new(ResolvedTenant {
            record: t,
            credentials,
        });
        self.entries.lock().expect("cache lock").insert(
            org.clone(),
            Entry {
                tenant: resolved.clone(),
                fetched: Instant::now(),
            },
        );
        Ok(Some(resolved))
    }

    fn cached(&self, org: &ClerkOrgId) -> Option<Arc<ResolvedTenant>> {
        let entries = self.entries.lock().expect("cache lock");
        entries
            .get(org)
            .filter(|e| e.fetched.elapsed() < self.ttl)
            .map(|e| e.tenant.clone())
    }

    /// Forgets a tenant (its status or placement changed).
    pub fn invalidate(&self, tenant: TenantId) {
        self.entries
            .lock()
            .expect("cache lock")
            .retain(|_, e| e.tenant.id != tenant);
    }

    /// Forgets everything (after missing notifications).
    pub fn clear(&self) {
        self.entries.lock().expect("cache lock").clear();
    }

    pub fn stats(&self) -> CacheStats {
        *self.stats.lock().expect("stats lock")
    }
}
