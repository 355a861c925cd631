//! Clerk's objects, as both its webhooks and its Backend API send them, reduced
//! to what tenant-plane uses. Fields not modelled here are ignored, so
//! additions on Clerk's side never break decoding. Times are Unix
//! milliseconds, as in Clerk's spec.
//!
//! A webhook's `data` and a Backend API answer have the same shape, so one
//! type serves both: the webhook intake and the directory sync write the same
//! objects through the same directory functions.

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::ids::{ClerkMembershipId, ClerkOrgId, ClerkUserId};

/// A Unix time in milliseconds, as Clerk's `*_at` fields are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
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

impl From<DateTime<Utc>> for Millis {
    fn from(t: DateTime<Utc>) -> Self {
        Millis(t)
    }
}

/// What Clerk sends for a deleted object (`organization.deleted`,
/// `user.deleted`): only its id.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Deleted<Id> {
    pub id: Id,
}

/// An organization (`Organization` in the spec).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Organization {
    pub id: ClerkOrgId,
    pub name: String,
    /// `null` or absent when the instance has slugs turned off.
    #[serde(default)]
    pub slug: Option<String>,
    pub created_at: Millis,
    pub updated_at: Millis,
    /// Always an object; `{}` when Clerk sends none.
    #[serde(default = "empty_object", deserialize_with = "object_or_empty")]
    pub public_metadata: Value,
}

impl Organization {
    /// An organization as tenant-plane itself registers one (from the CLI,
    /// or in tests): no metadata, created when last updated.
    pub fn new(
        id: ClerkOrgId,
        name: String,
        slug: Option<String>,
        updated_at: DateTime<Utc>,
    ) -> Self {
        Self {
            id,
            name,
            slug,
            created_at: Millis(updated_at),
            updated_at: Millis(updated_at),
            public_metadata: empty_object(),
        }
    }
}

/// A user (`User` in the spec).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct User {
    pub id: ClerkUserId,
    #[serde(default)]
    pub first_name: Option<String>,
    #[serde(default)]
    pub last_name: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub image_url: Option<String>,
    #[serde(default)]
    pub external_id: Option<String>,
    #[serde(default)]
    pub primary_email_address_id: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub email_addresses: Vec<EmailAddress>,
    #[serde(default = "empty_object", deserialize_with = "object_or_empty")]
    pub public_metadata: Value,
    pub created_at: Millis,
    pub updated_at: Millis,
}

impl User {
    /// The address `primary_email_address_id` points at, if it is listed.
    pub fn primary_email(&self) -> Option<&str> {
        let primary = self.primary_email_address_id.as_deref()?;
        self.email_addresses
            .iter()
            .find(|e| e.id == primary)
            .map(|e| e.email_address.as_str())
    }
}

/// One of a user's email addresses.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct EmailAddress {
    pub id: String,
    pub email_address: String,
}

/// A user's membership in an organization (`OrganizationMembership`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct OrganizationMembership {
    pub id: ClerkMembershipId,
    pub role: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub permissions: Vec<String>,
    pub organization: MembershipOrganization,
    /// The member. The spec does not list it as required, so it is optional
    /// here; Clerk fills it in on the memberships list.
    #[serde(default)]
    pub public_user_data: Option<PublicUserData>,
    pub created_at: Millis,
    pub updated_at: Millis,
}

impl OrganizationMembership {
    /// The member's user id, when Clerk sent `public_user_data`.
    pub fn user_id(&self) -> Option<&ClerkUserId> {
        self.public_user_data.as_ref().map(|u| &u.user_id)
    }
}

/// The organization embedded in a membership (a whole `Organization` in the
/// spec; only what identifies it is kept).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct MembershipOrganization {
    pub id: ClerkOrgId,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub slug: Option<String>,
}

/// The public part of a member's profile (`OrganizationMembershipPublicUserData`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PublicUserData {
    pub user_id: ClerkUserId,
    #[serde(default)]
    pub first_name: Option<String>,
    #[serde(default)]
    pub last_name: Option<String>,
    #[serde(default)]
    pub image_url: Option<String>,
    /// The member's identifier (usually the primary email address).
    #[serde(default)]
    pub identifier: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

/// `null` (or absent, with `default`) becomes `{}`.
fn object_or_empty<'de, D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
    Ok(match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => empty_object(),
        Some(v) => v,
    })
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn organization_in_the_spec_shape() {
        let org: Organization = serde_json::from_value(json!({
            "object": "organization",
            "id": "org_2g7np7Hrk0SN6kj5EDMLDaKNL0S",
            "name": "Acme",
            "slug": null,
            "has_image": false,
            "max_allowed_memberships": 5,
            "admin_delete_enabled": true,
            "public_metadata": null,
            "private_metadata": {"secret": 1},
            "created_at": 1716883200000_i64,
            "updated_at": 1716883300000_i64,
            "some_future_field": [1, 2]
        }))
        .unwrap();
        assert_eq!(org.id.as_str(), "org_2g7np7Hrk0SN6kj5EDMLDaKNL0S");
        assert_eq!(org.slug, None);
        assert_eq!(org.public_metadata, json!({}));
        assert_eq!(org.updated_at.time().timestamp_millis(), 1716883300000);
    }

    #[test]
    fn user_and_primary_email() {
        let user: User = serde_json::from_value(json!({
            "id": "user_29w83sxmDNGwOuEthce5gg56FcC",
            "object": "user",
            "username": null,
            "first_name": "Ada",
            "last_name": null,
            "primary_email_address_id": "idn_2",
            "email_addresses": [
                {"id": "idn_1", "object": "email_address", "email_address": "old@example.com"},
                {"id": "idn_2", "object": "email_address", "email_address": "ada@example.com",
                 "verification": {"status": "verified"}}
            ],
            "created_at": 1, "updated_at": 2
        }))
        .unwrap();
        assert_eq!(user.primary_email(), Some("ada@example.com"));
        assert_eq!(user.public_metadata, json!({}));

        // The primary id must name a listed address; no id, no address.
        let mut other = user.clone();
        other.primary_email_address_id = Some("idn_3".into());
        assert_eq!(other.primary_email(), None);
        other.primary_email_address_id = None;
        assert_eq!(other.primary_email(), None);
    }

    #[test]
    fn membership_without_user_data_or_permissions() {
        let m: OrganizationMembership = serde_json::from_value(json!({
            "id": "orgmem_1", "object": "organization_membership", "role": "org:admin",
            "permissions": null, "public_metadata": {},
            "organization": {"id": "org_1", "name": "Acme", "created_at": 1, "updated_at": 1},
            "created_at": 1, "updated_at": 2
        }))
        .unwrap();
        assert!(m.permissions.is_empty());
        assert_eq!(m.user_id(), None);
        assert_eq!(m.organization.id.as_str(), "org_1");
    }

    #[test]
    fn malformed_ids_are_refused() {
        let err = serde_json::from_value::<Organization>(json!({
            "id": "org_'; drop", "name": "x", "created_at": 1, "updated_at": 1
        }))
        .unwrap_err();
        assert!(err.to_string().contains("Clerk organization id"), "{err}");
    }
}
