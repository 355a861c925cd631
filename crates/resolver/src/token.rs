//! Clerk session token verification, rule for rule as Clerk's backend SDK
//! (`@clerk/backend` `verifyJwt`) does it, with an injectable clock.
//!
//! The compact JWT is parsed here (three base64url parts, JSON-object header
//! and payload); only then is anything looked at, in this order:
//!
//! 1. `typ`, when present, is `JWT`;
//! 2. `alg` is RS256, RS384 or RS512 — refused before any key is looked up,
//!    so `none`, HMAC (including the HS256-with-the-public-key-as-secret
//!    confusion), EC, PSS and EdDSA tokens never reach a key;
//! 3. the key of the header's `kid` (JWKS) or the configured PEM key verifies
//!    the signature (a JWK restricted to another `alg` is refused);
//! 4. the claims: `exp` (required; valid while `now < exp + skew`), `nbf`
//!    (`now >= nbf - skew`), `iat` (required; not after `now + skew`), `iss`
//!    (exactly the configured issuer), `azp` (present and listed when
//!    authorized parties are configured), `sub` (a non-empty string), `sts`
//!    (`pending` refused unless allowed), then the organization
//!    ([`crate::claims`]) and the optional custom tenant claim.
//!
//! Every failure is its own [`TokenError`] variant with a stable code; error
//! messages never contain the token.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{Map, Value};

use crate::claims::{org_claim, OrgClaim};
use crate::clock::Clock;
use crate::jwks::{rsa_algorithm, KeyConfigError, KeyError, KeySource, KeyStore, PublicKey};
use crate::verdicts::{self, VerdictCache, VerdictStats};

/// Clerk's default clock skew.
pub const DEFAULT_CLOCK_SKEW: Duration = Duration::from_secs(5);

/// Longest token accepted (Clerk's session tokens are well under 4 KiB: they
/// must fit in a cookie).
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// How session tokens are verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifierConfig {
    /// The Clerk instance's Frontend API URL, compared with `iss` exactly.
    pub issuer: String,
    pub keys: KeySource,
    /// Allowed `azp` values (the app's origins); empty: `azp` is not checked.
    pub authorized_parties: Vec<String>,
    /// Leeway for `exp`, `nbf` and `iat` (whole seconds count).
    pub clock_skew: Duration,
    /// Accept sessions with `sts: "pending"` (tasks such as choosing an
    /// organization not done yet). Clerk treats them as signed out by default.
    pub allow_pending_sessions: bool,
    /// A custom claim (`tenant_id`) to return in [`VerifiedSession::tenant_claim`].
    pub tenant_claim: Option<String>,
    /// Verified tokens remembered at once ([`crate::verdicts`]); 0 verifies
    /// every token in full every time.
    pub verdict_cache_entries: usize,
}

impl VerifierConfig {
    /// Defaults: no authorized parties, 5 s of skew, pending sessions
    /// refused, no tenant claim.
    pub fn new(issuer: impl Into<String>, keys: KeySource) -> Self {
        Self {
            issuer: issuer.into(),
            keys,
            authorized_parties: Vec::new(),
            clock_skew: DEFAULT_CLOCK_SKEW,
            allow_pending_sessions: false,
            tenant_claim: None,
            verdict_cache_entries: crate::verdicts::DEFAULT_MAX_ENTRIES,
        }
    }
}

/// A configuration that cannot verify anything.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenConfigError {
    #[error("the Clerk issuer is empty")]
    EmptyIssuer,
    #[error("an authorized party is empty")]
    EmptyAuthorizedParty,
    #[error("the tenant claim name is empty")]
    EmptyTenantClaim,
    #[error(transparent)]
    Keys(#[from] KeyConfigError),
}

