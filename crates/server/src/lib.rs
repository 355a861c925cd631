//! The `tenant-plane` binary's library half: configuration, telemetry, the
//! HTTP application and the CLI commands. `main.rs` only dispatches.
#![forbid(unsafe_code)]

pub mod auth;
pub mod body;
pub mod cli;
pub mod config;
pub mod console;
pub mod error;
pub mod log_limit;
pub mod provisioning;
pub mod routes;
pub mod startup;
pub mod telemetry;
