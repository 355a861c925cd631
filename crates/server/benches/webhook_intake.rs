//! Webhook intake, end to end, beside a baseline from the same run.
//!
//! ```sh
//! export TENANT_PLANE_TEST_DATABASE_URL=$(scripts/dev-db | tail -1)
//! cargo bench -p tenant-plane --bench webhook_intake -- [--events N] [--concurrency C,...]
//! ```
//!
//! For each concurrency C, two variants each get a fresh migrated database on
//! the same PostgreSQL and N fresh events (organization.created and
//! user.created, alternating), sent by C tasks that each take the next event
//! as soon as their previous one is answered:
//!
//! - `http`: the application as `serve` builds it (provisioning worker off),
//!   in this process on port 0, with a pool of C connections, fed through one
//!   keep-alive reqwest client. Each event pays for HTTP, the Svix signature
//!   check, the inbox transaction and the JSON answer.
//! - `baseline`: `Inbox::receive` called directly over a pool of C
//!   connections: the same SQL statements in the same transaction, nothing
//!   else. What `http` costs beyond it is the price of the endpoint.
//!
//! No log subscriber is installed, so neither variant pays for the log line
//! `serve` writes per event.
//!
//! Speed is printed, never asserted: it depends on the machine. What is
//! checked is that every timed event was accepted and stored, because
//! figures over refused requests would mean nothing.

mod support;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use registry::pool::PoolOptions;
use reqwest::header::CONTENT_TYPE;
use reqwest::StatusCode;
use support::{app_settings, closed_loop, main_with_database, millis, percentile, positive, Tally};
use tenant_plane::startup::Application;
use testkit::{PrefixGuard, TestDatabase, TestSettings};
use webhooks::samples::{SampleEvent, SampleIds};
use webhooks::{Delivery, Inbox, Outcome, WebhookVerifier};

/// Svix's published example secret. It guards nothing: the bench both signs
/// and verifies with it.
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Untimed events sent before each timed run, so that every pool involved
/// (the client's keep-alive connections, the server's and the baseline's
/// database connections) is open when the clock starts.
const WARM_UP_EVENTS: usize = 50;

/// Measures the webhook intake over HTTP beside a direct-to-inbox baseline.
#[derive(Debug, Parser)]
#[command(
    name = "webhook_intake",
    bin_name = "cargo bench -p tenant-plane --bench webhook_intake --"
)]
struct Args {
    /// Timed events per run. Their signatures are made just before the run
    /// and expire after 5 minutes, which bounds how many one run can send.
    #[arg(long, default_value_t = 2000, value_parser = positive)]
    events: usize,
    /// Concurrent senders, comma-separated: one pair of runs per value.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16", value_parser = positive)]
    concurrency: Vec<usize>,
    /// Passed by `cargo bench` to every bench binary; nothing to do with it.
    #[arg(long = "bench", hide = true)]
    _bench: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    main_with_database("webhook_intake", || {
        tokio::runtime::Runtime::new()?.block_on(run(&args))
    })
}

async fn run(args: &Args) -> anyhow::Result<()> {
    print_context(args).await?;
    println!();
    println!(
        "{:<9}{:>3}{:>8}{:>10}{:>9}{:>9}",
        "variant", "C", "events", "events/s", "p50(ms)", "p99(ms)"
    );
    for &concurrency in &args.concurrency {
        let http = measure_http(args.events, concurrency).await?;
        println!("{}", http.row());
        let baseline = measure_baseline(args.events, concurrency).await?;
        println!("{}", baseline.row());
        println!("{}", ratio_line(&http, &baseline));
    }
    Ok(())
}

/// What the figures depend on besides the code: CPUs, PostgreSQL version and
/// its durability settings (commit latency is mostly the WAL flush).
async fn print_context(args: &Args) -> anyhow::Result<()> {
    let target = registry::pool::parse_url(&testkit::admin_url())
        .context("the PostgreSQL admin URL does not parse")?;
    let (client, connection) = target
        .connect()
        .await
        .context("cannot connect to the dev PostgreSQL; is scripts/dev-db running?")?;
    tokio::spawn(connection);
    let row = client
        .query_one(
            "SELECT version(), current_setting('fsync'), current_setting('synchronous_commit')",
            &[],
        )
        .await?;
    let (version, fsync, synchronous_commit): (String, String, String) =
        (row.get(0), row.get(1), row.get(2));
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());

    println!("webhook intake benchmark: http (the real app) against baseline (Inbox::receive)");
    println!("machine:    {cpus} CPUs; client, server and PostgreSQL all on this machine");
    println!("PostgreSQL: {version}");
    println!("            fsync={fsync}, synchronous_commit={synchronous_commit}");
    println!(
        "events:     {} timed per run (+{WARM_UP_EVENTS} warm-up), \
         organization.created and user.created alternating",
        args.events
    );
    Ok(())
}

