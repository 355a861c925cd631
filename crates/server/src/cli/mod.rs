//! The command line. Every command loads the same layered configuration.
//! Exit codes: 0 success, 1 error, 2 `doctor` found drift, 3 `tenants
//! migrate` failed for some tenants.

mod dev;
mod doctor;
mod hosts;
mod table;
mod tenants;
mod webhooks;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::config::Settings;
use crate::startup::Application;
use crate::{provisioning, telemetry};

#[derive(Debug, Parser)]
#[command(
    name = "tenant-plane",
    version,
    about = "Multi-tenant provisioning control plane for Clerk organizations",
    long_about = "Multi-tenant provisioning control plane for Clerk organizations.\n\n\
        Configuration comes from built-in defaults, then the optional --config file, \
        then environment variables TENANT_PLANE__<SECTION>__<KEY> \
        (e.g. TENANT_PLANE__DATABASE__URL, TENANT_PLANE__CLERK__WEBHOOK_SECRET)."
)]
pub struct Cli {
    /// TOML configuration file, layered over the built-in defaults.
    #[arg(long, global = true, value_name = "FILE", env = "TENANT_PLANE_CONFIG")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

// Parsed once per process: the size of a variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP server (Clerk webhook intake at POST /webhooks/clerk,
    /// /healthz, /readyz) and, unless worker.enabled is false, the
    /// provisioning worker. Refuses to start on an unmigrated schema.
    Serve,
    /// Apply the control-plane schema migrations (idempotent).
    Migrate,
    /// Run only the provisioning worker (any number may run at once).
    Worker,
    /// The tenant template database.
    #[command(subcommand)]
    Template(TemplateCommand),
    /// PostgreSQL servers that hold tenant databases.
    #[command(subcommand)]
    Hosts(hosts::HostsCommand),
    /// Tenants: list, show, suspend, resume, delete, restore, retry.
    #[command(subcommand)]
    Tenants(tenants::TenantsCommand),
    /// The inbox of Clerk deliveries: list, show, replay.
    #[command(subcommand)]
    Webhooks(webhooks::WebhooksCommand),
    /// Compare the registry with the servers: orphan databases and roles,
    /// missing ones, stuck or failed tenants, template version skew.
    /// Exits 2 when it finds anything.
    Doctor {
        #[arg(long)]
        json: bool,
        /// How long a tenant may sit in a transitional status before it
        /// counts as stuck.
        #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
        stuck_after: Duration,
    },
    /// Reconcile the directory and the registry with the Clerk Backend API
    /// (clerk.secret_key): create missing tenants, update names and slugs,
    /// and report tenants whose organization Clerk no longer has. Those are
    /// only marked deleted with --prune.
    Sync {
        /// Mark tenants whose organization no longer exists as deleted.
        #[arg(long)]
        prune: bool,
        /// Only this organization (and its memberships).
        #[arg(long)]
        org: Option<model::ids::ClerkOrgId>,
        #[arg(long)]
        json: bool,
    },
    /// Tools for trying tenant-plane out locally.
    #[command(subcommand)]
    Dev(dev::DevCommand),
}

#[derive(Debug, Subcommand)]
pub enum TemplateCommand {
    /// Create the template database on every host if missing and apply
    /// pending template migrations (also done by `serve` and `worker` at start).
    Sync,
}

