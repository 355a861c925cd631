//! `tenant-plane tenants ...`: look at tenants and move their desired state.

use anyhow::Context;
use clap::Subcommand;
use registry::ids::TenantId;
use registry::status::TenantStatus;
use registry::tenants::{self, Action, Tenant, TenantKey};

use super::table::{or_dash, print_json, print_table};
use crate::config::Settings;

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
}

/// Finds a tenant by uuid, Clerk organization id or slug.
pub async fn find(client: &deadpool_postgres::Client, key: &str) -> anyhow::Result<Tenant> {
    let by = if let Ok(uuid) = key.parse::<uuid::Uuid>() {
        TenantKey::Id(TenantId::from(uuid))
    } else if key.starts_with("org_") {
        TenantKey::ClerkOrg(key)
    } else {
        TenantKey::Slug(key)
    };
    tenants::get(client, by)
        .await?
        .with_context(|| format!("no tenant {key:?} (give a tenant id, an org_... id or a slug)"))
}

impl TenantsCommand {
    pub async fn run(self, settings: &Settings) -> anyhow::Result<()> {
        let pool = crate::startup::control_pool(settings)?;
        let mut client = pool.get().await?;
        let (key, action) = match self {
            TenantsCommand::List {
                status,
                limit,
                json,
            } => {
                let all = tenants::list(&client, status, None, limit).await?;
                if json {
                    return print_json(&all);
                }
                let rows: Vec<Vec<String>> = all
                    .iter()
                    .map(|t| {
                        vec![
                            t.id.to_string(),
                            t.clerk_org_id.clone(),
                            or_dash(t.slug.clone()),
                            t.status.to_string(),
                            t.desired_state.to_string(),
                            or_dash(t.db_host.clone()),
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
                return Ok(());
            }
            TenantsCommand::Show { tenant, json } => {
                let t = find(&client, &tenant).await?;
                let events = tenants::events(&client, t.id).await?;
                if json {
                    return print_json(&serde_json::json!({ "tenant": t, "events": events }));
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
                return Ok(());
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
        Ok(())
    }
}

fn whoami() -> String {
    std::env::var("USER").unwrap_or_else(|_| "unknown".into())
}

fn show(t: &Tenant) {
    let fields: [(&str, String); 14] = [
        ("id", t.id.to_string()),
        ("clerk_org_id", t.clerk_org_id.clone()),
        ("name", t.name.clone()),
        ("slug", or_dash(t.slug.clone())),
        ("status", t.status.to_string()),
        ("desired_state", t.desired_state.to_string()),
        ("db_host", or_dash(t.db_host.clone())),
        ("db_name", or_dash(t.db_name.clone())),
        ("db_role", or_dash(t.db_role.clone())),
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
