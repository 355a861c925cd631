//! What the bench binaries share: argument parsing, the application's
//! settings and latency figures.
// Each bench is its own crate and uses a subset of this module.
#![allow(dead_code)]

use std::future::Future;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tenant_plane::config::Settings;
use testkit::TestSettings;

/// Runs a bench that needs the dev PostgreSQL: says how to start it when no
/// URL is configured, prints the error of a failed run, and maps both to the
/// exit code.
pub fn main_with_database(bench: &str, run: impl FnOnce() -> anyhow::Result<()>) -> ExitCode {
    if !testkit::database_configured() {
        eprintln!(
            "{bench} needs the dev PostgreSQL. Start it and point the bench at it:\n\n    \
             export TENANT_PLANE_TEST_DATABASE_URL=$(scripts/dev-db | tail -1)\n"
        );
        return ExitCode::FAILURE;
    }
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The settings `serve` would read from the environment `env`: the one
/// place the benches turn testkit's `TestSettings` into `Settings`.
pub fn app_settings(env: &TestSettings) -> anyhow::Result<Settings> {
    Ok(Settings::load_from(None, env)?)
}

/// A clap value parser for counts that must be at least 1.
pub fn positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// The nearest-rank percentile `p` (0..=1) of sorted latencies.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// What the senders of a closed loop saw.
#[derive(Default)]
pub struct Tally {
    pub latencies: Vec<Duration>,
    pub ok: usize,
    pub first_failure: Option<String>,
}

impl Tally {
    fn record(&mut self, latency: Duration, result: Result<(), String>) {
        self.latencies.push(latency);
        match result {
            Ok(()) => self.ok += 1,
            Err(why) => {
                self.first_failure.get_or_insert(why);
            }
        }
    }

    fn merge(&mut self, other: Tally) {
        self.latencies.extend(other.latencies);
        self.ok += other.ok;
        if self.first_failure.is_none() {
            self.first_failure = other.first_failure;
        }
    }
}

/// Runs `task(0..count)` from `concurrency` tasks, each starting its next
/// item as soon as its previous one is answered: as much load as the system
/// absorbs, with at most `concurrency` items in flight.
pub async fn closed_loop<F, Fut>(count: usize, concurrency: usize, task: F) -> Tally
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<(), String>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let senders: Vec<_> = (0..concurrency)
        .map(|_| {
            let (task, next) = (task.clone(), next.clone());
            tokio::spawn(async move {
                let mut tally = Tally::default();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        break;
                    }
                    let sent = Instant::now();
                    let result = task(i).await;
                    tally.record(sent.elapsed(), result);
                }
                tally
            })
        })
        .collect();
    let mut total = Tally::default();
    for sender in senders {
        total.merge(sender.await.expect("a sender task panicked"));
    }
    total
}
