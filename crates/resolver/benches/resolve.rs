//! `Resolver::resolve` on tenants provisioned for real, beside the bare
//! operations it is made of.
//!
//! ```sh
//! export TENANT_PLANE_TEST_DATABASE_URL=$(scripts/dev-db | tail -1)
//! cargo bench -p tenant-plane-resolver --bench resolve
//! cargo bench -p tenant-plane-resolver --bench resolve -- warm/     # criterion filters work
//! ```
//!
//! Setup (untimed): a fresh migrated control database, the default db host
//! seeded from the admin URL, [`TENANTS`] organizations inserted into the
//! directory and provisioned by the registry's reconciler (their own
//! databases and LOGIN roles, under a test prefix dropped at the end), and a
//! [`Resolver`] verifying RS256 session tokens with the PEM key of
//! testkit's `fixtures/rsa-a.pub.pem`. Tokens are minted by `testkit::jwt`
//! with `rsa-a.key.pem` in Clerk's v2 shape, valid for an hour.
//!
//! Two criterion groups, each holding the resolver figures and the baselines
//! they are compared with:
//!
//! - `warm`: `resolve/warm_same_token` (one token again and again: a cache
//!   hit, then `pool.get()` of an idle pooled connection),
//!   `resolve/warm_many_tokens` (the same over [`DISTINCT_TOKENS`] distinct
//!   tokens, distinct `sid`/`sub`, spread over the tenants, round-robin),
//!   `baseline/rs256_verify` (a bare `jsonwebtoken::decode` of the same token
//!   with the same key, issuer and `exp` checked), `baseline/deadpool_checkout`
//!   (a checkout from a pool built by `registry::pool::build_pool` on the same
//!   tenant database as its role; that pool verifies a recycled connection
//!   with a round trip) and `baseline/deadpool_checkout_fast` (the same pool
//!   with `RecyclingMethod::Fast`, as the resolver's own pools recycle).
//! - `cold`: `resolve/cold_pool` (the tenant invalidated before each
//!   iteration, untimed: a cache miss read from the control database, the
//!   password decrypted, a new pool and a new connection with SCRAM) and
//!   `baseline/connect` (a fresh `tokio_postgres` connection with SCRAM as the
//!   tenant role).
//!
//! After criterion, a ratio summary is printed from criterion's own
//! estimates (`target/criterion/**/new/estimates.json`) of this run.
//!
//! Everything runs on one multi-threaded tokio runtime (as many workers as
//! CPUs), as in a server; PostgreSQL runs on the same machine.

mod support;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use criterion::{BatchSize, Criterion};
use deadpool_postgres::{ManagerConfig, Pool, RecyclingMethod};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use model::ids::TenantId;
use registry::pool::PoolOptions;
use registry::tenants::TenantCredentials;
use serde_json::Value;
use support::{mint, require_database, tenant_config, Provisioned, ISSUER};
use tenant_plane_resolver::clock::SystemClock;
use tenant_plane_resolver::jwks::KeySource;
use tenant_plane_resolver::pools::PoolLimits;
use tenant_plane_resolver::token::VerifierConfig;
use tenant_plane_resolver::{Resolver, ResolverConfig};
use testkit::jwt;
use tokio::runtime::Runtime;

/// Tenants provisioned for the run.
const TENANTS: usize = 4;

/// Distinct tokens of `resolve/warm_many_tokens`.
const DISTINCT_TOKENS: usize = 1000;

fn main() {
    require_database("resolve");
    let started = SystemTime::now();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let fixture = match rt.block_on(Fixture::new()) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    };
    print_context(&rt, &fixture);

    let mut c = Criterion::default().configure_from_args();
    warm(&mut c, &rt, &fixture);
    cold(&mut c, &rt, &fixture);
    c.final_summary();
    print_ratios(started);

    // Closes the resolver's and the baselines' connections before the
    // tenant databases and the control database are dropped.
    rt.block_on(async move {
        drop(fixture);
        tokio::time::sleep(Duration::from_millis(100)).await;
    });
}

/// Everything the benchmarks share. Field order is drop order: connections
/// first, then the tenant databases (prefix), then the control database.
struct Fixture {
    resolver: Arc<Resolver>,
    /// One token per tenant; the first is the one the single-token
    /// benchmarks use.
    tokens: Vec<String>,
    many_tokens: Vec<String>,
    first_tenant: TenantId,
    first_credentials: TenantCredentials,
    decoding_key: DecodingKey,
    _control: Pool,
    world: Provisioned,
}

