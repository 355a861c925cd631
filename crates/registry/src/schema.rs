//! The control-plane schema: refinery migrations embedded from `migrations/`,
//! applied by `tenant-plane migrate`, and checked (never applied) by `serve`.

use std::collections::BTreeMap;

use tokio_postgres::Client;

mod embedded {
    refinery::embed_migrations!("../../migrations");
}

/// Refinery's bookkeeping table (its default name).
const HISTORY_TABLE: &str = "refinery_schema_history";

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("the control-plane database has no schema yet; run `tenant-plane migrate`")]
    Unmigrated,
    #[error(
        "the control-plane schema is behind this binary (missing migrations: {missing:?}); \
         run `tenant-plane migrate`"
    )]
    Behind { missing: Vec<u32> },
    #[error(
        "the control-plane schema has migrations this binary does not know ({unknown:?}); \
         it was migrated by a newer tenant-plane: upgrade this binary"
    )]
    Ahead { unknown: Vec<u32> },
    #[error(
        "control-plane migration V{version} was changed after it was applied \
         (checksum {applied} in the database, {embedded} in this binary)"
    )]
    Diverged {
        version: u32,
        applied: String,
        embedded: String,
    },
    #[error("migration failed: {0}")]
    Migrate(#[from] refinery::Error),
    #[error(transparent)]
    Db(#[from] tokio_postgres::Error),
}

impl SchemaError {
    /// True when the error comes from the database being unreachable rather
    /// than from the schema's state.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, SchemaError::Db(e) if crate::error::db_error_is_unavailable(e))
    }
}

/// The versions and checksums this binary carries.
fn embedded_versions() -> BTreeMap<u32, String> {
    embedded::migrations::runner()
        .get_migrations()
        .iter()
        .map(|m| (m.version(), m.checksum().to_string()))
        .collect()
}

/// The newest control-plane schema version this binary knows.
pub fn latest_version() -> u32 {
    embedded_versions().keys().copied().max().unwrap_or(0)
}

/// The advisory lock `migrate` holds, so that replicas starting at once
/// migrate one after the other (the second finds nothing left to do).
const MIGRATE_LOCK: i64 = 0x7470_6d69_6772_6174; // "tpmigrat"

/// Applies every pending migration. Refuses to run over a schema that a newer
/// binary migrated, or whose applied migrations were edited. Holds a session
/// advisory lock meanwhile: concurrent `migrate`s wait for each other.
pub async fn migrate(client: &mut Client) -> Result<Vec<u32>, SchemaError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATE_LOCK])
        .await?;
    let result = migrate_locked(client).await;
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATE_LOCK])
        .await;
    let applied = result?;
    unlocked?;
    Ok(applied)
}

async fn migrate_locked(client: &mut Client) -> Result<Vec<u32>, SchemaError> {
    match check(client).await {
        Ok(()) | Err(SchemaError::Unmigrated | SchemaError::Behind { .. }) => {}
        Err(e) => return Err(e),
    }
    let report = embedded::migrations::runner()
        .set_abort_divergent(true)
        .set_abort_missing(true)
        .run_async(client)
        .await?;
    Ok(report
        .applied_migrations()
        .iter()
        .map(|m| m.version())
        .collect())
}

/// Checks, read-only, that the database holds exactly the schema this binary
/// was built for.
pub async fn check(client: &Client) -> Result<(), SchemaError> {
    let exists: bool = client
        .query_one(
            "SELECT to_regclass($1) IS NOT NULL",
            &[&format!("public.{HISTORY_TABLE}")],
        )
        .await?
        .get(0);
    if !exists {
        return Err(SchemaError::Unmigrated);
    }
    let rows = client
        .query(
            &format!("SELECT version, checksum FROM {HISTORY_TABLE} ORDER BY version"),
            &[],
        )
        .await?;
    let applied: BTreeMap<u32, String> = rows
        .iter()
        .map(|r| (r.get::<_, i32>(0) as u32, r.get::<_, String>(1)))
        .collect();
    compare(&applied, &embedded_versions())
}

fn compare(
    applied: &BTreeMap<u32, String>,
    embedded: &BTreeMap<u32, String>,
) -> Result<(), SchemaError> {
    if applied.is_empty() {
        return Err(SchemaError::Unmigrated);
    }
    let unknown: Vec<u32> = applied
        .keys()
        .filter(|v| !embedded.contains_key(v))
        .copied()
        .collect();
    if !unknown.is_empty() {
        return Err(SchemaError::Ahead { unknown });
    }
    for (version, checksum) in applied {
        let ours = &embedded[version];
        if ours != checksum {
            return Err(SchemaError::Diverged {
                version: *version,
                applied: checksum.clone(),
                embedded: ours.clone(),
            });
        }
    }
    let missing: Vec<u32> = embedded
        .keys()
        .filter(|v| !applied.contains_key(v))
        .copied()
        .collect();
    if !missing.is_empty() {
        return Err(SchemaError::Behind { missing });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(entries: &[(u32, &str)]) -> BTreeMap<u32, String> {
        entries.iter().map(|(v, c)| (*v, c.to_string())).collect()
    }

    #[test]
    fn embeds_the_control_plane_migrations() {
        assert!(latest_version() >= 1);
    }

    #[test]
    fn classifies_schema_states() {
        let ours = map(&[(1, "a"), (2, "b")]);
        assert!(compare(&map(&[(1, "a"), (2, "b")]), &ours).is_ok());
        assert!(matches!(
            compare(&map(&[]), &ours),
            Err(SchemaError::Unmigrated)
        ));
        assert!(matches!(
            compare(&map(&[(1, "a")]), &ours),
            Err(SchemaError::Behind { missing }) if missing == vec![2]
        ));
        assert!(matches!(
            compare(&map(&[(1, "a"), (2, "b"), (3, "c")]), &ours),
            Err(SchemaError::Ahead { unknown }) if unknown == vec![3]
        ));
        assert!(matches!(
            compare(&map(&[(1, "x")]), &ours),
            Err(SchemaError::Diverged { version: 1, .. })
        ));
    }
}
