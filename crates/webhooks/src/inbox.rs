//! The durable inbox. Each verified delivery is recorded in `webhook_events`
//! once (keyed by svix-id) and its directory effect applied in the same
//! transaction: either both happen or neither does, and a redelivery of an
//! event already recorded changes nothing.

use chrono::{DateTime, Utc};
use deadpool_postgres::{Pool, Transaction};
use registry::directory::{self, Change};
use registry::RegistryError;
use serde::Serialize;
use serde_json::Value;

use crate::event::{ClerkEvent, Envelope};
use crate::signature::Delivery;

/// What became of a delivery. The first four are stored in
/// `webhook_events.outcome`; `Duplicate` means an earlier delivery with the
/// same svix-id already holds the row.
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
}

/// A body classified before any database work.
enum Classified {
    Event(Envelope, Box<ClerkEvent>),
    /// A type we do not act on.
    Ignored(Envelope),
    /// Signed, but not something we can act on: kept for replay after a fix.
    Dead {
        envelope: Option<Envelope>,
        error: String,
    },
}

fn classify(body: &str) -> (Option<Value>, Classified) {
    // PostgreSQL text and jsonb cannot hold U+0000; such a body is kept raw
    // (with the escape left as text) and dead-lettered instead of failing the
    // transaction on every retry.
    if body.contains("\\u0000") || body.contains('\0') {
        return (
            None,
            Classified::Dead {
                envelope: None,
                error: "payload contains NUL characters, which PostgreSQL cannot store as JSON"
                    .into(),
            },
        );
    }
    let value: Value = match serde_json::from_str(body) {
        Ok(v) => v,
        Err(e) => {
            return (
                None,
                Classified::Dead {
                    envelope: None,
                    error: format!("body is not JSON: {e}"),
                },
            )
        }
    };
    let envelope = match Envelope::deserialize(&value) {
        Ok(env) => env,
        Err(e) => {
            let error = format!("not a Clerk event envelope: {e}");
            return (
                Some(value),
                Classified::Dead {
                    envelope: None,
                    error,
                },
            );
        }
    };
    let classified = match ClerkEvent::from_envelope(&envelope) {
        Ok(Some(event)) => Classified::Event(envelope, Box::new(event)),
        Ok(None) => Classified::Ignored(envelope),
        Err(e) => Classified::Dead {
            error: format!(
                "{} data does not match Clerk's schema: {e}",
                envelope.event_type
            ),
            envelope: Some(envelope),
        },
    };
    (Some(value), classified)
}

use serde::Deserialize as _;

/// The webhook inbox over the control-plane database.
#[derive(Clone)]
pub struct Inbox {
    pool: Pool,
}

impl Inbox {
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Records a verified delivery and applies it. An `Err` means nothing was
    /// stored: the caller answers non-2xx and Svix delivers again later.
    #[tracing::instrument(skip_all, fields(svix_id = %delivery.svix_id, event_type, object_id, outcome))]
    pub async fn receive(&self, delivery: &Delivery, body: &str) -> Result<Outcome, RegistryError> {
        let (payload, classified) = classify(body);
        let span = tracing::Span::current();
        let envelope = match &classified {
            Classified::Event(env, _) | Classified::Ignored(env) => Some(env),
            Classified::Dead { envelope, .. } => envelope.as_ref(),
        };
        let event_type = envelope.map_or("unknown", |e| e.event_type.as_str());
        span.record("event_type", event_type);
        if let Some(id) = envelope.and_then(Envelope::object_id) {
            span.record("object_id", id);
        }

        let record = Record {
            svix_id: &delivery.svix_id,
            event_type,
            object_id: envelope.and_then(Envelope::object_id),
            instance_id: envelope.and_then(|e| e.instance_id.as_deref()),
            event_timestamp: envelope.and_then(Envelope::time),
            raw_body: if payload.is_none() { Some(body) } else { None },
            payload: payload.as_ref(),
        };

        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let provisional = match &classified {
            Classified::Event(..) => Outcome::Applied,
            Classified::Ignored(_) => Outcome::Ignored,
            Classified::Dead { .. } => Outcome::Dead,
        };
        let error = match &classified {
            Classified::Dead { error, .. } => Some(error.as_str()),
            _ => None,
        };
        let outcome = match record.insert(&tx, provisional, error).await? {
            Outcome::Duplicate => Outcome::Duplicate,
            _ => {
                let outcome = effect(&tx, &classified, &delivery.svix_id).await?;
                if outcome != provisional {
                    set_outcome(&tx, &delivery.svix_id, outcome, None).await?;
                }
                outcome
            }
        };
        tx.commit().await?;
        span.record("outcome", outcome.as_str());
        // Signed deliveries only, so the type label's cardinality is Clerk's.
        metrics::counter!(
            "tenant_plane_webhooks_total",
            "type" => event_type.to_owned(),
            "outcome" => outcome.as_str()
        )
        .increment(1);
        tracing::info!("webhook received");
        Ok(outcome)
    }
}

