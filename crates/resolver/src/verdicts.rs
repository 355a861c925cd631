//! Verified tokens, remembered: an application sends the same session token
//! with every request until Clerk refreshes it (about once a minute), and
//! verifying its RSA signature again is nearly the whole cost of a resolve.
//!
//! Entries are keyed by the token's SHA-256 (the token itself is never kept,
//! logged or counted), hold the verified session and the key that verified
//! it, and are bounded in number. Every hit checks the clock against the
//! token's `exp` and `nbf` again, and that its key is still the one the key
//! store holds for that `kid`: a key that left the JWKS (or was fetched
//! anew) takes its verdicts with it. The tenant's state is not cached here:
//! the resolver checks it after every hit.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use crate::jwks::PublicKey;
use crate::token::{TokenError, VerifiedSession};

/// The default bound on remembered tokens.
pub const DEFAULT_MAX_ENTRIES: usize = 10_000;

/// A token's cache key.
pub type TokenDigest = [u8; 32];

pub fn digest(token: &str) -> TokenDigest {
    Sha256::digest(token.as_bytes()).into()
}

struct Verdict {
    session: Arc<VerifiedSession>,
    key: Arc<PublicKey>,
}

/// Hit and miss counts since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VerdictStats {
    pub hits: u64,
    pub misses: u64,
    pub entries: usize,
}

