//! The console's routes: each handler reads through the registry (or acts
//! through it, as the CLI does) and renders one template.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr};

use actix_web::cookie::{time, Cookie, SameSite};
use actix_web::dev::Payload;
use actix_web::http::header::{self, ContentType};
use actix_web::web::{self, Bytes};
use actix_web::{FromRequest, HttpRequest, HttpResponse};
use askama::Template;
use chrono::{DateTime, Utc};
use model::{TenantId, TenantStatus};
use registry::hosts::{self, HostState};
use registry::tenants::{self, Action, ActionError, Tenant, TenantKey, TenantSearch};
use registry::webhook_events::{self, Outcome};
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;

use crate::chart;
use crate::error::ConsoleError;
use crate::live;
use crate::session::Session;
use crate::ConsoleState;

const COOKIE: &str = "tp_console";
const PAGE_SIZE: i64 = 50;
const WEBHOOK_PAGE_SIZE: i64 = 100;
/// Hours the provisioning picture covers.
const LATENCY_HOURS: i32 = 24;
/// Who the audit trail names for actions taken here.
const ACTOR: &str = "console";

type State = web::Data<ConsoleState>;
type Page = Result<HttpResponse, ConsoleError>;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("", web::get().to(home))
        .route("/", web::get().to(home))
        .route("/login", web::get().to(login_form))
        .route("/login", web::post().to(login))
        .route("/logout", web::post().to(logout))
        .route("/static/console.js", web::get().to(script))
        .route("/static/console.css", web::get().to(stylesheet))
        .route("/events", web::get().to(events))
        .route("/tenants", web::get().to(tenant_list))
        .route("/tenants/{id}", web::get().to(tenant_page))
        .route("/tenants/{id}/{action}", web::get().to(confirm_action))
        .route("/tenants/{id}/{action}", web::post().to(take_action))
        .route("/webhooks", web::get().to(webhook_list))
        .route("/webhooks/{svix_id}", web::get().to(webhook_page))
        .route("/webhooks/{svix_id}/replay", web::post().to(replay))
        .route("/hosts", web::get().to(host_list))
        .route("/hosts/{name}/{state}", web::post().to(set_host_state))
        .route("/doctor", web::get().to(doctor))
        .route("/provisioning", web::get().to(provisioning));
}

// ------------------------------------------------------------------ session

/// A logged-in operator, from the session cookie.
pub struct Operator {
    session: Session,
    csrf: String,
}

impl FromRequest for Operator {
    type Error = ConsoleError;
    type Future = std::future::Ready<Result<Self, ConsoleError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(operator(req))
    }
}

fn operator(req: &HttpRequest) -> Result<Operator, ConsoleError> {
    let refused = if req.method() == actix_web::http::Method::GET {
        ConsoleError::LoginRequired
    } else {
        ConsoleError::Unauthorized
    };
    let state = req
        .app_data::<State>()
        .ok_or_else(|| ConsoleError::Internal("console state missing".into()))?;
    let cookie = req.cookie(COOKIE).ok_or(refused)?;
    let refused = || {
        if req.method() == actix_web::http::Method::GET {
            ConsoleError::LoginRequired
        } else {
            ConsoleError::Unauthorized
        }
    };
    let session = state
        .keys
        .verify(cookie.value(), Utc::now())
        .ok_or_else(refused)?;
    if state.revoked.is_revoked(&session) {
        return Err(refused());
    }
    let csrf = state.keys.csrf(&session);
    Ok(Operator { session, csrf })
}

/// The hidden field every state-changing form carries.
#[derive(Deserialize)]
struct CsrfForm {
    // Missing is refused like wrong (403), not as an unreadable form.
    #[serde(default)]
    csrf: String,
}

/// A state-changing request must come from one of our pages: the session's
/// CSRF token, and no foreign Origin (browsers send it on every POST).
fn check_form(
    req: &HttpRequest,
    state: &ConsoleState,
    op: &Operator,
    csrf: &str,
) -> Result<(), ConsoleError> {
    check_origin(req)?;
    if !state.keys.check_csrf(&op.session, csrf) {
        return Err(ConsoleError::Forbidden(
            "this form is missing its security token or comes from another site; reload the page and try again",
        ));
    }
    Ok(())
}

