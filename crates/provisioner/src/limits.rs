//! Per-tenant limits, chosen by the registry's `plan` column among the plans
//! in configuration, and applied to the tenant's login role, so that one
//! tenant cannot take a whole server's connections or run forever.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

use model::naming::quote_literal;
use model::PgIdent;

/// What one plan allows a tenant's role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Concurrent sessions of the tenant's role (`CONNECTION LIMIT`).
    pub connection_limit: i32,
    pub statement_timeout: Option<Duration>,
    pub idle_in_transaction_session_timeout: Option<Duration>,
    /// In kilobytes (`temp_file_limit`).
    pub temp_file_limit_kb: Option<u64>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            connection_limit: 20,
            statement_timeout: None,
            idle_in_transaction_session_timeout: None,
            temp_file_limit_kb: None,
        }
    }
}

impl Limits {
    /// The role settings this plan sets; `None` resets the setting.
    fn settings(&self) -> [(&'static str, Option<String>); 3] {
        let ms = |d: Option<Duration>| d.map(|d| format!("{}ms", d.as_millis()));
        [
            ("statement_timeout", ms(self.statement_timeout)),
            (
                "idle_in_transaction_session_timeout",
                ms(self.idle_in_transaction_session_timeout),
            ),
            (
                "temp_file_limit",
                self.temp_file_limit_kb.map(|kb| format!("{kb}kB")),
            ),
        ]
    }

    /// A stable text naming exactly these limits: recorded on the tenant
    /// when applied, so that a change of the plan is noticed and applied.
    pub fn fingerprint(&self) -> String {
        let mut out = format!("connection_limit={}", self.connection_limit);
        for (name, value) in self.settings() {
            let _ = write!(out, ";{name}={}", value.as_deref().unwrap_or("default"));
        }
        out
    }

    /// The statements that apply these limits to `role`.
    pub(crate) fn statements(&self, role: &PgIdent) -> String {
        let mut sql = format!(
            "ALTER ROLE {role} CONNECTION LIMIT {};",
            self.connection_limit
        );
        for (name, value) in self.settings() {
            match value {
                Some(v) => write!(sql, "ALTER ROLE {role} SET {name} = {};", quote_literal(&v)),
                None => write!(sql, "ALTER ROLE {role} RESET {name};"),
            }
            .expect("writing to a String cannot fail");
        }
        sql
    }
}

#[derive(Debug, thiserror::Error)]
#[error("tenant plan {0:?} is not configured (plans.{0}); configured: {1}")]
pub struct UnknownPlan(pub String, pub String);

/// The configured plans by name. `default` always exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plans(BTreeMap<String, Limits>);

impl Default for Plans {
    fn default() -> Self {
        Self(BTreeMap::from([("default".to_owned(), Limits::default())]))
    }
}

impl Plans {
    pub fn new(plans: BTreeMap<String, Limits>) -> Self {
        let mut all = Plans::default().0;
        all.extend(plans);
        Self(all)
    }

    pub fn get(&self, plan: &str) -> Result<&Limits, UnknownPlan> {
        self.0.get(plan).ok_or_else(|| {
            UnknownPlan(
                plan.to_owned(),
                self.0.keys().cloned().collect::<Vec<_>>().join(", "),
            )
        })
    }

    /// Each plan's fingerprint, as JSON `{plan: fingerprint}`: the
    /// reconciler's claim compares tenants against it.
    pub fn fingerprints(&self) -> serde_json::Value {
        self.0
            .iter()
            .map(|(name, limits)| (name.clone(), limits.fingerprint().into()))
            .collect::<serde_json::Map<_, _>>()
            .into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_change_with_every_limit() {
        let base = Limits::default();
        let mut seen = vec![base.fingerprint()];
        for changed in [
            Limits {
                connection_limit: 3,
                ..base.clone()
            },
            Limits {
                statement_timeout: Some(Duration::from_secs(5)),
                ..base.clone()
            },
            Limits {
                idle_in_transaction_session_timeout: Some(Duration::from_secs(5)),
                ..base.clone()
            },
            Limits {
                temp_file_limit_kb: Some(1024),
                ..base.clone()
            },
        ] {
            let f = changed.fingerprint();
            assert!(!seen.contains(&f), "{f}");
            seen.push(f);
        }
    }

    #[test]
    fn statements_set_and_reset_each_setting() {
        let role = PgIdent::parse("tenant_a").unwrap();
        let limits = Limits {
            connection_limit: 7,
            statement_timeout: Some(Duration::from_millis(1500)),
            idle_in_transaction_session_timeout: None,
            temp_file_limit_kb: Some(2048),
        };
        let sql = limits.statements(&role);
        assert!(
            sql.contains(r#"ALTER ROLE "tenant_a" CONNECTION LIMIT 7;"#),
            "{sql}"
        );
        assert!(
            sql.contains(r#"SET statement_timeout = '1500ms';"#),
            "{sql}"
        );
        assert!(
            sql.contains(r#"RESET idle_in_transaction_session_timeout;"#),
            "{sql}"
        );
        assert!(sql.contains(r#"SET temp_file_limit = '2048kB';"#), "{sql}");
    }

    #[test]
    fn unknown_plans_name_the_configured_ones() {
        let plans = Plans::default();
        assert!(plans.get("default").is_ok());
        let err = plans.get("gold").unwrap_err().to_string();
        assert!(err.contains("\"gold\"") && err.contains("default"), "{err}");
    }
}
