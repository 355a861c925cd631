//! Keeping the directory in step with Clerk when webhooks are not enough:
//! `backfill` reads organizations, users and memberships from the Clerk
//! Backend API and writes them through the same watermark-guarded directory
//! functions as the webhook intake; `writeback` puts each tenant's id into
//! its organization's public metadata, and takes it out again on deletion.
#![forbid(unsafe_code)]

pub mod backfill;
pub mod writeback;

pub use backfill::{backfill_all, backfill_organization, status, BackfillError};
