//! A local stand-in for Clerk, the one the tests talk to: the
//! Backend API endpoints the client and the directory sync use, in the
//! shapes of Clerk's spec (fixtures/clerk/backend-api-openapi-2026-05-12.yml),
//! and, when asked, the Frontend API's JWKS document. An actix-web server on
//! 127.0.0.1, port 0, stopped when the [`FakeClerk`] is dropped. It records
//! every request with the time it arrived and can be told to fail.
//!
//! - `GET /v1/organizations`, `GET /v1/organizations/{id}/memberships`:
//!   `{"data": [...], "total_count": N}`, `limit` 1..=500 (default 10) and
//!   `offset` >= 0 (default 0), `order_by` `[+-]created_at` (default
//!   `-created_at`); anything else is a 400 with a Clerk errors body. An
//!   unknown organization is a 404.
//! - `GET /v1/users`: a bare array; `limit`, `offset`, `order_by` as above and
//!   the `starting_after` cursor (422 with a non-zero offset).
//! - `GET /v1/organizations/{id}`: the organization, or a 404.
//! - `PATCH /v1/organizations/{id}/metadata`: deep merge of
//!   `public_metadata` / `private_metadata`, `null` removes a key.
//! - No or a wrong `Authorization: Bearer` header: 401 with a Clerk body.
//! - Errors are `{"errors": [{"message", "long_message", "code"}]}`.
//! - Injected failures: the next N Backend API requests answered 429 with
//!   `Retry-After: 1` ([`FakeClerk::fail_next_with_429`]) or 500
//!   ([`FakeClerk::fail_next_with_500`]).
//! - `GET /.well-known/jwks.json`: 404 until [`FakeClerk::serve_jwks`]; then
//!   that body (200), or an error status ([`FakeClerk::fail_jwks_with`]).
//!   No authorization, as on Clerk's Frontend API. The fake's URL is the
//!   issuer of tokens verified against it.
//!
//! Items are held oldest first: [`FakeClerk::add_org`] and the other `add_`
//! methods make ids and timestamps of their own (a clock that ticks a second
//! per object); the `put_` methods take the caller's.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use actix_web::dev::ServerHandle;
use actix_web::http::StatusCode;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::{json, Map, Value};

/// A secret key for tests that need no particular one.
pub const SECRET_KEY: &str = "sk_test_fakeclerk0123456789";

/// Where the JWKS document is served.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Logged {
    /// When the request arrived (before it was answered).
    pub at: Instant,
    pub method: String,
    pub path: String,
    /// Decoded query pairs, in order.
    pub query: Vec<(String, String)>,
    pub status: u16,
    pub body: Option<Value>,
    pub content_type: Option<String>,
    pub api_version: Option<String>,
}

impl Logged {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

pub struct FakeClerk {
    /// `http://127.0.0.1:<port>`: the Backend API URL, and the issuer.
    pub url: String,
    state: Arc<State>,
    handle: ServerHandle,
}

struct State {
    secret: String,
    data: Mutex<Data>,
}

#[derive(Default)]
struct Data {
    clock_ms: i64,
    next_id: u32,
    orgs: Vec<Value>,
    users: Vec<Value>,
    memberships: Vec<Value>,
    fail_with_429: u32,
    fail_with_500: u32,
    /// Status and body of the JWKS document; `None`: not served (404).
    jwks: Option<(u16, String)>,
    log: Vec<Logged>,
}

impl Data {
    fn tick(&mut self) -> i64 {
        self.clock_ms += 1000;
        self.clock_ms
    }

    fn id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}fake{:05}x{}", self.next_id, self.next_id * 7919)
    }

    fn org_index(&self, id: &str) -> Option<usize> {
        self.orgs.iter().position(|o| o["id"] == id)
    }

    fn membership(&self, id: &str, org_id: &str, user_id: &str, role: &str, at: i64) -> Value {
        let org = self.orgs[self
            .org_index(org_id)
            .unwrap_or_else(|| panic!("membership of an unknown organization {org_id}"))]
        .clone();
        let user = self
            .users
            .iter()
            .find(|u| u["id"] == user_id)
            .unwrap_or_else(|| panic!("membership of an unknown user {user_id}"));
        membership_object(id, org, user, role, at)
    }
}

