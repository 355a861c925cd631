//! Clerk session tokens for tests and benches: claims in Clerk's v1 and v2
//! session-token shapes ([`Session`]), signed with the real RSA test keys of
//! `crates/testkit/fixtures` (`rsa-a`, `rsa-b`, `rsa-c`; see its README),
//! RS256 with a `kid` unless a test asks for something else; and the public
//! halves of those keys as PEM, as JWKs and as a JWK set to serve
//! ([`crate::FakeClerk::serving_jwks`]).
//!
//! Keys are named as their fixture files are: `"rsa-a"` (kid [`KID_A`], the
//! key verifiers trust), `"rsa-b"` (kid [`KID_B`], the key rotated to) and
//! `"rsa-c"` (a key nobody trusts).

use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

/// The issuer of the example session ([`v1_claims`], [`v2_claims`]).
pub const ISSUER: &str = "https://clerk.tenant-plane.test";
/// The authorized party (`azp`) of every [`Session::new`].
pub const AZP: &str = "https://app.tenant-plane.test";
/// The example session's "now", for tests that run on a fixed clock.
pub const NOW: i64 = 1_750_000_000;
/// The `kid` of `rsa-a` in its JWK.
pub const KID_A: &str = "test-key-a";
/// The `kid` of `rsa-b` in its JWK.
pub const KID_B: &str = "test-key-b";
/// The `sub` of every [`Session::new`].
pub const USER: &str = "user_2GIpXOEpVyJw51rkZn9Kmnc6Sxr";
/// The `sid` of every [`Session::new`].
pub const SESSION: &str = "sess_2GbDB4enNdCa5vS1zpC3Xzg9tK9";
/// The organization of the example session.
pub const ORG: &str = "org_2g7np7Hrk0SN6kj5EDMLDaKNL0S";

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures");

/// The text of `crates/testkit/fixtures/<name>`.
pub fn fixture(name: &str) -> String {
    let path = format!("{FIXTURES}/{name}");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// `rsa-a`, `rsa-b` or `rsa-c`: the public key PEM.
pub fn public_pem(key: &str) -> String {
    fixture(&format!("{key}.pub.pem"))
}

/// The public key as a JWK (kid `test-key-a` / `test-key-b`, alg RS256).
pub fn jwk(key: &str) -> String {
    fixture(&format!("{key}.jwk.json"))
}

/// A JWK set (`{"keys": [...]}`) of the given JWK documents.
pub fn jwk_set(keys: &[&str]) -> String {
    format!("{{\"keys\":[{}]}}", keys.join(","))
}

/// The private key, for signing.
pub fn encoding_key(key: &str) -> EncodingKey {
    EncodingKey::from_rsa_pem(fixture(&format!("{key}.key.pem")).as_bytes())
        .unwrap_or_else(|e| panic!("{key}.key.pem is not an RSA private key: {e}"))
}

/// A token signed by `key` with `alg` (an RSA one), `typ: JWT`.
pub fn mint(alg: Algorithm, kid: Option<&str>, key: &str, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &encoding_key(key)).expect("encode a token")
}

/// A token as Clerk signs one: RS256, kid [`KID_A`], by `rsa-a`.
pub fn sign(claims: &Value) -> String {
    mint(Algorithm::RS256, Some(KID_A), "rsa-a", claims)
}

/// A token with an arbitrary header, RS256-signed by `key` all the same.
pub fn mint_with_header(header: &Value, claims: &Value, key: &str) -> String {
    let message = format!("{}.{}", b64_json(header), b64_json(claims));
    let signature =
        jsonwebtoken::crypto::sign(message.as_bytes(), &encoding_key(key), Algorithm::RS256)
            .expect("sign");
    format!("{message}.{signature}")
}

/// base64url (no padding) of the JSON of `value`, as in a token's parts.
pub fn b64_json(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).expect("json"))
}

/// The wall clock, in seconds since the epoch, for tokens verified against
/// the system clock.
pub fn now() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970");
    i64::try_from(since.as_secs()).expect("seconds fit an i64")
}

/// One Clerk session, rendered as the claims of a v1 ([`Session::v1`]) or a
/// v2 ([`Session::v2`]) session token. Fields are public: a test changes
/// what it needs, or edits the rendered claims with [`with`] and
/// [`without`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// `iss`: the Clerk instance (its Frontend API URL).
    pub issuer: String,
    /// `azp`.
    pub authorized_party: String,
    /// `sub`.
    pub user_id: String,
    /// `sid`.
    pub session_id: String,
    /// `iat`.
    pub issued_at: i64,
    /// `nbf`.
    pub not_before: i64,
    /// `exp`.
    pub expires_at: i64,
    /// The active organization.
    pub org: ActiveOrg,
}

/// The session's active organization. v1 and v2 tokens encode permissions
/// differently, so each version's fields are kept as Clerk sends them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveOrg {
    pub id: String,
    pub slug: String,
    /// The role key without `org:` (v2 `o.rol`; v1 `org_role` is `org:<role>`).
    pub role: String,
    /// v1 `org_permissions`.
    pub permissions: Vec<String>,
    /// v2 `fea`: the features, `o:` (organization) or `u:` (user) scoped.
    pub features: String,
    /// v2 `o.per`: the permission names.
    pub feature_permissions: String,
    /// v2 `o.fpm`: per organization feature, a bitmask over `o.per`.
    pub feature_masks: String,
}