/// The `http` variant: the application on a fresh database, stopped again
/// before the baseline runs so that its idle workers are gone.
async fn measure_http(events: usize, concurrency: usize) -> anyhow::Result<Run> {
    let db = TestDatabase::migrated().await;
    // The application syncs the tenant template database at start; under a
    // test prefix it is dropped with the guard, as the tests' are.
    let prefix = PrefixGuard::new();
    // As many database connections as there are senders, like the
    // baseline's pool. The provisioning worker is off (as by default): it
    // would create a database for every organization.created on the same
    // CPUs, and the baseline does no such work.
    let settings = app_settings(
        &TestSettings::new(&db.url(), &prefix.prefix)
            .with_webhook_secret(SECRET)
            .with_database_max_connections(concurrency),
    )?;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
    let app = Application::build(&settings, listener).await?;
    let url = format!("http://127.0.0.1:{}/webhooks/clerk", app.port());
    let server = tokio::spawn(app.run_until_stopped());

    let target = Target::Http {
        client: reqwest::Client::new(),
        url,
    };
    let run = measure("http", &db, target, events, concurrency).await;

    // Dropping the server future stops its workers.
    server.abort();
    let _ = server.await;
    run
}

/// The `baseline` variant: the inbox alone, on a fresh database.
async fn measure_baseline(events: usize, concurrency: usize) -> anyhow::Result<Run> {
    let db = TestDatabase::migrated().await;
    let options = PoolOptions {
        max_size: concurrency,
        ..PoolOptions::default()
    };
    let pool = registry::pool::build_pool(db.config(), &options)?;
    let target = Target::Inbox(Inbox::new(pool));
    measure("baseline", &db, target, events, concurrency).await
}

/// Warms `target` up, times `events` fresh events through it, and checks
/// that every one was accepted and stored.
async fn measure(
    variant: &'static str,
    db: &TestDatabase,
    target: Target,
    events: usize,
    concurrency: usize,
) -> anyhow::Result<Run> {
    let verifier = WebhookVerifier::new(SECRET)?;
    let target = Arc::new(target);

    // Failures here would show again in the timed run, which reports them.
    drive(&target, prepare(&verifier, WARM_UP_EVENTS), concurrency).await;

    let timed = prepare(&verifier, events);
    let svix_ids: Vec<String> = timed.iter().map(|e| e.delivery.svix_id.clone()).collect();
    let started = Instant::now();
    let tally = drive(&target, timed, concurrency).await;
    let run = Run::new(variant, concurrency, events, started.elapsed(), tally);

    if run.accepted < run.events {
        bail!(
            "{variant}, C={concurrency}: only {} of {} events were accepted (first refusal: {}); \
             figures over refused requests would mean nothing",
            run.accepted,
            run.events,
            run.first_refusal.as_deref().unwrap_or("none recorded"),
        );
    }
    let stored = count_stored(db, &svix_ids).await?;
    if stored != events {
        eprintln!(
            "warning: {variant}, C={concurrency}: webhook_events holds {stored} of the {events} \
             timed events"
        );
    }
    Ok(run)
}

async fn count_stored(db: &TestDatabase, svix_ids: &[String]) -> anyhow::Result<usize> {
    let row = db
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM webhook_events WHERE svix_id = ANY($1)",
            &[&svix_ids],
        )
        .await
        .context("count the stored events")?;
    Ok(usize::try_from(row.get::<_, i64>(0))?)
}

/// One delivery, built and signed before the clock starts so that the timed
/// part is only what a real delivery costs the receiving end.
struct Prepared {
    delivery: Delivery,
    body: String,
    headers: http::HeaderMap,
}