impl FakeClerk {
    /// Starts the server on 127.0.0.1, port 0, accepting `secret` only.
    pub async fn start(secret: &str) -> Self {
        let state = Arc::new(State {
            secret: secret.to_owned(),
            data: Mutex::new(Data {
                clock_ms: 1_716_883_200_000,
                ..Data::default()
            }),
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local addr").port();
        let data = web::Data::from(state.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .default_service(web::to(handle))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .expect("listen")
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Self {
            url: format!("http://127.0.0.1:{port}"),
            state,
            handle,
        }
    }

    /// Starts the server ([`SECRET_KEY`]) serving `jwks` at
    /// `/.well-known/jwks.json`.
    pub async fn serving_jwks(jwks: impl Into<String>) -> Self {
        let fake = Self::start(SECRET_KEY).await;
        fake.serve_jwks(jwks);
        fake
    }

    fn data(&self) -> MutexGuard<'_, Data> {
        self.state.data.lock().expect("fake Clerk state")
    }

    /// Adds an organization (newer than every earlier one); answers its id.
    pub fn add_org(&self, name: &str, public_metadata: Value) -> String {
        let mut d = self.data();
        let id = d.id("org_");
        let at = d.tick();
        let slug = name.to_lowercase().replace(' ', "-");
        let mut org = organization_object(&id, name, &slug, at);
        org["public_metadata"] = public_metadata;
        org["private_metadata"] = json!({"internal": "not for the client"});
        d.orgs.push(org);
        id
    }

    /// Adds a user `first_name` Example, `<first_name>@example.com`.
    pub fn add_user(&self, first_name: &str) -> String {
        let mut d = self.data();
        let id = d.id("user_");
        let email_id = d.id("idn_");
        let at = d.tick();
        let email = format!("{}@example.com", first_name.to_lowercase());
        d.users.push(user_object(
            &id, &email_id, first_name, "Example", &email, at,
        ));
        id
    }

    /// Adds a membership of a known user in a known organization.
    pub fn add_membership(&self, org_id: &str, user_id: &str, role: &str) -> String {
        let mut d = self.data();
        let id = d.id("orgmem_");
        let at = d.tick();
        let membership = d.membership(&id, org_id, user_id, role, at);
        d.memberships.push(membership);
        id
    }

    /// Puts an organization with the caller's id, created and last updated
    /// at `updated_at` (ms), empty metadata.
    pub fn put_org(&self, id: &str, name: &str, slug: &str, updated_at: i64) {
        self.data()
            .orgs
            .push(organization_object(id, name, slug, updated_at));
    }

    /// Removes an organization, as deleting it in Clerk does: it is no
    /// longer listed, and its endpoints answer 404.
    pub fn remove_org(&self, id: &str) {
        let mut d = self.data();
        let i = d.org_index(id).expect("known org");
        d.orgs.remove(i);
    }

    /// Puts a user Ada Lovelace with the caller's id and primary `email`.
    pub fn put_user(&self, id: &str, email: &str, updated_at: i64) {
        let email_id = format!("idn_{}", id.trim_start_matches("user_"));
        self.data().users.push(user_object(
            id, &email_id, "Ada", "Lovelace", email, updated_at,
        ));
    }

    /// Puts a membership with the caller's id, of a user and organization
    /// put or added before.
    pub fn put_membership(
        &self,
        id: &str,
        org_id: &str,
        user_id: &str,
        role: &str,
        updated_at: i64,
    ) {
        let mut d = self.data();
        let membership = d.membership(id, org_id, user_id, role, updated_at);
        d.memberships.push(membership);
    }

    /// Answers the next `n` Backend API requests with 429 and
    /// `Retry-After: 1`.
    pub fn fail_next_with_429(&self, n: u32) {
        self.data().fail_with_429 = n;
    }

    /// Answers the next `n` Backend API requests with 500.
    pub fn fail_next_with_500(&self, n: u32) {
        self.data().fail_with_500 = n;
    }

    /// Serves `jwks` (200) at `/.well-known/jwks.json` from now on.
    pub fn serve_jwks(&self, jwks: impl Into<String>) {
        self.data().jwks = Some((200, jwks.into()));
    }

    /// Answers `/.well-known/jwks.json` with `status` and an error body from
    /// now on.
    pub fn fail_jwks_with(&self, status: u16) {
        self.data().jwks = Some((status, "{\"error\":\"down\"}".into()));
    }

    /// The URL of the JWKS document.
    pub fn jwks_url(&self) -> String {
        format!("{}{JWKS_PATH}", self.url)
    }

    /// JWKS requests answered so far.
    pub fn jwks_requests(&self) -> usize {
        self.data()
            .log
            .iter()
            .filter(|r| r.path == JWKS_PATH)
            .count()
    }

    /// Every request so far (JWKS ones too), in arrival order.
    pub fn requests(&self) -> Vec<Logged> {
        self.data().log.clone()
    }

    /// The organization as the fake holds it now.
    pub fn org(&self, id: &str) -> Value {
        let d = self.data();
        d.orgs[d.org_index(id).expect("known org")].clone()
    }
}

impl Drop for FakeClerk {
    fn drop(&mut self) {
        // Sends the stop command at once; the future only waits for it.
        drop(self.handle.stop(false));
    }
}

fn organization_object(id: &str, name: &str, slug: &str, at: i64) -> Value {
    json!({
        "object": "organization",
        "id": id,
        "name": name,
        "slug": slug,
        "image_url": "https://img.clerk.com/default",
        "has_image": false,
        "max_allowed_memberships": 5,
        "admin_delete_enabled": true,
        "public_metadata": {},
        "private_metadata": {},
        "created_by": null,
        "created_at": at,
        "updated_at": at,
    })
}

fn user_object(
    id: &str,
    email_id: &str,
    first_name: &str,
    last_name: &str,
    email: &str,
    at: i64,
) -> Value {
    json!({
        "id": id,
        "object": "user",
        "external_id": null,
        "primary_email_address_id": email_id,
        "primary_phone_number_id": null,
        "primary_web3_wallet_id": null,
        "username": null,
        "first_name": first_name,
        "last_name": last_name,
        "image_url": "https://img.clerk.com/user",
        "has_image": false,
        "public_metadata": {},
        "private_metadata": {},
        "unsafe_metadata": {},
        "email_addresses": [{
            "id": email_id,
            "object": "email_address",
            "email_address": email,
            "reserved": false,
            "verification": {"status": "verified", "strategy": "admin", "object": "verification_admin"},
            "linked_to": [],
            "created_at": at,
            "updated_at": at,
        }],
        "phone_numbers": [],
        "web3_wallets": [],
        "passkeys": [],
        "password_enabled": true,
        "two_factor_enabled": false,
        "totp_enabled": false,
        "backup_code_enabled": false,
        "external_accounts": [],
        "saml_accounts": [],
        "last_sign_in_at": null,
        "banned": false,
        "locked": false,
        "created_at": at,
        "updated_at": at,
    })
}

fn membership_object(id: &str, org: Value, user: &Value, role: &str, at: i64) -> Value {
    json!({
        "id": id,
        "object": "organization_membership",
        "role": role,
        "role_name": role.trim_start_matches("org:"),
        "permissions": ["org:sys_profile:read"],
        "public_metadata": {},
        "private_metadata": {},
        "organization": org,
        "public_user_data": {
            "user_id": user["id"],
            "first_name": user["first_name"],
            "last_name": user["last_name"],
            "profile_image_url": user["image_url"],
            "image_url": user["image_url"],
            "has_image": false,
            "identifier": user["email_addresses"][0]["email_address"],
            "username": null,
        },
        "created_at": at,
        "updated_at": at,
    })
}

async fn handle(req: HttpRequest, body: web::Bytes, state: web::Data<State>) -> HttpResponse {
    let at = Instant::now();
    let query: Vec<(String, String)> = query_pairs(req.query_string()).unwrap_or_default();
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let body_json = if body.is_empty() {
        None
    } else {
        Some(serde_json::from_slice(&body).unwrap_or(Value::String("<not JSON>".into())))
    };
    let mut data = state.data.lock().expect("fake Clerk state");
    let response = if req.path() == JWKS_PATH {
        jwks(&data, req.method().as_str())
    } else {
        answer(
            &mut data,
            &state.secret,
            req.method().as_str(),
            req.path(),
            &query,
            header("authorization").as_deref(),
            body_json.as_ref(),
        )
    };
    data.log.push(Logged {
        at,
        method: req.method().to_string(),
        path: req.path().to_owned(),
        query,
        status: response.status().as_u16(),
        body: body_json,
        content_type: header("content-type"),
        api_version: header("clerk-api-version"),
    });
    response
}

fn query_pairs(query: &str) -> Option<Vec<(String, String)>> {
    web::Query::<Vec<(String, String)>>::from_query(query)
        .ok()
        .map(|q| q.into_inner())
}

fn jwks(d: &Data, method: &str) -> HttpResponse {
    match (&d.jwks, method) {
        (Some((status, body)), "GET") => {
            HttpResponse::build(StatusCode::from_u16(*status).expect("a valid status"))
                .content_type("application/json")
                .body(body.clone())
        }
        _ => not_found("resource"),
    }
}

fn clerk_error(status: u16, code: &str, message: &str, long_message: &str) -> HttpResponse {
    HttpResponse::build(StatusCode::from_u16(status).expect("a valid status")).json(json!({
        "errors": [{"message": message, "long_message": long_message, "code": code}],
        "clerk_trace_id": "trace_fake",
    }))
}

fn not_found(what: &str) -> HttpResponse {
    clerk_error(
        404,
        "resource_not_found",
        "not found",
        &format!("Given {what} not found"),
    )
}

fn invalid_param(name: &str, why: &str) -> HttpResponse {
    clerk_error(
        400,
        "form_param_value_invalid",
        "is invalid",
        &format!("{name} {why}"),
    )
}

fn answer(
    d: &mut Data,
    secret: &str,
    method: &str,
    path: &str,
    query: &[(String, String)],
    authorization: Option<&str>,
    body: Option<&Value>,
) -> HttpResponse {
    if d.fail_with_429 > 0 {
        d.fail_with_429 -= 1;
        let mut r = clerk_error(
            429,
            "too_many_requests",
            "Too Many Requests",
            "Too many requests, retry later",
        );
        r.headers_mut().insert(
            actix_web::http::header::RETRY_AFTER,
            actix_web::http::header::HeaderValue::from_static("1"),
        );
        return r;
    }
    if d.fail_with_500 > 0 {
        d.fail_with_500 -= 1;
        return clerk_error(
            500,
            "internal_clerk_error",
            "Oops, an unexpected error occurred",
            "There was an internal error on our servers",
        );
    }
    if authorization != Some(format!("Bearer {secret}").as_str()) {
        return clerk_error(
            401,
            "authentication_invalid",
            "Unauthorized request",
            "You are not authorized to perform this request",
        );
    }

    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method, segments.as_slice()) {
        ("GET", ["v1", "organizations"]) => {
            let orgs = d.orgs.clone();
            list_page(orgs, query, true)
        }
        ("GET", ["v1", "organizations", id]) => match d.org_index(id) {
            Some(i) => HttpResponse::Ok().json(&d.orgs[i]),
            None => not_found("organization"),
        },
        ("GET", ["v1", "organizations", id, "memberships"]) => {
            if d.org_index(id).is_none() {
                return not_found("organization");
            }
            let members: Vec<Value> = d
                .memberships
                .iter()
                .filter(|m| m["organization"]["id"] == *id)
                .cloned()
                .collect();
            list_page(members, query, true)
        }
        ("GET", ["v1", "users"]) => {
            let users = d.users.clone();
            list_page(users, query, false)
        }
        ("PATCH", ["v1", "organizations", id, "metadata"]) => {
            let Some(i) = d.org_index(id) else {
                return not_found("organization");
            };
            let Some(Value::Object(fields)) = body else {
                return clerk_error(
                    422,
                    "form_param_invalid",
                    "is invalid",
                    "body must be an object",
                );
            };
            if let Some(k) = fields
                .keys()
                .find(|k| *k != "public_metadata" && *k != "private_metadata")
            {
                return clerk_error(422, "form_param_unknown", "is unknown", k);
            }
            for key in ["public_metadata", "private_metadata"] {
                match fields.get(key) {
                    None => {}
                    Some(patch @ Value::Object(_)) => {
                        let target = &mut d.orgs[i][key];
                        if !target.is_object() {
                            *target = Value::Object(Map::new());
                        }
                        deep_merge(target, patch);
                    }
                    Some(_) => {
                        return clerk_error(422, "form_param_invalid", "is invalid", key);
                    }
                }
            }
            let now = d.tick();
            d.orgs[i]["updated_at"] = json!(now);
            HttpResponse::Ok().json(&d.orgs[i])
        }
        _ => not_found("resource"),
    }
}

/// Clerk's deep merge: objects merge key by key, `null` removes a key,
/// anything else replaces.
fn deep_merge(target: &mut Value, patch: &Value) {
    let (Value::Object(target), Value::Object(patch)) = (target, patch) else {
        return;
    };
    for (key, value) in patch {
        if value.is_null() {
            target.remove(key);
            continue;
        }
        match target.get_mut(key) {
            Some(existing) if existing.is_object() && value.is_object() => {
                deep_merge(existing, value)
            }
            _ => {
                target.insert(key.clone(), value.clone());
            }
        }
    }
}

/// Pagination as the spec describes it. `enveloped`: `{data, total_count}`
/// (organizations, memberships) or a bare array with a cursor (users).
fn list_page(mut items: Vec<Value>, query: &[(String, String)], enveloped: bool) -> HttpResponse {
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let limit = match param("limit") {
        None => 10,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=500).contains(&n) => n,
            _ => return invalid_param("limit", "must be an integer between 1 and 500"),
        },
    };
    let offset = match param("offset") {
        None => 0,
        Some(v) => match v.parse::<usize>() {
            Ok(n) => n,
            _ => return invalid_param("offset", "must be an integer greater or equal to zero"),
        },
    };
    let ascending = match param("order_by") {
        None | Some("-created_at") => false,
        Some("created_at") | Some("+created_at") => true,
        Some(_) => return invalid_param("order_by", "is not supported by the fake"),
    };
    // Items are held oldest first.
    if !ascending {
        items.reverse();
    }
    let total_count = items.len();
    let mut start = offset;
    if !enveloped {
        if let Some(cursor) = param("starting_after") {
            if offset != 0 {
                return clerk_error(
                    422,
                    "form_param_invalid",
                    "is invalid",
                    "starting_after cannot be combined with a non-zero offset",
                );
            }
            match items.iter().position(|u| u["id"] == cursor) {
                Some(i) => start = i + 1,
                None => return invalid_param("starting_after", "is not a known user"),
            }
        }
    }
    let page: Vec<Value> = items.into_iter().skip(start).take(limit).collect();
    if enveloped {
        HttpResponse::Ok().json(json!({ "data": page, "total_count": total_count }))
    } else {
        HttpResponse::Ok().json(page)
    }
}
