//! Backfill and re-sync from the Clerk Backend API: webhooks can be missed
//! (an endpoint down longer than Svix retries, a secret rotated wrongly), so
//! the directory and the registry can be brought back in step with Clerk.
//!
//! Sync writes through the same watermark-guarded directory functions as the
//! webhook intake, so it never rolls back a newer state and never resurrects
//! a deleted organization. Tenants whose organization no longer exists in
//! Clerk are only reported, unless pruning was asked for.

use std::collections::HashSet;

use chrono::{DateTime, TimeZone, Utc};
use clerk_api::{ClerkClient, ClerkError};
use deadpool_postgres::Pool;
use registry::directory::{self, Change};
use registry::ids::ClerkOrgId;
use registry::tenants::{self, TenantKey};
use registry::RegistryError;
use serde::Serialize;
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("Clerk Backend API: {0}")]
    Clerk(#[from] ClerkError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

impl From<tokio_postgres::Error> for SyncError {
    fn from(e: tokio_postgres::Error) -> Self {
        SyncError::Registry(e.into())
    }
}

/// What a sync found and did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SyncReport {
    pub organizations_in_clerk: usize,
    /// Organizations Clerk has and the registry did not: tenants created.
    pub created: Vec<String>,
    /// Organizations whose name or slug was behind Clerk's.
    pub updated: Vec<String>,
    /// Registry tenants whose organization Clerk no longer has.
    pub missing_in_clerk: Vec<String>,
    /// Of those, the ones marked for deletion (only with prune).
    pub pruned: Vec<String>,
    pub users_in_clerk: usize,
    pub users_updated: usize,
    pub memberships_in_clerk: usize,
    pub memberships_updated: usize,
}

fn millis(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or(DateTime::UNIX_EPOCH)
}

/// Starts a `sync_runs` row; returns its id.
async fn start_run(pool: &Pool, scope: &str, prune: bool) -> Result<i64, SyncError> {
    let client = pool.get().await.map_err(RegistryError::from)?;
    Ok(client
        .query_one(
            "INSERT INTO sync_runs (scope, prune) VALUES ($1, $2) RETURNING id",
            &[&scope, &prune],
        )
        .await?
        .get(0))
}

async fn finish_run(
    pool: &Pool,
    id: i64,
    result: &Result<SyncReport, SyncError>,
) -> Result<(), SyncError> {
    let client = pool.get().await.map_err(RegistryError::from)?;
    let (report, error) = match result {
        Ok(r) => (serde_json::to_value(r).unwrap_or(Value::Null), None),
        Err(e) => (Value::Object(Default::default()), Some(e.to_string())),
    };
    client
        .execute(
            "UPDATE sync_runs SET finished_at = now(), report = $2, error = $3 WHERE id = $1",
            &[&id, &report, &error],
        )
        .await?;
    Ok(())
}

