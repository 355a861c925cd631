//! Operator sessions without server-side storage, so that any replica
//! accepts a session another one opened and a restart logs nobody out.
//!
//! Logging in compares the token with each `console.tokens` entry in
//! constant time (SHA-256 of both, so lengths leak nothing either). The
//! session cookie is `{token index}.{expires}.{nonce}.{tag}`, tagged with an
//! HMAC key derived from the token that opened it: removing a token from the
//! configuration ends its sessions. A session's CSRF token is an HMAC of its
//! nonce, so a forged form cannot carry one without reading a page first.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// One accepted operator token, as kept in memory: never the token itself.
struct TokenKey {
    digest: [u8; 32],
    mac_key: [u8; 32],
}

/// The operator tokens and the session keys derived from them.
pub struct Keys {
    tokens: Vec<TokenKey>,
}

/// A valid, unexpired session.
#[derive(Debug, Clone)]
pub struct Session {
    key: usize,
    nonce: String,
    pub expires: DateTime<Utc>,
}

impl Keys {
    pub fn new(tokens: &[SecretString]) -> Self {
        let tokens = tokens
            .iter()
            .map(|t| {
                let token = t.expose_secret().as_bytes();
                let mut mac_key = Sha256::new();
                mac_key.update(b"tenant-plane console session key\0");
                mac_key.update(token);
                TokenKey {
                    digest: Sha256::digest(token).into(),
                    mac_key: mac_key.finalize().into(),
                }
            })
            .collect();
        Self { tokens }
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The index of the token `candidate` equals, comparing with every
    /// token in constant time whatever matches.
    pub fn check_token(&self, candidate: &str) -> Option<usize> {
        let digest: [u8; 32] = Sha256::digest(candidate.as_bytes()).into();
        let mut found = None;
        for (i, t) in self.tokens.iter().enumerate() {
            if bool::from(t.digest.ct_eq(&digest)) {
                found = Some(i);
            }
        }
        found
    }

    fn mac(&self, key: usize, parts: &[&[u8]]) -> Option<HmacSha256> {
        let t = self.tokens.get(key)?;
        let mut mac = HmacSha256::new_from_slice(&t.mac_key).ok()?;
        for p in parts {
            mac.update(p);
            mac.update(b"\0");
        }
        Some(mac)
    }

    /// A new session for token `key`, and its cookie value.
    pub fn open(&self, key: usize, lifetime: Duration) -> Option<(Session, String)> {
        let mut nonce = [0u8; 18];
        rand::thread_rng().fill_bytes(&mut nonce);
        let nonce = URL_SAFE_NO_PAD.encode(nonce);
        let expires = Utc::now() + chrono::Duration::from_std(lifetime).ok()?;
        let head = format!("{key}.{}.{nonce}", expires.timestamp());
        let tag = self.mac(key, &[b"session", head.as_bytes()])?;
        let cookie = format!(
            "{head}.{}",
            URL_SAFE_NO_PAD.encode(tag.finalize().into_bytes())
        );
        Some((
            Session {
                key,
                nonce,
                expires,
            },
            cookie,
        ))
    }

    /// The session a cookie value stands for, if its tag verifies and it
    /// has not expired.
    pub fn verify(&self, cookie: &str, now: DateTime<Utc>) -> Option<Session> {
        let (head, tag) = cookie.rsplit_once('.')?;
        let mut parts = head.splitn(3, '.');
        let key: usize = parts.next()?.parse().ok()?;
        let expires: i64 = parts.next()?.parse().ok()?;
        let nonce = parts.next()?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        self.mac(key, &[b"session", head.as_bytes()])?
            .verify_slice(&tag)
            .ok()?;
        let expires = DateTime::from_timestamp(expires, 0)?;
        (expires > now).then(|| Session {
            key,
            nonce: nonce.to_owned(),
            expires,
        })
    }

    /// The CSRF token of `session`, for its forms.
    pub fn csrf(&self, session: &Session) -> String {
        self.mac(session.key, &[b"csrf", session.nonce.as_bytes()])
            .map(|m| URL_SAFE_NO_PAD.encode(m.finalize().into_bytes()))
            .unwrap_or_default()
    }

    /// Whether `candidate` is `session`'s CSRF token (constant time).
    pub fn check_csrf(&self, session: &Session, candidate: &str) -> bool {
        let expected = self.csrf(session);
        !expected.is_empty() && bool::from(expected.as_bytes().ct_eq(candidate.as_bytes()))
    }
}

/// Sessions ended by `POST /console/logout` before they expired, by nonce.
/// Kept by the replica that logged out (the cookie is cleared in the
/// browser too); each entry goes once its session would have expired.
#[derive(Default)]
pub struct Revoked {
    nonces: Mutex<HashMap<String, DateTime<Utc>>>,
}

impl Revoked {
    pub fn revoke(&self, session: &Session) {
        let now = Utc::now();
        let mut nonces = self.nonces.lock().unwrap_or_else(|e| e.into_inner());
        nonces.retain(|_, expires| *expires > now);
        nonces.insert(session.nonce.clone(), session.expires);
    }

