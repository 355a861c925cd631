//! The directory mirrored from Clerk: organizations (as `tenant_registry`
//! rows), users and memberships.
//!
//! Clerk delivers events at least once and in any order, so every write here
//! is guarded by a watermark: the source's own `updated_at`. A change is
//! applied only when it is newer than what is stored, and a deletion is final
//! (Clerk never reuses ids): it leaves a tombstone that later creates and
//! updates cannot bring back. Every function takes a transaction so that the
//! caller (the webhook inbox) records the event and its effect atomically.
//!
//! The functions take Clerk's objects as Clerk sends them (`model::clerk`),
//! from a webhook or from the Backend API alike: the mapping from Clerk to
//! the directory's columns is written here once.

use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use serde_json::json;
use uuid::Uuid;

use model::clerk::{Organization, OrganizationMembership, User};
use model::{ClerkOrgId, ClerkUserId, DesiredState, TenantId, TenantStatus};

use crate::tenants::{record_event, wake_workers};
use crate::RegistryError;

/// What a directory write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The stored state changed.
    Applied,
    /// Nothing changed: the stored state is as new or newer, or deleted.
    Stale,
    /// Nothing was written: Clerk's object lacks what the directory needs
    /// (a membership without its member).
    Incomplete(&'static str),
}

impl Change {
    fn from_rows(n: u64) -> Self {
        if n > 0 {
            Change::Applied
        } else {
            Change::Stale
        }
    }
}

/// Waits for, then holds until commit, the advisory lock of `key` in
/// `space`, serialising writers of the same organization or slug.
async fn serialize(tx: &Transaction<'_>, space: &str, key: &str) -> Result<(), RegistryError> {
    let stmt = tx
        .prepare_cached("SELECT pg_advisory_xact_lock(hashtextextended($1 || ':' || $2, 0))")
        .await?;
    tx.execute(&stmt, &[&space, &key]).await?;
    Ok(())
}

/// The row of an organization, locked for the rest of the transaction.
struct Locked {
    source_updated_at: DateTime<Utc>,
    desired: DesiredState,
    status: TenantStatus,
    id: TenantId,
}

async fn lock_organization(
    tx: &Transaction<'_>,
    org: &ClerkOrgId,
) -> Result<Option<Locked>, RegistryError> {
    let stmt = tx
        .prepare_cached(
            "SELECT id, source_updated_at, desired_state, status
               FROM tenant_registry WHERE clerk_org_id = $1 FOR UPDATE",
        )
        .await?;
    let row = tx.query_opt(&stmt, &[&org.as_str()]).await?;
    Ok(row.map(|r| Locked {
        id: TenantId::from(r.get::<_, Uuid>(0)),
        source_updated_at: r.get(1),
        // The CHECK constraints guarantee these parse.
        desired: r.get::<_, &str>(2).parse().unwrap_or(DesiredState::Deleted),
        status: r.get::<_, &str>(3).parse().unwrap_or(TenantStatus::Failed),
    }))
}

