//! Optional write-back (`clerk.write_back`): once a tenant is active, its id
//! and slug go into the organization's `public_metadata`, so a Clerk session
//! token template can carry `tenant_id` into tokens (the resolver checks it
//! against the organization). When the tenant is deleted they are taken out
//! again, so a token never names a tenant that is gone. The client's
//! per-organization rate limit keeps within Clerk's limit for that endpoint.

use std::sync::Arc;
use std::time::Duration;

use clerk_api::{ClerkClient, ClerkError};
use deadpool_postgres::Pool;
use registry::tenants::{self, WriteBack};
use registry::RegistryError;
use serde_json::json;
use tokio::sync::watch;

/// Does the write-back's pending work, up to 100 tenants; returns how many
/// were written or erased.
pub async fn run_once(pool: &Pool, clerk: &ClerkClient) -> Result<usize, RegistryError> {
    let client = pool.get().await?;
    let pending = tenants::awaiting_write_back(&client, 100).await?;
    let mut done = 0;
    for (tenant, action) in pending {
        let org = &tenant.clerk_org_id;
        // A `null` removes the key: Clerk deep-merges the metadata.
        let metadata = match action {
            WriteBack::Write => json!({ "tenant_id": tenant.id, "tenant_slug": tenant.slug }),
            WriteBack::Erase => json!({ "tenant_id": null, "tenant_slug": null }),
        };
        match clerk.merge_organization_metadata(org, metadata).await {
            Ok(_) => {}
            // The organization is gone from Clerk: nothing is left to erase.
            Err(ClerkError::Http { status: 404, .. }) if action == WriteBack::Erase => {}
            Err(e) => {
                tracing::warn!(org_id = %org, error = %e, "write-back to Clerk failed; will retry");
                continue;
            }
        }
        tenants::mark_written_back(&client, tenant.id, action).await?;
        done += 1;
    }
    Ok(done)
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
