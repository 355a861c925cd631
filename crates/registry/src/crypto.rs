//! Encryption of tenant role passwords at rest (AES-256-GCM, key from
//! `crypto.key`). The registry stores `nonce || ciphertext`, never the
//! password.

use std::fmt;

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine;
use rand::distributions::{Alphanumeric, DistString};

const NONCE_LEN: usize = 12;

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

    pub fn seal(&self, plaintext: &str) -> Vec<u8> {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let mut out = nonce.to_vec();
        out.extend(
            self.cipher
                .encrypt(&nonce, plaintext.as_bytes())
                .expect("AES-GCM encryption of a short buffer cannot fail"),
        );
        out
    }

    pub fn open(&self, sealed: &[u8]) -> Result<String, CryptoError> {
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

    #[test]
    fn round_trips_and_never_stores_the_plaintext() {
        let c = PasswordCipher::from_base64(KEY).unwrap();
        let pw = random_password();
        let sealed = c.seal(&pw);
        assert!(!sealed.windows(pw.len()).any(|w| w == pw.as_bytes()));
        assert_eq!(c.open(&sealed).unwrap(), pw);
        assert_ne!(c.seal(&pw), sealed, "fresh nonce each time");
    }

    #[test]
    fn tampering_and_wrong_keys_are_detected() {
        let c = PasswordCipher::from_base64(KEY).unwrap();
        let mut sealed = c.seal("secret");
        *sealed.last_mut().unwrap() ^= 1;
        assert!(c.open(&sealed).is_err());
        let other =
            PasswordCipher::from_base64("ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=").unwrap();
        assert!(other.open(&c.seal("secret")).is_err());
        assert!(c.open(b"short").is_err());
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
