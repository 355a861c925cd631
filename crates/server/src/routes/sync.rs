//! Backfill from the Clerk Backend API over the internal API.

use actix_web::{get, post, web, HttpResponse};
use api::SyncStatus;
use directory_sync::BackfillError;
use model::ClerkOrgId;
use serde::Deserialize;
use serde_json::json;

use crate::auth::ServiceCaller;
use crate::error::ApiError;
use crate::startup::AppState;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct SyncQuery {
    /// Mark tenants whose organization no longer exists in Clerk as deleted.
    #[serde(default)]
    pub prune: bool,
}

impl From<BackfillError> for ApiError {
    fn from(e: BackfillError) -> Self {
        match e {
            BackfillError::Registry(e) => e.into(),
            BackfillError::Clerk(e) => ApiError::Upstream(e.to_string()),
        }
    }
}

fn clerk(state: &AppState) -> Result<&clerk_api::ClerkClient, ApiError> {
    state.clerk.as_deref().ok_or(ApiError::NotConfigured(
        "the Clerk Backend API is not configured (set clerk.secret_key)",
    ))
}

/// Re-sync one organization and its memberships from Clerk.
#[utoipa::path(
    post, path = "/internal/v1/sync/organizations/{clerk_org_id}", params(SyncQuery),
    responses((status = 200, body = api::BackfillReport), (status = 401, body = api::ErrorBody),
              (status = 502, body = api::ErrorBody), (status = 503, body = api::ErrorBody)),
    security(("service_token" = []))
)]
#[post("/internal/v1/sync/organizations/{clerk_org_id}")]
#[tracing::instrument(name = "sync_organization", skip_all, fields(org_id = %org))]
pub async fn sync_organization(
    _: ServiceCaller,
    state: web::Data<AppState>,
    org: web::Path<String>,
    query: web::Query<SyncQuery>,
) -> Result<HttpResponse, ApiError> {
    let org = ClerkOrgId::parse(org.as_str()).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let report =
        directory_sync::backfill_organization(&state.api, clerk(&state)?, &org, query.prune)
            .await?;
    Ok(HttpResponse::Ok().json(report))
}

/// Start a full backfill from Clerk in the background; follow it at
/// /internal/v1/sync/status.
#[utoipa::path(
    post, path = "/internal/v1/sync/all", params(SyncQuery),
    responses((status = 202, description = "started"), (status = 401, body = api::ErrorBody), (status = 503, body = api::ErrorBody)),
    security(("service_token" = []))
)]
#[post("/internal/v1/sync/all")]
pub async fn sync_all(
    _: ServiceCaller,
    state: web::Data<AppState>,
    query: web::Query<SyncQuery>,
) -> Result<HttpResponse, ApiError> {
    let clerk = state.clerk.clone().ok_or(ApiError::NotConfigured(
        "the Clerk Backend API is not configured (set clerk.secret_key)",
    ))?;
    let pool = state.api.clone();
    let prune = query.prune;
    tokio::spawn(async move {
        if let Err(e) = directory_sync::backfill_all(&pool, &clerk, prune).await {
            tracing::warn!(error = %e, "full sync failed");
        }
    });
    Ok(HttpResponse::Accepted().json(json!({ "status": "started", "prune": prune })))
}

/// The last sync run, directory counts and webhook inbox health.
#[utoipa::path(
    get, path = "/internal/v1/sync/status",
    responses((status = 200, body = SyncStatus), (status = 401, body = api::ErrorBody)),
    security(("service_token" = []))
)]
#[get("/internal/v1/sync/status")]
pub async fn status(
    _: ServiceCaller,
    state: web::Data<AppState>,
) -> Result<web::Json<SyncStatus>, ApiError> {
    Ok(web::Json(directory_sync::status(&state.api).await?))
}
