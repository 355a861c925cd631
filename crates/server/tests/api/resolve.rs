//! The resolver end to end: a webhook provisions a tenant, a session token
//! for its organization resolves to a connection to that tenant's database
//! as its role, and the HTTP route agrees with the library on every token.

use std::sync::Arc;

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use registry::tenants::Action;
use resolver::Resolver;
use serde_json::{json, Value};
use testkit::jwt::{self, sign};
use testkit::{FakeClerk, TestDatabase};

use crate::helpers::{spawn_app_configured, spawn_app_full, TestApp};

pub const SERVICE_TOKEN: &str = "test-service-token-0123456789";

/// A session of `org_id` issued now by `issuer`, whose role grants read and
/// manage on the projects feature.
fn session(issuer: &str, org_id: &str) -> jwt::Session {
    let mut session = jwt::Session::new(issuer, org_id, jwt::now());
    session.org.features = "o:projects".into();
    session.org.feature_permissions = "read,manage".into();
    session.org.feature_masks = "3".into();
    session
}

/// Claims of a v2 session token for `org_id`.
pub(crate) fn v2_claims(issuer: &str, org_id: &str) -> Value {
    session(issuer, org_id).v2()
}

/// Claims of a v1 session token for `org_id`.
fn v1_claims(issuer: &str, org_id: &str) -> Value {
    session(issuer, org_id).v1()
}

/// An app whose resolver trusts a fake Clerk serving the `rsa-a` key;
/// answers the app and the issuer (the fake's URL).
pub async fn spawn_resolving_app(extra: &[(&str, &str)]) -> (TestApp, String) {
    spawn_resolving_app_on(TestDatabase::migrated().await, extra).await
}

/// [`spawn_resolving_app`] with its control database `db`.
pub async fn spawn_resolving_app_on(db: TestDatabase, extra: &[(&str, &str)]) -> (TestApp, String) {
    let clerk = FakeClerk::serving_jwks(jwt::jwk_set(&[&jwt::jwk("rsa-a")])).await;
    let issuer = clerk.url.clone();
    let url = db.url();
    let mut app = spawn_app_full(db, &url, |env| {
        env.with_clerk_issuer(&issuer)
            .with_authorized_parties(&[jwt::AZP])
            .with_internal_tokens(&[SERVICE_TOKEN])
            .set("TENANT_PLANE__INTERNAL__EXPOSE_PASSWORDS", "true")
            .set("TENANT_PLANE__RESOLVER__JWKS_MIN_REFETCH", "1s")
            .set_all(extra)
    })
    .await;
    app.clerk = Some(clerk);
    (app, issuer)
}

/// The library resolver, as an application service would embed it.
pub async fn library_resolver(app: &TestApp) -> Arc<Resolver> {
    let resolver = tenant_plane::startup::build_resolver(&app.settings, app.pool())
        .unwrap()
        .expect("issuer configured");
    resolver.listen_for_changes(app.db_config());
    // Let the LISTEN connection establish before the test changes tenants.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    resolver
}

/// POST /internal/v1/resolve with the service token.
pub(crate) async fn post_resolve(app: &TestApp, token: &str) -> reqwest::Response {
    app.http
        .post(format!("{}/internal/v1/resolve", app.address))
        .bearer_auth(SERVICE_TOKEN)
        .json(&json!({ "token": token }))
        .send()
        .await
        .unwrap()
}

/// The resolve route's status and error code (`ok` on 200).
pub(crate) async fn http_verdict(app: &TestApp, token: &str) -> (u16, String) {
    let r = post_resolve(app, token).await;
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap();
    let code = if status == 200 {
        "ok".to_owned()
    } else {
        body["error"].as_str().unwrap().to_owned()
    };
    (status, code)
}

async fn library_verdict(resolver: &Resolver, token: &str) -> (u16, String) {
    match resolver.resolve(token).await {
        Ok(_) => (200, "ok".to_owned()),
        Err(e) => (e.status().as_u16(), e.code().to_owned()),
    }
}

