//! Provisioning, from an organization.created webhook to an active tenant,
//! beside raw `CREATE DATABASE ... TEMPLATE` from the same run on the same
//! PostgreSQL.
//!
//! ```sh
//! export TENANT_PLANE_TEST_DATABASE_URL=$(scripts/dev-db | tail -1)
//! cargo bench -p tenant-plane --bench provisioning -- [--tenants N] [--concurrency 1,4]
//! ```
//!
//! For each concurrency C, on a fresh migrated database and tenant prefix:
//!
//! - `app`: the application as `serve` builds it, in this process on port 0,
//!   with the provisioning worker on (C workers). C senders each POST a
//!   signed organization.created and wait until that tenant is `active`
//!   before sending the next one (a closed loop: at most C tenants in
//!   flight, one per worker). A tenant's latency runs from just before its
//!   POST to the arrival of the `tenant_plane_tenant_changed` notification
//!   after which its row reads `active`: we LISTEN on a connection of our
//!   own and run one query per notification, nothing polls.
//! - `raw`, `raw_fcopy`: C admin connections each issuing `CREATE DATABASE
//!   ... TEMPLATE ... STRATEGY WAL_LOG` (or `FILE_COPY`) back to back,
//!   cloning the very template database the app made. This is the floor:
//!   what `app` costs beyond it is the webhook, the claim and result
//!   transactions, the roles, the first connection into the new database
//!   and the set-up inside it.
//! - `warm`: one worker and `--warm-pool` spares; organizations arrive
//!   `--warm-interval` apart (an open loop, as sign-ups do).
//! - `burst`: `--burst` organizations posted at once (32 in flight) onto a
//!   full pool and `--burst-workers` workers; `raw_burst` is as many raw
//!   clones at that concurrency, its baseline. The tenants a spare served
//!   are the ones whose claim's audit event names one.
//!
//! A closed loop, rather than firing all N webhooks at once, keeps `app`
//! and `raw` comparable: open-loop latencies would be mostly time spent
//! queued behind other tenants, while `raw` has no queue.
//!
//! Tenants slower than 0.9 of the workers' backstop poll
//! (`--poll-interval`) are counted as woken by the poll rather than by
//! NOTIFY and reported beside the figures, which include them.
//!
//! `BENCH_LOG=info` (any tracing filter) shows the application's logs.
//!
//! Speed is printed, never asserted. What is checked is that every webhook
//! was applied and every tenant became active within a liveness bound,
//! because figures over failed provisioning would mean nothing. Every
//! database and role made under a run's prefix is dropped at the end.

mod support;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use clap::Parser;
use futures::StreamExt;
use model::naming::{quote_ident, PgIdent};
use registry::tenants::CHANGED_CHANNEL;
use reqwest::header::CONTENT_TYPE;
use reqwest::StatusCode;
use support::{app_settings, main_with_database, millis, percentile, positive};
use tenant_plane::startup::Application;
use testkit::{PrefixGuard, TestDatabase, TestSettings};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::{AsyncMessage, Client};
use webhooks::samples::{SampleEvent, SampleIds};
use webhooks::WebhookVerifier;

/// How long one tenant may take to become active before the run is called
/// failed. A liveness bound (provisioning takes well under a second), not a
/// speed assertion: with a `--poll-interval` longer than this, a lost
/// wake-up would otherwise hang the bench for the whole interval.
const ACTIVE_DEADLINE: Duration = Duration::from_secs(60);

/// Connections that drop a run's databases together. PostgreSQL 15 waits
/// for a checkpoint in every DROP DATABASE, and drops waiting at the same
/// time share one; one by one, as the prefix guard drops, 400 databases
/// take many minutes when fsync is on.
const CLEANUP_CONNECTIONS: usize = 16;

/// A tenant slower than this fraction of the poll interval is taken to have
/// been woken by the backstop poll: provisioning itself takes a fraction of
/// the default 1s, and every tenant has a worker of its own.
const POLLED_FRACTION: f64 = 0.9;