/// Applies an event's effect on the directory, within the inbox transaction.
/// `time` is the envelope's timestamp, the watermark for events whose data
/// has no `updated_at` (deletions).
pub async fn apply(
    tx: &Transaction<'_>,
    event: &ClerkEvent,
    time: DateTime<Utc>,
    actor: &str,
) -> Result<Change, RegistryError> {
    use ClerkEvent::*;
    match event {
        OrganizationCreated(o) | OrganizationUpdated(o) => {
            directory::upsert_organization(tx, &o.into(), actor).await
        }
        OrganizationDeleted(d) => directory::delete_organization(tx, &d.id, time, actor).await,
        MembershipCreated(m) | MembershipUpdated(m) => {
            directory::upsert_membership(tx, &m.into(), false).await
        }
        MembershipDeleted(m) => directory::upsert_membership(tx, &m.into(), true).await,
        UserCreated(u) | UserUpdated(u) => directory::upsert_user(tx, &u.into()).await,
        UserDeleted(d) => directory::delete_user(tx, &d.id, time).await,
    }
}

/// One `webhook_events` row.
struct Record<'a> {
    svix_id: &'a str,
    event_type: &'a str,
    object_id: Option<&'a str>,
    instance_id: Option<&'a str>,
    event_timestamp: Option<DateTime<Utc>>,
    payload: Option<&'a Value>,
    raw_body: Option<&'a str>,
}

impl Record<'_> {
    /// Inserts the row, or returns `Duplicate` if the svix-id is already
    /// recorded. Concurrent duplicates wait on the primary key until the
    /// first commits, so only one of them ever applies the event.
    async fn insert(
        &self,
        tx: &Transaction<'_>,
        outcome: Outcome,
        error: Option<&str>,
    ) -> Result<Outcome, RegistryError> {
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
                    &self.svix_id,
                    &self.event_type,
                    &self.object_id,
                    &self.instance_id,
                    &self.event_timestamp,
                    &self.payload,
                    &self.raw_body,
                    &outcome.as_str(),
                    &error,
                ],
            )
            .await?;
        Ok(if n == 0 { Outcome::Duplicate } else { outcome })
    }
}

/// Applies a classified delivery's effect; the outcome to record.
async fn effect(
    tx: &Transaction<'_>,
    classified: &Classified,
    svix_id: &str,
) -> Result<Outcome, RegistryError> {
    Ok(match classified {
        Classified::Ignored(_) => Outcome::Ignored,
        Classified::Dead { error, .. } => {
            tracing::warn!(error = %error, "dead-lettered a signed webhook that could not be applied");
            Outcome::Dead
        }
        Classified::Event(env, event) => {
            let actor = format!("webhook:{svix_id}");
            let time = env.time().unwrap_or_else(Utc::now);
            match apply(tx, event, time, &actor).await? {
                Change::Applied => Outcome::Applied,
                Change::Stale => Outcome::Stale,
            }
        }
    })
}

