//! The client against a local fake of Clerk's Backend API that follows the
//! spec's shapes (testkit's `fake_clerk`).

use std::time::Duration;

use model::ids::{ClerkOrgId, ClerkUserId};
use serde_json::json;
use tenant_plane_clerk_api::{ClerkClient, ClerkConfig, ClerkError};
use testkit::fake_clerk::{FakeClerk, Logged};

const SECRET: &str = "sk_test_fakeClerkSecret0123456789abcdef";

/// Quick backoff so that tests that retry 5xx do not sit idle; Retry-After
/// is still honoured up to `max_retry_wait`.
fn config(fake: &FakeClerk) -> ClerkConfig {
    let mut config = ClerkConfig::new(SECRET.to_owned());
    config.api_url = fake.url.clone();
    config.min_retry_wait = Duration::from_millis(10);
    config.max_retry_wait = Duration::from_secs(5);
    config
}

fn client(config: ClerkConfig) -> ClerkClient {
    ClerkClient::new(config).expect("valid config")
}

fn org_id(id: &str) -> ClerkOrgId {
    ClerkOrgId::parse(id).unwrap()
}

fn to(requests: &[Logged], method: &str, path: &str) -> Vec<Logged> {
    requests
        .iter()
        .filter(|r| r.method == method && r.path == path)
        .cloned()
        .collect()
}

#[tokio::test]
async fn lists_every_organization_across_pages() {
    let fake = FakeClerk::start(SECRET).await;
    let ids: Vec<String> = (1..=7)
        .map(|i| fake.add_org(&format!("Org {i}"), json!({ "n": i })))
        .collect();
    let mut config = config(&fake);
    config.page_size = 3;
    let clerk = client(config);

    let orgs = clerk.list_all_organizations().await.unwrap();

    let got: Vec<&str> = orgs.iter().map(|o| o.id.as_str()).collect();
    assert_eq!(got, ids, "all seven, oldest first");
    assert_eq!(orgs[6].name, "Org 7");
    assert_eq!(orgs[6].slug.as_deref(), Some("org-7"));
    assert_eq!(orgs[6].public_metadata, json!({ "n": 7 }));
    assert!(orgs[0].created_at < orgs[6].created_at);

    let requests = to(&fake.requests(), "GET", "/v1/organizations");
    assert_eq!(requests.len(), 3, "{requests:#?}");
    for (request, offset) in requests.iter().zip(["0", "3", "6"]) {
        assert_eq!(request.status, 200);
        assert_eq!(request.param("limit"), Some("3"));
        assert_eq!(request.param("offset"), Some(offset));
        assert_eq!(request.param("order_by"), Some("+created_at"));
        assert_eq!(request.api_version.as_deref(), Some("2026-05-12"));
    }

    let page = clerk.list_organizations_page(3).await.unwrap();
    assert_eq!(page.total_count, 7);
    let got: Vec<&str> = page.data.iter().map(|o| o.id.as_str()).collect();
    assert_eq!(got, &ids[3..6]);
}

#[tokio::test]
async fn largest_page_size_is_accepted_and_one_page_suffices() {
    let fake = FakeClerk::start(SECRET).await;
    for i in 0..4 {
        fake.add_org(&format!("Org {i}"), json!({}));
    }
    let mut config = config(&fake);
    config.page_size = 500;
    let orgs = client(config).list_all_organizations().await.unwrap();
    assert_eq!(orgs.len(), 4);
    let requests = fake.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].param("limit"), Some("500"));

    let mut config = ClerkConfig::new(SECRET.to_owned());
    config.page_size = 501;
    let err = ClerkClient::new(config).unwrap_err();
    assert!(matches!(err, ClerkError::InvalidConfig(_)), "{err}");
}