/// Measures webhook-to-active provisioning beside raw CREATE DATABASE.
#[derive(Debug, Parser)]
#[command(
    name = "provisioning",
    bin_name = "cargo bench -p tenant-plane --bench provisioning --"
)]
struct Args {
    /// Tenants per run (each variant, each concurrency).
    #[arg(long, default_value_t = 200, value_parser = positive)]
    tenants: usize,
    /// Concurrent senders and workers (app) or connections (raw),
    /// comma-separated: `--rounds` rounds of runs per value.
    #[arg(long, value_delimiter = ',', default_value = "1,4", value_parser = positive)]
    concurrency: Vec<usize>,
    /// Rounds of app and raw runs per concurrency, each round on a fresh
    /// control database and prefix; the ratios are taken within a round
    /// and their median printed. This machine's disk drifts by 2x within
    /// minutes, so one raw run minutes from its app run says little.
    #[arg(long, default_value_t = 3, value_parser = positive)]
    rounds: usize,
    /// The workers' backstop poll (worker.poll_interval): how long a tenant
    /// whose NOTIFY wake-up was lost waits. Keep it well above the normal
    /// latency, or the count of tenants woken by it means nothing.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    poll_interval: Duration,
    /// Spares per host for the `warm` row (tenants.warm_pool); 0 skips it.
    #[arg(long, default_value_t = 4)]
    warm_pool: usize,
    /// Organizations in the `warm` row, arriving `--warm-interval` apart.
    #[arg(long, default_value_t = 40)]
    warm_tenants: usize,
    #[arg(long, default_value = "400ms", value_parser = humantime::parse_duration)]
    warm_interval: Duration,
    /// Organizations posted at once in the `burst` row (0 skips it), onto
    /// a warm pool of `--warm-pool` and `--burst-workers` workers.
    #[arg(long, default_value_t = 0)]
    burst: usize,
    #[arg(long, default_value_t = 4, value_parser = positive)]
    burst_workers: usize,
    /// How the burst's tenants and its `raw_burst` baseline clone
    /// (tenants.clone_strategy).
    #[arg(long, value_enum, default_value = "wal-log")]
    burst_strategy: Strategy,
    /// Passed by `cargo bench` to every bench binary; nothing to do with it.
    #[arg(long = "bench", hide = true)]
    _bench: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // No subscriber by default, so the app pays for no log lines.
    if let Ok(level) = std::env::var("BENCH_LOG") {
        tenant_plane::telemetry::init(tenant_plane::config::LogFormat::Pretty, &level);
    }
    main_with_database("provisioning", || run(&args))
}

fn run(args: &Args) -> anyhow::Result<()> {
    on_fresh_runtime(print_context(args))?;
    println!();
    println!(
        "{:<9}{:>3}{:>9}{:>11}{:>10}{:>10}",
        "variant", "C", "tenants", "tenants/s", "p50(ms)", "p99(ms)"
    );
    // Per concurrency: the median p50 of the fastest raw run of each round.
    let mut raw_p50s = Vec::new();
    for &concurrency in &args.concurrency {
        let rounds = (0..args.rounds)
            .map(|_| measure_pair(args, concurrency))
            .collect::<anyhow::Result<Vec<_>>>()?;
        if args.rounds > 1 {
            for line in median_lines(&rounds) {
                println!("{line}");
            }
        }
        let mut p50s: Vec<Duration> = rounds.iter().map(|r| r.fastest().p50()).collect();
        p50s.sort_unstable();
        raw_p50s.push((concurrency, percentile(&p50s, 0.50)));
    }
    let raw_p50_at = |c: usize| raw_p50s.iter().find(|(at, _)| *at == c).map(|(_, p)| *p);
    if args.warm_pool > 0 && args.warm_tenants > 0 {
        let db = on_fresh_runtime(async { Ok(TestDatabase::migrated().await) })?;
        let prefix = PrefixGuard::new();
        let warm = on_fresh_runtime(measure_warm(args, &db, &prefix.prefix))?;
        println!("{}", warm.row());
        if let Some(raw) = raw_p50_at(1) {
            println!(
                "{:>12}warm p50 / raw clone p50 (C = 1, median of the rounds) = {:.2}",
                "",
                millis(warm.p50()) / millis(raw)
            );
        }
        if let Err(e) = on_fresh_runtime(drop_databases(&prefix.prefix)) {
            eprintln!("warning: dropping the run's databases: {e:#}");
        }
    }
    if args.burst > 0 {
        let db = on_fresh_runtime(async { Ok(TestDatabase::migrated().await) })?;
        let prefix = PrefixGuard::new();
        let burst = on_fresh_runtime(measure_burst(args, &db, &prefix.prefix))?;
        println!("{}", burst.run.row());
        if let Err(e) = on_fresh_runtime(drop_databases(&prefix.prefix)) {
            eprintln!("warning: dropping the run's databases: {e:#}");
        }
        // The burst's baseline: as many raw clones at the same concurrency.
        // A thousand clones write several max_wal_size of WAL, so they pay
        // for checkpoints that a run of `--tenants` may never reach.
        let mut raw = on_fresh_runtime(measure_raw(
            &burst.template,
            &prefix.prefix,
            args.burst,
            args.burst_workers,
            args.burst_strategy,
        ))?;
        raw.variant = format!("{}_burst", args.burst_strategy.variant());
        println!("{}", raw.row());
        println!("{}", burst.summary(Some(&raw)));
        if let Err(e) = on_fresh_runtime(drop_databases(&prefix.prefix)) {
            eprintln!("warning: dropping the run's databases: {e:#}");
        }
    }
    Ok(())
}

