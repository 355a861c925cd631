//! The reconciler's bookkeeping in the control-plane database: claiming a
//! tenant, recording where it got to or why it failed, and the audit trail
//! of each transition.

use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use model::{DesiredState, PgIdent, TenantId, TenantStatus};
use rand::Rng;
use registry::tenants::{self, notify_changed, record_event, Tenant, PRIVILEGE_MODEL};
use registry::RegistryError;
use serde_json::json;
use uuid::Uuid;

use crate::limits::Plans;

pub(super) const ACTOR: &str = "reconciler";

/// Tenants that need work: those away from their desired state (failed
/// ones only towards deletion), and active ones whose database is behind
/// the privilege model or whose role is behind its plan's limits ($1, $2).
const NEEDS_WORK: &str = "((t.status <> t.desired_state
                           AND (t.status <> 'failed' OR t.desired_state = 'deleted'))
                          OR (t.status = 'active' AND t.desired_state = 'active'
                              AND (t.privilege_model < $1
                                   OR t.limits_applied IS DISTINCT FROM ($2::jsonb ->> t.plan))))";

/// Picks the next tenant that needs work and locks it for the rest of `tx`
/// (`SKIP LOCKED`, so any number of workers can run).
pub(super) async fn pick(
    tx: &Transaction<'_>,
    plans: &Plans,
) -> Result<Option<Tenant>, RegistryError> {
    let claim = format!(
        "SELECT t.id FROM tenant_registry t
          WHERE {NEEDS_WORK} AND t.next_attempt_at <= now()
          ORDER BY t.next_attempt_at
          LIMIT 1
          FOR UPDATE OF t SKIP LOCKED"
    );
    let id = tx
        .query_opt(&claim, &[&PRIVILEGE_MODEL, &plans.fingerprints()])
        .await?
        .map(|r| r.get::<_, Uuid>(0));
    read_locked(tx, id).await
}

/// The whole row of a tenant this transaction has just locked. Read by a
/// statement of its own: a row locked after a concurrent update is
/// re-checked alone, so columns joined in the locking statement (the
/// host's) could belong to the version before that update.
async fn read_locked(
    tx: &Transaction<'_>,
    id: Option<Uuid>,
) -> Result<Option<Tenant>, RegistryError> {
    match id {
        Some(id) => tenants::get(tx, tenants::TenantKey::Id(TenantId::from(id))).await,
        None => Ok(None),
    }
}

/// How long until the earliest attempt that is due later (a tenant backing
/// off after a failure), if any: idle workers wake up for it.
pub(super) async fn next_due(
    tx: &Transaction<'_>,
    plans: &Plans,
) -> Result<Option<std::time::Duration>, RegistryError> {
    let sql = format!(
        "SELECT extract(epoch FROM min(t.next_attempt_at) - now())::float8 AS secs
           FROM tenant_registry t WHERE {NEEDS_WORK}"
    );
    let secs: Option<f64> = tx
        .query_one(&sql, &[&PRIVILEGE_MODEL, &plans.fingerprints()])
        .await?
        .get("secs");
    Ok(secs.map(|s| std::time::Duration::from_secs_f64(s.max(0.0))))
}

/// Locks a claimed tenant again for the work phase, unless another worker
/// holds it or it needs no more work.
pub(super) async fn relock(
    tx: &Transaction<'_>,
    tenant: TenantId,
    plans: &Plans,
) -> Result<Option<Tenant>, RegistryError> {
    let relock = format!(
        "SELECT t.id FROM tenant_registry t
          WHERE t.id = $3 AND {NEEDS_WORK}
          FOR UPDATE OF t SKIP LOCKED"
    );
    let id = tx
        .query_opt(
            &relock,
            &[&PRIVILEGE_MODEL, &plans.fingerprints(), tenant.uuid_ref()],
        )
        .await?
        .map(|r| r.get::<_, Uuid>(0));
    read_locked(tx, id).await
}

