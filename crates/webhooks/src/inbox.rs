//! The durable inbox. Each verified delivery is recorded in `webhook_events`
//! once (keyed by svix-id) and its directory effect applied in the same
//! transaction: either both happen or neither does, and a redelivery of an
//! event already recorded changes nothing.

use chrono::{DateTime, Utc};
use deadpool_postgres::{Pool, Transaction};
use registry::directory::{self, Change};
pub use registry::webhook_events::Outcome;
use registry::webhook_events::{self, NewDelivery, StoredEvent};
use registry::RegistryError;
use serde_json::Value;

use crate::event::{ClerkEvent, Envelope};
use crate::signature::Delivery;

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

        let record = NewDelivery {
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
        let outcome = if webhook_events::insert(&tx, &record, provisional, error).await? {
            let (outcome, error) = effect(&tx, &classified, &delivery.svix_id).await?;
            if outcome != provisional {
                webhook_events::set_outcome(&tx, &delivery.svix_id, outcome, error.as_deref())
                    .await?;
            }
            outcome
        } else {
            Outcome::Duplicate
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
            directory::upsert_organization(tx, o, actor).await
        }
        OrganizationDeleted(d) => directory::delete_organization(tx, &d.id, time, actor).await,
        MembershipCreated(m) | MembershipUpdated(m) => {
            directory::upsert_membership(tx, m, false).await
        }
        MembershipDeleted(m) => directory::upsert_membership(tx, m, true).await,
        UserCreated(u) | UserUpdated(u) => directory::upsert_user(tx, u).await,
        UserDeleted(d) => directory::delete_user(tx, &d.id, time).await,
    }
}

/// Applies a classified delivery's effect; the outcome to record, and the
/// error to record with it.
async fn effect(
    tx: &Transaction<'_>,
    classified: &Classified,
    svix_id: &str,
) -> Result<(Outcome, Option<String>), RegistryError> {
    Ok(match classified {
        Classified::Ignored(_) => (Outcome::Ignored, None),
        Classified::Dead { error, .. } => {
            tracing::warn!(error = %error, "dead-lettered a signed webhook that could not be applied");
            (Outcome::Dead, Some(error.clone()))
        }
        Classified::Event(env, event) => {
            let actor = format!("webhook:{svix_id}");
            let time = env.time().unwrap_or_else(Utc::now);
            match apply(tx, event, time, &actor).await? {
                Change::Applied => (Outcome::Applied, None),
                Change::Stale => (Outcome::Stale, None),
                Change::Incomplete(why) => {
                    tracing::warn!(
                        error = why,
                        "dead-lettered a webhook the directory cannot use"
                    );
                    (Outcome::Dead, Some(why.to_owned()))
                }
            }
        }
    })
}

impl Inbox {
    /// The newest deliveries, optionally of one outcome.
    pub async fn list(
        &self,
        outcome: Option<Outcome>,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, RegistryError> {
        let client = self.pool.get().await?;
        webhook_events::list(&client, outcome, limit).await
    }

    /// One delivery, with its body.
    pub async fn get(&self, svix_id: &str) -> Result<Option<StoredEvent>, RegistryError> {
        let client = self.pool.get().await?;
        webhook_events::get(&client, svix_id).await
    }

    /// Applies a stored delivery again, e.g. one dead-lettered before a fix:
    /// it is classified and applied by today's code, under the same
    /// watermarks as a fresh delivery, and its outcome updated. None if no
    /// such delivery is stored.
    pub async fn replay(&self, svix_id: &str) -> Result<Option<Outcome>, RegistryError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let Some(body) = webhook_events::lock_body(&tx, svix_id).await? else {
            return Ok(None);
        };
        let (_, classified) = classify(&body);
        let (outcome, error) = effect(&tx, &classified, svix_id).await?;
        webhook_events::set_outcome(&tx, svix_id, outcome, error.as_deref()).await?;
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
