//! `Resolver::resolve(token)`: verify a Clerk session token, find the tenant
//! of its organization, and hand out that tenant's connection pool.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use http::StatusCode;
use model::{TenantId, TenantStatus};
use registry::crypto::PasswordCipher;
use registry::tls::{ConnectOptions, TlsSettings};
use tokio::task::JoinHandle;

use crate::cache::{CacheStats, Change, LookupError, ResolvedTenant, TenantCache};
use crate::clock::Clock;
use crate::pools::{PoolError, PoolLimits, PoolManager, PoolStats, PooledConn};
use crate::token::{TokenConfigError, TokenError, TokenVerifier, VerifiedSession, VerifierConfig};
use crate::verdicts::VerdictStats;

/// Everything the resolver needs to know.
#[derive(Debug, Clone)]
pub struct ResolverConfig {
    pub token: VerifierConfig,
    pub pools: PoolLimits,
    /// Backstop expiry of cached tenants (NOTIFY invalidates them first).
    pub cache_ttl: Duration,
    /// Most tenants cached at once.
    pub cache_max_entries: usize,
    /// TLS to tenant databases where their db host sets none of its own:
    /// the control database URL's (`registry::pool::parse_url(url)?.tls`).
    /// Its client certificate, if any, is not used for tenant roles.
    pub tls: TlsSettings,
    /// Register an organization that a verified token names but the
    /// registry has never seen (pending, desired active), so that a late
    /// or lost `organization.created` does not hold up provisioning; a
    /// deleted organization stays deleted. Off: such a token is refused as
    /// [`ResolveError::UnknownTenant`] and nothing is written. tenant-plane's
    /// server turns it on by default (`resolver.register_unknown_orgs`);
    /// it needs a control-database role that may write `tenant_registry`
    /// and `tenant_events`.
    pub register_unknown_orgs: bool,
}

/// Who the audit trail says registered a tenant from a session token.
pub const REGISTRATION_ACTOR: &str = "resolver";