/// Creates the tenant of a new organization (pending, desired active) or
/// updates its name and slug, unless the stored state is newer or deleted.
pub async fn upsert_organization(
    tx: &Transaction<'_>,
    org: &Organization,
    actor: &str,
) -> Result<Change, RegistryError> {
    let updated_at = org.updated_at.time();
    // Lock order, the same in every writer of organizations: the
    // organization's advisory lock, then the slug's, then rows. Concurrent
    // events for one organization queue on the first (so its insert race
    // cannot interleave with an update), and claims of one slug on the second.
    serialize(tx, "org", org.id.as_str()).await?;
    if let Some(slug) = &org.slug {
        serialize(tx, "slug", slug).await?;
    }
    let existing = lock_organization(tx, &org.id).await?;
    if let Some(row) = &existing {
        if row.desired == DesiredState::Deleted || row.source_updated_at >= updated_at {
            return Ok(Change::Stale);
        }
    }

    // Slugs are unique in Clerk at any moment, but a rename and a reuse can
    // arrive out of order: the newest claim to a slug wins, and the other
    // holder's (display-only) slug is cleared until its own update arrives.
    // (The slug's advisory lock, taken above, makes a concurrent claimer's
    // insert visible here before we decide.)
    let mut slug = org.slug.clone();
    if let Some(claimed) = &org.slug {
        let holder = tx
            .prepare_cached(
                "SELECT source_updated_at FROM tenant_registry
                  WHERE slug = $1 AND clerk_org_id <> $2 FOR UPDATE",
            )
            .await?;
        if let Some(row) = tx.query_opt(&holder, &[claimed, &org.id.as_str()]).await? {
            let holder_updated: DateTime<Utc> = row.get(0);
            if holder_updated > updated_at {
                slug = None;
            } else {
                let release = tx
                    .prepare_cached(
                        "UPDATE tenant_registry SET slug = NULL, updated_at = now()
                          WHERE slug = $1 AND clerk_org_id <> $2",
                    )
                    .await?;
                tx.execute(&release, &[claimed, &org.id.as_str()]).await?;
            }
        }
    }

    if existing.is_some() {
        let stmt = tx
            .prepare_cached(
                "UPDATE tenant_registry
                    SET name = $2, slug = $3, source_updated_at = $4, updated_at = now()
                  WHERE clerk_org_id = $1",
            )
            .await?;
        // A rename gives the reconciler nothing to do; caches hear of it
        // from the registry's trigger.
        tx.execute(&stmt, &[&org.id.as_str(), &org.name, &slug, &updated_at])
            .await?;
        return Ok(Change::Applied);
    }

    // ON CONFLICT re-checks the watermark should a writer that does not take
    // the organization's lock (none today) have inserted it meanwhile.
    let id = TenantId::new();
    let stmt = tx
        .prepare_cached(
            "INSERT INTO tenant_registry
                 (id, clerk_org_id, name, slug, status, desired_state, source_updated_at)
             VALUES ($1, $2, $3, $4, 'pending', 'active', $5)
             ON CONFLICT (clerk_org_id) DO UPDATE
                SET name = EXCLUDED.name, slug = EXCLUDED.slug,
                    source_updated_at = EXCLUDED.source_updated_at, updated_at = now()
              WHERE tenant_registry.desired_state <> 'deleted'
                AND tenant_registry.source_updated_at < EXCLUDED.source_updated_at
             RETURNING id, (xmax = 0) AS inserted",
        )
        .await?;
    let row = tx
        .query_opt(
            &stmt,
            &[
                &id.as_uuid(),
                &org.id.as_str(),
                &org.name,
                &slug,
                &updated_at,
            ],
        )
        .await?;
    match row {
        None => Ok(Change::Stale),
        Some(row) => {
            if row.get::<_, bool>(1) {
                record_registered(tx, id, actor, json!({ "clerk_org_id": org.id })).await?;
            }
            wake_workers(tx).await?;
            Ok(Change::Applied)
        }
    }
}

/// The watermark of a row registered from a session token: older than any
/// event Clerk sends (its timestamps are milliseconds since 1970, and its
/// organizations are younger), so the organization's first webhook always
/// completes the row, and the row is never taken for an event of its own.
pub const TOKEN_WATERMARK: DateTime<Utc> = DateTime::UNIX_EPOCH;

/// Why the audit trail says a tenant was registered from a token.
pub const TOKEN_REGISTRATION_REASON: &str = "registered from a verified session token";

/// Registers an organization known only from a verified session token (its
/// first session often arrives before `organization.created`): pending,
/// desired active, so the reconciler provisions it at once. Its name waits
/// for the webhook; its slug is the token's unless another organization
/// holds it (the token's claim is the oldest there is, see
/// [`TOKEN_WATERMARK`]). An organization the registry already has, even as
/// a tombstone, is left as it is: `Stale`.
pub async fn register_from_token(
    tx: &Transaction<'_>,
    org: &ClerkOrgId,
    slug: Option<&str>,
    actor: &str,
) -> Result<Change, RegistryError> {
    // The lock order of upsert_organization: organization, then slug.
    serialize(tx, "org", org.as_str()).await?;
    if let Some(slug) = slug {
        serialize(tx, "slug", slug).await?;
    }
    // No conflict target: a conflict on the slug as well as on the
    // organization writes nothing rather than failing (neither can happen
    // while every writer takes the locks above).
    let id = TenantId::new();
    let stmt = tx
        .prepare_cached(
            "INSERT INTO tenant_registry
                 (id, clerk_org_id, slug, status, desired_state, source_updated_at)
             SELECT $1, $2,
                    CASE WHEN NOT EXISTS (SELECT 1 FROM tenant_registry WHERE slug = $3)
                         THEN $3 END,
                    'pending', 'active', $4
             ON CONFLICT DO NOTHING",
        )
        .await?;
    let inserted = tx
        .execute(
            &stmt,
            &[&id.as_uuid(), &org.as_str(), &slug, &TOKEN_WATERMARK],
        )
        .await?;
    if inserted == 0 {
        return Ok(Change::Stale);
    }
    record_registered(
        tx,
        id,
        actor,
        json!({
            "clerk_org_id": org,
            "source": "session_token",
            "reason": TOKEN_REGISTRATION_REASON,
        }),
    )
    .await?;
    wake_workers(tx).await?;
    Ok(Change::Applied)
}

