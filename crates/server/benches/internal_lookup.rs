//! The internal API's hot routes under load, beside `GET /healthz` of the
//! same server in the same run.
//!
//! ```sh
//! export TENANT_PLANE_TEST_DATABASE_URL=$(scripts/dev-db | tail -1)
//! cargo bench -p tenant-plane --bench internal_lookup -- [--requests N] [--concurrency C,...]
//! ```
//!
//! The application runs as `serve` builds it (provisioning worker off after
//! setup), on a fresh migrated database with [`TENANTS`] organizations
//! provisioned for real, its resolver trusting testkit's `rsa-a` key. The
//! variants, each against the same server:
//!
//! - `healthz`: `GET /healthz`, the baseline: routing, the service's
//!   middleware and a small JSON answer, nothing else;
//! - `by_id`, `by_org`, `by_slug`: `GET /internal/v1/tenants/{id}`,
//!   `/by-org/{org}`, `/by-slug/{slug}` with a bearer service token, the
//!   tenants taken round-robin;
//! - `resolve`: `POST /internal/v1/resolve` with one v2 session token per
//!   tenant, round-robin.
//!
//! Each variant runs right after a healthz run of its own, and its ratio
//! is taken against that run (`--rounds R` repeats the pairs and prints the
//! median ratio).
//!
//! For each concurrency C, C tasks share one keep-alive reqwest client and
//! each sends its next request as soon as the previous answer is read, N
//! requests in all, after untimed warm-up requests that open every
//! connection (and fill the caches). The client runs in this process too,
//! on the same CPUs as the server and PostgreSQL.
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
use testkit::{jwt, PrefixGuard, TestDatabase, TestSettings};

/// The bearer token of the internal API in this run.
const SERVICE_TOKEN: &str = "bench-service-token-0123456789";

/// Organizations provisioned (and looked up round-robin).
const TENANTS: usize = 20;

/// The variants, in the order they run at each concurrency.
const VARIANTS: [Variant; 5] = [
    Variant::Healthz,
    Variant::ById,
    Variant::ByOrg,
    Variant::BySlug,
    Variant::Resolve,
];

/// Measures the internal API's routes beside /healthz.
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
    #[arg(long, value_delimiter = ',', default_value = "1,32", value_parser = positive)]
    concurrency: Vec<usize>,
    /// Who sends the requests: `reqwest` (in this process, a closed loop of
    /// C tasks, N requests) or `wrk` (Debian's wrk as a child process, C
    /// connections on 2 threads for --seconds, after 2 s of warm-up).
    #[arg(long, default_value = "reqwest", value_parser = ["reqwest", "wrk"])]
    driver: String,
    /// With `--driver wrk`: seconds per run.
    #[arg(long, default_value_t = 10, value_parser = positive)]
    seconds: usize,
    /// Only these variants (and healthz, the baseline), comma-separated.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Rounds per concurrency. Each round runs every variant right after a
    /// healthz run of its own, and each ratio is taken within its pair; with
    /// more than one round the median ratio per variant is printed too.
    /// Pairs because this machine's speed drifts by 20% and more within a
    /// minute: a baseline measured once, minutes before, moves the ratios.
    #[arg(long, default_value_t = 1, value_parser = positive)]
    rounds: usize,
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
    // Tenant databases are made under a test prefix, dropped with the guard.
    let prefix = PrefixGuard::new();
    let settings = app_settings(
        &TestSettings::new(&db.url(), &prefix.prefix)
            .with_internal_tokens(&[SERVICE_TOKEN])
            .with_clerk_issuer(jwt::ISSUER)
            .set(
                "TENANT_PLANE__CLERK__JWT_PUBLIC_KEY",
                jwt::public_pem("rsa-a"),
            ),
    )?;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
    let app = Application::build(&settings, listener).await?;
    let base = format!("http://127.0.0.1:{}", app.port());
    register(&db, TENANTS).await?;
    app.reconciler().drain().await?;
    let tenants = Arc::new(tenants(&db).await?);
    if tenants.len() != TENANTS {
        bail!("{} of {TENANTS} tenants became active", tenants.len());
    }
    let server = tokio::spawn(app.run_until_stopped());

    let client = reqwest::Client::new();
    print_context(&db, args, &settings).await?;
    println!();
    println!(
        "{:<9}{:>3}{:>9}{:>10}{:>9}{:>9}",
        "variant", "C", "requests", "req/s", "p50(ms)", "p99(ms)"
    );
    let variants: Vec<Variant> = VARIANTS[1..]
        .iter()
        .copied()
        .filter(|v| args.only.is_empty() || args.only.iter().any(|o| o == v.name()))
        .collect();
    let timed = |variant: Variant, concurrency: usize| {
        let target = Target {
            variant,
            client: client.clone(),
            base: base.clone(),
            tenants: tenants.clone(),
        };
        async move {
            if args.driver == "wrk" {
                wrk(&target, args.seconds, concurrency).await
            } else {
                measure(target, args.requests, concurrency).await
            }
        }
    };
    for &concurrency in &args.concurrency {
        let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
        for round in 1..=args.rounds {
            if args.rounds > 1 {
                println!("round {round} of {}, C = {concurrency}", args.rounds);
            }
            for (i, &variant) in variants.iter().enumerate() {
                let healthz = timed(Variant::Healthz, concurrency).await?;
                println!("{}", healthz.row());
                let run = timed(variant, concurrency).await?;
                println!("{}", run.row());
                println!("{}", ratio_line(&run, &healthz));
                ratios[i].push(run.per_sec / healthz.per_sec);
            }
        }
        if args.rounds > 1 {
            println!("median over {} rounds, C = {concurrency}:", args.rounds);
            for (variant, mut r) in variants.iter().zip(ratios) {
                r.sort_by(f64::total_cmp);
                let list: Vec<String> = r.iter().map(|x| format!("{x:.2}")).collect();
                println!(
                    "{:>12}{}/healthz throughput = {:.2} (rounds: {})",
                    "",
                    variant.name(),
                    r[r.len() / 2],
                    list.join(", ")
                );
            }
        }
    }

    // Dropping the server future stops its workers.
    server.abort();
    let _ = server.await;
    Ok(())
}