fn check_origin(req: &HttpRequest) -> Result<(), ConsoleError> {
    let Some(origin) = req.headers().get(header::ORIGIN) else {
        return Ok(());
    };
    let info = req.connection_info();
    let ours = format!("{}://{}", info.scheme(), info.host());
    if origin.as_bytes() == ours.as_bytes() {
        Ok(())
    } else {
        Err(ConsoleError::Forbidden(
            "this form was sent from another site",
        ))
    }
}

fn client_ip(req: &HttpRequest) -> IpAddr {
    // The peer, not X-Forwarded-For: a client must not pick the address
    // its failures are counted against.
    req.peer_addr()
        .map(|a| a.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

fn is_tls(req: &HttpRequest) -> bool {
    req.connection_info().scheme() == "https"
}

fn session_cookie(value: String, req: &HttpRequest, max_age: time::Duration) -> Cookie<'static> {
    Cookie::build(COOKIE, value)
        .path("/console")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(is_tls(req))
        .max_age(max_age)
        .finish()
}

fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, location))
        .finish()
}

fn html(page: impl Template) -> Page {
    Ok(HttpResponse::Ok()
        .content_type(ContentType::html())
        .body(page.render()?))
}

// -------------------------------------------------------------- formatting

fn when(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn ago(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let s = (now - t).num_seconds();
    match s {
        i64::MIN..=0 => "just now".into(),
        1..=119 => format!("{s} s ago"),
        120..=7199 => format!("{} min ago", s / 60),
        7200..=172_799 => format!("{} h ago", s / 3600),
        _ => format!("{} days ago", s / 86_400),
    }
}

/// Percent-encodes a query parameter's value.
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn non_empty(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

// ------------------------------------------------------------------- pages

async fn home(_: Operator) -> HttpResponse {
    see_other("/console/tenants")
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    error: Option<&'static str>,
}

async fn login_form(req: HttpRequest) -> Page {
    if operator(&req).is_ok() {
        return Ok(see_other("/console/tenants"));
    }
    html(LoginPage { error: None })
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    token: String,
}

#[tracing::instrument(skip_all)]
async fn login(req: HttpRequest, state: State, form: web::Form<LoginForm>) -> Page {
    check_origin(&req)?;
    let ip = client_ip(&req);
    if !state.limiter.allows(ip) {
        tracing::warn!(%ip, "console: login refused, too many failures");
        return Err(ConsoleError::TooManyAttempts);
    }
    let Some(key) = state.keys.check_token(form.token.trim()) else {
        state.limiter.failed(ip);
        tracing::warn!(%ip, "console: login with a wrong token");
        return Ok(HttpResponse::Unauthorized()
            .content_type(ContentType::html())
            .body(
                LoginPage {
                    error: Some("That token is not accepted."),
                }
                .render()?,
            ));
    };
    state.limiter.succeeded(ip);
    let (_, cookie) = state
        .keys
        .open(key, state.session_lifetime)
        .ok_or_else(|| ConsoleError::Internal("console.session_lifetime is out of range".into()))?;
    let max_age = time::Duration::seconds(
        i64::try_from(state.session_lifetime.as_secs()).unwrap_or(i64::MAX),
    );
    tracing::info!(%ip, token = key, "console: operator logged in");
    Ok(HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/console/tenants"))
        .cookie(session_cookie(cookie, &req, max_age))
        .finish())
}

async fn logout(req: HttpRequest, state: State, op: Operator, form: web::Form<CsrfForm>) -> Page {
    check_form(&req, &state, &op, &form.csrf)?;
    state.revoked.revoke(&op.session);
    let mut gone = session_cookie(String::new(), &req, time::Duration::ZERO);
    gone.make_removal();
    Ok(HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/console/login"))
        .cookie(gone)
        .finish())
}

async fn script() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "max-age=300"))
        .body(include_str!("../static/console.js"))
}

async fn stylesheet() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "max-age=300"))
        .body(include_str!("../static/console.css"))
}

