//! `tenant-plane webhooks ...`: the inbox of Clerk deliveries.

use anyhow::Context;
use clap::Subcommand;
use webhooks::Inbox;

use super::table::{or_dash, print_json, print_table};
use crate::config::Settings;

#[derive(Debug, Subcommand)]
pub enum WebhooksCommand {
    /// The newest deliveries.
    List {
        /// Only this outcome: applied, ignored, stale or dead.
        #[arg(long)]
        outcome: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// One delivery with its body.
    Show { svix_id: String },
    /// Apply a stored delivery again with today's code (e.g. a dead one after
    /// a fix). Watermarks still apply: an older state never overwrites a newer.
    Replay { svix_id: String },
}

impl WebhooksCommand {
    pub async fn run(self, settings: &Settings) -> anyhow::Result<()> {
        let inbox = Inbox::new(crate::startup::control_pool(settings)?);
        match self {
            WebhooksCommand::List {
                outcome,
                limit,
                json,
            } => {
                let outcome = outcome
                    .map(|o| {
                        webhooks::Outcome::parse_stored(&o).with_context(|| {
                            format!("--outcome {o:?}: use one of applied, ignored, stale, dead")
                        })
                    })
                    .transpose()?;
                let events = inbox.list(outcome, limit).await?;
                if json {
                    return print_json(&events);
                }
                let rows: Vec<Vec<String>> = events
                    .iter()
                    .map(|e| {
                        vec![
                            e.received_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                            e.svix_id.clone(),
                            e.event_type.clone(),
                            or_dash(e.object_id.clone()),
                            e.outcome.as_str().to_owned(),
                            or_dash(e.error.clone()),
                        ]
                    })
                    .collect();
                print_table(
                    &["RECEIVED", "SVIX ID", "TYPE", "OBJECT", "OUTCOME", "ERROR"],
                    &rows,
                );
            }
            WebhooksCommand::Show { svix_id } => {
                let event = inbox
                    .get(&svix_id)
                    .await?
                    .with_context(|| format!("no delivery {svix_id:?} in the inbox"))?;
                print_json(&event)?;
            }
            WebhooksCommand::Replay { svix_id } => {
                let outcome = inbox
                    .replay(&svix_id)
                    .await?
                    .with_context(|| format!("no delivery {svix_id:?} in the inbox"))?;
                println!("{svix_id}: {}", outcome.as_str());
            }
        }
        Ok(())
    }
}