/// Marks an organization's tenant for deletion (the reconciler retires its
/// database). An organization never seen before gets a tombstone, so that a
/// `created` delivered after the `deleted` cannot provision it.
pub async fn delete_organization(
    tx: &Transaction<'_>,
    org: &ClerkOrgId,
    at: DateTime<Utc>,
    actor: &str,
) -> Result<Change, RegistryError> {
    serialize(tx, "org", org.as_str()).await?;
    if let Some(row) = lock_organization(tx, org).await? {
        if row.desired == DesiredState::Deleted {
            return Ok(Change::Stale);
        }
        let stmt = tx
            .prepare_cached(
                "UPDATE tenant_registry
                    SET desired_state = 'deleted', next_attempt_at = now(),
                        source_updated_at = GREATEST(source_updated_at, $2), updated_at = now()
                  WHERE clerk_org_id = $1",
            )
            .await?;
        tx.execute(&stmt, &[&org.as_str(), &at]).await?;
        end_memberships(tx, "clerk_org_id", org.as_str()).await?;
        record_event(
            tx,
            row.id,
            actor,
            "deletion_requested",
            Some((row.status, row.desired)),
            (row.status, DesiredState::Deleted),
            json!({ "clerk_org_id": org }),
        )
        .await?;
        wake_workers(tx).await?;
        return Ok(Change::Applied);
    }

    let id = TenantId::new();
    let stmt = tx
        .prepare_cached(
            "INSERT INTO tenant_registry
                 (id, clerk_org_id, status, desired_state, source_updated_at, deleted_at)
             VALUES ($1, $2, 'deleted', 'deleted', $3, now())
             ON CONFLICT (clerk_org_id) DO NOTHING",
        )
        .await?;
    let inserted = tx
        .execute(&stmt, &[&id.as_uuid(), &org.as_str(), &at])
        .await?;
    if inserted == 0 {
        // Cannot happen while writers hold the organization's lock; refuse
        // rather than guess.
        return Ok(Change::Stale);
    }
    end_memberships(tx, "clerk_org_id", org.as_str()).await?;
    record_event(
        tx,
        id,
        actor,
        "tombstoned",
        None,
        (TenantStatus::Deleted, DesiredState::Deleted),
        json!({ "clerk_org_id": org, "reason": "deleted before it was known" }),
    )
    .await?;
    Ok(Change::Applied)
}