/// Why a token did not resolve to a usable tenant. Each has its own HTTP
/// status and stable code, used by the extractor and the internal API alike.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("the session has no active organization; select an organization first")]
    NoOrganization,
    #[error("the token's tenant claim does not match its organization")]
    TenantClaimMismatch,
    #[error("no tenant exists for this organization")]
    UnknownTenant,
    #[error("the tenant is suspended")]
    Suspended,
    #[error("the tenant has been deleted")]
    Deleted,
    #[error("the tenant's database is being provisioned; retry shortly")]
    Provisioning,
    #[error("the tenant's database could not be provisioned; an operator has been alerted")]
    Failed,
    #[error(transparent)]
    Pool(#[from] PoolError),
    #[error("tenant directory unavailable: {0}")]
    Lookup(#[from] LookupError),
}

impl ResolveError {
    pub fn status(&self) -> StatusCode {
        match self {
            // Clerk's keys could not be fetched: not the caller's fault.
            ResolveError::Token(TokenError::KeysUnavailable { .. }) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ResolveError::Token(_) => StatusCode::UNAUTHORIZED,
            ResolveError::NoOrganization | ResolveError::TenantClaimMismatch => {
                StatusCode::FORBIDDEN
            }
            ResolveError::Suspended => StatusCode::FORBIDDEN,
            ResolveError::UnknownTenant => StatusCode::NOT_FOUND,
            ResolveError::Deleted => StatusCode::GONE,
            ResolveError::Failed => StatusCode::CONFLICT,
            ResolveError::Provisioning | ResolveError::Pool(_) | ResolveError::Lookup(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ResolveError::Token(e) => e.code(),
            ResolveError::NoOrganization => "no_organization",
            ResolveError::TenantClaimMismatch => "tenant_claim_mismatch",
            ResolveError::UnknownTenant => "tenant_unknown",
            ResolveError::Suspended => "tenant_suspended",
            ResolveError::Deleted => "tenant_deleted",
            ResolveError::Provisioning => "tenant_provisioning",
            ResolveError::Failed => "tenant_failed",
            ResolveError::Pool(PoolError::Exhausted(_)) => "pool_exhausted",
            ResolveError::Pool(_) => "tenant_database_unavailable",
            ResolveError::Lookup(_) => "unavailable",
        }
    }

    /// Seconds after which a retry may succeed, for `Retry-After`.
    pub fn retry_after(&self) -> Option<u32> {
        match self {
            ResolveError::Provisioning => Some(2),
            // Whole seconds, rounded up: the next fetch of the keys is due then.
            ResolveError::Token(TokenError::KeysUnavailable { retry_after, .. }) => Some(
                u32::try_from(retry_after.as_millis().div_ceil(1000))
                    .unwrap_or(u32::MAX)
                    .max(1),
            ),
            ResolveError::Pool(_) | ResolveError::Lookup(_) => Some(1),
            _ => None,
        }
    }
}

/// A resolved request: who, which tenant, and how to reach its database.
#[derive(Clone)]
pub struct TenantContext {
    pub tenant: Arc<ResolvedTenant>,
    /// Shared with the verdict cache: a hit clones no claim.
    pub session: Arc<VerifiedSession>,
    pub pool: TenantPool,
}

impl TenantContext {
    /// The organization role of the session (`org:admin`, ...).
    pub fn org_role(&self) -> Option<&str> {
        self.session.org.as_ref().and_then(|o| o.role.as_deref())
    }
}

/// A handle on one tenant's pool.
#[derive(Clone)]
pub struct TenantPool {
    manager: PoolManager,
    tenant: Arc<ResolvedTenant>,
}

impl TenantPool {
    /// Checks out a connection to the tenant's database as the tenant's role.
    pub async fn get(&self) -> Result<PooledConn, PoolError> {
        let credentials = self.tenant.credentials().ok_or(PoolError::Closed)?;
        self.manager.get(self.tenant.id, credentials).await
    }
}

pub struct Resolver {
    verifier: TokenVerifier,
    cache: Arc<TenantCache>,
    pools: PoolManager,
    register_unknown_orgs: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ResolverSetupError {
    #[error(transparent)]
    Token(#[from] TokenConfigError),
}

impl Resolver {
    /// `control` reaches the control-plane database (read-only use, unless
    /// `config.register_unknown_orgs`); `cipher` opens the tenant role passwords stored there.
    pub fn new(
        config: ResolverConfig,
        control: Pool,
        cipher: PasswordCipher,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ResolverSetupError> {
        let cache = Arc::new(TenantCache::new(
            control,
            cipher,
            config.tls.clone(),
            config.cache_ttl,
            config.cache_max_entries,
        ));
        Self::with_cache(config, cache, clock)
    }

    /// As [`Resolver::new`], sharing a tenant cache with others (the
    /// internal API's look-ups use the same one). `config`'s cache and TLS
    /// settings are the cache's own business then.
    pub fn with_cache(
        config: ResolverConfig,
        cache: Arc<TenantCache>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ResolverSetupError> {
        Ok(Self {
            verifier: TokenVerifier::new(config.token, clock)?,
            cache,
            pools: PoolManager::new(config.pools),
            register_unknown_orgs: config.register_unknown_orgs,
        })
    }

    /// The tenant cache this resolver reads through.
    pub fn tenant_cache(&self) -> &Arc<TenantCache> {
        &self.cache
    }

    /// Verifies `token` and finds its active tenant. No connection is opened
    /// until the caller asks the returned pool for one.
    #[tracing::instrument(name = "resolve", skip_all, fields(org_id, tenant_id))]
    pub async fn resolve(&self, token: &str) -> Result<TenantContext, ResolveError> {
        let session = self.verifier.verify(token).await?;
        let org = session.org.as_ref().ok_or(ResolveError::NoOrganization)?;
        let span = tracing::Span::current();
        span.record("org_id", org.id.as_str());
        // Only a verified token gets here, so what is registered is bounded
        // by the organizations of the configured Clerk instance.
        let tenant = if self.register_unknown_orgs {
            self.cache
                .get_or_register(&org.id, org.slug.as_deref(), REGISTRATION_ACTOR)
                .await?
        } else {
            self.cache.get(&org.id).await?
        }
        .ok_or(ResolveError::UnknownTenant)?;
        span.record("tenant_id", tracing::field::display(tenant.id));
        // A tenant id carried by a session-token template short-cuts nothing
        // on trust: it must name the organization's own tenant.
        if let Some(claimed) = &session.tenant_claim {
            if claimed != &tenant.id.to_string() {
                return Err(ResolveError::TenantClaimMismatch);
            }
        }
        match tenant.status {
            TenantStatus::Active => {
                if let Some(e) = tenant.credentials_error() {
                    return Err(ResolveError::Lookup(LookupError::Shared(e.clone())));
                }
            }
            TenantStatus::Suspended | TenantStatus::Suspending => {
                return Err(ResolveError::Suspended)
            }
            TenantStatus::Deleted | TenantStatus::Deleting => return Err(ResolveError::Deleted),
            TenantStatus::Failed => return Err(ResolveError::Failed),
            TenantStatus::Pending | TenantStatus::Provisioning => {
                return Err(ResolveError::Provisioning)
            }
        }
        Ok(TenantContext {
            pool: TenantPool {
                manager: self.pools.clone(),
                tenant: tenant.clone(),
            },
            tenant,
            session,
        })
    }

    /// As [`Resolver::resolve`], but while the tenant is being provisioned
    /// (or not registered yet: the webhook may come after the first
    /// session), waits up to `wait` for it to become usable, woken by the
    /// registry's announcements. An application's first request after
    /// sign-up then waits instead of bouncing with a 503.
    pub async fn resolve_waiting(
        &self,
        token: &str,
        wait: Duration,
    ) -> Result<TenantContext, ResolveError> {
        let mut waiter = self.cache.waiter(wait);
        loop {
            waiter.seen();
            match self.resolve(token).await {
                Err(ResolveError::Provisioning | ResolveError::UnknownTenant) => {
                    if !waiter.changed().await {
                        // Time is up: the answer as it is now.
                        return self.resolve(token).await;
                    }
                }
                other => return other,
            }
        }
    }

    /// Drops what is known of a tenant and closes its pool: called when the
    /// registry announces a change (suspended, deleted, moved...).
    pub fn invalidate(&self, tenant: TenantId) {
        self.cache.invalidate(tenant);
        self.pools.close(tenant);
    }

    pub fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }

    /// Hits and misses of the verified-token cache.
    pub fn token_cache_stats(&self) -> VerdictStats {
        self.verifier.verdict_stats()
    }

    pub fn pool_stats(&self) -> PoolStats {
        self.pools.stats()
    }

    pub fn has_pool(&self, tenant: TenantId) -> bool {
        self.pools.has_pool(tenant)
    }

    /// Listens for tenant changes on the control database and invalidates
    /// at once: a changed tenant is forgotten, and its pool closed when what
    /// a connection depends on changed; (re)subscribing clears the cache,
    /// since notifications may have been missed meanwhile. Also sweeps idle
    /// pools. Runs until the returned task is aborted.
    pub fn listen_for_changes(self: &Arc<Self>, control: ConnectOptions) -> JoinHandle<()> {
        let pools = self.pools.clone();
        let listener = self
            .cache
            .listen_for_changes(control, move |tenant, change| {
                if change == Change::Hard {
                    pools.close(tenant);
                }
            });
        let pools = self.pools.clone();
        tokio::spawn(async move {
            let mut sweep = tokio::time::interval(Duration::from_secs(30));
            // Ends (and takes the listener with it) when aborted.
            let _listener = AbortOnDrop(listener);
            loop {
                sweep.tick().await;
                pools.sweep();
            }
        })
    }
}

/// Aborts a task when dropped, so that aborting one task ends its helper.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
