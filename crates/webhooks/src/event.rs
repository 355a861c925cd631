//! Typed models of the Clerk webhook events tenant-plane acts on.
//!
//! Parsing is two-staged: the envelope (`type`, `timestamp`, `data`) first,
//! then `data` by type. An unknown type is not an error (Clerk sends many
//! event types we ignore), and unknown extra fields are ignored everywhere,
//! because Clerk adds fields over time.

use chrono::{DateTime, TimeZone, Utc};
use registry::directory;
use registry::ids::{ClerkMembershipId, ClerkOrgId, ClerkUserId};
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

/// A Unix time in milliseconds, as Clerk's `*_at` fields are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "i64")]
pub struct Millis(DateTime<Utc>);

impl TryFrom<i64> for Millis {
    type Error = String;
    fn try_from(ms: i64) -> Result<Self, String> {
        Utc.timestamp_millis_opt(ms)
            .single()
            .map(Millis)
            .ok_or_else(|| format!("timestamp {ms} is out of range"))
    }
}

impl Millis {
    pub fn time(self) -> DateTime<Utc> {
        self.0
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct OrganizationData {
    pub id: ClerkOrgId,
    pub name: String,
    #[serde(default)]
    pub slug: Option<String>,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// `organization.deleted` and `user.deleted` carry only the id.
#[derive(Debug, Clone, Deserialize)]
pub struct Deleted<Id> {
    pub id: Id,
}

#[derive(Debug, Clone, Deserialize)]
pub struct OrganizationRef {
    pub id: ClerkOrgId,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PublicUserData {
    pub user_id: ClerkUserId,
}

#[derive(Debug, Clone, Deserialize)]
pub struct MembershipData {
    pub id: ClerkMembershipId,
    pub role: String,
    #[serde(default)]
    pub permissions: Option<Vec<String>>,
    pub organization: OrganizationRef,
    pub public_user_data: PublicUserData,
    pub created_at: Millis,
    pub updated_at: Millis,
}

#[derive(Debug, Clone, Deserialize)]
pub struct EmailAddress {
    pub id: String,
    pub email_address: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct UserData {
    pub id: ClerkUserId,
    #[serde(default)]
    pub external_id: Option<String>,
    #[serde(default)]
    pub primary_email_address_id: Option<String>,
    #[serde(default)]
    pub email_addresses: Vec<EmailAddress>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub first_name: Option<String>,
    #[serde(default)]
    pub last_name: Option<String>,
    #[serde(default)]
    pub image_url: Option<String>,
    #[serde(default)]
    pub public_metadata: Option<Value>,
    pub created_at: Millis,
    pub updated_at: Millis,
}

impl UserData {
    pub fn primary_email(&self) -> Option<&str> {
        registry::directory::primary_email(
            self.primary_email_address_id.as_deref(),
            self.email_addresses
                .iter()
                .map(|e| (e.id.as_str(), e.email_address.as_str())),
        )
    }
}

/// The events tenant-plane acts on.
#[derive(Debug, Clone)]
pub enum ClerkEvent {
    OrganizationCreated(OrganizationData),
    OrganizationUpdated(OrganizationData),
    OrganizationDeleted(Deleted<ClerkOrgId>),
    MembershipCreated(MembershipData),
    MembershipUpdated(MembershipData),
    MembershipDeleted(MembershipData),
    UserCreated(UserData),
    UserUpdated(UserData),
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

impl From<&OrganizationData> for directory::Organization {
    fn from(o: &OrganizationData) -> Self {
        directory::Organization {
            id: o.id.clone(),
            name: o.name.clone(),
            slug: o.slug.clone(),
            updated_at: o.updated_at.time(),
        }
    }
}

impl From<&UserData> for directory::User {
    fn from(u: &UserData) -> Self {
        directory::User {
            id: u.id.clone(),
            primary_email: u.primary_email().map(str::to_owned),
            first_name: u.first_name.clone(),
            last_name: u.last_name.clone(),
            username: u.username.clone(),
            image_url: u.image_url.clone(),
            external_id: u.external_id.clone(),
            public_metadata: u
                .public_metadata
                .clone()
                .unwrap_or_else(|| Value::Object(Default::default())),
            updated_at: u.updated_at.time(),
        }
    }
}

impl From<&MembershipData> for directory::Membership {
    fn from(m: &MembershipData) -> Self {
        directory::Membership {
            id: m.id.clone(),
            org_id: m.organization.id.clone(),
            user_id: m.public_user_data.user_id.clone(),
            role: m.role.clone(),
            permissions: m.permissions.clone().unwrap_or_default(),
            updated_at: m.updated_at.time(),
        }
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
                m.public_user_data.user_id.as_str(),
                "user_2h8op3Isl1QR7tKu5FGNfaLKEoU"
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
