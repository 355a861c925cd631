//! The objects Clerk answers, reduced to what a directory sync uses. Fields
//! not modelled here are ignored, so additions on Clerk's side never break
//! decoding. Times are Unix milliseconds, as in the spec.

use registry::ids::{ClerkMembershipId, ClerkOrgId, ClerkUserId};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// One page of a list endpoint: `{"data": [...], "total_count": N}`, where
/// `total_count` counts every item, not only this page's.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Page<T> {
    pub data: Vec<T>,
    pub total_count: u64,
}

/// An organization (`Organization` in the spec).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Organization {
    pub id: ClerkOrgId,
    pub name: String,
    /// `null` or absent when the instance has slugs turned off.
    #[serde(default)]
    pub slug: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    /// Always an object; `{}` when Clerk sends none.
    #[serde(default = "empty_object", deserialize_with = "object_or_empty")]
    pub public_metadata: Value,
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
    pub created_at: i64,
    pub updated_at: i64,
}

impl User {
    /// The address `primary_email_address_id` points at, if it is listed.
    pub fn primary_email(&self) -> Option<&str> {
        registry::directory::primary_email(
            self.primary_email_address_id.as_deref(),
            self.email_addresses
                .iter()
                .map(|e| (e.id.as_str(), e.email_address.as_str())),
        )
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
    pub created_at: i64,
    pub updated_at: i64,
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
        assert_eq!(org.updated_at, 1716883300000);
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