/// Why a token was refused. Messages are short and safe to return to the
/// client; [`TokenError::code`] is stable.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum TokenError {
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// The header's `alg` (as sent when short and plain, else `<invalid>`).
    #[error("unsupported token algorithm {0}: only RS256, RS384 and RS512 (as the key allows) are accepted")]
    Algorithm(String),
    #[error("unsupported token type; expected JWT")]
    Type,
    /// RFC 7515 4.1.11: a `crit` header names extensions the verifier must
    /// understand; tenant-plane understands none, so it must refuse.
    #[error("the token names critical header extensions this verifier does not understand")]
    CriticalHeader,
    #[error("the token's signing key is unknown")]
    UnknownKey,
    #[error("invalid token signature")]
    Signature,
    #[error("token expired")]
    Expired,
    #[error("token not valid yet")]
    NotYetValid,
    #[error("token issued in the future")]
    IssuedInFuture,
    #[error("token issued by another Clerk instance")]
    Issuer,
    #[error("token issued to an unauthorized party")]
    AuthorizedParty,
    #[error("token has no subject")]
    Subject,
    #[error("session is pending: finish the session's tasks first")]
    SessionPending,
    /// The JWKS could not be fetched; `detail` is for logs, not clients.
    #[error("signing keys unavailable; retry shortly")]
    KeysUnavailable {
        detail: String,
        /// When the next fetch of the keys is allowed.
        retry_after: std::time::Duration,
    },
}

impl TokenError {
    pub fn code(&self) -> &'static str {
        match self {
            TokenError::Malformed(_) => "token_malformed",
            TokenError::Algorithm(_) => "token_algorithm",
            TokenError::Type => "token_type",
            TokenError::CriticalHeader => "token_critical_header",
            TokenError::UnknownKey => "token_unknown_key",
            TokenError::Signature => "token_signature",
            TokenError::Expired => "token_expired",
            TokenError::NotYetValid => "token_not_yet_valid",
            TokenError::IssuedInFuture => "token_issued_in_future",
            TokenError::Issuer => "token_issuer",
            TokenError::AuthorizedParty => "token_authorized_party",
            TokenError::Subject => "token_subject",
            TokenError::SessionPending => "token_session_pending",
            TokenError::KeysUnavailable { .. } => "token_keys_unavailable",
        }
    }
}

/// What a valid session token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedSession {
    /// `sub`: the Clerk user id.
    pub user_id: String,
    /// `sid`.
    pub session_id: Option<String>,
    /// The active organization, v1 or v2 claims alike.
    pub org: Option<OrgClaim>,
    /// The configured custom claim's value, when the token has it.
    pub tenant_claim: Option<String>,
    pub issued_at: i64,
    pub not_before: Option<i64>,
    pub expires_at: i64,
    /// `azp`.
    pub authorized_party: Option<String>,
    /// What an embedder renders from this session on first use, kept with
    /// it (a remembered token's session is shared by every request that
    /// sends the token, until it expires); not part of what the token says.
    /// See [`crate::rendered`].
    pub rendered: crate::rendered::Rendered,
}

pub struct TokenVerifier {
    issuer: String,
    authorized_parties: Vec<String>,
    skew: i64,
    allow_pending_sessions: bool,
    tenant_claim: Option<String>,
    keys: KeyStore,
    verdicts: VerdictCache,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("issuer", &self.issuer)
            .field("authorized_parties", &self.authorized_parties)
            .field("skew", &self.skew)
            .field("allow_pending_sessions", &self.allow_pending_sessions)
            .field("tenant_claim", &self.tenant_claim)
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

impl TokenVerifier {
    pub fn new(config: VerifierConfig, clock: Arc<dyn Clock>) -> Result<Self, TokenConfigError> {
        if config.issuer.is_empty() {
            return Err(TokenConfigError::EmptyIssuer);
        }
        if config.authorized_parties.iter().any(String::is_empty) {
            return Err(TokenConfigError::EmptyAuthorizedParty);
        }
        if config.tenant_claim.as_deref() == Some("") {
            return Err(TokenConfigError::EmptyTenantClaim);
        }
        Ok(Self {
            issuer: config.issuer,
            authorized_parties: config.authorized_parties,
            skew: i64::try_from(config.clock_skew.as_secs()).unwrap_or(i64::MAX),
            allow_pending_sessions: config.allow_pending_sessions,
            tenant_claim: config.tenant_claim,
            keys: KeyStore::new(config.keys)?,
            verdicts: VerdictCache::new(config.verdict_cache_entries),
            clock,
        })
    }

