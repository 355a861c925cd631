//! A client for the parts of Clerk's Backend API that a directory sync needs:
//! list and fetch organizations, list their memberships, list users, and
//! deep-merge an organization's public metadata.
//!
//! Built against Clerk's Backend API spec, version 2026-05-12 (sent as the
//! `Clerk-API-Version` header so Clerk answers in the shapes modelled here):
//!
//! - `GET /v1/organizations` and `GET /v1/organizations/{id}/memberships`
//!   answer `{"data": [...], "total_count": N}` and page with `limit`
//!   (1..=500) and `offset`.
//! - `GET /v1/users` answers a bare JSON array. The spec asks clients that walk
//!   more than a few pages to use the `starting_after` cursor (the id of the
//!   last user of the previous page, `created_at` ordering only) instead of a
//!   growing `offset`, and to stop at the first page shorter than `limit`;
//!   [`ClerkClient::list_all_users`] does exactly that.
//! - `PATCH /v1/organizations/{id}/metadata` deep-merges the given
//!   `public_metadata` into the stored one (a `null` value removes a key).
//!
//! Every request carries `Authorization: Bearer <secret key>`. 429, 5xx and
//! connection failures are retried with exponential backoff and jitter,
//! honouring `Retry-After`; other 4xx answers become [`ClerkError::Http`]
//! with Clerk's error code and message. The secret key appears in no error,
//! no `Debug` output and no log line.
//!
//! ```no_run
//! # async fn demo() -> Result<(), tenant_plane_clerk_api::ClerkError> {
//! use tenant_plane_clerk_api::{ClerkClient, ClerkConfig};
//!
//! let client = ClerkClient::new(ClerkConfig::new("sk_live_...".to_owned()))?;
//! for org in client.list_all_organizations().await? {
//!     println!("{} {}", org.id, org.name);
//! }
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

mod client;
mod config;
mod error;
mod limiter;
mod page;
mod retry;

pub use client::ClerkClient;
pub use config::{
    ClerkConfig, CLERK_API_VERSION, DEFAULT_API_URL, DEFAULT_MAX_RETRIES, DEFAULT_MAX_RETRY_WAIT,
    DEFAULT_METADATA_RATE, DEFAULT_MIN_RETRY_WAIT, DEFAULT_PAGE_SIZE, DEFAULT_REQUEST_TIMEOUT,
    MAX_PAGE_SIZE,
};
pub use error::ClerkError;
pub use model::clerk::{
    EmailAddress, MembershipOrganization, Organization, OrganizationMembership, PublicUserData,
    User,
};
pub use page::Page;
pub use secrecy::SecretString;
