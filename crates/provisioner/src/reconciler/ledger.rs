//! The reconciler's bookkeeping in the control-plane database: claiming a
//! tenant, recording where it got to or why it failed, and the audit trail
//! of each transition.

use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use model::{DesiredState, PgIdent, TenantId, TenantStatus};
use rand::Rng;
use registry::tenants::{notify_changed, record_event, Tenant, TENANT_COLUMNS, TENANT_FROM};
use registry::RegistryError;
use serde_json::json;
use uuid::Uuid;

pub(super) const ACTOR: &str = "reconciler";

/// Picks the next tenant that needs work and locks it for the rest of `tx`
/// (`SKIP LOCKED`, so any number of workers can run).
pub(super) async fn pick(tx: &Transaction<'_>) -> Result<Option<Tenant>, RegistryError> {
    let claim = format!(
        "SELECT {TENANT_COLUMNS} FROM {TENANT_FROM}
          WHERE t.status <> t.desired_state
            AND (t.status <> 'failed' OR t.desired_state = 'deleted')
            AND t.next_attempt_at <= now()
          ORDER BY t.next_attempt_at
          LIMIT 1
          FOR UPDATE OF t SKIP LOCKED"
    );
    tx.query_opt(&claim, &[])
        .await?
        .as_ref()
        .map(Tenant::from_row)
        .transpose()
}

/// Locks a claimed tenant again for the work phase, unless another worker
/// holds it or it needs no more work.
pub(super) async fn relock(
    tx: &Transaction<'_>,
    tenant: TenantId,
) -> Result<Option<Tenant>, RegistryError> {
    let relock = format!(
        "SELECT {TENANT_COLUMNS} FROM {TENANT_FROM}
          WHERE t.id = $1 AND t.status <> t.desired_state
          FOR UPDATE OF t SKIP LOCKED"
    );
    tx.query_opt(&relock, &[tenant.uuid_ref()])
        .await?
        .as_ref()
        .map(Tenant::from_row)
        .transpose()
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

/// What a successful work phase leaves behind.
pub(super) enum Progress {
    Reached {
        status: TenantStatus,
        template_version: Option<i32>,
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
        } => {
            let deleted = status == TenantStatus::Deleted;
            tx.execute(
                "UPDATE tenant_registry
                    SET status = $2, attempts = 0, last_error = NULL, next_attempt_at = now(),
                        template_version = coalesce($3, template_version),
                        purge_after = CASE WHEN $4 THEN purge_after END,
                        deleted_at = CASE WHEN $4 THEN now() END,
                        db_password_enc = CASE WHEN $4 THEN NULL ELSE db_password_enc END,
                        updated_at = now()
                  WHERE id = $1",
                &[
                    t.id.uuid_ref(),
                    &status.as_str(),
                    &template_version,
                    &deleted,
                ],
            )
            .await?;
            (status, json!({ "template_version": template_version }))
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
    if status != t.status || t.purge_after.is_none() && status == TenantStatus::Deleting {
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
    let give_up = attempts >= retry.max_attempts;
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

/// The status a goal passes through while the reconciler works on it.
pub(super) fn transitional(goal: DesiredState) -> TenantStatus {
    match goal {
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
