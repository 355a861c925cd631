//! Clerk delivers in any order: the end state must be Clerk's latest state.

use webhooks::samples::{SampleEvent, SampleIds};

use crate::helpers::spawn_app;

const T0: i64 = 1_716_883_200_000;

fn event(t: &str, ids: &SampleIds, name: &str, updated_at_ms: i64) -> SampleEvent {
    SampleEvent::new(t, ids)
        .unwrap()
        .name(name)
        .slug(Some(name.to_lowercase().replace(' ', "-")))
        .updated_at_ms(updated_at_ms)
}

#[tokio::test]
async fn updated_before_created_keeps_the_newer_update() {
    let app = spawn_app().await;
    let ids = SampleIds::random();
    let updated = event("organization.updated", &ids, "Renamed", T0 + 5_000);
    let created = event("organization.created", &ids, "Original", T0);
    // An update for an unknown organization creates it (self-healing)...
    assert_eq!(app.send(&updated).await, "applied");
    // ...and the late create changes nothing.
    assert_eq!(app.send(&created).await, "stale");
    let t = app.tenant(ids.org_id.as_str()).await.unwrap();
    assert_eq!(t.name, "Renamed");
    assert_eq!(t.slug.as_deref(), Some("renamed"));
    assert_eq!(
        (t.status.as_str(), t.desired_state.as_str()),
        ("pending", "active")
    );
    assert_eq!(app.count("tenant_registry").await, 1);
}

#[tokio::test]
async fn an_older_update_after_a_newer_one_is_stale() {
    let app = spawn_app().await;
    let ids = SampleIds::random();
    assert_eq!(
        app.send(&event("organization.created", &ids, "V1", T0))
            .await,
        "applied"
    );
    assert_eq!(
        app.send(&event("organization.updated", &ids, "V3", T0 + 3_000))
            .await,
        "applied"
    );
    assert_eq!(
        app.send(&event("organization.updated", &ids, "V2", T0 + 2_000))
            .await,
        "stale"
    );
    // Equal timestamps are not newer either.
    assert_eq!(
        app.send(&event("organization.updated", &ids, "V3b", T0 + 3_000))
            .await,
        "stale"
    );
    assert_eq!(app.tenant(ids.org_id.as_str()).await.unwrap().name, "V3");
}

#[tokio::test]
async fn deleted_before_created_leaves_a_tombstone_that_is_never_resurrected() {
    let app = spawn_app().await;
    let ids = SampleIds::random();
    assert_eq!(
        app.send(&event("organization.deleted", &ids, "x", T0))
            .await,
        "applied"
    );
    assert_eq!(
        app.send(&event("organization.created", &ids, "Late", T0))
            .await,
        "stale"
    );
    assert_eq!(
        app.send(&event("organization.updated", &ids, "Later", T0 + 60_000))
            .await,
        "stale"
    );
    let t = app.tenant(ids.org_id.as_str()).await.unwrap();
    assert_eq!(
        (t.status.as_str(), t.desired_state.as_str()),
        ("deleted", "deleted")
    );
    assert_eq!(t.name, "");
    let kinds: Vec<String> = testkit::column(
        &app.client,
        "SELECT kind FROM tenant_events WHERE tenant_id = $1",
        &[&t.id],
    )
    .await;
    assert_eq!(kinds, ["tombstoned"]);
}

#[tokio::test]
async fn a_deletion_is_final_even_when_updates_carry_later_timestamps() {
    let app = spawn_app().await;
    let ids = SampleIds::random();
    app.send(&event("organization.created", &ids, "Acme", T0))
        .await;
    assert_eq!(
        app.send(&event("organization.deleted", &ids, "x", T0))
            .await,
        "applied"
    );
    assert_eq!(
        app.send(&event("organization.deleted", &ids, "x", T0))
            .await,
        "stale"
    );
    assert_eq!(
        app.send(&event(
            "organization.updated",
            &ids,
            "Zombie",
            T0 + 3_600_000
        ))
        .await,
        "stale"
    );
    let t = app.tenant(ids.org_id.as_str()).await.unwrap();
    assert_eq!(t.desired_state, "deleted");
    assert_eq!(t.name, "Acme");
}

#[tokio::test]
async fn users_follow_the_same_rules() {
    let app = spawn_app().await;
    let ids = SampleIds::random();
    let user = |t: &str, ms: i64| SampleEvent::new(t, &ids).unwrap().updated_at_ms(ms);
    assert_eq!(app.send(&user("user.updated", T0 + 10)).await, "applied");
    assert_eq!(app.send(&user("user.created", T0)).await, "stale");
    assert_eq!(app.send(&user("user.deleted", T0)).await, "applied");
    assert_eq!(
        app.send(&user("user.updated", T0 + 1_000_000)).await,
        "stale"
    );
    let deleted: bool = app
        .client
        .query_one(
            "SELECT deleted_at IS NOT NULL FROM users WHERE clerk_user_id = $1",
            &[&ids.user_id.as_str()],
        )
        .await
        .unwrap()
        .get(0);
    assert!(deleted);

    // Deleted before ever being seen: a tombstone.
    let other = SampleIds::random();
    let deleted = SampleEvent::new("user.deleted", &other).unwrap();
    assert_eq!(app.send(&deleted).await, "applied");
    let created = SampleEvent::new("user.created", &other).unwrap();
    assert_eq!(app.send(&created).await, "stale");
}

