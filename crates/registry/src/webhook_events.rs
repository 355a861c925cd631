//! The webhook inbox table (`webhook_events`): one row per Svix message id,
//! written in the same transaction as the event's directory effect.

use chrono::{DateTime, Utc};
use deadpool_postgres::{GenericClient, Transaction};
use serde::Serialize;
use serde_json::Value;

use crate::RegistryError;

/// What became of a delivery. The first four are stored in
/// `webhook_events.outcome`; `Duplicate` is never stored: it means an earlier
/// delivery with the same svix-id already holds the row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Applied,
    Ignored,
    Stale,
    Dead,
    Duplicate,
}

impl Outcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Ignored => "ignored",
            Outcome::Stale => "stale",
            Outcome::Dead => "dead",
            Outcome::Duplicate => "duplicate",
        }
    }

    /// The stored outcomes (the column's CHECK constraint).
    pub fn parse_stored(s: &str) -> Option<Self> {
        Some(match s {
            "applied" => Outcome::Applied,
            "ignored" => Outcome::Ignored,
            "stale" => Outcome::Stale,
            "dead" => Outcome::Dead,
            _ => return None,
        })
    }
}

/// A delivery about to be recorded.
#[derive(Debug, Clone)]
pub struct NewDelivery<'a> {
    pub svix_id: &'a str,
    pub event_type: &'a str,
    pub object_id: Option<&'a str>,
    pub instance_id: Option<&'a str>,
    pub event_timestamp: Option<DateTime<Utc>>,
    /// The body as JSON; `None` with `raw_body` set when it was not JSON.
    pub payload: Option<&'a Value>,
    pub raw_body: Option<&'a str>,
}

/// Inserts the row, or returns false if the svix-id is already recorded.
/// Concurrent duplicates wait on the primary key until the first commits, so
/// only one of them ever applies the event.
pub async fn insert(
    tx: &Transaction<'_>,
    d: &NewDelivery<'_>,
    outcome: Outcome,
    error: Option<&str>,
) -> Result<bool, RegistryError> {
    let stmt = tx
        .prepare_cached(
            "INSERT INTO webhook_events
                 (svix_id, event_type, object_id, instance_id, event_timestamp,
                  payload, raw_body, outcome, error, applied_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9,
                     CASE WHEN $8 = 'applied' THEN now() END)
             ON CONFLICT (svix_id) DO NOTHING",
        )
        .await?;
    let n = tx
        .execute(
            &stmt,
            &[
                &d.svix_id,
                &d.event_type,
                &d.object_id,
                &d.instance_id,
                &d.event_timestamp,
                &d.payload,
                &d.raw_body,
                &outcome.as_str(),
                &error,
            ],
        )
        .await?;
    Ok(n == 1)
}

pub async fn set_outcome(
    tx: &Transaction<'_>,
    svix_id: &str,
    outcome: Outcome,
    error: Option<&str>,
) -> Result<(), RegistryError> {
    let stmt = tx
        .prepare_cached(
            "UPDATE webhook_events
                SET outcome = $2, error = $3,
                    applied_at = CASE WHEN $2 = 'applied' THEN now() END
              WHERE svix_id = $1",
        )
        .await?;
    tx.execute(&stmt, &[&svix_id, &outcome.as_str(), &error])
        .await?;
    Ok(())
}

/// The stored body of a delivery (JSON text, or the raw text when it was not
/// JSON), locked for the rest of `tx`; for replay.
pub async fn lock_body(
    tx: &Transaction<'_>,
    svix_id: &str,
) -> Result<Option<String>, RegistryError> {
    let row = tx
        .query_opt(
            "SELECT coalesce(payload::text, raw_body) AS body FROM webhook_events
              WHERE svix_id = $1 FOR UPDATE",
            &[&svix_id],
        )
        .await?;
    Ok(row.map(|r| r.get("body")))
}

/// A stored delivery, as operators see it.
#[derive(Debug, Clone, Serialize)]
pub struct StoredEvent {
    pub svix_id: String,
    pub event_type: String,
    pub object_id: Option<String>,
    pub outcome: Outcome,
    pub error: Option<String>,
    pub received_at: DateTime<Utc>,
    pub applied_at: Option<DateTime<Utc>>,
    /// The body as received (JSON, or the raw text when it was not JSON).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
}

const STORED_COLUMNS: &str =
    "svix_id, event_type, object_id, outcome, error, received_at, applied_at, \
     coalesce(payload, to_jsonb(raw_body)) AS body";

fn stored(r: &tokio_postgres::Row, with_body: bool) -> Result<StoredEvent, RegistryError> {
    let svix_id: String = r.get("svix_id");
    let outcome: &str = r.get("outcome");
    let outcome = Outcome::parse_stored(outcome).ok_or_else(|| RegistryError::Corrupt {
        table: "webhook_events",
        id: svix_id.clone(),
        detail: format!("unknown outcome {outcome:?}"),
    })?;
    Ok(StoredEvent {
        svix_id,
        event_type: r.get("event_type"),
        object_id: r.get("object_id"),
        outcome,
        error: r.get("error"),
        received_at: r.get("received_at"),
        applied_at: r.get("applied_at"),
        body: if with_body { r.get("body") } else { None },
    })
}

/// The newest deliveries, optionally of one outcome.
pub async fn list(
    client: &impl GenericClient,
    outcome: Option<Outcome>,
    limit: i64,
) -> Result<Vec<StoredEvent>, RegistryError> {
    let rows = client
        .query(
            &format!(
                "SELECT {STORED_COLUMNS} FROM webhook_events
                  WHERE ($1::text IS NULL OR outcome = $1)
                  ORDER BY received_at DESC, svix_id LIMIT $2"
            ),
            &[&outcome.map(|o| o.as_str()), &limit],
        )
        .await?;
    rows.iter().map(|r| stored(r, false)).collect()
}

/// One delivery, with its body.
pub async fn get(
    client: &impl GenericClient,
    svix_id: &str,
) -> Result<Option<StoredEvent>, RegistryError> {
    let row = client
        .query_opt(
            &format!("SELECT {STORED_COLUMNS} FROM webhook_events WHERE svix_id = $1"),
            &[&svix_id],
        )
        .await?;
    row.map(|r| stored(&r, true)).transpose()
}
