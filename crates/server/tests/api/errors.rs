//! Every HTTP error answer carries the one JSON body `{error, message}`:
//! handler errors, actix's extractor errors and unknown routes alike.

use serde_json::Value;

use crate::helpers::{spawn_app_with, TestApp};
use crate::resolve::SERVICE_TOKEN;

/// Status, content type and JSON body of an answer.
async fn answer(req: reqwest::RequestBuilder) -> (u16, String, Value) {
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let content_type = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let text = r.text().await.unwrap();
    let body =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not a JSON body ({e}): {text:?}"));
    (status, content_type, body)
}

fn assert_error_body(what: &str, got: (u16, String, Value), status: u16, code: &str) {
    let (s, content_type, body) = got;
    assert_eq!(s, status, "{what}: {body}");
    assert!(
        content_type.starts_with("application/json"),
        "{what}: {content_type}"
    );
    assert_eq!(body["error"], code, "{what}: {body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{what}: {body}"
    );
    assert_eq!(
        body.as_object().unwrap().len(),
        2,
        "{what}: only error and message: {body}"
    );
}

async fn app() -> TestApp {
    spawn_app_with(&[("TENANT_PLANE__INTERNAL__TOKENS", SERVICE_TOKEN)]).await
}

#[tokio::test]
async fn malformed_json_bodies_get_the_json_error_body() {
    let app = app().await;
    let url = format!("{}/internal/v1/resolve", app.address);
    for (what, body) in [
        ("not JSON", "{not json"),
        ("wrong shape", r#"{"tokn": "x"}"#),
        ("wrong type", r#"{"token": 7}"#),
    ] {
        let req = app
            .http
            .post(&url)
            .bearer_auth(SERVICE_TOKEN)
            .header("content-type", "application/json")
            .body(body);
        assert_error_body(what, answer(req).await, 400, "bad_request");
    }
}

#[tokio::test]
async fn malformed_query_strings_get_the_json_error_body() {
    let app = app().await;
    let req = app
        .http
        .get(format!("{}/internal/v1/tenants?limit=lots", app.address))
        .bearer_auth(SERVICE_TOKEN);
    assert_error_body("limit=lots", answer(req).await, 400, "bad_request");
    let req = app
        .http
        .get(format!(
            "{}/internal/v1/tenants?after=not-a-uuid",
            app.address
        ))
        .bearer_auth(SERVICE_TOKEN);
    assert_error_body("after=not-a-uuid", answer(req).await, 400, "bad_request");
}

#[tokio::test]
async fn unknown_routes_get_the_json_error_body() {
    let app = app().await;
    for path in ["/nope", "/internal/v1/nothing-here", "/internal/v2/tenants"] {
        let req = app
            .http
            .get(format!("{}{path}", app.address))
            .bearer_auth(SERVICE_TOKEN);
        assert_error_body(path, answer(req).await, 404, "not_found");
    }
}
