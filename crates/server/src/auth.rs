//! Bearer service tokens for the internal API (`internal.tokens`).

use std::future::{ready, Ready};

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpRequest};
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::startup::AppState;

/// Proof that the request carried a valid service token. Handlers of
/// internal routes take it as an argument, so none can forget the check.
pub struct ServiceCaller;

/// Compares in constant time, so response timing reveals nothing about how
/// much of a guessed token was right. Every configured token is compared,
/// so the timing does not reveal which one matched either.
pub fn token_matches(presented: &str, accepted: &[SecretString]) -> bool {
    accepted.iter().fold(false, |found, t| {
        let eq: bool = t
            .expose_secret()
            .as_bytes()
            .ct_eq(presented.as_bytes())
            .into();
        found | eq
    })
}

impl FromRequest for ServiceCaller {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>();
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        ready(match (state, presented) {
            (Some(state), Some(token)) if token_matches(token, &state.service_tokens) => {
                Ok(ServiceCaller)
            }
            _ => Err(ApiError::Unauthorized),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_exact_tokens_match() {
        let accepted = vec![
            SecretString::from("0123456789abcdef"),
            SecretString::from("fedcba9876543210"),
        ];
        assert!(token_matches("0123456789abcdef", &accepted));
        assert!(token_matches("fedcba9876543210", &accepted));
        for wrong in [
            "",
            "0123456789abcde",
            "0123456789abcdef0",
            "0123456789ABCDEF",
            " 0123456789abcdef",
        ] {
            assert!(!token_matches(wrong, &accepted), "{wrong:?}");
        }
        assert!(!token_matches("anything", &[]));
    }
}