/// Server-sent events: `tenant` (a tenant's new state), `counts` (tenants
/// by status), `resync` (reload: changes may have been missed). The
/// stream ends with the session.
///
/// `since` (Unix milliseconds) is when the page was rendered: the stream
/// starts with the tenants changed since then (a margin earlier, for clock
/// skew and transactions that committed late), so nothing that happened
/// between rendering and listening is lost. Duplicates are harmless.
async fn events(state: State, op: Option<Operator>, query: web::Query<EventsQuery>) -> Page {
    let op = op.ok_or(ConsoleError::Unauthorized)?;
    // Subscribed before the catch-up is read: a change lands in one or both.
    let rx = state.live.subscribe();
    let mut first = VecDeque::from([Bytes::from_static(b"retry: 3000\n\n")]);
    if let Some(since) = query.since.and_then(DateTime::<Utc>::from_timestamp_millis) {
        let client = state.pool.get().await?;
        let since = since - chrono::Duration::seconds(CATCH_UP_MARGIN_SECS);
        for t in tenants::changed_since(&client, since, CATCH_UP_LIMIT).await? {
            first.push_back(Bytes::from(live::tenant_event(&t)));
        }
        first.push_back(Bytes::from(live::counts_event(&client).await?));
    }
    let ends = tokio::time::Instant::now()
        + (op.session.expires - Utc::now())
            .to_std()
            .unwrap_or_default();
    // A write is how a closed page is noticed (and its stream dropped), so
    // keep-alives come often: an open stream holds up a graceful shutdown.
    let keepalive = tokio::time::interval(std::time::Duration::from_secs(5));
    let closing = state.closing.subscribe();
    let stream = futures::stream::unfold(
        (rx, keepalive, first, closing),
        move |(mut rx, mut keepalive, mut first, mut closing)| async move {
            if *closing.borrow_and_update() {
                return None;
            }
            if let Some(b) = first.pop_front() {
                return Some((Ok::<_, Infallible>(b), (rx, keepalive, first, closing)));
            }
            let out = tokio::select! {
                _ = closing.changed() => return None,
                m = rx.recv() => match m {
                    Ok(m) => Bytes::from(m.as_bytes().to_vec()),
                    Err(RecvError::Lagged(_)) => Bytes::from(live::resync()),
                    Err(RecvError::Closed) => return None,
                },
                _ = keepalive.tick() => Bytes::from_static(b": keep-alive\n\n"),
                _ = tokio::time::sleep_until(ends) => return None,
            };
            Some((Ok(out), (rx, keepalive, first, closing)))
        },
    );
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .streaming(stream))
}

#[derive(Deserialize)]
struct EventsQuery {
    since: Option<i64>,
}

/// How much earlier than a page's rendering its catch-up starts.
const CATCH_UP_MARGIN_SECS: i64 = 60;
/// Changed tenants sent on connecting at most (then the page may be stale
/// for older ones: an operator reloads a page left open that long).
const CATCH_UP_LIMIT: i64 = 500;

// ----------------------------------------------------------------- tenants

/// A tenant as a table row shows it.
struct TenantRow {
    id: String,
    org: String,
    name: String,
    slug: String,
    status: &'static str,
    desired: &'static str,
    host: String,
    attempts: i32,
    created: String,
}

impl TenantRow {
    fn of(t: &Tenant, now: DateTime<Utc>) -> Self {
        Self {
            id: t.id.to_string(),
            org: t.clerk_org_id.to_string(),
            name: t.name.clone(),
            slug: t.slug.clone().unwrap_or_default(),
            status: t.status.as_str(),
            desired: t.desired_state.as_str(),
            host: t.db_host().unwrap_or("").to_owned(),
            attempts: t.attempts,
            created: ago(t.created_at, now),
        }
    }
}

struct StatusCount {
    status: &'static str,
    count: i64,
    href: String,
    current: bool,
}

