//! Unit tests of the key store: parsing, URLs, the refresh rules.
use super::*;

const CLERK_JWKS: &str = r#"{"keys":[{"use":"sig","kty":"RSA","kid":"ins_2GIoQhbUpy0hX7B2cVkuTMinXoD","alg":"RS256","n":"qYy3MY8fOneEyzNDu9lp6iGXKkNUF-u_dUnrlkadZYyB35efzKFJEr9fftmWv5PUj1uRHTQ3bh6X1cceOYsIjy008dHWZJsKhGOxgdTjeK91rjaklxt7tyFXEiKHIOr1LSgKzopClOfCIjxK_oPUOf38pVh7WnekcSBQmU5fqA-EzKMi6k9VwvbzqKlZM4XQsiFyn28d9VubJWjTU8nNot0n1NE-9k6TxM8nglM4RwkBH4Ni4B0LhKKOOV-AG8tBNiZVil415dpBldmJ_j0wk7Ad4VFi9en3Z17oCKr-K-zuT7vKMKSb1548dk0vnmi0vj2QGXSo-61wM5yQWpk6sQ","e":"AQAB"}]}"#;

#[test]
fn keeps_rsa_signing_keys_only() {
    let body = r#"{"keys":[
        {"kty":"RSA","kid":"good","n":"qYy3","e":"AQAB"},
        {"kty":"RSA","kid":"enc","use":"enc","n":"qYy3","e":"AQAB"},
        {"kty":"RSA","kid":"oaep","alg":"RSA-OAEP","n":"qYy3","e":"AQAB"},
        {"kty":"RSA","kid":"ps","alg":"PS256","n":"qYy3","e":"AQAB"},
        {"kty":"EC","kid":"ec","crv":"P-256","x":"AAAA","y":"AAAA"},
        {"kty":"oct","kid":"hmac","k":"c2VjcmV0"},
        {"kty":"RSA","n":"qYy3","e":"AQAB"},
        {"kty":"RSA","kid":"no-n","e":"AQAB"},
        {"kty":"RSA","kid":"bad-b64","n":"!!!","e":"AQAB"},
        {"kty":"RSA","kid":"typed","n":1,"e":"AQAB"},
        {"kty":"RSA","kid":"rs512","use":"sig","alg":"RS512","n":"qYy3","e":"AQAB"}
    ]}"#;
    let keys = parse_jwks(body.as_bytes()).unwrap();
    let mut kids: Vec<_> = keys.keys().map(String::as_str).collect();
    kids.sort_unstable();
    assert_eq!(kids, ["good", "rs512"]);
    assert_eq!(keys["rs512"].algorithm(), Some(Algorithm::RS512));
    assert_eq!(keys["good"].algorithm(), None);
}

#[test]
fn parses_clerks_jwks() {
    let keys = parse_jwks(CLERK_JWKS.as_bytes()).unwrap();
    let key = &keys["ins_2GIoQhbUpy0hX7B2cVkuTMinXoD"];
    assert_eq!(key.kid(), Some("ins_2GIoQhbUpy0hX7B2cVkuTMinXoD"));
    assert_eq!(key.algorithm(), Some(Algorithm::RS256));
}

#[test]
fn refuses_documents_that_are_not_jwk_sets() {
    for body in ["", "[]", "{}", r#"{"keys":{}}"#, "<html>"] {
        assert!(parse_jwks(body.as_bytes()).is_err(), "accepted {body:?}");
    }
}

#[test]
fn jwks_urls_are_https_or_loopback_http() {
    for ok in [
        "https://clerk.example.com/.well-known/jwks.json",
        "http://127.0.0.1:1234/jwks",
        "http://localhost/jwks",
        "http://[::1]:8080/jwks",
    ] {
        assert!(parse_jwks_url(ok).is_ok(), "refused {ok}");
    }
    for bad in [
        "http://clerk.example.com/jwks",
        "ftp://clerk.example.com/jwks",
        "file:///etc/passwd",
        "not a url",
    ] {
        assert!(parse_jwks_url(bad).is_err(), "accepted {bad}");
    }
}

