//! Provisioning: everything tenant-plane does on the servers that hold tenant
//! databases. The reconciler gives each tenant the database its desired state
//! asks for; the template is what new databases are cloned from; rollout
//! brings existing tenants to a new template version; the doctor compares
//! the registry with what the servers hold.
//!
//! All SQL on control-plane tables goes through the registry crate, except
//! the reconciler's own ledger (claims and outcomes), which lives beside the
//! state machine it records.
#![forbid(unsafe_code)]

pub mod admin_rights;
pub mod connector;
pub mod doctor;
pub mod harden;
mod host_ops;
pub mod limits;
pub mod privileges;
pub mod reconciler;
pub mod rollout;
pub mod template;

pub use connector::{HostConnector, HostError};
pub use host_ops::{CloneStrategy, HostSqlError};
