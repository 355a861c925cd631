//! The two halves of a tenant's lifecycle: where it is (`TenantStatus`) and
//! where it should be (`DesiredState`). The reconciler works on the gap.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} {value:?}; expected one of: {expected}")]
pub struct UnknownState {
    kind: &'static str,
    value: String,
    expected: &'static str,
}

macro_rules! string_enum {
    ($(#[$doc:meta])* $name:ident, $kind:literal { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "lowercase")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The value stored in `tenant_registry` (the interface ops scripts rely on).
            pub fn as_str(&self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownState;
            fn from_str(s: &str) -> Result<Self, UnknownState> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(UnknownState {
                        kind: $kind,
                        value: s.to_owned(),
                        expected: concat!($($text, " "),+).trim_ascii_end(),
                    }),
                }
            }
        }
    };
}

string_enum!(
    /// Where a tenant is. The values are exactly those of `tenant_registry.status`.
    TenantStatus, "tenant status" {
        Pending => "pending",
        Provisioning => "provisioning",
        Active => "active",
        Suspending => "suspending",
        Suspended => "suspended",
        Deleting => "deleting",
        Deleted => "deleted",
        Failed => "failed",
    }
);

string_enum!(
    /// Where a tenant should be, as decided by Clerk events and operators.
    DesiredState, "desired state" {
        Active => "active",
        Suspended => "suspended",
        Deleted => "deleted",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_value() {
        for s in TenantStatus::ALL {
            assert_eq!(s.as_str().parse::<TenantStatus>().unwrap(), *s);
        }
        for s in DesiredState::ALL {
            assert_eq!(s.as_str().parse::<DesiredState>().unwrap(), *s);
        }
    }

    #[test]
    fn unknown_values_name_the_alternatives() {
        let err = "Active".parse::<DesiredState>().unwrap_err().to_string();
        assert_eq!(
            err,
            "unknown desired state \"Active\"; expected one of: active suspended deleted"
        );
    }

    #[test]
    fn matches_the_schema_check_constraint() {
        let sql = include_str!("../../../migrations/V1__control_plane.sql");
        for s in TenantStatus::ALL {
            assert!(sql.contains(&format!("'{}'", s.as_str())), "{s} missing");
        }
    }
}
