//! Hostile organization names and slugs are data: stored faithfully, never
//! used to build SQL.

use webhooks::samples::{SampleEvent, SampleIds};

use crate::helpers::spawn_app;

#[tokio::test]
async fn hostile_names_and_slugs_are_stored_faithfully() {
    let app = spawn_app().await;
    let long = "é".repeat(100); // 200 bytes
    let cases: Vec<(String, Option<String>)> = vec![
        (
            "Robert'); DROP TABLE tenant_registry;--".into(),
            Some("x'; DROP TABLE users; --".into()),
        ),
        ("\"quoted\" \\ backslash".into(), Some("\"slug\"".into())),
        ("semi;colon; $1 $$dollar$$".into(), Some("a;b".into())),
        ("😀 Ünïcödé 組織 \u{202e}rtl".into(), Some("ünï-😀".into())),
        (long.clone(), Some(long.clone())),
        (String::new(), Some(String::new())),
        ("no slug".into(), None),
        ("%_ like wildcards".into(), Some("%".into())),
    ];
    for (name, slug) in &cases {
        let ids = SampleIds::random();
        let event = SampleEvent::new("organization.created", &ids)
            .unwrap()
            .name(name.clone())
            .slug(slug.clone());
        assert_eq!(app.send(&event).await, "applied", "{name:?}");
        let t = app.tenant(ids.org_id.as_str()).await.unwrap();
        assert_eq!(&t.name, name);
        assert_eq!(&t.slug, slug);
    }
    assert_eq!(long.len(), 200);
    // Every table is still there and holds exactly what was sent.
    assert_eq!(app.count("tenant_registry").await, cases.len() as i64);
    assert_eq!(app.count("users").await, 0);
}

#[tokio::test]
async fn hostile_ids_are_dead_lettered_not_applied() {
    let app = spawn_app().await;
    let body = r#"{"type":"organization.created","timestamp":1,"data":{"id":"org_x'; DROP TABLE tenant_registry; --","name":"n","created_at":1,"updated_at":1}}"#;
    let response = app
        .deliver(&crate::helpers::new_svix_id(), body.as_bytes().to_vec())
        .await;
    assert_eq!(crate::helpers::outcome(response).await, "dead");
    assert_eq!(app.count("tenant_registry").await, 0);
}
