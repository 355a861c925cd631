//! The internal API for other services: tenant look-ups and actions, and the
//! resolver over HTTP for services not written in Rust. Every route takes a
//! [`ServiceCaller`], i.e. requires a bearer service token.

use actix_web::{delete, get, post, web, HttpRequest, HttpResponse};
use std::time::Duration;

use api::{
    Connection, ErrorBody, ListTenantsQuery, ResolveRequest, ResolveResponse, SessionClaims,
    Tenant as TenantView, TenantPage, WaitQuery,
};
use model::{ClerkOrgId, TenantId, TenantStatus};
use registry::tenants::{self, Action, Tenant, TenantKey};
use resolver::cache::ResolvedTenant;
use uuid::Uuid;

use crate::auth::ServiceCaller;
use crate::error::ApiError;
use crate::startup::AppState;

pub fn view(t: &Tenant) -> TenantView {
    TenantView {
        id: t.id.as_uuid(),
        clerk_org_id: t.clerk_org_id.to_string(),
        slug: t.slug.clone(),
        name: t.name.clone(),
        status: t.status.to_string(),
        desired_state: t.desired_state.to_string(),
        plan: t.plan.clone(),
        db_host: t.db_host().map(str::to_owned),
        db_name: t.placement.as_ref().map(|p| p.database.as_str().to_owned()),
        db_role: t.placement.as_ref().map(|p| p.role.as_str().to_owned()),
        template_version: t.template_version,
        attempts: t.attempts,
        last_error: t.last_error.clone(),
        created_at: t.created_at,
        updated_at: t.updated_at,
        deleted_at: t.deleted_at,
        purge_after: t.purge_after,
    }
}

/// A cached tenant as this API answers for it, rendered once per cache
/// entry (kept in [`ResolvedTenant::rendered`]), so the hot routes
/// serialise nothing of the row again.
struct Answers {
    /// The tenant's JSON view: a look-up's whole answer.
    view: web::Bytes,
    /// An `api::ResolveResponse` up to the session's own claims:
    /// `{"tenant":<view>,"connection":<connection>,"claims":`. `None` when
    /// the entry has no credentials (the resolver refuses it then).
    resolve_head: Option<Vec<u8>>,
}