fn b64(v: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

#[tokio::test]
async fn a_token_resolves_to_its_own_tenant_database_as_its_role_until_deletion() {
    let (app, issuer) = spawn_resolving_app(&[]).await;
    let resolver = library_resolver(&app).await;
    let a = app.create_org("A").await;
    let b = app.create_org("B").await;
    app.reconcile().await;

    for (ids, claims) in [
        (&a, v2_claims(&issuer, a.org_id.as_str())),
        (&b, v1_claims(&issuer, b.org_id.as_str())),
    ] {
        let t = app.registry_tenant(ids.org_id.as_str()).await;
        let ctx = resolver.resolve(&sign(&claims)).await.expect("resolves");
        assert_eq!(ctx.tenant.id, t.id);
        let conn = ctx.pool.get().await.unwrap();
        let row = conn
            .query_one("SELECT current_database(), current_user", &[])
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), t.db_name().unwrap().to_owned());
        assert_eq!(row.get::<_, String>(1), t.db_role().unwrap().to_owned());
    }
    let ctx = resolver
        .resolve(&sign(&v2_claims(&issuer, a.org_id.as_str())))
        .await
        .unwrap();
    assert_eq!(ctx.org_role(), Some("org:admin"));
    assert_eq!(
        ctx.session.org.as_ref().unwrap().permissions,
        ["org:projects:read", "org:projects:manage"]
    );
    drop(ctx);

    let tenant_a = app.registry_tenant(a.org_id.as_str()).await.id;
    assert!(resolver.has_pool(tenant_a));
    app.delete_org(&a).await;
    app.reconcile().await;
    crate::helpers::wait_until(
        "the pool to close",
        std::time::Duration::from_secs(10),
        || async { !resolver.has_pool(tenant_a) },
    )
    .await;
    let err = resolver
        .resolve(&sign(&v2_claims(&issuer, a.org_id.as_str())))
        .await
        .err()
        .expect("refused after deletion");
    assert_eq!((err.status().as_u16(), err.code()), (410, "tenant_deleted"));
}

#[tokio::test]
async fn a_token_verified_before_still_meets_a_suspension_at_once() {
    let (app, issuer) = spawn_resolving_app(&[]).await;
    let resolver = library_resolver(&app).await;
    let a = app.create_org("A").await;
    app.reconcile().await;
    let token = sign(&v2_claims(&issuer, a.org_id.as_str()));
    resolver.resolve(&token).await.expect("resolves");
    let verified = resolver.token_cache_stats();
    resolver.resolve(&token).await.expect("resolves again");
    assert_eq!(
        resolver.token_cache_stats().hits,
        verified.hits + 1,
        "the second resolve used the remembered verdict"
    );

    app.act(a.org_id.as_str(), Action::Suspend).await;
    app.reconcile().await;
    crate::helpers::wait_until(
        "the suspension to reach the resolver",
        std::time::Duration::from_secs(10),
        || async {
            matches!(resolver.resolve(&token).await, Err(e) if e.code() == "tenant_suspended")
        },
    )
    .await;
    assert!(
        resolver.token_cache_stats().hits > verified.hits + 1,
        "refused with the verdict still remembered"
    );
    let (status, code) = http_verdict(&app, &token).await;
    assert_eq!((status, code.as_str()), (403, "tenant_suspended"));
}

