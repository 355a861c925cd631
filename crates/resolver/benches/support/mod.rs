//! What the resolver's benches share: the database check, tenants
//! provisioned for real by the reconciler, and tokens.

use std::time::Duration;

use anyhow::Context;
use deadpool_postgres::Pool;
use model::clerk::Organization;
use model::ids::ClerkOrgId;
use model::naming::TenantPrefix;
use model::status::TenantStatus;
use provisioner::reconciler::{Reconciler, ReconcilerSettings};
use provisioner::template::Templates;
use provisioner::HostConnector;
use registry::crypto::PasswordCipher;
use registry::directory;
use registry::hosts::{self, NewHost};
use registry::pool::PoolOptions;
use registry::tenants::{self, Tenant, TenantCredentials, TenantKey};
use registry::tls::{ConnectOptions, TlsSettings};
use testkit::{jwt, PrefixGuard, TestDatabase};
use tokio_postgres::config::Host;

/// Any fixed issuer: with a PEM key nothing is fetched from it.
pub const ISSUER: &str = "https://clerk.bench.example.com";

/// Exits with instructions unless the dev PostgreSQL is configured.
pub fn require_database(bench: &str) {
    let configured = [
        "TENANT_PLANE_TEST_DATABASE_URL",
        "TENANT_PLANE__DATABASE__URL",
    ]
    .iter()
    .any(|var| std::env::var(var).is_ok_and(|url| !url.is_empty()));
    if !configured {
        eprintln!(
            "the {bench} bench needs the dev PostgreSQL. Start it and point the bench at it:\n\n    \
             export TENANT_PLANE_TEST_DATABASE_URL=$(scripts/dev-db | tail -1)\n"
        );
        std::process::exit(1);
    }
}

/// A fresh control database with `n` tenants provisioned for real. Field
/// order is drop order: the tenant databases (prefix), then the control
/// database.
pub struct Provisioned {
    pub control: Pool,
    pub cipher: PasswordCipher,
    /// database.url's TLS settings, which the default host inherits.
    pub tls: TlsSettings,
    pub tenants: Vec<Tenant>,
    #[allow(dead_code)] // read by the scale bench, not the resolve one
    pub prefix: PrefixGuard,
    pub db: TestDatabase,
}

impl Provisioned {
    /// The default host seeded from the admin URL (as `serve` seeds it),
    /// `n` organizations in the directory, the reconciler drained with
    /// `workers` passes at once; every tenant must be active.
    pub async fn new(n: usize, workers: usize) -> anyhow::Result<Self> {
        let db = TestDatabase::migrated().await;
        let prefix = PrefixGuard::new();
        let control = registry::pool::build_pool(
            db.config(),
            &PoolOptions {
                max_size: workers + 4,
                ..PoolOptions::default()
            },
        )?;
        let cipher = PasswordCipher::from_base64(&random_key())?;
        let admin_target = db.config();
        let admin = &admin_target.config;
        let host_addr = match admin.get_hosts().first() {
            Some(Host::Tcp(h)) => h.clone(),
            _ => "127.0.0.1".to_owned(),
        };
        let password = admin
            .get_password()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .unwrap_or_default();
        hosts::seed(
            &control.get().await?,
            &NewHost {
                name: "default".into(),
                host: host_addr,
                port: admin.get_ports().first().copied().unwrap_or(5432),
                admin_user: admin.get_user().unwrap_or("postgres").to_owned(),
                capacity: i32::try_from(n).unwrap_or(i32::MAX),
                tls: Default::default(),
            },
        )
        .await?;
        let reconciler = std::sync::Arc::new(Reconciler::new(
            control.clone(),
            HostConnector::new(Duration::from_secs(5))
                .with_password("default", &password)
                .with_tls_defaults(admin_target.tls.clone()),
            cipher.clone(),
            Templates::embedded(),
            ReconcilerSettings {
                prefix: TenantPrefix::parse(&prefix.prefix)?,
                retention: Duration::ZERO,
                max_attempts: 3,
                backoff_base: Duration::from_millis(10),
                backoff_max: Duration::from_millis(50),
                plans: Default::default(),
                attempt_timeout: Duration::from_secs(60),
                lease: Duration::from_secs(120),
                clone_strategy: Default::default(),
                warm_pool: 0,
                pause_at: None,
            },
        ));
        reconciler.build_templates().await?;

        let orgs: Vec<ClerkOrgId> = (0..n)
            .map(|_| ClerkOrgId::parse(format!("org_{}", uuid::Uuid::new_v4().simple())))
            .collect::<Result<_, _>>()?;
        {
            let mut client = control.get().await?;
            let tx = client.transaction().await?;
            for (i, org) in orgs.iter().enumerate() {
                directory::upsert_organization(
                    &tx,
                    &Organization::new(org.clone(), format!("Bench {i}"), None, chrono::Utc::now()),
                    "bench",
                )
                .await?;
            }
            tx.commit().await?;
        }
        let drains: Vec<_> = (0..workers.max(1))
            .map(|_| {
                let r = reconciler.clone();
                tokio::spawn(async move { r.drain().await })
            })
            .collect();
        for d in drains {
            d.await??;
        }

        let client = control.get().await?;
        let mut tenants_of = Vec::with_capacity(n);
        for org in &orgs {
            let t = tenants::get(&client, TenantKey::ClerkOrg(org))
                .await?
                .context("the tenant was just inserted")?;
            anyhow::ensure!(
                t.status == TenantStatus::Active,
                "tenant of {} is {} after provisioning: {:?}",
                org.as_str(),
                t.status,
                t.last_error
            );
            tenants_of.push(t);
        }
        drop(client);
        Ok(Self {
            control,
            cipher,
            tls: admin_target.tls.clone(),
            tenants: tenants_of,
            prefix,
            db,
        })
    }

    /// How `tenant` logs in, as the resolver would read it.
    pub fn credentials(&self, tenant: &Tenant) -> anyhow::Result<TenantCredentials> {
        Ok(tenants::credentials(&self.cipher, tenant, &self.tls)?)
    }
}

pub fn random_key() -> String {
    use base64::Engine;
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A Clerk v2 session token for `org`, the `n`th user and session, valid
/// for an hour.
pub fn mint(org: &str, n: usize) -> String {
    let now = jwt::now();
    let mut session = jwt::Session::new(ISSUER, org, now);
    session.user_id = format!("user_bench{n:06}");
    session.session_id = format!("sess_bench{n:06}");
    session.expires_at = now + 3600;
    jwt::sign(&session.v2())
}

/// Connection settings that log in as the tenant's role.
pub fn tenant_config(c: &TenantCredentials) -> ConnectOptions {
    let mut target = c.connect_options();
    target
        .config
        .application_name("tenant-plane-bench")
        .connect_timeout(Duration::from_secs(5));
    target
}
