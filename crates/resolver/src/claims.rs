//! The active organization of a Clerk session token, in both claim shapes.
//!
//! - v1 (`v` absent or 1): `org_id`, `org_role` (`org:admin`), `org_slug`,
//!   `org_permissions` (`["org:feature:perm", ...]`).
//! - v2 (`v: 2`): `o: {id, rol, slg, per, fpm}` plus the top-level `fea`.
//!   The role is sent without its `org:` prefix and the permissions are packed:
//!   `fea` lists features with a scope (`o:dashboard,u:billing`), `o.per` the
//!   permission names (`manage,read`) and `o.fpm` one decimal bit mask per
//!   organization feature (`3,2`); bit `j` of mask `i` grants
//!   `org:{feature_i}:{per_j}`. This is Clerk's own decoding
//!   (`@clerk/shared` `jwtPayloadParser`).
//!
//! Both shapes give the same [`OrgClaim`]: the role always in `org:<role>`
//! form, the id parsed as a [`ClerkOrgId`]. An id that does not parse makes the
//! token malformed (it is not read as "no organization").

use model::ClerkOrgId;
use serde_json::{Map, Value};

/// The organization a session is active in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgClaim {
    pub id: ClerkOrgId,
    /// Always `org:<role>` (`org:admin`), whatever the token version.
    pub role: Option<String>,
    pub slug: Option<String>,
    /// `org:<feature>:<permission>`, in Clerk's order.
    pub permissions: Vec<String>,
}

/// Why the organization claims could not be read. The reason is a fixed
/// string: nothing from the token is echoed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid organization claim: {0}")]
pub struct OrgClaimError(pub &'static str);

/// Reads the active organization from a token payload: `Ok(None)` when the
/// session has none.
pub fn org_claim(payload: &Map<String, Value>) -> Result<Option<OrgClaim>, OrgClaimError> {
    match claims_version(payload)? {
        2 => v2_org(payload),
        _ => v1_org(payload),
    }
}

fn claims_version(payload: &Map<String, Value>) -> Result<u64, OrgClaimError> {
    match payload.get("v") {
        None | Some(Value::Null) => Ok(1),
        Some(v) => match v.as_u64() {
            Some(n @ (1 | 2)) => Ok(n),
            _ => Err(OrgClaimError("unsupported claims version `v`")),
        },
    }
}

fn v1_org(payload: &Map<String, Value>) -> Result<Option<OrgClaim>, OrgClaimError> {
    let Some(id) = opt_str(payload, "org_id", "org_id is not a string")? else {
        return Ok(None);
    };
    let id = parse_org_id(id)?;
    let role = opt_str(payload, "org_role", "org_role is not a string")?
        .filter(|r| !r.is_empty())
        .map(|r| {
            if r.starts_with("org:") {
                r.to_owned()
            } else {
                format!("org:{r}")
            }
        });
    let slug = opt_str(payload, "org_slug", "org_slug is not a string")?.map(str::to_owned);
    let permissions = match payload.get("org_permissions") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|p| p.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or(OrgClaimError("org_permissions is not a list of strings"))?,
        Some(_) => return Err(OrgClaimError("org_permissions is not a list of strings")),
    };
    Ok(Some(OrgClaim {
        id,
        role,
        slug,
        permissions,
    }))
}

fn v2_org(payload: &Map<String, Value>) -> Result<Option<OrgClaim>, OrgClaimError> {
    let o = match payload.get("o") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(o)) => o,
        Some(_) => return Err(OrgClaimError("o is not an object")),
    };
    let id = opt_str(o, "id", "o.id is not a string")?
        .ok_or(OrgClaimError("o has no id"))
        .and_then(parse_org_id)?;
    let role = opt_str(o, "rol", "o.rol is not a string")?
        .filter(|r| !r.is_empty())
        .map(|r| format!("org:{r}"));
    let slug = opt_str(o, "slg", "o.slg is not a string")?.map(str::to_owned);
    let fea = opt_str(payload, "fea", "fea is not a string")?;
    let per = opt_str(o, "per", "o.per is not a string")?;
    let fpm = opt_str(o, "fpm", "o.fpm is not a string")?;
    Ok(Some(OrgClaim {
        id,
        role,
        slug,
        permissions: v2_org_permissions(fea, per, fpm),
    }))
}

