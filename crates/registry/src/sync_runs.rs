//! The record of directory syncs from the Clerk Backend API (`sync_runs`),
//! and the counts that `GET /internal/v1/sync/status` reports.

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use serde_json::Value;

use crate::RegistryError;

/// Starts a run; returns its id.
pub async fn start(
    client: &impl GenericClient,
    scope: &str,
    prune: bool,
) -> Result<i64, RegistryError> {
    Ok(client
        .query_one(
            "INSERT INTO sync_runs (scope, prune) VALUES ($1, $2) RETURNING id",
            &[&scope, &prune],
        )
        .await?
        .get("id"))
}

/// Ends a run with its report, or with the error that stopped it.
pub async fn finish(
    client: &impl GenericClient,
    id: i64,
    report: &Value,
    error: Option<&str>,
) -> Result<(), RegistryError> {
    client
        .execute(
            "UPDATE sync_runs SET finished_at = now(), report = $2, error = $3 WHERE id = $1",
            &[&id, report, &error],
        )
        .await?;
    Ok(())
}

/// The directory's size and the inbox's state, beside the newest run.
#[derive(Debug, Clone)]
pub struct Status {
    /// The newest run (scope, times, report or error) as one JSON object.
    pub last_sync: Option<Value>,
    pub tenants: i64,
    pub users: i64,
    pub memberships: i64,
    pub webhooks_received: i64,
    pub webhooks_dead: i64,
    pub last_webhook_at: Option<DateTime<Utc>>,
    pub last_dead_webhook_at: Option<DateTime<Utc>>,
}

pub async fn status(client: &impl GenericClient) -> Result<Status, RegistryError> {
    let last_sync: Option<Value> = client
        .query_opt(
            "SELECT jsonb_build_object('id', id, 'scope', scope, 'prune', prune,
                    'started_at', started_at, 'finished_at', finished_at,
                    'report', report, 'error', error) AS run
               FROM sync_runs ORDER BY started_at DESC, id DESC LIMIT 1",
            &[],
        )
        .await?
        .map(|r| r.get("run"));
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM tenant_registry) AS tenants,
                    (SELECT count(*) FROM users WHERE deleted_at IS NULL) AS users,
                    (SELECT count(*) FROM organization_memberships
                      WHERE deleted_at IS NULL) AS memberships,
                    (SELECT count(*) FROM webhook_events) AS received,
                    (SELECT count(*) FROM webhook_events WHERE outcome = 'dead') AS dead,
                    (SELECT max(received_at) FROM webhook_events) AS last_at,
                    (SELECT max(received_at) FROM webhook_events
                      WHERE outcome = 'dead') AS last_dead_at",
            &[],
        )
        .await?;
    Ok(Status {
        last_sync,
        tenants: row.get("tenants"),
        users: row.get("users"),
        memberships: row.get("memberships"),
        webhooks_received: row.get("received"),
        webhooks_dead: row.get("dead"),
        last_webhook_at: row.get("last_at"),
        last_dead_webhook_at: row.get("last_dead_at"),
    })
}
