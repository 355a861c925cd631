//! The provisioning reconciler: level-triggered, so it only ever compares a
//! tenant's `status` with its `desired_state` and takes the next idempotent
//! step towards it. A crash at any point is repaired by the next pass.
//!
//! A pass works on one tenant in two transactions on the control database:
//! 1. *claim*: pick a tenant that needs work (`FOR UPDATE SKIP LOCKED`, so any
//!    number of workers can run), mark the transitional status, place it on a
//!    host and seal its password, and commit, so that everything created on a
//!    host afterwards is already recorded;
//! 2. *work*: lock the row again (skipping it if another worker holds it), do
//!    the steps on the tenant's host, and commit the resulting status, or the
//!    failure with a backoff.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::{Pool, Transaction};
use futures::StreamExt;
use rand::Rng;
use serde_json::json;
use tokio::sync::{watch, Notify};
use tokio_postgres::error::SqlState;
use tokio_postgres::{AsyncMessage, Client};

use crate::crypto::{random_password, CryptoError, PasswordCipher};
use crate::hosts::{self, DbHost, HostConnector, HostError};
use crate::ids::TenantId;
use crate::naming::{quote_literal, PgIdent, TenantPrefix};
use crate::status::{DesiredState, TenantStatus};
use crate::template::{self, TemplateError, Templates};
use crate::tenants::{
    notify_changed, record_event, Tenant, TENANT_COLUMNS, TENANT_FROM, WAKE_CHANNEL,
};
use crate::RegistryError;

const ACTOR: &str = "reconciler";

#[derive(Debug, Clone)]
pub struct ReconcilerSettings {
    pub prefix: TenantPrefix,
    /// How long a deleted tenant's database is kept before it is dropped.
    pub retention: Duration,
    /// Failed attempts before a tenant is marked `failed`.
    pub max_attempts: i32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Test hook: stop (and wait to be killed) when this step is reached.
    pub pause_at: Option<String>,
}

/// Why a step failed. Everything but `Control` is recorded on the tenant as
/// an attempt; `Control` means the control database itself failed, so nothing
/// can be recorded and the pass is abandoned.
#[derive(Debug, thiserror::Error)]
enum StepError {
    #[error(transparent)]
    Control(#[from] RegistryError),
    #[error(transparent)]
    Host(#[from] HostError),
    #[error("{step} failed: {}", crate::describe(.source))]
    Sql {
        step: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error("no db host is accepting tenants (all draining or full)")]
    NoCapacity,
    #[error("tenant row is inconsistent: {0}")]
    Inconsistent(&'static str),
}

fn sql(step: &'static str) -> impl Fn(tokio_postgres::Error) -> StepError {
    move |source| StepError::Sql { step, source }
}

/// What a successful work phase leaves behind.
enum Progress {
    Reached {
        status: TenantStatus,
        template_version: Option<i32>,
    },
    /// Deleted, and waiting for the retention period to end.
    Retained { purge_after: DateTime<Utc> },
}

/// The result of one pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pass {
    /// Nothing needed work.
    Idle,
    /// Another worker holds the tenant that was claimed.
    Contended,
    /// A tenant was worked on; `status` is where it is now.
    Worked {
        tenant: TenantId,
        status: TenantStatus,
    },
}

pub struct Reconciler {
    control: Pool,
    connector: HostConnector,
    cipher: PasswordCipher,
    templates: Templates,
    settings: ReconcilerSettings,
}

/// Exponential backoff with "equal jitter": half the delay fixed, half random,
/// so that tenants failing together do not retry together.
pub fn backoff(attempt: i32, base: Duration, max: Duration, rng: &mut impl Rng) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.clamp(0, 20) as u32);
    let capped = exp.min(max);
    let half = capped / 2;
    half + half.mul_f64(rng.gen::<f64>())
}

impl Reconciler {
    pub fn new(
        control: Pool,
        connector: HostConnector,
        cipher: PasswordCipher,
        templates: Templates,
        settings: ReconcilerSettings,
    ) -> Self {
        Self {
            control,
            connector,
            cipher,
            templates,
            settings,
        }
    }

    pub fn templates(&self) -> &Templates {
        &self.templates
    }

