//! Encryption of tenant role passwords at rest (AES-256-GCM, key from
//! `crypto.key`). The registry stores the sealed form, never the password.
//!
//! A sealed password is bound to its tenant and role: the tenant id and the
//! role name are the AEAD's associated data, so a ciphertext copied into
//! another row does not open there. The stored form is `0x02 || nonce ||
//! ciphertext`. Ciphertexts from before the binding (`nonce || ciphertext`,
//! no associated data) still open through [`PasswordCipher::open_unbound`],
//! which the registry allows only for tenants not yet moved to the current
//! privilege model; the reconciler re-seals them when it moves them.

use std::fmt;

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine;
use rand::distributions::{Alphanumeric, DistString};

use model::{PgIdent, TenantId};

const NONCE_LEN: usize = 12;
/// The first byte of a bound ciphertext.
const BOUND: u8 = 2;

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error(
        "crypto.key must be 32 bytes of standard base64 (e.g. `openssl rand -base64 32`): {0}"
    )]
    BadKey(&'static str),
    #[error("a stored password could not be decrypted: wrong crypto.key, or corrupted data")]
    Decrypt,
}

/// Seals and opens tenant role passwords.
#[derive(Clone)]
pub struct PasswordCipher {
    cipher: Aes256Gcm,
}

impl fmt::Debug for PasswordCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordCipher { key: [redacted] }")
    }
}

impl PasswordCipher {
    /// From the base64 form of a 32-byte key.
    pub fn from_base64(key: &str) -> Result<Self, CryptoError> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(key.trim())
            .map_err(|_| CryptoError::BadKey("not base64"))?;
        if bytes.len() != 32 {
            return Err(CryptoError::BadKey("wrong length"));
        }
        Ok(Self {
            cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&bytes)),
        })
    }

    /// Seals `plaintext` as the password of `role`, the login role of `tenant`.
    pub fn seal(&self, tenant: TenantId, role: &PgIdent, plaintext: &str) -> Vec<u8> {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let mut out = vec![BOUND];
        out.extend_from_slice(&nonce);
        out.extend(
            self.cipher
                .encrypt(
                    &nonce,
                    Payload {
                        msg: plaintext.as_bytes(),
                        aad: &associated_data(tenant, role),
                    },
                )
                .expect("AES-GCM encryption of a short buffer cannot fail"),
        );
        out
    }

    /// Opens a password sealed for `role` of `tenant`; anything sealed for
    /// another tenant or role, or tampered with, is refused.
    pub fn open(
        &self,
        sealed: &[u8],
        tenant: TenantId,
        role: &PgIdent,
    ) -> Result<String, CryptoError> {
        let Some((&BOUND, rest)) = sealed.split_first() else {
            return Err(CryptoError::Decrypt);
        };
        if rest.len() <= NONCE_LEN {
            return Err(CryptoError::Decrypt);
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let plain = self
            .cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &associated_data(tenant, role),
                },
            )
            .map_err(|_| CryptoError::Decrypt)?;
        String::from_utf8(plain).map_err(|_| CryptoError::Decrypt)
    }

    /// Opens a ciphertext of the format before binding (`nonce ||
    /// ciphertext`, no associated data), so that it can be re-sealed.
    pub fn open_unbound(&self, sealed: &[u8]) -> Result<String, CryptoError> {
        if sealed.len() <= NONCE_LEN {
            return Err(CryptoError::Decrypt);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let plain = self
            .cipher
            .decrypt(Nonce::from_slice(nonce), ciphertext)
            .map_err(|_| CryptoError::Decrypt)?;
        String::from_utf8(plain).map_err(|_| CryptoError::Decrypt)
    }

    /// Seals in the format before binding. Only for tests of the upgrade
    /// from it: nothing in tenant-plane writes this format any more.
    #[doc(hidden)]
    pub fn seal_unbound(&self, plaintext: &str) -> Vec<u8> {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let mut out = nonce.to_vec();
        out.extend(
            self.cipher
                .encrypt(&nonce, plaintext.as_bytes())
                .expect("AES-GCM encryption of a short buffer cannot fail"),
        );
        out
    }
}

/// What a sealed password is bound to: a domain tag, the tenant id and the
/// role name.
fn associated_data(tenant: TenantId, role: &PgIdent) -> Vec<u8> {
    let mut aad = b"tenant-plane password v2\0".to_vec();
    aad.extend_from_slice(tenant.as_uuid().as_bytes());
    aad.extend_from_slice(role.as_str().as_bytes());
    aad
}

/// A new random password for a tenant role: 32 alphanumeric characters
/// (~190 bits), safe in any connection string without escaping.
pub fn random_password() -> String {
    Alphanumeric.sample_string(&mut OsRng, 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

    fn role(name: &str) -> PgIdent {
        PgIdent::parse(name).unwrap()
    }

    #[test]
    fn round_trips_and_never_stores_the_plaintext() {
        let c = PasswordCipher::from_base64(KEY).unwrap();
        let (t, r) = (TenantId::new(), role("tenant_a"));
        let pw = random_password();
        let sealed = c.seal(t, &r, &pw);
        assert!(!sealed.windows(pw.len()).any(|w| w == pw.as_bytes()));
        assert_eq!(c.open(&sealed, t, &r).unwrap(), pw);
        assert_ne!(c.seal(t, &r, &pw), sealed, "fresh nonce each time");
    }

    #[test]
    fn a_sealed_password_opens_only_for_its_tenant_and_role() {
        let c = PasswordCipher::from_base64(KEY).unwrap();
        let (t, r) = (TenantId::new(), role("tenant_a"));
        let sealed = c.seal(t, &r, "secret");
        assert!(
            c.open(&sealed, TenantId::new(), &r).is_err(),
            "other tenant"
        );
        assert!(c.open(&sealed, t, &role("tenant_b")).is_err(), "other role");
        assert!(c.open_unbound(&sealed).is_err(), "bound is not unbound");
    }

    #[test]
    fn unbound_ciphertexts_open_only_as_unbound() {
        let c = PasswordCipher::from_base64(KEY).unwrap();
        let (t, r) = (TenantId::new(), role("tenant_a"));
        let old = c.seal_unbound("secret");
        assert_eq!(c.open_unbound(&old).unwrap(), "secret");
        assert!(c.open(&old, t, &r).is_err());
    }

    #[test]
    fn tampering_and_wrong_keys_are_detected() {
        let c = PasswordCipher::from_base64(KEY).unwrap();
        let (t, r) = (TenantId::new(), role("tenant_a"));
        let mut sealed = c.seal(t, &r, "secret");
        *sealed.last_mut().unwrap() ^= 1;
        assert!(c.open(&sealed, t, &r).is_err());
        let other =
            PasswordCipher::from_base64("ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=").unwrap();
        assert!(other.open(&c.seal(t, &r, "secret"), t, &r).is_err());
        assert!(c.open(b"short", t, &r).is_err());
        assert!(c.open(&[], t, &r).is_err());
    }

    #[test]
    fn keys_are_validated_and_redacted() {
        assert!(PasswordCipher::from_base64("not base64!").is_err());
        assert!(PasswordCipher::from_base64("c2hvcnQ=").is_err());
        let c = PasswordCipher::from_base64(KEY).unwrap();
        assert!(!format!("{c:?}").contains(KEY));
    }

    #[test]
    fn passwords_are_long_and_alphanumeric() {
        let pw = random_password();
        assert_eq!(pw.len(), 32);
        assert!(pw.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(pw, random_password());
    }
}