impl Fixture {
    async fn new() -> anyhow::Result<Self> {
        let world = Provisioned::new(TENANTS, 1).await?;
        let ids = world.tenants.clone();
        let orgs: Vec<_> = ids.iter().map(|t| t.clerk_org_id.clone()).collect();
        let first_credentials = world.credentials(&ids[0])?;
        let control = world.control.clone();
        let pem = jwt::public_pem("rsa-a");
        let resolver = Resolver::new(
            ResolverConfig {
                token: VerifierConfig::new(ISSUER, KeySource::Pem(pem.clone())),
                pools: PoolLimits::default(),
                cache_ttl: Duration::from_secs(3600),
                cache_max_entries: tenant_plane_resolver::cache::DEFAULT_MAX_ENTRIES,
                tls: world.tls.clone(),
                // Every benchmarked tenant exists: nothing to register.
                register_unknown_orgs: false,
            },
            control.clone(),
            world.cipher.clone(),
            Arc::new(SystemClock),
        )?;

        let tokens: Vec<String> = orgs.iter().map(|org| mint(org.as_str(), 0)).collect();
        let many_tokens: Vec<String> = (0..DISTINCT_TOKENS)
            .map(|i| mint(orgs[i % orgs.len()].as_str(), i))
            .collect();

        // Every token resolves, and to a connection as the tenant's role.
        for (token, tenant) in tokens.iter().zip(&ids) {
            let ctx = resolver.resolve(token).await?;
            anyhow::ensure!(ctx.tenant.id == tenant.id, "resolved to another tenant");
            let conn = ctx.pool.get().await?;
            let row = conn.query_one("SELECT current_user", &[]).await?;
            anyhow::ensure!(Some(row.get::<_, String>(0)).as_deref() == tenant.db_role());
        }
        for token in &many_tokens {
            resolver.resolve(token).await?;
        }

        Ok(Self {
            resolver: Arc::new(resolver),
            tokens,
            many_tokens,
            first_tenant: ids[0].id,
            first_credentials,
            decoding_key: DecodingKey::from_rsa_pem(pem.as_bytes())?,
            _control: control,
            world,
        })
    }
}

fn warm(c: &mut Criterion, rt: &Runtime, f: &Fixture) {
    let mut group = c.benchmark_group("warm");

    let token = f.tokens[0].as_str();
    group.bench_function("resolve/verified_token", |b| {
        b.to_async(rt)
            .iter(|| async { f.resolver.resolve(token).await.expect("resolves") })
    });
    group.bench_function("resolve/warm_same_token", |b| {
        b.to_async(rt).iter(|| async {
            let ctx = f.resolver.resolve(token).await.expect("resolves");
            ctx.pool.get().await.expect("checkout")
        })
    });

    let next = AtomicUsize::new(0);
    group.bench_function("resolve/warm_many_tokens", |b| {
        b.to_async(rt).iter(|| async {
            let i = next.fetch_add(1, Ordering::Relaxed) % f.many_tokens.len();
            let ctx = f
                .resolver
                .resolve(&f.many_tokens[i])
                .await
                .expect("resolves");
            ctx.pool.get().await.expect("checkout")
        })
    });

    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_issuer(&[ISSUER]);
    validation.set_required_spec_claims(&["exp", "iss"]);
    group.bench_function("baseline/rs256_verify", |b| {
        b.iter(|| {
            jsonwebtoken::decode::<Value>(token, &f.decoding_key, &validation).expect("verifies")
        })
    });

    let verified = registry::pool::build_pool(
        tenant_config(&f.first_credentials),
        &PoolOptions {
            max_size: 5,
            ..PoolOptions::default()
        },
    )
    .expect("baseline pool");
    group.bench_function("baseline/deadpool_checkout", |b| {
        b.to_async(rt)
            .iter(|| async { verified.get().await.expect("checkout") })
    });

    let fast = Pool::builder(
        tenant_config(&f.first_credentials)
            .manager(ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            })
            .expect("baseline manager"),
    )
    .max_size(5)
    .runtime(deadpool_postgres::Runtime::Tokio1)
    .build()
    .expect("baseline pool");
    group.bench_function("baseline/deadpool_checkout_fast", |b| {
        b.to_async(rt)
            .iter(|| async { fast.get().await.expect("checkout") })
    });
    group.finish();
    verified.close();
    fast.close();
}

