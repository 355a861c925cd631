//! The internal API's wire types (JSON), with their OpenAPI schemas.
#![forbid(unsafe_code)]

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Every error answer of tenant-plane, from the internal API, the webhook
/// endpoint and the resolver's extractors alike: a stable machine-readable
/// code and a human message.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// e.g. `tenant_unknown`, `token_expired`, `unauthorized`.
    pub error: String,
    pub message: String,
}

impl ErrorBody {
    pub fn new(error: &str, message: impl Into<String>) -> Self {
        Self {
            error: error.to_owned(),
            message: message.into(),
        }
    }
}

/// A tenant as the registry holds it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Tenant {
    pub id: Uuid,
    pub clerk_org_id: String,
    pub slug: Option<String>,
    pub name: String,
    /// pending, provisioning, active, suspending, suspended, deleting, deleted, failed
    pub status: String,
    /// active, suspended, deleted
    pub desired_state: String,
    pub plan: String,
    pub db_host: Option<String>,
    pub db_name: Option<String>,
    pub db_role: Option<String>,
    pub template_version: Option<i32>,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
    pub purge_after: Option<DateTime<Utc>>,
}

/// A page of tenants, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TenantPage {
    pub data: Vec<Tenant>,
    /// Pass as `after` to get the next page; absent on the last page.
    pub next_after: Option<Uuid>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
pub struct ListTenantsQuery {
    /// Only tenants in this status.
    pub status: Option<String>,
    /// The `next_after` of the previous page.
    pub after: Option<Uuid>,
    /// Page size, 1-500 (default 100).
    pub limit: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ResolveRequest {
    /// A Clerk session token (JWT), as the application received it.
    pub token: String,
    /// While the tenant is being provisioned (or not registered yet), wait
    /// up to this many milliseconds (at most 60000) for it, instead of
    /// answering 503 at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<u64>,
}

/// Long-polling a look-up: answer as soon as the tenant has a status.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
pub struct WaitQuery {
    /// Answer as soon as the tenant has this status (`active`, ...), or with
    /// its current status when the time is up. Waiting for `active` ends
    /// early at `failed` or `deleted`. An organization not registered yet
    /// is waited for too (404 when the time is up).
    pub wait_for: Option<String>,
    /// How long to wait at most, as `10s` or `500ms` (default 10s, at most
    /// 60s).
    pub timeout: Option<String>,
}

/// The verified claims of the session.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionClaims {
    pub user_id: String,
    pub session_id: Option<String>,
    pub org_id: String,
    pub org_role: Option<String>,
    pub org_slug: Option<String>,
    pub org_permissions: Vec<String>,
}

/// How to reach the tenant's database as its own role.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Connection {
    pub host: String,
    pub port: u16,
    pub database: String,
    pub role: String,
    /// Only when the server is configured to expose it
    /// (`internal.expose_passwords`).
    pub password: Option<String>,
    /// TLS to use, as libpq's sslmode: disable, prefer, require, verify-ca
    /// or verify-full (the db host's setting, else the control plane's).
    /// `require` with a CA behaves as libpq does, so it is given as
    /// `verify-ca`.
    #[serde(default = "default_sslmode")]
    pub sslmode: String,
    /// The CAs the server's certificate chains to, as libpq's sslrootcert:
    /// a file path on the control plane's machine, or `system`. Absent
    /// when none is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sslrootcert: Option<String>,
}

/// libpq's default, for answers of servers that predate the field.
fn default_sslmode() -> String {
    "prefer".to_owned()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ResolveResponse {
    pub tenant: Tenant,
    pub claims: SessionClaims,
    pub connection: Connection,
}

/// What a backfill from the Clerk Backend API found and did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BackfillReport {
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
    /// Memberships Clerk sent without their member, so not stored.
    pub memberships_skipped: usize,
    /// Memberships the directory had and Clerk no longer does, soft-deleted
    /// (only with prune).
    pub memberships_pruned: usize,
}

/// The state of syncing and of the webhook inbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SyncStatus {
    /// The newest sync run, if any: scope, times, report or error.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub last_sync: Option<serde_json::Value>,
    pub tenants: i64,
    pub users: i64,
    pub memberships: i64,
    pub webhooks_received: i64,
    pub webhooks_dead: i64,
    pub last_webhook_at: Option<DateTime<Utc>>,
    pub last_dead_webhook_at: Option<DateTime<Utc>>,
}
