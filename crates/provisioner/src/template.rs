//! The tenant template: `templates/tenant/V{n}__name.sql`, applied with
//! refinery to a template database (`<prefix>template`) on each host, from
//! which every tenant database is cloned.
//!
//! Cloning needs the template to have no connections, so the template is kept
//! `ALLOW_CONNECTIONS false` except while its own migrations run, and
//! migrating and cloning exclude each other through an advisory lock in the
//! control-plane database (exclusive to migrate, shared to clone).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use deadpool_postgres::Pool;
use model::naming::quote_literal;
use model::{PgIdent, TenantPrefix};
use refinery::Migration;
use registry::hosts::DbHost;
use registry::{template_versions, RegistryError};
use tokio_postgres::Client;

use crate::connector::{HostConnector, HostError};
use crate::host_ops::{self, HostSqlError};
use crate::privileges;

mod embedded {
    refinery::embed_migrations!("../../templates/tenant");
}

/// The refinery history table inside the template and therefore inside every
/// tenant database: each clone carries the template version it was made at.
pub use crate::privileges::HISTORY_TABLE;

/// Why migrating a database failed.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("{0}")]
    Refinery(#[from] refinery::Error),
    #[error("could not switch to the owner role: {}", registry::describe(.0))]
    Session(tokio_postgres::Error),
}

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Host(#[from] HostError),
    #[error("template database operation on host {host:?} failed: {}", registry::describe(.source))]
    Db {
        host: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error(
        "template migration V{version} was changed after it was applied on host {host:?} \
         (checksum {applied} applied, {current} now); add a new migration instead of editing it"
    )]
    Changed {
        host: String,
        version: i32,
        applied: String,
        current: String,
    },
    #[error("template migration failed on host {host:?}: {source}")]
    Migrate {
        host: String,
        #[source]
        source: MigrateError,
    },
    #[error("preparing the template on host {host:?}: {source}")]
    Prepare {
        host: String,
        #[source]
        source: HostSqlError,
    },
    #[error("could not load template migrations from {path}: {source}")]
    Load {
        path: String,
        #[source]
        source: refinery::Error,
    },
}

impl TemplateError {
    /// The host could not be reached (rather than its template being wrong).
    pub fn host_unreachable(&self) -> bool {
        matches!(self, TemplateError::Host(e) if e.is_unreachable())
    }
}

/// A set of template migrations: the ones built into the binary, or a
/// directory of `V{n}__name.sql` files.
#[derive(Clone)]
pub struct Templates {
    migrations: Vec<Migration>,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates")
            .field("latest", &self.latest_version())
            .finish()
    }
}

impl Templates {
    pub fn embedded() -> Self {
        Self {
            migrations: embedded::migrations::runner().get_migrations().clone(),
        }
    }

    pub fn from_dir(path: &Path) -> Result<Self, TemplateError> {
        let migrations =
            refinery::load_sql_migrations(path).map_err(|source| TemplateError::Load {
                path: path.display().to_string(),
                source,
            })?;
        Ok(Self { migrations })
    }

    pub fn latest_version(&self) -> i32 {
        self.migrations
            .iter()
            .map(|m| m.version() as i32)
            .max()
            .unwrap_or(0)
    }

    fn checksums(&self) -> BTreeMap<i32, (String, String)> {
        self.migrations
            .iter()
            .map(|m| {
                (
                    m.version() as i32,
                    (m.name().to_owned(), m.checksum().to_string()),
                )
            })
            .collect()
    }

    fn runner(&self) -> refinery::Runner {
        let mut runner = refinery::Runner::new(&self.migrations)
            .set_abort_divergent(true)
            .set_abort_missing(true);
        runner.set_migration_table_name(HISTORY_TABLE);
        runner
    }

    /// Applies pending migrations to an open connection as `role` (the
    /// database's owner role), with only `public` on the search path, then
    /// goes back to the admin with the search path pinned. Returns the
    /// versions applied.
    pub async fn migrate_as(
        &self,
        client: &mut Client,
        role: &PgIdent,
    ) -> Result<Vec<i32>, MigrateError> {
        client
            .batch_execute(&format!("SET ROLE {role}; SET search_path = public"))
            .await
            .map_err(MigrateError::Session)?;
        let report = self.runner().run_async(client).await;
        client
            .batch_execute("RESET ROLE; SET search_path = pg_catalog")
            .await
            .map_err(MigrateError::Session)?;
        Ok(report?
            .applied_migrations()
            .iter()
            .map(|m| m.version() as i32)
            .collect())
    }
}

