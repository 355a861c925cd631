//! The provisioning reconciler: level-triggered, so it only ever compares a
//! tenant's `status` with its `desired_state` and takes the next idempotent
//! step towards it. A crash at any point is repaired by the next pass.
//!
//! A pass works on one tenant in three phases; no control-plane row lock is
//! held while a host works, so webhook writes never wait for a host:
//! 1. *claim*, a short transaction: pick a tenant that needs work and is not
//!    leased (`FOR UPDATE SKIP LOCKED`, so any number of workers can run),
//!    write a lease, mark the transitional status, place it on a host and
//!    seal its password, and commit, so that everything created on a host
//!    afterwards is already recorded (what only reads, the host's survey,
//!    goes ahead while the commit is under way);
//! 2. *work*, outside any control transaction and within the attempt
//!    deadline (counted from that survey): the steps on the tenant's host;
//! 3. *record*, a short transaction: the resulting status, or the failure
//!    with a backoff (and the host's backoff when it could not be reached),
//!    written only while the lease is still ours. A worker that dies leaves
//!    a lease that lapses; then any worker takes the tenant over.
//!
//! `ledger` holds the bookkeeping SQL, `worker` the loop that runs passes;
//! the statements run on hosts are in `host_ops`.

mod ledger;
mod warm_pool;
mod worker;

use std::time::Duration;

use chrono::Utc;
use deadpool_postgres::{Pool, Transaction};
use model::{DesiredState, PgIdent, TenantId, TenantPrefix, TenantStatus};
use registry::crypto::{random_password, CryptoError, PasswordCipher};
use registry::hosts::{self, DbHost};
use registry::spares::{self, Spare};
use registry::tenants::{CredentialsError, MODEL_LOGIN_OWNS_NOTHING, PRIVILEGE_MODEL};
use registry::tenants::{Placement, Tenant};
use registry::RegistryError;

pub use ledger::backoff;
use ledger::{Lease, Progress, Retry};
use uuid::Uuid;
pub use warm_pool::{Refilled, SpareError};

use crate::connector::{AdminSession, HostConnector, HostError};
use crate::host_ops::{self, CloneStrategy, HostSqlError, SpareNames, Verifier};
use crate::limits::{Limits, Plans, UnknownPlan};
use crate::privileges;
use crate::template::{self, CloneError, TemplateError, TemplateReport, Templates};

#[derive(Debug, Clone)]
pub struct ReconcilerSettings {
    pub prefix: TenantPrefix,
    /// How long a deleted tenant's database is kept before it is dropped.
    pub retention: Duration,
    /// Failed attempts before a tenant is marked `failed`.
    pub max_attempts: i32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Per-plan limits of tenant roles.
    pub plans: Plans,
    /// The bound on one pass's work on a host, whatever the host does.
    pub attempt_timeout: Duration,
    /// How long a claim is held; longer than `attempt_timeout`, so only a
    /// worker that died loses its lease.
    pub lease: Duration,
    /// How CREATE DATABASE copies the template.
    pub clone_strategy: CloneStrategy,
    /// Spares kept ready per accepting host (`tenants.warm_pool`; 0: none).
    pub warm_pool: usize,
    /// Test hook: stop (and wait to be killed) when this step is reached.
    pub pause_at: Option<String>,
}