#[derive(Template)]
#[template(path = "tenants.html")]
struct TenantsPage {
    nav: &'static str,
    csrf: String,
    counts: Vec<StatusCount>,
    total: i64,
    statuses: Vec<(&'static str, bool)>,
    q: String,
    status: String,
    rows: Vec<TenantRow>,
    next: Option<String>,
    first_page: bool,
    /// For the event stream's catch-up (Unix milliseconds).
    rendered_at: i64,
}

#[derive(Deserialize)]
struct TenantsQuery {
    status: Option<String>,
    q: Option<String>,
    before: Option<String>,
}

fn parse_status(s: Option<&str>) -> Result<Option<TenantStatus>, ConsoleError> {
    s.map(|s| {
        s.parse::<TenantStatus>()
            .map_err(|e| ConsoleError::BadRequest(e.to_string()))
    })
    .transpose()
}

async fn tenant_list(state: State, op: Operator, query: web::Query<TenantsQuery>) -> Page {
    let status = parse_status(non_empty(&query.status))?;
    let text = non_empty(&query.q);
    let before = non_empty(&query.before)
        .map(|b| {
            b.parse::<uuid::Uuid>()
                .map(TenantId::from)
                .map_err(|_| ConsoleError::BadRequest(format!("{b:?} is not a tenant id")))
        })
        .transpose()?;
    let client = state.pool.get().await?;
    let counts = tenants::count_by_status(&client).await?;
    let rows = tenants::search(
        &client,
        &TenantSearch {
            status,
            text,
            before,
        },
        PAGE_SIZE,
    )
    .await?;
    let now = Utc::now();
    let filter = |status: Option<&str>| {
        let mut params = Vec::new();
        if let Some(s) = status {
            params.push(format!("status={}", encode(s)));
        }
        if let Some(q) = text {
            params.push(format!("q={}", encode(q)));
        }
        params
    };
    let next = (rows.len() as i64 == PAGE_SIZE)
        .then(|| rows.last().map(|t| t.id))
        .flatten()
        .map(|last| {
            let mut params = filter(status.map(|s| s.as_str()));
            params.push(format!("before={last}"));
            format!("/console/tenants?{}", params.join("&"))
        });
    html(TenantsPage {
        nav: "tenants",
        csrf: op.csrf,
        total: counts.iter().map(|(_, n)| n).sum(),
        counts: counts
            .iter()
            .map(|(s, n)| StatusCount {
                status: s.as_str(),
                count: *n,
                href: format!("/console/tenants?{}", filter(Some(s.as_str())).join("&")),
                current: status == Some(*s),
            })
            .collect(),
        statuses: TenantStatus::ALL
            .iter()
            .map(|s| (s.as_str(), status == Some(*s)))
            .collect(),
        q: text.unwrap_or("").to_owned(),
        status: status.map(|s| s.as_str().to_owned()).unwrap_or_default(),
        rows: rows.iter().map(|t| TenantRow::of(t, now)).collect(),
        next,
        first_page: before.is_none() && text.is_none(),
        rendered_at: now.timestamp_millis(),
    })
}

struct EventRow {
    at: String,
    ago: String,
    actor: String,
    kind: String,
    from: String,
    to: String,
    detail: String,
}

struct ActionLink {
    action: &'static str,
    href: String,
}

#[derive(Template)]
#[template(path = "tenant.html")]
struct TenantPage {
    nav: &'static str,
    csrf: String,
    t: TenantRow,
    plan: String,
    limits: String,
    limits_applied: String,
    address: String,
    database: String,
    role: String,
    template_version: String,
    next_attempt: String,
    last_error: String,
    updated: String,
    deleted: String,
    purge_after: String,
    events: Vec<EventRow>,
    actions: Vec<ActionLink>,
    done: Option<String>,
    rendered_at: i64,
}

fn parse_tenant_id(id: &str) -> Result<TenantId, ConsoleError> {
    id.parse::<uuid::Uuid>()
        .map(TenantId::from)
        .map_err(|_| ConsoleError::NotFound(format!("no tenant with id {id:?}")))
}

async fn find_tenant(state: &ConsoleState, id: &str) -> Result<Tenant, ConsoleError> {
    let id = parse_tenant_id(id)?;
    let client = state.pool.get().await?;
    tenants::get(&client, TenantKey::Id(id))
        .await?
        .ok_or_else(|| ConsoleError::NotFound(format!("no tenant with id {id}")))
}

/// The actions that make sense for a tenant now (`registry::tenants::act`
/// refuses the others anyway).
fn possible_actions(t: &Tenant) -> Vec<Action> {
    use model::DesiredState as D;
    let mut out = Vec::new();
    match t.desired_state {
        D::Active => out.push(Action::Suspend),
        D::Suspended => out.push(Action::Resume),
        D::Deleted => {
            if t.status != TenantStatus::Deleted {
                out.push(Action::Restore)
            }
        }
    }
    if t.status == TenantStatus::Failed {
        out.push(Action::Retry);
    }
    if t.desired_state != D::Deleted {
        out.push(Action::Delete);
    }
    out
}

#[derive(Deserialize)]
struct TenantQuery {
    done: Option<String>,
}

async fn tenant_page(
    state: State,
    op: Operator,
    id: web::Path<String>,
    query: web::Query<TenantQuery>,
) -> Page {
    let t = find_tenant(&state, &id).await?;
    let client = state.pool.get().await?;
    let events = tenants::events(&client, t.id).await?;
    let now = Utc::now();
    let dash = |s: Option<String>| s.unwrap_or_else(|| "—".to_owned());
    let limits = state
        .provisioning
        .plans
        .get(&t.plan)
        .map(|l| l.fingerprint().replace(';', ", "))
        .unwrap_or_else(|e| e.to_string());
    let done = non_empty(&query.done).and_then(parse_action).map(|a| {
        format!(
            "{} requested; the reconciler carries it out.",
            capitalise(a.as_str())
        )
    });
    html(TenantPage {
        nav: "tenants",
        csrf: op.csrf,
        plan: t.plan.clone(),
        limits,
        limits_applied: dash(t.limits_applied.as_ref().map(|l| l.replace(';', ", "))),
        address: dash(
            t.placement
                .as_ref()
                .map(|p| format!("{}:{}", p.address, p.port)),
        ),
        database: dash(t.db_name().map(str::to_owned)),
        role: dash(t.db_role().map(str::to_owned)),
        template_version: dash(t.template_version.map(|v| v.to_string())),
        next_attempt: if t.status.as_str() == t.desired_state.as_str() {
            "—".to_owned()
        } else {
            when(t.next_attempt_at)
        },
        last_error: t.last_error.clone().unwrap_or_default(),
        updated: format!("{} ({})", when(t.updated_at), ago(t.updated_at, now)),
        deleted: dash(t.deleted_at.map(when)),
        purge_after: dash(t.purge_after.map(when)),
        events: events
            .iter()
            .rev()
            .map(|e| EventRow {
                at: when(e.at),
                ago: ago(e.at, now),
                actor: e.actor.clone(),
                kind: e.kind.clone(),
                from: e.from_status.clone().unwrap_or_default(),
                to: e.to_status.clone().unwrap_or_default(),
                detail: if e.detail.as_object().is_some_and(|o| o.is_empty()) {
                    String::new()
                } else {
                    e.detail.to_string()
                },
            })
            .collect(),
        actions: possible_actions(&t)
            .into_iter()
            .map(|a| ActionLink {
                action: a.as_str(),
                href: format!("/console/tenants/{}/{}", t.id, a.as_str()),
            })
            .collect(),
        t: TenantRow::of(&t, now),
        done,
        rendered_at: now.timestamp_millis(),
    })
}

fn parse_action(s: &str) -> Option<Action> {
    Some(match s {
        "suspend" => Action::Suspend,
        "resume" => Action::Resume,
        "delete" => Action::Delete,
        "restore" => Action::Restore,
        "retry" => Action::Retry,
        _ => return None,
    })
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// What each action does, for its confirmation.
fn consequence(a: Action) -> &'static str {
    match a {
        Action::Suspend => "Its database stays, but its role can no longer connect and its open sessions are ended.",
        Action::Resume => "Its role can connect again once the reconciler has run.",
        Action::Delete => "Its role can no longer connect; the database is kept for the retention period (tenants.retention), then dropped for good.",
        Action::Restore => "The deletion is called off and the tenant becomes active again, if its database has not been purged yet.",
        Action::Retry => "Its attempts are reset and the reconciler tries again at once.",
    }
}

#[derive(Template)]
#[template(path = "confirm.html")]
struct ConfirmPage {
    nav: &'static str,
    csrf: String,
    t: TenantRow,
    action: &'static str,
    title: String,
    consequence: &'static str,
    danger: bool,
}

async fn confirm_action(state: State, op: Operator, path: web::Path<(String, String)>) -> Page {
    let (id, action) = path.into_inner();
    let action = parse_action(&action)
        .ok_or_else(|| ConsoleError::NotFound(format!("no action {action:?}")))?;
    let t = find_tenant(&state, &id).await?;
    html(ConfirmPage {
        nav: "tenants",
        csrf: op.csrf,
        t: TenantRow::of(&t, Utc::now()),
        action: action.as_str(),
        title: capitalise(action.as_str()),
        consequence: consequence(action),
        danger: matches!(action, Action::Delete | Action::Suspend),
    })
}

#[tracing::instrument(skip(req, state, op, form), fields(tenant_id = %path.0, action = %path.1))]
async fn take_action(
    req: HttpRequest,
    state: State,
    op: Operator,
    path: web::Path<(String, String)>,
    form: web::Form<CsrfForm>,
) -> Page {
    check_form(&req, &state, &op, &form.csrf)?;
    let (id, action) = path.into_inner();
    let action = parse_action(&action)
        .ok_or_else(|| ConsoleError::NotFound(format!("no action {action:?}")))?;
    let id = parse_tenant_id(&id)?;
    let mut client = state.pool.get().await?;
    let t = tenants::act(&mut client, id, action, ACTOR)
        .await
        .map_err(|e| match e {
            ActionError::NotFound(id) => ConsoleError::NotFound(format!("no tenant with id {id}")),
            ActionError::Conflict { .. } => ConsoleError::Conflict(e.to_string()),
            ActionError::Registry(e) => e.into(),
        })?;
    tracing::info!(status = %t.status, desired = %t.desired_state, "console: operator action");
    Ok(see_other(&format!(
        "/console/tenants/{}?done={}",
        t.id,
        action.as_str()
    )))
}

// ---------------------------------------------------------------- webhooks

struct DeliveryRow {
    svix_id: String,
    href: String,
    event_type: String,
    object_id: String,
    outcome: &'static str,
    error: String,
    received: String,
    ago: String,
}

#[derive(Template)]
#[template(path = "webhooks.html")]
struct WebhooksPage {
    nav: &'static str,
    csrf: String,
    outcomes: Vec<(&'static str, bool)>,
    filtered: Option<&'static str>,
    rows: Vec<DeliveryRow>,
    limit: i64,
}

#[derive(Deserialize)]
struct WebhooksQuery {
    outcome: Option<String>,
}

const OUTCOMES: [Outcome; 4] = [
    Outcome::Applied,
    Outcome::Ignored,
    Outcome::Stale,
    Outcome::Dead,
];

async fn webhook_list(state: State, op: Operator, query: web::Query<WebhooksQuery>) -> Page {
    let outcome = non_empty(&query.outcome)
        .map(|o| {
            Outcome::parse_stored(o).ok_or_else(|| {
                ConsoleError::BadRequest(format!(
                    "{o:?} is not an outcome: use applied, ignored, stale or dead"
                ))
            })
        })
        .transpose()?;
    let client = state.pool.get().await?;
    let events = webhook_events::list(&client, outcome, WEBHOOK_PAGE_SIZE).await?;
    let now = Utc::now();
    html(WebhooksPage {
        nav: "webhooks",
        csrf: op.csrf,
        outcomes: OUTCOMES
            .iter()
            .map(|o| (o.as_str(), outcome == Some(*o)))
            .collect(),
        filtered: outcome.map(|o| o.as_str()),
        rows: events
            .iter()
            .map(|e| DeliveryRow {
                href: format!("/console/webhooks/{}", encode(&e.svix_id)),
                svix_id: e.svix_id.clone(),
                event_type: e.event_type.clone(),
                object_id: e.object_id.clone().unwrap_or_default(),
                outcome: e.outcome.as_str(),
                error: e.error.clone().unwrap_or_default(),
                received: when(e.received_at),
                ago: ago(e.received_at, now),
            })
            .collect(),
        limit: WEBHOOK_PAGE_SIZE,
    })
}

#[derive(Template)]
#[template(path = "webhook.html")]
struct WebhookPage {
    nav: &'static str,
    csrf: String,
    d: DeliveryRow,
    applied: String,
    body: String,
    replay_href: String,
    replayed: Option<String>,
}

#[derive(Deserialize)]
struct WebhookQuery {
    replayed: Option<String>,
}

async fn webhook_page(
    state: State,
    op: Operator,
    svix_id: web::Path<String>,
    query: web::Query<WebhookQuery>,
) -> Page {
    let client = state.pool.get().await?;
    let e = webhook_events::get(&client, &svix_id)
        .await?
        .ok_or_else(|| {
            ConsoleError::NotFound(format!("no delivery {:?} in the inbox", *svix_id))
        })?;
    let body = match &e.body {
        Some(serde_json::Value::String(raw)) => raw.clone(),
        Some(v) => serde_json::to_string_pretty(v).unwrap_or_default(),
        None => String::new(),
    };
    let now = Utc::now();
    html(WebhookPage {
        nav: "webhooks",
        csrf: op.csrf,
        applied: e.applied_at.map(when).unwrap_or_else(|| "—".to_owned()),
        body,
        replay_href: format!("/console/webhooks/{}/replay", encode(&e.svix_id)),
        replayed: non_empty(&query.replayed)
            .and_then(Outcome::parse_stored)
            .map(|o| format!("Replayed: {}.", o.as_str())),
        d: DeliveryRow {
            href: format!("/console/webhooks/{}", encode(&e.svix_id)),
            svix_id: e.svix_id.clone(),
            event_type: e.event_type.clone(),
            object_id: e.object_id.clone().unwrap_or_default(),
            outcome: e.outcome.as_str(),
            error: e.error.clone().unwrap_or_default(),
            received: when(e.received_at),
            ago: ago(e.received_at, now),
        },
    })
}

#[tracing::instrument(skip(req, state, op, form), fields(svix_id = %svix_id))]
async fn replay(
    req: HttpRequest,
    state: State,
    op: Operator,
    svix_id: web::Path<String>,
    form: web::Form<CsrfForm>,
) -> Page {
    check_form(&req, &state, &op, &form.csrf)?;
    let inbox = webhooks::Inbox::new(state.pool.clone());
    let outcome = inbox.replay(&svix_id).await?.ok_or_else(|| {
        ConsoleError::NotFound(format!("no delivery {:?} in the inbox", *svix_id))
    })?;
    tracing::info!(outcome = outcome.as_str(), "console: delivery replayed");
    Ok(see_other(&format!(
        "/console/webhooks/{}?replayed={}",
        encode(&svix_id),
        outcome.as_str()
    )))
}

// ------------------------------------------------------------------- hosts

/// A host as the hosts page shows it.
pub struct HostView {
    pub name: String,
    pub address: String,
    pub state: &'static str,
    pub tenants: i64,
    /// Warm-pool spares held on the host: 0 until the warm pool's count is
    /// wired in here.
    pub spares: i64,
    pub capacity: i64,
    pub failures: i32,
    pub retry_after: String,
    pub bar: String,
    pub action_href: String,
    pub action: &'static str,
}

#[derive(Template)]
#[template(path = "hosts.html")]
struct HostsPage {
    nav: &'static str,
    csrf: String,
    hosts: Vec<HostView>,
}

async fn host_list(state: State, op: Operator) -> Page {
    let client = state.pool.get().await?;
    let all = hosts::list(&client).await?;
    let now = Utc::now();
    html(HostsPage {
        nav: "hosts",
        csrf: op.csrf,
        hosts: all
            .into_iter()
            .map(|h| {
                // The warm pool's unclaimed spares: they take capacity too.
                let spares = h.spares;
                let accepting = h.state == HostState::Accepting;
                let action = if accepting { "drain" } else { "undrain" };
                HostView {
                    bar: chart::capacity(h.tenants, spares, i64::from(h.capacity)),
                    action_href: format!("/console/hosts/{}/{action}", encode(&h.name)),
                    action,
                    address: format!("{}:{}", h.host, h.port),
                    state: h.state.as_str(),
                    tenants: h.tenants,
                    spares,
                    capacity: i64::from(h.capacity),
                    failures: h.failures,
                    retry_after: h
                        .retry_after
                        .filter(|t| *t > now)
                        .map(when)
                        .unwrap_or_default(),
                    name: h.name,
                }
            })
            .collect(),
    })
}

#[tracing::instrument(skip(req, state, op, form), fields(host = %path.0))]
async fn set_host_state(
    req: HttpRequest,
    state: State,
    op: Operator,
    path: web::Path<(String, String)>,
    form: web::Form<CsrfForm>,
) -> Page {
    check_form(&req, &state, &op, &form.csrf)?;
    let (name, to) = path.into_inner();
    let to = match to.as_str() {
        "drain" => HostState::Draining,
        "undrain" => HostState::Accepting,
        other => return Err(ConsoleError::NotFound(format!("no host action {other:?}"))),
    };
    let client = state.pool.get().await?;
    if !hosts::set_state(&client, &name, to).await? {
        return Err(ConsoleError::NotFound(format!("no db host named {name:?}")));
    }
    tracing::info!(state = to.as_str(), "console: host state set");
    Ok(see_other("/console/hosts"))
}

// ------------------------------------------------------------------ doctor

struct FindingRow {
    kind: String,
    host: String,
    tenant: String,
    tenant_href: String,
    name: String,
    detail: String,
}

#[derive(Template)]
#[template(path = "doctor.html")]
struct DoctorPage {
    nav: &'static str,
    csrf: String,
    ran: bool,
    ran_at: String,
    findings: Vec<FindingRow>,
}

#[derive(Deserialize)]
struct DoctorQuery {
    run: Option<String>,
}

/// The doctor compares the registry with every server, which takes a
/// while: it runs when asked (`?run=1`), not on every visit. It only reads,
/// so a GET may run it.
async fn doctor(state: State, op: Operator, query: web::Query<DoctorQuery>) -> Page {
    let ran = non_empty(&query.run).is_some();
    let mut findings = Vec::new();
    if ran {
        let p = &state.provisioning;
        findings = provisioner::doctor::diagnose(
            &state.pool,
            &p.connector,
            &p.prefix,
            &p.templates,
            p.stuck_after,
        )
        .await?;
    }
    html(DoctorPage {
        nav: "doctor",
        csrf: op.csrf,
        ran,
        ran_at: when(Utc::now()),
        findings: findings
            .into_iter()
            .map(|f| FindingRow {
                kind: serde_json::to_value(f.kind)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                host: f.host.unwrap_or_default(),
                tenant_href: f
                    .tenant_id
                    .map(|id| format!("/console/tenants/{id}"))
                    .unwrap_or_default(),
                tenant: f.tenant_id.map(|id| id.to_string()).unwrap_or_default(),
                name: f.name.unwrap_or_default(),
                detail: f.detail,
            })
            .collect(),
    })
}

// ------------------------------------------------------------ provisioning

struct LatencyRow {
    hour: String,
    tenants: i64,
    p50: String,
    p99: String,
}

#[derive(Template)]
#[template(path = "provisioning.html")]
struct ProvisioningPage {
    nav: &'static str,
    csrf: String,
    hours: i32,
    latency_svg: String,
    status_svg: String,
    latency: Vec<LatencyRow>,
    counts: Vec<(&'static str, i64)>,
}

async fn provisioning(state: State, op: Operator) -> Page {
    let client = state.pool.get().await?;
    let buckets = tenants::activation_latency(&client, LATENCY_HOURS).await?;
    let counts = tenants::count_by_status(&client).await?;
    html(ProvisioningPage {
        nav: "provisioning",
        csrf: op.csrf,
        hours: LATENCY_HOURS,
        latency_svg: chart::latency(&buckets, Utc::now(), LATENCY_HOURS),
        status_svg: chart::statuses(&counts),
        latency: buckets
            .iter()
            .rev()
            .map(|b| LatencyRow {
                hour: b.hour.format("%Y-%m-%d %H:00").to_string(),
                tenants: b.tenants,
                p50: chart::seconds(b.p50_seconds),
                p99: chart::seconds(b.p99_seconds),
            })
            .collect(),
        counts: counts.iter().map(|(s, n)| (s.as_str(), *n)).collect(),
    })
}
