//! libpq's TLS parameters in URLs and key=value strings: found, checked
//! and taken out, so that tokio-postgres gets the rest.

use super::*;

/// Takes the TLS keys out of a connection string: the rest, and the
/// settings they make.
pub fn split_tls_params(url: &str) -> Result<(String, TlsSettings), TlsError> {
    let (rest, params) = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        split_url(url)?
    } else {
        split_key_values(url)?
    };
    let get = |key: &str| {
        params
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    };
    let tls = TlsSettings::from_params(
        get("sslmode"),
        get("sslrootcert"),
        get("sslcert"),
        get("sslkey"),
    )?;
    Ok((rest, tls))
}

type Params = Vec<(&'static str, String)>;

pub(super) fn take(params: &mut Params, key: &str, value: String) -> Result<bool, TlsError> {
    if UNSUPPORTED_KEYS.contains(&key) {
        return Err(TlsError::Unsupported(key.to_owned()));
    }
    let Some(known) = TLS_KEYS.iter().find(|k| **k == key) else {
        return Ok(false);
    };
    if params.iter().any(|(k, _)| k == known) {
        return Err(TlsError::Repeated(known));
    }
    params.push((known, value));
    Ok(true)
}

pub(super) fn split_url(url: &str) -> Result<(String, Params), TlsError> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), Vec::new()));
    };
    let mut params = Vec::new();
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = percent_decode(key)?;
        if !take(&mut params, &key, percent_decode(value)?)? {
            kept.push(pair);
        }
    }
    let rest = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((rest, params))
}

/// libpq's `key = value` form: values may be single-quoted, backslash
/// escapes a character.
pub(super) fn split_key_values(s: &str) -> Result<(String, Params), TlsError> {
    let mut params = Vec::new();
    let mut kept: Vec<&str> = Vec::new();
    let bytes = s.as_bytes();
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while *i < bytes.len() && bytes[*i].is_ascii_whitespace() {
            *i += 1;
        }
    };
    loop {
        skip_ws(&mut i);
        if i >= bytes.len() {
            break;
        }
        let start = i;
        while i < bytes.len() && bytes[i] != b'=' && !bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let key = &s[start..i];
        skip_ws(&mut i);
        if i >= bytes.len() || bytes[i] != b'=' {
            return Err(TlsError::Malformed("a key without `=`"));
        }
        i += 1;
        skip_ws(&mut i);
        let mut value = String::new();
        if i < bytes.len() && bytes[i] == b'\'' {
            i += 1;
            loop {
                match bytes.get(i) {
                    None => return Err(TlsError::Malformed("an unterminated quoted value")),
                    Some(b'\'') => {
                        i += 1;
                        break;
                    }
                    Some(b'\\') if i + 1 < bytes.len() => {
                        let c = s[i + 1..].chars().next().expect("a character");
                        value.push(c);
                        i += 1 + c.len_utf8();
                    }
                    Some(_) => {
                        let c = s[i..].chars().next().expect("a character");
                        value.push(c);
                        i += c.len_utf8();
                    }
                }
            }
        } else {
            while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
                if bytes[i] == b'\\' && i + 1 < bytes.len() {
                    i += 1;
                }
                let c = s[i..].chars().next().expect("a character");
                value.push(c);
                i += c.len_utf8();
            }
        }
        if !take(&mut params, key, value)? {
            kept.push(&s[start..i]);
        }
    }
    Ok((kept.join(" "), params))
}

pub(super) fn percent_decode(s: &str) -> Result<String, TlsError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or(TlsError::Malformed("a bad %-escape in the query"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| TlsError::Malformed("a %-escape that is not UTF-8"))
}

pub(super) fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
