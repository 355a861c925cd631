//! Typed models of the Clerk webhook events tenant-plane acts on.
//!
//! Parsing is two-staged: the envelope (`type`, `timestamp`, `data`) first,
//! then `data` by type. An unknown type is not an error (Clerk sends many
//! event types we ignore), and unknown extra fields are ignored everywhere,
//! because Clerk adds fields over time. The objects in `data` are Clerk's
//! own (`model::clerk`), the same types the Backend API client decodes.

use chrono::{DateTime, TimeZone, Utc};
use model::clerk::{Deleted, Organization, OrganizationMembership, User};
use model::{ClerkOrgId, ClerkUserId};
use serde::Deserialize;
use serde_json::Value;

/// The outer object of every Clerk webhook.
#[derive(Debug, Clone, Deserialize)]
pub struct Envelope {
    #[serde(rename = "type")]
    pub event_type: String,
    /// Documented as milliseconds, but Clerk's own spec examples are
    /// seconds-sized: see [`Envelope::time`].
    #[serde(default)]
    pub timestamp: Option<i64>,
    #[serde(default)]
    pub instance_id: Option<String>,
    pub data: Value,
}

impl Envelope {
    /// The event time, reading seconds-sized values as seconds and larger ones
    /// as milliseconds (10^11 s is the year 5138; 10^11 ms is 1973).
    pub fn time(&self) -> Option<DateTime<Utc>> {
        self.timestamp.and_then(|t| {
            if t.abs() < 100_000_000_000 {
                Utc.timestamp_opt(t, 0).single()
            } else {
                Utc.timestamp_millis_opt(t).single()
            }
        })
    }

    /// `data.id` as sent, for the inbox, even when it would not parse.
    pub fn object_id(&self) -> Option<&str> {
        self.data.get("id").and_then(Value::as_str)
    }
}

/// The events tenant-plane acts on.
#[derive(Debug, Clone)]
pub enum ClerkEvent {
    OrganizationCreated(Organization),
    OrganizationUpdated(Organization),
    OrganizationDeleted(Deleted<ClerkOrgId>),
    MembershipCreated(OrganizationMembership),
    MembershipUpdated(OrganizationMembership),
    MembershipDeleted(OrganizationMembership),
    UserCreated(User),
    UserUpdated(User),
    UserDeleted(Deleted<ClerkUserId>),
}

/// The event types [`ClerkEvent::from_envelope`] understands.
pub const HANDLED_TYPES: &[&str] = &[
    "organization.created",
    "organization.updated",
    "organization.deleted",
    "organizationMembership.created",
    "organizationMembership.updated",
    "organizationMembership.deleted",
    "user.created",
    "user.updated",
    "user.deleted",
];

