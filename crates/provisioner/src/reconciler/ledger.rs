//! The reconciler's bookkeeping in the control-plane database: claiming a
//! tenant, recording where it got to or why it failed, and the audit trail
//! of each transition.

use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use model::{DesiredState, PgIdent, TenantId, TenantStatus};
use rand::Rng;
use registry::tenants::{
    self, record_event, wake_workers, Tenant, PRIVILEGE_MODEL, TENANT_COLUMNS,
};
use registry::RegistryError;
use serde_json::json;
use uuid::Uuid;

use crate::limits::{Limits, Plans};

pub(super) const ACTOR: &str = "reconciler";

/// Tenants that need work: those away from their desired state (failed
/// ones only towards deletion), and active ones whose database is behind
/// the privilege model or whose role is behind its plan's limits ($1, $2).
const NEEDS_WORK: &str = "((t.status <> t.desired_state
                           AND (t.status <> 'failed' OR t.desired_state = 'deleted'))
                          OR (t.status = 'active' AND t.desired_state = 'active'
                              AND (t.privilege_model < $1
                                   OR t.limits_applied IS DISTINCT FROM ($2::jsonb ->> t.plan))))";

/// Not leased, or its lease has lapsed (the worker that held it died).
const UNLEASED: &str = "(t.lease_expires_at IS NULL OR t.lease_expires_at <= now())";

/// The tenant's host (`h`, joined) takes an attempt: unplaced, never failed,
/// or past its backoff with no other attempt probing it, so a dead host
/// holds about one worker at a time.
const HOST_OPEN: &str = "(h.id IS NULL OR h.failures = 0
                          OR (coalesce(h.retry_after <= now(), true)
                              AND NOT EXISTS (SELECT 1 FROM tenant_registry o
                                               WHERE o.db_host_id = h.id
                                                 AND o.lease_expires_at > now())))";

/// Picks the next tenant that needs work and is free to take, and locks it
/// for the rest of the claim transaction (`SKIP LOCKED`, so any number of
/// workers can run).
pub(super) async fn pick(
    tx: &Transaction<'_>,
    plans: &Plans,
) -> Result<Option<Tenant>, RegistryError> {
    let claim = format!(
        "SELECT t.id FROM tenant_registry t LEFT JOIN db_hosts h ON h.id = t.db_host_id
          WHERE {NEEDS_WORK} AND t.next_attempt_at <= now() AND {UNLEASED} AND {HOST_OPEN}
          ORDER BY t.next_attempt_at
          LIMIT 1
          FOR UPDATE OF t SKIP LOCKED"
    );
    // Cached, as every statement of a pass that works: each saves the
    // round trip of preparing it again.
    let claim = tx.prepare_cached(&claim).await?;
    let id = tx
        .query_opt(&claim, &[&PRIVILEGE_MODEL, &plans.fingerprints()])
        .await?
        .map(|r| r.get::<_, Uuid>(0));
    match id {
        Some(id) => read(tx, TenantId::from(id)).await,
        None => Ok(None),
    }
}

/// The whole row of a tenant. After a lock, read by a statement of its own:
/// a row locked after a concurrent update is re-checked alone, so columns
/// joined in the locking statement (the host's) could belong to the version
/// before that update.
pub(super) async fn read(
    tx: &Transaction<'_>,
    id: TenantId,
) -> Result<Option<Tenant>, RegistryError> {
    tenants::get(tx, tenants::TenantKey::Id(id)).await
}

/// How long until the earliest attempt that is due later (a tenant backing
/// off after a failure, a host backing off, a lease running out), if any:
/// idle workers wake up for it.
pub(super) async fn next_due(
    tx: &Transaction<'_>,
    plans: &Plans,
) -> Result<Option<std::time::Duration>, RegistryError> {
    let sql = format!(
        "SELECT extract(epoch FROM min(greatest(t.next_attempt_at, t.lease_expires_at,
                                                 h.retry_after)) - now())::float8 AS secs
           FROM tenant_registry t LEFT JOIN db_hosts h ON h.id = t.db_host_id
          WHERE {NEEDS_WORK}"
    );
    let secs: Option<f64> = tx
        .query_one(&sql, &[&PRIVILEGE_MODEL, &plans.fingerprints()])
        .await?
        .get("secs");
    Ok(secs.map(|s| std::time::Duration::from_secs_f64(s.max(0.0))))
}

