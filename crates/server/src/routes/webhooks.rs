//! POST /webhooks/clerk: verify, record, apply, answer, in milliseconds.
//! Provisioning never happens here; the reconciler picks the change up.

use actix_web::{post, web, HttpRequest, HttpResponse};
use serde_json::json;

use crate::error::ApiError;
use crate::startup::AppState;

/// The headers the signature covers, under both of Svix's names.
const SIGNATURE_HEADERS: [&str; 6] = [
    "svix-id",
    "svix-timestamp",
    "svix-signature",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
];

#[post("/webhooks/clerk")]
pub async fn clerk_webhook(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let body = crate::body::read(&req, payload, &state).await?;
    let delivery = state.verifier.verify(&body, &signature_headers(&req))?;
    // The signature check already required UTF-8.
    let body = std::str::from_utf8(&body).map_err(|_| webhooks::SignatureError::InvalidPayload)?;
    let outcome = state.inbox.receive(&delivery, body).await?;
    Ok(HttpResponse::Ok().json(json!({ "svix_id": delivery.svix_id, "outcome": outcome })))
}

/// actix-web speaks `http` 0.2; the verifier takes `http` 1 headers.
fn signature_headers(req: &HttpRequest) -> http::HeaderMap {
    let mut headers = http::HeaderMap::new();
    for name in SIGNATURE_HEADERS {
        if let Some(value) = req.headers().get(name) {
            if let Ok(value) = http::HeaderValue::from_bytes(value.as_bytes()) {
                headers.insert(name, value);
            }
        }
    }
    headers
}