    /// Creates or migrates the template on every host.
    pub async fn sync_templates(&self) -> Result<Vec<template::SyncReport>, TemplateError> {
        let client = self.control.get().await.map_err(RegistryError::from)?;
        let all = hosts::list(&client).await?;
        drop(client);
        let mut reports = Vec::new();
        for host in &all {
            reports.push(
                template::sync(
                    &self.control,
                    &self.connector,
                    host,
                    &self.settings.prefix,
                    &self.templates,
                )
                .await?,
            );
        }
        Ok(reports)
    }

    /// Runs passes until none finds work. Tests use it to drain
    /// deterministically; it returns the number of passes that did work.
    pub async fn drain(&self) -> Result<usize, RegistryError> {
        let mut worked = 0;
        loop {
            match self.run_once().await? {
                Pass::Idle => return Ok(worked),
                Pass::Contended => tokio::task::yield_now().await,
                Pass::Worked { .. } => worked += 1,
            }
        }
    }

    /// Claims one tenant that needs work and takes it as far as it can go.
    #[tracing::instrument(
        name = "reconcile",
        skip_all,
        fields(tenant_id = tracing::field::Empty, org_id = tracing::field::Empty, desired = tracing::field::Empty)
    )]
    pub async fn run_once(&self) -> Result<Pass, RegistryError> {
        let mut client = self.control.get().await?;

        // Phase 1: claim.
        let tx = client.transaction().await?;
        let claim = format!(
            "SELECT {TENANT_COLUMNS} FROM {TENANT_FROM}
              WHERE t.status <> t.desired_state
                AND (t.status <> 'failed' OR t.desired_state = 'deleted')
                AND t.next_attempt_at <= now()
              ORDER BY t.next_attempt_at
              LIMIT 1
              FOR UPDATE OF t SKIP LOCKED"
        );
        let Some(row) = tx.query_opt(&claim, &[]).await? else {
            return Ok(Pass::Idle);
        };
        let tenant = Tenant::from_row(&row);
        let span = tracing::Span::current();
        span.record("tenant_id", tracing::field::display(tenant.id));
        span.record("org_id", tenant.clerk_org_id.as_str());
        span.record("desired", tenant.desired_state.as_str());
        match self.claim(&tx, &tenant).await {
            Ok(()) => {}
            Err(StepError::Control(e)) => return Err(e),
            Err(e) => {
                let status = self.record_failure(&tx, &tenant, &e).await?;
                tx.commit().await?;
                return Ok(Pass::Worked {
                    tenant: tenant.id,
                    status,
                });
            }
        }
        tx.commit().await?;
        self.pause_at("claimed").await;

        // Phase 2: work.
        let tx = client.transaction().await?;
        let relock = format!(
            "SELECT {TENANT_COLUMNS} FROM {TENANT_FROM}
              WHERE t.id = $1 AND t.status <> t.desired_state
              FOR UPDATE OF t SKIP LOCKED"
        );
        let Some(row) = tx.query_opt(&relock, &[&tenant.id.as_uuid()]).await? else {
            return Ok(Pass::Contended);
        };
        let tenant = Tenant::from_row(&row);
        let progress = match tenant.desired_state {
            DesiredState::Active => self.make_active(&tx, &tenant).await,
            DesiredState::Suspended => self.make_suspended(&tenant).await,
            DesiredState::Deleted => self.make_deleted(&tx, &tenant).await,
        };
        let status = match progress {
            Ok(progress) => self.record_progress(&tx, &tenant, progress).await?,
            Err(StepError::Control(e)) => return Err(e),
            Err(e) => self.record_failure(&tx, &tenant, &e).await?,
        };
        tx.commit().await?;
        Ok(Pass::Worked {
            tenant: tenant.id,
            status,
        })
    }

    /// Marks the transitional status and, for an active goal, makes sure the
    /// tenant has a host, names and a sealed password before anything exists
    /// on a server.
    async fn claim(&self, tx: &Transaction<'_>, t: &Tenant) -> Result<(), StepError> {
        let transitional = match t.desired_state {
            DesiredState::Active => TenantStatus::Provisioning,
            DesiredState::Suspended => TenantStatus::Suspending,
            DesiredState::Deleted => TenantStatus::Deleting,
        };
        let mut host_id = t.db_host_id;
        let mut password = t.db_password_enc.clone();
        if t.desired_state == DesiredState::Active {
            if host_id.is_none() {
                let host = hosts::place(tx).await?.ok_or(StepError::NoCapacity)?;
                tracing::info!(host = %host.name, "placed tenant");
                host_id = Some(host.id);
            }
            if password.is_none() {
                password = Some(self.cipher.seal(&random_password()));
            }
        }
        let name = host_id.map(|_| self.settings.prefix.tenant_ident(t.id));
        tx.execute(
            "UPDATE tenant_registry
                SET status = $2, db_host_id = $3,
                    db_name = coalesce(db_name, $4), db_role = coalesce(db_role, $4),
                    db_password_enc = $5, updated_at = now()
              WHERE id = $1",
            &[
                &t.id.as_uuid(),
                &transitional.as_str(),
                &host_id,
                &name.as_ref().map(PgIdent::as_str),
                &password,
            ],
        )
        .await
        .map_err(RegistryError::from)?;
        if transitional != t.status {
            record_event(
                tx,
                t.id,
                ACTOR,
                transitional.as_str(),
                Some((t.status, t.desired_state)),
                (transitional, t.desired_state),
                json!({ "db_host_id": host_id }),
            )
            .await?;
        }
        Ok(())
    }

    /// The tenant's host and names, read back from the registry.
    async fn placement(
        &self,
        tx: &Transaction<'_>,
        t: &Tenant,
    ) -> Result<Option<(DbHost, PgIdent, PgIdent)>, StepError> {
        let Some(host_id) = t.db_host_id else {
            return Ok(None);
        };
        let host = hosts::get_by_id(tx, host_id)
            .await?
            .ok_or(StepError::Inconsistent("db_host_id names no host"))?;
        let db = t
            .db_name
            .as_deref()
            .and_then(PgIdent::parse)
            .ok_or(StepError::Inconsistent(
                "placed tenant without a valid db_name",
            ))?;
        let role = t
            .db_role
            .as_deref()
            .and_then(PgIdent::parse)
            .ok_or(StepError::Inconsistent(
                "placed tenant without a valid db_role",
            ))?;
        Ok(Some((host, db, role)))
    }

    async fn make_active(&self, tx: &Transaction<'_>, t: &Tenant) -> Result<Progress, StepError> {
        let (host, db, role) = self.placement(tx, t).await?.ok_or(StepError::Inconsistent(
            "claimed for activation but not placed",
        ))?;
        let sealed = t
            .db_password_enc
            .as_deref()
            .ok_or(StepError::Inconsistent("no sealed password"))?;
        let password = self.cipher.open(sealed)?;
        let admin = self.connector.connect(&host, "postgres").await?;

        let template = self.settings.prefix.template_ident();
        if !database_exists(&admin, &template).await? {
            template::sync(
                &self.control,
                &self.connector,
                &host,
                &self.settings.prefix,
                &self.templates,
            )
            .await?;
        }

        ensure_login_role(&admin, &role, &password).await?;
        self.pause_at("role").await;

        if !database_exists(&admin, &db).await? {
            template::lock_for_clone(tx, &host).await?;
            let create = format!("CREATE DATABASE {db} TEMPLATE {template} OWNER {role}");
            match admin.batch_execute(&create).await {
                Ok(()) => tracing::info!(db = db.as_str(), "created tenant database"),
                Err(e) if e.code() == Some(&SqlState::DUPLICATE_DATABASE) => {}
                Err(e) => return Err(sql("create database")(e)),
            }
        }
        self.pause_at("database").await;

        // Database-level privileges are not copied by CREATE DATABASE.
        admin
            .batch_execute(&format!(
                "REVOKE ALL ON DATABASE {db} FROM PUBLIC;
                 GRANT CONNECT, TEMPORARY ON DATABASE {db} TO {role};"
            ))
            .await
            .map_err(sql("database privileges"))?;
        let tenant_db = self.connector.connect(&host, db.as_str()).await?;
        tenant_db
            .batch_execute(&format!(
                "REVOKE ALL ON SCHEMA public FROM PUBLIC;
                 GRANT ALL ON SCHEMA public TO {role};
                 GRANT ALL ON ALL TABLES IN SCHEMA public TO {role};
                 GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {role};
                 GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA public TO {role};"
            ))
            .await
            .map_err(sql("schema privileges"))?;
        let version = template_version_of(&tenant_db).await?;
        self.pause_at("grants").await;

        Ok(Progress::Reached {
            status: TenantStatus::Active,
            template_version: Some(version),
        })
    }

    async fn make_suspended(&self, t: &Tenant) -> Result<Progress, StepError> {
        if let (Some(host_id), Some(role)) = (t.db_host_id, t.db_role.as_deref()) {
            let client = self.control.get().await.map_err(RegistryError::from)?;
            let host = hosts::get_by_id(&client, host_id)
                .await?
                .ok_or(StepError::Inconsistent("db_host_id names no host"))?;
            drop(client);
            let role = PgIdent::parse(role).ok_or(StepError::Inconsistent("bad db_role"))?;
            let admin = self.connector.connect(&host, "postgres").await?;
            disable_role(&admin, &role).await?;
        }
        Ok(Progress::Reached {
            status: TenantStatus::Suspended,
            template_version: None,
        })
    }

    async fn make_deleted(&self, tx: &Transaction<'_>, t: &Tenant) -> Result<Progress, StepError> {
        let Some((host, db, role)) = self.placement(tx, t).await? else {
            // Never placed: nothing exists anywhere.
            return Ok(Progress::Reached {
                status: TenantStatus::Deleted,
                template_version: None,
            });
        };
        let admin = self.connector.connect(&host, "postgres").await?;
        disable_role(&admin, &role).await?;
        self.pause_at("disabled").await;

        let purge_after = t.purge_after.unwrap_or_else(|| {
            Utc::now()
                + chrono::Duration::from_std(self.settings.retention)
                    .unwrap_or(chrono::Duration::MAX)
        });
        if purge_after > Utc::now() {
            return Ok(Progress::Retained { purge_after });
        }
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
            .await
            .map_err(sql("drop database"))?;
        self.pause_at("dropped_database").await;
        admin
            .batch_execute(&format!("DROP ROLE IF EXISTS {role}"))
            .await
            .map_err(sql("drop role"))?;
        tracing::info!(db = db.as_str(), "dropped tenant database and role");
        Ok(Progress::Reached {
            status: TenantStatus::Deleted,
            template_version: None,
        })
    }

    async fn record_progress(
        &self,
        tx: &Transaction<'_>,
        t: &Tenant,
        progress: Progress,
    ) -> Result<TenantStatus, RegistryError> {
        let (status, detail) = match progress {
            Progress::Reached {
                status,
                template_version,
            } => {
                let deleted = status == TenantStatus::Deleted;
                tx.execute(
                    "UPDATE tenant_registry
                        SET status = $2, attempts = 0, last_error = NULL, next_attempt_at = now(),
                            template_version = coalesce($3, template_version),
                            purge_after = CASE WHEN $4 THEN purge_after END,
                            deleted_at = CASE WHEN $4 THEN now() END,
                            db_password_enc = CASE WHEN $4 THEN NULL ELSE db_password_enc END,
                            updated_at = now()
                      WHERE id = $1",
                    &[
                        &t.id.as_uuid(),
                        &status.as_str(),
                        &template_version,
                        &deleted,
                    ],
                )
                .await?;
                (status, json!({ "template_version": template_version }))
            }
            Progress::Retained { purge_after } => {
                tx.execute(
                    "UPDATE tenant_registry
                        SET status = 'deleting', attempts = 0, last_error = NULL,
                            purge_after = $2, next_attempt_at = $2, updated_at = now()
                      WHERE id = $1",
                    &[&t.id.as_uuid(), &purge_after],
                )
                .await?;
                (
                    TenantStatus::Deleting,
                    json!({ "purge_after": purge_after }),
                )
            }
        };
        if status != t.status || t.purge_after.is_none() && status == TenantStatus::Deleting {
            record_event(
                tx,
                t.id,
                ACTOR,
                status.as_str(),
                Some((t.status, t.desired_state)),
                (status, t.desired_state),
                detail,
            )
            .await?;
        }
        notify_changed(tx, t.id).await?;
        if status == TenantStatus::Active && t.status == TenantStatus::Provisioning {
            // From registration (the webhook) to a usable database.
            let seconds = (Utc::now() - t.created_at).num_milliseconds() as f64 / 1000.0;
            metrics::histogram!("tenant_plane_provisioning_seconds").record(seconds);
        }
        metrics::counter!("tenant_plane_reconciled_total", "status" => status.as_str())
            .increment(1);
        tracing::info!(status = %status, "tenant reconciled");
        Ok(status)
    }

    async fn record_failure(
        &self,
        tx: &Transaction<'_>,
        t: &Tenant,
        error: &StepError,
    ) -> Result<TenantStatus, RegistryError> {
        let attempts = t.attempts + 1;
        let give_up = attempts >= self.settings.max_attempts;
        let status = if give_up {
            TenantStatus::Failed
        } else {
            t.status
        };
        let delay = backoff(
            attempts - 1,
            self.settings.backoff_base,
            self.settings.backoff_max,
            &mut rand::thread_rng(),
        );
        let message = error.to_string();
        tracing::warn!(attempts, error = %message, "reconcile attempt failed");
        tx.execute(
            "UPDATE tenant_registry
                SET attempts = $2, status = $3, last_error = $4,
                    next_attempt_at = now() + make_interval(secs => $5), updated_at = now()
              WHERE id = $1",
            &[
                &t.id.as_uuid(),
                &attempts,
                &status.as_str(),
                &message,
                &delay.as_secs_f64(),
            ],
        )
        .await?;
        record_event(
            tx,
            t.id,
            ACTOR,
            if give_up { "failed" } else { "attempt_failed" },
            Some((t.status, t.desired_state)),
            (status, t.desired_state),
            json!({ "attempt": attempts, "error": message, "retry_in_secs": delay.as_secs_f64() }),
        )
        .await?;
        if give_up {
            notify_changed(tx, t.id).await?;
        }
        Ok(status)
    }

    async fn pause_at(&self, step: &str) {
        if self.settings.pause_at.as_deref() == Some(step) {
            eprintln!("tenant-plane: paused at step {step}");
            tracing::warn!(step, "paused at a configured step; waiting to be killed");
            std::future::pending::<()>().await;
        }
    }

    /// Runs workers until `shutdown` turns true: each takes tenants one at a
    /// time, woken by NOTIFY on the registry and, as a backstop, every
    /// `poll_interval`.
    pub async fn run(
        self: Arc<Self>,
        concurrency: usize,
        poll_interval: Duration,
        listen: tokio_postgres::Config,
        shutdown: watch::Receiver<bool>,
    ) {
        let wake = Arc::new(Notify::new());
        let listener = tokio::spawn(listen_for_wakeups(listen, wake.clone(), shutdown.clone()));
        let workers: Vec<_> = (0..concurrency.max(1))
            .map(|n| {
                let this = self.clone();
                let wake = wake.clone();
                let mut shutdown = shutdown.clone();
                tokio::spawn(async move {
                    while !*shutdown.borrow() {
                        // Registered before the pass, so a NOTIFY that lands
                        // while the pass finds nothing still wakes us.
                        let notified = wake.notified();
                        tokio::pin!(notified);
                        notified.as_mut().enable();
                        let idle = match this.run_once().await {
                            Ok(Pass::Worked { .. }) => false,
                            Ok(Pass::Idle | Pass::Contended) => true,
                            Err(e) => {
                                tracing::warn!(worker = n, error = %e, "reconciler pass failed");
                                true
                            }
                        };
                        if idle {
                            tokio::select! {
                                _ = &mut notified => {}
                                _ = tokio::time::sleep(poll_interval) => {}
                                // A dropped sender means stop, as `true` does.
                                changed = shutdown.changed() => if changed.is_err() { break },
                            }
                        }
                    }
                })
            })
            .collect();
        for w in workers {
            let _ = w.await;
        }
        listener.abort();
    }
}

