//! Resolver: from a verified Clerk session token's organization claim to a
//! connection pool for that tenant's own database.
//!
//! This crate is the piece application teams embed: it depends on the
//! registry (to read `tenant_registry`) but on nothing else of tenant-plane,
//! and on no web framework: its errors carry an `http::StatusCode` and a
//! stable code. Build a [`Resolver`], call [`Resolver::listen_for_changes`]
//! so suspended and deleted tenants are dropped at once, and either call
//! [`Resolver::resolve`] or let handlers take the [`TenantConn`] extractor:
//! for actix-web with the `actix` feature, for axum with `axum`.
#![forbid(unsafe_code)]

#[cfg(feature = "actix")]
pub mod actix;
#[cfg(feature = "axum")]
pub mod axum;
pub mod cache;
pub mod claims;
pub mod clock;
pub mod jwks;
pub mod pools;
pub mod rendered;
pub mod resolver;
pub mod session;
pub mod token;
pub mod verdicts;

pub use resolver::{ResolveError, Resolver, ResolverConfig, TenantContext, TenantPool};
pub use session::{ExtractError, TenantConn};
