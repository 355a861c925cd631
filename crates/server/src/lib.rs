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

/// The allocator of `serve` (and of the benches and tests, which link this
/// library): a request allocates and frees a few dozen small buffers, and
/// glibc's malloc took about a tenth of the server's CPU on the resolve
/// route (perf, docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
