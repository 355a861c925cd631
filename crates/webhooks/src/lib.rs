//! Clerk webhook intake: the Svix signature check, typed Clerk events, and the
//! durable inbox that records each delivery once and applies its effect on the
//! directory in the same transaction.
#![forbid(unsafe_code)]

pub mod event;
pub mod inbox;
pub mod samples;
pub mod signature;

pub use event::{ClerkEvent, Envelope};
pub use inbox::{Inbox, Outcome};
pub use registry::webhook_events::StoredEvent;
pub use signature::{Delivery, SecretError, SignatureError, WebhookVerifier};
