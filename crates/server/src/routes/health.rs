//! Liveness and readiness probes.

use actix_web::{get, web, HttpResponse};
use serde_json::json;

use crate::startup::AppState;

/// Alive: the process answers. Never touches the database, so a database
/// outage does not get the pod restarted.
#[get("/healthz")]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// Ready: the control-plane database answers and holds the schema this binary
/// expects.
#[get("/readyz")]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let verdict = match state.inbox.pool().get().await {
        Err(e) => Err(format!("control-plane database unavailable: {e}")),
        Ok(client) => registry::schema::check(&client)
            .await
            .map_err(|e| e.to_string()),
    };
    match verdict {
        Ok(()) => HttpResponse::Ok().json(json!({ "status": "ready" })),
        Err(message) => HttpResponse::ServiceUnavailable()
            .json(json!({ "error": "not_ready", "message": message })),
    }
}