impl Session {
    /// A session of [`USER`] in organization `org_id` (role admin, slug
    /// `acme`), issued by `issuer` for [`AZP`]: issued 10 s before `now`,
    /// valid from 20 s before, for 60 s after. Its v2 permissions decode to
    /// `org:dashboard:manage`, `org:dashboard:read` and `org:teams:read`.
    pub fn new(issuer: &str, org_id: &str, now: i64) -> Self {
        Self {
            issuer: issuer.to_owned(),
            authorized_party: AZP.to_owned(),
            user_id: USER.to_owned(),
            session_id: SESSION.to_owned(),
            issued_at: now - 10,
            not_before: now - 20,
            expires_at: now + 60,
            org: ActiveOrg {
                id: org_id.to_owned(),
                slug: "acme".to_owned(),
                role: "admin".to_owned(),
                permissions: vec![
                    "org:sys_memberships:read".to_owned(),
                    "org:sys_memberships:manage".to_owned(),
                ],
                features: "o:dashboard,u:billing,o:teams".to_owned(),
                feature_permissions: "manage,read".to_owned(),
                feature_masks: "3,2".to_owned(),
            },
        }
    }

    /// The claims of a v1 session token.
    pub fn v1(&self) -> Value {
        json!({
            "azp": self.authorized_party,
            "exp": self.expires_at,
            "iat": self.issued_at,
            "iss": self.issuer,
            "nbf": self.not_before,
            "sid": self.session_id,
            "sub": self.user_id,
            "org_id": self.org.id,
            "org_role": format!("org:{}", self.org.role),
            "org_slug": self.org.slug,
            "org_permissions": self.org.permissions,
        })
    }

    /// The claims of a v2 session token (`"v": 2`, an active session).
    pub fn v2(&self) -> Value {
        json!({
            "azp": self.authorized_party,
            "exp": self.expires_at,
            "fea": self.org.features,
            "fva": [0, -1],
            "iat": self.issued_at,
            "iss": self.issuer,
            "nbf": self.not_before,
            "o": {
                "id": self.org.id,
                "rol": self.org.role,
                "slg": self.org.slug,
                "per": self.org.feature_permissions,
                "fpm": self.org.feature_masks,
            },
            "sid": self.session_id,
            "sts": "active",
            "sub": self.user_id,
            "v": 2,
        })
    }
}

/// Clerk's v1 session claims of the example session: [`ORG`] by
/// [`ISSUER`], at [`NOW`].
pub fn v1_claims() -> Value {
    Session::new(ISSUER, ORG, NOW).v1()
}

/// Clerk's v2 session claims of the example session: [`ORG`] by
/// [`ISSUER`], at [`NOW`].
pub fn v2_claims() -> Value {
    Session::new(ISSUER, ORG, NOW).v2()
}

/// `claims` with `name` set to `value`.
pub fn with(mut claims: Value, name: &str, value: Value) -> Value {
    claims
        .as_object_mut()
        .expect("claims object")
        .insert(name.into(), value);
    claims
}

/// `claims` without `name`.
pub fn without(mut claims: Value, name: &str) -> Value {
    claims.as_object_mut().expect("claims object").remove(name);
    claims
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_session_has_both_shapes() {
        assert_eq!(
            v1_claims(),
            json!({
                "azp": AZP, "exp": NOW + 60, "iat": NOW - 10, "iss": ISSUER,
                "nbf": NOW - 20, "sid": SESSION, "sub": USER, "org_id": ORG,
                "org_role": "org:admin", "org_slug": "acme",
                "org_permissions": ["org:sys_memberships:read", "org:sys_memberships:manage"],
            })
        );
        assert_eq!(
            v2_claims(),
            json!({
                "azp": AZP, "exp": NOW + 60, "fea": "o:dashboard,u:billing,o:teams",
                "fva": [0, -1], "iat": NOW - 10, "iss": ISSUER, "nbf": NOW - 20,
                "o": {"id": ORG, "rol": "admin", "slg": "acme", "per": "manage,read", "fpm": "3,2"},
                "sid": SESSION, "sts": "active", "sub": USER, "v": 2,
            })
        );
    }

    #[test]
    fn signed_tokens_carry_the_kid_and_verify_with_the_public_key() {
        let token = sign(&v2_claims());
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.alg, Algorithm::RS256);
        assert_eq!(header.kid.as_deref(), Some(KID_A));
        let key = jsonwebtoken::DecodingKey::from_rsa_pem(public_pem("rsa-a").as_bytes()).unwrap();
        let mut validation = jsonwebtoken::Validation::new(Algorithm::RS256);
        validation.validate_exp = false;
        validation.set_required_spec_claims(&["iss"]);
        let claims = jsonwebtoken::decode::<Value>(&token, &key, &validation).unwrap();
        assert_eq!(claims.claims["o"]["id"], ORG);
        let jwk: Value = serde_json::from_str(&jwk("rsa-a")).unwrap();
        assert_eq!(jwk["kid"], KID_A);
    }
}
