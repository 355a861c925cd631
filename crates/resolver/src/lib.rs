//! Resolver: from a verified Clerk session token's organization claim to a
//! connection pool for that tenant's own database.
//!
//! This crate is the piece application teams embed: it depends on the
//! registry (to read `tenant_registry`) but on nothing else of tenant-plane.
//! Build a [`Resolver`], call [`Resolver::listen_for_changes`] so suspended
//! and deleted tenants are dropped at once, and either call
//! [`Resolver::resolve`] or let handlers take the [`TenantConn`] extractor.
#![forbid(unsafe_code)]

pub mod cache;
pub mod claims;
pub mod clock;
pub mod extractor;
pub mod jwks;
pub mod pools;
pub mod resolver;
pub mod token;

pub use extractor::{ExtractError, TenantConn};
pub use resolver::{ResolveError, Resolver, ResolverConfig, TenantContext, TenantPool};