impl ClerkEvent {
    /// `Ok(None)` for a type we do not handle; `Err` when a handled type's
    /// data does not match Clerk's documented shape.
    pub fn from_envelope(env: &Envelope) -> Result<Option<ClerkEvent>, serde_json::Error> {
        fn data<T: serde::de::DeserializeOwned>(env: &Envelope) -> Result<T, serde_json::Error> {
            T::deserialize(&env.data)
        }
        use ClerkEvent::*;
        Ok(Some(match env.event_type.as_str() {
            "organization.created" => OrganizationCreated(data(env)?),
            "organization.updated" => OrganizationUpdated(data(env)?),
            "organization.deleted" => OrganizationDeleted(data(env)?),
            "organizationMembership.created" => MembershipCreated(data(env)?),
            "organizationMembership.updated" => MembershipUpdated(data(env)?),
            "organizationMembership.deleted" => MembershipDeleted(data(env)?),
            "user.created" => UserCreated(data(env)?),
            "user.updated" => UserUpdated(data(env)?),
            "user.deleted" => UserDeleted(data(env)?),
            _ => return Ok(None),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Envelope {
        let path = format!(
            "{}/../../fixtures/clerk/webhooks/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        serde_json::from_str(&text).unwrap()
    }

    fn parse(name: &str) -> ClerkEvent {
        ClerkEvent::from_envelope(&fixture(name)).unwrap().unwrap()
    }

    #[test]
    fn organization_examples_parse() {
        let ClerkEvent::OrganizationCreated(o) = parse("organization.created.openapi-example.json")
        else {
            panic!("wrong variant")
        };
        assert_eq!(o.id.as_str(), "org_2g7np7Hrk0SN6kj5EDMLDaKNL0S");
        assert_eq!(o.name, "Acme Corp");
        assert_eq!(o.slug.as_deref(), Some("acme-corp"));
        assert_eq!(o.updated_at.time().timestamp_millis(), 1716883200000);

        let ClerkEvent::OrganizationUpdated(u) = parse("organization.updated.openapi-example.json")
        else {
            panic!("wrong variant")
        };
        assert_eq!(u.name, "Acme Corp Updated");
        assert!(u.updated_at.time() > o.updated_at.time());

        let ClerkEvent::OrganizationDeleted(d) = parse("organization.deleted.openapi-example.json")
        else {
            panic!("wrong variant")
        };
        assert_eq!(d.id.as_str(), "org_2g7np7Hrk0SN6kj5EDMLDaKNL0S");
    }

    #[test]
    fn membership_examples_parse_including_deleted_with_the_whole_object() {
        for (file, want_role) in [
            (
                "organizationMembership.created.openapi-example.json",
                "org:member",
            ),
            (
                "organizationMembership.updated.openapi-example.json",
                "org:admin",
            ),
            (
                "organizationMembership.deleted.openapi-example.json",
                "org:member",
            ),
        ] {
            let m = match parse(file) {
                ClerkEvent::MembershipCreated(m)
                | ClerkEvent::MembershipUpdated(m)
                | ClerkEvent::MembershipDeleted(m) => m,
                other => panic!("{file}: {other:?}"),
            };
            assert_eq!(m.role, want_role);
            assert_eq!(
                m.organization.id.as_str(),
                "org_2g7np7Hrk0SN6kj5EDMLDaKNL0S"
            );
            assert_eq!(
                m.user_id().map(|u| u.as_str()),
                Some("user_2h8op3Isl1QR7tKu5FGNfaLKEoU")
            );
        }
        assert!(matches!(
            parse("organizationMembership.deleted.openapi-example.json"),
            ClerkEvent::MembershipDeleted(_)
        ));
    }

    #[test]
    fn user_examples_parse() {
        let ClerkEvent::UserCreated(u) = parse("user.created.clerk-docs-overview.json") else {
            panic!("wrong variant")
        };
        assert_eq!(u.primary_email(), Some("example@example.org"));
        assert_eq!(u.external_id.as_deref(), Some("567772"));
        let ClerkEvent::UserCreated(u) = parse("user.created.openapi-example.json") else {
            panic!("wrong variant")
        };
        assert_eq!(u.first_name.as_deref(), Some("John"));
        assert_eq!(
            u.primary_email(),
            None,
            "no email addresses in this example"
        );
        assert!(matches!(
            parse("user.updated.openapi-example.json"),
            ClerkEvent::UserUpdated(u) if u.username.as_deref() == Some("johndoe")
        ));
        assert!(matches!(
            parse("user.deleted.openapi-example.json"),
            ClerkEvent::UserDeleted(d) if d.id.as_str() == "user_2g7np7Hrk0SN6kj5EDMLDaKNL0S"
        ));
    }

    #[test]
    fn envelope_timestamp_accepts_seconds_and_milliseconds() {
        // Spec examples use seconds...
        let env = fixture("organization.created.openapi-example.json");
        assert_eq!(env.time().unwrap().timestamp(), 1716883200);
        // ...the docs overview example uses milliseconds.
        let env = fixture("user.created.clerk-docs-overview.json");
        assert_eq!(env.time().unwrap().timestamp_millis(), 1654012591835);
    }

    #[test]
    fn unknown_fields_and_unknown_types_do_not_break_parsing() {
        let mut env = fixture("organization.created.openapi-example.json");
        env.data["a_field_clerk_adds_next_year"] = serde_json::json!({"nested": [1, 2]});
        assert!(ClerkEvent::from_envelope(&env).unwrap().is_some());
        env.event_type = "session.created".into();
        assert!(ClerkEvent::from_envelope(&env).unwrap().is_none());
    }

    #[test]
    fn malformed_data_for_a_handled_type_is_an_error() {
        let mut env = fixture("organization.created.openapi-example.json");
        env.data["id"] = "org_'; DROP TABLE x; --".into();
        assert!(ClerkEvent::from_envelope(&env).is_err());
        let mut env = fixture("user.updated.openapi-example.json");
        env.data.as_object_mut().unwrap().remove("updated_at");
        assert!(ClerkEvent::from_envelope(&env).is_err());
    }

    #[test]
    fn every_handled_type_has_a_fixture_or_sample() {
        for t in HANDLED_TYPES {
            let sample = crate::samples::SampleEvent::new(t, &crate::samples::SampleIds::random())
                .unwrap()
                .to_json();
            let env: Envelope = serde_json::from_value(sample).unwrap();
            assert!(
                ClerkEvent::from_envelope(&env).unwrap().is_some(),
                "sample for {t} does not parse"
            );
        }
    }
}
