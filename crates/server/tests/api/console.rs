//! The operator console (/console): login, sessions and CSRF, every page
//! against a real control database, actions through the registry, escaping
//! of hostile names, and the live event stream.

use std::time::Duration;

use futures::StreamExt;
use reqwest::header::{HeaderMap, CONTENT_SECURITY_POLICY, COOKIE, LOCATION, SET_COOKIE};
use reqwest::StatusCode;

use crate::helpers::{spawn_app, spawn_app_with, TestApp};

const TOKEN: &str = "console-test-token-0123456789";
const OTHER_TOKEN: &str = "console-second-token-abcdefgh";

async fn spawn_console() -> TestApp {
    spawn_app_with(&[(
        "TENANT_PLANE__CONSOLE__TOKENS",
        &format!("{TOKEN},{OTHER_TOKEN}"),
    )])
    .await
}

/// A browser-like client: no redirects followed, the session cookie kept.
struct Console<'a> {
    app: &'a TestApp,
    http: reqwest::Client,
    cookie: Option<String>,
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn location(&self) -> &str {
        self.headers
            .get(LOCATION)
            .and_then(|l| l.to_str().ok())
            .unwrap_or("")
    }

    fn set_cookie(&self) -> Option<&str> {
        self.headers.get(SET_COOKIE).and_then(|c| c.to_str().ok())
    }

    /// The CSRF token the page's forms carry.
    fn csrf(&self) -> String {
        let at = self
            .body
            .find(r#"name="csrf" value=""#)
            .unwrap_or_else(|| panic!("no CSRF field in {}", self.body));
        let rest = &self.body[at + r#"name="csrf" value=""#.len()..];
        rest[..rest.find('"').unwrap()].to_owned()
    }
}

impl<'a> Console<'a> {
    fn new(app: &'a TestApp) -> Self {
        Self {
            app,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookie: None,
        }
    }

    async fn logged_in(app: &'a TestApp) -> Self {
        let mut c = Self::new(app);
        let a = c.login(TOKEN).await;
        assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
        c
    }

    async fn answer(res: reqwest::Response) -> Answer {
        Answer {
            status: res.status(),
            headers: res.headers().clone(),
            body: res.text().await.unwrap(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.app.address)
    }

    fn with_cookie(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.cookie {
            Some(c) => req.header(COOKIE, c),
            None => req,
        }
    }

    async fn get(&self, path: &str) -> Answer {
        let req = self.with_cookie(self.http.get(self.url(path)));
        Self::answer(req.send().await.unwrap()).await
    }

    async fn post(&self, path: &str, form: &[(&str, &str)]) -> Answer {
        let req = self.with_cookie(self.http.post(self.url(path)).form(form));
        Self::answer(req.send().await.unwrap()).await
    }

    async fn login(&mut self, token: &str) -> Answer {
        let a = self.post("/console/login", &[("token", token)]).await;
        if let Some(set) = a.set_cookie() {
            self.cookie = Some(set.split(';').next().unwrap().to_owned());
        }
        a
    }

    /// A page that must render: 200, HTML, with the console's CSP.
    async fn page(&self, path: &str) -> Answer {
        let a = self.get(path).await;
        assert_eq!(a.status, StatusCode::OK, "{path}: {}", a.body);
        let csp = a.headers[CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
            "{csp}"
        );
        a
    }
}

/// Secrets that must never reach a page.
fn assert_no_secrets(app: &TestApp, body: &str) {
    for (key, value) in &app.env {
        let secret = key.ends_with("__PASSWORD")
            || key.ends_with("__WEBHOOK_SECRET")
            || key.ends_with("__KEY")
            || key.ends_with("__TOKENS")
            || key.ends_with("__DATABASE__URL");
        if secret {
            for part in value.split(',') {
                assert!(!body.contains(part.trim()), "{key} is on a page");
            }
        }
    }
    assert!(!body.contains(TOKEN) && !body.contains(OTHER_TOKEN));
}

#[tokio::test]
async fn console_answers_404_without_tokens() {
    let app = spawn_app().await;
    let c = Console::new(&app);
    assert_eq!(c.get("/console/login").await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        c.get("/console/tenants").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        c.post("/console/login", &[("token", TOKEN)]).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn console_login_sets_a_strict_session_cookie_and_logout_ends_it() {
    let app = spawn_console().await;
    let mut c = Console::new(&app);
    let form = c.get("/console/login").await;
    assert_eq!(form.status, StatusCode::OK);
    assert!(form.body.contains(r#"name="token""#) && form.body.contains(r#"<label for="token">"#));

    let wrong = c.login("not-the-operator-token").await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(wrong.set_cookie().is_none());
    assert!(wrong.body.contains("not accepted"), "{}", wrong.body);

    let ok = c.login(TOKEN).await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER);
    assert_eq!(ok.location(), "/console/tenants");
    let cookie = ok.set_cookie().unwrap().to_owned();
    for attribute in [
        "HttpOnly",
        "SameSite=Strict",
        "Path=/console",
        "Max-Age=43200",
    ] {
        assert!(cookie.contains(attribute), "{attribute} missing: {cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain HTTP: {cookie}");
    assert!(!cookie.contains(TOKEN), "the token is not the session");
    let tenants = c.page("/console/tenants").await;
    assert_no_secrets(&app, &tenants.body);

    // Logging out is a form like any other: it needs the CSRF token.
    let forged = c.post("/console/logout", &[]).await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert_eq!(c.get("/console/tenants").await.status, StatusCode::OK);
    let out = c
        .post("/console/logout", &[("csrf", &tenants.csrf())])
        .await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert_eq!(out.location(), "/console/login");
    assert!(out.set_cookie().unwrap().contains("Max-Age=0"));
    // The old cookie, replayed, no longer opens anything.
    let after = c.get("/console/tenants").await;
    assert_eq!(after.status, StatusCode::SEE_OTHER);
    assert_eq!(after.location(), "/console/login");

    // The second token works too, and a session survives a tampered cookie
    // no better than none at all.
    c.cookie = None;
    assert_eq!(c.login(OTHER_TOKEN).await.status, StatusCode::SEE_OTHER);
    assert_eq!(c.get("/console/tenants").await.status, StatusCode::OK);
    let tampered = c
        .cookie
        .clone()
        .unwrap()
        .replacen("tp_console=0", "tp_console=1", 1);
    let tampered = tampered.replacen("tp_console=1.", "tp_console=0.", 1);
    c.cookie = Some(format!("{tampered}x"));
    assert_eq!(
        c.get("/console/tenants").await.status,
        StatusCode::SEE_OTHER
    );
}

#[tokio::test]
async fn console_cookie_is_secure_behind_tls() {
    let app = spawn_console().await;
    let c = Console::new(&app);
    let res = c
        .http
        .post(c.url("/console/login"))
        .header("x-forwarded-proto", "https")
        .form(&[("token", TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let cookie = res.headers()[SET_COOKIE].to_str().unwrap();
    assert!(cookie.contains("Secure"), "{cookie}");
}

#[tokio::test]
async fn console_refuses_logins_after_too_many_failures() {
    let app = spawn_console().await;
    let mut c = Console::new(&app);
    for _ in 0..5 {
        assert_eq!(
            c.login("wrong-token-wrong-token").await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    let limited = c.login(TOKEN).await;
    assert_eq!(
        limited.status,
        StatusCode::TOO_MANY_REQUESTS,
        "even the right token"
    );
    assert_eq!(limited.headers["retry-after"], "60");
    assert!(limited.set_cookie().is_none());
}

#[tokio::test]
async fn console_pages_need_a_session() {
    let app = spawn_console().await;
    let ids = app.create_org("Needs Login").await;
    let t = app.registry_tenant(ids.org_id.as_str()).await;
    let c = Console::new(&app);
    for page in [
        "/console",
        "/console/tenants",
        &format!("/console/tenants/{}", t.id),
        "/console/webhooks",
        "/console/hosts",
        "/console/doctor?run=1",
        "/console/provisioning",
    ] {
        let a = c.get(page).await;
        assert_eq!(a.status, StatusCode::SEE_OTHER, "{page}");
        assert_eq!(a.location(), "/console/login", "{page}");
    }
    assert_eq!(
        c.get("/console/events").await.status,
        StatusCode::UNAUTHORIZED
    );
    let post = c
        .post(
            &format!("/console/tenants/{}/suspend", t.id),
            &[("csrf", "x")],
        )
        .await;
    assert_eq!(post.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        app.registry_tenant(ids.org_id.as_str()).await.desired_state,
        model::DesiredState::Active
    );
    // The stylesheet and script are public (the login page uses them).
    let js = c.get("/console/static/console.js").await;
    assert_eq!(js.status, StatusCode::OK);
    assert!(js.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/javascript"));
}

#[tokio::test]
async fn console_suspends_through_the_registry_only_with_the_csrf_token() {
    let app = spawn_console().await;
    let ids = app.create_org("Suspend Me").await;
    app.reconcile().await;
    let org = ids.org_id.as_str();
    let t = app.registry_tenant(org).await;
    let c = Console::logged_in(&app).await;

    let page = c.page(&format!("/console/tenants/{}", t.id)).await;
    assert!(
        page.body.contains(r#"id="tenant-status">active<"#),
        "{}",
        page.body
    );
    assert!(page.body.contains(t.db_name().unwrap()) && page.body.contains(t.db_role().unwrap()));
    assert!(
        page.body.contains("connection_limit=20"),
        "plan limits shown"
    );
    assert!(page.body.contains("Audit trail") && page.body.contains("provisioning"));
    assert_no_secrets(&app, &page.body);
    let confirm = c.page(&format!("/console/tenants/{}/suspend", t.id)).await;
    assert!(confirm.body.contains("Suspend this tenant?"));
    let action = format!("/console/tenants/{}/suspend", t.id);

    // A forged form: no token, a wrong one, the right one from another site.
    assert_eq!(c.post(&action, &[]).await.status, StatusCode::FORBIDDEN);
    assert_eq!(
        c.post(&action, &[("csrf", "forged")]).await.status,
        StatusCode::FORBIDDEN
    );
    let cross_site = c
        .with_cookie(c.http.post(c.url(&action)))
        .header("origin", "https://evil.example")
        .form(&[("csrf", confirm.csrf())])
        .send()
        .await
        .unwrap();
    assert_eq!(cross_site.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        app.registry_tenant(org).await.desired_state,
        model::DesiredState::Active,
        "nothing forged went through"
    );

    let done = c.post(&action, &[("csrf", &confirm.csrf())]).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    assert_eq!(
        done.location(),
        format!("/console/tenants/{}?done=suspend", t.id)
    );
    assert_eq!(
        app.registry_tenant(org).await.desired_state,
        model::DesiredState::Suspended
    );
    let actor: String = app
        .client
        .query_one(
            "SELECT actor FROM tenant_events WHERE tenant_id = $1 AND kind = 'suspend'",
            &[&t.id.as_uuid()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(actor, "console");
    app.reconcile().await;
    let page = c
        .page(&format!("/console/tenants/{}?done=suspend", t.id))
        .await;
    assert!(page.body.contains("Suspend requested"));
    assert!(
        page.body.contains(r#"id="tenant-status">suspended<"#),
        "{}",
        page.body
    );

    // What the registry refuses is a 409 page; unknown things are 404s.
    let retry = c
        .post(
            &format!("/console/tenants/{}/retry", t.id),
            &[("csrf", &page.csrf())],
        )
        .await;
    assert_eq!(retry.status, StatusCode::CONFLICT);
    assert!(retry.body.contains("it has not failed"), "{}", retry.body);
    let csrf = page.csrf();
    for (path, status) in [
        (
            format!("/console/tenants/{}/explode", t.id),
            StatusCode::NOT_FOUND,
        ),
        (
            "/console/tenants/not-a-uuid/suspend".to_owned(),
            StatusCode::NOT_FOUND,
        ),
        (
            format!("/console/tenants/{}/suspend", uuid::Uuid::now_v7()),
            StatusCode::NOT_FOUND,
        ),
    ] {
        assert_eq!(
            c.post(&path, &[("csrf", &csrf)]).await.status,
            status,
            "{path}"
        );
    }
    assert_eq!(
        c.get("/console/tenants/not-a-uuid").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        c.get("/console/nowhere").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        c.get("/console/tenants?status=bogus").await.status,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn console_tenant_table_filters_searches_and_pages() {
    let app = spawn_console().await;
    let acme = app.create_org("Acme Widgets").await;
    let _other = app.create_org("Globex").await;
    app.reconcile().await;
    let pending = app.create_org("Initech").await;
    // Enough more rows for a second page, straight into the registry.
    for i in 0..55 {
        app.client
            .execute(
                "INSERT INTO tenant_registry (id, clerk_org_id, name, slug, source_updated_at)
                 VALUES ($1, $2, $3, $4, now())",
                &[
                    &uuid::Uuid::now_v7(),
                    &format!("org_bulk{i:03}"),
                    &format!("Bulk {i}"),
                    &format!("bulk-{i}"),
                ],
            )
            .await
            .unwrap();
    }
    let c = Console::logged_in(&app).await;

    let all = c.page("/console/tenants").await;
    assert!(all.body.contains(r#"id="count-all">58<"#), "{}", all.body);
    assert!(all.body.contains(r#"data-count="active">2<"#));
    assert!(all.body.contains(r#"data-count="pending">56<"#));
    assert!(all.body.contains("org_bulk054"), "newest first");
    assert!(
        !all.body.contains(acme.org_id.as_str()),
        "the oldest are on page 2"
    );
    let next = all
        .body
        .split(r#"<a href=""#)
        .find_map(|s| s.strip_prefix("/console/tenants?before="))
        .map(|s| format!("/console/tenants?before={}", &s[..s.find('"').unwrap()]))
        .expect("a link to older tenants");
    let older = c.page(&next).await;
    assert!(older.body.contains(acme.org_id.as_str()), "{}", older.body);
    assert!(!older.body.contains("org_bulk054"));

    let active = c.page("/console/tenants?status=active").await;
    assert!(active.body.contains(acme.org_id.as_str()));
    assert!(!active.body.contains(pending.org_id.as_str()));
    assert!(!active.body.contains("org_bulk"));

    for q in ["acme", "ACME wid", acme.org_id.as_str()] {
        let found = c
            .page(&format!("/console/tenants?q={}", q.replace(' ', "+")))
            .await;
        assert!(found.body.contains(acme.org_id.as_str()), "{q}");
        assert!(!found.body.contains("Globex"), "{q}");
    }
    let slug = c.page("/console/tenants?q=bulk-7").await;
    assert!(slug.body.contains("org_bulk007") && !slug.body.contains("org_bulk008"));
    let none = c.page("/console/tenants?q=%25&status=failed").await;
    assert!(none.body.contains("No tenants match"), "% is literal");
}

#[tokio::test]
async fn console_shows_hostile_names_as_text() {
    let app = spawn_console().await;
    let hostile = "<img src=x onerror=alert(1)>\"'&\u{202e}evil";
    let ids = app.create_org(hostile).await;
    let hostile_org = ids.org_id.as_str().to_owned();
    let t = app.registry_tenant(ids.org_id.as_str()).await;
    let c = Console::logged_in(&app).await;
    for page in [
        "/console/tenants".to_owned(),
        format!("/console/tenants/{}", t.id),
        format!("/console/tenants/{}/delete", t.id),
        "/console/tenants?q=%3Cimg".to_owned(),
    ] {
        let a = c.page(&page).await;
        assert!(!a.body.contains("<img"), "{page}: {}", a.body);
        assert!(
            a.body.contains("&#60;img src=x onerror=alert(1)&#62;")
                || a.body.contains("&lt;img src=x onerror=alert(1)&gt;"),
            "{page}: {}",
            a.body
        );
        assert!(a.body.contains("<bdi>"), "right-to-left text is isolated");
    }
    // 200 bytes of right-to-left text: shown whole, isolated.
    let long: String = "\u{202e}שלום עולם ".repeat(20).chars().take(100).collect();
    assert!((190..=200).contains(&long.len()), "{}", long.len());
    let ids = app.create_org(&long).await;
    let t = app.registry_tenant(ids.org_id.as_str()).await;
    let page = c.page(&format!("/console/tenants/{}", t.id)).await;
    assert!(page.body.contains(&format!("<h1><bdi>{long}</bdi></h1>")));
    // The stored payload, too.
    let deliveries = c.page("/console/webhooks").await;
    let svix_id: String = app
        .client
        .query_one(
            "SELECT svix_id FROM webhook_events WHERE object_id = $1",
            &[&hostile_org],
        )
        .await
        .unwrap()
        .get(0);
    assert!(deliveries.body.contains(&svix_id));
    let delivery = c.page(&format!("/console/webhooks/{svix_id}")).await;
    assert!(!delivery.body.contains("<img"), "{}", delivery.body);
    assert_no_secrets(&app, &delivery.body);
}

#[tokio::test]
async fn console_replays_a_dead_letter() {
    let app = spawn_console().await;
    let ids = webhooks::samples::SampleIds::random();
    let body = webhooks::samples::SampleEvent::new("organization.created", &ids)
        .unwrap()
        .name("Back From The Dead")
        .to_json();
    app.client
        .execute(
            "INSERT INTO webhook_events (svix_id, event_type, object_id, payload, outcome, error)
             VALUES ('msg_console_dead', 'organization.created', $2, $1, 'dead', 'old parser bug')",
            &[&body, &ids.org_id.as_str()],
        )
        .await
        .unwrap();
    let c = Console::logged_in(&app).await;
    let dead = c.page("/console/webhooks?outcome=dead").await;
    assert!(dead.body.contains("msg_console_dead") && dead.body.contains("old parser bug"));
    let applied = c.page("/console/webhooks?outcome=applied").await;
    assert!(!applied.body.contains("msg_console_dead"));
    let page = c.page("/console/webhooks/msg_console_dead").await;
    assert!(
        page.body.contains("Back From The Dead"),
        "the stored payload"
    );
    assert!(page.body.contains(ids.org_id.as_str()));

    let forged = c
        .post("/console/webhooks/msg_console_dead/replay", &[])
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert!(app.tenant(ids.org_id.as_str()).await.is_none());
    let replayed = c
        .post(
            "/console/webhooks/msg_console_dead/replay",
            &[("csrf", &page.csrf())],
        )
        .await;
    assert_eq!(replayed.status, StatusCode::SEE_OTHER, "{}", replayed.body);
    assert_eq!(
        replayed.location(),
        "/console/webhooks/msg_console_dead?replayed=applied"
    );
    assert_eq!(
        app.stored_outcome("msg_console_dead").await.as_deref(),
        Some("applied")
    );
    assert!(app.tenant(ids.org_id.as_str()).await.is_some());
    let after = c.page(replayed.location()).await;
    assert!(after.body.contains("Replayed: applied."));
    assert_eq!(
        c.get("/console/webhooks/msg_nope").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        c.get("/console/webhooks?outcome=lost").await.status,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn console_drains_and_undrains_hosts() {
    let tokens = format!("{TOKEN},{OTHER_TOKEN}");
    let app = spawn_app_with(&[
        ("TENANT_PLANE__CONSOLE__TOKENS", tokens.as_str()),
        ("TENANT_PLANE__TENANTS__WARM_POOL", "2"),
    ])
    .await;
    app.reconciler.refill_once().await.expect("refill");
    app.create_org("On The Default Host").await;
    app.reconcile().await;
    // The tenant took a spare; the pool holds the other one.
    let c = Console::logged_in(&app).await;
    let hosts = c.page("/console/hosts").await;
    assert!(
        hosts.body.contains(r#"data-host="default""#),
        "{}",
        hosts.body
    );
    assert!(
        hosts.body.contains("1 tenants and 1 spares of"),
        "{}",
        hosts.body
    );
    assert!(hosts.body.contains(">accepting<"));
    assert_no_secrets(&app, &hosts.body);

    assert_eq!(
        c.post("/console/hosts/default/drain", &[]).await.status,
        StatusCode::FORBIDDEN
    );
    let drained = c
        .post("/console/hosts/default/drain", &[("csrf", &hosts.csrf())])
        .await;
    assert_eq!(drained.status, StatusCode::SEE_OTHER);
    let client = app.pool().get().await.unwrap();
    let state = |h: Option<registry::hosts::DbHost>| h.unwrap().state;
    assert_eq!(
        state(registry::hosts::get(&client, "default").await.unwrap()),
        registry::hosts::HostState::Draining
    );
    let hosts = c.page("/console/hosts").await;
    assert!(hosts.body.contains(">draining<") && hosts.body.contains(">undrain<"));
    c.post("/console/hosts/default/undrain", &[("csrf", &hosts.csrf())])
        .await;
    assert_eq!(
        state(registry::hosts::get(&client, "default").await.unwrap()),
        registry::hosts::HostState::Accepting
    );
    assert_eq!(
        c.post("/console/hosts/nope/drain", &[("csrf", &hosts.csrf())])
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn console_runs_the_doctor_on_demand() {
    let app = spawn_console().await;
    app.create_org("Healthy").await;
    app.reconcile().await;
    let c = Console::logged_in(&app).await;
    let idle = c.page("/console/doctor").await;
    assert!(idle.body.contains("Run the doctor") && !idle.body.contains("Findings at"));
    let healthy = c.page("/console/doctor?run=1").await;
    assert!(healthy.body.contains("no findings"), "{}", healthy.body);

    // A tenant whose database is gone from its server.
    let ids = app.create_org("Broken").await;
    app.reconcile().await;
    let t = app.registry_tenant(ids.org_id.as_str()).await;
    app.client
        .batch_execute(&format!(
            "DROP DATABASE \"{}\" WITH (FORCE)",
            t.db_name().unwrap()
        ))
        .await
        .unwrap();
    let sick = c.page("/console/doctor?run=1").await;
    assert!(
        sick.body.contains(&format!("/console/tenants/{}", t.id)),
        "{}",
        sick.body
    );
    assert!(sick.body.contains("finding(s)"));
}

#[tokio::test]
async fn console_draws_provisioning_latency_and_statuses() {
    let app = spawn_console().await;
    let c = Console::logged_in(&app).await;
    let empty = c.page("/console/provisioning").await;
    assert!(empty.body.contains("No tenant became active"));
    app.create_org("Fast").await;
    app.create_org("Faster").await;
    app.reconcile().await;
    let page = c.page("/console/provisioning").await;
    assert!(page.body.contains("<svg") && page.body.contains("Webhook-to-active latency"));
    assert!(
        !page.body.contains("No tenant became active"),
        "{}",
        page.body
    );
    assert!(page.body.contains("<circle"), "a point per percentile");
    // The table beside the chart: one hour, two tenants.
    assert!(page.body.contains("<td>2</td>"), "{}", page.body);
    assert!(page.body.contains("Tenants by status"));
}

#[tokio::test]
async fn console_streams_tenant_changes() {
    let app = spawn_console().await;
    let c = Console::logged_in(&app).await;
    let res = c
        .with_cookie(c.http.get(c.url("/console/events")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let mut stream = res.bytes_stream();
    let mut seen = String::new();
    // Reads the stream until `want` is in it (or a second passes).
    async fn read_for(
        stream: &mut (impl futures::Stream<Item = reqwest::Result<actix_web::web::Bytes>> + Unpin),
        seen: &mut String,
        want: &str,
    ) -> bool {
        while !seen.contains(want) {
            match tokio::time::timeout(Duration::from_secs(1), stream.next()).await {
                Ok(Some(chunk)) => seen.push_str(&String::from_utf8_lossy(&chunk.unwrap())),
                _ => return false,
            }
        }
        true
    }
    // The console's LISTEN may still be connecting when the stream opens:
    // new organizations until one is announced.
    let start = std::time::Instant::now();
    let org = loop {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no tenant event: {seen}"
        );
        let ids = app.create_org("Live <b>").await;
        let org = ids.org_id.as_str().to_owned();
        if read_for(&mut stream, &mut seen, &format!("\"org\":\"{org}\"")).await {
            break org;
        }
    };
    assert!(seen.contains("event: tenant\ndata: {"), "{seen}");
    assert!(seen.contains("\"status\":\"pending\""), "{seen}");
    assert!(
        read_for(&mut stream, &mut seen, "event: counts").await,
        "{seen}"
    );
    // Provisioning it is announced as it happens.
    seen.clear();
    app.reconcile().await;
    let active = format!("\"org\":\"{org}\"");
    let start = std::time::Instant::now();
    while !seen
        .split("\n\n")
        .any(|e| e.contains(&active) && e.contains("\"status\":\"active\""))
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no active event: {seen}"
        );
        if let Ok(Some(chunk)) = tokio::time::timeout(Duration::from_secs(1), stream.next()).await {
            seen.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        }
    }
}

#[tokio::test]
async fn console_stream_starts_with_what_changed_since_the_page_was_rendered() {
    let app = spawn_console().await;
    let c = Console::logged_in(&app).await;
    let rendered = chrono::Utc::now().timestamp_millis();
    let ids = app.create_org("Changed Before Listening").await;
    let res = c
        .with_cookie(
            c.http
                .get(c.url(&format!("/console/events?since={rendered}"))),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let mut stream = res.bytes_stream();
    let mut seen = String::new();
    // The catch-up comes first, before anything live: counts end it.
    while !seen.contains("event: counts") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("the catch-up arrives")
            .expect("the stream stays open")
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(
        seen.contains(&format!("\"org\":\"{}\"", ids.org_id.as_str())),
        "{seen}"
    );
    assert!(seen.contains("\"pending\":1"), "{seen}");
}
