//! The internal by-org look-up under load, beside a constant-answer baseline
//! from the same run.
//!
//! ```sh
//! export TENANT_PLANE_TEST_DATABASE_URL=$(scripts/dev-db | tail -1)
//! cargo bench -p tenant-plane --bench internal_lookup -- [--requests N] [--concurrency C,...]
//! ```
//!
//! Two servers run in this process, each on its own port 0:
//!
//! - `lookup`: the application as `serve` builds it (provisioning worker off,
//!   default `database.max_connections`), on a fresh migrated database with
//!   [`TENANTS`] organizations in the directory. Each request is
//!   `GET /internal/v1/tenants/by-org/{org}` with a bearer service token, the
//!   orgs taken round-robin: it pays for routing, the service-token check, a
//!   control-database connection checkout, the `tenant_registry` query and
//!   the JSON answer.
//! - `baseline`: a bare actix-web `HttpServer` with as many workers as the
//!   application's (actix's default, one per CPU) whose single route,
//!   `GET /internal/v1/tenants/by-org/{org}`, returns a constant JSON body:
//!   the application's own answer for the first tenant, fetched beforehand,
//!   so both send the same bytes. What `lookup` costs beyond it is the
//!   price of the route itself.
//!
//! For each concurrency C, C tasks share one keep-alive reqwest client and
//! each sends its next request as soon as the previous answer is read, N
//! requests in all, after untimed warm-up requests that open every
//! connection. The client runs in this process too, on the same CPUs as both
//! servers and PostgreSQL.
//!
//! Speed is printed, never asserted. What is checked is that every timed
//! request was answered 200 with a body (exit 1 otherwise). No log
//! subscriber is installed, so no request is logged.

mod support;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use model::clerk::Organization;
use model::ids::ClerkOrgId;
use registry::directory;
use reqwest::StatusCode;
use support::{app_settings, closed_loop, main_with_database, millis, percentile, positive, Tally};
use tenant_plane::config::Settings;
use tenant_plane::startup::Application;
use testkit::{PrefixGuard, TestDatabase, TestSettings};

/// The bearer token of the internal API in this run.
const SERVICE_TOKEN: &str = "bench-service-token-0123456789";

/// Organizations registered in the directory (and looked up round-robin).
const TENANTS: usize = 100;

/// Measures GET /internal/v1/tenants/by-org/{org} beside a constant answer.
#[derive(Debug, Parser)]
#[command(
    name = "internal_lookup",
    bin_name = "cargo bench -p tenant-plane --bench internal_lookup --"
)]
struct Args {
    /// Timed requests per run.
    #[arg(long, default_value_t = 20_000, value_parser = positive)]
    requests: usize,
    /// Concurrent senders, comma-separated: one pair of runs per value.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32", value_parser = positive)]
    concurrency: Vec<usize>,
    /// Passed by `cargo bench` to every bench binary; nothing to do with it.
    #[arg(long = "bench", hide = true)]
    _bench: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    main_with_database("internal_lookup", || {
        tokio::runtime::Runtime::new()?.block_on(run(&args))
    })
}

