//! The store against a real PostgreSQL: typed rows read back by column name,
//! the directory's ordering rules, and memberships that end with their
//! organization or user. Each test gets its own migrated database.

use chrono::{DateTime, Duration, Utc};
use deadpool_postgres::Pool;
use model::clerk::{Organization, OrganizationMembership, User};
use model::{ClerkMembershipId, ClerkOrgId, ClerkUserId, DesiredState, TenantStatus};
use registry::directory::{self, Change};
use registry::pool::{build_pool, PoolOptions};
use registry::tenants::{self, TenantKey};
use registry::webhook_events::{self, NewDelivery, Outcome};
use serde_json::json;
use tenant_plane_registry as registry;
use testkit::TestDatabase;

struct Store {
    pool: Pool,
    _db: TestDatabase,
}

async fn store() -> Store {
    let db = TestDatabase::migrated().await;
    let pool = build_pool(db.config(), &PoolOptions::default()).unwrap();
    Store { pool, _db: db }
}

fn org_id() -> ClerkOrgId {
    ClerkOrgId::parse(format!("org_{}", uuid::Uuid::new_v4().simple())).unwrap()
}

fn user_id() -> ClerkUserId {
    ClerkUserId::parse(format!("user_{}", uuid::Uuid::new_v4().simple())).unwrap()
}

fn org(id: &ClerkOrgId, name: &str, at: DateTime<Utc>) -> Organization {
    Organization::new(id.clone(), name.to_owned(), Some(format!("slug-{id}")), at)
}

fn user(id: &ClerkUserId, at: DateTime<Utc>) -> User {
    serde_json::from_value(json!({
        "id": id, "first_name": "Ada", "created_at": at.timestamp_millis(),
        "updated_at": at.timestamp_millis(),
    }))
    .unwrap()
}

fn membership(org: &ClerkOrgId, user: &ClerkUserId, at: DateTime<Utc>) -> OrganizationMembership {
    let id = ClerkMembershipId::parse(format!("orgmem_{}", uuid::Uuid::new_v4().simple())).unwrap();
    serde_json::from_value(json!({
        "id": id, "role": "org:member", "organization": {"id": org},
        "public_user_data": {"user_id": user},
        "created_at": at.timestamp_millis(), "updated_at": at.timestamp_millis(),
    }))
    .unwrap()
}

/// Runs one store call in a transaction of its own and commits it.
macro_rules! in_tx {
    ($s:expr, $tx:ident => $call:expr) => {{
        let mut client = $s.pool.get().await.unwrap();
        let transaction = client.transaction().await.unwrap();
        let $tx = &transaction;
        let out = $call.await.unwrap();
        transaction.commit().await.unwrap();
        out
    }};
}

impl Store {
    /// Whether a membership row is live (not soft-deleted); None if absent.
    async fn membership_live(&self, m: &OrganizationMembership) -> Option<bool> {
        let client = self.pool.get().await.unwrap();
        client
            .query_opt(
                "SELECT deleted_at IS NULL FROM organization_memberships
                  WHERE clerk_membership_id = $1",
                &[&m.id.as_str()],
            )
            .await
            .unwrap()
            .map(|r| r.get(0))
    }
}

