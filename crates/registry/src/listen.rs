//! LISTEN/NOTIFY on the control-plane database: one helper for everything
//! that reacts to registry changes (the reconciler's workers wake up, the
//! resolver drops cached tenants).

use std::time::Duration;

use futures::StreamExt;
use tokio::sync::watch;
use tokio_postgres::AsyncMessage;

use crate::tls::ConnectOptions;

/// Woken workers re-scan the registry; payload-free.
pub const WAKE_CHANNEL: &str = "tenant_plane_reconcile";
/// Payload: a tenant id whose status, desired state, placement or password
/// changed: caches drop it, the resolver closes its pool. Sent by the
/// `tenant_registry_announce` trigger (V8).
pub const CHANGED_CHANNEL: &str = "tenant_plane_tenant_changed";
/// Payload: a tenant id whose row changed otherwise (name, slug, attempts,
/// lease...): caches drop the row, connections may stay. Sent by the
/// `tenant_registry_announce` trigger (V8).
pub const TOUCHED_CHANNEL: &str = "tenant_plane_tenant_touched";

/// What a listener hears.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal<'a> {
    /// Subscribed, at start or after a reconnect: notifications sent while
    /// not listening are lost, so whatever they would have triggered should
    /// happen now.
    Listening,
    Notification {
        channel: &'a str,
        payload: &'a str,
    },
}

/// Listens on `channels` until `shutdown` turns true (or its sender is
/// dropped), calling `on` for each signal. A lost connection is reopened
/// after a second. The connection uses `target`'s TLS settings, so a server
/// whose certificate does not verify is retried, never listened to in
/// plaintext.
pub async fn listen(
    target: ConnectOptions,
    channels: &[&str],
    mut on: impl FnMut(Signal<'_>),
    mut shutdown: watch::Receiver<bool>,
) {
    let listen_sql: String = channels.iter().map(|c| format!("LISTEN {c};")).collect();
    while !*shutdown.borrow() {
        match target.connect().await {
            Ok((client, mut connection)) => {
                // The connection task forwards notifications; it ends when the
                // connection does, which closes the channel.
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
                let driver = tokio::spawn(async move {
                    let mut messages =
                        futures::stream::poll_fn(move |cx| connection.poll_message(cx));
                    while let Some(message) = messages.next().await {
                        match message {
                            Ok(AsyncMessage::Notification(n)) => {
                                let _ = tx.send(n);
                            }
                            Ok(_) => {}
                            Err(e) => {
                                tracing::warn!(error = %e, "LISTEN connection lost");
                                break;
                            }
                        }
                    }
                });
                match client.batch_execute(&listen_sql).await {
                    Ok(()) => {
                        on(Signal::Listening);
                        loop {
                            tokio::select! {
                                n = rx.recv() => match n {
                                    Some(n) => on(Signal::Notification {
                                        channel: n.channel(),
                                        payload: n.payload(),
                                    }),
                                    None => break,
                                },
                                changed = shutdown.changed() => {
                                    if changed.is_err() || *shutdown.borrow() {
                                        driver.abort();
                                        return;
                                    }
                                }
                            }
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "LISTEN failed"),
                }
                driver.abort();
            }
            Err(e) => tracing::warn!(error = %e, "cannot open LISTEN connection"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            changed = shutdown.changed() => if changed.is_err() { return },
        }
    }
}
