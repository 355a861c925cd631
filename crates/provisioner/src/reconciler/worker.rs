//! The worker loop: reconcile passes woken by NOTIFY on the registry and, as
//! a backstop, by a poll.

use std::sync::Arc;
use std::time::Duration;

use registry::listen::{self, Signal, WAKE_CHANNEL};
use tokio::sync::{watch, Notify};

use super::{Pass, Reconciler};

impl Reconciler {
    /// Runs workers until `shutdown` turns true: each takes tenants one at a
    /// time, woken by NOTIFY on the registry and, as a backstop, every
    /// `poll_interval`.
    pub async fn run(
        self: Arc<Self>,
        concurrency: usize,
        poll_interval: Duration,
        listen: registry::tls::ConnectOptions,
        shutdown: watch::Receiver<bool>,
    ) {
        let wake = Arc::new(Notify::new());
        let listener = {
            let wake = wake.clone();
            // Every signal wakes the workers: a notification, and (re)subscribing,
            // since whatever changed while not listening deserves a pass now.
            tokio::spawn(listen::listen(
                listen,
                &[WAKE_CHANNEL],
                move |_: Signal<'_>| wake.notify_waiters(),
                shutdown.clone(),
            ))
        };
        let workers: Vec<_> = (0..concurrency.max(1))
            .map(|n| {
                let this = self.clone();
                let wake = wake.clone();
                let mut shutdown = shutdown.clone();
                tokio::spawn(async move {
                    while !*shutdown.borrow() {
                        // Registered before the pass, so a NOTIFY that lands
                        // while the pass finds nothing still wakes us.
                        let notified = wake.notified();
                        tokio::pin!(notified);
                        notified.as_mut().enable();
                        // How long to sleep, unless woken: until the poll, or
                        // until a tenant backing off after a failure is due.
                        let idle = match this.run_once().await {
                            Ok(Pass::Worked { .. }) => None,
                            Ok(Pass::Idle { next_due }) => {
                                Some(next_due.map_or(poll_interval, |d| d.min(poll_interval)))
                            }
                            Ok(Pass::LeaseLost) => None,
                            Err(e) => {
                                tracing::warn!(worker = n, error = %e, "reconciler pass failed");
                                Some(poll_interval)
                            }
                        };
                        if let Some(sleep) = idle {
                            tokio::select! {
                                _ = &mut notified => {}
                                _ = tokio::time::sleep(sleep) => {}
                                // A dropped sender means stop, as `true` does.
                                changed = shutdown.changed() => if changed.is_err() { break },
                            }
                        }
                    }
                })
            })
            .collect();
        // The warm pool's refill, beside the workers (it only retires spares
        // when the pool is off, so that lowering the setting takes effect).
        let refill = {
            let this = self.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move { this.refill_until(poll_interval, shutdown).await })
        };
        for w in workers {
            let _ = w.await;
        }
        let _ = refill.await;
        listener.abort();
    }
}