/// One round at one concurrency: the app, then raw clones with each
/// strategy.
struct Round {
    app: Run,
    raws: Vec<Run>,
}

impl Round {
    fn fastest(&self) -> &Run {
        self.raws
            .iter()
            .max_by(|a, b| a.per_sec.total_cmp(&b.per_sec))
            .expect("a raw run per strategy")
    }
}

/// Per raw strategy, the median over the rounds of the ratios taken within
/// each round.
fn median_lines(rounds: &[Round]) -> Vec<String> {
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    (0..rounds[0].raws.len())
        .map(|i| {
            let throughput = median(
                rounds
                    .iter()
                    .map(|r| r.app.per_sec / r.raws[i].per_sec)
                    .collect(),
            );
            let p50 = median(
                rounds
                    .iter()
                    .map(|r| millis(r.app.p50()) / millis(r.raws[i].p50()))
                    .collect(),
            );
            format!(
                "{:>12}median of {} rounds, app/{}: throughput = {throughput:.2}, p50 {p50:.2}×",
                "",
                rounds.len(),
                rounds[0].raws[i].variant,
            )
        })
        .collect()
}

/// Both variants at one concurrency, on a fresh control database and tenant
/// prefix, printed as they finish.
///
/// The database and the prefix guard are held here, not in a phase, so that
/// they are dropped (with every database and role under the prefix) only
/// once no runtime is left to run a worker or sender that could make
/// another database after the guard has listed them, even on Ctrl-C.
fn measure_pair(args: &Args, concurrency: usize) -> anyhow::Result<Round> {
    let db = on_fresh_runtime(async { Ok(TestDatabase::migrated().await) })?;
    let prefix = PrefixGuard::new();

    let (app, template) = on_fresh_runtime(measure_app(args, concurrency, &db, &prefix.prefix))?;
    println!("{}", app.row());
    println!("{}", polled_line(&app, args.poll_interval));
    // The app's databases go first, so that raw clones as many next to as
    // few databases as the app did.
    if let Err(e) = on_fresh_runtime(drop_databases(&prefix.prefix)) {
        eprintln!("warning: dropping the run's databases: {e:#}");
    }
    let mut raws = Vec::new();
    for strategy in [Strategy::WalLog, Strategy::FileCopy] {
        let raw = on_fresh_runtime(measure_raw(
            &template,
            &prefix.prefix,
            args.tenants,
            concurrency,
            strategy,
        ))?;
        println!("{}", raw.row());
        println!("{}", ratio_line(&app, &raw));
        if let Err(e) = on_fresh_runtime(drop_databases(&prefix.prefix)) {
            eprintln!("warning: dropping the run's databases: {e:#}");
        }
        raws.push(raw);
    }
    Ok(Round { app, raws })
}

/// How `raw` clones: PostgreSQL's two CREATE DATABASE strategies.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Strategy {
    WalLog,
    FileCopy,
}

impl Strategy {
    fn variant(self) -> &'static str {
        match self {
            Strategy::WalLog => "raw",
            Strategy::FileCopy => "raw_fcopy",
        }
    }

    fn sql(self) -> &'static str {
        match self {
            Strategy::WalLog => "WAL_LOG",
            Strategy::FileCopy => "FILE_COPY",
        }
    }
}

/// Starts the application on `db` under `prefix` with `env` on top of the
/// bench's settings, and the target its senders post to.
async fn start_app(
    db: &TestDatabase,
    env: TestSettings,
    deadline: Duration,
) -> anyhow::Result<(Arc<AppTarget>, PgIdent)> {
    let secret = env.webhook_secret().to_owned();
    let settings = app_settings(&env)?;
    let template = settings.prefix()?.template_ident();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
    let app = Application::build(&settings, listener).await?;
    let target = Arc::new(AppTarget {
        url: format!("http://127.0.0.1:{}/webhooks/clerk", app.port()),
        http: reqwest::Client::new(),
        verifier: WebhookVerifier::new(&secret)?,
        watch: ActiveWatch::start(db).await?,
        db: db.client().await,
        deadline,
    });
    tokio::spawn(app.run_until_stopped());
    Ok((target, template))
}

