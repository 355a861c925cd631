//! The command line. Every command loads the same layered configuration.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::config::Settings;
use crate::startup::Application;
use crate::{dev, telemetry};

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
    /// Run the HTTP server: Clerk webhook intake at POST /webhooks/clerk,
    /// /healthz and /readyz. Refuses to start on an unmigrated schema.
    Serve,
    /// Apply the control-plane schema migrations (idempotent).
    Migrate,
    /// Tools for trying tenant-plane out locally.
    #[command(subcommand)]
    Dev(dev::DevCommand),
}

impl Cli {
    pub async fn run(self) -> anyhow::Result<()> {
        let settings = Settings::load(self.config.as_deref())?;
        telemetry::init(settings.log.format, &settings.log.level);
        match self.command {
            Command::Serve => serve(&settings).await,
            Command::Migrate => migrate(&settings).await,
            Command::Dev(cmd) => cmd.run(&settings).await,
        }
    }
}

async fn serve(settings: &Settings) -> anyhow::Result<()> {
    let addr = settings.http_addr()?;
    let listener = std::net::TcpListener::bind(addr)
        .with_context(|| format!("cannot listen on {addr} (http.bind)"))?;
    let app = Application::build(settings, listener).await?;
    tracing::info!(%addr, "tenant-plane listening");
    app.run_until_stopped().await?;
    Ok(())
}

async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    let config = registry::pool::parse_url(settings.database_url()?)?;
    let (mut client, connection) = config
        .connect(tokio_postgres::NoTls)
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
