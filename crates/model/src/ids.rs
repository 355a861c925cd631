//! Identifiers, parsed once at the edge so that the rest of the code can only
//! hold well-formed ones.
//!
//! Clerk ids are a fixed prefix and a base62 body (`org_2g7np7Hrk0SN6kj5EDMLDaKNL0S`).
//! Anything else (quotes, spaces, unicode, empty bodies) is refused here, so an
//! id can be logged, used as a map key or put in a URL without further checks.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Longest id accepted. Clerk's are about 31 characters; the margin allows for
/// longer ids in the future without letting a payload carry a novel.
const MAX_ID_LEN: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind}: {reason}")]
pub struct IdError {
    kind: &'static str,
    reason: &'static str,
}

fn parse_clerk_id(kind: &'static str, prefix: &str, value: &str) -> Result<(), IdError> {
    let err = |reason| IdError { kind, reason };
    if value.len() > MAX_ID_LEN {
        return Err(err("too long"));
    }
    let body = value
        .strip_prefix(prefix)
        .ok_or_else(|| err("wrong prefix"))?;
    if body.is_empty() {
        return Err(err("empty after the prefix"));
    }
    if !body.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(err("only ASCII letters and digits may follow the prefix"));
    }
    Ok(())
}

macro_rules! clerk_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            pub fn parse(value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                parse_clerk_id($kind, $prefix, &value)?;
                Ok(Self(value))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(s).map_err(serde::de::Error::custom)
            }
        }
    };
}

clerk_id!(
    /// A Clerk organization id, `org_...`: one tenant.
    ClerkOrgId, "org_", "Clerk organization id"
);
clerk_id!(
    /// A Clerk user id, `user_...`.
    ClerkUserId, "user_", "Clerk user id"
);
clerk_id!(
    /// A Clerk organization membership id, `orgmem_...`.
    ClerkMembershipId, "orgmem_", "Clerk membership id"
);

/// Our own id for a tenant (UUID v7, so ids sort by creation time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TenantId(Uuid);

impl TenantId {
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    pub fn as_uuid(&self) -> Uuid {
        self.0
    }

    /// The id as a query parameter, by reference.
    pub fn uuid_ref(&self) -> &Uuid {
        &self.0
    }
}

impl Default for TenantId {
    fn default() -> Self {
        Self::new()
    }
}

impl From<Uuid> for TenantId {
    fn from(u: Uuid) -> Self {
        Self(u)
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_clerk_shaped_ids() {
        assert_eq!(
            ClerkOrgId::parse("org_2g7np7Hrk0SN6kj5EDMLDaKNL0S")
                .unwrap()
                .as_str(),
            "org_2g7np7Hrk0SN6kj5EDMLDaKNL0S"
        );
        assert!(ClerkUserId::parse("user_29w83sxmDNGwOuEthce5gg56FcC").is_ok());
        assert!(ClerkMembershipId::parse("orgmem_2g7np7Hrk0SN6kj5EDMLDaKNL0S").is_ok());
    }

    #[test]
    fn rejects_hostile_or_malformed_ids() {
        let long = format!("org_{}", "a".repeat(MAX_ID_LEN));
        for bad in [
            "",
            "org_",
            "org",
            "user_abc",
            "org_abc'; DROP TABLE tenant_registry; --",
            "org_abc def",
            "org_abc\"",
            "org_ébc",
            "org_abc\0",
            "ORG_abc",
            long.as_str(),
        ] {
            assert!(ClerkOrgId::parse(bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn deserialising_applies_the_same_rules() {
        let ok: ClerkOrgId = serde_json::from_str("\"org_abc123\"").unwrap();
        assert_eq!(ok.as_str(), "org_abc123");
        let err = serde_json::from_str::<ClerkOrgId>("\"org_a-b\"").unwrap_err();
        assert!(err.to_string().contains("Clerk organization id"), "{err}");
    }

    #[test]
    fn tenant_ids_are_time_ordered() {
        let a = TenantId::new();
        let b = TenantId::new();
        assert!(a < b);
        assert_eq!(a.as_uuid().get_version_num(), 7);
    }
}
