//! The control-plane model of tenant-plane: identifiers, tenant states, the
//! control-plane schema and the directory of organizations, users and
//! memberships mirrored from Clerk.
//!
//! This crate knows nothing of HTTP: the webhook intake, the resolver and the
//! CLI all reach the control-plane database through it.
#![forbid(unsafe_code)]

pub mod directory;
mod error;
pub mod ids;
pub mod pool;
pub mod schema;
pub mod status;

pub use error::RegistryError;