#[tokio::test]
async fn memberships_follow_the_same_rules() {
    let app = spawn_app().await;
    let ids = SampleIds::random();
    let m = |t: &str, role: &str, ms: i64| {
        SampleEvent::new(t, &ids)
            .unwrap()
            .role(role)
            .updated_at_ms(ms)
    };
    assert_eq!(
        app.send(&m("organizationMembership.updated", "org:admin", T0 + 5))
            .await,
        "applied"
    );
    assert_eq!(
        app.send(&m("organizationMembership.created", "org:member", T0))
            .await,
        "stale"
    );
    assert_eq!(
        app.send(&m("organizationMembership.deleted", "org:admin", T0 + 5))
            .await,
        "applied"
    );
    assert_eq!(
        app.send(&m("organizationMembership.updated", "org:owner", T0 + 99))
            .await,
        "stale"
    );
    let row = app
        .client
        .query_one(
            "SELECT role, deleted_at IS NOT NULL, clerk_org_id, clerk_user_id
               FROM organization_memberships WHERE clerk_membership_id = $1",
            &[&ids.membership_id.as_str()],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "org:admin");
    assert!(row.get::<_, bool>(1));
    assert_eq!(row.get::<_, String>(2), ids.org_id.as_str());
    assert_eq!(row.get::<_, String>(3), ids.user_id.as_str());
}

#[tokio::test]
async fn a_slug_taken_over_by_another_organization_moves_to_the_newest_claim() {
    let app = spawn_app().await;
    let a = SampleIds::random();
    let b = SampleIds::random();
    let a_created = event("organization.created", &a, "Shared", T0);
    assert_eq!(app.send(&a_created).await, "applied");
    // B now holds "shared"; A's own rename has not arrived yet.
    let b_created = event("organization.created", &b, "Shared", T0 + 2_000);
    assert_eq!(app.send(&b_created).await, "applied");
    assert_eq!(
        app.tenant(b.org_id.as_str()).await.unwrap().slug.as_deref(),
        Some("shared")
    );
    assert_eq!(app.tenant(a.org_id.as_str()).await.unwrap().slug, None);
    let a_renamed = event("organization.updated", &a, "Elsewhere", T0 + 1_000);
    assert_eq!(app.send(&a_renamed).await, "applied");
    assert_eq!(
        app.tenant(a.org_id.as_str()).await.unwrap().slug.as_deref(),
        Some("elsewhere")
    );
}

#[tokio::test]
async fn concurrent_claims_of_one_slug_all_succeed_and_the_newest_holds_it() {
    let app = spawn_app().await;
    let orgs: Vec<SampleIds> = (0..12).map(|_| SampleIds::random()).collect();
    let events: Vec<SampleEvent> = orgs
        .iter()
        .enumerate()
        .map(|(i, ids)| event("organization.created", ids, "Same Name", T0 + i as i64))
        .collect();
    let sends = events.iter().map(|e| app.send(e));
    for outcome in futures::future::join_all(sends).await {
        assert_eq!(outcome, "applied");
    }
    let holders: Vec<String> = testkit::column(
        &app.client,
        "SELECT clerk_org_id FROM tenant_registry WHERE slug = 'same-name'",
        &[],
    )
    .await;
    assert_eq!(holders, [orgs.last().unwrap().org_id.to_string()]);
}

#[tokio::test]
async fn deleting_an_organization_or_a_user_ends_their_memberships() {
    let app = spawn_app().await;
    let live = |m: String| {
        let app = &app;
        async move {
            app.client
                .query_one(
                    "SELECT deleted_at IS NULL FROM organization_memberships
                      WHERE clerk_membership_id = $1",
                    &[&m],
                )
                .await
                .unwrap()
                .get::<_, bool>(0)
        }
    };
    // Clerk sends no organizationMembership.deleted for these.
    let (of_org, of_user) = (SampleIds::random(), SampleIds::random());
    for ids in [&of_org, &of_user] {
        for t in [
            "organization.created",
            "user.created",
            "organizationMembership.created",
        ] {
            assert_eq!(
                app.send(&SampleEvent::new(t, ids).unwrap()).await,
                "applied",
                "{t}"
            );
        }
    }
    assert!(live(of_org.membership_id.to_string()).await);
    assert_eq!(
        app.send(&SampleEvent::new("organization.deleted", &of_org).unwrap())
            .await,
        "applied"
    );
    assert!(
        !live(of_org.membership_id.to_string()).await,
        "ended with its organization"
    );
    assert!(
        live(of_user.membership_id.to_string()).await,
        "others untouched"
    );
    assert_eq!(
        app.send(&SampleEvent::new("user.deleted", &of_user).unwrap())
            .await,
        "applied"
    );
    assert!(
        !live(of_user.membership_id.to_string()).await,
        "ended with its user"
    );
}
