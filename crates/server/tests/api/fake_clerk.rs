//! A local stand-in for Clerk's Backend API, following the published spec's
//! shapes (Clerk Backend API spec, version 2026-05-12): bearer
//! secret key, `{data, total_count}` lists with limit 1-500 and offset, the
//! users list as a bare array with a `starting_after` cursor, deep-merging
//! metadata PATCH, Clerk-style `{"errors": [...]}` bodies, and 429s with
//! Retry-After on demand.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::{json, Value};

pub const SECRET: &str = "sk_test_fakeclerk0123456789";

#[derive(Default)]
pub struct State {
    pub organizations: Vec<Value>,
    pub users: Vec<Value>,
    /// (organization id, membership)
    pub memberships: Vec<(String, Value)>,
    /// Answer this many next requests with 429 and Retry-After: 1.
    pub throttle_next: u32,
    /// Every request: when, and its method and path.
    pub log: Vec<(Instant, String, u16)>,
}

#[derive(Clone)]
pub struct FakeClerk {
    pub url: String,
    pub state: Arc<Mutex<State>>,
}

pub fn organization(id: &str, name: &str, slug: &str, updated_at: i64) -> Value {
    json!({
        "object": "organization", "id": id, "name": name, "slug": slug,
        "image_url": "https://img.clerk.com/x", "has_image": false, "members_count": 1,
        "public_metadata": {}, "private_metadata": {}, "max_allowed_memberships": 5,
        "admin_delete_enabled": true, "created_at": updated_at, "updated_at": updated_at
    })
}

pub fn user(id: &str, email: &str, updated_at: i64) -> Value {
    json!({
        "object": "user", "id": id, "first_name": "Ada", "last_name": "Lovelace",
        "username": null, "image_url": "https://img.clerk.com/y", "external_id": null,
        "primary_email_address_id": "idn_1",
        "email_addresses": [{"id": "idn_1", "object": "email_address", "email_address": email,
                             "verification": null, "linked_to": []}],
        "public_metadata": {}, "created_at": updated_at, "updated_at": updated_at
    })
}

pub fn membership(id: &str, org_id: &str, user_id: &str, role: &str, updated_at: i64) -> Value {
    json!({
        "object": "organization_membership", "id": id, "role": role, "permissions": [],
        "public_metadata": {}, "organization": {"object": "organization", "id": org_id, "name": "n", "slug": "s"},
        "public_user_data": {"user_id": user_id, "first_name": "Ada", "last_name": "L",
                             "image_url": "https://img.clerk.com/y", "has_image": false, "identifier": "ada@example.com"},
        "created_at": updated_at, "updated_at": updated_at
    })
}

fn error(status: u16, code: &str, message: &str) -> HttpResponse {
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap()).json(json!({
        "errors": [{"message": message, "long_message": message, "code": code}]
    }))
}

fn deep_merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    deep_merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

fn page(items: Vec<Value>, req: &HttpRequest) -> HttpResponse {
    let q: web::Query<std::collections::HashMap<String, String>> =
        web::Query::from_query(req.query_string()).unwrap();
    let limit: usize = q.get("limit").and_then(|l| l.parse().ok()).unwrap_or(10);
    let offset: usize = q.get("offset").and_then(|o| o.parse().ok()).unwrap_or(0);
    if !(1..=500).contains(&limit) {
        return error(
            400,
            "form_param_value_invalid",
            "limit must be between 1 and 500",
        );
    }
    let total = items.len();
    let data: Vec<Value> = items.into_iter().skip(offset).take(limit).collect();
    HttpResponse::Ok().json(json!({ "data": data, "total_count": total }))
}

async fn handle(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<Arc<Mutex<State>>>,
) -> HttpResponse {
    let mut s = state.lock().unwrap();
    let path = req.path().to_owned();
    let authorized = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        == Some(&format!("Bearer {SECRET}"));
    let response = if !authorized {
        error(401, "authentication_invalid", "Invalid authentication")
    } else if s.throttle_next > 0 {
        s.throttle_next -= 1;
        let mut r = error(429, "too_many_requests", "Too many requests");
        r.headers_mut().insert(
            actix_web::http::header::RETRY_AFTER,
            actix_web::http::header::HeaderValue::from_static("1"),
        );
        r
    } else {
        let parts: Vec<&str> = path.trim_start_matches("/v1/").split('/').collect();
        match (req.method().as_str(), parts.as_slice()) {
            ("GET", ["organizations"]) => page(s.organizations.clone(), &req),
            ("GET", ["organizations", id]) => match s.organizations.iter().find(|o| o["id"] == *id)
            {
                Some(o) => HttpResponse::Ok().json(o),
                None => error(404, "resource_not_found", "not found"),
            },
            ("GET", ["organizations", id, "memberships"]) => {
                let items = s
                    .memberships
                    .iter()
                    .filter(|(o, _)| o == id)
                    .map(|(_, m)| m.clone())
                    .collect();
                page(items, &req)
            }
            ("PATCH", ["organizations", id, "metadata"]) => {
                let patch: Value = serde_json::from_slice(&body).unwrap();
                match s.organizations.iter_mut().find(|o| o["id"] == *id) {
                    Some(o) => {
                        deep_merge(&mut o["public_metadata"], &patch["public_metadata"]);
                        HttpResponse::Ok().json(o.clone())
                    }
                    None => error(404, "resource_not_found", "not found"),
                }
            }
            ("GET", ["users"]) => {
                let q: web::Query<std::collections::HashMap<String, String>> =
                    web::Query::from_query(req.query_string()).unwrap();
                let limit: usize = q.get("limit").and_then(|l| l.parse().ok()).unwrap_or(10);
                let start = match q.get("starting_after") {
                    Some(after) => s
                        .users
                        .iter()
                        .position(|u| u["id"] == after.as_str())
                        .map_or(0, |i| i + 1),
                    None => 0,
                };
                HttpResponse::Ok().json(
                    s.users
                        .iter()
                        .skip(start)
                        .take(limit)
                        .cloned()
                        .collect::<Vec<_>>(),
                )
            }
            _ => error(404, "resource_not_found", "no such route"),
        }
    };
    let status = response.status().as_u16();
    s.log
        .push((Instant::now(), format!("{} {}", req.method(), path), status));
    response
}

impl FakeClerk {
    pub async fn start(state: State) -> Self {
        let state = Arc::new(Mutex::new(state));
        let data = web::Data::new(state.clone());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .default_service(web::to(handle))
        })
        .workers(1)
        .listen(listener)
        .unwrap()
        .run();
        tokio::spawn(server);
        Self {
            url: format!("http://127.0.0.1:{port}"),
            state,
        }
    }

    pub fn log(&self) -> Vec<(Instant, String, u16)> {
        self.state.lock().unwrap().log.clone()
    }
}
