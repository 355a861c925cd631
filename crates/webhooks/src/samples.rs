//! Realistic Clerk payloads, shaped like the examples in Clerk's published
//! webhook spec. Used by `tenant-plane dev send-webhook`, the tests and the
//! benchmark, so all three exercise the same shapes Clerk sends.

use chrono::Utc;
use model::{ClerkMembershipId, ClerkOrgId, ClerkUserId};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::event::HANDLED_TYPES;

/// The Clerk ids a sample event refers to.
#[derive(Debug, Clone)]
pub struct SampleIds {
    pub org_id: ClerkOrgId,
    pub user_id: ClerkUserId,
    pub membership_id: ClerkMembershipId,
}

fn random_body() -> String {
    Uuid::new_v4().simple().to_string()
}

impl SampleIds {
    pub fn random() -> Self {
        // Hex is a subset of Clerk's base62 alphabet, so these always parse.
        let parse = |prefix: &str| format!("{prefix}{}", random_body());
        Self {
            org_id: ClerkOrgId::parse(parse("org_")).expect("valid generated id"),
            user_id: ClerkUserId::parse(parse("user_")).expect("valid generated id"),
            membership_id: ClerkMembershipId::parse(parse("orgmem_")).expect("valid generated id"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("no sample for event type {0:?}; known types: {types}", types = HANDLED_TYPES.join(", "))]
pub struct UnknownSampleType(String);

/// One event, ready to serialise and sign.
#[derive(Debug, Clone)]
pub struct SampleEvent {
    pub event_type: String,
    pub ids: SampleIds,
    pub name: String,
    pub slug: Option<String>,
    /// Clerk's `updated_at`, in milliseconds: the ordering watermark.
    pub updated_at_ms: i64,
    pub role: String,
}

impl SampleEvent {
    pub fn new(event_type: &str, ids: &SampleIds) -> Result<Self, UnknownSampleType> {
        if !HANDLED_TYPES.contains(&event_type) {
            return Err(UnknownSampleType(event_type.to_owned()));
        }
        Ok(Self {
            event_type: event_type.to_owned(),
            ids: ids.clone(),
            name: "Acme Corp".to_owned(),
            slug: Some("acme-corp".to_owned()),
            updated_at_ms: Utc::now().timestamp_millis(),
            role: "org:admin".to_owned(),
        })
    }

    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    pub fn slug(mut self, slug: Option<String>) -> Self {
        self.slug = slug;
        self
    }

    pub fn updated_at_ms(mut self, ms: i64) -> Self {
        self.updated_at_ms = ms;
        self
    }

    pub fn role(mut self, role: impl Into<String>) -> Self {
        self.role = role.into();
        self
    }

    fn organization(&self) -> Value {
        json!({
            "object": "organization",
            "id": self.ids.org_id,
            "name": self.name,
            "slug": self.slug,
            "image_url": "https://img.clerk.com/xxxxxx",
            "has_image": false,
            "members_count": 1,
            "missing_member_with_elevated_permissions": false,
            "pending_invitations_count": 0,
            "max_allowed_memberships": 5,
            "admin_delete_enabled": true,
            "public_metadata": {},
            "private_metadata": {},
            "created_by": self.ids.user_id,
            "created_at": self.updated_at_ms,
            "updated_at": self.updated_at_ms,
        })
    }

    fn user(&self) -> Value {
        let email_id = format!("idn_{}", random_body());
        json!({
            "object": "user",
            "id": self.ids.user_id,
            "external_id": null,
            "primary_email_address_id": email_id,
            "primary_phone_number_id": null,
            "username": null,
            "first_name": "Jane",
            "last_name": "Doe",
            "image_url": "https://img.clerk.com/yyyyy",
            "has_image": false,
            "public_metadata": {},
            "private_metadata": null,
            "unsafe_metadata": {},
            "email_addresses": [{
                "object": "email_address",
                "id": email_id,
                "email_address": format!("jane.{}@example.com", &random_body()[..8]),
                "verification": {"status": "verified", "strategy": "email_code"},
                "linked_to": []
            }],
            "phone_numbers": [],
            "web3_wallets": [],
            "external_accounts": [],
            "password_enabled": true,
            "two_factor_enabled": false,
            "created_at": self.updated_at_ms,
            "updated_at": self.updated_at_ms,
        })
    }

    fn membership(&self) -> Value {
        json!({
            "object": "organization_membership",
            "id": self.ids.membership_id,
            "role": self.role,
            "role_name": "Admin",
            "permissions": ["org:sys_memberships:manage"],
            "public_metadata": {},
            "private_metadata": {},
            "organization": self.organization(),
            "public_user_data": {
                "user_id": self.ids.user_id,
                "first_name": "Jane",
                "last_name": "Doe",
                "image_url": "https://img.clerk.com/yyyyy",
                "has_image": false,
                "identifier": "jane.doe@example.com"
            },
            "created_at": self.updated_at_ms,
            "updated_at": self.updated_at_ms,
        })
    }

    /// The whole event envelope, as Clerk sends it.
    pub fn to_json(&self) -> Value {
        let data = match self.event_type.as_str() {
            "organization.deleted" => json!({
                "object": "organization", "id": self.ids.org_id, "deleted": true
            }),
            "user.deleted" => json!({
                "object": "user", "id": self.ids.user_id, "deleted": true
            }),
            t if t.starts_with("organizationMembership.") => self.membership(),
            t if t.starts_with("organization.") => self.organization(),
            _ => self.user(),
        };
        json!({
            "object": "event",
            "type": self.event_type,
            "instance_id": "ins_2g7np7Hrk0SN6kj5EDMLDaKNL0S",
            "timestamp": Utc::now().timestamp_millis(),
            "event_attributes": {"http_request": {"client_ip": "127.0.0.1", "user_agent": "tenant-plane"}},
            "data": data,
        })
    }

    pub fn to_body(&self) -> Vec<u8> {
        serde_json::to_vec(&self.to_json()).expect("a JSON value always serialises")
    }
}
