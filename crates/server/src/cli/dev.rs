//! `tenant-plane dev ...`: tools for trying the system out locally.

use anyhow::Context;
use clap::{Args, Subcommand};
use model::ids::{ClerkMembershipId, ClerkOrgId, ClerkUserId};
use webhooks::samples::{SampleEvent, SampleIds};

use crate::config::Settings;

#[derive(Debug, Subcommand)]
pub enum DevCommand {
    /// Build a realistic Clerk event, sign it with the configured webhook
    /// secret (clerk.webhook_secret) and POST it to a running server.
    ///
    /// Example: tenant-plane dev send-webhook organization.created --name "Acme Corp"
    SendWebhook(SendWebhook),
}

#[derive(Debug, Args)]
pub struct SendWebhook {
    /// Event type: organization.created|updated|deleted,
    /// organizationMembership.created|updated|deleted, user.created|updated|deleted.
    pub event_type: String,
    /// Organization id (default: a new random `org_...`).
    #[arg(long)]
    pub org_id: Option<ClerkOrgId>,
    /// User id (default: a new random `user_...`).
    #[arg(long)]
    pub user_id: Option<ClerkUserId>,
    /// Membership id (default: a new random `orgmem_...`).
    #[arg(long)]
    pub membership_id: Option<ClerkMembershipId>,
    /// Organization name.
    #[arg(long, default_value = "Acme Corp")]
    pub name: String,
    /// Organization slug (default: derived from the name).
    #[arg(long)]
    pub slug: Option<String>,
    /// Membership role.
    #[arg(long, default_value = "org:admin")]
    pub role: String,
    /// Clerk's `updated_at` in Unix milliseconds (default: now), to try
    /// out-of-order deliveries.
    #[arg(long)]
    pub updated_at: Option<i64>,
    /// svix-id of the delivery (default: a new `msg_...`); repeat one to see
    /// the duplicate answer.
    #[arg(long)]
    pub svix_id: Option<String>,
    /// Where to send it (default: http://<http.bind>/webhooks/clerk).
    #[arg(long)]
    pub url: Option<String>,
}

impl DevCommand {
    pub async fn run(self, settings: &Settings) -> anyhow::Result<()> {
        match self {
            DevCommand::SendWebhook(args) => args.run(settings).await,
        }
    }
}

fn slugify(name: &str) -> String {
    let slug: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    slug.split('-')
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("-")
}

impl SendWebhook {
    async fn run(self, settings: &Settings) -> anyhow::Result<()> {
        let verifier = settings.webhook_verifier()?;
        let mut ids = SampleIds::random();
        if let Some(id) = self.org_id {
            ids.org_id = id;
        }
        if let Some(id) = self.user_id {
            ids.user_id = id;
        }
        if let Some(id) = self.membership_id {
            ids.membership_id = id;
        }
        let slug = self.slug.unwrap_or_else(|| slugify(&self.name));
        let mut event = SampleEvent::new(&self.event_type, &ids)?
            .slug(Some(slug))
            .name(self.name)
            .role(self.role);
        if let Some(ms) = self.updated_at {
            event = event.updated_at_ms(ms);
        }
        let body = event.to_body();
        let svix_id = self
            .svix_id
            .unwrap_or_else(|| format!("msg_{}", uuid::Uuid::new_v4().simple()));
        let timestamp = chrono::Utc::now().timestamp();
        let headers = verifier.signed_headers(&svix_id, timestamp, &body);
        let url = match self.url {
            Some(url) => url,
            None => format!("http://{}/webhooks/clerk", settings.http_addr()?),
        };

        let mut request = reqwest::Client::new()
            .post(&url)
            .header("content-type", "application/json")
            .body(body);
        for (name, value) in &headers {
            request = request.header(name.as_str(), value.as_bytes());
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("could not reach {url}; is `tenant-plane serve` running?"))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        println!(
            "{} {} (org {}, user {}, svix-id {svix_id})",
            self.event_type, status, ids.org_id, ids.user_id
        );
        println!("{text}");
        if !status.is_success() {
            anyhow::bail!("the server answered {status}");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::slugify;

    #[test]
    fn slugs_are_lowercase_ascii_with_single_dashes() {
        assert_eq!(slugify("Acme Corp"), "acme-corp");
        assert_eq!(slugify("  Ünïcode & Co.  "), "n-code-co");
        assert_eq!(slugify("'; DROP TABLE"), "drop-table");
    }
}