/// A claim on a tenant: its token guards every outcome recorded for it, so
/// a worker whose lease lapsed and was taken over records nothing.
#[derive(Debug, Clone, Copy)]
pub(super) struct Lease {
    pub token: Uuid,
    pub duration: Duration,
}

/// Records the lease, the transitional status and, for an active goal, the
/// placement and sealed password, before anything exists on a server, and
/// answers the row as it now is. `spare` names the warm spare this claim
/// took, kept in the audit event.
#[allow(clippy::too_many_arguments)]
pub(super) async fn record_claim(
    tx: &Transaction<'_>,
    t: &Tenant,
    lease: Lease,
    transitional: TenantStatus,
    host_id: Option<Uuid>,
    name: Option<&PgIdent>,
    password: Option<&[u8]>,
    spare: Option<&PgIdent>,
) -> Result<Tenant, RegistryError> {
    // A tenant placed by this claim has nothing on any host yet: what is
    // made for it is made on the current privilege model, so it is born on
    // it and takes the fresh clone's one-transaction set-up rather than the
    // move of a first-model database (SET sees the row as it was). The row
    // comes back with its host's columns joined, as `tenants::get` reads it.
    let stmt = tx
        .prepare_cached(&format!(
            "WITH t AS (
              UPDATE tenant_registry
                 SET status = $2, db_host_id = $3,
                     db_name = coalesce(db_name, $4), db_role = coalesce(db_role, $4),
                     db_password_enc = $5, lease_token = $6,
                     lease_expires_at = now() + make_interval(secs => $7),
                     privilege_model = CASE WHEN db_host_id IS NULL AND $3::uuid IS NOT NULL
                                            THEN $8 ELSE privilege_model END,
                     updated_at = now()
               WHERE id = $1
              RETURNING *)
            SELECT {TENANT_COLUMNS} FROM t LEFT JOIN db_hosts h ON h.id = t.db_host_id"
        ))
        .await?;
    let row = tx
        .query_one(
            &stmt,
            &[
                t.id.uuid_ref(),
                &transitional.as_str(),
                &host_id,
                &name.map(PgIdent::as_str),
                &password,
                &lease.token,
                &lease.duration.as_secs_f64(),
                &PRIVILEGE_MODEL,
            ],
        )
        .await?;
    let claimed = Tenant::from_row(&row)?;
    if transitional != t.status {
        let mut detail = json!({ "db_host_id": host_id });
        if let Some(spare) = spare {
            detail["warm_spare"] = json!(spare.as_str());
        }
        record_event(
            tx,
            t.id,
            ACTOR,
            transitional.as_str(),
            Some((t.status, t.desired_state)),
            (transitional, t.desired_state),
            detail,
        )
        .await?;
    }
    Ok(claimed)
}

/// The privilege model and plan limits, as a work phase applied them.
pub(super) struct ModelApplied {
    pub limits: String,
    /// The password sealed again, bound to the tenant (for tenants whose
    /// password was sealed before binding).
    pub resealed: Option<Vec<u8>>,
    /// What moving the database to the model moved or dropped.
    pub changed: Vec<String>,
}

impl ModelApplied {
    /// A database made on the model (a fresh clone, a spare taken over):
    /// nothing moved, nothing resealed.
    pub fn made_on_model(limits: &Limits) -> Self {
        Self {
            limits: limits.fingerprint(),
            resealed: None,
            changed: Vec::new(),
        }
    }
}

/// What a successful work phase leaves behind.
pub(super) enum Progress {
    Reached {
        status: TenantStatus,
        template_version: Option<i32>,
        /// Set when the database was brought to the privilege model.
        model: Option<ModelApplied>,
    },
    /// Deleted, and waiting for the retention period to end.
    Retained { purge_after: DateTime<Utc> },
}

