//! The operator console (crates/console), built from settings: its own
//! small control-plane pool with the CLI's deadlines (its actions and the
//! doctor are the CLI's), and the provisioning pieces the doctor needs.

use std::sync::Arc;

use console::{ConsoleConfig, ConsoleState, Provisioning};
use registry::pool::PoolOptions;

use crate::config::{ControlPool, Settings};
use crate::provisioning;

/// Connections the console's pool holds at most: a few operators' pages.
const CONSOLE_CONNECTIONS: usize = 4;

/// The console's state, or None when `console.tokens` is empty (then
/// nothing is mounted under /console and it answers 404). Starts the
/// console's NOTIFY listener: call within the runtime that serves.
pub fn state(settings: &Settings) -> anyhow::Result<Option<Arc<ConsoleState>>> {
    let c = &settings.console;
    if c.tokens.is_empty() {
        return Ok(None);
    }
    let pool = registry::pool::build_pool(
        registry::pool::parse_url(settings.database_url()?)?,
        &PoolOptions {
            max_size: CONSOLE_CONNECTIONS,
            ..settings.pool_options(ControlPool::Workers)
        },
    )?;
    let state = ConsoleState::new(
        &ConsoleConfig {
            tokens: c.tokens.clone(),
            session_lifetime: c.session_lifetime,
            login_attempts: c.login_attempts,
            login_window: c.login_window,
        },
        pool,
        registry::pool::parse_url(settings.database_url()?)?,
        Provisioning {
            plans: settings.plans()?,
            connector: provisioning::host_connector(settings)?,
            prefix: settings.prefix()?,
            templates: provisioning::templates(settings)?,
            stuck_after: c.stuck_after,
        },
    );
    // An open event stream never ends by itself, and the server's graceful
    // shutdown waits for open responses: end them when the shutdown starts.
    if let Some(state) = &state {
        let state = state.clone();
        tokio::spawn(async move {
            crate::cli::shutdown_signal().await;
            state.close();
        });
    }
    Ok(state)
}
