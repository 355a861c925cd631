pub mod health;
pub mod webhooks;