/// Records what a work phase reached and ends its lease; `None` when the
/// lease was lost (it lapsed and another worker took the tenant over), in
/// which case the caller must roll the transaction back.
pub(super) async fn record_progress(
    tx: &Transaction<'_>,
    t: &Tenant,
    lease: Uuid,
    progress: Progress,
) -> Result<Option<TenantStatus>, RegistryError> {
    let (status, detail) = match &progress {
        Progress::Reached {
            status,
            template_version,
            model,
        } => {
            let mut detail = json!({ "template_version": template_version });
            if let Some(m) = model.as_ref().filter(|m| !m.changed.is_empty()) {
                detail["privilege_model"] = json!({ "to": PRIVILEGE_MODEL, "changed": m.changed });
            }
            (*status, detail)
        }
        Progress::Retained { purge_after } => (
            TenantStatus::Deleting,
            json!({ "purge_after": purge_after }),
        ),
    };
    let repaired = status == t.status && t.privilege_model < PRIVILEGE_MODEL;
    let event = status != t.status
        || repaired
        || t.purge_after.is_none() && status == TenantStatus::Deleting;
    // The write, its event and the workers' wake-up in one round trip:
    // none depends on another's answer, and all three are rolled back
    // together when the write finds the lease gone.
    let (written, (), ()) = tokio::try_join!(
        write_progress(tx, t, lease, &progress),
        async {
            if !event {
                return Ok(());
            }
            let from = Some((t.status, t.desired_state));
            let to = (status, t.desired_state);
            record_event(tx, t.id, ACTOR, status.as_str(), from, to, detail).await
        },
        wake_workers(tx),
    )?;
    if written == 0 {
        return Ok(None);
    }
    if status == TenantStatus::Active && t.status == TenantStatus::Provisioning {
        // From registration (the webhook) to a usable database.
        let seconds = (Utc::now() - t.created_at).num_milliseconds() as f64 / 1000.0;
        metrics::histogram!("tenant_plane_provisioning_seconds").record(seconds);
    }
    metrics::counter!("tenant_plane_reconciled_total", "status" => status.as_str()).increment(1);
    tracing::info!(status = %status, "tenant reconciled");
    Ok(Some(status))
}

/// The row's half of [`record_progress`]: the rows written (0 when the
/// lease is not `lease`).
async fn write_progress(
    tx: &Transaction<'_>,
    t: &Tenant,
    lease: Uuid,
    progress: &Progress,
) -> Result<u64, RegistryError> {
    let written = match progress {
        Progress::Reached {
            status,
            template_version,
            model,
        } => {
            let deleted = *status == TenantStatus::Deleted;
            let (limits, resealed) = match model {
                Some(m) => (Some(&m.limits), m.resealed.as_ref()),
                None => (None, None),
            };
            let stmt = tx
                .prepare_cached(
                    "UPDATE tenant_registry
                    SET status = $2, attempts = 0, last_error = NULL, next_attempt_at = now(),
                        lease_token = NULL, lease_expires_at = NULL,
                        template_version = coalesce($3, template_version),
                        purge_after = CASE WHEN $4 THEN purge_after END,
                        deleted_at = CASE WHEN $4 THEN now() END,
                        db_password_enc = CASE WHEN $4 THEN NULL
                                               ELSE coalesce($7, db_password_enc) END,
                        privilege_model = CASE WHEN $5 THEN $8 ELSE privilege_model END,
                        limits_applied = coalesce($6, limits_applied),
                        updated_at = now()
                  WHERE id = $1 AND lease_token = $9",
                )
                .await?;
            tx.execute(
                &stmt,
                &[
                    t.id.uuid_ref(),
                    &status.as_str(),
                    template_version,
                    &deleted,
                    &model.is_some(),
                    &limits,
                    &resealed,
                    &PRIVILEGE_MODEL,
                    &lease,
                ],
            )
            .await?
        }
        Progress::Retained { purge_after } => {
            tx.execute(
                "UPDATE tenant_registry
                    SET status = 'deleting', attempts = 0, last_error = NULL,
                        purge_after = $2, next_attempt_at = $2, updated_at = now(),
                        lease_token = NULL, lease_expires_at = NULL
                  WHERE id = $1 AND lease_token = $3",
                &[t.id.uuid_ref(), purge_after, &lease],
            )
            .await?
        }
    };
    Ok(written)
}

