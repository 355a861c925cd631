//! Several worker processes against one control database.

use std::collections::HashSet;
use std::time::Duration;

use futures::future::join_all;
use webhooks::samples::{SampleEvent, SampleIds};

use crate::helpers::{new_svix_id, spawn_app, spawn_worker, wait_until};

#[tokio::test]
async fn two_workers_and_a_burst_of_fifty_organizations_give_each_exactly_one_database() {
    let app = spawn_app().await;
    let mut workers = [spawn_worker(&app, None), spawn_worker(&app, None)];

    let events: Vec<(String, Vec<u8>)> = (0..50)
        .map(|i| {
            let e = SampleEvent::new("organization.created", &SampleIds::random())
                .unwrap()
                .name(format!("Burst {i}"))
                .slug(None);
            (new_svix_id(), e.to_body())
        })
        .collect();
    for r in join_all(
        events
            .iter()
            .map(|(id, body)| app.deliver(id, body.clone())),
    )
    .await
    {
        assert_eq!(r.status(), 200);
    }

    wait_until("50 active tenants", Duration::from_secs(180), || async {
        let active: i64 = app
            .client
            .query_one(
                "SELECT count(*) FROM tenant_registry WHERE status = 'active'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        active == 50
    })
    .await;
    for w in &mut workers {
        w.kill().await.unwrap();
    }

    let registered: HashSet<String> = app
        .client
        .query("SELECT db_name FROM tenant_registry", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let template = format!("{}template", app.prefix.prefix);
    let on_server: HashSet<String> = app
        .prefixed_databases()
        .await
        .into_iter()
        .filter(|d| *d != template)
        .collect();
    assert_eq!(registered.len(), 50);
    assert_eq!(
        on_server, registered,
        "exactly one database per tenant, no strays"
    );
    let failures: i64 = app
        .client
        .query_one(
            "SELECT count(*) FROM tenant_events WHERE kind IN ('attempt_failed', 'failed')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(failures, 0, "no step failed in the race");
}
