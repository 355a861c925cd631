//! Backfill and re-sync from the Clerk Backend API: webhooks can be missed
//! (an endpoint down longer than Svix retries, a secret rotated wrongly), so
//! the directory and the registry can be brought back in step with Clerk.
//!
//! Backfill writes through the same watermark-guarded directory functions as
//! the webhook intake, so it never rolls back a newer state and never
//! resurrects a deleted organization. Tenants whose organization no longer
//! exists in Clerk, and memberships Clerk no longer has, are only reported,
//! unless pruning was asked for.

use std::collections::HashSet;

use api::{BackfillReport, SyncStatus};
use chrono::Utc;
use clerk_api::{ClerkClient, ClerkError, Organization};
use deadpool_postgres::Pool;
use model::ClerkOrgId;
use registry::directory::{self, Change};
use registry::tenants::{self, TenantKey};
use registry::{sync_runs, RegistryError};
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    #[error("Clerk Backend API: {0}")]
    Clerk(#[from] ClerkError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

impl From<tokio_postgres::Error> for BackfillError {
    fn from(e: tokio_postgres::Error) -> Self {
        BackfillError::Registry(e.into())
    }
}

impl From<deadpool_postgres::PoolError> for BackfillError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        BackfillError::Registry(e.into())
    }
}

/// Runs `work` as one recorded `sync_runs` row.
async fn recorded(
    pool: &Pool,
    scope: &str,
    prune: bool,
    work: impl std::future::Future<Output = Result<BackfillReport, BackfillError>>,
) -> Result<BackfillReport, BackfillError> {
    let run = sync_runs::start(&pool.get().await?, scope, prune).await?;
    let result = work.await;
    let (report, error) = match &result {
        Ok(r) => (serde_json::to_value(r).unwrap_or(Value::Null), None),
        Err(e) => (Value::Object(Default::default()), Some(e.to_string())),
    };
    sync_runs::finish(&pool.get().await?, run, &report, error.as_deref()).await?;
    result
}

/// Applies one Clerk organization; records it as created or updated.
async fn apply_organization(
    pool: &Pool,
    org: &Organization,
    report: &mut BackfillReport,
) -> Result<(), BackfillError> {
    let mut client = pool.get().await?;
    let existed = tenants::get(&client, TenantKey::ClerkOrg(&org.id))
        .await?
        .is_some();
    let tx = client.transaction().await?;
    let change = directory::upsert_organization(&tx, org, "sync").await?;
    tx.commit().await?;
    if change == Change::Applied {
        let list = if existed {
            &mut report.updated
        } else {
            &mut report.created
        };
        list.push(org.id.to_string());
    }
    Ok(())
}

/// Applies an organization's memberships; with `prune`, soft-deletes the
/// ones the directory has and Clerk no longer does.
async fn apply_memberships(
    pool: &Pool,
    clerk: &ClerkClient,
    org: &ClerkOrgId,
    prune: bool,
    report: &mut BackfillReport,
) -> Result<(), BackfillError> {
    let memberships = clerk.list_organization_memberships(org).await?;
    report.memberships_in_clerk += memberships.len();
    let mut client = pool.get().await?;
    for m in &memberships {
        let tx = client.transaction().await?;
        let change = directory::upsert_membership(&tx, m, false).await?;
        tx.commit().await?;
        match change {
            Change::Applied => report.memberships_updated += 1,
            Change::Stale => {}
            Change::Incomplete(why) => {
                tracing::warn!(membership = %m.id, why, "membership skipped");
                report.memberships_skipped += 1;
            }
        }
    }
    if prune {
        let keep: Vec<&str> = memberships.iter().map(|m| m.id.as_str()).collect();
        let tx = client.transaction().await?;
        let n = directory::prune_memberships(&tx, org, &keep).await?;
        tx.commit().await?;
        report.memberships_pruned += n as usize;
    }
    Ok(())
}

async fn mark_deleted(
    pool: &Pool,
    org: &ClerkOrgId,
    report: &mut BackfillReport,
) -> Result<(), BackfillError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    directory::delete_organization(&tx, org, Utc::now(), "sync:prune").await?;
    tx.commit().await?;
    report.pruned.push(org.to_string());
    Ok(())
}

/// Every organization, user and membership Clerk has.
pub async fn backfill_all(
    pool: &Pool,
    clerk: &ClerkClient,
    prune: bool,
) -> Result<BackfillReport, BackfillError> {
    recorded(pool, "all", prune, backfill_all_inner(pool, clerk, prune)).await
}

async fn backfill_all_inner(
    pool: &Pool,
    clerk: &ClerkClient,
    prune: bool,
) -> Result<BackfillReport, BackfillError> {
    let mut report = BackfillReport::default();
    let orgs = clerk.list_all_organizations().await?;
    report.organizations_in_clerk = orgs.len();
    for org in &orgs {
        apply_organization(pool, org, &mut report).await?;
        apply_memberships(pool, clerk, &org.id, prune, &mut report).await?;
    }

    let users = clerk.list_all_users().await?;
    report.users_in_clerk = users.len();
    let mut client = pool.get().await?;
    for u in &users {
        let tx = client.transaction().await?;
        let change = directory::upsert_user(&tx, u).await?;
        tx.commit().await?;
        report.users_updated += usize::from(change == Change::Applied);
    }

    let in_clerk: HashSet<&ClerkOrgId> = orgs.iter().map(|o| &o.id).collect();
    let live = tenants::live_organizations(&client).await?;
    drop(client);
    let missing: Vec<ClerkOrgId> = live.into_iter().filter(|o| !in_clerk.contains(o)).collect();
    report.missing_in_clerk = missing.iter().map(ToString::to_string).collect();
    if prune {
        for org in &missing {
            mark_deleted(pool, org, &mut report).await?;
        }
    }
    Ok(report)
}

/// One organization (and its memberships). When Clerk no longer has it, it
/// is reported missing, and marked for deletion only with `prune`.
pub async fn backfill_organization(
    pool: &Pool,
    clerk: &ClerkClient,
    org: &ClerkOrgId,
    prune: bool,
) -> Result<BackfillReport, BackfillError> {
    let work = async {
        let mut report = BackfillReport::default();
        match clerk.get_organization(org).await? {
            Some(o) => {
                report.organizations_in_clerk = 1;
                apply_organization(pool, &o, &mut report).await?;
                apply_memberships(pool, clerk, org, prune, &mut report).await?;
            }
            None => {
                report.missing_in_clerk.push(org.to_string());
                if prune {
                    mark_deleted(pool, org, &mut report).await?;
                }
            }
        }
        Ok(report)
    };
    recorded(pool, org.as_str(), prune, work).await
}

/// The state of syncing and of the webhook inbox, for GET /internal/v1/sync/status.
pub async fn status(pool: &Pool) -> Result<SyncStatus, BackfillError> {
    let s = sync_runs::status(&pool.get().await?).await?;
    Ok(SyncStatus {
        last_sync: s.last_sync,
        tenants: s.tenants,
        users: s.users,
        memberships: s.memberships,
        webhooks_received: s.webhooks_received,
        webhooks_dead: s.webhooks_dead,
        last_webhook_at: s.last_webhook_at,
        last_dead_webhook_at: s.last_dead_webhook_at,
    })
}
