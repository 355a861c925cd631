//! The warm pool (`tenants.warm_pool` spares per accepting host): databases
//! cloned ahead from the host's current template, with a NOLOGIN owner role
//! and a NOLOGIN login role with a password of its own (sealed in the
//! spare's row, bound to the spare; a claim seals it for the tenant),
//! privileges already set,
//! never connected to once built. A new tenant's claim renames one to the
//! tenant's names (`host_ops::take_spare`), so provisioning costs a
//! transaction instead of a clone.
//!
//! The refill runs beside the reconciler's workers: first it retires what
//! must go (spares behind the template, on draining hosts, beyond the
//! target, and builds or retirements whose worker died), then, while no
//! tenant is waiting for a database (their clones come first), it builds
//! spares until every host has its target. The ledger is
//! `registry::spares`.

use std::time::Duration;

use model::TenantId;
use registry::crypto::random_password;
use registry::hosts::{self, DbHost, HostState};
use registry::spares::{self, Spare};
use registry::RegistryError;
use uuid::Uuid;

use super::{FreshClone, Reconciler};
use crate::connector::HostError;
use crate::host_ops::{self, HostSqlError, SpareNames, Verifier};
use crate::template::CloneError;

/// Why building or retiring one spare failed. The spare's row keeps its
/// lease; when that lapses, the next refill retires what was left.
#[derive(Debug, thiserror::Error)]
pub enum SpareError {
    #[error(transparent)]
    Control(#[from] RegistryError),
    #[error(transparent)]
    Host(#[from] HostError),
    #[error(transparent)]
    Sql(#[from] HostSqlError),
    #[error(transparent)]
    Clone(#[from] CloneError),
    #[error("db host {0:?} has no template yet (it is built with the host's first tenant)")]
    NoTemplate(String),
}

/// How soon a refill that waited for tenants being provisioned looks again.
const DEFERRED_RETRY: Duration = Duration::from_millis(50);

/// What one refill did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Refilled {
    pub built: usize,
    pub retired: usize,
    /// Building was skipped because tenants were waiting for databases.
    pub deferred: bool,
}

impl Reconciler {
    /// One refill: retire what must go, then build spares up to the target
    /// on every host that can take them. Stops at the first failure on a
    /// host (logged; retried next time).
    pub async fn refill_once(&self) -> Result<Refilled, SpareError> {
        let mut done = Refilled::default();
        while let Some(spare) = self.next_to_retire().await? {
            self.retire(&spare).await?;
            done.retired += 1;
        }
        let target = self.settings.warm_pool;
        if target == 0 {
            return Ok(done);
        }
        let client = self.control.get().await.map_err(RegistryError::from)?;
        let all = hosts::list(&client).await?;
        drop(client);
        loop {
            let mut built_any = false;
            for host in all.iter().filter(|h| h.state == HostState::Accepting) {
                let client = self.control.get().await.map_err(RegistryError::from)?;
                if registry::tenants::any_awaiting_database(&client).await? {
                    done.deferred = true;
                    return Ok(done);
                }
                drop(client);
                if self.build_spare(host).await? {
                    done.built += 1;
                    built_any = true;
                }
            }
            if !built_any {
                return Ok(done);
            }
        }
    }

    /// Refills now and whenever a claim takes a spare, else every
    /// `interval`, until `shutdown` turns true.
    pub(crate) async fn refill_until(
        &self,
        interval: Duration,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        while !*shutdown.borrow() {
            let taken = self.spare_taken.notified();
            tokio::pin!(taken);
            taken.as_mut().enable();
            let mut wait = interval;
            match self.refill_once().await {
                Ok(done) => {
                    if done.built + done.retired > 0 {
                        tracing::info!(
                            built = done.built,
                            retired = done.retired,
                            "warm pool refilled"
                        );
                    }
                    // Tenants were being provisioned: look again shortly, not
                    // a whole interval later, or a steady trickle of sign-ups
                    // (each one provisioning when its claim woke us) would
                    // keep the pool from ever refilling.
                    if done.deferred {
                        wait = wait.min(DEFERRED_RETRY);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "warm pool refill failed"),
            }
            tokio::select! {
                _ = &mut taken => {}
                _ = tokio::time::sleep(wait) => {}
                changed = shutdown.changed() => if changed.is_err() { break },
            }
        }
    }

    async fn next_to_retire(&self) -> Result<Option<Spare>, RegistryError> {
        let mut client = self.control.get().await?;
        let tx = client.transaction().await?;
        let spare =
            spares::next_to_retire(&tx, self.settings.warm_pool, self.settings.lease).await?;
        tx.commit().await?;
        Ok(spare)
    }

    /// Drops a spare's database and roles, then its row.
    async fn retire(&self, spare: &Spare) -> Result<(), SpareError> {
        let client = self.control.get().await.map_err(RegistryError::from)?;
        let host = hosts::get_by_id(&client, spare.host_id).await?;
        drop(client);
        if let Some(host) = host {
            let names = SpareNames::new(&self.settings.prefix, spare.id);
            self.within_deadline(&host, async {
                let admin = self.connector.admin(&host).await?;
                host_ops::drop_spare(&admin, &names).await?;
                admin.release();
                Ok(())
            })
            .await?;
        }
        let client = self.control.get().await.map_err(RegistryError::from)?;
        spares::delete(&client, spare.id).await?;
        tracing::info!(
            spare = spare.name.as_str(),
            state = spare.state.as_str(),
            "retired a warm spare"
        );
        Ok(())
    }

    /// Builds one spare on `host` if it holds fewer than the target and has
    /// room; false when it needs none.
    async fn build_spare(&self, host: &DbHost) -> Result<bool, SpareError> {
        let id = Uuid::new_v4();
        let prefix = &self.settings.prefix;
        let SpareNames { database, owner } = SpareNames::new(prefix, id);
        {
            let mut client = self.control.get().await.map_err(RegistryError::from)?;
            let tx = client.transaction().await.map_err(RegistryError::from)?;
            let begun = spares::begin_build(
                &tx,
                host.id,
                id,
                &database,
                self.settings.warm_pool,
                self.settings.lease,
            )
            .await?;
            tx.commit().await.map_err(RegistryError::from)?;
            if !begun {
                return Ok(false);
            }
        }
        let password = random_password();
        let version = self
            .within_deadline(host, async {
                let (admin, verifier) =
                    tokio::join!(self.connector.admin(host), Verifier::of(&password));
                let admin = admin?;
                let template = prefix.template_ident();
                let found =
                    host_ops::survey(&admin, &template, &database, &owner, &database).await?;
                if !found.template {
                    return Err(SpareError::NoTemplate(host.name.clone()));
                }
                // Privileges as a tenant's, but nobody let in: no LOGIN, no
                // CONNECT until a claim.
                let spare = FreshClone {
                    database: &database,
                    owner: &owner,
                    login: &database,
                    password: &verifier,
                    limits: None,
                    open: String::new(),
                    steps: ["spare_roles", "spare_cloned"],
                };
                let version = self
                    .clone_fresh::<SpareError>(&admin, host, &found, &spare)
                    .await?;
                admin.release();
                Ok(version)
            })
            .await?;
        let client = self.control.get().await.map_err(RegistryError::from)?;
        let sealed = self.cipher.seal(TenantId::from(id), &database, &password);
        if !spares::finish_build(&client, id, version, &sealed).await? {
            tracing::warn!(
                spare = database.as_str(),
                "a spare's build outlived its lease"
            );
        }
        Ok(true)
    }

    async fn within_deadline<T>(
        &self,
        host: &DbHost,
        work: impl std::future::Future<Output = Result<T, SpareError>>,
    ) -> Result<T, SpareError> {
        let after = self.settings.attempt_timeout;
        tokio::time::timeout(after, work)
            .await
            .map_err(|_| HostError::timeout(host, after))?
    }
}