#[tokio::test]
async fn the_http_route_gives_the_library_verdict_for_every_token() {
    let (app, issuer) = spawn_resolving_app(&[]).await;
    let resolver = library_resolver(&app).await;
    let active = app.create_org("active").await;
    let suspended = app.create_org("suspended").await;
    let deleted = app.create_org("deleted").await;
    app.reconcile().await;
    app.act(suspended.org_id.as_str(), Action::Suspend).await;
    app.delete_org(&deleted).await;
    app.reconcile().await;
    let pending = app.create_org("pending").await;

    let org = active.org_id.as_str();
    let good = v2_claims(&issuer, org);
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = good.clone();
        f(&mut c);
        sign(&c)
    };
    let valid = sign(&good);
    let parts: Vec<&str> = valid.split('.').collect();
    let mut tampered_claims = good.clone();
    tampered_claims["o"]["id"] = json!(suspended.org_id.as_str());
    let hs256 = {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(jwt::KID_A.into());
        jsonwebtoken::encode(
            &header,
            &good,
            &EncodingKey::from_secret(jwt::public_pem("rsa-a").as_bytes()),
        )
        .unwrap()
    };

    let suite: Vec<(&str, String, u16)> = vec![
        ("valid v2", valid.clone(), 200),
        ("valid v1", sign(&v1_claims(&issuer, org)), 200),
        ("expired", with(&|c| c["exp"] = json!(jwt::now() - 60)), 401),
        (
            "issued in the future",
            with(&|c| c["iat"] = json!(jwt::now() + 600)),
            401,
        ),
        (
            "not yet valid",
            with(&|c| c["nbf"] = json!(jwt::now() + 600)),
            401,
        ),
        (
            "wrong issuer",
            with(&|c| c["iss"] = json!("https://evil.example.com")),
            401,
        ),
        (
            "wrong azp",
            with(&|c| c["azp"] = json!("https://evil.example.com")),
            401,
        ),
        (
            "missing azp",
            with(&|c| {
                c.as_object_mut().unwrap().remove("azp");
            }),
            401,
        ),
        (
            "unknown kid",
            jwt::mint(Algorithm::RS256, Some("no-such-kid"), "rsa-a", &good),
            401,
        ),
        (
            "signed by another key",
            jwt::mint(Algorithm::RS256, Some(jwt::KID_A), "rsa-c", &good),
            401,
        ),
        (
            "tampered payload",
            format!("{}.{}.{}", parts[0], b64(&tampered_claims), parts[2]),
            401,
        ),
        (
            "tampered signature",
            format!(
                "{}.{}.{}x",
                parts[0],
                parts[1],
                &parts[2][..parts[2].len() - 1]
            ),
            401,
        ),
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(&json!({"alg": "none", "typ": "JWT"})),
                parts[1]
            ),
            401,
        ),
        ("HS256 key confusion", hs256, 401),
        (
            "malformed base64",
            format!("{}.!!!.{}", parts[0], parts[2]),
            401,
        ),
        (
            "malformed JSON",
            format!(
                "{}.{}.{}",
                parts[0],
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("{not json"),
                parts[2]
            ),
            401,
        ),
        ("not a JWT", "hello".to_owned(), 401),
        (
            "no organization",
            with(&|c| {
                c.as_object_mut().unwrap().remove("o");
            }),
            403,
        ),
        // Registered from the token (resolver.register_unknown_orgs, on by
        // default), so as pending as any tenant being provisioned; the
        // 404 with registration off is in the register module.
        (
            "unseen organization",
            sign(&v2_claims(&issuer, "org_doesnotexist1")),
            503,
        ),
        (
            "suspended tenant",
            sign(&v2_claims(&issuer, suspended.org_id.as_str())),
            403,
        ),
        (
            "deleted tenant",
            sign(&v2_claims(&issuer, deleted.org_id.as_str())),
            410,
        ),
        (
            "provisioning tenant",
            sign(&v2_claims(&issuer, pending.org_id.as_str())),
            503,
        ),
    ];
    let mut codes = std::collections::HashSet::new();
    for (name, token, status) in &suite {
        let lib = library_verdict(&resolver, token).await;
        let http = http_verdict(&app, token).await;
        assert_eq!(lib.0, *status, "{name}: library said {lib:?}");
        assert_eq!(http, lib, "{name}: HTTP and library disagree");
        codes.insert(lib.1.clone());
    }
    // Each kind of failure has its own code (the token failures too);
    // `tenant_unknown`, given only with registration off, is the register
    // module's.
    assert!(codes.len() >= 14, "{codes:?}");

    // The answer carries the tenant, the verified claims and the connection.
    let r = post_resolve(&app, &valid).await;
    let body: Value = r.json().await.unwrap();
    let t = app.registry_tenant(org).await;
    assert_eq!(body["tenant"]["id"], json!(t.id.to_string()));
    assert_eq!(body["claims"]["org_id"], json!(org));
    assert_eq!(body["claims"]["org_role"], json!("org:admin"));
    assert_eq!(
        body["claims"]["user_id"],
        json!("user_2GIpXOEpVyJw51rkZn9Kmnc6Sxr")
    );
    assert_eq!(
        body["connection"]["database"],
        json!(t.db_name().unwrap().to_owned())
    );
    let creds = app.credentials(org).await;
    assert_eq!(body["connection"]["password"], json!(creds.password));

    // A provisioning tenant's answer says when to retry.
    let r = post_resolve(&app, &sign(&v2_claims(&issuer, pending.org_id.as_str()))).await;
    assert!(r.headers().contains_key("retry-after"));
}