async fn set_outcome(
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

/// A stored delivery, as operators see it.
#[derive(Debug, Clone, Serialize)]
pub struct StoredEvent {
    pub svix_id: String,
    pub event_type: String,
    pub object_id: Option<String>,
    pub outcome: String,
    pub error: Option<String>,
    pub received_at: DateTime<Utc>,
    pub applied_at: Option<DateTime<Utc>>,
    /// The body as received (JSON, or the raw text when it was not JSON).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
}

const STORED_COLUMNS: &str =
    "svix_id, event_type, object_id, outcome, error, received_at, applied_at, \
     coalesce(payload, to_jsonb(raw_body))";

fn stored(r: &tokio_postgres::Row, with_body: bool) -> StoredEvent {
    StoredEvent {
        svix_id: r.get(0),
        event_type: r.get(1),
        object_id: r.get(2),
        outcome: r.get(3),
        error: r.get(4),
        received_at: r.get(5),
        applied_at: r.get(6),
        body: if with_body { r.get(7) } else { None },
    }
}

impl Inbox {
    /// The newest deliveries, optionally of one outcome.
    pub async fn list(
        &self,
        outcome: Option<&str>,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, RegistryError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {STORED_COLUMNS} FROM webhook_events
                      WHERE ($1::text IS NULL OR outcome = $1)
                      ORDER BY received_at DESC, svix_id LIMIT $2"
                ),
                &[&outcome, &limit],
            )
            .await?;
        Ok(rows.iter().map(|r| stored(r, false)).collect())
    }

    /// One delivery, with its body.
    pub async fn get(&self, svix_id: &str) -> Result<Option<StoredEvent>, RegistryError> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                &format!("SELECT {STORED_COLUMNS} FROM webhook_events WHERE svix_id = $1"),
                &[&svix_id],
            )
            .await?;
        Ok(row.map(|r| stored(&r, true)))
    }

    /// Applies a stored delivery again, e.g. one dead-lettered before a fix:
    /// it is classified and applied by today's code, under the same
    /// watermarks as a fresh delivery, and its outcome updated. None if no
    /// such delivery is stored.
    pub async fn replay(&self, svix_id: &str) -> Result<Option<Outcome>, RegistryError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let Some(row) = tx
            .query_opt(
                "SELECT coalesce(payload::text, raw_body) FROM webhook_events
                  WHERE svix_id = $1 FOR UPDATE",
                &[&svix_id],
            )
            .await?
        else {
            return Ok(None);
        };
        let body: String = row.get(0);
        let (_, classified) = classify(&body);
        let outcome = effect(&tx, &classified, svix_id).await?;
        let error = match &classified {
            Classified::Dead { error, .. } => Some(error.as_str()),
            _ => None,
        };
        set_outcome(&tx, svix_id, outcome, error).await?;
        tx.commit().await?;
        Ok(Some(outcome))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_bodies_before_touching_the_database() {
        assert!(matches!(
            classify("not json").1,
            Classified::Dead { envelope: None, .. }
        ));
        assert!(matches!(
            classify("{\"no\": \"type\"}").1,
            Classified::Dead { .. }
        ));
        assert!(matches!(
            classify(r#"{"type":"session.created","data":{}}"#).1,
            Classified::Ignored(_)
        ));
        assert!(matches!(
            classify(r#"{"type":"organization.created","data":{"id":"org_1"}}"#).1,
            Classified::Dead {
                envelope: Some(_),
                ..
            }
        ));
        let (payload, c) =
            classify(r#"{"type":"organization.created","data":{"name":"a\u0000b"}}"#);
        assert!(payload.is_none());
        assert!(matches!(c, Classified::Dead { .. }));
    }
}
