//! Resolver: from a verified Clerk session token's organization claim to a
//! connection pool for that tenant's own database.
//!
//! This crate is the piece application teams embed: it depends on the
//! registry (to read `tenant_registry`) but on nothing else of tenant-plane.
#![forbid(unsafe_code)]

pub mod claims;
pub mod clock;
pub mod jwks;
pub mod token;
