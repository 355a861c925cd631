//! The resolver at scale: many tenants, a connection budget far below
//! them, and what a process holds meanwhile.
//!
//! ```sh
//! export TENANT_PLANE_TEST_DATABASE_URL=$(scripts/dev-db | tail -1)
//! cargo bench -p tenant-plane-resolver --bench scale -- [--registry N] [--databases N] [--budget N] [--concurrency C]
//! ```
//!
//! Setup (untimed): a fresh migrated control database; `--databases`
//! (1,000) organizations provisioned for real by the reconciler (their own
//! databases and LOGIN roles, under a test prefix dropped at the end), and
//! enough rows besides to make `--registry` (10,000) tenants in
//! `tenant_registry` (suspended, never placed: they make the registry big,
//! and cost nothing else). One v2 session token per provisioned tenant.
//!
//! Then, with a [`Resolver`] whose `pool_budget` is `--budget` (200):
//!
//! - `baseline`: a bare `tokio_postgres` connection with SCRAM as each of
//!   the first `--budget` tenant roles, then `SELECT 1`, one after another;
//! - `cold`: every tenant once, C at a time (1): `resolve(token)` (a token
//!   never seen and a tenant never cached: the RSA verification, a
//!   control-database read, the password decrypted), `pool.get()` (a new
//!   pool and a new connection, closing another tenant's idle one once the
//!   budget is spent) and `SELECT 1`;
//! - `again`: every tenant again, the same way: the token and the tenant
//!   are remembered, but the budget kept only the last tenants'
//!   connections, so most need a new one;
//! - `warm`: the last `--budget` tenants again: everything remembered, each
//!   connection pooled.
//!
//! Printed: p50 and p99 of each, the cold p50 as a multiple of the
//! baseline's, the most connections of the tenant roles seen in
//! `pg_stat_activity` (sampled every 20 ms throughout), the process's RSS
//! (now and its peak, from /proc/self/status), and the caches' hit and miss
//! counts. Speed is printed, never asserted; the bench exits 1 if a resolve
//! or a query fails, or the budget is exceeded.

mod support;

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use futures::stream::{self, StreamExt};
use support::{mint, require_database, tenant_config, Provisioned, ISSUER};
use tenant_plane_resolver::clock::SystemClock;
use tenant_plane_resolver::jwks::KeySource;
use tenant_plane_resolver::pools::PoolLimits;
use tenant_plane_resolver::token::VerifierConfig;
use tenant_plane_resolver::{Resolver, ResolverConfig};
use testkit::jwt;

#[derive(Debug, Parser)]
#[command(
    name = "scale",
    bin_name = "cargo bench -p tenant-plane-resolver --bench scale --"
)]
struct Args {
    /// Tenants in the registry.
    #[arg(long, default_value_t = 10_000)]
    registry: usize,
    /// Of them, tenants with a real database (each resolved).
    #[arg(long, default_value_t = 1_000)]
    databases: usize,
    /// `pool_budget`: connections all tenants together may hold.
    #[arg(long, default_value_t = 200)]
    budget: usize,
    /// Resolves in flight at once.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Passed by `cargo bench` to every bench binary; nothing to do with it.
    #[arg(long = "bench", hide = true)]
    _bench: bool,
}

