//! The vocabulary every other tenant-plane crate shares, with no I/O: ids
//! parsed once at the edge, tenant states, the PostgreSQL identifiers
//! tenant-plane generates, and the one model of Clerk's objects, used by
//! webhook payloads and Backend API answers alike.
//!
//! Depending on this crate costs a crate nothing but serde and chrono: an
//! HTTP client that needs a `ClerkOrgId` does not compile a database driver.
#![forbid(unsafe_code)]

pub mod clerk;
pub mod ids;
pub mod naming;
pub mod status;

pub use ids::{ClerkMembershipId, ClerkOrgId, ClerkUserId, IdError, TenantId};
pub use naming::{PgIdent, TenantPrefix};
pub use status::{DesiredState, TenantStatus};
