pub mod health;
pub mod internal;
pub mod webhooks;