/// Creates or updates a user unless the stored state is newer or deleted.
pub async fn upsert_user(tx: &Transaction<'_>, user: &User) -> Result<Change, RegistryError> {
    let stmt = tx
        .prepare_cached(
            "INSERT INTO users
                 (clerk_user_id, primary_email, first_name, last_name, username, image_url,
                  external_id, public_metadata, source_updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (clerk_user_id) DO UPDATE
                SET primary_email = EXCLUDED.primary_email, first_name = EXCLUDED.first_name,
                    last_name = EXCLUDED.last_name, username = EXCLUDED.username,
                    image_url = EXCLUDED.image_url, external_id = EXCLUDED.external_id,
                    public_metadata = EXCLUDED.public_metadata,
                    source_updated_at = EXCLUDED.source_updated_at, updated_at = now()
              WHERE users.deleted_at IS NULL
                AND users.source_updated_at < EXCLUDED.source_updated_at",
        )
        .await?;
    let n = tx
        .execute(
            &stmt,
            &[
                &user.id.as_str(),
                &user.primary_email(),
                &user.first_name,
                &user.last_name,
                &user.username,
                &user.image_url,
                &user.external_id,
                &user.public_metadata,
                &user.updated_at.time(),
            ],
        )
        .await?;
    Ok(Change::from_rows(n))
}

/// Soft-deletes a user, leaving a tombstone if it was never seen.
pub async fn delete_user(
    tx: &Transaction<'_>,
    user: &ClerkUserId,
    at: DateTime<Utc>,
) -> Result<Change, RegistryError> {
    let stmt = tx
        .prepare_cached(
            "INSERT INTO users (clerk_user_id, source_updated_at, deleted_at)
             VALUES ($1, $2, now())
             ON CONFLICT (clerk_user_id) DO UPDATE
                SET deleted_at = now(), updated_at = now(),
                    source_updated_at = GREATEST(users.source_updated_at, EXCLUDED.source_updated_at)
              WHERE users.deleted_at IS NULL",
        )
        .await?;
    let n = tx.execute(&stmt, &[&user.as_str(), &at]).await?;
    if n > 0 {
        end_memberships(tx, "clerk_user_id", user.as_str()).await?;
    }
    Ok(Change::from_rows(n))
}

/// Soft-deletes the live memberships of a deleted organization or user:
/// Clerk sends no `organizationMembership.deleted` for each of them.
async fn end_memberships(
    tx: &Transaction<'_>,
    column: &'static str,
    id: &str,
) -> Result<u64, RegistryError> {
    let stmt = tx
        .prepare_cached(&format!(
            "UPDATE organization_memberships SET deleted_at = now(), updated_at = now()
              WHERE {column} = $1 AND deleted_at IS NULL"
        ))
        .await?;
    Ok(tx.execute(&stmt, &[&id]).await?)
}

/// Soft-deletes the live memberships of `org` that are not in `keep` (the
/// ones Clerk has now); for a sync with pruning. Returns how many.
pub async fn prune_memberships(
    tx: &Transaction<'_>,
    org: &ClerkOrgId,
    keep: &[&str],
) -> Result<u64, RegistryError> {
    let stmt = tx
        .prepare_cached(
            "UPDATE organization_memberships SET deleted_at = now(), updated_at = now()
              WHERE clerk_org_id = $1 AND deleted_at IS NULL
                AND NOT (clerk_membership_id = ANY($2))",
        )
        .await?;
    Ok(tx.execute(&stmt, &[&org.as_str(), &keep]).await?)
}

/// Creates or updates a membership; with `deleted`, soft-deletes it (final).
pub async fn upsert_membership(
    tx: &Transaction<'_>,
    m: &OrganizationMembership,
    deleted: bool,
) -> Result<Change, RegistryError> {
    let Some(user_id) = m.user_id() else {
        return Ok(Change::Incomplete(
            "the membership has no public_user_data, so its member is unknown",
        ));
    };
    // A deletion is final whatever its timestamp; an update must be newer.
    let stmt = tx
        .prepare_cached(
            "INSERT INTO organization_memberships
                 (clerk_membership_id, clerk_org_id, clerk_user_id, role, permissions,
                  source_updated_at, deleted_at)
             VALUES ($1, $2, $3, $4, $5, $6,
                     -- A membership of an organization or user already
                     -- deleted arrives dead: deletions are final.
                     CASE WHEN $7
                            OR EXISTS (SELECT 1 FROM tenant_registry
                                        WHERE clerk_org_id = $2 AND desired_state = 'deleted')
                            OR EXISTS (SELECT 1 FROM users
                                        WHERE clerk_user_id = $3 AND deleted_at IS NOT NULL)
                          THEN now() END)
             ON CONFLICT (clerk_membership_id) DO UPDATE
                SET role = EXCLUDED.role, permissions = EXCLUDED.permissions,
                    source_updated_at = GREATEST(organization_memberships.source_updated_at,
                                                 EXCLUDED.source_updated_at),
                    deleted_at = EXCLUDED.deleted_at, updated_at = now()
              WHERE organization_memberships.deleted_at IS NULL
                AND ($7 OR organization_memberships.source_updated_at < EXCLUDED.source_updated_at)",
        )
        .await?;
    let n = tx
        .execute(
            &stmt,
            &[
                &m.id.as_str(),
                &m.organization.id.as_str(),
                &user_id.as_str(),
                &m.role,
                &m.permissions,
                &m.updated_at.time(),
                &deleted,
            ],
        )
        .await?;
    Ok(Change::from_rows(n))
}

/// The audit entry of a new tenant row: pending, to be made active.
async fn record_registered(
    tx: &Transaction<'_>,
    id: TenantId,
    actor: &str,
    details: serde_json::Value,
) -> Result<(), RegistryError> {
    record_event(
        tx,
        id,
        actor,
        "registered",
        None,
        (TenantStatus::Pending, DesiredState::Active),
        details,
    )
    .await
}
