//! Session token verification against real RSA keys (testkit's fixtures),
//! keys served by testkit's fake Clerk or given as PEM, and Clerk's own
//! vectors.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tenant_plane_resolver::clock::FixedClock;
use tenant_plane_resolver::jwks::KeySource;
use tenant_plane_resolver::token::{
    TokenConfigError, TokenError, TokenVerifier, VerifiedSession, VerifierConfig,
};

use testkit::jwt::*;
use testkit::FakeClerk;

const TENANT_CLAIM: &str = "tenant_id";

fn config(keys: KeySource) -> VerifierConfig {
    VerifierConfig {
        issuer: ISSUER.into(),
        keys,
        authorized_parties: vec![AZP.into(), "https://admin.tenant-plane.test".into()],
        clock_skew: Duration::from_secs(5),
        allow_pending_sessions: false,
        tenant_claim: Some(TENANT_CLAIM.into()),
        verdict_cache_entries: tenant_plane_resolver::verdicts::DEFAULT_MAX_ENTRIES,
    }
}

fn jwks(server: &FakeClerk, min_refetch_interval: Duration) -> KeySource {
    KeySource::Jwks {
        url: server.jwks_url(),
        min_refetch_interval,
    }
}

fn pem(key: &str) -> KeySource {
    KeySource::Pem(public_pem(key))
}

fn verifier(config: VerifierConfig) -> TokenVerifier {
    TokenVerifier::new(config, Arc::new(FixedClock::new(NOW))).expect("verifier")
}

fn rs256(claims: &Value) -> String {
    mint(Algorithm::RS256, Some(KID_A), "rsa-a", claims)
}

/// The token with its payload replaced, header and signature kept.
fn with_payload(token: &str, claims: &Value) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    format!("{}.{}.{}", parts[0], b64_json(claims), parts[2])
}