#[tokio::test]
async fn a_tenant_reads_back_typed_by_every_key() {
    let s = store().await;
    let id = org_id();
    let now = Utc::now();
    let o = org(&id, "Acme", now);
    let change = in_tx!(s, tx => directory::upsert_organization(tx, &o, "test"));
    assert_eq!(change, Change::Applied);

    let client = s.pool.get().await.unwrap();
    let t = tenants::get(&client, TenantKey::ClerkOrg(&id))
        .await
        .unwrap()
        .expect("registered");
    assert_eq!(t.clerk_org_id, id);
    assert_eq!(t.name, "Acme");
    assert_eq!(t.status, TenantStatus::Pending);
    assert_eq!(t.desired_state, DesiredState::Active);
    assert_eq!(t.placement, None, "not placed before the reconciler runs");
    assert_eq!(
        t.source_updated_at.timestamp_millis(),
        now.timestamp_millis()
    );
    let by_id = tenants::get(&client, TenantKey::Id(t.id))
        .await
        .unwrap()
        .unwrap();
    let by_slug = tenants::get(&client, TenantKey::Slug(t.slug.as_deref().unwrap()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((by_id.id, by_slug.id), (t.id, t.id));
    assert!(tenants::get(&client, TenantKey::ClerkOrg(&org_id()))
        .await
        .unwrap()
        .is_none());
    let counts = tenants::count_by_status(&client).await.unwrap();
    assert_eq!(counts.len(), TenantStatus::ALL.len());
    assert!(counts.contains(&(TenantStatus::Pending, 1)));
    assert!(counts.contains(&(TenantStatus::Active, 0)));
}

#[tokio::test]
async fn the_schema_refuses_names_that_could_not_be_generated() {
    let s = store().await;
    let id = org_id();
    let o = org(&id, "Acme", Utc::now());
    in_tx!(s, tx => directory::upsert_organization(tx, &o, "test"));
    let client = s.pool.get().await.unwrap();
    let host: uuid::Uuid = client
        .query_one(
            "INSERT INTO db_hosts (id, name, host) VALUES (gen_random_uuid(), 'h', 'localhost')
             RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    for (what, db, role) in [
        ("a quote", "x\"; DROP DATABASE y; --", "tenant_a"),
        ("upper case", "Tenant_A", "tenant_a"),
        ("names without each other", "tenant_a", ""),
    ] {
        let role = (!role.is_empty()).then_some(role);
        let err = client
            .execute(
                "UPDATE tenant_registry SET db_host_id = $2, db_name = $3, db_role = $4
                  WHERE clerk_org_id = $1",
                &[&id.as_str(), &host, &db, &role],
            )
            .await
            .expect_err(what);
        assert_eq!(
            err.code(),
            Some(&tokio_postgres::error::SqlState::CHECK_VIOLATION),
            "{what}: {err}"
        );
    }
    // And a well-formed placement reads back typed.
    client
        .execute(
            "UPDATE tenant_registry SET db_host_id = $2, db_name = 'tenant_a', db_role = 'tenant_a'
              WHERE clerk_org_id = $1",
            &[&id.as_str(), &host],
        )
        .await
        .unwrap();
    let t = tenants::get(&client, TenantKey::ClerkOrg(&id))
        .await
        .unwrap()
        .unwrap();
    let p = t.placement.expect("placed");
    assert_eq!(
        (p.host.as_str(), p.address.as_str(), p.port),
        ("h", "localhost", 5432)
    );
    assert_eq!(
        (p.database.as_str(), p.role.as_str()),
        ("tenant_a", "tenant_a")
    );
}

#[tokio::test]
async fn an_older_update_never_overwrites_a_newer_one() {
    let s = store().await;
    let id = org_id();
    let now = Utc::now();
    let newer = org(&id, "Newer", now);
    let older = org(&id, "Older", now - Duration::seconds(10));
    in_tx!(s, tx => directory::upsert_organization(tx, &newer, "test"));
    let change = in_tx!(s, tx => directory::upsert_organization(tx, &older, "test"));
    assert_eq!(change, Change::Stale);
    let client = s.pool.get().await.unwrap();
    let t = tenants::get(&client, TenantKey::ClerkOrg(&id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(t.name, "Newer");
}

#[tokio::test]
async fn a_token_registration_is_beaten_by_any_clerk_event_and_never_replaces_a_row() {
    let s = store().await;
    let client = s.pool.get().await.unwrap();
    let get = |id: ClerkOrgId| {
        let client = &client;
        async move {
            tenants::get(client, TenantKey::ClerkOrg(&id))
                .await
                .unwrap()
                .unwrap()
        }
    };

    // Registered from a token: pending, desired active, the lowest watermark.
    let id = org_id();
    let change =
        in_tx!(s, tx => directory::register_from_token(tx, &id, Some("from-token"), "resolver"));
    assert_eq!(change, Change::Applied);
    let t = get(id.clone()).await;
    assert_eq!(
        (t.status, t.desired_state),
        (TenantStatus::Pending, DesiredState::Active)
    );
    assert_eq!(t.slug.as_deref(), Some("from-token"));
    assert_eq!(t.source_updated_at, directory::TOKEN_WATERMARK);
    let events = tenants::events(&client, t.id).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(
        (events[0].actor.as_str(), events[0].kind.as_str()),
        ("resolver", "registered")
    );
    assert_eq!(
        events[0].detail["reason"],
        json!(directory::TOKEN_REGISTRATION_REASON)
    );

    // A second registration writes nothing.
    let again =
        in_tx!(s, tx => directory::register_from_token(tx, &id, Some("from-token"), "resolver"));
    assert_eq!(again, Change::Stale);

    // Clerk's oldest possible event still beats it, and completes the row.
    let first = Utc::now() - Duration::days(365);
    let created = Organization::new(id.clone(), "Named".into(), Some("from-token".into()), first);
    let change = in_tx!(s, tx => directory::upsert_organization(tx, &created, "test"));
    assert_eq!(change, Change::Applied);
    let completed = get(id.clone()).await;
    assert_eq!(completed.id, t.id);
    assert_eq!(completed.name, "Named");
    assert_eq!(
        completed.source_updated_at.timestamp_millis(),
        first.timestamp_millis()
    );
    assert_eq!(tenants::events(&client, t.id).await.unwrap().len(), 1);

    // The slug another organization holds is not taken.
    let other = org_id();
    in_tx!(s, tx => directory::register_from_token(tx, &other, Some("from-token"), "resolver"));
    assert_eq!(get(other).await.slug, None);

    // A tombstone stays one.
    let gone = org_id();
    in_tx!(s, tx => directory::delete_organization(tx, &gone, Utc::now(), "test"));
    let change = in_tx!(s, tx => directory::register_from_token(tx, &gone, None, "resolver"));
    assert_eq!(change, Change::Stale);
    let t = get(gone).await;
    assert_eq!(
        (t.status, t.desired_state),
        (TenantStatus::Deleted, DesiredState::Deleted)
    );
}

#[tokio::test]
async fn deleting_an_organization_ends_its_memberships() {
    let s = store().await;
    let (org_a, org_b, u) = (org_id(), org_id(), user_id());
    let now = Utc::now();
    let (m_a, m_b) = (membership(&org_a, &u, now), membership(&org_b, &u, now));
    for (o, m) in [(&org_a, &m_a), (&org_b, &m_b)] {
        let o = org(o, "Org", now);
        in_tx!(s, tx => directory::upsert_organization(tx, &o, "test"));
        in_tx!(s, tx => directory::upsert_membership(tx, m, false));
    }
    in_tx!(s, tx => directory::delete_organization(tx, &org_a, now, "test"));
    assert_eq!(
        s.membership_live(&m_a).await,
        Some(false),
        "ended with its organization"
    );
    assert_eq!(
        s.membership_live(&m_b).await,
        Some(true),
        "another organization's stays"
    );

    // A membership event that arrives after the deletion is stored dead.
    let late = membership(&org_a, &u, now + Duration::seconds(1));
    in_tx!(s, tx => directory::upsert_membership(tx, &late, false));
    assert_eq!(s.membership_live(&late).await, Some(false));
}

#[tokio::test]
async fn deleting_a_user_ends_their_memberships() {
    let s = store().await;
    let (o, u, other) = (org_id(), user_id(), user_id());
    let now = Utc::now();
    let organization = org(&o, "Org", now);
    in_tx!(s, tx => directory::upsert_organization(tx, &organization, "test"));
    let (mine, theirs) = (membership(&o, &u, now), membership(&o, &other, now));
    for m in [&mine, &theirs] {
        in_tx!(s, tx => directory::upsert_membership(tx, m, false));
    }
    let profile = user(&u, now);
    in_tx!(s, tx => directory::upsert_user(tx, &profile));
    let change = in_tx!(s, tx => directory::delete_user(tx, &u, now));
    assert_eq!(change, Change::Applied);
    assert_eq!(s.membership_live(&mine).await, Some(false));
    assert_eq!(s.membership_live(&theirs).await, Some(true));

    // Deleting a user never seen leaves a tombstone, and their late
    // membership arrives dead.
    let ghost = user_id();
    in_tx!(s, tx => directory::delete_user(tx, &ghost, now));
    let late = membership(&o, &ghost, now);
    in_tx!(s, tx => directory::upsert_membership(tx, &late, false));
    assert_eq!(s.membership_live(&late).await, Some(false));
}

#[tokio::test]
async fn pruning_ends_the_memberships_clerk_no_longer_has() {
    let s = store().await;
    let (o, u1, u2) = (org_id(), user_id(), user_id());
    let now = Utc::now();
    let organization = org(&o, "Org", now);
    in_tx!(s, tx => directory::upsert_organization(tx, &organization, "test"));
    let (kept, gone) = (membership(&o, &u1, now), membership(&o, &u2, now));
    for m in [&kept, &gone] {
        in_tx!(s, tx => directory::upsert_membership(tx, m, false));
    }
    let keep = [kept.id.as_str()];
    let n = in_tx!(s, tx => directory::prune_memberships(tx, &o, &keep));
    assert_eq!(n, 1);
    assert_eq!(s.membership_live(&kept).await, Some(true));
    assert_eq!(s.membership_live(&gone).await, Some(false));
}

#[tokio::test]
async fn a_membership_without_its_member_is_not_stored() {
    let s = store().await;
    let o = org_id();
    let now = Utc::now();
    let mut m = membership(&o, &user_id(), now);
    m.public_user_data = None;
    let change = in_tx!(s, tx => directory::upsert_membership(tx, &m, false));
    assert!(matches!(change, Change::Incomplete(_)), "{change:?}");
    assert_eq!(s.membership_live(&m).await, None);
}

#[tokio::test]
async fn the_inbox_records_a_delivery_once_and_reads_it_back() {
    let s = store().await;
    let payload = json!({"type": "user.created", "data": {"id": "user_1"}});
    let d = NewDelivery {
        svix_id: "msg_store_test",
        event_type: "user.created",
        object_id: Some("user_1"),
        instance_id: None,
        event_timestamp: Some(Utc::now()),
        payload: Some(&payload),
        raw_body: None,
    };
    let first = in_tx!(s, tx => webhook_events::insert(tx, &d, Outcome::Applied, None));
    let again = in_tx!(s, tx => webhook_events::insert(tx, &d, Outcome::Dead, Some("x")));
    assert!(first && !again, "the svix-id is recorded once");
    let client = s.pool.get().await.unwrap();
    let stored = webhook_events::get(&client, "msg_store_test")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.outcome, Outcome::Applied);
    assert_eq!(stored.body, Some(payload));
    let listed = webhook_events::list(&client, Some(Outcome::Applied), 10)
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].body.is_none(), "lists leave bodies out");
    assert!(webhook_events::list(&client, Some(Outcome::Dead), 10)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn replicas_migrating_at_once_take_turns() {
    let db = TestDatabase::empty().await;
    let runs = (0..4).map(|_| {
        let config = db.config();
        tokio::spawn(async move {
            let (mut client, conn) = config.connect().await.unwrap();
            tokio::spawn(conn);
            registry::schema::migrate(&mut client).await
        })
    });
    let mut applied = Vec::new();
    for run in runs.collect::<Vec<_>>() {
        applied.push(
            run.await
                .unwrap()
                .expect("every replica's migrate succeeds"),
        );
    }
    // Exactly one of them applied the migrations; the others found them done.
    let latest = registry::schema::latest_version() as usize;
    let mut counts: Vec<usize> = applied.iter().map(Vec::len).collect();
    counts.sort();
    assert_eq!(counts, [0, 0, 0, latest]);
    let client = db.client().await;
    registry::schema::check(&client)
        .await
        .expect("the schema is current");
}

#[tokio::test]
async fn pooled_sessions_carry_their_deadlines_and_a_long_statement_is_cancelled() {
    let db = TestDatabase::migrated().await;
    let options = PoolOptions {
        session: registry::session::SessionLimits::new(
            std::time::Duration::from_millis(300),
            std::time::Duration::from_millis(200),
        ),
        ..PoolOptions::default()
    };
    let pool = build_pool(db.config(), &options).unwrap();
    let client = pool.get().await.unwrap();
    let show = |name: &'static str| {
        let client = &client;
        async move {
            let row = client
                .query_one(&format!("SHOW {name}"), &[])
                .await
                .unwrap();
            row.get::<_, String>(0)
        }
    };
    assert_eq!(show("statement_timeout").await, "300ms");
    assert_eq!(show("lock_timeout").await, "200ms");
    let err = client
        .batch_execute("SELECT pg_sleep(5)")
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::QUERY_CANCELED),
        "{err}"
    );
}