/// Registers `n` organizations in the directory, each with a slug (the
/// reconciler then provisions them).
async fn register(db: &TestDatabase, n: usize) -> anyhow::Result<()> {
    let pool = registry::pool::build_pool(db.config(), &registry::pool::PoolOptions::default())?;
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    for i in 0..n {
        let id = ClerkOrgId::parse(format!("org_{}", uuid::Uuid::new_v4().simple()))?;
        directory::upsert_organization(
            &tx,
            &Organization::new(
                id,
                format!("Bench {i}"),
                Some(format!("bench-{i}")),
                chrono::Utc::now(),
            ),
            "bench",
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// One active tenant, and what each variant sends for it.
struct Tenant {
    id: String,
    org: String,
    slug: String,
    /// A v2 session token for its organization, valid for an hour.
    token: String,
}

async fn tenants(db: &TestDatabase) -> anyhow::Result<Vec<Tenant>> {
    let rows = db
        .client()
        .await
        .query(
            "SELECT id::text, clerk_org_id, slug FROM tenant_registry WHERE status = 'active'",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let org: String = r.get(1);
            let mut session = jwt::Session::new(jwt::ISSUER, &org, jwt::now());
            session.expires_at = jwt::now() + 3600;
            Tenant {
                id: r.get(0),
                token: jwt::sign(&session.v2()),
                org,
                slug: r.get(2),
            }
        })
        .collect())
}

/// What the figures depend on besides the code.
async fn print_context(db: &TestDatabase, args: &Args, settings: &Settings) -> anyhow::Result<()> {
    let row = db
        .client()
        .await
        .query_one("SELECT version(), current_setting('fsync')", &[])
        .await?;
    let (version, fsync): (String, String) = (row.get(0), row.get(1));
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "internal API benchmark: look-ups and resolve against GET /healthz of the same server"
    );
    println!("machine:    {cpus} CPUs; client, server and PostgreSQL all on this machine");
    println!("PostgreSQL: {version}");
    println!("            fsync={fsync}");
    println!(
        "server:     {cpus} actix workers; {} API connections to the control database",
        settings.database.api_connections
    );
    println!(
        "requests:   {} timed per run (+ warm-up), {TENANTS} tenants round-robin",
        args.requests
    );
    Ok(())
}

#[derive(Debug, Clone, Copy)]
enum Variant {
    Healthz,
    ById,
    ByOrg,
    BySlug,
    Resolve,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Healthz => "healthz",
            Variant::ById => "by_id",
            Variant::ByOrg => "by_org",
            Variant::BySlug => "by_slug",
            Variant::Resolve => "resolve",
        }
    }
}

/// Where a variant's requests go.
struct Target {
    variant: Variant,
    client: reqwest::Client,
    base: String,
    tenants: Arc<Vec<Tenant>>,
}