    /// Verifies `token`: from the verdict cache when it was verified before
    /// (its `exp`, `nbf` and key checked again), in full otherwise.
    pub async fn verify(&self, token: &str) -> Result<Arc<VerifiedSession>, TokenError> {
        // Before anything, hashing included.
        check_length(token)?;
        if !self.verdicts.enabled() {
            return self
                .verify_in_full(token)
                .await
                .map(|(session, _)| Arc::new(session));
        }
        let digest = verdicts::digest(token);
        let now = self.clock.now();
        if let Some(verdict) = self
            .verdicts
            .get(&digest, now, self.skew, |k| self.keys.is_current(k))
        {
            return verdict;
        }
        let (session, key) = self.verify_in_full(token).await?;
        let session = Arc::new(session);
        self.verdicts.insert(digest, Arc::clone(&session), key, now);
        Ok(session)
    }

    /// Hits and misses of the verdict cache.
    pub fn verdict_stats(&self) -> VerdictStats {
        self.verdicts.stats()
    }

    /// Every check, and the key that verified the signature.
    async fn verify_in_full(
        &self,
        token: &str,
    ) -> Result<(VerifiedSession, Arc<PublicKey>), TokenError> {
        let jwt = CompactJwt::parse(token)?;

        match jwt.header.get("typ") {
            None | Some(Value::Null) => {}
            Some(Value::String(typ)) if typ == "JWT" => {}
            Some(_) => return Err(TokenError::Type),
        }
        if jwt.header.contains_key("crit") {
            return Err(TokenError::CriticalHeader);
        }
        let alg = match jwt.header.get("alg") {
            Some(Value::String(name)) => rsa_algorithm(name),
            _ => None,
        }
        .ok_or_else(|| TokenError::Algorithm(shown_alg(jwt.header.get("alg"))))?;
        let kid = match jwt.header.get("kid") {
            None | Some(Value::Null) => None,
            Some(Value::String(kid)) => Some(kid.as_str()),
            Some(_) => return Err(TokenError::Malformed("kid is not a string")),
        };

        let key = self.keys.key(kid).await.map_err(|e| match e {
            KeyError::Unknown => TokenError::UnknownKey,
            KeyError::Unavailable {
                detail,
                retry_after,
            } => TokenError::KeysUnavailable {
                detail,
                retry_after,
            },
        })?;
        if key.algorithm().is_some_and(|only| only != alg) {
            return Err(TokenError::Algorithm(shown_alg(jwt.header.get("alg"))));
        }
        let valid =
            jsonwebtoken::crypto::verify(jwt.signature, jwt.message, key.decoding_key(), alg)
                .unwrap_or(false);
        if !valid {
            return Err(TokenError::Signature);
        }

        Ok((self.check_claims(&jwt.payload)?, key))
    }