impl Answers {
    /// `expose_passwords` is the process's `internal.expose_passwords`,
    /// the same for every entry.
    fn of(t: &ResolvedTenant, expose_passwords: bool) -> &Self {
        t.rendered.get_or_render(|| {
            let view = serde_json::to_vec(&view(&t.record)).expect("a tenant view serialises");
            let resolve_head = t.credentials().map(|creds| {
                let connection = Connection {
                    host: creds.host.clone(),
                    port: creds.port,
                    database: creds.dbname.as_str().to_owned(),
                    role: creds.role.as_str().to_owned(),
                    password: expose_passwords.then(|| creds.password.clone()),
                    sslmode: creds.tls.effective_mode().to_string(),
                    sslrootcert: creds.tls.root_cert().map(|r| r.to_string()),
                };
                let mut head = Vec::with_capacity(view.len() + 512);
                head.extend_from_slice(br#"{"tenant":"#);
                head.extend_from_slice(&view);
                head.extend_from_slice(br#","connection":"#);
                serde_json::to_writer(&mut head, &connection).expect("a connection serialises");
                head.extend_from_slice(br#","claims":"#);
                head
            });
            Self {
                view: view.into(),
                resolve_head,
            }
        })
    }
}

/// The longest a look-up or a resolve may be asked to wait.
const MAX_WAIT: Duration = Duration::from_secs(60);

/// What a long-polling look-up waits for.
struct Wait {
    status: TenantStatus,
    timeout: Duration,
}

impl Wait {
    fn parse(query: &WaitQuery) -> Result<Option<Self>, ApiError> {
        let Some(status) = &query.wait_for else {
            if query.timeout.is_some() {
                return Err(ApiError::BadRequest("timeout needs wait_for".into()));
            }
            return Ok(None);
        };
        let status = status
            .parse::<TenantStatus>()
            .map_err(|e| ApiError::BadRequest(format!("wait_for: {e}")))?;
        let timeout = match &query.timeout {
            None => Duration::from_secs(10),
            Some(t) => humantime::parse_duration(t)
                .map_err(|e| ApiError::BadRequest(format!("timeout {t:?}: {e}")))?,
        };
        if timeout > MAX_WAIT {
            return Err(ApiError::BadRequest("timeout may be at most 60s".into()));
        }
        Ok(Some(Self { status, timeout }))
    }

    /// Whether waiting is over: the status is reached, or (waiting for
    /// active) can no longer be without an operator.
    fn done(&self, t: Option<&ResolvedTenant>) -> bool {
        t.is_some_and(|t| {
            t.status == self.status
                || (self.status == TenantStatus::Active
                    && matches!(t.status, TenantStatus::Failed | TenantStatus::Deleted))
        })
    }
}

/// A tenant from the NOTIFY-invalidated cache (a query on a miss), answered
/// with its JSON view as rendered once for that cache entry; with `wait`,
/// once it has the status waited for, or when the time is up.
async fn find(
    state: &AppState,
    key: TenantKey<'_>,
    query: &WaitQuery,
) -> Result<HttpResponse, ApiError> {
    let found = match Wait::parse(query)? {
        None => state.tenants.get_by(key).await?,
        Some(wait) => {
            state
                .tenants
                .wait_for(key, wait.timeout, |t| wait.done(t))
                .await?
        }
    };
    let t = found.ok_or(ApiError::NotFound("no such tenant"))?;
    let span = tracing::Span::current();
    span.record("tenant_id", tracing::field::display(t.id));
    span.record("org_id", t.clerk_org_id.as_str());
    Ok(HttpResponse::Ok()
        .content_type(actix_web::http::header::ContentType::json())
        .body(Answers::of(&t, state.expose_passwords).view.clone()))
}

/// List tenants, oldest first, optionally of one status.
#[utoipa::path(
    get, path = "/internal/v1/tenants", params(ListTenantsQuery),
    responses((status = 200, body = TenantPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("service_token" = []))
)]
#[get("/internal/v1/tenants")]
#[tracing::instrument(name = "list_tenants", skip_all, fields(status = ?query.status))]
pub async fn list(
    _: ServiceCaller,
    state: web::Data<AppState>,
    query: web::Query<ListTenantsQuery>,
) -> Result<web::Json<TenantPage>, ApiError> {
    let status = query
        .status
        .as_deref()
        .map(str::parse::<TenantStatus>)
        .transpose()
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::BadRequest(
            "limit must be between 1 and 500".into(),
        ));
    }
    let client = state
        .api
        .get()
        .await
        .map_err(registry::RegistryError::from)?;
    let page = tenants::list(&client, status, query.after.map(TenantId::from), limit).await?;
    let next_after = (page.len() as i64 == limit)
        .then(|| page.last().map(|t| t.id.as_uuid()))
        .flatten();
    Ok(web::Json(TenantPage {
        data: page.iter().map(view).collect(),
        next_after,
    }))
}

/// A tenant by its id.
#[utoipa::path(
    get, path = "/internal/v1/tenants/{id}", params(WaitQuery),
    responses((status = 200, body = TenantView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("service_token" = []))
)]
#[get("/internal/v1/tenants/{id}")]
#[tracing::instrument(name = "tenant_by_id", skip_all, fields(tenant_id = %id, org_id))]
pub async fn by_id(
    _: ServiceCaller,
    state: web::Data<AppState>,
    id: web::Path<String>,
    query: web::Query<WaitQuery>,
) -> Result<HttpResponse, ApiError> {
    let id: Uuid = id
        .parse()
        .map_err(|_| ApiError::NotFound("no such tenant"))?;
    find(&state, TenantKey::Id(TenantId::from(id)), &query).await
}