/// Why a step failed. Everything but `Control` is recorded on the tenant as
/// an attempt; `Control` means the control database itself failed, so nothing
/// can be recorded and the pass is abandoned.
#[derive(Debug, thiserror::Error)]
enum StepError {
    #[error(transparent)]
    Control(#[from] RegistryError),
    #[error(transparent)]
    Host(#[from] HostError),
    #[error(transparent)]
    Sql(#[from] HostSqlError),
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error(transparent)]
    Clone(#[from] CloneError),
    #[error("no db host is accepting tenants (all draining or full)")]
    NoCapacity,
    #[error("tenant row is inconsistent: {0}")]
    Inconsistent(&'static str),
    #[error(transparent)]
    Plan(#[from] UnknownPlan),
    #[error(
        "the registry names database {database:?} and role {role:?}, but this tenant's are \
         {expected:?} (tenants.prefix {prefix:?}); refusing to touch them"
    )]
    ForeignNames {
        database: String,
        role: String,
        expected: String,
        prefix: String,
    },
}

impl StepError {
    /// The host itself could not be reached: it backs off as a whole.
    fn host_unreachable(&self) -> bool {
        matches!(self, StepError::Host(e) if e.is_unreachable())
    }
}

/// A tenant claimed under a lease, with its host when it is placed.
struct Claimed {
    tenant: Tenant,
    host: Option<DbHost>,
    /// The warm-pool spare it claimed and has not taken over yet.
    spare: Option<Spare>,
}

/// The names a tenant's work may touch: all derived from its id.
struct Names {
    database: PgIdent,
    role: PgIdent,
    owner: PgIdent,
}

/// A database [`Reconciler::clone_fresh`] makes: a tenant's or a spare's.
struct FreshClone<'a> {
    database: &'a PgIdent,
    owner: &'a PgIdent,
    login: &'a PgIdent,
    password: &'a Verifier,
    limits: Option<&'a Limits>,
    /// What lets the tenant in, run last in the transaction that opens the
    /// clone (the tenant's LOGIN and CONNECT; nothing for a spare).
    open: String,
    /// Where `pause_at` stops once the roles and the clone are both made
    /// (made side by side, so both names stop at one point; the
    /// step-by-step path stops at each apart).
    steps: [&'static str; 2],
}

/// What a pass towards active reads before its claim has committed: the
/// admin session, the survey of the tenant's names and the password's
/// verifier. It creates nothing, so it may run while the claim commits.
struct Ahead {
    admin: AdminSession,
    found: host_ops::Survey,
    password: String,
    verifier: Verifier,
}

/// The result of one pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pass {
    /// Nothing needs work now; `next_due` is how long until an attempt
    /// that backs off is due, if one is.
    Idle { next_due: Option<Duration> },
    /// The lease lapsed during the work and another worker took the tenant
    /// over: nothing was recorded.
    LeaseLost,
    /// A tenant was worked on; `status` is where it is now.
    Worked {
        tenant: TenantId,
        status: TenantStatus,
    },
}

pub struct Reconciler {
    control: Pool,
    connector: HostConnector,
    cipher: PasswordCipher,
    templates: Templates,
    settings: ReconcilerSettings,
    /// Woken when a claim took a spare, so the refill starts at once.
    spare_taken: std::sync::Arc<tokio::sync::Notify>,
}

impl Reconciler {
    pub fn new(
        control: Pool,
        connector: HostConnector,
        cipher: PasswordCipher,
        templates: Templates,
        settings: ReconcilerSettings,
    ) -> Self {
        Self {
            control,
            connector,
            cipher,
            templates,
            settings,
            spare_taken: Default::default(),
        }
    }

    pub fn templates(&self) -> &Templates {
        &self.templates
    }

    fn retry(&self) -> Retry {
        Retry {
            max_attempts: self.settings.max_attempts,
            base: self.settings.backoff_base,
            max: self.settings.backoff_max,
        }
    }

    /// Creates or migrates the template on every host.
    pub async fn build_templates(&self) -> Result<Vec<TemplateReport>, TemplateError> {
        let client = self.control.get().await.map_err(RegistryError::from)?;
        let all = hosts::list(&client).await?;
        drop(client);
        let mut reports = Vec::new();
        for host in &all {
            reports.push(self.build_template(host).await?);
        }
        Ok(reports)
    }

    /// As [`Self::build_templates`], but each host within the attempt
    /// deadline and on its own: a host that fails or hangs is reported with
    /// its error, and the others are still built (start-up must not wait on
    /// one dead host; its template is built when its first tenant is).
    pub async fn build_templates_each(
        &self,
    ) -> Result<Vec<Result<TemplateReport, TemplateError>>, RegistryError> {
        let client = self.control.get().await?;
        let all = hosts::list(&client).await?;
        drop(client);
        let mut reports = Vec::new();
        for host in &all {
            let after = self.settings.attempt_timeout;
            let built = match tokio::time::timeout(after, self.build_template(host)).await {
                Ok(built) => built,
                Err(_) => Err(TemplateError::Host(HostError::timeout(host, after))),
            };
            reports.push(built);
        }
        Ok(reports)
    }

    async fn build_template(&self, host: &DbHost) -> Result<TemplateReport, TemplateError> {
        template::build(
            &self.control,
            &self.connector,
            host,
            &self.settings.prefix,
            &self.templates,
        )
        .await
    }

    /// Runs passes until none finds work. Tests use it to drain
    /// deterministically; it returns the number of passes that did work.
    pub async fn drain(&self) -> Result<usize, RegistryError> {
        let mut worked = 0;
        loop {
            match self.run_once().await? {
                Pass::Idle { .. } => return Ok(worked),
                Pass::LeaseLost => tokio::task::yield_now().await,
                Pass::Worked { .. } => worked += 1,
            }
        }
    }

    /// Claims one tenant that needs work and takes it as far as it can go.
    #[tracing::instrument(
        name = "reconcile",
        skip_all,
        fields(tenant_id = tracing::field::Empty, org_id = tracing::field::Empty, desired = tracing::field::Empty)
    )]
    pub async fn run_once(&self) -> Result<Pass, RegistryError> {
        let lease = Lease {
            token: Uuid::now_v7(),
            duration: self.settings.lease,
        };
        // One bound on all of the pass's work on a host, from its first read.
        let after = self.settings.attempt_timeout;
        let deadline = tokio::time::Instant::now() + after;

        // Phase 1: claim.
        let (claimed, ahead) = {
            let mut client = self.control.get().await?;
            let tx = client.transaction().await?;
            let Some(tenant) = ledger::pick(&tx, &self.settings.plans).await? else {
                let next_due = ledger::next_due(&tx, &self.settings.plans).await?;
                return Ok(Pass::Idle { next_due });
            };
            let span = tracing::Span::current();
            span.record("tenant_id", tracing::field::display(tenant.id));
            span.record("org_id", tenant.clerk_org_id.as_str());
            span.record("desired", tenant.desired_state.as_str());
            match self.claim(&tx, &tenant, lease).await {
                Ok(claimed) => {
                    // The host's reads go ahead while the claim commits;
                    // nothing is created on a host before it has.
                    let ahead = tokio::time::timeout_at(deadline, self.look_ahead(&claimed));
                    let (committed, ahead) = tokio::join!(tx.commit(), ahead);
                    committed?;
                    let ahead = ahead.unwrap_or_else(|_| Some(Err(self.timed_out(&claimed.host))));
                    (claimed, ahead)
                }
                Err(StepError::Control(e)) => return Err(e),
                Err(e) => {
                    let status =
                        ledger::record_failure(&tx, &tenant, None, &e.to_string(), self.retry())
                            .await?
                            .unwrap_or(tenant.status);
                    tx.commit().await?;
                    return Ok(Pass::Worked {
                        tenant: tenant.id,
                        status,
                    });
                }
            }
        };
        self.pause_at("claimed").await;

        // Phase 2: work, within the deadline.
        let Claimed {
            tenant,
            host,
            spare,
        } = &claimed;
        let work = async {
            match tenant.desired_state {
                DesiredState::Active => {
                    self.make_active(tenant, host.as_ref(), spare.as_ref(), ahead)
                        .await
                }
                DesiredState::Suspended => self.make_suspended(tenant, host.as_ref()).await,
                DesiredState::Deleted => {
                    self.make_deleted(tenant, host.as_ref(), spare.as_ref())
                        .await
                }
            }
        };
        let outcome = match tokio::time::timeout_at(deadline, work).await {
            Ok(outcome) => outcome,
            Err(_) => Err(self.timed_out(host)),
        };

        // Phase 3: record, under the lease.
        let mut client = self.control.get().await?;
        let tx = client.transaction().await?;
        let recorded = match outcome {
            Ok(progress) => {
                // In one round trip; rolled back together if the lease is lost.
                let (recorded, ()) = tokio::try_join!(
                    ledger::record_progress(&tx, tenant, lease.token, progress),
                    async {
                        match host {
                            Some(h) => hosts::record_reachable(&tx, h.id).await,
                            None => Ok(()),
                        }
                    },
                )?;
                // The spare is the tenant's database now, or dropped with it.
                if let (Some(TenantStatus::Active | TenantStatus::Deleted), Some(_)) =
                    (recorded, spare)
                {
                    spares::forget_claim(&tx, tenant.id).await?;
                }
                recorded
            }
            // The control database failed: nothing can be recorded, and
            // the lease lapses for the next worker.
            Err(StepError::Control(e)) => return Err(e),
            Err(e) => {
                let message = e.to_string();
                let recorded =
                    ledger::record_failure(&tx, tenant, Some(lease.token), &message, self.retry())
                        .await?;
                if let (Some(_), Some(h), true) = (recorded, host, e.host_unreachable()) {
                    let r = self.retry();
                    let delay = backoff(h.failures, r.base, r.max, &mut rand::thread_rng());
                    tracing::warn!(host = %h.name, retry_in = ?delay, "db host unreachable; backing off");
                    hosts::record_unreachable(&tx, h.id, &message, delay).await?;
                }
                recorded
            }
        };
        let Some(status) = recorded else {
            tracing::warn!("the lease lapsed during the work and the tenant was taken over");
            return Ok(Pass::LeaseLost);
        };
        tx.commit().await?;
        if spare.is_some() {
            // Only now: a clone started during the take-over would compete
            // with the tenant's last commit, on the path a warm claim is for.
            self.spare_taken.notify_one();
        }
        Ok(Pass::Worked {
            tenant: tenant.id,
            status,
        })
    }