async fn run(args: &Args) -> anyhow::Result<()> {
    let db = TestDatabase::migrated().await;
    // The application syncs the tenant template at start; under a test
    // prefix it is dropped with the guard.
    let prefix = PrefixGuard::new();
    // The internal API open to SERVICE_TOKEN; the provisioning worker off.
    let settings = app_settings(
        &TestSettings::new(&db.url(), &prefix.prefix).with_internal_tokens(&[SERVICE_TOKEN]),
    )?;
    let orgs = register(&db, TENANTS).await?;

    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
    let app = Application::build(&settings, listener).await?;
    let app_base = format!("http://127.0.0.1:{}", app.port());
    let app_server = tokio::spawn(app.run_until_stopped());

    let client = reqwest::Client::new();
    // The baseline answers what the application answers for the first org.
    let body = client
        .get(lookup_url(&app_base, &orgs[0]))
        .bearer_auth(SERVICE_TOKEN)
        .send()
        .await?
        .error_for_status()
        .context("the application refused the first look-up")?
        .bytes()
        .await?;
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (baseline_base, baseline_server) = spawn_baseline(body.clone(), workers)?;

    print_context(&db, args, &settings, workers, body.len()).await?;
    println!();
    println!(
        "{:<9}{:>3}{:>9}{:>10}{:>9}{:>9}",
        "variant", "C", "requests", "req/s", "p50(ms)", "p99(ms)"
    );
    let orgs = Arc::new(orgs);
    for &concurrency in &args.concurrency {
        let lookup = Target {
            variant: "lookup",
            client: client.clone(),
            base: app_base.clone(),
            orgs: orgs.clone(),
        };
        let lookup = measure(lookup, args.requests, concurrency).await?;
        println!("{}", lookup.row());
        let baseline = Target {
            variant: "baseline",
            client: client.clone(),
            base: baseline_base.clone(),
            orgs: orgs.clone(),
        };
        let baseline = measure(baseline, args.requests, concurrency).await?;
        println!("{}", baseline.row());
        println!("{}", ratio_line(&lookup, &baseline));
    }

    // Dropping the server futures stops their workers.
    app_server.abort();
    let _ = app_server.await;
    baseline_server.abort();
    let _ = baseline_server.await;
    Ok(())
}

/// Registers `n` organizations in the directory (pending tenants: a look-up
/// reads the row whatever its status, so nothing is provisioned).
async fn register(db: &TestDatabase, n: usize) -> anyhow::Result<Vec<String>> {
    let pool = registry::pool::build_pool(db.config(), &registry::pool::PoolOptions::default())?;
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let mut orgs = Vec::with_capacity(n);
    for i in 0..n {
        let id = ClerkOrgId::parse(format!("org_{}", uuid::Uuid::new_v4().simple()))?;
        directory::upsert_organization(
            &tx,
            &Organization::new(
                id.clone(),
                format!("Bench {i}"),
                Some(format!("bench-{i}")),
                chrono::Utc::now(),
            ),
            "bench",
        )
        .await?;
        orgs.push(id.as_str().to_owned());
    }
    tx.commit().await?;
    Ok(orgs)
}

fn lookup_url(base: &str, org: &str) -> String {
    format!("{base}/internal/v1/tenants/by-org/{org}")
}

/// A bare actix-web server with one route answering `body`.
fn spawn_baseline(
    body: actix_web::web::Bytes,
    workers: usize,
) -> anyhow::Result<(String, tokio::task::JoinHandle<std::io::Result<()>>)> {
    use actix_web::{web, App, HttpResponse, HttpServer};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let server = HttpServer::new(move || {
        let body = body.clone();
        App::new().route(
            "/internal/v1/tenants/by-org/{org}",
            web::get().to(move || {
                let body = body.clone();
                async move {
                    HttpResponse::Ok()
                        .content_type("application/json")
                        .body(body)
                }
            }),
        )
    })
    .workers(workers)
    .listen(listener)?
    .run();
    Ok((format!("http://127.0.0.1:{port}"), tokio::spawn(server)))
}

/// What the figures depend on besides the code.
async fn print_context(
    db: &TestDatabase,
    args: &Args,
    settings: &Settings,
    workers: usize,
    body_len: usize,
) -> anyhow::Result<()> {
    let row = db
        .client()
        .await
        .query_one("SELECT version(), current_setting('fsync')", &[])
        .await?;
    let (version, fsync): (String, String) = (row.get(0), row.get(1));
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("internal look-up benchmark: GET /internal/v1/tenants/by-org/{{org}} against a constant answer");
    println!("machine:    {cpus} CPUs; client, both servers and PostgreSQL all on this machine");
    println!("PostgreSQL: {version}");
    println!("            fsync={fsync}");
    println!(
        "servers:    {workers} actix workers each; the app has {} control-database connections",
        settings.database.max_connections
    );
    println!(
        "requests:   {} timed per run (+ warm-up), {TENANTS} orgs round-robin, {body_len}-byte answers",
        args.requests
    );
    Ok(())
}

