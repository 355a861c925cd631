//! Clients that trickle bytes are cut off at a deadline, and refusals are
//! counted in /metrics (their log lines are bounded; see `log_limit`).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::spawn_app_with;

/// Sends `head`, then `body` a byte every 200 ms, while reading the answer;
/// returns the answer's status line and how many body bytes went out
/// before the server answered.
async fn trickle(address: &str, head: &str, body: &[u8]) -> (String, usize) {
    let addr = address.trim_start_matches("http://");
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let reader = tokio::spawn(async move {
        let mut answer = Vec::new();
        let _ = read.read_to_end(&mut answer).await;
        String::from_utf8_lossy(&answer)
            .lines()
            .next()
            .unwrap_or("")
            .to_owned()
    });
    let _ = write.write_all(head.as_bytes()).await;
    let mut sent = 0;
    for byte in body {
        if reader.is_finished() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        if write.write_all(std::slice::from_ref(byte)).await.is_err() {
            break;
        }
        sent += 1;
    }
    (reader.await.unwrap(), sent)
}

#[tokio::test]
async fn a_body_sent_too_slowly_is_cut_at_the_deadline() {
    let app = spawn_app_with(&[("TENANT_PLANE__HTTP__BODY_READ_TIMEOUT", "1s")]).await;
    let body = [b'x'; 40];
    let head = format!(
        "POST /webhooks/clerk HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n",
        body.len()
    );
    let (status, sent) = trickle(&app.address, &head, &body).await;
    assert!(status.contains(" 408 "), "{status:?}");
    assert!(
        sent < body.len(),
        "answered only after the whole body: {sent}"
    );
    assert_eq!(app.count("webhook_events").await, 0);
}

#[tokio::test]
async fn a_resolve_body_sent_too_slowly_is_cut_at_the_deadline_too() {
    let app = crate::helpers::spawn_app_configured(|env| {
        env.with_internal_tokens(&[crate::resolve::SERVICE_TOKEN])
            .with_clerk_issuer(testkit::jwt::ISSUER)
            .set(
                "TENANT_PLANE__CLERK__JWT_PUBLIC_KEY",
                testkit::jwt::public_pem("rsa-a"),
            )
            .set("TENANT_PLANE__HTTP__BODY_READ_TIMEOUT", "1s")
    })
    .await;
    let body = br#"{"token": "a.b.c", "wait_ms": 0, "padding": "xxxxxxxxxxxxxxxxxxxxxxxx"}"#;
    let head = format!(
        "POST /internal/v1/resolve HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\n\
         authorization: Bearer {}\r\ncontent-length: {}\r\n\r\n",
        crate::resolve::SERVICE_TOKEN,
        body.len()
    );
    let (status, sent) = trickle(&app.address, &head, body).await;
    assert!(status.contains(" 408 "), "{status:?}");
    assert!(
        sent < body.len(),
        "answered only after the whole body: {sent}"
    );
}

#[tokio::test]
async fn a_head_sent_too_slowly_is_cut_at_the_deadline() {
    let app = spawn_app_with(&[("TENANT_PLANE__HTTP__HEADER_READ_TIMEOUT", "1s")]).await;
    let head = "GET /healthz HTTP/1.1\r\nhost: test\r\nx-padding: ";
    let rest = [b'a'; 40];
    let (_, sent) = trickle(&app.address, head, &rest).await;
    // actix answers 408 and closes, or just closes: either way, before the
    // client was done.
    assert!(
        sent < rest.len(),
        "the slow head held the connection: {sent}"
    );
}

#[tokio::test]
async fn refusals_are_counted_in_metrics() {
    let app = spawn_app_with(&[]).await;
    let forged = 50;
    for _ in 0..forged {
        let mut headers = http::HeaderMap::new();
        headers.insert("svix-id", "msg_forged".parse().unwrap());
        headers.insert(
            "svix-timestamp",
            crate::helpers::now().to_string().parse().unwrap(),
        );
        headers.insert("svix-signature", "v1,Zm9yZ2Vk".parse().unwrap());
        let r = app.post_raw(b"{}".to_vec(), headers).await;
        assert_eq!(r.status(), 401);
    }
    let metrics = app.metrics().await;
    let line = metrics
        .lines()
        .find(|l| l.starts_with("tenant_plane_http_refusals_total{error=\"invalid_signature\"}"))
        .unwrap_or_else(|| panic!("no refusal counter in:\n{metrics}"));
    let count: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    // Other tests in this process refuse too: at least ours are counted.
    assert!(count >= f64::from(forged), "{line}");
}

#[tokio::test]
async fn a_body_that_arrives_in_pieces_within_the_deadline_is_read_whole() {
    let app = spawn_app_with(&[("TENANT_PLANE__HTTP__BODY_READ_TIMEOUT", "5s")]).await;
    let body = webhooks::samples::SampleEvent::new(
        "organization.created",
        &webhooks::samples::SampleIds::random(),
    )
    .unwrap()
    .to_body();
    let signed =
        app.verifier
            .signed_headers(&crate::helpers::new_svix_id(), crate::helpers::now(), &body);
    let mut head = format!(
        "POST /webhooks/clerk HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\n\
         connection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in &signed {
        head.push_str(&format!("{name}: {}\r\n", value.to_str().unwrap()));
    }
    head.push_str("\r\n");
    let stream = TcpStream::connect(app.address.trim_start_matches("http://"))
        .await
        .unwrap();
    stream.set_nodelay(true).unwrap();
    let (mut read, mut write) = stream.into_split();
    write.write_all(head.as_bytes()).await.unwrap();
    // Three pieces, apart: the server sees the body as several chunks.
    for piece in body.chunks(body.len().div_ceil(3)) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        write.write_all(piece).await.unwrap();
    }
    let mut answer = Vec::new();
    read.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    // The signature held over the joined body, and the event is stored.
    assert_eq!(app.count("webhook_events").await, 1);
}
