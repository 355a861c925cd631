//! Optional write-back (`clerk.write_back`): once a tenant is active, its id
//! and slug go into the organization's `public_metadata`, so a Clerk session
//! token template can carry `tenant_id` into tokens (the resolver checks it
//! against the organization). The client's per-organization rate limit keeps
//! within Clerk's limit for that endpoint.

use std::sync::Arc;
use std::time::Duration;

use clerk_api::ClerkClient;
use deadpool_postgres::Pool;
use registry::ids::ClerkOrgId;
use serde_json::json;
use tokio::sync::watch;

/// Writes back every active tenant not written yet; returns how many.
pub async fn run_once(pool: &Pool, clerk: &ClerkClient) -> anyhow::Result<usize> {
    let client = pool.get().await?;
    let rows = client
        .query(
            "SELECT id, clerk_org_id, slug FROM tenant_registry
              WHERE status = 'active' AND NOT metadata ? 'clerk_written_at'
              ORDER BY id LIMIT 100",
            &[],
        )
        .await?;
    let mut written = 0;
    for row in rows {
        let id: uuid::Uuid = row.get(0);
        let org: String = row.get(1);
        let slug: Option<String> = row.get(2);
        let Ok(org_id) = ClerkOrgId::parse(&org) else {
            continue;
        };
        match clerk
            .merge_organization_metadata(&org_id, json!({ "tenant_id": id, "tenant_slug": slug }))
            .await
        {
            Ok(_) => {
                client
                    .execute(
                        "UPDATE tenant_registry
                            SET metadata = metadata || jsonb_build_object('clerk_written_at', now())
                          WHERE id = $1",
                        &[&id],
                    )
                    .await?;
                written += 1;
            }
            Err(e) => {
                tracing::warn!(org_id = %org, error = %e, "write-back to Clerk failed; will retry")
            }
        }
    }
    Ok(written)
}

/// Runs [`run_once`] every `interval` until `stop` says true.
pub fn spawn(
    pool: Pool,
    clerk: Arc<ClerkClient>,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        while !*stop.borrow() {
            if let Err(e) = run_once(&pool, &clerk).await {
                tracing::warn!(error = %e, "write-back pass failed");
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stop.changed() => {}
            }
        }
    });
}