/// Cloning the template failed: its lock, or CREATE DATABASE.
#[derive(Debug, thiserror::Error)]
pub enum CloneError {
    /// The template's lock (held by a template migration) was not free in time.
    #[error("waiting for the template lock of db host {host:?}: {source}")]
    Lock {
        host: String,
        #[source]
        source: RegistryError,
    },
    #[error(transparent)]
    Sql(#[from] HostSqlError),
}

/// Clones the host's template as `db`, owned by `owner` (by the admin when
/// `None`) and closed to connections, holding the template's shared lock
/// (waiting at most `wait` for it) so that no template migration runs
/// meanwhile. Answers the template version the clone carries, as recorded
/// under that lock.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn clone_locked(
    control: &Pool,
    admin: &Client,
    host: &DbHost,
    template: &PgIdent,
    db: &PgIdent,
    owner: Option<&PgIdent>,
    strategy: host_ops::CloneStrategy,
    wait: Duration,
) -> Result<i32, CloneError> {
    let lock_failed = |source| CloneError::Lock {
        host: host.name.clone(),
        source,
    };
    let mut control = control.get().await.map_err(|e| lock_failed(e.into()))?;
    let lock = control
        .transaction()
        .await
        .map_err(|e| lock_failed(e.into()))?;
    let version = template_versions::lock_for_clone(&lock, host.id, wait)
        .await
        .map_err(lock_failed)?;
    host_ops::create_database(admin, db, template, owner, strategy).await?;
    lock.commit().await.map_err(|e| lock_failed(e.into()))?;
    Ok(version)
}

/// What building the template did on one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateReport {
    pub host: String,
    pub created: bool,
    pub applied: Vec<i32>,
    pub version: i32,
}

fn prepare_err(host: &DbHost) -> impl Fn(HostSqlError) -> TemplateError + '_ {
    move |source| TemplateError::Prepare {
        host: host.name.clone(),
        source,
    }
}

fn db_err(host: &DbHost) -> impl Fn(tokio_postgres::Error) -> TemplateError + '_ {
    move |source| TemplateError::Db {
        host: host.name.clone(),
        source,
    }
}

/// Creates the host's template database if missing and applies pending
/// template migrations, recording them in `template_versions`.
pub async fn build(
    control: &Pool,
    connector: &HostConnector,
    host: &DbHost,
    prefix: &TenantPrefix,
    templates: &Templates,
) -> Result<TemplateReport, TemplateError> {
    let template = prefix.template_ident();
    let owner = prefix.template_owner_ident();
    let mut control = control.get().await.map_err(RegistryError::from)?;
    let tx = control.transaction().await.map_err(RegistryError::from)?;
    template_versions::lock_for_migration(&tx, host.id).await?;

    let admin = connector.connect(host, "postgres").await?;
    host_ops::ensure_owner_role(&admin, &owner)
        .await
        .map_err(prepare_err(host))?;
    host_ops::ensure_admin_member(&admin, &owner)
        .await
        .map_err(prepare_err(host))?;
    // The template's owner and its comment, if it exists: a template built
    // before the owner role existed is owned by the admin, one built on an
    // earlier privilege model lacks the model's comment, and either is
    // brought to the model.
    let found: Option<(String, Option<String>)> = admin
        .query_opt(
            "SELECT pg_get_userbyid(datdba), shobj_description(oid, 'pg_database')
               FROM pg_database WHERE datname = $1",
            &[&template.as_str()],
        )
        .await
        .map_err(db_err(host))?
        .map(|r| (r.get(0), r.get(1)));
    let exists = found.is_some();
    if !exists {
        // The versions recorded for a template that no longer exists are void.
        template_versions::forget(&tx, host.id).await?;
        // Separate statements: CREATE DATABASE cannot run in the implicit
        // transaction of a multi-statement batch.
        admin
            .batch_execute(&format!(
                "CREATE DATABASE {template} TEMPLATE template0 OWNER {owner}
                 IS_TEMPLATE true ALLOW_CONNECTIONS false"
            ))
            .await
            .map_err(db_err(host))?;
        admin
            .batch_execute(&format!("REVOKE ALL ON DATABASE {template} FROM PUBLIC"))
            .await
            .map_err(db_err(host))?;
    }

    let recorded = template_versions::recorded(&tx, host.id).await?;
    let ours = templates.checksums();
    for (version, applied) in &recorded {
        if let Some((_, current)) = ours.get(version) {
            if current != applied {
                return Err(TemplateError::Changed {
                    host: host.name.clone(),
                    version: *version,
                    applied: applied.clone(),
                    current: current.clone(),
                });
            }
        }
    }
    let pending = ours.keys().any(|v| !recorded.contains_key(v));
    let on_model = found.as_ref().is_none_or(|(by, comment)| {
        by == owner.as_str() && comment.as_deref() == Some(model_comment().as_str())
    });

    let mut applied = Vec::new();
    if pending || !on_model {
        admin
            .batch_execute(&format!("ALTER DATABASE {template} OWNER TO {owner}"))
            .await
            .map_err(db_err(host))?;
        applied = migrate_template(&admin, connector, host, &template, &owner, templates).await?;
        admin
            .batch_execute(&format!(
                "COMMENT ON DATABASE {template} IS {}",
                quote_literal(&model_comment())
            ))
            .await
            .map_err(db_err(host))?;
        for (version, (name, checksum)) in &ours {
            template_versions::record(&tx, host.id, *version, name, checksum).await?;
        }
    }
    tx.commit().await.map_err(RegistryError::from)?;
    Ok(TemplateReport {
        host: host.name.clone(),
        created: !exists,
        applied,
        version: templates.latest_version(),
    })
}