fn main() {
    let args = Args::parse();
    require_database("scale");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    if let Err(e) = rt.block_on(run(&args)) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

async fn run(args: &Args) -> anyhow::Result<()> {
    if args.databases == 0 || args.databases > args.registry || args.budget == 0 {
        bail!("need 0 < --databases <= --registry and --budget > 0");
    }
    let started = Instant::now();
    let world = Provisioned::new(args.databases, 2).await?;
    fill_registry(&world, args.registry - args.databases).await?;
    let provisioned_in = started.elapsed();
    let tokens: Vec<String> = world
        .tenants
        .iter()
        .enumerate()
        .map(|(i, t)| mint(t.clerk_org_id.as_str(), i))
        .collect();

    let resolver = Arc::new(Resolver::new(
        ResolverConfig {
            token: VerifierConfig::new(ISSUER, KeySource::Pem(jwt::public_pem("rsa-a"))),
            pools: PoolLimits {
                budget: args.budget,
                acquire_timeout: Duration::from_secs(30),
                ..PoolLimits::default()
            },
            cache_ttl: Duration::from_secs(3600),
            cache_max_entries: args.registry,
            tls: world.tls.clone(),
            // Every benchmarked tenant exists: nothing to register.
            register_unknown_orgs: false,
        },
        world.control.clone(),
        world.cipher.clone(),
        Arc::new(SystemClock),
    )?);

    let row = world
        .db
        .client()
        .await
        .query_one("SELECT version(), current_setting('fsync')", &[])
        .await?;
    let (version, fsync): (String, String) = (row.get(0), row.get(1));
    println!("resolver scale benchmark");
    println!(
        "machine:    {} CPUs; PostgreSQL on this machine: {version}, fsync={fsync}",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "registry:   {} tenants, {} with a database (provisioned in {:.0} s)",
        args.registry,
        args.databases,
        provisioned_in.as_secs_f64()
    );
    println!(
        "resolver:   pool_budget {}, {} resolves in flight",
        args.budget, args.concurrency
    );
    println!("RSS before: {}", rss());

    // The baseline: bare SCRAM connects as tenant roles.
    let mut baseline = Vec::new();
    for t in world.tenants.iter().take(args.budget) {
        let target = tenant_config(&world.credentials(t)?);
        let begun = Instant::now();
        let client = target.connect_spawned().await?;
        client.query_one("SELECT 1", &[]).await?;
        baseline.push(begun.elapsed());
        drop(client);
    }

    // Connections held by tenant roles, sampled throughout.
    let most = Arc::new(AtomicI64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (most, stop) = (most.clone(), stop.clone());
        let client = world.db.client().await;
        let like = format!("{}%", world.prefix.prefix);
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(row) = client
                    .query_one(
                        "SELECT count(*) FROM pg_stat_activity WHERE usename LIKE $1",
                        &[&like],
                    )
                    .await
                {
                    most.fetch_max(row.get::<_, i64>(0), Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    let cold = pass(&resolver, &tokens, args.concurrency).await?;
    let after_cold = (resolver.cache_stats(), resolver.token_cache_stats());
    let again = pass(&resolver, &tokens, args.concurrency).await?;
    // The tenants used last still have their connections.
    let recent = &tokens[tokens.len().saturating_sub(args.budget)..];
    let warm = pass(&resolver, recent, args.concurrency).await?;
    stop.store(true, Ordering::Relaxed);
    sampler.await?;
    let held = most.load(Ordering::Relaxed);

    println!();
    println!("{:<10}{:>8}{:>10}{:>10}", "pass", "n", "p50(ms)", "p99(ms)");
    for (name, figures) in [
        ("baseline", &baseline),
        ("cold", &cold),
        ("again", &again),
        ("warm", &warm),
    ] {
        let sorted = sorted(figures);
        println!(
            "{name:<10}{:>8}{:>10.3}{:>10.3}",
            sorted.len(),
            ms(percentile(&sorted, 0.50)),
            ms(percentile(&sorted, 0.99)),
        );
    }
    println!(
        "cold/baseline p50 = {:.2}",
        ms(percentile(&sorted(&cold), 0.50)) / ms(percentile(&sorted(&baseline), 0.50))
    );
    let (tenants_after_cold, tokens_after_cold) = after_cold;
    let (tenants_now, tokens_now) = (resolver.cache_stats(), resolver.token_cache_stats());
    println!(
        "caches:     after cold, tenants {} hits / {} misses, tokens {} hits / {} misses; \
         after warm, tenants {} / {}, tokens {} / {}",
        tenants_after_cold.hits,
        tenants_after_cold.misses,
        tokens_after_cold.hits,
        tokens_after_cold.misses,
        tenants_now.hits,
        tenants_now.misses,
        tokens_now.hits,
        tokens_now.misses,
    );
    let pools = resolver.pool_stats();
    println!(
        "pools:      {} pools, {} connections open; at most {held} tenant connections seen \
         in pg_stat_activity (budget {})",
        pools.pools, pools.open, args.budget
    );
    println!("RSS after:  {}", rss());
    if held > args.budget as i64 {
        bail!(
            "{held} tenant connections were open at once, over the budget of {}",
            args.budget
        );
    }

    // Closes the resolver's connections before the databases are dropped.
    drop(resolver);
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(world);
    Ok(())
}

/// Adds `n` tenants that were never placed (suspended), so that the
/// registry holds as many rows as a big installation.
async fn fill_registry(world: &Provisioned, n: usize) -> anyhow::Result<()> {
    let client = world.control.get().await?;
    client
        .execute(
            "INSERT INTO tenant_registry
                    (id, clerk_org_id, name, status, desired_state, source_updated_at)
             SELECT gen_random_uuid(), 'org_filler' || md5(random()::text) || i,
                    'Filler ' || i, 'suspended', 'suspended', now()
               FROM generate_series(1, $1::int) AS i",
            &[&i32::try_from(n).context("--registry too big")?],
        )
        .await
        .context("filling the registry")?;
    Ok(())
}

/// Every token resolved once, `concurrency` at a time, each up to a
/// `SELECT 1` on its own tenant's database; the time of each.
async fn pass(
    resolver: &Arc<Resolver>,
    tokens: &[String],
    concurrency: usize,
) -> anyhow::Result<Vec<Duration>> {
    let results: Vec<anyhow::Result<Duration>> = stream::iter(tokens.iter())
        .map(|token| {
            let resolver = resolver.clone();
            async move {
                let begun = Instant::now();
                let ctx = resolver.resolve(token).await.context("resolve")?;
                let conn = ctx.pool.get().await.context("pool.get")?;
                conn.query_one("SELECT 1", &[]).await.context("SELECT 1")?;
                Ok(begun.elapsed())
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    results.into_iter().collect()
}

fn sorted(d: &[Duration]) -> Vec<Duration> {
    let mut d = d.to_vec();
    d.sort_unstable();
    d
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The process's resident set now and at its peak.
fn rss() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_owned())
            .unwrap_or_else(|| "?".into())
    };
    format!("{} (peak {})", field("VmRSS:"), field("VmHWM:"))
}