/// Records the transitional status and, for an active goal, the placement
/// and sealed password, before anything exists on a server.
pub(super) async fn record_claim(
    tx: &Transaction<'_>,
    t: &Tenant,
    transitional: TenantStatus,
    host_id: Option<Uuid>,
    name: Option<&PgIdent>,
    password: Option<&[u8]>,
) -> Result<(), RegistryError> {
    tx.execute(
        "UPDATE tenant_registry
            SET status = $2, db_host_id = $3,
                db_name = coalesce(db_name, $4), db_role = coalesce(db_role, $4),
                db_password_enc = $5, updated_at = now()
          WHERE id = $1",
        &[
            t.id.uuid_ref(),
            &transitional.as_str(),
            &host_id,
            &name.map(PgIdent::as_str),
            &password,
        ],
    )
    .await?;
    if transitional != t.status {
        record_event(
            tx,
            t.id,
            ACTOR,
            transitional.as_str(),
            Some((t.status, t.desired_state)),
            (transitional, t.desired_state),
            json!({ "db_host_id": host_id }),
        )
        .await?;
    }
    Ok(())
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

pub(super) async fn record_progress(
    tx: &Transaction<'_>,
    t: &Tenant,
    progress: Progress,
) -> Result<TenantStatus, RegistryError> {
    let (status, detail) = match progress {
        Progress::Reached {
            status,
            template_version,
            model,
        } => {
            let deleted = status == TenantStatus::Deleted;
            let (limits, resealed, changed) = match &model {
                Some(m) => (Some(&m.limits), m.resealed.as_ref(), Some(&m.changed)),
                None => (None, None, None),
            };
            tx.execute(
                "UPDATE tenant_registry
                    SET status = $2, attempts = 0, last_error = NULL, next_attempt_at = now(),
                        template_version = coalesce($3, template_version),
                        purge_after = CASE WHEN $4 THEN purge_after END,
                        deleted_at = CASE WHEN $4 THEN now() END,
                        db_password_enc = CASE WHEN $4 THEN NULL
                                               ELSE coalesce($7, db_password_enc) END,
                        privilege_model = CASE WHEN $5 THEN $8 ELSE privilege_model END,
                        limits_applied = coalesce($6, limits_applied),
                        updated_at = now()
                  WHERE id = $1",
                &[
                    t.id.uuid_ref(),
                    &status.as_str(),
                    &template_version,
                    &deleted,
                    &model.is_some(),
                    &limits,
                    &resealed,
                    &PRIVILEGE_MODEL,
                ],
            )
            .await?;
            let mut detail = json!({ "template_version": template_version });
            if let Some(changed) = changed.filter(|c| !c.is_empty()) {
                detail["privilege_model"] = json!({ "to": PRIVILEGE_MODEL, "changed": changed });
            }
            (status, detail)
        }
        Progress::Retained { purge_after } => {
            tx.execute(
                "UPDATE tenant_registry
                    SET status = 'deleting', attempts = 0, last_error = NULL,
                        purge_after = $2, next_attempt_at = $2, updated_at = now()
                  WHERE id = $1",
                &[t.id.uuid_ref(), &purge_after],
            )
            .await?;
            (
                TenantStatus::Deleting,
                json!({ "purge_after": purge_after }),
            )
        }
    };
    let repaired = status == t.status && t.privilege_model < PRIVILEGE_MODEL;
    if status != t.status || repaired || t.purge_after.is_none() && status == TenantStatus::Deleting
    {
        record_event(
            tx,
            t.id,
            ACTOR,
            status.as_str(),
            Some((t.status, t.desired_state)),
            (status, t.desired_state),
            detail,
        )
        .await?;
    }
    notify_changed(tx, t.id).await?;
    if status == TenantStatus::Active && t.status == TenantStatus::Provisioning {
        // From registration (the webhook) to a usable database.
        let seconds = (Utc::now() - t.created_at).num_milliseconds() as f64 / 1000.0;
        metrics::histogram!("tenant_plane_provisioning_seconds").record(seconds);
    }
    metrics::counter!("tenant_plane_reconciled_total", "status" => status.as_str()).increment(1);
    tracing::info!(status = %status, "tenant reconciled");
    Ok(status)
}

/// How failures back off.
#[derive(Debug, Clone, Copy)]
pub(super) struct Retry {
    pub max_attempts: i32,
    pub base: Duration,
    pub max: Duration,
}

/// Records a failed attempt with its backoff, or gives up after the last.
pub(super) async fn record_failure(
    tx: &Transaction<'_>,
    t: &Tenant,
    message: &str,
    retry: Retry,
) -> Result<TenantStatus, RegistryError> {
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
    tracing::warn!(attempts, error = %message, "reconcile attempt failed");
    tx.execute(
        "UPDATE tenant_registry
            SET attempts = $2, status = $3, last_error = $4,
                next_attempt_at = now() + make_interval(secs => $5), updated_at = now()
          WHERE id = $1",
        &[
            t.id.uuid_ref(),
            &attempts,
            &status.as_str(),
            &message,
            &delay.as_secs_f64(),
        ],
    )
    .await?;
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
        notify_changed(tx, t.id).await?;
    }
    Ok(status)
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