pub struct VerdictCache {
    entries: Mutex<HashMap<TokenDigest, Verdict>>,
    max_entries: usize,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl VerdictCache {
    /// `max_entries = 0` remembers nothing.
    pub fn new(max_entries: usize) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            max_entries,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    pub fn enabled(&self) -> bool {
        self.max_entries > 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TokenDigest, Verdict>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The remembered verdict on a token at `now` (Unix seconds, with
    /// `skew` of leeway), or None when it must be verified in full.
    pub fn get(
        &self,
        digest: &TokenDigest,
        now: i64,
        skew: i64,
        key_is_current: impl Fn(&Arc<PublicKey>) -> bool,
    ) -> Option<Result<Arc<VerifiedSession>, TokenError>> {
        let mut entries = self.lock();
        let Some(verdict) = entries.get(digest) else {
            drop(entries);
            self.misses.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        let session = &verdict.session;
        let answer = if now >= session.expires_at.saturating_add(skew) {
            entries.remove(digest);
            Err(TokenError::Expired)
        } else if session
            .not_before
            .is_some_and(|nbf| now < nbf.saturating_sub(skew))
        {
            // Only a clock that went back gets here; it may come forward.
            Err(TokenError::NotYetValid)
        } else if session.issued_at > now.saturating_add(skew) {
            Err(TokenError::IssuedInFuture)
        } else if !key_is_current(&verdict.key) {
            entries.remove(digest);
            drop(entries);
            self.misses.fetch_add(1, Ordering::Relaxed);
            return None;
        } else {
            Ok(Arc::clone(session))
        };
        drop(entries);
        self.hits.fetch_add(1, Ordering::Relaxed);
        Some(answer)
    }

    /// Remembers a token verified in full at `now`.
    pub fn insert(
        &self,
        digest: TokenDigest,
        session: Arc<VerifiedSession>,
        key: Arc<PublicKey>,
        now: i64,
    ) {
        if !self.enabled() {
            return;
        }
        let mut entries = self.lock();
        if entries.len() >= self.max_entries && !entries.contains_key(&digest) {
            // Full: drop the expired first, then whatever expires soonest.
            entries.retain(|_, v| v.session.expires_at > now);
            if entries.len() >= self.max_entries {
                let soonest = entries
                    .iter()
                    .min_by_key(|(_, v)| v.session.expires_at)
                    .map(|(k, _)| *k);
                if let Some(k) = soonest {
                    entries.remove(&k);
                }
            }
        }
        entries.insert(digest, Verdict { session, key });
    }

    pub fn stats(&self) -> VerdictStats {
        VerdictStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            entries: self.lock().len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(exp: i64, nbf: Option<i64>) -> Arc<VerifiedSession> {
        Arc::new(VerifiedSession {
            user_id: "user_1".into(),
            session_id: None,
            org: None,
            tenant_claim: None,
            issued_at: 0,
            not_before: nbf,
            expires_at: exp,
            authorized_party: None,
            rendered: Default::default(),
        })
    }

    fn key() -> Arc<PublicKey> {
        Arc::new(PublicKey::test_key())
    }

    #[test]
    fn the_digest_is_the_tokens_sha256_and_never_the_token() {
        let d = digest("a.b.c");
        assert_eq!(d, <[u8; 32]>::from(Sha256::digest(b"a.b.c")));
        assert_ne!(digest("a.b.c"), digest("a.b.d"));
    }

    #[test]
    fn a_verdict_is_given_until_exp_and_then_dropped() {
        let cache = VerdictCache::new(10);
        let k = key();
        cache.insert(digest("t"), session(100, None), k.clone(), 50);
        let current = |key: &Arc<PublicKey>| Arc::ptr_eq(key, &k);
        assert!(matches!(
            cache.get(&digest("t"), 99, 0, current),
            Some(Ok(_))
        ));
        assert_eq!(
            cache.get(&digest("t"), 100, 0, current),
            Some(Err(TokenError::Expired))
        );
        assert_eq!(cache.stats().entries, 0, "dropped once expired");
        assert_eq!(cache.get(&digest("t"), 99, 0, current), None);
        assert_eq!(
            (cache.stats().hits, cache.stats().misses),
            (2, 1),
            "hits and misses are counted"
        );
    }

    #[test]
    fn a_clock_before_nbf_refuses_the_cached_token_without_forgetting_it() {
        let cache = VerdictCache::new(10);
        let k = key();
        cache.insert(digest("t"), session(100, Some(50)), k.clone(), 60);
        let current = |key: &Arc<PublicKey>| Arc::ptr_eq(key, &k);
        assert_eq!(
            cache.get(&digest("t"), 40, 5, current),
            Some(Err(TokenError::NotYetValid))
        );
        assert!(matches!(
            cache.get(&digest("t"), 46, 5, current),
            Some(Ok(_))
        ));
    }

    #[test]
    fn a_key_no_longer_current_drops_its_verdicts() {
        let cache = VerdictCache::new(10);
        cache.insert(digest("t"), session(100, None), key(), 0);
        assert_eq!(cache.get(&digest("t"), 1, 0, |_| false), None);
        assert_eq!(cache.stats().entries, 0);
    }

    #[test]
    fn the_bound_holds_dropping_the_expired_then_the_soonest_to_expire() {
        let cache = VerdictCache::new(3);
        let k = key();
        for (n, exp) in [(1, 10), (2, 300), (3, 200)] {
            cache.insert(digest(&n.to_string()), session(exp, None), k.clone(), 0);
        }
        // At t=20 token 1 is expired: it goes, the others stay.
        cache.insert(digest("4"), session(400, None), k.clone(), 20);
        assert_eq!(cache.stats().entries, 3);
        assert_eq!(cache.get(&digest("1"), 20, 0, |_| true), None);
        // Full of live tokens: the one expiring soonest (3, at 200) goes.
        cache.insert(digest("5"), session(500, None), k.clone(), 20);
        assert_eq!(cache.stats().entries, 3);
        assert_eq!(cache.get(&digest("3"), 20, 0, |_| true), None);
        assert!(cache.get(&digest("2"), 20, 0, |_| true).is_some());
    }

    #[test]
    fn a_zero_bound_remembers_nothing() {
        let cache = VerdictCache::new(0);
        cache.insert(digest("t"), session(100, None), key(), 0);
        assert_eq!(cache.get(&digest("t"), 1, 0, |_| true), None);
    }
}