/// Clerk's v2 permission decoding: the organization features of `fea` (scope
/// `o`, `uo` or `ou`, in order), the names of `per`, one decimal mask of `fpm`
/// per organization feature; bit `j` (least significant first) of mask `i`
/// grants `org:{feature_i}:{per_j}`. Missing `per` or `fpm`: no permissions.
/// A mask that is not a decimal number grants nothing (Clerk reads it as NaN).
pub fn v2_org_permissions(fea: Option<&str>, per: Option<&str>, fpm: Option<&str>) -> Vec<String> {
    let (Some(fea), Some(per), Some(fpm)) = (fea, per, fpm) else {
        return Vec::new();
    };
    if fea.is_empty() || per.is_empty() || fpm.is_empty() {
        return Vec::new();
    }
    let features = fea.split(',').filter_map(|entry| {
        let (scope, name) = entry.trim().split_once(':')?;
        matches!(scope, "o" | "uo" | "ou").then_some(name)
    });
    let perms: Vec<&str> = per.split(',').map(str::trim).collect();
    let masks = fpm.split(',').map(|m| m.trim().parse::<u64>().unwrap_or(0));

    let mut out = Vec::new();
    for (feature, mask) in features.zip(masks) {
        for (j, perm) in perms.iter().enumerate().take(64) {
            if mask & (1u64 << j) != 0 {
                out.push(format!("org:{feature}:{perm}"));
            }
        }
    }
    out
}

fn parse_org_id(id: &str) -> Result<ClerkOrgId, OrgClaimError> {
    ClerkOrgId::parse(id)
        .map_err(|_| OrgClaimError("organization id is not a Clerk organization id"))
}

