//! Server-side deadlines a session opens with. A statement or a lock wait
//! that runs past them is cancelled by the server itself, so a slow query
//! or a held lock costs its caller an error, never a connection held for
//! good. (A server that stops answering altogether enforces nothing: for
//! that, callers bound their own waits as well.)

use std::time::Duration;

use tokio_postgres::Config;

/// `statement_timeout` and `lock_timeout`; `None` leaves the server's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionLimits {
    pub statement_timeout: Option<Duration>,
    pub lock_timeout: Option<Duration>,
}

impl SessionLimits {
    pub fn new(statement_timeout: Duration, lock_timeout: Duration) -> Self {
        Self {
            statement_timeout: Some(statement_timeout),
            lock_timeout: Some(lock_timeout),
        }
    }

    /// The startup `options` that set these, after any the config has.
    fn options(&self, existing: Option<&str>) -> Option<String> {
        let mut parts: Vec<String> = existing
            .filter(|o| !o.trim().is_empty())
            .map(str::to_owned)
            .into_iter()
            .collect();
        for (name, value) in [
            ("statement_timeout", self.statement_timeout),
            ("lock_timeout", self.lock_timeout),
        ] {
            if let Some(d) = value {
                // At least 1 ms: 0 would mean "no limit".
                parts.push(format!("-c {name}={}", d.as_millis().max(1)));
            }
        }
        (!parts.is_empty()).then(|| parts.join(" "))
    }

    /// Sets these limits on `config`, keeping its other startup options.
    pub fn apply(&self, config: &mut Config) {
        if let Some(options) = self.options(config.get_options()) {
            config.options(&options);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_appended_to_the_existing_startup_options_in_milliseconds() {
        let limits = SessionLimits::new(Duration::from_secs(5), Duration::from_millis(1500));
        let mut config: Config = "postgres://u@h/db?options=-c%20search_path%3Dx"
            .parse()
            .unwrap();
        limits.apply(&mut config);
        assert_eq!(
            config.get_options(),
            Some("-c search_path=x -c statement_timeout=5000 -c lock_timeout=1500")
        );
    }

    #[test]
    fn no_limits_leave_the_config_alone_and_tiny_ones_never_become_unlimited() {
        let mut config = Config::new();
        SessionLimits::default().apply(&mut config);
        assert_eq!(config.get_options(), None);
        SessionLimits::new(Duration::from_micros(10), Duration::ZERO).apply(&mut config);
        assert_eq!(
            config.get_options(),
            Some("-c statement_timeout=1 -c lock_timeout=1")
        );
    }
}