#[tokio::test]
async fn get_organization_answers_none_for_404() {
    let fake = FakeClerk::start(SECRET).await;
    let id = fake.add_org("Acme Corp", json!({ "plan": "pro" }));
    let clerk = client(config(&fake));

    let org = clerk.get_organization(&org_id(&id)).await.unwrap().unwrap();
    assert_eq!(org.name, "Acme Corp");
    assert_eq!(org.public_metadata, json!({ "plan": "pro" }));

    let missing = clerk
        .get_organization(&org_id("org_doesnotexist"))
        .await
        .unwrap();
    assert_eq!(missing, None);
    let requests = fake.requests();
    assert_eq!(requests.len(), 2, "a 404 is not retried");
    assert_eq!(requests[1].status, 404);
}

#[tokio::test]
async fn lists_all_memberships_of_one_organization() {
    let fake = FakeClerk::start(SECRET).await;
    let acme = fake.add_org("Acme", json!({}));
    let other = fake.add_org("Other", json!({}));
    let users: Vec<String> = ["Ada", "Grace", "Edsger", "Barbara", "Alan"]
        .iter()
        .map(|n| fake.add_user(n))
        .collect();
    let memberships: Vec<String> = users
        .iter()
        .enumerate()
        .map(|(i, u)| {
            let role = if i == 0 { "org:admin" } else { "org:member" };
            fake.add_membership(&acme, u, role)
        })
        .collect();
    fake.add_membership(&other, &users[0], "org:admin");
    let mut config = config(&fake);
    config.page_size = 2;
    let clerk = client(config);

    let got = clerk
        .list_organization_memberships(&org_id(&acme))
        .await
        .unwrap();

    let ids: Vec<&str> = got.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, memberships);
    let members: Vec<&str> = got.iter().map(|m| m.user_id().unwrap().as_str()).collect();
    assert_eq!(members, users);
    assert!(got.iter().all(|m| m.organization.id.as_str() == acme));
    assert_eq!(got[0].role, "org:admin");
    assert_eq!(got[0].permissions, vec!["org:sys_profile:read".to_owned()]);
    assert_eq!(
        got[1]
            .public_user_data
            .as_ref()
            .unwrap()
            .identifier
            .as_deref(),
        Some("grace@example.com")
    );
    let path = format!("/v1/organizations/{acme}/memberships");
    assert_eq!(to(&fake.requests(), "GET", &path).len(), 3);

    let err = clerk
        .list_organization_memberships(&org_id("org_unknown"))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(404), "{err}");
}

#[tokio::test]
async fn lists_users_from_bare_arrays_with_the_cursor() {
    let fake = FakeClerk::start(SECRET).await;
    let ids: Vec<String> = ["Ada", "Grace", "Edsger", "Barbara", "Alan"]
        .iter()
        .map(|n| fake.add_user(n))
        .collect();
    let mut config = config(&fake);
    config.page_size = 2;
    let clerk = client(config);

    let users = clerk.list_all_users().await.unwrap();

    let got: Vec<&str> = users.iter().map(|u| u.id.as_str()).collect();
    assert_eq!(got, ids);
    assert_eq!(users[1].first_name.as_deref(), Some("Grace"));
    assert_eq!(users[1].primary_email(), Some("grace@example.com"));
    let requests = to(&fake.requests(), "GET", "/v1/users");
    let cursors: Vec<Option<&str>> = requests.iter().map(|r| r.param("starting_after")).collect();
    assert_eq!(
        cursors,
        vec![None, Some(ids[1].as_str()), Some(ids[3].as_str())],
        "pages 2, 2, 1: the short page ends the walk"
    );
    assert!(requests.iter().all(|r| r.param("offset").is_none()));
    assert!(requests.iter().all(|r| r.status == 200));

    // An exact multiple of the page size needs one more, empty, page.
    fake.add_user("Margaret");
    let users = clerk.list_all_users().await.unwrap();
    assert_eq!(users.len(), 6);
    let page = clerk
        .list_users_page(Some(&ClerkUserId::parse(users[5].id.as_str()).unwrap()))
        .await
        .unwrap();
    assert!(page.is_empty());
}