    /// The error of a pass whose work ran out of time: connected, then
    /// silent, as a handshake that never ends.
    fn timed_out(&self, host: &Option<DbHost>) -> StepError {
        match host {
            Some(h) => StepError::Host(HostError::timeout(h, self.settings.attempt_timeout)),
            None => StepError::Inconsistent("an unplaced tenant's work ran out of time"),
        }
    }

    /// The reads of a pass towards active on a placed tenant without a
    /// spare (see [`Ahead`]); `None` for any other pass.
    async fn look_ahead(&self, c: &Claimed) -> Option<Result<Ahead, StepError>> {
        let (DesiredState::Active, Some(host), None) = (c.tenant.desired_state, &c.host, &c.spare)
        else {
            return None;
        };
        Some(self.read_ahead(&c.tenant, host).await)
    }

    async fn read_ahead(&self, t: &Tenant, host: &DbHost) -> Result<Ahead, StepError> {
        let (names, host) = self.placed_names(t, Some(host))?;
        let password = registry::tenants::password(&self.cipher, t).map_err(|e| match e {
            CredentialsError::Crypto(e) => StepError::Crypto(e),
            CredentialsError::NotPlaced(_) => StepError::Inconsistent("no sealed password"),
        })?;
        let template = self.settings.prefix.template_ident();
        let survey = async {
            let admin = self.connector.admin(host).await?;
            let found = host_ops::survey(
                &admin,
                &template,
                &names.database,
                &names.owner,
                &names.role,
            )
            .await?;
            Ok::<_, StepError>((admin, found))
        };
        let (surveyed, verifier) = tokio::join!(survey, Verifier::of(&password));
        let (admin, found) = surveyed?;
        Ok(Ahead {
            admin,
            found,
            password,
            verifier,
        })
    }

