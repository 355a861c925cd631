//! Reading request bodies within the limits of `http.body_limit` and
//! `http.body_read_timeout`: a client that trickles its body is cut off
//! (408), and an oversized one is refused (413) before it is read when its
//! Content-Length says so. Every route that takes a body reads it here.

use actix_web::{web, HttpRequest};
use futures::StreamExt;
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::startup::AppState;

/// The whole body, within the size limit and the read deadline.
pub async fn read(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
) -> Result<web::Bytes, ApiError> {
    let mut reading = std::pin::pin!(read_limited(req, payload, state.body_limit));
    // A small body has usually arrived with its headers: read it without
    // arming a timer (a timer's setup and removal showed in the profile of
    // the resolve route). Only a body still on its way gets the deadline.
    if let Some(read) = futures::FutureExt::now_or_never(reading.as_mut()) {
        return read;
    }
    tokio::time::timeout(state.body_read_timeout, reading)
        .await
        .map_err(|_| ApiError::BodyTimeout(state.body_read_timeout))?
}

/// The body as JSON of type `T`, read as [`read`] does.
pub async fn json<T: DeserializeOwned>(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
) -> Result<T, ApiError> {
    let body = read(req, payload, state).await?;
    serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
}

/// Reads the body up to `limit` bytes, refusing early on a Content-Length
/// that is already too large so an oversized upload is not read at all. A
/// body that came in one chunk is that chunk, not a copy of it.
async fn read_limited(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<web::Bytes, ApiError> {
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    // The next chunk, the whole so far held to the limit.
    let mut len = 0;
    let mut next = async || -> Result<Option<web::Bytes>, ApiError> {
        let Some(chunk) = payload.next().await else {
            return Ok(None);
        };
        let chunk = chunk.map_err(|e| ApiError::BadBody(e.to_string()))?;
        len += chunk.len();
        if len > limit {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        Ok(Some(chunk))
    };
    let Some(first) = next().await? else {
        return Ok(web::Bytes::new());
    };
    let Some(second) = next().await? else {
        return Ok(first);
    };
    let mut body = web::BytesMut::with_capacity(declared.unwrap_or(0));
    body.extend_from_slice(&first);
    body.extend_from_slice(&second);
    while let Some(chunk) = next().await? {
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}
