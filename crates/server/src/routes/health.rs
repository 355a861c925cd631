//! Liveness, readiness and metrics.

use std::time::Duration;

use actix_web::{get, web, HttpResponse};
use serde_json::json;

use crate::error::ApiError;
use crate::startup::AppState;

/// Alive: the process answers. Never touches the database, so a database
/// outage does not get the pod restarted.
#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "alive")))]
#[get("/healthz")]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// The longest `/readyz` takes: past it, the answer is 503, so a probe
/// never times out waiting on a stuck database.
const READINESS_DEADLINE: Duration = Duration::from_secs(2);

/// Ready: the control-plane database answers and holds the schema this binary
/// expects. Checked on a pool of its own, within [`READINESS_DEADLINE`].
#[utoipa::path(get, path = "/readyz", responses((status = 200, description = "ready"), (status = 503, description = "not ready")))]
#[get("/readyz")]
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let check = async {
        let client =
            state.readiness.get().await.map_err(|e| {
                ApiError::NotReady(format!("control-plane database unavailable: {e}"))
            })?;
        registry::schema::check(&client)
            .await
            .map_err(|e| ApiError::NotReady(e.to_string()))
    };
    tokio::time::timeout(READINESS_DEADLINE, check)
        .await
        .map_err(|_| {
            ApiError::NotReady(format!(
                "the control-plane database did not answer within {}s",
                READINESS_DEADLINE.as_secs()
            ))
        })??;
    Ok(HttpResponse::Ok().json(json!({ "status": "ready" })))
}

/// Prometheus metrics. Gauges that describe state (tenants by status,
/// resolver cache and pools) are read at scrape time.
#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text format")))]
#[get("/metrics")]
pub async fn metrics_route(state: web::Data<AppState>) -> HttpResponse {
    if let Ok(client) = state.readiness.get().await {
        if let Ok(counts) = registry::tenants::count_by_status(&client).await {
            for (status, n) in counts {
                metrics::gauge!("tenant_plane_tenants", "status" => status.as_str()).set(n as f64);
            }
        }
        if let (Ok(all), Ok(counts)) = (
            registry::hosts::list(&client).await,
            registry::spares::count_by_host(&client).await,
        ) {
            use registry::spares::SpareState;
            // Every host and state, zeros included, so a drained pool reads 0.
            for host in &all {
                metrics::gauge!("tenant_plane_host_capacity", "host" => host.name.clone())
                    .set(host.capacity as f64);
                metrics::gauge!("tenant_plane_host_tenants", "host" => host.name.clone())
                    .set(host.tenants as f64);
                for state in [
                    SpareState::Building,
                    SpareState::Ready,
                    SpareState::Claimed,
                    SpareState::Retiring,
                ] {
                    let n = counts
                        .iter()
                        .find(|(h, s, _)| *h == host.name && *s == state)
                        .map_or(0, |(_, _, n)| *n);
                    metrics::gauge!("tenant_plane_warm_spares", "host" => host.name.clone(), "state" => state.as_str())
                        .set(n as f64);
                }
            }
        }
    }
    // The tenant cache serves look-ups and the resolver alike.
    let cache = state.tenants.stats();
    metrics::gauge!("tenant_plane_resolver_cache_hits").set(cache.hits as f64);
    metrics::gauge!("tenant_plane_resolver_cache_misses").set(cache.misses as f64);
    metrics::gauge!("tenant_plane_resolver_registered_orgs").set(cache.registered as f64);
    if let Some(resolver) = &state.resolver {
        let tokens = resolver.token_cache_stats();
        metrics::gauge!("tenant_plane_resolver_token_cache_hits").set(tokens.hits as f64);
        metrics::gauge!("tenant_plane_resolver_token_cache_misses").set(tokens.misses as f64);
        metrics::gauge!("tenant_plane_resolver_token_cache_entries").set(tokens.entries as f64);
        let pools = resolver.pool_stats();
        metrics::gauge!("tenant_plane_resolver_pools").set(pools.pools as f64);
        metrics::gauge!("tenant_plane_resolver_connections_open").set(pools.open as f64);
        metrics::gauge!("tenant_plane_resolver_connections_in_use").set(pools.in_use as f64);
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(crate::telemetry::prometheus().render())
}