/// Holds a LISTEN connection and turns notifications into wake-ups,
/// reconnecting after failures (polling covers the gap).
async fn listen_for_wakeups(
    config: tokio_postgres::Config,
    wake: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    while !*shutdown.borrow() {
        match config.connect(tokio_postgres::NoTls).await {
            Ok((client, mut connection)) => {
                // The connection task forwards notifications; it ends when the
                // connection does, which closes the channel.
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
                let driver = tokio::spawn(async move {
                    let mut messages =
                        futures::stream::poll_fn(move |cx| connection.poll_message(cx));
                    while let Some(message) = messages.next().await {
                        match message {
                            Ok(AsyncMessage::Notification(n)) => {
                                let _ = tx.send(n);
                            }
                            Ok(_) => {}
                            Err(e) => {
                                tracing::warn!(error = %e, "LISTEN connection lost");
                                break;
                            }
                        }
                    }
                });
                match client
                    .batch_execute(&format!("LISTEN {WAKE_CHANNEL}"))
                    .await
                {
                    Ok(()) => {
                        // Whatever changed before we were listening (at start,
                        // or while reconnecting) gets a pass now.
                        wake.notify_waiters();
                        loop {
                            tokio::select! {
                                n = rx.recv() => match n {
                                    Some(_) => wake.notify_waiters(),
                                    None => break,
                                },
                                _ = shutdown.changed() => {
                                    driver.abort();
                                    return;
                                }
                            }
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "LISTEN failed"),
                }
                driver.abort();
            }
            Err(e) => tracing::warn!(error = %e, "cannot open LISTEN connection"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.changed() => return,
        }
    }
}

async fn role_exists(admin: &Client, role: &PgIdent) -> Result<bool, StepError> {
    Ok(admin
        .query_opt(
            "SELECT 1 FROM pg_roles WHERE rolname = $1",
            &[&role.as_str()],
        )
        .await
        .map_err(sql("look up role"))?
        .is_some())
}

async fn database_exists(admin: &Client, db: &PgIdent) -> Result<bool, StepError> {
    Ok(admin
        .query_opt(
            "SELECT 1 FROM pg_database WHERE datname = $1",
            &[&db.as_str()],
        )
        .await
        .map_err(sql("look up database"))?
        .is_some())
}

/// Creates the role, or brings an existing one back to LOGIN with the
/// password on record. The password goes over the wire as a SCRAM verifier,
/// so the plaintext never reaches server logs.
async fn ensure_login_role(
    admin: &Client,
    role: &PgIdent,
    password: &str,
) -> Result<(), StepError> {
    let verifier = postgres_protocol::password::scram_sha_256(password.as_bytes());
    let options = format!("LOGIN NOINHERIT PASSWORD {}", quote_literal(&verifier));
    let exists = role_exists(admin, role).await?;
    if !exists {
        match admin
            .batch_execute(&format!("CREATE ROLE {role} {options}"))
            .await
        {
            Ok(()) => return Ok(()),
            // Created concurrently: fall through to ALTER.
            Err(e) if e.code() == Some(&SqlState::DUPLICATE_OBJECT) => {}
            Err(e) => return Err(sql("create role")(e)),
        }
    }
    admin
        .batch_execute(&format!("ALTER ROLE {role} {options}"))
        .await
        .map_err(sql("alter role"))
}

/// NOLOGIN, then end the role's sessions so that it is locked out now, not at
/// its next connection.
async fn disable_role(admin: &Client, role: &PgIdent) -> Result<(), StepError> {
    let exists = role_exists(admin, role).await?;
    if exists {
        admin
            .batch_execute(&format!("ALTER ROLE {role} NOLOGIN"))
            .await
            .map_err(sql("disable role"))?;
    }
    admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1",
            &[&role.as_str()],
        )
        .await
        .map_err(sql("terminate sessions"))?;
    Ok(())
}

async fn template_version_of(tenant_db: &Client) -> Result<i32, StepError> {
    let row = tenant_db
        .query_one(
            &format!(
                "SELECT coalesce(max(version), 0) FROM {}",
                crate::naming::quote_ident(template::HISTORY_TABLE)
            ),
            &[],
        )
        .await
        .map_err(sql("read template version"))?;
    Ok(row.get(0))
}

#[cfg(test)]
mod tests {
    use rand::rngs::mock::StepRng;

    use super::*;

    #[test]
    fn backoff_grows_exponentially_up_to_the_cap_with_jitter() {
        let base = Duration::from_secs(1);
        let max = Duration::from_secs(60);
        let mut low = StepRng::new(0, 0);
        assert_eq!(backoff(0, base, max, &mut low), Duration::from_millis(500));
        assert_eq!(backoff(3, base, max, &mut low), Duration::from_secs(4));
        assert_eq!(backoff(30, base, max, &mut low), Duration::from_secs(30));
        let mut rng = rand::thread_rng();
        for attempt in 0..10 {
            let d = backoff(attempt, base, max, &mut rng);
            let full = (base * (1 << attempt)).min(max);
            assert!(d >= full / 2 && d <= full, "{attempt}: {d:?}");
        }
    }
}
