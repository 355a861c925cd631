//! `tenant-plane hosts ...`: the PostgreSQL servers that hold tenant databases.

use anyhow::bail;
use clap::Subcommand;
use registry::hosts::{self, DbHost, HostState, NewHost};
use registry::tls::{HostTls, RootCert, SslMode, TlsSettings};

use super::table::{print_json, print_table};
use crate::config::Settings;

#[derive(Debug, Subcommand)]
pub enum HostsCommand {
    /// List db hosts with their state, capacity, tenants and warm-pool spares
    /// (unclaimed spares count against capacity).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Register a server (or update its address/capacity). Its admin password
    /// comes from configuration: hosts.<NAME>.password, e.g.
    /// TENANT_PLANE__HOSTS__<NAME>__PASSWORD.
    Add {
        /// Lowercase name: letters, digits, '_'.
        name: String,
        #[arg(long)]
        host: String,
        #[arg(long, default_value_t = 5432)]
        port: u16,
        #[arg(long, default_value = "postgres")]
        admin_user: String,
        /// Tenants this server may hold.
        #[arg(long, default_value_t = 1000)]
        capacity: i32,
        /// TLS to this server, as libpq's sslmode: disable, prefer, require,
        /// verify-ca or verify-full. Unset: database.url's.
        #[arg(long, value_parser = parse_sslmode)]
        sslmode: Option<SslMode>,
        /// CA certificates (PEM file on the control plane's machine) the
        /// server's certificate must chain to, or `system` for the
        /// operating system's store. Unset: database.url's.
        #[arg(long)]
        sslrootcert: Option<String>,
    },
    /// Stop placing new tenants on a host (existing tenants stay).
    Drain { name: String },
    /// Place new tenants on a drained host again.
    Undrain { name: String },
    /// Check the host's admin has what tenant-plane needs (CREATEDB,
    /// CREATEROLE, pg_signal_backend on PostgreSQL 15 to 18), in words.
    /// Exits 2 when something required is missing.
    Check {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Close the host's maintenance databases (postgres, template1) to
    /// PUBLIC, so tenant roles reach no database but their own. Shows what
    /// it would run; --yes runs it. The admin keeps its own CONNECT.
    Harden {
        name: String,
        /// Run the statements instead of only showing them.
        #[arg(long)]
        yes: bool,
    },
}

impl HostsCommand {
    pub async fn run(self, settings: &Settings) -> anyhow::Result<std::process::ExitCode> {
        let url_tls = registry::pool::parse_url(settings.database_url()?)?.tls;
        let pool = crate::startup::control_pool(settings)?;
        let client = pool.get().await?;
        match self {
            HostsCommand::List { json } => {
                let all = hosts::list(&client).await?;
                if json {
                    print_json(&all)?;
                    return Ok(std::process::ExitCode::SUCCESS);
                }
                let rows: Vec<Vec<String>> = all
                    .iter()
                    .map(|h| {
                        vec![
                            h.name.clone(),
                            format!("{}:{}", h.host, h.port),
                            h.admin_user.clone(),
                            h.state.as_str().to_owned(),
                            h.tenants.to_string(),
                            h.spares.to_string(),
                            h.capacity.to_string(),
                            describe_tls(&url_tls, h),
                        ]
                    })
                    .collect();
                print_table(
                    &[
                        "NAME", "ADDRESS", "ADMIN", "STATE", "TENANTS", "SPARES", "CAPACITY", "TLS",
                    ],
                    &rows,
                );
            }
            HostsCommand::Add {
                name,
                host,
                port,
                admin_user,
                capacity,
                sslmode,
                sslrootcert,
            } => {
                hosts::check_name(&name)?;
                if capacity < 0 {
                    bail!("--capacity must not be negative");
                }
                let tls = HostTls {
                    sslmode,
                    sslrootcert: sslrootcert.as_deref().map(RootCert::parse).transpose()?,
                };
                // Over database.url's, the host's settings must make sense
                // (verify-full needs a CA, system needs verify-full...).
                let effective = url_tls.for_host(&tls).map_err(|e| {
                    anyhow::anyhow!("--sslmode/--sslrootcert (over database.url's): {e}")
                })?;
                if let Err(e) = effective.connector() {
                    eprintln!("warning: {e} (the control plane reads it when it connects)");
                }
                let h = hosts::upsert(
                    &client,
                    &NewHost {
                        name: name.clone(),
                        host,
                        port,
                        admin_user,
                        capacity,
                        tls,
                    },
                )
                .await?;
                println!(
                    "host {} registered ({}:{}, capacity {}, TLS {})",
                    h.name,
                    h.host,
                    h.port,
                    h.capacity,
                    describe_tls(&url_tls, &h)
                );
                if !settings.hosts.contains_key(&name) && name != crate::provisioning::DEFAULT_HOST
                {
                    eprintln!(
                        "warning: no admin password configured for {name}; set TENANT_PLANE__HOSTS__{}__PASSWORD",
                        name.to_ascii_uppercase()
                    );
                }
            }
            HostsCommand::Drain { name } => set_state(&client, &name, HostState::Draining).await?,
            HostsCommand::Undrain { name } => {
                set_state(&client, &name, HostState::Accepting).await?
            }
            HostsCommand::Check { name, json } => {
                let Some(host) = hosts::get(&client, &name).await? else {
                    bail!("no db host named {name:?} (see `tenant-plane hosts list`)");
                };
                let connector = crate::provisioning::host_connector(settings)?;
                let checks = provisioner::admin_rights::check(&connector, &host).await?;
                let missing = checks.iter().any(|c| c.required && !c.ok);
                if json {
                    print_json(&checks)?;
                } else {
                    for c in &checks {
                        let verdict = match (c.ok, c.required) {
                            (true, _) => "ok",
                            (false, true) => "MISSING",
                            (false, false) => "advised",
                        };
                        println!("{verdict:<8} {:<20} {}", c.what, c.detail);
                    }
                }
                if missing {
                    return Ok(std::process::ExitCode::from(2));
                }
            }
            HostsCommand::Harden { name, yes } => {
                let Some(host) = hosts::get(&client, &name).await? else {
                    bail!("no db host named {name:?} (see `tenant-plane hosts list`)");
                };
                let connector = crate::provisioning::host_connector(settings)?;
                let statements =
                    provisioner::harden::maintenance_databases(&connector, &host, yes).await?;
                if statements.is_empty() {
                    println!("host {name}: postgres and template1 are already closed to PUBLIC");
                } else if yes {
                    println!("host {name}: ran");
                    statements.iter().for_each(|s| println!("  {s}"));
                } else {
                    println!("host {name}: would run (pass --yes to run it):");
                    statements.iter().for_each(|s| println!("  {s}"));
                }
            }
        }
        Ok(std::process::ExitCode::SUCCESS)
    }
}

async fn set_state(
    client: &deadpool_postgres::Client,
    name: &str,
    state: HostState,
) -> anyhow::Result<()> {
    if !hosts::set_state(client, name, state).await? {
        bail!("no db host named {name:?} (see `tenant-plane hosts list`)");
    }
    println!("host {name} is {}", state.as_str());
    Ok(())
}

fn parse_sslmode(s: &str) -> Result<SslMode, String> {
    s.parse()
        .map_err(|e: registry::tls::TlsError| e.to_string())
}

/// `verify-full, sslrootcert=/etc/ca.pem` (what connections to the host
/// use), `(from database.url)` when the host sets nothing of its own.
fn describe_tls(url_tls: &TlsSettings, h: &DbHost) -> String {
    let mut text = match url_tls.for_host(&h.tls) {
        Ok(tls) => match tls.root_cert() {
            Some(root) if tls.effective_mode().verifies() => {
                format!("{}, sslrootcert={root}", tls.effective_mode())
            }
            _ => tls.effective_mode().to_string(),
        },
        Err(e) => format!("invalid: {e}"),
    };
    if h.tls.is_inherited() {
        text.push_str(" (from database.url)");
    }
    text
}
