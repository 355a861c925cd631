//! POST /webhooks/clerk: verify, record, apply, answer, in milliseconds.
//! Provisioning never happens here; the reconciler picks the change up.

use actix_web::{post, web, HttpRequest, HttpResponse};
use futures::StreamExt;
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
    let body = tokio::time::timeout(
        state.body_read_timeout,
        read_limited(&req, payload, state.body_limit),
    )
    .await
    .map_err(|_| ApiError::BodyTimeout(state.body_read_timeout))??;
    let delivery = state.verifier.verify(&body, &signature_headers(&req))?;
    // The signature check already required UTF-8.
    let body = std::str::from_utf8(&body).map_err(|_| webhooks::SignatureError::InvalidPayload)?;
    let outcome = state.inbox.receive(&delivery, body).await?;
    Ok(HttpResponse::Ok().json(json!({ "svix_id": delivery.svix_id, "outcome": outcome })))
}

/// Reads the body up to `limit` bytes, refusing early on a Content-Length
/// that is already too large so an oversized upload is not read at all.
async fn read_limited(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<web::BytesMut, ApiError> {
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let mut body = web::BytesMut::with_capacity(declared.unwrap_or(0));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::BadBody(e.to_string()))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
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
