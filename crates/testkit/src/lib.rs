//! Test support shared by every crate's integration tests and the benches:
//! an isolated database per test on the PostgreSQL that `scripts/dev-db`
//! starts, and a TCP proxy that can take that database "down" and back.
#![forbid(unsafe_code)]

mod database;
mod proxy;
pub mod secrets;

pub use database::{admin_url, database_configured, second_admin_url, PrefixGuard, TestDatabase};
pub use proxy::ToggleProxy;