/// Applies one Clerk organization; records it as created or updated.
async fn apply_organization(
    pool: &Pool,
    org: &clerk_api::Organization,
    report: &mut SyncReport,
) -> Result<(), SyncError> {
    let mut client = pool.get().await.map_err(RegistryError::from)?;
    let existed = tenants::get(&client, TenantKey::ClerkOrg(org.id.as_str()))
        .await?
        .is_some();
    let tx = client.transaction().await?;
    let change = directory::upsert_organization(
        &tx,
        &directory::Organization {
            id: org.id.clone(),
            name: org.name.clone(),
            slug: org.slug.clone(),
            updated_at: millis(org.updated_at),
        },
        "sync",
    )
    .await?;
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

async fn apply_memberships(
    pool: &Pool,
    clerk: &ClerkClient,
    org: &ClerkOrgId,
    report: &mut SyncReport,
) -> Result<(), SyncError> {
    let memberships = clerk.list_organization_memberships(org).await?;
    report.memberships_in_clerk += memberships.len();
    let mut client = pool.get().await.map_err(RegistryError::from)?;
    for m in &memberships {
        let Some(user_id) = m.user_id() else { continue };
        let tx = client.transaction().await?;
        let change = directory::upsert_membership(
            &tx,
            &directory::Membership {
                id: m.id.clone(),
                org_id: m.organization.id.clone(),
                user_id: user_id.clone(),
                role: m.role.clone(),
                permissions: m.permissions.clone(),
                updated_at: millis(m.updated_at),
            },
            false,
        )
        .await?;
        tx.commit().await?;
        report.memberships_updated += usize::from(change == Change::Applied);
    }
    Ok(())
}

async fn mark_deleted(pool: &Pool, org: &str, report: &mut SyncReport) -> Result<(), SyncError> {
    let Ok(id) = ClerkOrgId::parse(org) else {
        return Ok(());
    };
    let mut client = pool.get().await.map_err(RegistryError::from)?;
    let tx = client.transaction().await?;
    directory::delete_organization(&tx, &id, Utc::now(), "sync:prune").await?;
    tx.commit().await?;
    report.pruned.push(org.to_owned());
    Ok(())
}

/// Every organization, user and membership Clerk has.
pub async fn sync_all(
    pool: &Pool,
    clerk: &ClerkClient,
    prune: bool,
) -> Result<SyncReport, SyncError> {
    let run = start_run(pool, "all", prune).await?;
    let result = sync_all_inner(pool, clerk, prune).await;
    finish_run(pool, run, &result).await?;
    result
}

async fn sync_all_inner(
    pool: &Pool,
    clerk: &ClerkClient,
    prune: bool,
) -> Result<SyncReport, SyncError> {
    let mut report = SyncReport::default();
    let orgs = clerk.list_all_organizations().await?;
    report.organizations_in_clerk = orgs.len();
    for org in &orgs {
        apply_organization(pool, org, &mut report).await?;
        apply_memberships(pool, clerk, &org.id, &mut report).await?;
    }

    let users = clerk.list_all_users().await?;
    report.users_in_clerk = users.len();
    let mut client = pool.get().await.map_err(RegistryError::from)?;
    for u in &users {
        let tx = client.transaction().await?;
        let change = directory::upsert_user(
            &tx,
            &directory::User {
                id: u.id.clone(),
                primary_email: u.primary_email().map(str::to_owned),
                first_name: u.first_name.clone(),
                last_name: u.last_name.clone(),
                username: u.username.clone(),
                image_url: u.image_url.clone(),
                external_id: u.external_id.clone(),
                public_metadata: u.public_metadata.clone(),
                updated_at: millis(u.updated_at),
            },
        )
        .await?;
        tx.commit().await?;
        report.users_updated += usize::from(change == Change::Applied);
    }
    drop(client);

    let in_clerk: HashSet<&str> = orgs.iter().map(|o| o.id.as_str()).collect();
    let client = pool.get().await.map_err(RegistryError::from)?;
    let live: Vec<String> = client
        .query(
            "SELECT clerk_org_id FROM tenant_registry WHERE desired_state <> 'deleted' ORDER BY 1",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    drop(client);
    report.missing_in_clerk = live
        .into_iter()
        .filter(|o| !in_clerk.contains(o.as_str()))
        .collect();
    if prune {
        for org in report.missing_in_clerk.clone() {
            mark_deleted(pool, &org, &mut report).await?;
        }
    }
    Ok(report)
}

/// One organization (and its memberships). When Clerk no longer has it, it
/// is reported missing, and marked for deletion only with `prune`.
pub async fn sync_organization(
    pool: &Pool,
    clerk: &ClerkClient,
    org: &ClerkOrgId,
    prune: bool,
) -> Result<SyncReport, SyncError> {
    let run = start_run(pool, org.as_str(), prune).await?;
    let result = async {
        let mut report = SyncReport::default();
        match clerk.get_organization(org).await? {
            Some(o) => {
                report.organizations_in_clerk = 1;
                apply_organization(pool, &o, &mut report).await?;
                apply_memberships(pool, clerk, org, &mut report).await?;
            }
            None => {
                report.missing_in_clerk.push(org.to_string());
                if prune {
                    mark_deleted(pool, org.as_str(), &mut report).await?;
                }
            }
        }
        Ok(report)
    }
    .await;
    finish_run(pool, run, &result).await?;
    result
}

/// The state of syncing and of the webhook inbox, for GET /internal/v1/sync/status.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SyncStatus {
    /// The newest sync run, if any: scope, times, report or error.
    #[schema(value_type = Object)]
    pub last_sync: Option<Value>,
    pub tenants: i64,
    pub users: i64,
    pub memberships: i64,
    pub webhooks_received: i64,
    pub webhooks_dead: i64,
    pub last_webhook_at: Option<DateTime<Utc>>,
    pub last_dead_webhook_at: Option<DateTime<Utc>>,
}

pub async fn status(pool: &Pool) -> Result<SyncStatus, SyncError> {
    let client = pool.get().await.map_err(RegistryError::from)?;
    let last_sync: Option<Value> = client
        .query_opt(
            "SELECT jsonb_build_object('id', id, 'scope', scope, 'prune', prune,
                    'started_at', started_at, 'finished_at', finished_at,
                    'report', report, 'error', error)
               FROM sync_runs ORDER BY started_at DESC, id DESC LIMIT 1",
            &[],
        )
        .await?
        .map(|r| r.get(0));
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM tenant_registry),
                    (SELECT count(*) FROM users WHERE deleted_at IS NULL),
                    (SELECT count(*) FROM organization_memberships WHERE deleted_at IS NULL),
                    (SELECT count(*) FROM webhook_events),
                    (SELECT count(*) FROM webhook_events WHERE outcome = 'dead'),
                    (SELECT max(received_at) FROM webhook_events),
                    (SELECT max(received_at) FROM webhook_events WHERE outcome = 'dead')",
            &[],
        )
        .await?;
    Ok(SyncStatus {
        last_sync,
        tenants: row.get(0),
        users: row.get(1),
        memberships: row.get(2),
        webhooks_received: row.get(3),
        webhooks_dead: row.get(4),
        last_webhook_at: row.get(5),
        last_dead_webhook_at: row.get(6),
    })
}