/// The template database's comment once it is on the current privilege
/// model: `build` reads it (a shared catalog, so without connecting) to know
/// whether the template still needs bringing to the model. Clones do not
/// copy it.
fn model_comment() -> String {
    format!(
        "tenant-plane template, privilege model {}",
        registry::tenants::PRIVILEGE_MODEL
    )
}

/// Opens the template for connections, brings it to the privilege model
/// (history in `tenant_plane`, every object `owner`'s), migrates it as
/// `owner`, gives PUBLIC the model's rights on what it holds, and closes it
/// again, even when the migration fails.
async fn migrate_template(
    admin: &Client,
    connector: &HostConnector,
    host: &DbHost,
    template: &PgIdent,
    owner: &PgIdent,
    templates: &Templates,
) -> Result<Vec<i32>, TemplateError> {
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {template} WITH ALLOW_CONNECTIONS true"
        ))
        .await
        .map_err(db_err(host))?;
    let result = async {
        let mut client = connector.connect(host, template.as_str()).await?;
        privileges::pin_search_path(&client)
            .await
            .map_err(prepare_err(host))?;
        privileges::prepare_history(&client, owner, None)
            .await
            .map_err(prepare_err(host))?;
        privileges::hand_over(&client, owner)
            .await
            .map_err(prepare_err(host))?;
        let applied = templates
            .migrate_as(&mut client, owner)
            .await
            .map_err(|source| TemplateError::Migrate {
                host: host.name.clone(),
                source,
            })?;
        // What the migrations created under another role, too; every clone
        // carries these rights, so it needs no statement inside.
        privileges::grant(&client, owner, None)
            .await
            .map_err(prepare_err(host))?;
        drop(client);
        Ok::<_, TemplateError>(applied)
    }
    .await;
    close_template(admin, host, template).await?;
    result
}

/// Forbids connections to the template and waits until none remain, so the
/// next CREATE DATABASE ... TEMPLATE never sees "being accessed by other users".
async fn close_template(
    admin: &Client,
    host: &DbHost,
    template: &PgIdent,
) -> Result<(), TemplateError> {
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {template} WITH ALLOW_CONNECTIONS false"
        ))
        .await
        .map_err(db_err(host))?;
    for _ in 0..100 {
        let remaining: i64 = admin
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                  WHERE datname = $1 AND pid <> pg_backend_pid()",
                &[&template.as_str()],
            )
            .await
            .map_err(db_err(host))?
            .get(0);
        if remaining == 0 {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}
