//! Live updates: the registry's NOTIFY on `tenant_plane_tenant_changed`
//! (announced by a trigger on every status, desired-state or placement
//! change, whoever made it) becomes server-sent events for every open page.
//!
//! One listener per process: it reads each changed tenant once, however many
//! pages are open, and only while some are. Notifications that arrive while
//! it reads are taken together, so a burst costs one status count.

use std::sync::Arc;

use deadpool_postgres::Pool;
use model::TenantId;
use registry::listen::{self, Signal};
use registry::tenants::{self, Tenant, TenantKey, CHANGED_CHANNEL};
use registry::tls::ConnectOptions;
use serde_json::json;
use tokio::sync::{broadcast, mpsc, watch};

/// Messages waiting for a slow page before it is told to resynchronise.
const BACKLOG: usize = 256;

/// The feed of live updates, already formatted as SSE events.
pub struct Live {
    events: broadcast::Sender<Arc<str>>,
    /// Dropping it stops the listener.
    _stop: watch::Sender<bool>,
}

impl Live {
    /// Starts listening on `target` (database.url's server) and reading
    /// changed tenants through `pool`. Must be called within a tokio runtime.
    pub fn spawn(pool: Pool, target: ConnectOptions) -> Self {
        let (events, _) = broadcast::channel(BACKLOG);
        let (stop, stopped) = watch::channel(false);
        let (ids, mut queue) = mpsc::unbounded_channel::<Option<TenantId>>();
        tokio::spawn(listen::listen(
            target,
            &[CHANGED_CHANNEL],
            move |signal| {
                let _ = match signal {
                    // Changes made while not listening are lost: pages
                    // re-read what they show.
                    Signal::Listening => ids.send(None),
                    Signal::Notification { payload, .. } => match payload.parse::<uuid::Uuid>() {
                        Ok(id) => ids.send(Some(TenantId::from(id))),
                        Err(_) => Ok(()),
                    },
                };
            },
            stopped,
        ));
        let feed = events.clone();
        tokio::spawn(async move {
            while let Some(first) = queue.recv().await {
                let mut batch = vec![first];
                while let Ok(next) = queue.try_recv() {
                    batch.push(next);
                }
                if feed.receiver_count() == 0 {
                    continue;
                }
                if let Err(e) = publish(&pool, &feed, batch).await {
                    tracing::warn!(error = %e, "console: cannot read changed tenants");
                    let _ = feed.send(Arc::from(resync()));
                }
            }
        });
        Self {
            events,
            _stop: stop,
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<str>> {
        self.events.subscribe()
    }
}

/// An event that tells a page to reload what it shows.
pub fn resync() -> String {
    sse("resync", "{}")
}

fn sse(event: &str, data: &str) -> String {
    // serde_json never writes a raw newline, so `data` is one line.
    format!("event: {event}\ndata: {data}\n\n")
}

async fn publish(
    pool: &Pool,
    feed: &broadcast::Sender<Arc<str>>,
    mut batch: Vec<Option<TenantId>>,
) -> Result<(), registry::RegistryError> {
    if batch.iter().any(Option::is_none) {
        let _ = feed.send(Arc::from(resync()));
        batch.retain(Option::is_some);
    }
    batch.sort();
    batch.dedup();
    let client = pool.get().await?;
    for id in batch.into_iter().flatten() {
        let Some(t) = tenants::get(&client, TenantKey::Id(id)).await? else {
            continue;
        };
        let _ = feed.send(Arc::from(tenant_event(&t)));
    }
    let _ = feed.send(Arc::from(counts_event(&client).await?));
    Ok(())
}

/// A `tenant` event: what a page shows of the tenant (never a password).
pub fn tenant_event(t: &Tenant) -> String {
    let data = json!({
        "id": t.id,
        "org": t.clerk_org_id.as_str(),
        "name": t.name,
        "slug": t.slug,
        "status": t.status,
        "desired": t.desired_state,
        "attempts": t.attempts,
        "host": t.db_host(),
    });
    sse("tenant", &data.to_string())
}

/// A `counts` event: tenants by status.
pub async fn counts_event(
    client: &impl deadpool_postgres::GenericClient,
) -> Result<String, registry::RegistryError> {
    let counts: serde_json::Map<String, serde_json::Value> = tenants::count_by_status(client)
        .await?
        .into_iter()
        .map(|(s, n)| (s.as_str().to_owned(), n.into()))
        .collect();
    Ok(sse(
        "counts",
        &serde_json::Value::Object(counts).to_string(),
    ))
}
