//! A tenant application using the resolver: every request's Clerk session
//! token picks the tenant's own database, and handlers just take
//! [`TenantConn`].
//!
//! ```sh
//! export CONTROL_DATABASE_URL=postgres://...      # tenant-plane's control database
//! export CRYPTO_KEY=...                           # tenant-plane's crypto.key
//! export CLERK_ISSUER=https://clerk.example.com   # your Clerk Frontend API URL
//! cargo run -p tenant-plane-resolver --example tenant_app
//! curl -H "Authorization: Bearer $SESSION_TOKEN" localhost:3000/projects
//! ```

use std::sync::Arc;
use std::time::Duration;

use actix_web::{get, post, web, App, HttpResponse, HttpServer, Responder};
use registry::crypto::PasswordCipher;
use registry::pool::{build_pool, parse_url, PoolOptions};
use serde::Deserialize;
use tenant_plane_resolver::clock::SystemClock;
use tenant_plane_resolver::jwks::KeySource;
use tenant_plane_resolver::pools::PoolLimits;
use tenant_plane_resolver::token::VerifierConfig;
use tenant_plane_resolver::{Resolver, ResolverConfig, TenantConn};

/// The tenant's projects, read as the tenant's own role from its database.
#[get("/projects")]
async fn list_projects(t: TenantConn) -> actix_web::Result<impl Responder> {
    let rows = t
        .conn
        .query("SELECT key, name FROM projects ORDER BY key", &[])
        .await
        .map_err(actix_web::error::ErrorInternalServerError)?;
    let projects: Vec<_> = rows
        .iter()
        .map(|r| serde_json::json!({ "key": r.get::<_, String>(0), "name": r.get::<_, String>(1) }))
        .collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "tenant": t.tenant.id,
        "user": t.session.user_id,
        "projects": projects,
    })))
}

#[derive(Deserialize)]
struct NewProject {
    key: String,
    name: String,
}

/// Only organization admins may create projects.
#[post("/projects")]
async fn create_project(
    t: TenantConn,
    body: web::Json<NewProject>,
) -> actix_web::Result<impl Responder> {
    let role = t.session.org.as_ref().and_then(|o| o.role.as_deref());
    if role != Some("org:admin") {
        return Ok(HttpResponse::Forbidden().json(serde_json::json!({
            "error": "forbidden", "message": "only org:admin may create projects"
        })));
    }
    t.conn
        .execute(
            "INSERT INTO projects (key, name) VALUES ($1, $2)",
            &[&body.key, &body.name],
        )
        .await
        .map_err(actix_web::error::ErrorBadRequest)?;
    Ok(HttpResponse::Created().finish())
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("set {name} (see the example's header)"))
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    // The control database URL's TLS settings (sslmode, sslrootcert) also
    // apply to tenant databases whose db host sets none of its own.
    let control_target = parse_url(&env("CONTROL_DATABASE_URL"))?;
    let control = build_pool(control_target.clone(), &PoolOptions::default())?;
    let issuer = env("CLERK_ISSUER");
    let config = ResolverConfig {
        token: VerifierConfig::new(issuer.clone(), KeySource::clerk_jwks(&issuer)),
        pools: PoolLimits::default(),
        cache_ttl: Duration::from_secs(60),
        cache_max_entries: tenant_plane_resolver::cache::DEFAULT_MAX_ENTRIES,
        tls: control_target.tls.clone(),
        // As tenant-plane's server does by default: the first session of a
        // new organization starts its provisioning (needs a control role
        // that may write the registry).
        register_unknown_orgs: true,
    };
    let resolver = Arc::new(Resolver::new(
        config,
        control,
        PasswordCipher::from_base64(&env("CRYPTO_KEY"))?,
        Arc::new(SystemClock),
    )?);
    // Suspended and deleted tenants are dropped the moment the registry says so.
    resolver.listen_for_changes(control_target);

    let data = web::Data::from(resolver);
    HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .service(list_projects)
            .service(create_project)
    })
    .bind((
        "127.0.0.1",
        std::env::var("PORT")
            .ok()
            .and_then(|p| p.parse().ok())
            .unwrap_or(3000),
    ))?
    .run()
    .await?;
    Ok(())
}
