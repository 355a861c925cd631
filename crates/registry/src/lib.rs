//! The control-plane model of tenant-plane: identifiers, tenant states, the
//! control-plane schema, the directory mirrored from Clerk, and provisioning:
//! hosts, the tenant template and the reconciler that gives every tenant its
//! own database.
//!
//! This crate knows nothing of HTTP: the webhook intake, the resolver and the
//! CLI all reach the control-plane database through it.
#![forbid(unsafe_code)]

pub mod crypto;
pub mod directory;
pub mod doctor;
mod error;
pub mod fanout;
pub mod hosts;
pub mod ids;
pub mod naming;
pub mod pool;
pub mod reconciler;
pub mod schema;
pub mod status;
pub mod template;
pub mod tenants;

pub use error::{describe, RegistryError};