/// A tenant by its Clerk organization id.
#[utoipa::path(
    get, path = "/internal/v1/tenants/by-org/{clerk_org_id}", params(WaitQuery),
    responses((status = 200, body = TenantView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("service_token" = []))
)]
#[get("/internal/v1/tenants/by-org/{clerk_org_id}")]
#[tracing::instrument(name = "tenant_by_org", skip_all, fields(org_id = %org, tenant_id))]
pub async fn by_org(
    _: ServiceCaller,
    state: web::Data<AppState>,
    org: web::Path<String>,
    query: web::Query<WaitQuery>,
) -> Result<HttpResponse, ApiError> {
    // A malformed id names no tenant, as a malformed uuid does for by-id.
    let org = ClerkOrgId::parse(org.as_str()).map_err(|_| ApiError::NotFound("no such tenant"))?;
    find(&state, TenantKey::ClerkOrg(&org), &query).await
}

/// A tenant by its slug.
#[utoipa::path(
    get, path = "/internal/v1/tenants/by-slug/{slug}", params(WaitQuery),
    responses((status = 200, body = TenantView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("service_token" = []))
)]
#[get("/internal/v1/tenants/by-slug/{slug}")]
#[tracing::instrument(name = "tenant_by_slug", skip_all, fields(slug = %slug, tenant_id, org_id))]
pub async fn by_slug(
    _: ServiceCaller,
    state: web::Data<AppState>,
    slug: web::Path<String>,
    query: web::Query<WaitQuery>,
) -> Result<HttpResponse, ApiError> {
    find(&state, TenantKey::Slug(&slug), &query).await
}

#[tracing::instrument(name = "tenant_action", skip(state), fields(org_id))]
async fn act(
    state: &AppState,
    id: &str,
    action: Action,
) -> Result<web::Json<TenantView>, ApiError> {
    let id: Uuid = id
        .parse()
        .map_err(|_| ApiError::NotFound("no such tenant"))?;
    let mut client = state
        .api
        .get()
        .await
        .map_err(registry::RegistryError::from)?;
    let t = tenants::act(&mut client, TenantId::from(id), action, "internal-api").await?;
    tracing::Span::current().record("org_id", t.clerk_org_id.as_str());
    Ok(web::Json(view(&t)))
}

macro_rules! action_route {
    ($fn:ident, $method:ident, $path:literal, $action:expr, $doc:literal) => {
        #[doc = $doc]
        #[utoipa::path(
                    $method, path = $path,
                    responses((status = 200, body = TenantView), (status = 404, body = ErrorBody),
                              (status = 409, body = ErrorBody), (status = 401, body = ErrorBody)),
                    security(("service_token" = []))
                )]
        #[$method($path)]
        pub async fn $fn(
            _: ServiceCaller,
            state: web::Data<AppState>,
            id: web::Path<String>,
        ) -> Result<web::Json<TenantView>, ApiError> {
            act(&state, &id, $action).await
        }
    };
}

action_route!(
    suspend,
    post,
    "/internal/v1/tenants/{id}/suspend",
    Action::Suspend,
    "Suspend a tenant: its role can no longer log in."
);
action_route!(
    resume,
    post,
    "/internal/v1/tenants/{id}/resume",
    Action::Resume,
    "Undo a suspension."
);
action_route!(
    retry,
    post,
    "/internal/v1/tenants/{id}/retry",
    Action::Retry,
    "Retry a failed tenant."
);
action_route!(
    restore,
    post,
    "/internal/v1/tenants/{id}/restore",
    Action::Restore,
    "Restore a deleted tenant within the retention period."
);
action_route!(
    remove,
    delete,
    "/internal/v1/tenants/{id}",
    Action::Delete,
    "Delete a tenant (its database is dropped after the retention period)."
);

