//! Minting Clerk-shaped session tokens with the test keys of `fixtures/`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

pub const ISSUER: &str = "https://clerk.tenant-plane.test";
pub const AZP: &str = "https://app.tenant-plane.test";
/// The tests' "now".
pub const NOW: i64 = 1_750_000_000;
pub const KID_A: &str = "test-key-a";
pub const KID_B: &str = "test-key-b";
pub const USER: &str = "user_2GIpXOEpVyJw51rkZn9Kmnc6Sxr";
pub const SESSION: &str = "sess_2GbDB4enNdCa5vS1zpC3Xzg9tK9";
pub const ORG: &str = "org_2g7np7Hrk0SN6kj5EDMLDaKNL0S";

pub fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
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

fn private_key(key: &str) -> EncodingKey {
    EncodingKey::from_rsa_pem(fixture(&format!("{key}.key.pem")).as_bytes()).expect("private key")
}

/// A token signed by `key` with `alg` (an RSA one), `typ: JWT`.
pub fn mint(alg: Algorithm, kid: Option<&str>, key: &str, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &private_key(key)).expect("encode")
}

/// A token with an arbitrary header, RS256-signed by `key` all the same.
pub fn mint_with_header(header: &Value, claims: &Value, key: &str) -> String {
    let message = format!("{}.{}", b64_json(header), b64_json(claims));
    let signature =
        jsonwebtoken::crypto::sign(message.as_bytes(), &private_key(key), Algorithm::RS256)
            .expect("sign");
    format!("{message}.{signature}")
}

pub fn b64_json(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).expect("json"))
}

/// Clerk's v1 session claims, active in organization ORG.
pub fn v1_claims() -> Value {
    json!({
        "azp": AZP,
        "exp": NOW + 60,
        "iat": NOW - 10,
        "iss": ISSUER,
        "nbf": NOW - 20,
        "sid": SESSION,
        "sub": USER,
        "org_id": ORG,
        "org_role": "org:admin",
        "org_slug": "acme",
        "org_permissions": ["org:sys_memberships:read", "org:sys_memberships:manage"],
    })
}

/// Clerk's v2 session claims, active in organization ORG.
pub fn v2_claims() -> Value {
    json!({
        "azp": AZP,
        "exp": NOW + 60,
        "fea": "o:dashboard,u:billing,o:teams",
        "fva": [0, -1],
        "iat": NOW - 10,
        "iss": ISSUER,
        "nbf": NOW - 20,
        "o": {"id": ORG, "rol": "admin", "slg": "acme", "per": "manage,read", "fpm": "3,2"},
        "sid": SESSION,
        "sts": "active",
        "sub": USER,
        "v": 2,
    })
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