/// The token with one bit of its signature flipped.
fn with_flipped_signature(token: &str) -> String {
    let (message, signature) = token.rsplit_once('.').unwrap();
    let mut bytes = URL_SAFE_NO_PAD.decode(signature).unwrap();
    bytes[100] ^= 0x01;
    format!("{message}.{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// An error message shows nothing of the token.
fn assert_not_echoed(token: &str, error: &TokenError) {
    let shown = format!("{error} {error:?}");
    for part in token.split('.').filter(|p| p.len() >= 8) {
        assert!(!shown.contains(part), "{shown} echoes the token");
    }
}

#[tokio::test]
async fn every_rule_has_its_own_error() {
    let server = FakeClerk::serving_jwks(jwk_set(&[&jwk("rsa-a")])).await;
    let verifier = verifier(config(jwks(&server, Duration::from_secs(60))));
    let v1 = v1_claims;
    let v2 = v2_claims;
    let header = |alg: &str| json!({"alg": alg, "kid": KID_A, "typ": "JWT"});
    let valid = rs256(&v2());

    let hs256_with_public_key = {
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some(KID_A.into());
        let secret = EncodingKey::from_secret(public_pem("rsa-a").as_bytes());
        jsonwebtoken::encode(&h, &v2(), &secret).unwrap()
    };
    let typ_at_jwt = {
        let mut h = Header::new(Algorithm::RS256);
        h.kid = Some(KID_A.into());
        h.typ = Some("at+jwt".into());
        let key = encoding_key("rsa-a");
        jsonwebtoken::encode(&h, &v2(), &key).unwrap()
    };
    let alg_none = format!("{}.{}.", b64_json(&header("none")), b64_json(&v2()));
    let (valid_header, valid_rest) = valid.split_once('.').unwrap();
    let valid_payload = valid_rest.split_once('.').unwrap().0;

    use TokenError::{
        AuthorizedParty, Expired, IssuedInFuture, Issuer, Malformed, NotYetValid, SessionPending,
        Signature, Subject, Type, UnknownKey,
    };
    let cases: Vec<(&str, String, Result<(), TokenError>)> = vec![
        ("valid v1", rs256(&v1()), Ok(())),
        ("valid v2", valid.clone(), Ok(())),
        (
            "valid RS256 without typ",
            mint_with_header(&json!({"alg": "RS256", "kid": KID_A}), &v2(), "rsa-a"),
            Ok(()),
        ),
        // Time, at NOW with 5 s of skew.
        (
            "expired",
            rs256(&with(v2(), "exp", json!(NOW - 6))),
            Err(Expired),
        ),
        (
            "expired exactly skew ago",
            rs256(&with(v2(), "exp", json!(NOW - 5))),
            Err(Expired),
        ),
        (
            "expired within skew",
            rs256(&with(v2(), "exp", json!(NOW - 4))),
            Ok(()),
        ),
        (
            "no exp",
            rs256(&without(v2(), "exp")),
            Err(Malformed("no exp")),
        ),
        (
            "exp not a number",
            rs256(&with(v2(), "exp", json!("soon"))),
            Err(Malformed("exp is not a number")),
        ),
        (
            "issued in the future",
            rs256(&with(v2(), "iat", json!(NOW + 6))),
            Err(IssuedInFuture),
        ),
        (
            "issued within skew",
            rs256(&with(v2(), "iat", json!(NOW + 5))),
            Ok(()),
        ),
        (
            "no iat",
            rs256(&without(v2(), "iat")),
            Err(Malformed("no iat")),
        ),
        (
            "not yet valid beyond skew",
            rs256(&with(v2(), "nbf", json!(NOW + 6))),
            Err(NotYetValid),
        ),
        (
            "not yet valid within skew",
            rs256(&with(v2(), "nbf", json!(NOW + 5))),
            Ok(()),
        ),
        ("no nbf", rs256(&without(v2(), "nbf")), Ok(())),
        // Issuer and authorized party.
        (
            "wrong issuer",
            rs256(&with(v2(), "iss", json!("https://clerk.evil.test"))),
            Err(Issuer),
        ),
        (
            "issuer with a trailing slash",
            rs256(&with(v2(), "iss", json!(format!("{ISSUER}/")))),
            Err(Issuer),
        ),
        ("no issuer", rs256(&without(v2(), "iss")), Err(Issuer)),
        (
            "wrong azp",
            rs256(&with(v2(), "azp", json!("https://evil.test"))),
            Err(AuthorizedParty),
        ),
        (
            "missing azp with parties configured",
            rs256(&without(v2(), "azp")),
            Err(AuthorizedParty),
        ),
        (
            "second authorized party",
            rs256(&with(v2(), "azp", json!("https://admin.tenant-plane.test"))),
            Ok(()),
        ),
        (
            "azp not a string",
            rs256(&with(v2(), "azp", json!([AZP]))),
            Err(Malformed("azp is not a string")),
        ),
        // Subject and session.
        ("missing sub", rs256(&without(v2(), "sub")), Err(Subject)),
        (
            "sub not a string",
            rs256(&with(v2(), "sub", json!(42))),
            Err(Subject),
        ),
        (
            "empty sub",
            rs256(&with(v2(), "sub", json!(""))),
            Err(Subject),
        ),
        (
            "pending session",
            rs256(&with(v2(), "sts", json!("pending"))),
            Err(SessionPending),
        ),
        ("no organization", rs256(&without(v2(), "o")), Ok(())),
        (
            "v1 org id that is not a Clerk id",
            rs256(&with(v1(), "org_id", json!("org_1; DROP TABLE x"))),
            Err(Malformed("organization id is not a Clerk organization id")),
        ),
        (
            "v2 org id that is not a Clerk id",
            rs256(&with(v2(), "o", json!({"id": "user_2g7np7"}))),
            Err(Malformed("organization id is not a Clerk organization id")),
        ),
        (
            "tenant claim not a string",
            rs256(&with(v2(), TENANT_CLAIM, json!(7))),
            Err(Malformed("tenant claim is not a string")),
        ),
        // Keys and signatures.
        (
            "unknown kid",
            mint(Algorithm::RS256, Some("ins_unknown"), "rsa-a", &v2()),
            Err(UnknownKey),
        ),
        (
            "no kid",
            mint(Algorithm::RS256, None, "rsa-a", &v2()),
            Err(UnknownKey),
        ),
        (
            "kid not a string",
            mint_with_header(&json!({"alg": "RS256", "kid": 1}), &v2(), "rsa-a"),
            Err(Malformed("kid is not a string")),
        ),
        (
            "signed by another key",
            mint(Algorithm::RS256, Some(KID_A), "rsa-c", &v2()),
            Err(Signature),
        ),
        (
            "tampered payload",
            with_payload(
                &valid,
                &with(v2(), "o", json!({"id": "org_2someoneelse", "rol": "admin"})),
            ),
            Err(Signature),
        ),
        (
            "tampered signature",
            with_flipped_signature(&valid),
            Err(Signature),
        ),
        (
            "empty signature",
            format!("{valid_header}.{valid_payload}."),
            Err(Signature),
        ),
        (
            "RS512 against a JWK for RS256",
            mint(Algorithm::RS512, Some(KID_A), "rsa-a", &v2()),
            Err(TokenError::Algorithm("RS512".into())),
        ),
        // Algorithms, refused before any key is looked up.
        (
            "alg none",
            alg_none,
            Err(TokenError::Algorithm("none".into())),
        ),
        (
            "HS256 keyed with the public key PEM",
            hs256_with_public_key,
            Err(TokenError::Algorithm("HS256".into())),
        ),
        (
            "ES256 header",
            mint_with_header(&header("ES256"), &v2(), "rsa-a"),
            Err(TokenError::Algorithm("ES256".into())),
        ),
        (
            "PS256 header",
            mint_with_header(&header("PS256"), &v2(), "rsa-a"),
            Err(TokenError::Algorithm("PS256".into())),
        ),
        (
            "EdDSA header",
            mint_with_header(&header("EdDSA"), &v2(), "rsa-a"),
            Err(TokenError::Algorithm("EdDSA".into())),
        ),
        (
            "HS512 header",
            mint_with_header(&header("HS512"), &v2(), "rsa-a"),
            Err(TokenError::Algorithm("HS512".into())),
        ),
        (
            "lower-case rs256",
            mint_with_header(&header("rs256"), &v2(), "rsa-a"),
            Err(TokenError::Algorithm("rs256".into())),
        ),
        (
            "no alg",
            mint_with_header(&json!({"kid": KID_A}), &v2(), "rsa-a"),
            Err(TokenError::Algorithm("<missing>".into())),
        ),
        (
            "alg not a string",
            mint_with_header(&json!({"alg": ["RS256"]}), &v2(), "rsa-a"),
            Err(TokenError::Algorithm("<invalid>".into())),
        ),
        // Critical extensions: none is understood, so any `crit` refuses.
        (
            "crit header",
            mint_with_header(
                &json!({"alg": "RS256", "kid": KID_A, "typ": "JWT", "crit": ["exp"], "exp": 1}),
                &v2(),
                "rsa-a",
            ),
            Err(TokenError::CriticalHeader),
        ),
        (
            "empty crit header",
            mint_with_header(
                &json!({"alg": "RS256", "kid": KID_A, "crit": []}),
                &v2(),
                "rsa-a",
            ),
            Err(TokenError::CriticalHeader),
        ),
        // Type.
        ("typ at+jwt", typ_at_jwt, Err(Type)),
        (
            "typ not a string",
            mint_with_header(
                &json!({"alg": "RS256", "kid": KID_A, "typ": 1}),
                &v2(),
                "rsa-a",
            ),
            Err(Type),
        ),
        // Form.
        (
            "malformed base64",
            format!("{valid_header}!.{valid_payload}.c2ln"),
            Err(Malformed("header is not base64url")),
        ),
        (
            "malformed base64 payload",
            format!("{valid_header}.{valid_payload}*.c2ln"),
            Err(Malformed("payload is not base64url")),
        ),
        (
            "malformed JSON",
            format!(
                "{valid_header}.{}.c2ln",
                URL_SAFE_NO_PAD.encode(b"{\"sub\":")
            ),
            Err(Malformed("payload is not a JSON object")),
        ),
        (
            "JSON that is not an object",
            format!(
                "{}.{valid_payload}.c2ln",
                URL_SAFE_NO_PAD.encode(b"\"RS256\"")
            ),
            Err(Malformed("header is not a JSON object")),
        ),
        (
            "two parts",
            format!("{valid_header}.{valid_payload}"),
            Err(Malformed("expected three dot-separated parts")),
        ),
        (
            "four parts",
            format!("{valid}.c2ln"),
            Err(Malformed("expected three dot-separated parts")),
        ),
        ("empty", String::new(), Err(Malformed("empty token"))),
        (
            "bearer prefix left on",
            format!("Bearer {valid}"),
            Err(Malformed("header is not base64url")),
        ),
    ];

    let mut failures = Vec::new();
    for (name, token, expected) in &cases {
        let got = verifier.verify(token).await;
        if let Err(e) = &got {
            assert_not_echoed(token, e);
        }
        let got = got.map(|_| ());
        if &got != expected {
            failures.push(format!("{name}: expected {expected:?}, got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn v1_session_is_read() {
    let verifier = verifier(config(pem("rsa-a")));
    let session = verifier.verify(&rs256(&v1_claims())).await.unwrap();
    let org = session.org.clone().expect("organization");
    assert_eq!(
        *session,
        VerifiedSession {
            user_id: USER.into(),
            session_id: Some(SESSION.into()),
            org: Some(org.clone()),
            tenant_claim: None,
            issued_at: NOW - 10,
            not_before: Some(NOW - 20),
            expires_at: NOW + 60,
            authorized_party: Some(AZP.into()),
            rendered: Default::default(),
        }
    );
    assert_eq!(org.id.as_str(), ORG);
    assert_eq!(org.role.as_deref(), Some("org:admin"));
    assert_eq!(org.slug.as_deref(), Some("acme"));
    assert_eq!(
        org.permissions,
        ["org:sys_memberships:read", "org:sys_memberships:manage"]
    );
}

#[tokio::test]
async fn v2_session_is_read() {
    let verifier = verifier(config(pem("rsa-a")));
    let session = verifier.verify(&rs256(&v2_claims())).await.unwrap();
    assert_eq!(session.user_id, USER);
    assert_eq!(session.session_id.as_deref(), Some(SESSION));
    let org = session.org.clone().expect("organization");
    assert_eq!(org.id.as_str(), ORG);
    assert_eq!(org.role.as_deref(), Some("org:admin"));
    assert_eq!(org.slug.as_deref(), Some("acme"));
    // fea "o:dashboard,u:billing,o:teams", per "manage,read", fpm "3,2".
    assert_eq!(
        org.permissions,
        [
            "org:dashboard:manage",
            "org:dashboard:read",
            "org:teams:read"
        ]
    );
}

#[tokio::test]
async fn v1_and_v2_of_the_same_session_agree() {
    let verifier = verifier(config(pem("rsa-a")));
    let v1 = json!({
        "azp": AZP, "exp": NOW + 60, "iat": NOW, "iss": ISSUER, "sub": USER,
        "org_id": "org_xxxxxxx", "org_role": "org:admin", "org_slug": "org_test",
        "org_permissions": ["org:impersonation:read", "org:impersonation:manage"],
    });
    let v2 = json!({
        "azp": AZP, "exp": NOW + 60, "iat": NOW, "iss": ISSUER, "sub": USER, "v": 2,
        "fea": "o:impersonation",
        "o": {"id": "org_xxxxxxx", "rol": "admin", "slg": "org_test", "per": "read,manage", "fpm": "3"},
    });
    assert_eq!(
        verifier.verify(&rs256(&v1)).await.unwrap(),
        verifier.verify(&rs256(&v2)).await.unwrap()
    );
}

#[tokio::test]
async fn session_without_organization_verifies() {
    let verifier = verifier(config(pem("rsa-a")));
    let claims = ["org_id", "org_role", "org_slug", "org_permissions"]
        .into_iter()
        .fold(v1_claims(), without);
    let session = verifier.verify(&rs256(&claims)).await.unwrap();
    assert_eq!(session.org, None);
    assert_eq!(session.user_id, USER);
}

#[tokio::test]
async fn custom_tenant_claim_is_returned() {
    let tenant = "0190e0b4-6e3c-7d6a-9a38-3c1b8f7e2a11";
    let claims = with(v2_claims(), TENANT_CLAIM, json!(tenant));
    let session = verifier(config(pem("rsa-a")))
        .verify(&rs256(&claims))
        .await
        .unwrap();
    assert_eq!(session.tenant_claim.as_deref(), Some(tenant));

    // Not configured: not read.
    let mut plain = config(pem("rsa-a"));
    plain.tenant_claim = None;
    let session = verifier(plain).verify(&rs256(&claims)).await.unwrap();
    assert_eq!(session.tenant_claim, None);
}

#[tokio::test]
async fn azp_is_optional_without_authorized_parties() {
    let mut open = config(pem("rsa-a"));
    open.authorized_parties.clear();
    let verifier = verifier(open);
    let session = verifier
        .verify(&rs256(&without(v2_claims(), "azp")))
        .await
        .unwrap();
    assert_eq!(session.authorized_party, None);
    let session = verifier
        .verify(&rs256(&with(v2_claims(), "azp", json!("https://any.test"))))
        .await
        .unwrap();
    assert_eq!(
        session.authorized_party.as_deref(),
        Some("https://any.test")
    );
}

#[tokio::test]
async fn pending_sessions_only_when_allowed() {
    let token = rs256(&with(v2_claims(), "sts", json!("pending")));
    assert_eq!(
        verifier(config(pem("rsa-a"))).verify(&token).await,
        Err(TokenError::SessionPending)
    );
    let mut allowing = config(pem("rsa-a"));
    allowing.allow_pending_sessions = true;
    assert!(verifier(allowing).verify(&token).await.is_ok());
}

#[tokio::test]
async fn time_comes_from_the_injected_clock() {
    let clock = Arc::new(FixedClock::new(NOW));
    let verifier = TokenVerifier::new(config(pem("rsa-a")), clock.clone()).unwrap();
    let token = rs256(&v2_claims()); // nbf NOW-20, iat NOW-10, exp NOW+60
    assert!(verifier.verify(&token).await.is_ok());
    clock.set(NOW + 65);
    assert_eq!(verifier.verify(&token).await, Err(TokenError::Expired));
    clock.set(NOW - 26);
    assert_eq!(verifier.verify(&token).await, Err(TokenError::NotYetValid));
    clock.set(NOW - 16);
    assert_eq!(
        verifier.verify(&token).await,
        Err(TokenError::IssuedInFuture)
    );
}

#[tokio::test]
async fn pem_key_verifies_whatever_the_kid_and_any_rsa_algorithm() {
    let verifier = verifier(config(pem("rsa-a")));
    for token in [
        mint(Algorithm::RS256, None, "rsa-a", &v2_claims()),
        mint(
            Algorithm::RS256,
            Some("ins_whatever"),
            "rsa-a",
            &v2_claims(),
        ),
        mint(Algorithm::RS384, Some(KID_A), "rsa-a", &v2_claims()),
        mint(Algorithm::RS512, Some(KID_A), "rsa-a", &v2_claims()),
    ] {
        assert!(verifier.verify(&token).await.is_ok());
    }
    for (token, expected) in [
        (
            mint(Algorithm::RS256, Some(KID_A), "rsa-c", &v2_claims()),
            TokenError::Signature,
        ),
        (
            mint(Algorithm::RS256, Some(KID_A), "rsa-b", &v2_claims()),
            TokenError::Signature,
        ),
        (
            // The classic key confusion: HMAC keyed with the very PEM the
            // verifier holds.
            jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &v2_claims(),
                &EncodingKey::from_secret(public_pem("rsa-a").as_bytes()),
            )
            .unwrap(),
            TokenError::Algorithm("HS256".into()),
        ),
        (
            // Sign RS256 over one algorithm, claim another.
            with_payload(
                &mint_with_header(&json!({"alg": "RS512"}), &v2_claims(), "rsa-a"),
                &v2_claims(),
            ),
            TokenError::Signature,
        ),
    ] {
        assert_eq!(verifier.verify(&token).await, Err(expected));
    }
}

#[tokio::test]
async fn bad_configurations_are_refused() {
    let clock = || Arc::new(FixedClock::new(NOW));
    let refused = |config: VerifierConfig| TokenVerifier::new(config, clock()).unwrap_err();

    let private = config(KeySource::Pem(fixture("rsa-a.key.pem")));
    assert!(matches!(refused(private), TokenConfigError::Keys(_)));
    assert!(matches!(
        refused(config(KeySource::Pem("not a pem".into()))),
        TokenConfigError::Keys(_)
    ));
    let plain_http = config(KeySource::Jwks {
        url: "http://clerk.example.com/.well-known/jwks.json".into(),
        min_refetch_interval: Duration::from_secs(30),
    });
    assert!(matches!(refused(plain_http), TokenConfigError::Keys(_)));
    let mut no_issuer = config(pem("rsa-a"));
    no_issuer.issuer.clear();
    assert_eq!(refused(no_issuer), TokenConfigError::EmptyIssuer);
    let mut empty_party = config(pem("rsa-a"));
    empty_party.authorized_parties.push(String::new());
    assert_eq!(refused(empty_party), TokenConfigError::EmptyAuthorizedParty);
    let mut empty_claim = config(pem("rsa-a"));
    empty_claim.tenant_claim = Some(String::new());
    assert_eq!(refused(empty_claim), TokenConfigError::EmptyTenantClaim);
}

#[tokio::test]
async fn keys_never_print() {
    let public = public_pem("rsa-a");
    let body = public.lines().nth(1).unwrap();
    let config = config(pem("rsa-a"));
    let shown = format!("{config:?}");
    assert!(!shown.contains(body), "{shown}");
    let verifier = TokenVerifier::new(config, Arc::new(FixedClock::new(NOW))).unwrap();
    let shown = format!("{verifier:?}");
    assert!(!shown.contains(body), "{shown}");
    assert!(shown.contains("redacted"), "{shown}");

    let server = FakeClerk::serving_jwks(jwk_set(&[&jwk("rsa-a")])).await;
    let verifier = self::verifier(self::config(jwks(&server, Duration::from_secs(60))));
    verifier.verify(&rs256(&v2_claims())).await.unwrap();
    let n: Value = serde_json::from_str(&jwk("rsa-a")).unwrap();
    let n = &n["n"].as_str().unwrap()[..40];
    let shown = format!("{verifier:?}");
    assert!(!shown.contains(n), "{shown}");
    assert!(shown.contains("cached_keys: 1"), "{shown}");
}

// ---- Clerk's own vectors (@clerk/backend fixtures, verifyJwt.test.ts) ----

mod clerk {
    pub const ISSUER: &str = "https://clerk.inspired.puma-74.lcl.dev";
    pub const AZP: &str = "https://accounts.inspired.puma-74.lcl.dev";
    pub const IAT: i64 = 1_666_648_250;
    pub const JWK: &str = r#"{"use": "sig", "kty": "RSA", "kid": "ins_2GIoQhbUpy0hX7B2cVkuTMinXoD", "alg": "RS256", "n": "qYy3MY8fOneEyzNDu9lp6iGXKkNUF-u_dUnrlkadZYyB35efzKFJEr9fftmWv5PUj1uRHTQ3bh6X1cceOYsIjy008dHWZJsKhGOxgdTjeK91rjaklxt7tyFXEiKHIOr1LSgKzopClOfCIjxK_oPUOf38pVh7WnekcSBQmU5fqA-EzKMi6k9VwvbzqKlZM4XQsiFyn28d9VubJWjTU8nNot0n1NE-9k6TxM8nglM4RwkBH4Ni4B0LhKKOOV-AG8tBNiZVil415dpBldmJ_j0wk7Ad4VFi9en3Z17oCKr-K-zuT7vKMKSb1548dk0vnmi0vj2QGXSo-61wM5yQWpk6sQ", "e": "AQAB"}"#;
    pub const JWT: &str = "eyJhbGciOiJSUzI1NiIsImtpZCI6Imluc18yR0lvUWhiVXB5MGhYN0IyY1ZrdVRNaW5Yb0QiLCJ0eXAiOiJKV1QifQ.eyJhenAiOiJodHRwczovL2FjY291bnRzLmluc3BpcmVkLnB1bWEtNzQubGNsLmRldiIsImV4cCI6MTY2NjY0ODMxMCwiaWF0IjoxNjY2NjQ4MjUwLCJpc3MiOiJodHRwczovL2NsZXJrLmluc3BpcmVkLnB1bWEtNzQubGNsLmRldiIsIm5iZiI6MTY2NjY0ODI0MCwic2lkIjoic2Vzc18yR2JEQjRlbk5kQ2E1dlMxenBDM1h6Zzl0SzkiLCJzdWIiOiJ1c2VyXzJHSXBYT0VwVnlKdzUxcmtabjlLbW5jNlN4ciJ9.j3rB92k32WqbQDkFB093H4GoQsBVLH4HLGF6ObcwUaVGiHC8SEu6T31FuPf257SL8A5sSGtWWM1fqhQpdLohgZb_hbJswGBuYI-Clxl9BtpIRHbWFZkLBIj8yS9W9aVtD3fWBbF6PHx7BY1udio-rbGWg1YAOZNtVcxF02p-MvX-8XIK92Vwu3Un5zyfCoVIg__qo3Xntzw3tznsZ4XDe212c6kVz1R_L1d5DKjeWXpjUPAS_zFeZSIJEQLf4JNr4JCY38tfdnc3ajfDA3p36saf1XwmTdWXQKCXi75c2TJAXROs3Pgqr5Kw_5clygoFuxN5OEMhFWFSnvIBdi3M6w";
    pub const EXPIRED_JWT: &str = "eyJhbGciOiJSUzI1NiIsImtpZCI6Imluc18yR0lvUWhiVXB5MGhYN0IyY1ZrdVRNaW5Yb0QiLCJ0eXAiOiJKV1QifQ.eyJhenAiOiJodHRwczovL2FjY291bnRzLmluc3BpcmVkLnB1bWEtNzQubGNsLmRldiIsImV4cCI6MTY2NjY0ODIwMCwiaWF0IjoxNjY2NjQ3MjUwLCJpc3MiOiJodHRwczovL2NsZXJrLmluc3BpcmVkLnB1bWEtNzQubGNsLmRldiIsIm5iZiI6MTY2NjY0ODI0MCwic2lkIjoic2Vzc18yR2JEQjRlbk5kQ2E1dlMxenBDM1h6Zzl0SzkiLCJzdWIiOiJ1c2VyXzJHSXBYT0VwVnlKdzUxcmtabjlLbW5jNlN4ciJ9.jLImjg2vGwOJDkK9gtIeJnEJWVOgoCMeC46OFtfzJ1d8OT0KVvwRppC60QIMfHKoOwLTLYlq8SccrkARwlJ_jOvMAYMGZT-R4qHoEfGmet1cSTC67zaafq5gpf9759x1kNMyckry_PJNSx-9hTFbBMWhY7XVLVlrauppqHXOQr1-BC7u-0InzKjCQTCJj-81Yt8xRKweLbO689oYSRAFYK5LNH8BYoLZFWuWLO-6nxUJu0_XAq9xpZPqZOqj3LxFS4hHVGGmTqnPgR8vBetLXxSLAOBsEyIkeQkOBA03YA6enTNIppmy0XTLgAYmUO_JWOGjjjDQoEojuXtuLRdQHQ";
    pub const INVALID_SIGNATURE_JWT: &str = "eyJhbGciOiJSUzI1NiIsImtpZCI6Imluc18yR0lvUWhiVXB5MGhYN0IyY1ZrdVRNaW5Yb0QiLCJ0eXAiOiJKV1QifQ.eyJhenAiOiJodHRwczovL2FjY291bnRzLnRhbXBlcmVkLWRvbWFpbi5kZXYiLCJleHAiOjE2NjY2NDgzMTAsImlhdCI6MTY2NjY0ODI1MCwiaXNzIjoiaHR0cHM6Ly9jbGVyay5pbnNwaXJlZC5wdW1hLTc0LmxjbC5kZXYiLCJuYmYiOjE2NjY2NDgyNDAsInNpZCI6InNlc3NfMkdiREI0ZW5OZENhNXZTMXpwQzNYemc5dEs5Iiwic3ViIjoidXNlcl8yR0lwWE9FcFZ5Snc1MXJrWm45S21uYzZTeHIifQ.n1Usc-DLDftqA0Xb-_2w8IGs4yjCmwc5RngwbSRvwevuZOIuRoeHmE2sgCdEvjfJEa7ewL6EVGVcM557TWPW--g_J1XQPwBy8tXfz7-S73CEuyRFiR97L2AHRdvRtvGtwR-o6l8aHaFxtlmfWbQXfg4kFJz2UGe9afmh3U9-f_4JOZ5fa3mI98UMy1-bo20vjXeWQ9aGrqaxHQxjnzzC-1Kpi5LdPvhQ16H0dPB8MHRTSM5TAuLKTpPV7wqixmbtcc2-0k6b9FKYZNqRVTaIyV-lifZloBvdzlfOF8nW1VVH_fx-iW5Q3hovHFcJIULHEC1kcAYTubbxzpgeVQepGg";
}

#[tokio::test]
async fn clerks_vectors() {
    let server = FakeClerk::serving_jwks(jwk_set(&[clerk::JWK])).await;
    let config = VerifierConfig {
        authorized_parties: vec![clerk::AZP.into()],
        tenant_claim: None,
        ..VerifierConfig::new(clerk::ISSUER, jwks(&server, Duration::from_secs(60)))
    };
    let verifier = TokenVerifier::new(config, Arc::new(FixedClock::new(clerk::IAT))).unwrap();

    let session = verifier.verify(clerk::JWT).await.unwrap();
    assert_eq!(
        *session,
        VerifiedSession {
            user_id: "user_2GIpXOEpVyJw51rkZn9Kmnc6Sxr".into(),
            session_id: Some("sess_2GbDB4enNdCa5vS1zpC3Xzg9tK9".into()),
            org: None,
            tenant_claim: None,
            issued_at: 1_666_648_250,
            not_before: Some(1_666_648_240),
            expires_at: 1_666_648_310,
            authorized_party: Some(clerk::AZP.into()),
            rendered: Default::default(),
        }
    );
    assert_eq!(
        verifier.verify(clerk::EXPIRED_JWT).await,
        Err(TokenError::Expired)
    );
    assert_eq!(
        verifier.verify(clerk::INVALID_SIGNATURE_JWT).await,
        Err(TokenError::Signature)
    );
    assert_eq!(server.jwks_requests(), 1);
}

// ---- Remembered verdicts ----

/// The token with one character of its signature changed (in the middle,
/// where every base64url character carries six bits of the signature).
fn tamper_signature(token: &str) -> String {
    let at = token.rfind('.').unwrap() + 20;
    let mut bytes = token.as_bytes().to_vec();
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    String::from_utf8(bytes).unwrap()
}

#[tokio::test]
async fn a_remembered_token_is_refused_from_exp_and_before_nbf_by_the_clock_of_each_use() {
    let clock = Arc::new(FixedClock::new(NOW));
    let verifier = TokenVerifier::new(config(pem("rsa-a")), clock.clone()).unwrap();
    let token = rs256(&v2_claims());
    verifier.verify(&token).await.unwrap();
    verifier.verify(&token).await.unwrap();
    let stats = verifier.verdict_stats();
    assert_eq!((stats.misses, stats.hits, stats.entries), (1, 1, 1));

    // Back before nbf (minus the 5 s of skew): refused, though remembered.
    let nbf = v2_claims()["nbf"].as_i64().unwrap();
    clock.set(nbf - 6);
    assert_eq!(verifier.verify(&token).await, Err(TokenError::NotYetValid));
    clock.set(NOW);
    verifier.verify(&token).await.unwrap();

    // At exp (plus skew) it is refused, and forgotten.
    let exp = v2_claims()["exp"].as_i64().unwrap();
    clock.set(exp + 5);
    assert_eq!(verifier.verify(&token).await, Err(TokenError::Expired));
    assert_eq!(verifier.verdict_stats().entries, 0);
}

#[tokio::test]
async fn with_no_room_for_verdicts_every_token_is_verified_in_full() {
    let config = VerifierConfig {
        verdict_cache_entries: 0,
        ..config(pem("rsa-a"))
    };
    let verifier = verifier(config);
    let token = rs256(&v2_claims());
    for _ in 0..3 {
        verifier.verify(&token).await.unwrap();
    }
    assert_eq!(verifier.verdict_stats().hits, 0);
    // A tampered copy is still refused: nothing is taken on trust.
    assert_eq!(
        verifier.verify(&tamper_signature(&token)).await,
        Err(TokenError::Signature)
    );
}

#[tokio::test]
async fn a_tampered_copy_of_a_remembered_token_is_verified_and_refused() {
    let verifier = verifier(config(pem("rsa-a")));
    let token = rs256(&v2_claims());
    verifier.verify(&token).await.unwrap();
    assert_eq!(
        verifier.verify(&tamper_signature(&token)).await,
        Err(TokenError::Signature)
    );
    assert_eq!(verifier.verdict_stats().entries, 1, "nor is it remembered");
}

// ---- JWKS: caching, rotation, rate limit, failures ----

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jwks_is_fetched_lazily_once_and_concurrent_fetches_coalesce() {
    let server = FakeClerk::serving_jwks(jwk_set(&[&jwk("rsa-a")])).await;
    let verifier = verifier(config(jwks(&server, Duration::from_secs(60))));
    assert_eq!(server.jwks_requests(), 0, "fetched before first use");

    let token = rs256(&v2_claims());
    let results = futures::future::join_all((0..50).map(|_| verifier.verify(&token))).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(server.jwks_requests(), 1);

    for _ in 0..10 {
        verifier.verify(&token).await.unwrap();
    }
    assert_eq!(server.jwks_requests(), 1, "the cache was not used");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotated_key_verifies_without_restarting() {
    let server = FakeClerk::serving_jwks(jwk_set(&[&jwk("rsa-a")])).await;
    let verifier = verifier(config(jwks(&server, Duration::ZERO)));
    let token_a = rs256(&v2_claims());
    let token_b = mint(Algorithm::RS256, Some(KID_B), "rsa-b", &v2_claims());

    verifier.verify(&token_a).await.unwrap();
    assert_eq!(verifier.verify(&token_b).await, Err(TokenError::UnknownKey));
    assert_eq!(server.jwks_requests(), 2);

    // Clerk publishes the new key next to the old one.
    server.serve_jwks(jwk_set(&[&jwk("rsa-a"), &jwk("rsa-b")]));
    let results = futures::future::join_all((0..50).map(|_| verifier.verify(&token_b))).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(
        server.jwks_requests(),
        3,
        "concurrent refetches did not coalesce"
    );
    verifier.verify(&token_a).await.unwrap();
    assert_eq!(server.jwks_requests(), 3);

    // token_a's verdict is remembered...
    let hits = verifier.verdict_stats().hits;
    verifier.verify(&token_a).await.unwrap();
    assert_eq!(verifier.verdict_stats().hits, hits + 1);

    // ... until its key is withdrawn: once the JWKS is refetched, it no
    // longer verifies, remembered or not.
    server.serve_jwks(jwk_set(&[&jwk("rsa-b")]));
    let unknown = mint(Algorithm::RS256, Some("ins_other"), "rsa-a", &v2_claims());
    assert_eq!(verifier.verify(&unknown).await, Err(TokenError::UnknownKey));
    assert_eq!(verifier.verify(&token_a).await, Err(TokenError::UnknownKey));
    verifier.verify(&token_b).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unknown_kids_refetch_at_most_once_per_interval() {
    let interval = Duration::from_millis(200);
    let server = FakeClerk::serving_jwks(jwk_set(&[&jwk("rsa-a")])).await;
    let verifier = verifier(config(jwks(&server, interval)));
    verifier.verify(&rs256(&v2_claims())).await.unwrap();
    assert_eq!(server.jwks_requests(), 1);

    let random_kid_tokens = |n: usize| -> Vec<String> {
        (0..n)
            .map(|_| {
                let kid = format!("ins_{}", uuid::Uuid::new_v4().simple());
                mint(Algorithm::RS256, Some(&kid), "rsa-a", &v2_claims())
            })
            .collect()
    };

    // Each burst: at most one fetch per interval it spans (in practice a
    // burst takes a few milliseconds, so at most one).
    for round in 0..2 {
        let before = server.jwks_requests();
        let tokens = random_kid_tokens(100);
        let started = Instant::now();
        let results = futures::future::join_all(tokens.iter().map(|t| verifier.verify(t))).await;
        let spans = 1 + (started.elapsed().as_millis() / interval.as_millis()) as usize;
        assert!(
            results.iter().all(|r| r == &Err(TokenError::UnknownKey)),
            "{results:?}"
        );
        let extra = server.jwks_requests() - before;
        assert!(
            extra <= spans,
            "round {round}: {extra} fetches for 100 unknown kids"
        );

        // After the interval a new fetch is allowed again.
        tokio::time::sleep(interval + Duration::from_millis(50)).await;
        let before = server.jwks_requests();
        let token = &random_kid_tokens(1)[0];
        assert_eq!(verifier.verify(token).await, Err(TokenError::UnknownKey));
        assert_eq!(
            server.jwks_requests(),
            before + 1,
            "round {round}: no refetch after the interval"
        );
        tokio::time::sleep(interval + Duration::from_millis(50)).await;
    }
    // Known keys never wait for the limiter.
    verifier.verify(&rs256(&v2_claims())).await.unwrap();
}

#[tokio::test]
async fn jwks_failures_are_keys_unavailable_and_rate_limited() {
    let server = FakeClerk::serving_jwks(jwk_set(&[&jwk("rsa-a")])).await;
    server.fail_jwks_with(500);
    let verifier = verifier(config(jwks(&server, Duration::from_secs(60))));
    let token = rs256(&v2_claims());

    let err = verifier.verify(&token).await.unwrap_err();
    assert_eq!(err.code(), "token_keys_unavailable");
    assert!(matches!(&err, TokenError::KeysUnavailable { detail, .. } if detail.contains("500")));
    let err = verifier.verify(&token).await.unwrap_err();
    assert_eq!(err.code(), "token_keys_unavailable");
    assert_eq!(server.jwks_requests(), 1, "a failing JWKS was hammered");
}

#[tokio::test]
async fn jwks_recovers_after_the_interval() {
    let interval = Duration::from_millis(200);
    let server = FakeClerk::serving_jwks("not json").await;
    let verifier = verifier(config(jwks(&server, interval)));
    let token = rs256(&v2_claims());
    let err = verifier.verify(&token).await.unwrap_err();
    assert_eq!(err.code(), "token_keys_unavailable");

    server.serve_jwks(jwk_set(&[&jwk("rsa-a")]));
    tokio::time::sleep(interval + Duration::from_millis(50)).await;
    verifier.verify(&token).await.unwrap();
    assert_eq!(server.jwks_requests(), 2);
}

#[tokio::test]
async fn cached_keys_keep_working_while_the_jwks_is_down() {
    let server = FakeClerk::serving_jwks(jwk_set(&[&jwk("rsa-a")])).await;
    let verifier = verifier(config(jwks(&server, Duration::ZERO)));
    let token_a = rs256(&v2_claims());
    verifier.verify(&token_a).await.unwrap();

    server.fail_jwks_with(503);
    let token_b = mint(Algorithm::RS256, Some(KID_B), "rsa-b", &v2_claims());
    let err = verifier.verify(&token_b).await.unwrap_err();
    assert_eq!(err.code(), "token_keys_unavailable");
    verifier.verify(&token_a).await.unwrap();
}

#[tokio::test]
async fn unreachable_jwks_is_keys_unavailable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://{}/.well-known/jwks.json",
        listener.local_addr().unwrap()
    );
    drop(listener);
    let verifier = verifier(config(KeySource::Jwks {
        url,
        min_refetch_interval: Duration::from_secs(60),
    }));
    let err = verifier.verify(&rs256(&v2_claims())).await.unwrap_err();
    assert_eq!(err.code(), "token_keys_unavailable");
    // The message a client sees says nothing of our network.
    assert!(!err.to_string().contains("127.0.0.1"), "{err}");
}

#[tokio::test]
async fn jwks_without_usable_keys_knows_no_kid() {
    let body = r#"{"keys":[
        {"kty":"EC","kid":"test-key-a","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
        {"kty":"oct","kid":"test-key-a","k":"c2VjcmV0"}
    ]}"#;
    let server = FakeClerk::serving_jwks(body).await;
    let verifier = verifier(config(jwks(&server, Duration::from_secs(60))));
    assert_eq!(
        verifier.verify(&rs256(&v2_claims())).await,
        Err(TokenError::UnknownKey)
    );
    // An "enc" RSA key is not a signing key.
    let mut enc: Value = serde_json::from_str(&jwk("rsa-a")).unwrap();
    enc["use"] = json!("enc");
    let server = FakeClerk::serving_jwks(jwk_set(&[&enc.to_string()])).await;
    let verifier = self::verifier(config(jwks(&server, Duration::from_secs(60))));
    assert_eq!(
        verifier.verify(&rs256(&v2_claims())).await,
        Err(TokenError::UnknownKey)
    );
}

#[tokio::test]
async fn a_jwks_failing_at_start_is_retried_after_a_short_backoff_not_the_interval() {
    // A minute between refetches: a cold start that waited for it would
    // refuse every token for that minute.
    let server = FakeClerk::serving_jwks(jwk_set(&[&jwk("rsa-a")])).await;
    server.fail_jwks_with(500);
    let verifier = verifier(config(jwks(&server, Duration::from_secs(60))));
    let token = rs256(&v2_claims());

    let TokenError::KeysUnavailable { retry_after, .. } =
        verifier.verify(&token).await.unwrap_err()
    else {
        panic!("expected keys unavailable")
    };
    assert!(retry_after <= Duration::from_millis(250), "{retry_after:?}");
    // Until then, nothing is fetched; the answer says how long is left.
    let TokenError::KeysUnavailable { retry_after, .. } =
        verifier.verify(&token).await.unwrap_err()
    else {
        panic!("expected keys unavailable")
    };
    assert_eq!(server.jwks_requests(), 1);

    server.serve_jwks(jwk_set(&[&jwk("rsa-a")]));
    tokio::time::sleep(retry_after + Duration::from_millis(20)).await;
    verifier
        .verify(&token)
        .await
        .expect("verified after the backoff");
    assert_eq!(server.jwks_requests(), 2);
}

#[tokio::test]
async fn the_backoff_doubles_with_each_failure_up_to_the_interval() {
    let interval = Duration::from_secs(2);
    let server = FakeClerk::serving_jwks("").await;
    server.fail_jwks_with(503);
    let verifier = verifier(config(jwks(&server, interval)));
    let token = rs256(&v2_claims());
    let mut waits = Vec::new();
    for _ in 0..5 {
        let TokenError::KeysUnavailable { retry_after, .. } =
            verifier.verify(&token).await.unwrap_err()
        else {
            panic!("expected keys unavailable")
        };
        waits.push(retry_after);
        tokio::time::sleep(retry_after + Duration::from_millis(10)).await;
    }
    // 250 ms, 500 ms, 1 s, then the interval's 2 s caps it.
    for (got, want) in waits.iter().zip([250, 500, 1000, 2000, 2000]) {
        let want = Duration::from_millis(want);
        assert!(
            *got <= want && *got + Duration::from_millis(100) >= want,
            "{waits:?}"
        );
    }
    assert_eq!(server.jwks_requests(), 5);
}

#[tokio::test]
async fn jwks_redirects_to_plain_http_elsewhere_are_not_followed() {
    use std::io::{Read, Write};
    // A JWKS endpoint that redirects to a plain-http, non-loopback URL.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/jwks", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().take(1) {
            let mut stream = stream.unwrap();
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(
                b"HTTP/1.1 302 Found\r\nlocation: http://jwks.example.com/keys\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            );
        }
    });
    let verifier = verifier(config(KeySource::Jwks {
        url,
        min_refetch_interval: Duration::from_secs(60),
    }));
    let err = verifier.verify(&rs256(&v2_claims())).await.unwrap_err();
    let TokenError::KeysUnavailable { detail, .. } = &err else {
        panic!("{err:?}")
    };
    assert!(detail.contains("neither https nor loopback"), "{detail}");
}
