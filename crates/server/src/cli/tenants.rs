//! `tenant-plane tenants ...`: look at tenants and move their desired state.

use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use model::ids::{ClerkOrgId, TenantId};
use model::status::TenantStatus;
use provisioner::rollout;
use registry::tenants::{self, Action, Tenant, TenantKey};

use super::table::{or_dash, print_json, print_table};
use crate::config::Settings;
use crate::provisioning;

/// Exit code of `tenants migrate` when some tenants failed (others may have
/// been migrated; the report says which).
pub const PARTIAL_FAILURE_EXIT_CODE: u8 = 3;

#[derive(Debug, Subcommand)]
pub enum TenantsCommand {
    /// List tenants, oldest first.
    List {
        /// Only tenants in this status (pending, provisioning, active,
        /// suspending, suspended, deleting, deleted, failed).
        #[arg(long)]
        status: Option<TenantStatus>,
        #[arg(long, default_value_t = 100)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// Show one tenant and its audit trail.
    Show {
        /// Tenant id (uuid), Clerk organization id (org_...) or slug.
        tenant: String,
        #[arg(long)]
        json: bool,
    },
    /// Suspend: the tenant role can no longer log in; data is kept.
    Suspend { tenant: String },
    /// Undo a suspension.
    Resume { tenant: String },
    /// Delete: locked out at once, database dropped after tenants.retention.
    Delete { tenant: String },
    /// Bring a deleted tenant back, within the retention period.
    Restore { tenant: String },
    /// Try a failed tenant again from scratch (attempts reset).
    Retry { tenant: String },
    /// Register a tenant for a Clerk organization by hand (as if Clerk had
    /// sent organization.created); the worker provisions it. Any later Clerk
    /// event for the organization supersedes the name and slug given here.
    Provision {
        /// The Clerk organization id (org_...).
        org_id: ClerkOrgId,
        #[arg(long, default_value = "")]
        name: String,
        #[arg(long)]
        slug: Option<String>,
    },
    /// Apply pending template migrations to every active tenant (or one),
    /// after bringing the template databases up to date. Safe to interrupt
    /// and run again: each tenant database records what it has applied.
    /// Exits 3 when some tenants failed (the others are migrated).
    Migrate {
        /// Tenants migrated at once.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        /// Only this tenant (id, org_... or slug).
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

/// Finds a tenant by uuid, Clerk organization id or slug.
pub async fn find(client: &deadpool_postgres::Client, key: &str) -> anyhow::Result<Tenant> {
    let by = if let Ok(uuid) = key.parse::<uuid::Uuid>() {
        TenantKey::Id(TenantId::from(uuid))
    } else if key.starts_with("org_") {
        let org = ClerkOrgId::parse(key)?;
        return tenants::get(client, TenantKey::ClerkOrg(&org))
            .await?
            .with_context(|| format!("no tenant for organization {org}"));
    } else {
        TenantKey::Slug(key)
    };
    tenants::get(client, by)
        .await?
        .with_context(|| format!("no tenant {key:?} (give a tenant id, an org_... id or a slug)"))
}

impl TenantsCommand {
    pub async fn run(self, settings: &Settings) -> anyhow::Result<ExitCode> {
        let pool = crate::startup::control_pool(settings)?;
        let mut client = pool.get().await?;
        let (key, action) = match self {
            TenantsCommand::Migrate {
                concurrency,
                tenant,
                json,
            } => {
                let only = match tenant {
                    Some(key) => Some(find(&client, &key).await?.id),
                    None => None,
                };
                drop(client);
                return migrate(settings, pool, concurrency, only, json).await;
            }
            TenantsCommand::Provision { org_id, name, slug } => {
                provision(&mut client, org_id, name, slug).await?;
                return Ok(ExitCode::SUCCESS);
            }
            TenantsCommand::List {
                status,
                limit,
                json,
            } => {
                let all = tenants::list(&client, status, None, limit).await?;
                if json {
                    print_json(&all)?;
                    return Ok(ExitCode::SUCCESS);
                }
                let rows: Vec<Vec<String>> = all
                    .iter()
                    .map(|t| {
                        vec![
                            t.id.to_string(),
                            t.clerk_org_id.to_string(),
                            or_dash(t.slug.clone()),
                            t.status.to_string(),
                            t.desired_state.to_string(),
                            or_dash(t.db_host()),
                            or_dash(t.template_version),
                        ]
                    })
                    .collect();
                print_table(
                    &[
                        "ID",
                        "CLERK ORG",
                        "SLUG",
                        "STATUS",
                        "DESIRED",
                        "HOST",
                        "TEMPLATE",
                    ],
                    &rows,
                );
                return Ok(ExitCode::SUCCESS);
            }
            TenantsCommand::Show { tenant, json } => {
                let t = find(&client, &tenant).await?;
                let events = tenants::events(&client, t.id).await?;
                if json {
                    print_json(&serde_json::json!({ "tenant": t, "events": events }))?;
                    return Ok(ExitCode::SUCCESS);
                }
                show(&t);
                println!();
                let rows: Vec<Vec<String>> = events
                    .iter()
                    .map(|e| {
                        vec![
                            e.at.format("%Y-%m-%d %H:%M:%S").to_string(),
                            e.actor.clone(),
                            e.kind.clone(),
                            format!(
                                "{} -> {}",
                                or_dash(e.from_status.clone()),
                                or_dash(e.to_status.clone())
                            ),
                        ]
                    })
                    .collect();
                print_table(&["AT", "ACTOR", "EVENT", "STATUS"], &rows);
                return Ok(ExitCode::SUCCESS);
            }
            TenantsCommand::Suspend { tenant } => (tenant, Action::Suspend),
            TenantsCommand::Resume { tenant } => (tenant, Action::Resume),
            TenantsCommand::Delete { tenant } => (tenant, Action::Delete),
            TenantsCommand::Restore { tenant } => (tenant, Action::Restore),
            TenantsCommand::Retry { tenant } => (tenant, Action::Retry),
        };
        let t = find(&client, &key).await?;
        let actor = format!("cli:{}", whoami());
        let t = tenants::act(&mut client, t.id, action, &actor).await?;
        println!(
            "tenant {} ({}): status {}, desired {}",
            t.id, t.clerk_org_id, t.status, t.desired_state
        );
        Ok(ExitCode::SUCCESS)
    }
}

async fn provision(
    client: &mut deadpool_postgres::Client,
    org_id: ClerkOrgId,
    name: String,
    slug: Option<String>,
) -> anyhow::Result<()> {
    let tx = client.transaction().await?;
    // The oldest possible watermark: any real Clerk event is newer.
    let epoch = model::clerk::Millis::from(chrono::DateTime::UNIX_EPOCH);
    let org = model::clerk::Organization {
        id: org_id.clone(),
        name,
        slug,
        created_at: epoch,
        updated_at: epoch,
        public_metadata: serde_json::json!({}),
    };
    let change =
        registry::directory::upsert_organization(&tx, &org, &format!("cli:{}", whoami())).await?;
    tx.commit().await?;
    let t = tenants::get(&*client, TenantKey::ClerkOrg(&org_id))
        .await?
        .context("tenant vanished")?;
    match change {
        registry::directory::Change::Applied => println!(
            "tenant {} registered for {org_id}: status {}, the worker provisions it",
            t.id, t.status
        ),
        registry::directory::Change::Stale | registry::directory::Change::Incomplete(_) => {
            anyhow::bail!(
                "{org_id} already has tenant {} (status {}, desired {}); nothing changed",
                t.id,
                t.status,
                t.desired_state
            )
        }
    }
    Ok(())
}

/// The outcome of one tenant in a rollout.
#[derive(serde::Serialize)]
struct RolloutResult {
    tenant: TenantId,
    clerk_org_id: ClerkOrgId,
    from: i32,
    to: Option<i32>,
    applied: Vec<i32>,
    error: Option<String>,
}

async fn migrate(
    settings: &Settings,
    pool: deadpool_postgres::Pool,
    concurrency: usize,
    only: Option<TenantId>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(concurrency > 0, "--concurrency must be at least 1");
    let connector = provisioning::host_connector(settings)?;
    let templates = provisioning::templates(settings)?;
    let prefix = settings.prefix()?;
    provisioning::seed_default_host(&pool, settings).await?;
    // New tenants must be cloned at the new version from now on.
    for host in registry::hosts::list(&pool.get().await?).await? {
        provisioner::template::build(&pool, &connector, &host, &prefix, &templates).await?;
    }
    let latest = templates.latest_version();
    let todo = rollout::behind(&pool, latest, only).await?;
    if todo.is_empty() {
        if !json {
            println!("every active tenant is at template v{latest}");
        } else {
            print_json(&Vec::<RolloutResult>::new())?;
        }
        return Ok(ExitCode::SUCCESS);
    }

    let bar = ProgressBar::new(todo.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} tenants ({elapsed}, eta {eta}) {msg}")
            .expect("valid template"),
    );
    let pause_at = std::env::var(provisioning::PAUSE_AT_ENV).ok();
    let results: Vec<RolloutResult> = futures::stream::iter(todo)
        .map(|tenant| {
            let (pool, connector, templates, prefix, bar, pause_at) = (
                &pool,
                &connector,
                &templates,
                &prefix,
                &bar,
                pause_at.as_deref(),
            );
            async move {
                let outcome = async {
                    let migrated =
                        rollout::apply(pool, connector, templates, prefix, &tenant).await?;
                    if pause_at == Some("rollout_applied") {
                        bar.suspend(|| eprintln!("tenant-plane: paused at step rollout_applied"));
                        std::future::pending::<()>().await;
                    }
                    rollout::record(pool, &tenant, &migrated).await?;
                    Ok::<_, anyhow::Error>(migrated)
                }
                .await;
                bar.inc(1);
                match outcome {
                    Ok(m) => RolloutResult {
                        tenant: tenant.id,
                        clerk_org_id: tenant.clerk_org_id.clone(),
                        from: m.from,
                        to: Some(m.to),
                        applied: m.applied,
                        error: None,
                    },
                    Err(e) => {
                        bar.set_message(format!("{} failed", tenant.clerk_org_id));
                        RolloutResult {
                            tenant: tenant.id,
                            clerk_org_id: tenant.clerk_org_id.clone(),
                            from: tenant.template_version.unwrap_or(0),
                            to: None,
                            applied: Vec::new(),
                            error: Some(format!("{e:#}")),
                        }
                    }
                }
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    bar.finish_and_clear();

    let failed = results.iter().filter(|r| r.error.is_some()).count();
    if json {
        print_json(&results)?;
    } else {
        let rows: Vec<Vec<String>> = results
            .iter()
            .map(|r| {
                vec![
                    r.tenant.to_string(),
                    r.clerk_org_id.to_string(),
                    format!(
                        "v{} -> {}",
                        r.from,
                        r.to.map_or("-".into(), |v| format!("v{v}"))
                    ),
                    match &r.error {
                        Some(e) => format!("FAILED: {e}"),
                        None => format!("applied {:?}", r.applied),
                    },
                ]
            })
            .collect();
        print_table(&["TENANT", "CLERK ORG", "VERSION", "RESULT"], &rows);
        println!(
            "\n{} migrated to v{latest}, {failed} failed",
            results.len() - failed
        );
    }
    Ok(if failed > 0 {
        ExitCode::from(PARTIAL_FAILURE_EXIT_CODE)
    } else {
        ExitCode::SUCCESS
    })
}

fn whoami() -> String {
    std::env::var("USER").unwrap_or_else(|_| "unknown".into())
}

fn show(t: &Tenant) {
    let fields: [(&str, String); 14] = [
        ("id", t.id.to_string()),
        ("clerk_org_id", t.clerk_org_id.to_string()),
        ("name", t.name.clone()),
        ("slug", or_dash(t.slug.clone())),
        ("status", t.status.to_string()),
        ("desired_state", t.desired_state.to_string()),
        ("db_host", or_dash(t.db_host())),
        (
            "db_name",
            or_dash(t.placement.as_ref().map(|p| p.database.as_str())),
        ),
        (
            "db_role",
            or_dash(t.placement.as_ref().map(|p| p.role.as_str())),
        ),
        ("template_version", or_dash(t.template_version)),
        ("attempts", t.attempts.to_string()),
        ("last_error", or_dash(t.last_error.clone())),
        ("purge_after", or_dash(t.purge_after)),
        ("updated_at", t.updated_at.to_string()),
    ];
    for (k, v) in fields {
        println!("{k:<17} {v}");
    }
}