impl Target {
    /// One request, its answer read whole. `Err` says why it does not count.
    async fn get(&self, i: usize) -> Result<(), String> {
        let t = &self.tenants[i % self.tenants.len()];
        let (method, path, body) = request_of(self.variant, t);
        let url = format!("{}{path}", self.base);
        let mut request = match method {
            "POST" => self.client.post(url),
            _ => self.client.get(url),
        };
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        let response = request
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

/// The request of `variant` for tenant `t`: method, path and body.
fn request_of(variant: Variant, t: &Tenant) -> (&'static str, String, Option<String>) {
    match variant {
        Variant::Healthz => ("GET", "/healthz".into(), None),
        Variant::ById => ("GET", format!("/internal/v1/tenants/{}", t.id), None),
        Variant::ByOrg => (
            "GET",
            format!("/internal/v1/tenants/by-org/{}", t.org),
            None,
        ),
        Variant::BySlug => (
            "GET",
            format!("/internal/v1/tenants/by-slug/{}", t.slug),
            None,
        ),
        Variant::Resolve => (
            "POST",
            "/internal/v1/resolve".into(),
            Some(serde_json::json!({ "token": t.token }).to_string()),
        ),
    }
}

/// Runs wrk against `target`: 2 s of warm-up, then `seconds` timed, the
/// tenants round-robin (a Lua script). Any answer but 2xx fails the run.
async fn wrk(target: &Target, seconds: usize, concurrency: usize) -> anyhow::Result<Run> {
    let lua = |s: &str| format!("{s:?}");
    let mut requests = Vec::new();
    for t in target.tenants.iter() {
        let (method, path, body) = request_of(target.variant, t);
        requests.push(format!(
            "wrk.format({}, {}, headers, {})",
            lua(method),
            lua(&path),
            body.as_deref().map_or("nil".to_owned(), lua)
        ));
    }
    // Formatted in init(), once wrk knows the Host header of the URL.
    let script = format!(
        "local headers = {{ [\"Authorization\"] = \"Bearer {SERVICE_TOKEN}\", \
         [\"Content-Type\"] = \"application/json\" }}\n\
         local requests = {{}}\n\
         local i = 0\n\
         init = function(args) requests = {{ {} }} end\n\
         request = function() i = i + 1; return requests[(i % #requests) + 1] end\n",
        requests.join(", ")
    );
    let path = std::env::temp_dir().join(format!("tp-bench-{}.lua", uuid::Uuid::new_v4().simple()));
    std::fs::write(&path, script)?;
    let run_wrk = |secs: usize| {
        let path = path.clone();
        let base = target.base.clone();
        async move {
            let out = tokio::process::Command::new("wrk")
                .args([
                    "-t2",
                    &format!("-c{concurrency}"),
                    &format!("-d{secs}s"),
                    "--latency",
                    "-s",
                ])
                .arg(&path)
                .arg(&base)
                .output()
                .await
                .context("run wrk (apt-get install wrk)")?;
            anyhow::Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        }
    };
    run_wrk(2).await?;
    let out = run_wrk(seconds).await;
    let _ = std::fs::remove_file(&path);
    let out = out?;
    if let Some(line) = out.lines().find(|l| l.contains("Non-2xx")) {
        bail!("{}: wrk saw refusals: {line}\n{out}", target.variant.name());
    }
    let field = |prefix: &str| {
        out.lines()
            .find_map(|l| l.trim().strip_prefix(prefix).map(|r| r.trim().to_owned()))
            .with_context(|| format!("wrk printed no {prefix:?}:\n{out}"))
    };
    let per_sec: f64 = field("Requests/sec:")?.parse()?;
    // "  201234 requests in 10.00s, 41.2MB read"
    let total: usize = out
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("wrk printed no request count:\n{out}"))?;
    Ok(Run {
        variant: target.variant.name(),
        concurrency,
        requests: total,
        ok: total,
        first_failure: None,
        per_sec,
        p50: wrk_duration(&field("50%")?)?,
        p99: wrk_duration(&field("99%")?)?,
    })
}

/// wrk's latency figures: `812.00us`, `1.20ms`, `2.01s`.
fn wrk_duration(text: &str) -> anyhow::Result<Duration> {
    let (number, unit) = text
        .find(|c: char| c.is_ascii_alphabetic())
        .map(|at| text.split_at(at))
        .with_context(|| format!("not a wrk duration: {text:?}"))?;
    let n: f64 = number.parse()?;
    let secs = match unit {
        "us" => n / 1e6,
        "ms" => n / 1e3,
        "s" => n,
        "m" => n * 60.0,
        _ => bail!("not a wrk duration: {text:?}"),
    };
    Ok(Duration::from_secs_f64(secs))
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
        target.variant.name(),
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

/// A route against /healthz at one concurrency: throughput as a fraction,
/// latencies as multiples.
fn ratio_line(lookup: &Run, baseline: &Run) -> String {
    format!(
        "{:>12}{}/healthz throughput = {:.2}, p50 {:.1}×, p99 {:.1}×",
        "",
        lookup.variant,
        lookup.per_sec / baseline.per_sec,
        millis(lookup.p50) / millis(baseline.p50),
        millis(lookup.p99) / millis(baseline.p99),
    )
}