/// Run the resolver on a Clerk session token: the verdict is the one the
/// Rust extractor would give, with the same status codes.
#[utoipa::path(
    post, path = "/internal/v1/resolve", request_body = ResolveRequest,
    responses(
        (status = 200, body = ResolveResponse),
        (status = 401, description = "invalid token", body = ErrorBody),
        (status = 403, description = "no organization, or tenant suspended", body = ErrorBody),
        (status = 404, description = "no tenant for the organization (only with resolver.register_unknown_orgs off: else a verified token registers it, 503 while it is provisioned)", body = ErrorBody),
        (status = 409, description = "tenant failed", body = ErrorBody),
        (status = 410, description = "tenant deleted", body = ErrorBody),
        (status = 503, description = "tenant provisioning, or resolver not configured", body = ErrorBody),
    ),
    security(("service_token" = []))
)]
#[post("/internal/v1/resolve")]
#[tracing::instrument(name = "resolve_http", skip_all)]
pub async fn resolve(
    _: ServiceCaller,
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    // Read within http.body_limit and http.body_read_timeout, as every body.
    let body: ResolveRequest = crate::body::json(&req, payload, &state).await?;
    let resolver = state.resolver.as_ref().ok_or(ApiError::NotConfigured(
        "the resolver is not configured (set clerk.issuer)",
    ))?;
    let ctx = match body.wait_ms {
        None | Some(0) => resolver.resolve(&body.token).await?,
        Some(ms) => {
            let wait = Duration::from_millis(ms);
            if wait > MAX_WAIT {
                return Err(ApiError::BadRequest("wait_ms may be at most 60000".into()));
            }
            resolver.resolve_waiting(&body.token, wait).await?
        }
    };
    // The resolver refuses a session without an organization; the claims'
    // JSON is rendered once per remembered session.
    let claims = ctx
        .session
        .rendered
        .get_or_render(|| {
            let session = &ctx.session;
            session.org.as_ref().map(|org| {
                serde_json::to_vec(&SessionClaims {
                    user_id: session.user_id.clone(),
                    session_id: session.session_id.clone(),
                    org_id: org.id.to_string(),
                    org_role: org.role.clone(),
                    org_slug: org.slug.clone(),
                    org_permissions: org.permissions.clone(),
                })
                .expect("session claims serialise")
            })
        })
        .as_deref()
        .ok_or(resolver::ResolveError::NoOrganization)?;
    // The tenant as the resolver read it (no second look-up on this path),
    // with its connection, as rendered once for its cache entry.
    let head = Answers::of(&ctx.tenant, state.expose_passwords)
        .resolve_head
        .as_deref()
        .ok_or(resolver::ResolveError::Provisioning)?;
    let mut body = Vec::with_capacity(head.len() + claims.len() + 1);
    body.extend_from_slice(head);
    body.extend_from_slice(claims);
    body.push(b'}');
    Ok(HttpResponse::Ok()
        .content_type(actix_web::http::header::ContentType::json())
        .body(body))
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "tenant-plane internal API", description = "Tenant look-ups, actions and session resolution for services of the platform."),
    paths(list, by_id, by_org, by_slug, suspend, resume, retry, restore, remove, resolve,
          crate::routes::sync::sync_organization, crate::routes::sync::sync_all, crate::routes::sync::status,
          crate::routes::health::healthz, crate::routes::health::readyz, crate::routes::health::metrics_route),
    components(schemas(TenantView, TenantPage, ErrorBody, ResolveRequest, ResolveResponse, SessionClaims, Connection, api::SyncStatus, api::BackfillReport)),
    modifiers(&SecurityAddon)
)]
pub struct ApiDoc;

struct SecurityAddon;

impl utoipa::Modify for SecurityAddon {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "service_token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The OpenAPI document of every route.
#[get("/openapi.json")]
pub async fn openapi_json() -> HttpResponse {
    use utoipa::OpenApi;
    HttpResponse::Ok().json(ApiDoc::openapi())
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    // resolve first: the hottest route, matched before the routes with path
    // parameters (each a regex) are tried. by-org and by-slug before {id},
    // so they are not taken for ids.
    cfg.service(resolve)
        .service(list)
        .service(by_org)
        .service(by_slug)
        .service(by_id)
        .service(suspend)
        .service(resume)
        .service(retry)
        .service(restore)
        .service(remove)
        .service(crate::routes::sync::sync_organization)
        .service(crate::routes::sync::sync_all)
        .service(crate::routes::sync::status)
        .service(openapi_json);
}