/// `n` distinct events, each with its own ids, svix-id and signature, all
/// signed now (the signature is valid for 5 minutes).
fn prepare(verifier: &WebhookVerifier, n: usize) -> Vec<Prepared> {
    let timestamp = chrono::Utc::now().timestamp();
    (0..n)
        .map(|i| {
            let event_type = if i % 2 == 0 {
                "organization.created"
            } else {
                "user.created"
            };
            // Clerk slugs are unique, but the samples all share one; two
            // concurrent creations claiming the same slug collide on the
            // unique index (a 500 that Svix would retry), which is not what
            // is measured here.
            let tag = uuid::Uuid::new_v4().simple().to_string();
            let event = SampleEvent::new(event_type, &SampleIds::random())
                .expect("the sample events cover both types")
                .name(format!("Acme {}", &tag[..8]))
                .slug(Some(format!("acme-{tag}")));
            let body = event.to_json().to_string();
            let svix_id = format!("msg_{}", uuid::Uuid::new_v4().simple());
            let headers = verifier.signed_headers(&svix_id, timestamp, body.as_bytes());
            Prepared {
                delivery: Delivery { svix_id, timestamp },
                body,
                headers,
            }
        })
        .collect()
}

/// Where a variant sends its events.
enum Target {
    Http {
        client: reqwest::Client,
        url: String,
    },
    Inbox(Inbox),
}

impl Target {
    /// Delivers one event. `Err` says why it was not accepted as applied.
    async fn deliver(&self, event: &Prepared) -> Result<(), String> {
        match self {
            Target::Http { client, url } => post(client, url, event).await,
            Target::Inbox(inbox) => match inbox.receive(&event.delivery, &event.body).await {
                Ok(Outcome::Applied) => Ok(()),
                Ok(outcome) => Err(format!("outcome {:?}", outcome.as_str())),
                Err(e) => Err(e.to_string()),
            },
        }
    }
}

#[derive(serde::Deserialize)]
struct Answer {
    outcome: String,
}

/// POSTs an event as Svix would and reads the whole answer, as Svix does
/// before it counts a delivery as done.
async fn post(client: &reqwest::Client, url: &str, event: &Prepared) -> Result<(), String> {
    let response = client
        .post(url)
        .header(CONTENT_TYPE, "application/json")
        .headers(event.headers.clone())
        .body(event.body.clone())
        .send()
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    let status = response.status();
    let text = response
        .text()
        .await
        .map_err(|e| format!("reading the answer failed: {e}"))?;
    if status != StatusCode::OK {
        return Err(format!("HTTP {status}: {text}"));
    }
    let answer: Answer =
        serde_json::from_str(&text).map_err(|e| format!("unexpected answer {text:?}: {e}"))?;
    if answer.outcome != "applied" {
        return Err(format!("outcome {:?}", answer.outcome));
    }
    Ok(())
}

/// Sends every event to `target` in a closed loop of `concurrency` senders.
async fn drive(target: &Arc<Target>, events: Vec<Prepared>, concurrency: usize) -> Tally {
    let (target, events) = (target.clone(), Arc::new(events));
    closed_loop(events.len(), concurrency, move |i| {
        let (target, events) = (target.clone(), events.clone());
        async move { target.deliver(&events[i]).await }
    })
    .await
}

/// One timed run of one variant.
struct Run {
    variant: &'static str,
    concurrency: usize,
    events: usize,
    accepted: usize,
    first_refusal: Option<String>,
    events_per_sec: f64,
    p50: Duration,
    p99: Duration,
}

impl Run {
    fn new(
        variant: &'static str,
        concurrency: usize,
        events: usize,
        wall: Duration,
        mut tally: Tally,
    ) -> Self {
        tally.latencies.sort_unstable();
        Self {
            variant,
            concurrency,
            events,
            accepted: tally.ok,
            first_refusal: tally.first_failure,
            events_per_sec: events as f64 / wall.as_secs_f64(),
            p50: percentile(&tally.latencies, 0.50),
            p99: percentile(&tally.latencies, 0.99),
        }
    }

    fn row(&self) -> String {
        format!(
            "{:<9}{:>3}{:>8}{:>10.0}{:>9.2}{:>9.2}",
            self.variant,
            self.concurrency,
            self.events,
            self.events_per_sec,
            millis(self.p50),
            millis(self.p99),
        )
    }
}

/// How the endpoint compares with the inbox alone at one concurrency:
/// throughput as a fraction, latencies as multiples.
fn ratio_line(http: &Run, baseline: &Run) -> String {
    format!(
        "{:>12}http/baseline throughput = {:.2}, p50 {:.1}×, p99 {:.1}×",
        "",
        http.events_per_sec / baseline.events_per_sec,
        millis(http.p50) / millis(baseline.p50),
        millis(http.p99) / millis(baseline.p99),
    )
}
