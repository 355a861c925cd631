//! The store: tenant-plane's control-plane database. Its schema and
//! migrations, and every query on its tables, one module per table, each
//! function taking the client or transaction it runs on (so that callers
//! compose several into one transaction, as the webhook inbox does). Rows
//! are read by column name into typed structs.
//!
//! This crate knows nothing of HTTP or of the servers that hold tenant
//! databases (that is the provisioner's), except how to reach one: [`tls`]
//! opens every PostgreSQL connection of tenant-plane. Without the `migrations` feature it
//! does not embed or run migrations either, so the resolver, which reads
//! tenants, pulls no migration tooling.
#![forbid(unsafe_code)]

pub mod credentials;
pub mod crypto;
pub mod directory;
mod error;
pub mod hosts;
pub mod listen;
pub mod pool;
#[cfg(feature = "migrations")]
pub mod schema;
pub mod session;
pub mod spares;
pub mod sync_runs;
pub mod template_versions;
pub mod tenants;
pub mod tls;
pub mod webhook_events;

pub use error::{db_error_is_unavailable, describe, with_sources, RegistryError};