/// Waits (a liveness bound, not a figure) until `n` spares are ready.
async fn pool_ready(db: &Client, n: usize) -> anyhow::Result<()> {
    let until = Instant::now() + ACTIVE_DEADLINE;
    loop {
        let ready: i64 = db
            .query_one(
                "SELECT count(*) FROM warm_spares WHERE state = 'ready'",
                &[],
            )
            .await?
            .get(0);
        if ready as usize >= n {
            return Ok(());
        }
        if Instant::now() > until {
            bail!(
                "the warm pool did not fill to {n} within {}s",
                ACTIVE_DEADLINE.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The `warm` row: one worker and `--warm-pool` spares; organizations
/// arrive `--warm-interval` apart (an open loop, as sign-ups do), each
/// timed from its POST to active.
async fn measure_warm(args: &Args, db: &TestDatabase, prefix: &str) -> anyhow::Result<Run> {
    let env = TestSettings::new(&db.url(), prefix)
        .with_worker(true)
        .with_worker_concurrency(1)
        .with_worker_poll_interval(args.poll_interval)
        .set(
            "TENANT_PLANE__TENANTS__WARM_POOL",
            args.warm_pool.to_string(),
        );
    let (target, _) = start_app(db, env, ACTIVE_DEADLINE).await?;
    // Untimed: one tenant opens the connections; then the pool refills.
    provision_one(target.clone(), 0, 0).await?;
    pool_ready(&target.db, args.warm_pool).await?;
    checkpoint().await?;
    let start = Instant::now();
    let arrivals: Vec<_> = (0..args.warm_tenants)
        .map(|i| {
            let target = target.clone();
            let at = start + args.warm_interval * i as u32;
            tokio::spawn(async move {
                tokio::time::sleep_until(at.into()).await;
                provision_one(target, 0, i).await
            })
        })
        .collect();
    let mut spans = Vec::new();
    for a in arrivals {
        spans.push(a.await.context("a sender panicked")??);
    }
    Ok(Run::new("warm", 1, spans))
}

/// The `burst` row and what it needs to be read.
struct Burst {
    run: Run,
    /// When each tenant became active, in order, from the first POST.
    done: Vec<Duration>,
    /// The tenants a warm spare served (their claim's audit event names
    /// one), in the order they were posted: POST to answered, POST to
    /// active.
    from_pool: Vec<(Duration, Duration)>,
    /// The template the burst's tenants were cloned from, for `raw_burst`.
    template: PgIdent,
}

impl Burst {
    /// What the row does not say: how fast the pool served its tenants,
    /// and how fast the rest came, against `raw` (as many clones at the
    /// burst's concurrency, on the same server).
    fn summary(&self, raw: Option<&Run>) -> String {
        let pool = self.from_pool.len();
        let served: Vec<String> = self
            .from_pool
            .iter()
            .map(|(answered, active)| format!("{:.1} ({:.1})", millis(*active), millis(*answered)))
            .collect();
        let all = self.done.last().copied().unwrap_or_default();
        // Throughput of those the pool could not serve: from the moment the
        // pool's last tenant was active to the last tenant.
        let rest = match (self.done.get(pool.saturating_sub(1)), self.done.last()) {
            (Some(from), Some(to)) if self.done.len() > pool && to > from => {
                (self.done.len() - pool) as f64 / (*to - *from).as_secs_f64()
            }
            _ => f64::NAN,
        };
        let mut line = format!(
            "{:>12}all {} active after {:.1} s; {} from the pool, POST to active (to answered), ms: {}; \
             the rest at {:.1} tenants/s",
            "",
            self.done.len(),
            all.as_secs_f64(),
            pool,
            served.join(", "),
            rest,
        );
        if let Some(raw) = raw {
            line += &format!(
                " = {:.2}x {} throughput at C = {}",
                rest / raw.per_sec,
                raw.variant,
                raw.concurrency
            );
        }
        line
    }
}

/// The `burst` row: `--burst` organizations posted at once (32 at a time)
/// onto a full warm pool and `--burst-workers` workers.
async fn measure_burst(args: &Args, db: &TestDatabase, prefix: &str) -> anyhow::Result<Burst> {
    let env = TestSettings::new(&db.url(), prefix)
        // Room for the burst, the warm-up tenant and the pool.
        .set(
            "TENANT_PLANE__TENANTS__DEFAULT_HOST_CAPACITY",
            (args.burst + args.warm_pool + 16).to_string(),
        )
        .with_worker(true)
        .with_worker_concurrency(args.burst_workers)
        .with_worker_poll_interval(args.poll_interval)
        .set(
            "TENANT_PLANE__TENANTS__WARM_POOL",
            args.warm_pool.to_string(),
        )
        .set(
            // The setting spells the SQL keyword in lower case.
            "TENANT_PLANE__TENANTS__CLONE_STRATEGY",
            args.burst_strategy.sql().to_ascii_lowercase(),
        );
    // A thousand tenants queue: each may wait for all before it.
    let (target, template) = start_app(db, env, Duration::from_secs(600)).await?;
    provision_one(target.clone(), 0, 0).await?;
    pool_ready(&target.db, args.warm_pool).await?;
    checkpoint().await?;
    let posting = Arc::new(tokio::sync::Semaphore::new(32));
    let start = Instant::now();
    let tenants: Vec<_> = (0..args.burst)
        .map(|i| {
            let (target, posting) = (target.clone(), posting.clone());
            tokio::spawn(async move {
                let permit = posting.acquire_owned().await?;
                provision_posted(target, i, permit).await
            })
        })
        .collect();
    let mut posted = Vec::new();
    for t in tenants {
        posted.push(t.await.context("a sender panicked")??);
    }
    let from_spares: HashSet<String> = target
        .db
        .query(
            "SELECT t.clerk_org_id FROM tenant_events e
               JOIN tenant_registry t ON t.id = e.tenant_id
              WHERE e.detail ? 'warm_spare'",
            &[],
        )
        .await
        .context("which tenants took a spare")?
        .iter()
        .map(|r| r.get(0))
        .collect();
    posted.sort_by_key(|p| p.span.start);
    let from_pool = posted
        .iter()
        .filter(|p| from_spares.contains(&p.org_id))
        .map(|p| {
            (
                p.answered.duration_since(p.span.start),
                p.span.end.duration_since(p.span.start),
            )
        })
        .collect();
    let mut done: Vec<Duration> = posted
        .iter()
        .map(|p| p.span.end.duration_since(start))
        .collect();
    done.sort_unstable();
    Ok(Burst {
        run: Run::new(
            "burst",
            args.burst_workers,
            posted.iter().map(|p| p.span).collect(),
        ),
        done,
        from_pool,
        template,
    })
}

/// Runs one phase on a runtime of its own, shut down when the phase ends.
///
/// The application has no stop handle, and dropping its
/// `run_until_stopped` future drops the sender its workers watch for
/// shutdown, after which their idle wait returns at once and they spin on
/// the control database. Ending the runtime ends those tasks instead, so
/// nothing from one phase runs during the next.
///
/// Ctrl-C ends the phase with an error, so that the databases made so far
/// are dropped on the way out (the application's own signal handler would
/// only stop its HTTP server and leave the bench waiting).
fn on_fresh_runtime<T>(phase: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start a tokio runtime")?;
    let result = runtime.block_on(async {
        tokio::select! {
            result = phase => result,
            _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(5));
    result
}

/// Flushes every dirty buffer before a timed run. Each run creates
/// hundreds of databases; without this, the next run would pay for writing
/// them out (the checkpointer's I/O) and whichever variant goes second would
/// look slower.
async fn checkpoint() -> anyhow::Result<()> {
    admin_connection()
        .await?
        .batch_execute("CHECKPOINT")
        .await
        .context("CHECKPOINT")
}

async fn admin_connection() -> anyhow::Result<Client> {
    let target = registry::pool::parse_url(&testkit::admin_url())
        .context("the PostgreSQL admin URL does not parse")?;
    let (client, connection) = target
        .connect()
        .await
        .context("cannot connect to the dev PostgreSQL; is scripts/dev-db running?")?;
    tokio::spawn(connection);
    Ok(client)
}

/// What the figures depend on besides the code: CPUs, PostgreSQL version,
/// and fsync, which decides much of what CREATE and DROP DATABASE cost
/// (scripts/test starts the dev cluster with fsync off).
async fn print_context(args: &Args) -> anyhow::Result<()> {
    let client = admin_connection().await?;
    let row = client
        .query_one(
            "SELECT version(), current_setting('fsync'), current_setting('synchronous_commit')",
            &[],
        )
        .await?;
    let (version, fsync, synchronous_commit): (String, String, String) =
        (row.get(0), row.get(1), row.get(2));
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());

    println!("provisioning benchmark: app (webhook to active tenant) against raw CREATE DATABASE");
    println!("machine:    {cpus} CPUs; client, server and PostgreSQL all on this machine");
    println!("PostgreSQL: {version}");
    println!("            fsync={fsync}, synchronous_commit={synchronous_commit}");
    println!(
        "tenants:    {} timed per run (+C warm-up); app: C senders in a closed loop, \
         C workers woken by NOTIFY (backstop poll {}), active seen by LISTEN {CHANGED_CHANNEL}",
        args.tenants,
        humantime::format_duration(args.poll_interval),
    );
    Ok(())
}

/// The `app` variant at one concurrency, on `db` and under `prefix`.
/// Returns the run and the template database the app made, for `raw`.
async fn measure_app(
    args: &Args,
    concurrency: usize,
    db: &TestDatabase,
    prefix: &str,
) -> anyhow::Result<(Run, PgIdent)> {
    // The environment the tests give the app, but with the worker on: C
    // workers, woken by NOTIFY or the backstop poll.
    let env = TestSettings::new(&db.url(), prefix)
        .with_worker(true)
        .with_worker_concurrency(concurrency)
        .with_worker_poll_interval(args.poll_interval);
    // Builds the template database on the server and starts the workers.
    let (target, template) = start_app(db, env, ACTIVE_DEADLINE).await?;

    // Untimed: opens the HTTP keep-alive connections and the pooled control
    // connections, so they are not charged to the first timed tenants.
    drive(target.clone(), concurrency, concurrency, provision_one).await?;
    checkpoint().await?;
    let spans = drive(target, args.tenants, concurrency, provision_one).await?;
    Ok((Run::new("app", concurrency, spans), template))
}

/// Everything a sender needs.
struct AppTarget {
    url: String,
    http: reqwest::Client,
    verifier: WebhookVerifier,
    watch: ActiveWatch,
    /// Control database, to say why a tenant did not become active.
    db: Client,
    /// How long one tenant may take to become active (liveness, not speed).
    deadline: Duration,
}

/// Start and end of one timed operation.
#[derive(Clone, Copy)]
struct Span {
    start: Instant,
    end: Instant,
}

/// One tenant: webhook POSTed, answered `applied`, then waited on until
/// its row is `active`.
async fn provision_one(target: Arc<AppTarget>, _task: usize, item: usize) -> anyhow::Result<Span> {
    Ok(provision_posted(target, item, ()).await?.span)
}

/// One tenant of the burst: its organization, and when its webhook was
/// answered besides when it was posted and seen active.
struct Posted {
    org_id: String,
    span: Span,
    answered: Instant,
}

/// As [`provision_one`], dropping `posted` (a permit to post) once the
/// webhook is answered, before waiting for the tenant.
async fn provision_posted<P>(
    target: Arc<AppTarget>,
    _item: usize,
    posted: P,
) -> anyhow::Result<Posted> {
    // Clerk slugs are unique; the samples all share one.
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let ids = SampleIds::random();
    let event = SampleEvent::new("organization.created", &ids)?
        .name(format!("Acme {}", &tag[..8]))
        .slug(Some(format!("acme-{tag}")));
    let body = event.to_body();
    let svix_id = format!("msg_{}", uuid::Uuid::new_v4().simple());
    let headers = target
        .verifier
        .signed_headers(&svix_id, chrono::Utc::now().timestamp(), &body);
    let org_id = ids.org_id.as_str();
    // Registered before the POST, so the notification cannot come first.
    let active = target.watch.expect(org_id);

    let start = Instant::now();
    post(&target, headers, body)
        .await
        .with_context(|| format!("webhook for {org_id}"))?;
    let answered = Instant::now();
    drop(posted);
    match tokio::time::timeout(target.deadline, active).await {
        Ok(Ok(end)) => Ok(Posted {
            org_id: org_id.to_owned(),
            span: Span { start, end },
            answered,
        }),
        Ok(Err(_)) => bail!("the LISTEN connection closed while waiting for {org_id}"),
        // Still `pending` with no attempt means no worker was woken: a lost
        // wake-up that a poll interval above the deadline did not repair.
        Err(_) => bail!(
            "tenant {org_id} not active {}s after its webhook: {} \
             (pending with no attempt: no worker woke; try a shorter --poll-interval)",
            target.deadline.as_secs(),
            tenant_state(&target.db, org_id).await
        ),
    }
}

#[derive(serde::Deserialize)]
struct Answer {
    outcome: String,
}

/// POSTs a signed event as Svix would and checks it was applied.
async fn post(target: &AppTarget, headers: http::HeaderMap, body: Vec<u8>) -> anyhow::Result<()> {
    let response = target
        .http
        .post(&target.url)
        .header(CONTENT_TYPE, "application/json")
        .headers(headers)
        .body(body)
        .send()
        .await
        .context("request failed")?;
    let status = response.status();
    let text = response.text().await.context("reading the answer")?;
    if status != StatusCode::OK {
        bail!("HTTP {status}: {text}");
    }
    let answer: Answer =
        serde_json::from_str(&text).with_context(|| format!("unexpected answer {text:?}"))?;
    if answer.outcome != "applied" {
        bail!("outcome {:?}", answer.outcome);
    }
    Ok(())
}

/// A tenant's registry row in a few words, for a failure message.
async fn tenant_state(db: &Client, org_id: &str) -> String {
    let row = db
        .query_opt(
            "SELECT status, attempts, last_error FROM tenant_registry WHERE clerk_org_id = $1",
            &[&org_id],
        )
        .await;
    match row {
        Ok(Some(r)) => format!(
            "status {}, {} failed attempts, last error {:?}",
            r.get::<_, String>(0),
            r.get::<_, i32>(1),
            r.get::<_, Option<String>>(2),
        ),
        Ok(None) => "no registry row".to_owned(),
        Err(e) => format!("registry unreadable: {e}"),
    }
}

/// Tells waiters when their tenant became active, from the notifications
/// the registry sends at the commit of every status change.
struct ActiveWatch {
    waiters: Waiters,
}

/// Senders waiting for their tenant to become active, by Clerk org id.
#[derive(Clone, Default)]
struct Waiters(Arc<Mutex<HashMap<String, oneshot::Sender<Instant>>>>);

impl Waiters {
    fn insert(&self, org_id: &str) -> oneshot::Receiver<Instant> {
        let (tx, rx) = oneshot::channel();
        self.lock().insert(org_id.to_owned(), tx);
        rx
    }

    fn take(&self, org_id: &str) -> Option<oneshot::Sender<Instant>> {
        self.lock().remove(org_id)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, oneshot::Sender<Instant>>> {
        // A panic while holding the lock cannot leave the map inconsistent.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl ActiveWatch {
    async fn start(db: &TestDatabase) -> anyhow::Result<Self> {
        let (client, mut connection) = db.config().connect().await?;
        // Each notification is stamped as it comes off the socket, so that
        // the status query it triggers is not counted in the latency.
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(Ok(message)) = messages.next().await {
                if let AsyncMessage::Notification(n) = message {
                    let _ = tx.send((Instant::now(), n.payload().to_owned()));
                }
            }
        });
        client
            .batch_execute(&format!("LISTEN {CHANGED_CHANNEL}"))
            .await
            .context("LISTEN")?;
        let waiters = Waiters::default();
        tokio::spawn(dispatch(client, rx, waiters.clone()));
        Ok(Self { waiters })
    }

    /// Resolves with the moment `org_id`'s tenant was seen active.
    fn expect(&self, org_id: &str) -> oneshot::Receiver<Instant> {
        self.waiters.insert(org_id)
    }
}

/// For each notification (payload: tenant id), one query: is it active now?
/// A tenant also notifies when its webhook creates it (`pending`), which is
/// why the status is read rather than assumed.
async fn dispatch(
    client: Client,
    mut notifications: mpsc::UnboundedReceiver<(Instant, String)>,
    waiters: Waiters,
) {
    while let Some((at, payload)) = notifications.recv().await {
        let Ok(id) = payload.parse::<uuid::Uuid>() else {
            continue;
        };
        let Ok(Some(row)) = client
            .query_opt(
                "SELECT clerk_org_id FROM tenant_registry WHERE id = $1 AND status = 'active'",
                &[&id],
            )
            .await
        else {
            continue;
        };
        if let Some(waiter) = waiters.take(row.get(0)) {
            let _ = waiter.send(at);
        }
    }
}

/// The `raw` variant: `tenants` clones of the app's template over
/// `concurrency` admin connections. `drop_databases` removes them.
async fn measure_raw(
    template: &PgIdent,
    prefix: &str,
    tenants: usize,
    concurrency: usize,
    strategy: Strategy,
) -> anyhow::Result<Run> {
    let mut connections = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        connections.push(admin_connection().await?);
    }
    let clones = Arc::new(RawClones {
        template: template.clone(),
        // Under the run's prefix, so `drop_databases` and the prefix guard
        // find them.
        prefix: prefix.to_owned(),
        connections,
        strategy,
    });

    // Untimed, like the app's warm-up: the template's files are in the page
    // cache either way (the app cloned it just before), but the first
    // statement on each connection fills its catalog caches.
    drive(
        clones.clone(),
        concurrency,
        concurrency,
        |c, task, i| async move { c.create(&c.name("w", i), task).await },
    )
    .await?;
    checkpoint().await?;
    let spans = drive(
        clones.clone(),
        tenants,
        concurrency,
        |c, task, i| async move { c.create(&c.name("b", i), task).await },
    )
    .await?;

    Ok(Run::new(strategy.variant(), concurrency, spans))
}

/// The raw variant's admin connections and naming.
struct RawClones {
    template: PgIdent,
    prefix: String,
    connections: Vec<Client>,
    strategy: Strategy,
}

impl RawClones {
    /// `<prefix>b<i>` for timed clones, `<prefix>w<i>` for warm-up ones.
    fn name(&self, kind: &str, index: usize) -> String {
        format!("{}{kind}{index}", self.prefix)
    }

    /// Connection `n` (wrapping): `drive` task n uses connection n, so
    /// statements on one connection never overlap.
    fn connection(&self, n: usize) -> &Client {
        &self.connections[n % self.connections.len()]
    }

    async fn create(&self, name: &str, task: usize) -> anyhow::Result<Span> {
        let sql = format!(
            "CREATE DATABASE {} TEMPLATE {} STRATEGY {}",
            quote_ident(name),
            self.template,
            self.strategy.sql()
        );
        let start = Instant::now();
        self.connection(task)
            .batch_execute(&sql)
            .await
            .with_context(|| format!("CREATE DATABASE {name}"))?;
        Ok(Span {
            start,
            end: Instant::now(),
        })
    }
}

/// Drops the tenant and raw databases under `prefix`, untimed, so that the
/// next concurrency starts from a server like the first. The template and
/// the roles are left to the prefix guard: one database and quick drops.
async fn drop_databases(prefix: &str) -> anyhow::Result<()> {
    let names: Vec<String> = admin_connection()
        .await?
        .query(
            "SELECT datname FROM pg_database WHERE starts_with(datname, $1) AND NOT datistemplate",
            &[&prefix],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let share = names.len().div_ceil(CLEANUP_CONNECTIONS).max(1);
    let drops = names.chunks(share).map(|share| async move {
        let client = admin_connection().await?;
        for name in share {
            let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote_ident(name));
            client
                .batch_execute(&sql)
                .await
                .with_context(|| format!("DROP DATABASE {name}"))?;
        }
        Ok::<_, anyhow::Error>(())
    });
    futures::future::try_join_all(drops).await?;
    Ok(())
}

/// Runs `step(state, task, item)` for items `0..items` from `concurrency`
/// tasks numbered from 0. Each task takes the next item as soon as its
/// previous one is done, so at most `concurrency` are in flight. The first
/// error ends the run.
async fn drive<S, F, Fut>(
    state: Arc<S>,
    items: usize,
    concurrency: usize,
    step: F,
) -> anyhow::Result<Vec<Span>>
where
    S: Send + Sync + 'static,
    F: Fn(Arc<S>, usize, usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = anyhow::Result<Span>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..concurrency)
        .map(|task| {
            let (state, next, step) = (state.clone(), next.clone(), step.clone());
            tokio::spawn(async move {
                let mut spans = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= items {
                        return Ok::<_, anyhow::Error>(spans);
                    }
                    spans.push(step(state.clone(), task, i).await?);
                }
            })
        })
        .collect();
    let mut spans = Vec::with_capacity(items);
    for task in tasks {
        spans.extend(task.await.context("a sender task panicked")??);
    }
    Ok(spans)
}

/// One timed run of one variant.
struct Run {
    variant: String,
    concurrency: usize,
    per_sec: f64,
    /// Per item, sorted.
    latencies: Vec<Duration>,
}

impl Run {
    /// Throughput over the wall time from the first start to the last end;
    /// latencies per item.
    fn new(variant: impl Into<String>, concurrency: usize, spans: Vec<Span>) -> Self {
        let first = spans.iter().map(|s| s.start).min();
        let last = spans.iter().map(|s| s.end).max();
        let wall = match (first, last) {
            (Some(first), Some(last)) => last.duration_since(first),
            _ => Duration::ZERO,
        };
        let mut latencies: Vec<Duration> = spans
            .iter()
            .map(|s| s.end.duration_since(s.start))
            .collect();
        latencies.sort_unstable();
        Self {
            variant: variant.into(),
            concurrency,
            per_sec: spans.len() as f64 / wall.as_secs_f64(),
            latencies,
        }
    }

    fn p50(&self) -> Duration {
        percentile(&self.latencies, 0.50)
    }

    fn p99(&self) -> Duration {
        percentile(&self.latencies, 0.99)
    }

    fn row(&self) -> String {
        format!(
            "{:<9}{:>3}{:>9}{:>11.1}{:>10.1}{:>10.1}",
            self.variant,
            self.concurrency,
            self.latencies.len(),
            self.per_sec,
            millis(self.p50()),
            millis(self.p99()),
        )
    }
}

/// How provisioning compares with cloning alone at one concurrency:
/// throughput as a fraction, latency as a multiple.
fn ratio_line(app: &Run, raw: &Run) -> String {
    format!(
        "{:>12}app/raw throughput = {:.2}, p50 {:.1}×",
        "",
        app.per_sec / raw.per_sec,
        millis(app.p50()) / millis(raw.p50()),
    )
}

/// How many app tenants waited for the backstop poll (a lost NOTIFY
/// wake-up), and the latencies of the others. The row above includes both.
fn polled_line(app: &Run, poll_interval: Duration) -> String {
    let threshold = poll_interval.mul_f64(POLLED_FRACTION);
    // Sorted, so the tenants woken by NOTIFY are a prefix.
    let woken = app.latencies.partition_point(|&l| l < threshold);
    let polled = app.latencies.len() - woken;
    let mut line = format!(
        "{:>12}woken by the {} poll, not NOTIFY: {polled} of {}",
        "",
        humantime::format_duration(poll_interval),
        app.latencies.len(),
    );
    if polled > 0 && woken > 0 {
        let rest = &app.latencies[..woken];
        line += &format!(
            "; the other {woken}: p50 {:.1} ms, p99 {:.1} ms",
            millis(percentile(rest, 0.50)),
            millis(percentile(rest, 0.99)),
        );
    }
    line
}
