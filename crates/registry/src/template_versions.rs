//! Which template migrations each host's template database holds
//! (`template_versions`), and the advisory lock that keeps template
//! migration and cloning apart.

use std::collections::BTreeMap;
use std::time::Duration;

use deadpool_postgres::{GenericClient, Transaction};
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use crate::RegistryError;

/// The advisory-lock key guarding one host's template.
fn lock_key(host: Uuid) -> i64 {
    // Folding the two halves of the host id is enough to tell hosts apart.
    let bytes = host.as_u128();
    (bytes as i64) ^ ((bytes >> 64) as i64) ^ 0x7470_6c61_6e65
}

/// Takes the exclusive side of the template lock for the rest of `tx`: no
/// clone of this host's template starts until it commits.
pub async fn lock_for_migration(tx: &Transaction<'_>, host: Uuid) -> Result<(), RegistryError> {
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&lock_key(host)])
        .await?;
    Ok(())
}

/// Takes the shared side of the template lock for the rest of `tx`: clones
/// of this host's template may proceed together, never during a migration.
/// Waits at most `wait` for a migration to end (the session's own
/// `lock_timeout` is meant for requests, not for this). Answers the version
/// the template is at, which holds until `tx` ends: a migration records its
/// versions in the transaction that holds the exclusive side.
pub async fn lock_for_clone(
    tx: &Transaction<'_>,
    host: Uuid,
    wait: Duration,
) -> Result<i32, RegistryError> {
    let timeout = format!("SET LOCAL lock_timeout = {}", wait.as_millis().max(1));
    let lock = tx
        .prepare_cached("SELECT pg_advisory_xact_lock_shared($1)")
        .await?;
    let version = tx.prepare_cached(HOST_VERSION).await?;
    // Pipelined: sent in the order polled, in one round trip, and run in
    // that order. The version is read by a statement of its own, so its
    // snapshot is taken once the lock is held.
    // Bound here: the pipelined futures borrow them past one statement.
    let key = lock_key(host);
    let lock_params: [&(dyn ToSql + Sync); 1] = [&key];
    let version_params: [&(dyn ToSql + Sync); 1] = [&host];
    let ((), _, row) = tokio::try_join!(
        tx.batch_execute(&timeout),
        tx.execute(&lock, &lock_params),
        tx.query_one(&version, &version_params),
    )?;
    Ok(row.get("version"))
}

/// The versions recorded for a host, with their checksums.
pub async fn recorded(
    client: &impl GenericClient,
    host: Uuid,
) -> Result<BTreeMap<i32, String>, RegistryError> {
    Ok(client
        .query(
            "SELECT version, checksum FROM template_versions WHERE db_host_id = $1",
            &[&host],
        )
        .await?
        .iter()
        .map(|r| (r.get("version"), r.get("checksum")))
        .collect())
}

/// Records a migration applied to a host's template (idempotent).
pub async fn record(
    client: &impl GenericClient,
    host: Uuid,
    version: i32,
    name: &str,
    checksum: &str,
) -> Result<(), RegistryError> {
    client
        .execute(
            "INSERT INTO template_versions (db_host_id, version, name, checksum)
             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            &[&host, &version, &name, &checksum],
        )
        .await?;
    Ok(())
}

/// Forgets a host's versions: its template database is gone.
pub async fn forget(client: &impl GenericClient, host: Uuid) -> Result<(), RegistryError> {
    client
        .execute(
            "DELETE FROM template_versions WHERE db_host_id = $1",
            &[&host],
        )
        .await?;
    Ok(())
}

const HOST_VERSION: &str = "SELECT coalesce(max(version), 0) AS version FROM template_versions
                             WHERE db_host_id = $1";

/// The template version recorded for a host (0 when none).
pub async fn host_version(client: &impl GenericClient, host: Uuid) -> Result<i32, RegistryError> {
    let stmt = client.prepare_cached(HOST_VERSION).await?;
    Ok(client.query_one(&stmt, &[&host]).await?.get("version"))
}