/// Where a variant's requests go.
struct Target {
    variant: &'static str,
    client: reqwest::Client,
    base: String,
    orgs: Arc<Vec<String>>,
}

impl Target {
    /// One look-up, its answer read whole. `Err` says why it does not count.
    async fn get(&self, i: usize) -> Result<(), String> {
        let org = &self.orgs[i % self.orgs.len()];
        let response = self
            .client
            .get(lookup_url(&self.base, org))
            .bearer_auth(SERVICE_TOKEN)
            .send()
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| format!("reading the answer failed: {e}"))?;
        if status != StatusCode::OK {
            return Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&body)));
        }
        if body.is_empty() {
            return Err("empty answer".into());
        }
        Ok(())
    }
}

/// Warms the target up (every keep-alive connection of C senders, and the
/// server's database connections), then times `requests` look-ups.
async fn measure(target: Target, requests: usize, concurrency: usize) -> anyhow::Result<Run> {
    let target = Arc::new(target);
    let warm_up = (concurrency * 20).max(500);
    drive(&target, warm_up, concurrency).await;

    let started = Instant::now();
    let tally = drive(&target, requests, concurrency).await;
    let run = Run::new(
        target.variant,
        concurrency,
        requests,
        started.elapsed(),
        tally,
    );
    if run.ok < run.requests {
        bail!(
            "{}, C={concurrency}: only {} of {} requests were answered 200 (first failure: {}); \
             figures over failed requests would mean nothing",
            run.variant,
            run.ok,
            run.requests,
            run.first_failure.as_deref().unwrap_or("none recorded"),
        );
    }
    Ok(run)
}

/// Sends `requests` look-ups in a closed loop of `concurrency` senders.
async fn drive(target: &Arc<Target>, requests: usize, concurrency: usize) -> Tally {
    let target = target.clone();
    closed_loop(requests, concurrency, move |i| {
        let target = target.clone();
        async move { target.get(i).await }
    })
    .await
}

/// One timed run of one variant.
struct Run {
    variant: &'static str,
    concurrency: usize,
    requests: usize,
    ok: usize,
    first_failure: Option<String>,
    per_sec: f64,
    p50: Duration,
    p99: Duration,
}

impl Run {
    fn new(
        variant: &'static str,
        concurrency: usize,
        requests: usize,
        wall: Duration,
        mut tally: Tally,
    ) -> Self {
        tally.latencies.sort_unstable();
        Self {
            variant,
            concurrency,
            requests,
            ok: tally.ok,
            first_failure: tally.first_failure,
            per_sec: requests as f64 / wall.as_secs_f64(),
            p50: percentile(&tally.latencies, 0.50),
            p99: percentile(&tally.latencies, 0.99),
        }
    }

    fn row(&self) -> String {
        format!(
            "{:<9}{:>3}{:>9}{:>10.0}{:>9.3}{:>9.3}",
            self.variant,
            self.concurrency,
            self.requests,
            self.per_sec,
            millis(self.p50),
            millis(self.p99),
        )
    }
}

/// The route against the constant answer at one concurrency: throughput as
/// a fraction, latencies as multiples.
fn ratio_line(lookup: &Run, baseline: &Run) -> String {
    format!(
        "{:>12}lookup/baseline throughput = {:.2}, p50 {:.1}×, p99 {:.1}×",
        "",
        lookup.per_sec / baseline.per_sec,
        millis(lookup.p50) / millis(baseline.p50),
        millis(lookup.p99) / millis(baseline.p99),
    )
}