impl Cli {
    pub async fn run(self) -> anyhow::Result<ExitCode> {
        let settings = Settings::load(self.config.as_deref())?;
        telemetry::init(settings.log.format, &settings.log.level);
        match self.command {
            Command::Serve => serve(&settings).await?,
            Command::Migrate => migrate(&settings).await?,
            Command::Worker => worker(&settings).await?,
            Command::Template(TemplateCommand::Sync) => template_sync(&settings).await?,
            Command::Hosts(cmd) => return cmd.run(&settings).await,
            Command::Tenants(cmd) => return cmd.run(&settings).await,
            Command::Webhooks(cmd) => cmd.run(&settings).await?,
            Command::Doctor { json, stuck_after } => {
                if !doctor::run(&settings, json, stuck_after).await?.is_empty() {
                    return Ok(ExitCode::from(doctor::FINDINGS_EXIT_CODE));
                }
            }
            Command::Sync { prune, org, json } => sync(&settings, prune, org, json).await?,
            Command::Dev(cmd) => cmd.run(&settings).await?,
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// A control pool whose schema is known to be current.
async fn checked_pool(settings: &Settings) -> anyhow::Result<deadpool_postgres::Pool> {
    let pool = crate::startup::control_pool(settings)?;
    let client = pool.get().await.context(
        "cannot reach the control-plane database (database.url); is PostgreSQL running?",
    )?;
    registry::schema::check(&client).await?;
    Ok(pool)
}

async fn worker(settings: &Settings) -> anyhow::Result<()> {
    let pool = checked_pool(settings).await?;
    let reconciler = provisioning::prepare(settings, &pool).await?;
    let (stop, handle) = crate::startup::spawn_worker(settings, reconciler)?;
    if settings.clerk.write_back {
        let clerk = std::sync::Arc::new(settings.clerk_client()?);
        directory_sync::writeback::spawn(
            pool.clone(),
            clerk,
            settings.worker.poll_interval,
            stop.subscribe(),
        );
    }
    tracing::info!(concurrency = settings.worker.concurrency, "worker running");
    shutdown_signal().await;
    tracing::info!("stopping: finishing the current passes");
    let _ = stop.send(true);
    handle.await?;
    Ok(())
}

async fn sync(
    settings: &Settings,
    prune: bool,
    org: Option<model::ids::ClerkOrgId>,
    json: bool,
) -> anyhow::Result<()> {
    let clerk = settings.clerk_client()?;
    let pool = checked_pool(settings).await?;
    let report = match &org {
        Some(org) => directory_sync::backfill_organization(&pool, &clerk, org, prune).await?,
        None => directory_sync::backfill_all(&pool, &clerk, prune).await?,
    };
    if json {
        return table::print_json(&report);
    }
    println!(
        "Clerk has {} organizations, {} users, {} memberships",
        report.organizations_in_clerk, report.users_in_clerk, report.memberships_in_clerk
    );
    println!(
        "created {} tenants: {}",
        report.created.len(),
        report.created.join(" ")
    );
    println!(
        "updated {} tenants: {}",
        report.updated.len(),
        report.updated.join(" ")
    );
    println!(
        "updated {} users, {} memberships",
        report.users_updated, report.memberships_updated
    );
    if report.missing_in_clerk.is_empty() {
        println!("every tenant's organization exists in Clerk");
    } else if prune {
        println!(
            "marked deleted {} tenants whose organization Clerk no longer has: {}",
            report.pruned.len(),
            report.pruned.join(" ")
        );
    } else {
        println!(
            "{} tenants' organizations no longer exist in Clerk (run with --prune to mark them deleted): {}",
            report.missing_in_clerk.len(),
            report.missing_in_clerk.join(" ")
        );
    }
    Ok(())
}

pub(crate) async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

async fn template_sync(settings: &Settings) -> anyhow::Result<()> {
    let pool = checked_pool(settings).await?;
    provisioning::seed_default_host(&pool, settings).await?;
    let reconciler = provisioning::reconciler(settings, pool)?;
    for r in reconciler.build_templates().await? {
        let what = match (r.created, r.applied.is_empty()) {
            (true, _) => format!("created, applied {:?}", r.applied),
            (false, false) => format!("applied {:?}", r.applied),
            (false, true) => "up to date".to_owned(),
        };
        println!("host {}: template v{} ({what})", r.host, r.version);
    }
    Ok(())
}

async fn serve(settings: &Settings) -> anyhow::Result<()> {
    // Everything serve needs is checked before anything is bound or touched.
    settings.webhook_verifier()?;
    settings.cipher()?;
    let addr = settings.http_addr()?;
    let listener = std::net::TcpListener::bind(addr)
        .with_context(|| format!("cannot listen on {addr} (http.bind)"))?;
    let app = Application::build(settings, listener).await?;
    tracing::info!(%addr, "tenant-plane listening");
    app.run_until_stopped().await?;
    Ok(())
}

async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    let target = registry::pool::parse_url(settings.database_url()?)?;
    let (mut client, connection) = target
        .connect()
        .await
        .context("cannot reach the control-plane database (database.url)")?;
    tokio::spawn(connection);
    let applied = registry::schema::migrate(&mut client).await?;
    if applied.is_empty() {
        println!(
            "control-plane schema is up to date (version {})",
            registry::schema::latest_version()
        );
    } else {
        println!("applied control-plane migrations: {applied:?}");
    }
    Ok(())
}
