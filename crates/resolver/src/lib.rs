//! Resolver: from a verified Clerk session token's organization claim to a
//! connection pool for that tenant's database.
//!
//! This crate is the piece application teams embed. It is empty until the
//! provisioning engine gives tenants databases and roles of their own (see the
//! "Resolver" section of the design); it exists now so that the workspace has
//! its final shape and the dependency direction (resolver -> registry, never
//! the reverse) is fixed from the start.
#![forbid(unsafe_code)]
