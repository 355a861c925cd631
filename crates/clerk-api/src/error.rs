//! What can go wrong talking to Clerk. No variant ever holds the secret key:
//! error bodies are scrubbed of it before they are kept (see
//! [`crate::client`]), and transport errors name the URL, never the headers.

use reqwest::StatusCode;
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ClerkError {
    /// Clerk answered a status that is not retried (4xx other than 429), or
    /// a 404 where one is not expected. `code` and `message` come from the
    /// first entry of Clerk's `{"errors": [{"message", "long_message",
    /// "code"}]}` body when there is one.
    #[error("{}", describe_http(*status, code.as_deref(), message, long_message.as_deref()))]
    Http {
        status: u16,
        code: Option<String>,
        message: String,
        long_message: Option<String>,
    },
    /// The request could not be sent or its answer not read, and the failure
    /// is not one worth retrying (or retrying is not allowed).
    #[error("could not talk to Clerk: {0}")]
    Transport(String),
    /// A success answer that does not have the documented shape.
    #[error("unexpected answer from Clerk to {what}: {message}")]
    Decode { what: String, message: String },
    /// Every attempt failed with a retryable error (429, 5xx or a connection
    /// failure). `last_status` is `None` when the last failure was a
    /// connection failure.
    #[error("Clerk request failed after {attempts} attempts; last: {last_error}")]
    RetriesExhausted {
        attempts: u32,
        last_status: Option<u16>,
        last_error: String,
    },
    /// A [`crate::ClerkConfig`] that cannot be used; the message names the field.
    #[error("invalid Clerk client configuration: {0}")]
    InvalidConfig(String),
    /// An argument Clerk would refuse anyway; nothing was sent.
    #[error("invalid Clerk request: {0}")]
    InvalidRequest(String),
}

impl ClerkError {
    /// The HTTP status Clerk answered last, where there was one.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClerkError::Http { status, .. } => Some(*status),
            ClerkError::RetriesExhausted { last_status, .. } => *last_status,
            _ => None,
        }
    }
}

fn describe_http(status: u16, code: Option<&str>, message: &str, long: Option<&str>) -> String {
    let mut text = format!("Clerk answered {}", status_text(status));
    if let Some(code) = code {
        text.push_str(&format!(" [{code}]"));
    }
    text.push_str(": ");
    text.push_str(message);
    if let Some(long) = long.filter(|l| *l != message) {
        text.push_str(&format!(" ({long})"));
    }
    text
}

pub(crate) fn status_text(status: u16) -> String {
    match StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
    {
        Some(reason) => format!("{status} {reason}"),
        None => status.to_string(),
    }
}

/// Clerk's error body (`ClerkErrors` in the spec).
#[derive(Deserialize)]
struct ClerkErrors {
    errors: Vec<ClerkErrorEntry>,
}

#[derive(Deserialize)]
struct ClerkErrorEntry {
    message: Option<String>,
    long_message: Option<String>,
    code: Option<String>,
}

/// Longest piece of a non-JSON error body kept in an error.
const MAX_BODY_EXCERPT: usize = 200;

/// The error for a non-success answer. `scrub` removes anything that must not
/// be kept (the secret key, should a proxy ever echo it).
pub(crate) fn http_error(status: u16, body: &[u8], scrub: impl Fn(&str) -> String) -> ClerkError {
    if let Ok(parsed) = serde_json::from_slice::<ClerkErrors>(body) {
        if let Some(first) = parsed.errors.first() {
            let mut message = first
                .message
                .clone()
                .or_else(|| first.long_message.clone())
                .unwrap_or_else(|| "no message".to_owned());
            if parsed.errors.len() > 1 {
                message.push_str(&format!(" (and {} more)", parsed.errors.len() - 1));
            }
            return ClerkError::Http {
                status,
                code: first.code.as_deref().map(&scrub),
                message: scrub(&message),
                long_message: first.long_message.as_deref().map(&scrub),
            };
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let message = if text.is_empty() {
        "empty body".to_owned()
    } else {
        let mut excerpt: String = text
            .chars()
            .take(MAX_BODY_EXCERPT)
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        if text.chars().count() > MAX_BODY_EXCERPT {
            excerpt.push('…');
        }
        excerpt
    };
    ClerkError::Http {
        status,
        code: None,
        message: scrub(&message),
        long_message: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keep(s: &str) -> String {
        s.to_owned()
    }

    #[test]
    fn reads_clerks_error_body() {
        let body = br#"{"errors":[{"message":"Unauthorized request","long_message":"You are not authorized to perform this request","code":"authentication_invalid"}],"clerk_trace_id":"abc"}"#;
        let err = http_error(401, body, keep);
        match &err {
            ClerkError::Http {
                status,
                code,
                message,
                long_message,
            } => {
                assert_eq!(*status, 401);
                assert_eq!(code.as_deref(), Some("authentication_invalid"));
                assert_eq!(message, "Unauthorized request");
                assert_eq!(
                    long_message.as_deref(),
                    Some("You are not authorized to perform this request")
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            err.to_string(),
            "Clerk answered 401 Unauthorized [authentication_invalid]: Unauthorized request \
             (You are not authorized to perform this request)"
        );
    }

    #[test]
    fn other_bodies_are_quoted_briefly() {
        let err = http_error(502, b"<html>bad\ngateway</html>", keep);
        assert_eq!(
            err.to_string(),
            "Clerk answered 502 Bad Gateway: <html>bad gateway</html>"
        );
        let long = "x".repeat(1000);
        let err = http_error(400, long.as_bytes(), keep);
        assert!(err.to_string().len() < 300);
        assert_eq!(
            http_error(500, b"", keep).to_string(),
            "Clerk answered 500 Internal Server Error: empty body"
        );
    }

    #[test]
    fn scrubs_what_it_is_told() {
        let body = br#"{"errors":[{"message":"bad key sk_live_x","long_message":"sk_live_x","code":"c"}]}"#;
        let err = http_error(401, body, |s| s.replace("sk_live_x", "<redacted>"));
        let text = format!("{err} {err:?}");
        assert!(!text.contains("sk_live_x"), "{text}");
    }
}