#[tokio::test]
async fn honours_retry_after_on_429() {
    let fake = FakeClerk::start(SECRET).await;
    fake.add_org("Acme", json!({}));
    let clerk = client(config(&fake));
    fake.fail_next_with_429(1);

    let orgs = clerk.list_all_organizations().await.unwrap();

    assert_eq!(orgs.len(), 1);
    let requests = fake.requests();
    assert_eq!(requests.len(), 2, "{requests:#?}");
    assert_eq!((requests[0].status, requests[1].status), (429, 200));
    let waited = requests[1].at - requests[0].at;
    assert!(
        waited >= Duration::from_secs(1),
        "retried {waited:?} after a 429 with Retry-After: 1"
    );
}

#[tokio::test]
async fn retries_a_500_and_succeeds() {
    let fake = FakeClerk::start(SECRET).await;
    let id = fake.add_org("Acme", json!({}));
    let clerk = client(config(&fake));
    fake.fail_next_with_500(1);

    let org = clerk.get_organization(&org_id(&id)).await.unwrap();

    assert_eq!(org.unwrap().name, "Acme");
    let statuses: Vec<u16> = fake.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![500, 200]);
}

#[tokio::test]
async fn gives_up_after_max_retries() {
    let fake = FakeClerk::start(SECRET).await;
    fake.add_org("Acme", json!({}));
    let mut config = config(&fake);
    config.max_retries = 2;
    let clerk = client(config);

    fake.fail_next_with_500(100);
    let err = clerk.list_all_organizations().await.unwrap_err();
    match &err {
        ClerkError::RetriesExhausted {
            attempts,
            last_status,
            last_error,
        } => {
            assert_eq!(*attempts, 3);
            assert_eq!(*last_status, Some(500));
            assert!(last_error.contains("internal_clerk_error"), "{last_error}");
        }
        other => panic!("expected RetriesExhausted, got {other:?}"),
    }
    assert_eq!(fake.requests().len(), 3, "one attempt and two retries");

    fake.fail_next_with_500(0);
    fake.fail_next_with_429(100);
    let err = clerk.list_all_organizations().await.unwrap_err();
    assert!(
        matches!(
            err,
            ClerkError::RetriesExhausted {
                last_status: Some(429),
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn retries_connection_failures_then_gives_up() {
    // A port nobody listens on.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let mut config = ClerkConfig::new(SECRET.to_owned());
    config.api_url = format!("http://127.0.0.1:{port}");
    config.max_retries = 1;
    config.min_retry_wait = Duration::from_millis(10);

    let err = client(config).list_all_users().await.unwrap_err();

    match &err {
        ClerkError::RetriesExhausted {
            attempts,
            last_status,
            ..
        } => {
            assert_eq!(*attempts, 2);
            assert_eq!(*last_status, None);
        }
        other => panic!("expected RetriesExhausted, got {other:?}"),
    }
    assert!(!format!("{err} {err:?}").contains(SECRET));
}

#[tokio::test]
async fn wrong_secret_is_a_401_that_does_not_show_the_key() {
    let fake = FakeClerk::start(SECRET).await;
    fake.add_org("Acme", json!({}));
    let wrong = "sk_test_wrongKeyThatMustNeverBePrinted42";
    let mut config = config(&fake);
    config.secret_key = wrong.to_owned().into();
    let clerk = client(config);

    let err = clerk.list_all_organizations().await.unwrap_err();

    match &err {
        ClerkError::Http {
            status,
            code,
            message,
            long_message,
        } => {
            assert_eq!(*status, 401);
            assert_eq!(code.as_deref(), Some("authentication_invalid"));
            assert_eq!(message, "Unauthorized request");
            assert_eq!(
                long_message.as_deref(),
                Some("You are not authorized to perform this request")
            );
        }
        other => panic!("expected Http, got {other:?}"),
    }
    let shown = format!("{err} | {err:?} | {clerk:?}");
    assert!(shown.contains("Unauthorized request"), "{shown}");
    assert!(!shown.contains(wrong), "{shown}");
    assert!(!shown.contains("wrongKey"), "{shown}");
    assert!(!shown.contains(SECRET), "{shown}");
    assert_eq!(fake.requests().len(), 1, "a 401 is not retried");
}

#[tokio::test]
async fn merges_public_metadata_deeply() {
    let fake = FakeClerk::start(SECRET).await;
    let id = fake.add_org(
        "Acme",
        json!({
            "plan": "free",
            "limits": { "seats": 5, "storage_gb": 10 },
            "legacy": true
        }),
    );
    let clerk = client(config(&fake));
    let before = fake.org(&id)["updated_at"].as_i64().unwrap();
    let patch = json!({
        "limits": { "seats": 10 },
        "tenant": { "status": "active", "db": "tenant_0190" },
        "legacy": null
    });

    let org = clerk
        .merge_organization_metadata(&org_id(&id), patch.clone())
        .await
        .unwrap();

    let merged = json!({
        "plan": "free",
        "limits": { "seats": 10, "storage_gb": 10 },
        "tenant": { "status": "active", "db": "tenant_0190" }
    });
    assert_eq!(org.public_metadata, merged);
    assert!(org.updated_at.time().timestamp_millis() > before);
    assert_eq!(fake.org(&id)["public_metadata"], merged);
    assert_eq!(
        fake.org(&id)["private_metadata"],
        json!({ "internal": "not for the client" })
    );

    let path = format!("/v1/organizations/{id}/metadata");
    let patches = to(&fake.requests(), "PATCH", &path);
    assert_eq!(patches.len(), 1);
    assert_eq!(patches[0].body, Some(json!({ "public_metadata": patch })));
    assert_eq!(patches[0].content_type.as_deref(), Some("application/json"));

    let err = clerk
        .merge_organization_metadata(&org_id(&id), json!(["not", "an", "object"]))
        .await
        .unwrap_err();
    assert!(matches!(err, ClerkError::InvalidRequest(_)), "{err}");
    let err = clerk
        .merge_organization_metadata(&org_id("org_missing"), json!({ "a": 1 }))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(404), "{err}");
    assert_eq!(
        fake.requests().len(),
        2,
        "nothing sent for the array, the 404 not retried"
    );
}

#[tokio::test]
async fn metadata_merges_are_rate_limited_per_organization() {
    let fake = FakeClerk::start(SECRET).await;
    let a = fake.add_org("A", json!({}));
    let b = fake.add_org("B", json!({}));
    let window = Duration::from_secs(2);
    let mut config = config(&fake);
    config.metadata_rate = (10, window);
    let clerk = client(config);
    let (a_id, b_id) = (org_id(&a), org_id(&b));

    for i in 0..10 {
        clerk
            .merge_organization_metadata(&a_id, json!({ format!("a{i}"): i }))
            .await
            .unwrap();
    }
    // A's eleventh must wait for A's window; B has a budget of its own.
    let eleventh = {
        let clerk = clerk.clone();
        let a_id = a_id.clone();
        tokio::spawn(async move {
            clerk
                .merge_organization_metadata(&a_id, json!({ "a10": 10 }))
                .await
        })
    };
    for i in 0..10 {
        clerk
            .merge_organization_metadata(&b_id, json!({ format!("b{i}"): i }))
            .await
            .unwrap();
    }
    let org = eleventh.await.unwrap().unwrap();
    assert_eq!(org.public_metadata.as_object().unwrap().len(), 11);

    let requests = fake.requests();
    let to_a = to(
        &requests,
        "PATCH",
        &format!("/v1/organizations/{a}/metadata"),
    );
    let to_b = to(
        &requests,
        "PATCH",
        &format!("/v1/organizations/{b}/metadata"),
    );
    assert_eq!((to_a.len(), to_b.len()), (11, 10));
    assert!(to_a.iter().chain(&to_b).all(|r| r.status == 200));
    let spacing = to_a[10].at - to_a[0].at;
    assert!(
        spacing >= window,
        "A's 11th PATCH came {spacing:?} after its first; the window is {window:?}"
    );
    assert!(
        to_b.iter().all(|r| r.at < to_a[10].at),
        "B's merges went ahead while A's 11th waited"
    );
}