    /// Writes the lease, marks the transitional status and, for an active
    /// goal, makes sure the tenant has a host, names and a sealed password
    /// before anything exists on a server.
    #[tracing::instrument(name = "claim", skip_all)]
    async fn claim(
        &self,
        tx: &Transaction<'_>,
        t: &Tenant,
        lease: Lease,
    ) -> Result<Claimed, StepError> {
        let transitional = ledger::transitional(t);
        let mut host_id = t.placement.as_ref().map(|p| p.host_id);
        let mut password = t.db_password_enc.clone();
        let mut spare = None;
        // The host this claim placed the tenant on, read as it placed it.
        let mut placed = None;
        if t.desired_state == DesiredState::Active {
            if host_id.is_none() {
                // A ready spare first: taking it is a rename, not a clone.
                spare = spares::take(tx, t.id).await?;
                host_id = Some(match &spare {
                    Some(s) => {
                        tracing::info!(spare = s.name.as_str(), "claimed a warm spare");
                        s.host_id
                    }
                    None => {
                        let host = hosts::place(tx).await?.ok_or(StepError::NoCapacity)?;
                        tracing::info!(host = %host.name, "placed tenant");
                        placed.insert(host).id
                    }
                });
            }
            let role = self.settings.prefix.tenant_ident(t.id);
            if let Some(s) = &spare {
                // The spare's role already has a password: it becomes the
                // tenant's, sealed to the tenant from now on.
                let sealed = s
                    .password_enc
                    .as_deref()
                    .ok_or(StepError::Inconsistent("a ready spare without a password"))?;
                let plain = self.cipher.open(sealed, TenantId::from(s.id), &s.name)?;
                password = Some(self.cipher.seal(t.id, &role, &plain));
            } else if password.is_none() {
                password = Some(self.cipher.seal(t.id, &role, &random_password()));
            }
        }
        let name = host_id.map(|_| self.settings.prefix.tenant_ident(t.id));
        let tenant = ledger::record_claim(
            tx,
            t,
            lease,
            transitional,
            host_id,
            name.as_ref(),
            password.as_deref(),
            spare.as_ref().map(|s| &s.name),
        )
        .await?;
        if spare.is_none() && t.placement.is_some() {
            // Claimed by an earlier pass that did not finish taking it (a
            // spare is claimed in the transaction that places its tenant).
            spare = spares::claimed_by(tx, t.id).await?;
        }
        let host = match (&tenant.placement, placed) {
            (Some(_), Some(host)) => Some(host),
            (Some(p), None) => Some(
                hosts::get_by_id(tx, p.host_id)
                    .await?
                    .ok_or(StepError::Inconsistent("db_host_id names no host"))?,
            ),
            (None, _) => None,
        };
        Ok(Claimed {
            tenant,
            host,
            spare,
        })
    }

