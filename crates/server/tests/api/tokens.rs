//! Clerk session tokens minted with a real RSA key, and a local JWKS server
//! that publishes its public half, as Clerk's Frontend API does.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../resolver/tests/fixtures");
pub const KID: &str = "test-key-a";

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!("{FIXTURES}/{name}")).expect("resolver test fixture")
}

pub fn signing_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(fixture("rsa-a.key.pem").as_bytes()).unwrap()
}

pub fn public_pem() -> String {
    fixture("rsa-a.pub.pem")
}

pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Claims of a v2 session token for `org_id`.
pub fn v2_claims(issuer: &str, org_id: &str) -> Value {
    let now = now();
    json!({
        "v": 2, "iss": issuer, "sub": "user_2GIpXOEpVyJw51rkZn9Kmnc6Sxr",
        "sid": "sess_2GbDB4enNdCa5vS1zpC3Xzg9tK9", "azp": "https://app.example.com",
        "iat": now, "nbf": now - 10, "exp": now + 60,
        "fea": "o:projects", "o": {"id": org_id, "rol": "admin", "slg": "acme", "per": "read,manage", "fpm": "3"}
    })
}

/// Claims of a v1 session token for `org_id`.
pub fn v1_claims(issuer: &str, org_id: &str) -> Value {
    let now = now();
    json!({
        "iss": issuer, "sub": "user_2GIpXOEpVyJw51rkZn9Kmnc6Sxr", "sid": "sess_1",
        "azp": "https://app.example.com", "iat": now, "nbf": now - 10, "exp": now + 60,
        "org_id": org_id, "org_role": "org:member", "org_slug": "acme", "org_permissions": []
    })
}

pub fn sign(claims: &Value) -> String {
    sign_with(claims, KID, &signing_key())
}

pub fn sign_with(claims: &Value, kid: &str, key: &EncodingKey) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

/// Serves `{"keys": [rsa-a]}` at /.well-known/jwks.json; returns the base URL
/// (the issuer).
pub async fn spawn_jwks() -> String {
    let jwk: Value = serde_json::from_str(&fixture("rsa-a.jwk.json")).unwrap();
    let body = json!({ "keys": [jwk] }).to_string();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = actix_web::HttpServer::new(move || {
        let body = body.clone();
        actix_web::App::new().route(
            "/.well-known/jwks.json",
            actix_web::web::get().to(move || {
                let body = body.clone();
                async move {
                    actix_web::HttpResponse::Ok()
                        .content_type("application/json")
                        .body(body)
                }
            }),
        )
    })
    .workers(1)
    .listen(listener)
    .unwrap()
    .run();
    tokio::spawn(server);
    format!("http://127.0.0.1:{port}")
}