/// How failures back off.
#[derive(Debug, Clone, Copy)]
pub(super) struct Retry {
    pub max_attempts: i32,
    pub base: Duration,
    pub max: Duration,
}

/// Records a failed attempt with its backoff, or gives up after the last,
/// and ends the lease. With `lease`, only under it (`None` when it was
/// lost); without, the caller holds the row locked (the claim transaction).
pub(super) async fn record_failure(
    tx: &Transaction<'_>,
    t: &Tenant,
    lease: Option<Uuid>,
    message: &str,
    retry: Retry,
) -> Result<Option<TenantStatus>, RegistryError> {
    let attempts = t.attempts + 1;
    // A tenant that is active and should be keeps answering while its
    // repair (privilege model, limits) is retried: it never turns failed.
    let repairing = t.status == TenantStatus::Active && t.desired_state == DesiredState::Active;
    let give_up = attempts >= retry.max_attempts && !repairing;
    let status = if give_up {
        TenantStatus::Failed
    } else {
        t.status
    };
    let delay = backoff(attempts - 1, retry.base, retry.max, &mut rand::thread_rng());
    let n = tx
        .execute(
            "UPDATE tenant_registry
                SET attempts = $2, status = $3, last_error = $4,
                    next_attempt_at = now() + make_interval(secs => $5), updated_at = now(),
                    lease_token = NULL, lease_expires_at = NULL
              WHERE id = $1 AND ($6::uuid IS NULL OR lease_token = $6)",
            &[
                t.id.uuid_ref(),
                &attempts,
                &status.as_str(),
                &message,
                &delay.as_secs_f64(),
                &lease,
            ],
        )
        .await?;
    if n == 0 {
        return Ok(None);
    }
    tracing::warn!(attempts, error = %message, "reconcile attempt failed");
    record_event(
        tx,
        t.id,
        ACTOR,
        if give_up { "failed" } else { "attempt_failed" },
        Some((t.status, t.desired_state)),
        (status, t.desired_state),
        json!({ "attempt": attempts, "error": message, "retry_in_secs": delay.as_secs_f64() }),
    )
    .await?;
    if give_up {
        wake_workers(tx).await?;
    }
    Ok(Some(status))
}

/// The status a goal passes through while the reconciler works on it. An
/// active tenant that is only repaired stays active.
pub(super) fn transitional(t: &Tenant) -> TenantStatus {
    match t.desired_state {
        DesiredState::Active if t.status == TenantStatus::Active => TenantStatus::Active,
        DesiredState::Active => TenantStatus::Provisioning,
        DesiredState::Suspended => TenantStatus::Suspending,
        DesiredState::Deleted => TenantStatus::Deleting,
    }
}

/// Exponential backoff with "equal jitter": half the delay fixed, half random,
/// so that tenants failing together do not retry together.
pub fn backoff(attempt: i32, base: Duration, max: Duration, rng: &mut impl Rng) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.clamp(0, 20) as u32);
    let capped = exp.min(max);
    let half = capped / 2;
    half + half.mul_f64(rng.gen::<f64>())
}

#[cfg(test)]
mod tests {
    use rand::rngs::mock::StepRng;

    use super::*;

    #[test]
    fn backoff_grows_exponentially_up_to_the_cap_with_jitter() {
        let base = Duration::from_secs(1);
        let max = Duration::from_secs(60);
        let mut low = StepRng::new(0, 0);
        assert_eq!(backoff(0, base, max, &mut low), Duration::from_millis(500));
        assert_eq!(backoff(3, base, max, &mut low), Duration::from_secs(4));
        assert_eq!(backoff(30, base, max, &mut low), Duration::from_secs(30));
        let mut rng = rand::thread_rng();
        for attempt in 0..10 {
            let d = backoff(attempt, base, max, &mut rng);
            let full = (base * (1 << attempt)).min(max);
            assert!(d >= full / 2 && d <= full, "{attempt}: {d:?}");
        }
    }
}