/// A claim that may be absent or null, and must otherwise be a string.
fn opt_str<'a>(
    map: &'a Map<String, Value>,
    key: &str,
    wrong_type: &'static str,
) -> Result<Option<&'a str>, OrgClaimError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(OrgClaimError(wrong_type)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn org(payload: Value) -> Result<Option<OrgClaim>, OrgClaimError> {
        org_claim(payload.as_object().expect("object"))
    }

    fn perms(fea: &str, per: &str, fpm: &str) -> Vec<String> {
        v2_org_permissions(Some(fea), Some(per), Some(fpm))
    }

    // Vectors from @clerk/shared jwtPayloadParser.spec.ts (clerk/javascript
    // packages/shared/src/__tests__), and the docs example.

    #[test]
    fn v2_equals_v1_for_the_same_organization() {
        let v2 = org(json!({
            "v": 2,
            "fea": "o:impersonation",
            "o": {"id": "org_xxxxxxx", "rol": "admin", "slg": "org_test", "per": "read,manage", "fpm": "3"}
        }))
        .unwrap()
        .unwrap();
        let v1 = org(json!({
            "org_id": "org_xxxxxxx",
            "org_role": "org:admin",
            "org_slug": "org_test",
            "org_permissions": ["org:impersonation:read", "org:impersonation:manage"]
        }))
        .unwrap()
        .unwrap();
        assert_eq!(v2, v1);
        assert_eq!(v2.id.as_str(), "org_xxxxxxx");
        assert_eq!(v2.role.as_deref(), Some("org:admin"));
        assert_eq!(v2.slug.as_deref(), Some("org_test"));
        assert_eq!(
            v2.permissions,
            ["org:impersonation:read", "org:impersonation:manage"]
        );
    }

    #[test]
    fn v2_one_mask_per_feature() {
        assert_eq!(
            perms("o:impersonation,o:memberships", "read,manage", "1,3"),
            [
                "org:impersonation:read",
                "org:memberships:read",
                "org:memberships:manage"
            ]
        );
    }

    #[test]
    fn v2_zero_mask_grants_nothing() {
        assert_eq!(
            perms(
                "o:impersonation,o:memberships,o:feature3",
                "read,manage",
                "1,3,0"
            ),
            [
                "org:impersonation:read",
                "org:memberships:read",
                "org:memberships:manage"
            ]
        );
    }

    #[test]
    fn v2_uo_and_ou_scopes_count_as_organization() {
        assert_eq!(
            perms(
                "uo:impersonation,o:memberships,uo:feature3",
                "read,manage",
                "1,3,1"
            ),
            [
                "org:impersonation:read",
                "org:memberships:read",
                "org:memberships:manage",
                "org:feature3:read"
            ]
        );
        assert_eq!(
            perms("ou:billing", "read,manage", "2"),
            ["org:billing:manage"]
        );
    }

    #[test]
    fn v2_user_scope_is_not_organization_and_does_not_take_a_mask() {
        // Masks index the organization features only: `u:billing` is skipped
        // and `memberships` takes the first mask.
        assert_eq!(
            perms("u:billing,o:memberships", "read,manage", "2"),
            ["org:memberships:manage"]
        );
    }

    #[test]
    fn v2_without_per_or_fpm_has_no_permissions() {
        for o in [
            json!({"id": "org_xxxxxxx", "rol": "admin", "slg": "org_test", "fpm": "3"}),
            json!({"id": "org_xxxxxxx", "rol": "admin", "slg": "org_test", "per": "read,manage"}),
            json!({"id": "org_xxxxxxx", "rol": "admin", "slg": "org_test"}),
        ] {
            let claim = org(json!({"v": 2, "fea": "o:impersonation", "o": o}))
                .unwrap()
                .unwrap();
            assert!(claim.permissions.is_empty(), "{claim:?}");
            assert_eq!(claim.role.as_deref(), Some("org:admin"));
        }
        assert!(v2_org_permissions(None, Some("read"), Some("1")).is_empty());
    }

    #[test]
    fn v2_docs_example() {
        // clerk-docs session-tokens.mdx: dashboard {manage, read}, teams {read}.
        assert_eq!(
            perms("o:dashboard,o:teams", "manage,read", "3,2"),
            [
                "org:dashboard:manage",
                "org:dashboard:read",
                "org:teams:read"
            ]
        );
    }

    #[test]
    fn v2_odd_masks_grant_nothing_extra() {
        // Fewer masks than features, a non-number and bits beyond `per`.
        assert_eq!(
            perms("o:a,o:b,o:c", "read,manage", "x,7"),
            ["org:b:read", "org:b:manage"]
        );
    }

    #[test]
    fn no_organization() {
        assert_eq!(org(json!({"sub": "user_1"})).unwrap(), None);
        assert_eq!(org(json!({"v": 2, "sub": "user_1"})).unwrap(), None);
        assert_eq!(org(json!({"v": 2, "o": null})).unwrap(), None);
        // A v1 shape in a v2 token is not read (as Clerk does).
        assert_eq!(org(json!({"v": 2, "org_id": "org_abc"})).unwrap(), None);
    }

    #[test]
    fn v1_role_is_normalised_and_empty_fields_are_none() {
        let claim = org(json!({"org_id": "org_abc", "org_role": "admin"}))
            .unwrap()
            .unwrap();
        assert_eq!(claim.role.as_deref(), Some("org:admin"));
        assert_eq!(claim.slug, None);
        assert!(claim.permissions.is_empty());
        let claim = org(json!({"v": 1, "org_id": "org_abc", "org_role": ""}))
            .unwrap()
            .unwrap();
        assert_eq!(claim.role, None);
    }

    #[test]
    fn invalid_org_ids_make_the_token_malformed() {
        for payload in [
            json!({"org_id": "org_abc'; DROP TABLE x; --"}),
            json!({"org_id": "user_abc"}),
            json!({"org_id": ""}),
            json!({"org_id": 42}),
            json!({"v": 2, "o": {"id": "org_a b"}}),
            json!({"v": 2, "o": {"id": 1}}),
            json!({"v": 2, "o": {"rol": "admin"}}),
            json!({"v": 2, "o": "org_abc"}),
        ] {
            assert!(org(payload.clone()).is_err(), "accepted {payload}");
        }
    }

    #[test]
    fn wrongly_typed_fields_are_malformed() {
        for payload in [
            json!({"org_id": "org_abc", "org_role": 1}),
            json!({"org_id": "org_abc", "org_slug": []}),
            json!({"org_id": "org_abc", "org_permissions": "org:a:read"}),
            json!({"org_id": "org_abc", "org_permissions": ["org:a:read", 1]}),
            json!({"v": 2, "o": {"id": "org_abc", "fpm": 3}}),
            json!({"v": 2, "fea": ["o:a"], "o": {"id": "org_abc"}}),
            json!({"v": 3, "o": {"id": "org_abc"}}),
            json!({"v": "2", "o": {"id": "org_abc"}}),
        ] {
            assert!(org(payload.clone()).is_err(), "accepted {payload}");
        }
    }
}