    /// The names and host of a tenant claimed for activation, which the
    /// claim has placed.
    fn placed_names<'h>(
        &self,
        t: &Tenant,
        host: Option<&'h DbHost>,
    ) -> Result<(Names, &'h DbHost), StepError> {
        let (p, host) = t
            .placement
            .as_ref()
            .zip(host)
            .ok_or(StepError::Inconsistent(
                "claimed for activation but not placed",
            ))?;
        Ok((self.names(t, p)?, host))
    }

    /// The tenant's names, checked against the ones its id derives: work on
    /// a host only ever touches those.
    fn names(&self, t: &Tenant, p: &Placement) -> Result<Names, StepError> {
        let expected = self.settings.prefix.tenant_ident(t.id);
        if p.database != expected || p.role != expected {
            return Err(StepError::ForeignNames {
                database: p.database.as_str().to_owned(),
                role: p.role.as_str().to_owned(),
                expected: expected.as_str().to_owned(),
                prefix: self.settings.prefix.as_str().to_owned(),
            });
        }
        Ok(Names {
            database: p.database.clone(),
            role: p.role.clone(),
            owner: self.settings.prefix.owner_ident(t.id),
        })
    }

    #[tracing::instrument(name = "make_active", skip_all)]
    async fn make_active(
        &self,
        t: &Tenant,
        host: Option<&DbHost>,
        spare: Option<&Spare>,
        ahead: Option<Result<Ahead, StepError>>,
    ) -> Result<Progress, StepError> {
        let (names, host) = self.placed_names(t, host)?;
        let limits = self.settings.plans.get(&t.plan)?;
        if let Some(spare) = spare {
            let admin = self.connector.admin(host).await?;
            let spare_names = SpareNames::new(&self.settings.prefix, spare.id);
            let (spare_there, tenant_there) =
                host_ops::spare_and_tenant_exist(&admin, &spare_names.database, &names.database)
                    .await?;
            if spare_there && !tenant_there {
                host_ops::take_spare(
                    &admin,
                    &spare_names,
                    &names.database,
                    &names.role,
                    &names.owner,
                    limits,
                )
                .await?;
                admin.release();
                self.pause_at("spare_taken").await;
                return Ok(Progress::Reached {
                    status: TenantStatus::Active,
                    template_version: spare.template_version,
                    model: Some(ledger::ModelApplied::made_on_model(limits)),
                });
            }
            // Taken by a pass that died before recording it, or gone: the
            // usual steps below make whatever is missing.
            tracing::info!(
                spare = spare.name.as_str(),
                spare_there,
                tenant_there,
                "the claimed spare was taken already or is gone"
            );
        }

        let Ahead {
            admin,
            found,
            password,
            verifier,
        } = match ahead {
            Some(ahead) => ahead?,
            None => self.read_ahead(t, host).await?,
        };
        let template = self.settings.prefix.template_ident();
        if !found.template {
            self.build_template(host).await?;
        }
        if !found.database && t.privilege_model >= PRIVILEGE_MODEL {
            let fresh = FreshClone {
                database: &names.database,
                owner: &names.owner,
                login: &names.role,
                password: &verifier,
                limits: Some(limits),
                open: host_ops::open_sql(&names.database, &names.role),
                steps: ["role", "database"],
            };
            let version = self
                .clone_fresh::<StepError>(&admin, host, &found, &fresh)
                .await?;
            admin.release();
            self.pause_at("opened").await;
            return Ok(Progress::Reached {
                status: TenantStatus::Active,
                template_version: Some(version),
                model: Some(ledger::ModelApplied::made_on_model(limits)),
            });
        }

        // An existing database, or one of a tenant still on the first
        // model: step by step, each repairing what an earlier pass left.
        host_ops::prepare_roles(
            &admin,
            &found,
            &names.owner,
            &names.role,
            &verifier,
            Some(limits),
        )
        .await?;
        // Moving a database of the first model takes the login role's own
        // objects from it.
        if t.privilege_model < MODEL_LOGIN_OWNS_NOTHING {
            host_ops::ensure_admin_member(&admin, &names.role).await?;
        }
        self.pause_at("role").await;

        if !found.database {
            template::clone_locked(
                &self.control,
                &admin,
                host,
                &template,
                &names.database,
                Some(&names.owner),
                self.settings.clone_strategy,
                self.settings.attempt_timeout,
            )
            .await?;
        }
        self.pause_at("database").await;

        // Nobody but the admin reaches the database until its privileges
        // are set; then the tenant's role may log in and connect.
        host_ops::secure_database(&admin, &names.database, &names.owner, &names.role).await?;
        let mut tenant_db = self
            .connector
            .connect(host, names.database.as_str())
            .await?;
        if t.privilege_model < MODEL_LOGIN_OWNS_NOTHING {
            // Until the move below is done, the tenant may still create
            // objects: none of its sessions may run meanwhile.
            host_ops::close_database(&admin, &names.database, &names.role).await?;
        }
        let changed = privileges::apply(
            &mut tenant_db,
            &self.settings.prefix.template_owner_ident(),
            &names.role,
        )
        .await?;
        if !changed.is_empty() {
            tracing::warn!(?changed, "moved the tenant database to the privilege model");
        }
        let version = privileges::template_version(&tenant_db).await?;
        self.pause_at("grants").await;
        host_ops::open_database(&admin, &names.database, &names.role).await?;
        drop(tenant_db);
        admin.release();
        self.pause_at("opened").await;

        Ok(Progress::Reached {
            status: TenantStatus::Active,
            template_version: Some(version),
            model: Some(ledger::ModelApplied {
                limits: limits.fingerprint(),
                // Sealed again, bound to the tenant, when it came from before.
                resealed: (t.privilege_model < MODEL_LOGIN_OWNS_NOTHING)
                    .then(|| self.cipher.seal(t.id, &names.role, &password)),
                changed,
            }),
        })
    }

    /// Makes a database of this pass's own in the fewest steps on the host:
    /// the clone, owned by the admin and closed, and meanwhile its roles (one
    /// transaction, on a second admin session when the pool has one to
    /// spare); then one transaction that hands the database to its owner,
    /// closes it to PUBLIC, allows connections and runs `c.open`. Nothing
    /// runs inside the new database: the template's rights are the model's
    /// (see `privileges`). Returns the template version the clone carries.
    /// `found` is the survey of these names, which showed no database.
    async fn clone_fresh<E>(
        &self,
        admin: &tokio_postgres::Client,
        host: &DbHost,
        found: &host_ops::Survey,
        c: &FreshClone<'_>,
    ) -> Result<i32, E>
    where
        E: From<HostError> + From<HostSqlError> + From<CloneError>,
    {
        let [roles_made, cloned] = c.steps;
        let template = self.settings.prefix.template_ident();
        let clone = template::clone_locked(
            &self.control,
            admin,
            host,
            &template,
            c.database,
            None,
            self.settings.clone_strategy,
            self.settings.attempt_timeout,
        );
        let version = match self.connector.spare_admin(host).await? {
            Some(beside) => {
                // Both run to the end, so neither session is left mid-batch.
                // The clone first: its statements go out before the roles'.
                let (version, roles) = tokio::join!(
                    clone,
                    host_ops::prepare_roles(&beside, found, c.owner, c.login, c.password, c.limits),
                );
                beside.release();
                roles?;
                version?
            }
            None => {
                host_ops::prepare_roles(admin, found, c.owner, c.login, c.password, c.limits)
                    .await?;
                clone.await?
            }
        };
        self.pause_at(roles_made).await;
        self.pause_at(cloned).await;
        host_ops::open_clone(admin, c.database, c.owner, &c.open).await?;
        Ok(version)
    }

    #[tracing::instrument(name = "make_suspended", skip_all)]
    async fn make_suspended(
        &self,
        t: &Tenant,
        host: Option<&DbHost>,
    ) -> Result<Progress, StepError> {
        if let Some((p, host)) = t.placement.as_ref().zip(host) {
            let names = self.names(t, p)?;
            let admin = self.connector.admin(host).await?;
            host_ops::disable_role(&admin, &names.role).await?;
            admin.release();
        }
        Ok(Progress::Reached {
            status: TenantStatus::Suspended,
            template_version: None,
            model: None,
        })
    }

    #[tracing::instrument(name = "make_deleted", skip_all)]
    async fn make_deleted(
        &self,
        t: &Tenant,
        host: Option<&DbHost>,
        spare: Option<&Spare>,
    ) -> Result<Progress, StepError> {
        let Some((p, host)) = t.placement.as_ref().zip(host) else {
            // Never placed: nothing exists anywhere.
            return Ok(Progress::Reached {
                status: TenantStatus::Deleted,
                template_version: None,
                model: None,
            });
        };
        let names = self.names(t, p)?;
        let admin = self.connector.admin(host).await?;
        if let Some(spare) = spare {
            // Claimed but never taken over: it holds nothing of the tenant's.
            host_ops::drop_spare(&admin, &SpareNames::new(&self.settings.prefix, spare.id)).await?;
        }
        host_ops::disable_role(&admin, &names.role).await?;
        self.pause_at("disabled").await;

        let purge_after = t.purge_after.unwrap_or_else(|| {
            Utc::now()
                + chrono::Duration::from_std(self.settings.retention)
                    .unwrap_or(chrono::Duration::MAX)
        });
        if purge_after > Utc::now() {
            admin.release();
            return Ok(Progress::Retained { purge_after });
        }
        host_ops::drop_database(&admin, &names.database).await?;
        self.pause_at("dropped_database").await;
        host_ops::drop_role(&admin, &names.role).await?;
        host_ops::drop_role(&admin, &names.owner).await?;
        admin.release();
        tracing::info!(
            db = names.database.as_str(),
            "dropped tenant database and roles"
        );
        Ok(Progress::Reached {
            status: TenantStatus::Deleted,
            template_version: None,
            model: None,
        })
    }

    async fn pause_at(&self, step: &str) {
        if self.settings.pause_at.as_deref() == Some(step) {
            eprintln!("tenant-plane: paused at step {step}");
            tracing::warn!(step, "paused at a configured step; waiting to be killed");
            std::future::pending::<()>().await;
        }
    }
}
