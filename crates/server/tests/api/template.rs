//! The tenant template: versions, edits refused, and migration while
//! tenants are being cloned.

use std::path::Path;

use futures::future::join_all;
use provisioner::template::{self, Templates};

use crate::helpers::{spawn_app, TemplateDir, TEMPLATE_V1};

async fn sync_with(
    app: &crate::helpers::TestApp,
    dir: &Path,
) -> Result<template::TemplateReport, template::TemplateError> {
    let client = app.pool().get().await.unwrap();
    let host = registry::hosts::get(&client, "default")
        .await
        .unwrap()
        .unwrap();
    template::build(
        &app.pool(),
        &tenant_plane::provisioning::host_connector(&app.settings).unwrap(),
        &host,
        &app.settings.prefix().unwrap(),
        &Templates::from_dir(dir).unwrap(),
    )
    .await
}

#[tokio::test]
async fn a_changed_applied_template_migration_is_refused() {
    let app = spawn_app().await;
    let edited = format!("{TEMPLATE_V1}\nCREATE TABLE sneaky (id int);\n");
    let dir = TemplateDir::with(&[("V1__initial_schema.sql", &edited)]);
    let err = sync_with(&app, Path::new(dir.path()))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("V1 was changed after it was applied"), "{err}");
    // Nothing was applied: still one version on record.
    let versions: i64 = app
        .client
        .query_one("SELECT count(*) FROM template_versions", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(versions, 1);
}

#[tokio::test]
async fn a_template_migration_during_provisioning_never_breaks_a_clone() {
    let app = spawn_app().await;
    let mut orgs = Vec::new();
    for i in 0..12 {
        orgs.push(app.create_org(&format!("busy {i}")).await);
    }
    let dir = TemplateDir::with(&[
        ("V1__initial_schema.sql", TEMPLATE_V1),
        (
            "V2__labels.sql",
            "CREATE TABLE labels (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text NOT NULL UNIQUE);",
        ),
    ]);
    // Three reconcilers cloning while the template is migrated.
    let drains = join_all((0..3).map(|_| app.reconciler.drain()));
    let (drained, synced) = tokio::join!(drains, sync_with(&app, Path::new(dir.path())));
    for d in drained {
        d.expect("reconciler passes");
    }
    let report = synced.expect("template migrated");
    assert_eq!(report.applied, [2]);

    for ids in &orgs {
        let t = app.registry_tenant(ids.org_id.as_str()).await;
        assert_eq!(
            t.status,
            model::status::TenantStatus::Active,
            "{:?}",
            t.last_error
        );
        let v = t.template_version.unwrap();
        assert!(v == 1 || v == 2);
    }
    let errors: Vec<String> = testkit::column(
        &app.client,
        "SELECT detail->>'error' FROM tenant_events WHERE kind = 'attempt_failed'",
        &[],
    )
    .await;
    assert!(errors.is_empty(), "clones failed: {errors:?}");

    // New tenants now start at v2 with the new table.
    let ids = app.create_org("after").await;
    app.reconcile().await;
    let t = app.registry_tenant(ids.org_id.as_str()).await;
    assert_eq!(t.template_version, Some(2));
    let creds = app.credentials(ids.org_id.as_str()).await;
    crate::helpers::connect_as(&creds, creds.dbname.as_str())
        .await
        .unwrap()
        .batch_execute("INSERT INTO labels (name) VALUES ('urgent')")
        .await
        .expect("the v2 table exists and is usable");
}