#[test]
fn clerk_jwks_url_is_under_the_issuer() {
    let KeySource::Jwks { url, .. } = KeySource::clerk_jwks("https://clerk.example.com/") else {
        panic!("not a JWKS source");
    };
    assert_eq!(url, "https://clerk.example.com/.well-known/jwks.json");
}

#[test]
fn refuses_pems_that_are_not_rsa_public_keys() {
    let private = "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n";
    assert_eq!(
        parse_pem(private).unwrap_err(),
        KeyConfigError::InvalidPem("expected BEGIN PUBLIC KEY or BEGIN RSA PUBLIC KEY")
    );
    assert!(parse_pem("").is_err());
    assert!(parse_pem("-----BEGIN PUBLIC KEY-----\n!!\n-----END PUBLIC KEY-----\n").is_err());
    // An EC public key (P-256).
    let ec = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEEVs/o5+uQbTjL3chynL4wXgUg2R9\nq9UU8I5mEovUf86QZ7kOBIjJwqnzD1omageEHWwHdBO6B+dFabmdT9POxg==\n-----END PUBLIC KEY-----\n";
    assert!(parse_pem(ec).is_err());
}

/// Answers every request with `body`; returns the URL and a hit counter.
async fn serve(body: &'static str) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks", listener.local_addr().unwrap());
    let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            counted.fetch_add(1, Ordering::SeqCst);
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
        }
    });
    (url, hits)
}

/// A store whose cache holds Clerk's key and is already stale.
fn stale_store(url: &str) -> (KeyStore, Arc<Jwks>) {
    let mut jwks = Jwks::new(
        parse_jwks_url(url).unwrap(),
        reqwest::Client::new(),
        Duration::ZERO,
    );
    jwks.max_age = Duration::ZERO;
    {
        let mut cache = jwks.write();
        cache.keys = parse_jwks(CLERK_JWKS.as_bytes()).unwrap();
        cache.fetched_at = Some(Instant::now());
    }
    let jwks = Arc::new(jwks);
    let store = KeyStore {
        inner: Inner::Jwks(jwks.clone()),
    };
    (store, jwks)
}

/// Waits for the background refresh to finish (bounded, as a failsafe).
async fn background_refresh_done(jwks: &Jwks) {
    for _ in 0..1000 {
        tokio::task::yield_now().await;
        let attempted = jwks.read().attempted_at.is_some();
        if attempted && !jwks.refreshing.load(Ordering::Acquire) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("the background refresh never ran");
}

const CLERK_KID: &str = "ins_2GIoQhbUpy0hX7B2cVkuTMinXoD";

#[tokio::test]
async fn stale_cache_answers_at_once_then_drops_withdrawn_keys() {
    let (url, hits) = serve(r#"{"keys":[]}"#).await;
    let (store, jwks) = stale_store(&url);
    // Answered from the stale cache while the refresh runs behind.
    assert!(store.key(Some(CLERK_KID)).await.is_ok());
    background_refresh_done(&jwks).await;
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    // The JWKS no longer has the key: it no longer verifies.
    assert_eq!(
        store.key(Some(CLERK_KID)).await.unwrap_err(),
        KeyError::Unknown
    );
}

#[tokio::test]
async fn stale_keys_stay_in_use_while_the_jwks_is_down() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/jwks", listener.local_addr().unwrap());
    drop(listener);
    let (store, jwks) = stale_store(&url);
    assert!(store.key(Some(CLERK_KID)).await.is_ok());
    background_refresh_done(&jwks).await;
    assert!(jwks.read().last_error.is_some());
    assert!(store.key(Some(CLERK_KID)).await.is_ok());
    assert!(matches!(
        store.key(Some("ins_other")).await,
        Err(KeyError::Unavailable { .. })
    ));
}

#[test]
fn debug_output_is_redacted() {
    let source = KeySource::Pem("-----BEGIN PUBLIC KEY-----\nsecretish\n".into());
    assert_eq!(format!("{source:?}"), "Pem(<redacted>)");
    let keys = parse_jwks(CLERK_JWKS.as_bytes()).unwrap();
    let shown = format!("{:?}", keys.values().next().unwrap());
    assert!(!shown.contains("qYy3"), "{shown}");
    assert!(shown.contains("<redacted>"), "{shown}");
}
