//! Fresh secrets of the shapes the configuration expects.

use base64::Engine;

/// A Svix signing secret as Clerk's dashboard shows one: `whsec_<base64>`.
pub fn random_webhook_secret() -> String {
    let bytes: [u8; 24] = rand::random();
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// A `crypto.key`: 32 random bytes, base64.
pub fn random_crypto_key() -> String {
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
