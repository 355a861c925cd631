//! Every refused delivery answers 401 with a JSON error and stores nothing.

use http::HeaderMap;
use webhooks::samples::{SampleEvent, SampleIds};
use webhooks::WebhookVerifier;

use crate::helpers::{new_svix_id, now, random_secret, spawn_app, TestApp};

fn org_created() -> Vec<u8> {
    SampleEvent::new("organization.created", &SampleIds::random())
        .unwrap()
        .to_body()
}

async fn assert_refused_and_nothing_stored(app: &TestApp, body: Vec<u8>, headers: HeaderMap) {
    let response = app.post_raw(body, headers).await;
    assert_eq!(response.status(), 401);
    let json: serde_json::Value = response.json().await.unwrap();
    assert_eq!(json["error"], "invalid_signature");
    assert!(json["message"].as_str().unwrap().len() > 10);
    assert_eq!(app.count("webhook_events").await, 0);
    assert_eq!(app.count("tenant_registry").await, 0);
}

#[tokio::test]
async fn a_validly_signed_delivery_is_accepted_and_applied() {
    let app = spawn_app().await;
    let ids = SampleIds::random();
    let body = SampleEvent::new("organization.created", &ids)
        .unwrap()
        .to_body();
    let response = app.deliver(&new_svix_id(), body).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("x-request-id"));
    assert_eq!(crate::helpers::outcome(response).await, "applied");
    assert!(app.tenant(ids.org_id.as_str()).await.is_some());
}

#[tokio::test]
async fn a_tampered_body_is_refused() {
    let app = spawn_app().await;
    let body = org_created();
    let headers = app.verifier.signed_headers(&new_svix_id(), now(), &body);
    let mut tampered = body.clone();
    let text = String::from_utf8(tampered.clone()).unwrap();
    tampered = text.replace("Acme Corp", "Evil Corp").into_bytes();
    assert_ne!(tampered, body);
    assert_refused_and_nothing_stored(&app, tampered, headers).await;
}

#[tokio::test]
async fn a_signature_made_with_another_secret_is_refused() {
    let app = spawn_app().await;
    let body = org_created();
    let other = WebhookVerifier::new(&random_secret()).unwrap();
    let headers = other.signed_headers(&new_svix_id(), now(), &body);
    assert_refused_and_nothing_stored(&app, body, headers).await;
}

#[tokio::test]
async fn each_missing_header_is_refused() {
    let app = spawn_app().await;
    for name in ["svix-id", "svix-timestamp", "svix-signature"] {
        let body = org_created();
        let mut headers = app.verifier.signed_headers(&new_svix_id(), now(), &body);
        headers.remove(name);
        assert_refused_and_nothing_stored(&app, body, headers).await;
    }
    assert_refused_and_nothing_stored(&app, org_created(), HeaderMap::new()).await;
}

#[tokio::test]
async fn timestamps_beyond_five_minutes_either_way_are_refused() {
    let app = spawn_app().await;
    for offset in [-301, 301, -3600] {
        let body = org_created();
        let headers = app
            .verifier
            .signed_headers(&new_svix_id(), now() + offset, &body);
        assert_refused_and_nothing_stored(&app, body, headers).await;
    }
}

#[tokio::test]
async fn malformed_signature_headers_are_refused() {
    let app = spawn_app().await;
    for bad in ["", "v1,", "v1", "garbage", "v1,!!!notbase64", "v2,AAAA"] {
        let body = org_created();
        let mut headers = app.verifier.signed_headers(&new_svix_id(), now(), &body);
        headers.insert("svix-signature", bad.parse().unwrap());
        assert_refused_and_nothing_stored(&app, body, headers).await;
    }
    let body = org_created();
    let mut headers = app.verifier.signed_headers(&new_svix_id(), now(), &body);
    headers.insert("svix-timestamp", "yesterday".parse().unwrap());
    assert_refused_and_nothing_stored(&app, body, headers).await;
}

#[tokio::test]
async fn one_valid_signature_among_several_is_accepted() {
    let app = spawn_app().await;
    let body = org_created();
    let id = new_svix_id();
    let ts = now();
    let valid = app.verifier.sign(&id, ts, &body);
    let rotated_out = WebhookVerifier::new(&random_secret())
        .unwrap()
        .sign(&id, ts, &body);
    let mut headers = app.verifier.signed_headers(&id, ts, &body);
    headers.insert(
        "svix-signature",
        format!("{rotated_out} {valid} v1,AAAA").parse().unwrap(),
    );
    let response = app.post_raw(body, headers).await;
    assert_eq!(response.status(), 200);
    assert_eq!(app.count("webhook_events").await, 1);
}

#[tokio::test]
async fn unbranded_webhook_headers_are_accepted() {
    let app = spawn_app().await;
    let body = org_created();
    let id = new_svix_id();
    let ts = now();
    let mut headers = HeaderMap::new();
    headers.insert("webhook-id", id.parse().unwrap());
    headers.insert("webhook-timestamp", ts.to_string().parse().unwrap());
    headers.insert(
        "webhook-signature",
        app.verifier.sign(&id, ts, &body).parse().unwrap(),
    );
    let response = app.post_raw(body, headers).await;
    assert_eq!(response.status(), 200);
    assert_eq!(app.stored_outcome(&id).await.as_deref(), Some("applied"));
}

#[tokio::test]
async fn a_valid_signature_replayed_under_another_svix_id_is_refused() {
    let app = spawn_app().await;
    let body = org_created();
    let mut headers = app.verifier.signed_headers("msg_original", now(), &body);
    headers.insert("svix-id", "msg_forged".parse().unwrap());
    assert_refused_and_nothing_stored(&app, body, headers).await;
}
