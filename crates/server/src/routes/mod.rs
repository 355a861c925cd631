pub mod health;
pub mod internal;
pub mod sync;
pub mod webhooks;
