//! Integration tests of the HTTP application against a real PostgreSQL.
//! One binary, one module per area; each test gets its own database.

mod availability;
mod check_tenants;
mod cli;
mod console;
mod crash;
mod doctor;
mod errors;
mod failures;
mod helpers;
mod hostile;
mod hung_host;
mod idempotency;
mod intake;
mod internal_api;
mod isolation;
mod managed;
mod operator;
mod ordering;
mod placement;
mod provisioning;
mod ready;
mod register;
mod resolve;
mod signature;
mod slow_clients;
mod sync;
mod template;
mod tls;
mod warm_pool;
mod workers;