#[tokio::test]
async fn passwords_are_not_exposed_unless_configured() {
    let (app, issuer) =
        spawn_resolving_app(&[("TENANT_PLANE__INTERNAL__EXPOSE_PASSWORDS", "false")]).await;
    let ids = app.create_org("quiet").await;
    app.reconcile().await;
    let r = post_resolve(&app, &sign(&v2_claims(&issuer, ids.org_id.as_str()))).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["connection"]["password"], Value::Null);
    assert!(body["connection"]["role"].is_string());
}

#[tokio::test]
async fn fifty_tenants_round_robin_never_hold_more_than_the_budget() {
    let (app, issuer) = spawn_resolving_app(&[
        ("TENANT_PLANE__RESOLVER__POOL_BUDGET", "20"),
        ("TENANT_PLANE__RESOLVER__POOL_PER_TENANT", "2"),
    ])
    .await;
    let resolver = library_resolver(&app).await;
    let mut tokens = Vec::new();
    for i in 0..50 {
        let ids = app.create_org(&format!("budget {i}")).await;
        tokens.push(sign(&v2_claims(&issuer, ids.org_id.as_str())));
    }
    app.reconcile().await;

    let tenant_backends = || async {
        app.client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE starts_with(usename, $1)",
                &[&app.prefix.prefix],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    let mut peak = 0;
    for round in 0..2 {
        for (i, token) in tokens.iter().enumerate() {
            let ctx = resolver.resolve(token).await.unwrap();
            let conn = ctx.pool.get().await.unwrap();
            conn.query_one("SELECT 1", &[]).await.unwrap();
            // A connection the resolver closed to stay in budget is gone
            // from our side at once, but its backend leaves
            // pg_stat_activity a moment later: count again for up to a
            // second before calling it held (a leaked one never leaves).
            let mut open = tenant_backends().await;
            for _ in 0..100 {
                if open <= 20 {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                open = tenant_backends().await;
            }
            peak = peak.max(open);
            assert!(
                open <= 20,
                "round {round}, tenant {i}: {open} connections open"
            );
            assert!(resolver.pool_stats().open <= 20);
        }
    }
    assert!(peak >= 15, "the budget is used, not avoided (peak {peak})");
    let stats = resolver.cache_stats();
    assert_eq!(stats.misses, 50, "each tenant looked up once");
    assert_eq!(stats.hits, 50);
}

#[tokio::test]
async fn the_extractor_hands_a_handler_its_tenant_connection() {
    use actix_web::{test, web, App, HttpResponse};
    use resolver::TenantConn;

    async fn whoami(t: TenantConn) -> HttpResponse {
        let row = t
            .conn
            .query_one("SELECT current_database(), current_user", &[])
            .await
            .unwrap();
        HttpResponse::Ok().json(json!({
            "tenant": t.tenant.id,
            "db": row.get::<_, String>(0),
            "role": row.get::<_, String>(1),
            "user": t.session.user_id,
        }))
    }

    let (app, issuer) = spawn_resolving_app(&[]).await;
    let resolver = library_resolver(&app).await;
    let ids = app.create_org("extracted").await;
    app.reconcile().await;
    let t = app.registry_tenant(ids.org_id.as_str()).await;
    let service = test::init_service(
        App::new()
            .app_data(web::Data::from(resolver))
            .route("/whoami", web::get().to(whoami)),
    )
    .await;
    let token = sign(&v2_claims(&issuer, ids.org_id.as_str()));

    for req in [
        test::TestRequest::get()
            .uri("/whoami")
            .insert_header(("Authorization", format!("Bearer {token}"))),
        test::TestRequest::get()
            .uri("/whoami")
            .cookie(actix_web::cookie::Cookie::new("__session", token.clone())),
    ] {
        let body: Value = test::call_and_read_body_json(&service, req.to_request()).await;
        assert_eq!(body["db"], json!(t.db_name().unwrap().to_owned()));
        assert_eq!(body["role"], json!(t.db_role().unwrap().to_owned()));
        assert_eq!(body["tenant"], json!(t.id.to_string()));
    }

    let res = test::call_service(
        &service,
        test::TestRequest::get().uri("/whoami").to_request(),
    )
    .await;
    assert_eq!(res.status(), 401);
    let body: Value = test::read_body_json(res).await;
    assert_eq!(body["error"], "token_missing");
    let expired = {
        let mut c = v2_claims(&issuer, ids.org_id.as_str());
        c["exp"] = json!(jwt::now() - 60);
        sign(&c)
    };
    let res = test::call_service(
        &service,
        test::TestRequest::get()
            .uri("/whoami")
            .insert_header(("Authorization", format!("Bearer {expired}")))
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), 401);
    let body: Value = test::read_body_json(res).await;
    assert_eq!(body["error"], "token_expired");
}

#[tokio::test]
async fn the_axum_extractor_gives_the_same_connection_and_verdicts() {
    use axum::body::{to_bytes, Body};
    use axum::http::{Request, StatusCode};
    use axum::routing::get;
    use axum::{Json, Router};
    use resolver::TenantConn;
    use tower::ServiceExt;

    async fn whoami(t: TenantConn) -> Json<Value> {
        let row = t
            .conn
            .query_one("SELECT current_database(), current_user", &[])
            .await
            .unwrap();
        Json(json!({
            "tenant": t.tenant.id,
            "db": row.get::<_, String>(0),
            "role": row.get::<_, String>(1),
        }))
    }

    let (app, issuer) = spawn_resolving_app(&[]).await;
    let resolver = library_resolver(&app).await;
    let ids = app.create_org("extracted by axum").await;
    app.reconcile().await;
    let t = app.registry_tenant(ids.org_id.as_str()).await;
    let router = Router::new()
        .route("/whoami", get(whoami))
        .with_state(resolver);
    let call = |header: Option<(&'static str, String)>| {
        let router = router.clone();
        async move {
            let mut req = Request::get("/whoami");
            if let Some((name, value)) = header {
                req = req.header(name, value);
            }
            let res = router
                .oneshot(req.body(Body::empty()).unwrap())
                .await
                .unwrap();
            let status = res.status();
            let retry_after = res.headers().get("retry-after").cloned();
            let body: Value =
                serde_json::from_slice(&to_bytes(res.into_body(), 1 << 20).await.unwrap()).unwrap();
            (status, retry_after, body)
        }
    };
    let token = sign(&v2_claims(&issuer, ids.org_id.as_str()));
    for header in [
        ("authorization", format!("Bearer {token}")),
        ("cookie", format!("theme=dark; __session={token}")),
    ] {
        let (status, _, body) = call(Some(header)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["db"], json!(t.db_name().unwrap()));
        assert_eq!(body["role"], json!(t.db_role().unwrap()));
        assert_eq!(body["tenant"], json!(t.id.to_string()));
    }
    let (status, _, body) = call(None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "token_missing");
    let expired = {
        let mut c = v2_claims(&issuer, ids.org_id.as_str());
        c["exp"] = json!(jwt::now() - 60);
        sign(&c)
    };
    let (status, _, body) = call(Some(("authorization", format!("Bearer {expired}")))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "token_expired");

    // A tenant still provisioning: 503 with Retry-After, as from actix.
    let pending = app.create_org("not yet").await;
    let token = sign(&v2_claims(&issuer, pending.org_id.as_str()));
    let (status, retry_after, body) =
        call(Some(("authorization", format!("Bearer {token}")))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"], "tenant_provisioning");
    assert_eq!(retry_after.unwrap(), "2");
}

#[tokio::test]
async fn unreachable_signing_keys_are_a_503_not_a_401() {
    let issuer = "http://127.0.0.1:1";
    let app = spawn_app_configured(|env| {
        env.with_clerk_issuer(issuer)
            .with_internal_tokens(&[SERVICE_TOKEN])
    })
    .await;
    let ids = app.create_org("keyless").await;
    let token = sign(&v2_claims(issuer, ids.org_id.as_str()));
    let r = post_resolve(&app, &token).await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "token_keys_unavailable");
}