    fn check_claims(&self, claims: &Map<String, Value>) -> Result<VerifiedSession, TokenError> {
        let now = self.clock.now();
        let expires_at = numeric_date(claims, "exp")?.ok_or(TokenError::Malformed("no exp"))?;
        if now >= expires_at.saturating_add(self.skew) {
            return Err(TokenError::Expired);
        }
        let not_before = numeric_date(claims, "nbf")?;
        if let Some(nbf) = not_before {
            if now < nbf.saturating_sub(self.skew) {
                return Err(TokenError::NotYetValid);
            }
        }
        let issued_at = numeric_date(claims, "iat")?.ok_or(TokenError::Malformed("no iat"))?;
        if issued_at > now.saturating_add(self.skew) {
            return Err(TokenError::IssuedInFuture);
        }

        if claims.get("iss").and_then(Value::as_str) != Some(self.issuer.as_str()) {
            return Err(TokenError::Issuer);
        }
        let authorized_party = opt_string(claims, "azp")?;
        if !self.authorized_parties.is_empty()
            && !authorized_party
                .as_ref()
                .is_some_and(|azp| self.authorized_parties.contains(azp))
        {
            return Err(TokenError::AuthorizedParty);
        }
        let user_id = match claims.get("sub") {
            Some(Value::String(sub)) if !sub.is_empty() => sub.clone(),
            _ => return Err(TokenError::Subject),
        };
        if opt_string(claims, "sts")?.as_deref() == Some("pending") && !self.allow_pending_sessions
        {
            return Err(TokenError::SessionPending);
        }
        let session_id = opt_string(claims, "sid")?;
        let org = org_claim(claims).map_err(|e| TokenError::Malformed(e.0))?;
        let tenant_claim = match &self.tenant_claim {
            None => None,
            Some(name) => match claims.get(name) {
                None | Some(Value::Null) => None,
                Some(Value::String(value)) => Some(value.clone()),
                Some(_) => return Err(TokenError::Malformed("tenant claim is not a string")),
            },
        };

        Ok(VerifiedSession {
            user_id,
            session_id,
            org,
            tenant_claim,
            issued_at,
            not_before,
            expires_at,
            authorized_party,
            rendered: Default::default(),
        })
    }
}

/// A compact JWS, split and decoded, not yet verified.
struct CompactJwt<'a> {
    header: Map<String, Value>,
    payload: Map<String, Value>,
    /// `header.payload`, the signed bytes.
    message: &'a [u8],
    /// The third part, base64url.
    signature: &'a str,
}

/// Neither empty nor longer than [`MAX_TOKEN_BYTES`].
fn check_length(token: &str) -> Result<(), TokenError> {
    if token.is_empty() {
        return Err(TokenError::Malformed("empty token"));
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::Malformed("token too long"));
    }
    Ok(())
}

impl<'a> CompactJwt<'a> {
    fn parse(token: &'a str) -> Result<Self, TokenError> {
        check_length(token)?;
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed("expected three dot-separated parts"));
        };
        let header_json = json_object(
            header,
            "header is not base64url",
            "header is not a JSON object",
        )?;
        let payload_json = json_object(
            payload,
            "payload is not base64url",
            "payload is not a JSON object",
        )?;
        // An empty signature (`alg: none`) is left to the algorithm check.
        if URL_SAFE_NO_PAD.decode(signature).is_err() {
            return Err(TokenError::Malformed("signature is not base64url"));
        }
        Ok(Self {
            header: header_json,
            payload: payload_json,
            message: &token.as_bytes()[..header.len() + 1 + payload.len()],
            signature,
        })
    }
}

fn json_object(
    part: &str,
    not_base64: &'static str,
    not_object: &'static str,
) -> Result<Map<String, Value>, TokenError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| TokenError::Malformed(not_base64))?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(TokenError::Malformed(not_object)),
    }
}

/// A NumericDate claim (seconds; a fraction is dropped), when present.
fn numeric_date(
    claims: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<i64>, TokenError> {
    let malformed = || {
        TokenError::Malformed(match name {
            "exp" => "exp is not a number",
            "nbf" => "nbf is not a number",
            _ => "iat is not a number",
        })
    };
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(seconds) => Ok(Some(seconds)),
            None => n
                .as_f64()
                .filter(|f| f.is_finite())
                // `as` saturates: a date past i64 is "forever", before is "never".
                .map(|f| Some(f.floor() as i64))
                .ok_or_else(malformed),
        },
        Some(_) => Err(malformed()),
    }
}

fn opt_string(
    claims: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<String>, TokenError> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(TokenError::Malformed(match name {
            "azp" => "azp is not a string",
            "sid" => "sid is not a string",
            _ => "sts is not a string",
        })),
    }
}