    pub fn is_revoked(&self, session: &Session) -> bool {
        self.nonces
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&session.nonce)
    }
}

/// Failed logins per client address: after `limit` failures within
/// `window`, every attempt from that address is refused until the window
/// ends (the right token too, or guessing would go on).
pub struct LoginLimiter {
    limit: u32,
    window: Duration,
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

/// Addresses tracked at most; past it, lapsed windows are forgotten.
const TRACKED_ADDRESSES: usize = 10_000;

impl LoginLimiter {
    pub fn new(limit: u32, window: Duration) -> Self {
        Self {
            limit,
            window,
            failures: Mutex::new(HashMap::new()),
        }
    }

    pub fn allows(&self, ip: IpAddr) -> bool {
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        match failures.get(&ip) {
            Some((since, n)) => since.elapsed() >= self.window || *n < self.limit,
            None => true,
        }
    }

    pub fn failed(&self, ip: IpAddr) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if failures.len() >= TRACKED_ADDRESSES {
            let window = self.window;
            failures.retain(|_, (since, _)| since.elapsed() < window);
        }
        let entry = failures.entry(ip).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= self.window {
            *entry = (Instant::now(), 0);
        }
        entry.1 += 1;
    }

    pub fn succeeded(&self, ip: IpAddr) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        Keys::new(&[
            SecretString::from("first-operator-token"),
            SecretString::from("second-operator-token"),
        ])
    }

    #[test]
    fn tokens_are_matched_exactly() {
        let k = keys();
        assert_eq!(k.check_token("first-operator-token"), Some(0));
        assert_eq!(k.check_token("second-operator-token"), Some(1));
        assert_eq!(k.check_token("first-operator-toke"), None);
        assert_eq!(k.check_token(""), None);
    }

    #[test]
    fn a_session_cookie_verifies_until_it_expires() {
        let k = keys();
        let (session, cookie) = k.open(1, Duration::from_secs(60)).unwrap();
        let back = k.verify(&cookie, Utc::now()).unwrap();
        assert_eq!(back.nonce, session.nonce);
        assert!(k
            .verify(&cookie, Utc::now() + chrono::Duration::seconds(61))
            .is_none());
    }

    #[test]
    fn a_tampered_cookie_is_refused() {
        let k = keys();
        let (_, cookie) = k.open(0, Duration::from_secs(60)).unwrap();
        let (head, tag) = cookie.rsplit_once('.').unwrap();
        let mut parts: Vec<&str> = head.split('.').collect();
        let later = (Utc::now().timestamp() + 100_000).to_string();
        parts[1] = &later;
        assert!(k
            .verify(&format!("{}.{tag}", parts.join(".")), Utc::now())
            .is_none());
        // The same cookie under the other token's key.
        assert!(k
            .verify(&format!("1{}", &cookie[1..]), Utc::now())
            .is_none());
        assert!(k.verify("garbage", Utc::now()).is_none());
        // Sessions end with their token.
        let other = Keys::new(&[SecretString::from("first-operator-token-2")]);
        assert!(other.verify(&cookie, Utc::now()).is_none());
    }

    #[test]
    fn csrf_tokens_belong_to_their_session() {
        let k = keys();
        let (a, _) = k.open(0, Duration::from_secs(60)).unwrap();
        let (b, _) = k.open(0, Duration::from_secs(60)).unwrap();
        assert!(k.check_csrf(&a, &k.csrf(&a)));
        assert!(!k.check_csrf(&a, &k.csrf(&b)));
        assert!(!k.check_csrf(&a, ""));
    }

    #[test]
    fn logins_are_refused_after_the_limit_of_failures() {
        let limiter = LoginLimiter::new(3, Duration::from_secs(3600));
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        for _ in 0..3 {
            assert!(limiter.allows(ip));
            limiter.failed(ip);
        }
        assert!(!limiter.allows(ip));
        assert!(limiter.allows(other));
        limiter.succeeded(ip);
        assert!(limiter.allows(ip));
    }

    #[test]
    fn revoked_sessions_are_remembered() {
        let k = keys();
        let (a, _) = k.open(0, Duration::from_secs(60)).unwrap();
        let (b, _) = k.open(0, Duration::from_secs(60)).unwrap();
        let revoked = Revoked::default();
        revoked.revoke(&a);
        assert!(revoked.is_revoked(&a));
        assert!(!revoked.is_revoked(&b));
    }
}