fn cold(c: &mut Criterion, rt: &Runtime, f: &Fixture) {
    let mut group = c.benchmark_group("cold");
    // Each iteration forks a PostgreSQL backend and runs SCRAM (4096 rounds
    // of PBKDF2 on each side): a few milliseconds, so fewer samples.
    group.sample_size(50);
    group.measurement_time(Duration::from_secs(10));

    let token = f.tokens[0].as_str();
    group.bench_function("resolve/cold_pool", |b| {
        b.to_async(rt).iter_batched(
            || f.resolver.invalidate(f.first_tenant),
            |()| async {
                let ctx = f.resolver.resolve(token).await.expect("resolves");
                ctx.pool.get().await.expect("checkout")
            },
            BatchSize::PerIteration,
        )
    });

    let config = tenant_config(&f.first_credentials);
    group.bench_function("baseline/connect", |b| {
        // Batched like cold_pool, so that both close their connection after
        // the clock stops.
        b.to_async(rt).iter_batched(
            || (),
            |()| async {
                let (client, connection) = config.connect().await.expect("connects");
                tokio::spawn(connection);
                client
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

fn print_context(rt: &Runtime, f: &Fixture) {
    let settings = rt.block_on(async {
        let client = f.world.db.client().await;
        let row = client
            .query_one(
                "SELECT version(), current_setting('fsync'), current_setting('password_encryption')",
                &[],
            )
            .await
            .expect("server settings");
        (
            row.get::<_, String>(0),
            row.get::<_, String>(1),
            row.get::<_, String>(2),
        )
    });
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("resolver benchmark: Resolver::resolve against its bare parts");
    println!("machine:    {cpus} CPUs; PostgreSQL on this machine");
    println!("PostgreSQL: {}", settings.0);
    println!(
        "            fsync={}, password_encryption={}",
        settings.1, settings.2
    );
    println!(
        "tenants:    {TENANTS} provisioned; {DISTINCT_TOKENS} distinct tokens for warm_many_tokens"
    );
    println!();
}

/// Criterion's directory: `CRITERION_HOME`, else `<target>/criterion`.
fn criterion_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../target")));
    target.join("criterion")
}

/// The estimate criterion printed as `time:` (slope when it has one, else
/// the mean), in nanoseconds, if that benchmark ran in this process.
fn estimate(group: &str, function: &str, since: SystemTime) -> Option<f64> {
    // Criterion turns '/' in a function id into '_' in the directory name.
    let path = criterion_dir()
        .join(group)
        .join(function.replace('/', "_"))
        .join("new/estimates.json");
    let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok()?;
    if modified < since {
        return None;
    }
    let estimates: Value = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
    ["slope", "mean"]
        .iter()
        .find_map(|k| estimates[k]["point_estimate"].as_f64())
}

fn print_ratios(since: SystemTime) {
    let get = |group: &str, function: &str| estimate(group, function, since);
    let mut lines = Vec::new();
    let same = get("warm", "resolve/warm_same_token");
    let many = get("warm", "resolve/warm_many_tokens");
    let verify = get("warm", "baseline/rs256_verify");
    let fast = get("warm", "baseline/deadpool_checkout_fast");
    let verified = get("warm", "baseline/deadpool_checkout");
    let remembered = get("warm", "resolve/verified_token");
    if let (Some(remembered), Some(verify)) = (remembered, verify) {
        lines.push(format!(
            "  verified_token / rs256_verify        = {:.3}  ({:.2} µs / {:.1} µs)",
            remembered / verify,
            remembered / 1e3,
            verify / 1e3
        ));
    }
    if let (Some(same), Some(verify)) = (same, verify) {
        lines.push(format!(
            "  warm_same_token / rs256_verify       = {:.2}  ({:.1} µs / {:.1} µs)",
            same / verify,
            same / 1e3,
            verify / 1e3
        ));
        if let (Some(fast), Some(remembered)) = (fast, remembered) {
            lines.push(format!(
                "  warm_same_token - verified_token - deadpool_checkout_fast = {:+.2} µs",
                (same - remembered - fast) / 1e3
            ));
        }
    }
    if let (Some(same), Some(verified)) = (same, verified) {
        lines.push(format!(
            "  warm_same_token / deadpool_checkout  = {:.2}  ({:.1} µs / {:.1} µs)",
            same / verified,
            same / 1e3,
            verified / 1e3
        ));
    }
    if let (Some(many), Some(same)) = (many, same) {
        lines.push(format!(
            "  warm_many_tokens / warm_same_token   = {:.2}  ({:.1} µs / {:.1} µs)",
            many / same,
            many / 1e3,
            same / 1e3
        ));
    }
    if let (Some(cold), Some(connect)) = (
        get("cold", "resolve/cold_pool"),
        get("cold", "baseline/connect"),
    ) {
        lines.push(format!(
            "  cold_pool / connect                  = {:.2}  ({:.2} ms / {:.2} ms, {:+.2} ms)",
            cold / connect,
            cold / 1e6,
            connect / 1e6,
            (cold - connect) / 1e6
        ));
    }
    if !lines.is_empty() {
        println!("ratios (criterion's estimates from this run):");
        for line in lines {
            println!("{line}");
        }
    }
}