/// The header's `alg` for an error message: as sent when it is short and
/// plain, so that nothing odd from the token reaches a log or a client.
fn shown_alg(alg: Option<&Value>) -> String {
    match alg {
        None | Some(Value::Null) => "<missing>".into(),
        Some(Value::String(s))
            if !s.is_empty()
                && s.len() <= 16
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'+') =>
        {
            s.clone()
        }
        Some(_) => "<invalid>".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn codes_are_stable_and_distinct() {
        let all = [
            TokenError::Malformed("x"),
            TokenError::Algorithm("HS256".into()),
            TokenError::Type,
            TokenError::UnknownKey,
            TokenError::Signature,
            TokenError::Expired,
            TokenError::NotYetValid,
            TokenError::IssuedInFuture,
            TokenError::Issuer,
            TokenError::AuthorizedParty,
            TokenError::Subject,
            TokenError::SessionPending,
            TokenError::KeysUnavailable {
                detail: "down".into(),
                retry_after: std::time::Duration::from_secs(1),
            },
        ];
        let codes: std::collections::HashSet<_> = all.iter().map(TokenError::code).collect();
        assert_eq!(codes.len(), all.len());
        assert!(codes.iter().all(|c| c.starts_with("token_")));
        assert_eq!(TokenError::Expired.code(), "token_expired");
        // The detail of a JWKS failure stays out of the message.
        assert!(!all[12].to_string().contains("down"));
    }

    #[test]
    fn parses_compact_form_strictly() {
        let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256"}"#);
        let p = URL_SAFE_NO_PAD.encode(br#"{"sub":"user_1"}"#);
        let ok = format!("{h}.{p}.c2ln");
        let jwt = CompactJwt::parse(&ok).unwrap();
        assert_eq!(jwt.message, format!("{h}.{p}").as_bytes());
        assert_eq!(jwt.signature, "c2ln");
        assert!(CompactJwt::parse(&format!("{h}.{p}.")).is_ok());

        let padded = format!(
            "{}=.{p}.c2ln",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256"} "#)
        );
        let array = URL_SAFE_NO_PAD.encode(b"[1]");
        let too_long = "a".repeat(MAX_TOKEN_BYTES + 1);
        for (token, reason) in [
            (String::new(), "empty token"),
            (too_long, "token too long"),
            (format!("{h}.{p}"), "expected three dot-separated parts"),
            (
                format!("{h}.{p}.c2ln.c2ln"),
                "expected three dot-separated parts",
            ),
            (format!("{h}+.{p}.c2ln"), "header is not base64url"),
            (padded, "header is not base64url"),
            (format!("{h}.{p}/.c2ln"), "payload is not base64url"),
            (format!("{array}.{p}.c2ln"), "header is not a JSON object"),
            (format!("{h}.{array}.c2ln"), "payload is not a JSON object"),
            (format!("{h}.{p}.c2l*"), "signature is not base64url"),
            (format!(" {h}.{p}.c2ln"), "header is not base64url"),
        ] {
            assert_eq!(
                CompactJwt::parse(&token).err(),
                Some(TokenError::Malformed(reason)),
                "{reason}"
            );
        }
    }

    #[test]
    fn numeric_dates() {
        let claims = json!({"a": 10, "b": 10.9, "c": "10", "d": -3, "e": null, "exp": true});
        let claims = claims.as_object().unwrap();
        assert_eq!(numeric_date(claims, "a"), Ok(Some(10)));
        assert_eq!(numeric_date(claims, "b"), Ok(Some(10)));
        assert!(numeric_date(claims, "c").is_err());
        assert_eq!(numeric_date(claims, "d"), Ok(Some(-3)));
        assert_eq!(numeric_date(claims, "e"), Ok(None));
        assert_eq!(numeric_date(claims, "zzz"), Ok(None));
        assert_eq!(
            numeric_date(claims, "exp"),
            Err(TokenError::Malformed("exp is not a number"))
        );
    }

    #[test]
    fn algorithm_names_are_shown_only_when_plain() {
        assert_eq!(shown_alg(Some(&json!("HS256"))), "HS256");
        assert_eq!(shown_alg(Some(&json!("none"))), "none");
        assert_eq!(shown_alg(None), "<missing>");
        assert_eq!(shown_alg(Some(&json!("<script>"))), "<invalid>");
        assert_eq!(shown_alg(Some(&json!("A".repeat(40)))), "<invalid>");
        assert_eq!(shown_alg(Some(&json!(256))), "<invalid>");
    }
}
