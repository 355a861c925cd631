//! The binary run as a child process: exit codes and messages.

use std::process::Output;

use testkit::TestDatabase;

use crate::helpers::{random_secret, spawn_app};

/// The binary with a clean environment: only the variables given. Async, so
/// that the test's runtime keeps serving the app the child may talk to.
async fn tenant_plane(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_tenant-plane"));
    for (k, _) in std::env::vars() {
        if k.starts_with("TENANT_PLANE") || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    cmd.args(args).envs(env.iter().copied());
    cmd.output().await.expect("run tenant-plane")
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn migrate_applies_the_schema_once_then_reports_up_to_date() {
    let db = TestDatabase::empty().await;
    let url = db.url();
    let env = [("TENANT_PLANE__DATABASE__URL", url.as_str())];
    let first = tenant_plane(&["migrate"], &env).await;
    let (stdout, stderr) = text(&first);
    assert!(first.status.success(), "{stderr}");
    let all: Vec<u32> = (1..=registry::schema::latest_version()).collect();
    assert!(
        stdout.contains(&format!("applied control-plane migrations: {all:?}")),
        "{stdout}"
    );
    let second = tenant_plane(&["migrate"], &env).await;
    assert!(second.status.success());
    assert!(text(&second).0.contains("up to date"));
    let tables: i64 = db
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM information_schema.tables WHERE table_name IN
             ('db_hosts','tenant_registry','tenant_events','webhook_events','users',
              'organization_memberships','template_versions')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(tables, 7);
}

#[tokio::test]
async fn serve_refuses_an_unmigrated_schema() {
    let db = TestDatabase::empty().await;
    let url = db.url();
    let secret = random_secret();
    let out = tenant_plane(
        &["serve"],
        &[
            ("TENANT_PLANE__DATABASE__URL", &url),
            ("TENANT_PLANE__CLERK__WEBHOOK_SECRET", &secret),
            ("TENANT_PLANE__CRYPTO__KEY", &crate::helpers::random_key()),
            ("TENANT_PLANE__HTTP__BIND", "127.0.0.1:0"),
        ],
    )
    .await;
    assert!(!out.status.success());
    let (_, stderr) = text(&out);
    assert!(stderr.contains("run `tenant-plane migrate`"), "{stderr}");
}

#[tokio::test]
async fn serve_refuses_a_schema_from_a_newer_binary() {
    let db = TestDatabase::migrated().await;
    db.client()
        .await
        .batch_execute(
            "INSERT INTO refinery_schema_history (version, name, applied_on, checksum)
             VALUES (999, 'from_the_future', now()::text, '1')",
        )
        .await
        .unwrap();
    let url = db.url();
    let secret = random_secret();
    let key = crate::helpers::random_key();
    let env = [
        ("TENANT_PLANE__DATABASE__URL", url.as_str()),
        ("TENANT_PLANE__CLERK__WEBHOOK_SECRET", secret.as_str()),
        ("TENANT_PLANE__CRYPTO__KEY", key.as_str()),
        ("TENANT_PLANE__HTTP__BIND", "127.0.0.1:0"),
    ];
    let out = tenant_plane(&["serve"], &env).await;
    assert!(!out.status.success());
    assert!(
        text(&out).1.contains("newer tenant-plane"),
        "{}",
        text(&out).1
    );
    // migrate refuses too, rather than touching a schema it does not know.
    let out = tenant_plane(&["migrate"], &env[..1]).await;
    assert!(!out.status.success());
}

#[tokio::test]
async fn bad_configuration_names_the_key_and_never_prints_secrets() {
    let password_url = "postgres://postgres:s3cr3t-pw@127.0.0.1:1/x";
    for (env, key) in [
        (vec![("TENANT_PLANE__HTTP__BIND", "nonsense")], "http.bind"),
        (
            vec![("TENANT_PLANE__CLERK__WEBHOOK_SECRET", "whsec_%%%")],
            "clerk.webhook_secret",
        ),
        (
            vec![("TENANT_PLANE__DATABASE__URL", password_url)],
            "clerk.webhook_secret",
        ),
        (
            vec![
                (
                    "TENANT_PLANE__CLERK__WEBHOOK_SECRET",
                    "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                ),
                (
                    "TENANT_PLANE__CRYPTO__KEY",
                    "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
                ),
            ],
            "database.url",
        ),
        (
            vec![(
                "TENANT_PLANE__CLERK__WEBHOOK_SECRET",
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            )],
            "crypto.key",
        ),
    ] {
        let mut env = env.clone();
        if key != "http.bind" {
            env.push(("TENANT_PLANE__HTTP__BIND", "127.0.0.1:0"));
        }
        let out = tenant_plane(&["serve"], &env).await;
        assert!(!out.status.success());
        let (stdout, stderr) = text(&out);
        assert!(stderr.contains(key), "expected {key} in {stderr}");
        assert!(!stderr.contains("s3cr3t") && !stdout.contains("s3cr3t"));
        assert!(!stderr.contains("%%%") && !stderr.contains("MfKQ9r8"));
    }
    // A database that cannot be reached: a clear message, not the URL.
    let secret = random_secret();
    let out = tenant_plane(
        &["serve"],
        &[
            ("TENANT_PLANE__DATABASE__URL", password_url),
            ("TENANT_PLANE__CLERK__WEBHOOK_SECRET", &secret),
            ("TENANT_PLANE__CRYPTO__KEY", &crate::helpers::random_key()),
            ("TENANT_PLANE__HTTP__BIND", "127.0.0.1:0"),
        ],
    )
    .await;
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("cannot reach the control-plane database"),
        "{stderr}"
    );
    assert!(!stderr.contains("s3cr3t"), "{stderr}");
}

#[tokio::test]
async fn dev_send_webhook_signs_and_delivers_a_sample_event() {
    let app = spawn_app().await;
    // Signed with another secret: refused, and the command says so.
    let url = app.webhook_url();
    let wrong = random_secret();
    let out = tenant_plane(
        &["dev", "send-webhook", "organization.created", "--url", &url],
        &[("TENANT_PLANE__CLERK__WEBHOOK_SECRET", &wrong)],
    )
    .await;
    assert!(!out.status.success());
    assert!(text(&out).0.contains("401"), "{}", text(&out).0);

    let secret = app.secret.clone();
    let out = tenant_plane(
        &[
            "dev",
            "send-webhook",
            "organization.created",
            "--org-id",
            "org_devsend123",
            "--name",
            "Dev Org",
            "--url",
            &url,
        ],
        &[("TENANT_PLANE__CLERK__WEBHOOK_SECRET", &secret)],
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("200 OK"), "{stdout}");
    assert!(stdout.contains("\"applied\""), "{stdout}");
    let t = app.tenant("org_devsend123").await.unwrap();
    assert_eq!(t.name, "Dev Org");
    assert_eq!(t.slug.as_deref(), Some("dev-org"));

    let out = tenant_plane(
        &["dev", "send-webhook", "nope.created"],
        &[("TENANT_PLANE__CLERK__WEBHOOK_SECRET", &secret)],
    )
    .await;
    assert!(!out.status.success());
    assert!(text(&out).1.contains("known types"), "{}", text(&out).1);
    let out = tenant_plane(
        &["dev", "send-webhook", "user.created", "--org-id", "org_'x"],
        &[],
    )
    .await;
    assert!(!out.status.success());
    assert!(
        text(&out).1.contains("Clerk organization id"),
        "{}",
        text(&out).1
    );
}

#[tokio::test]
async fn help_explains_every_command() {
    let out = tenant_plane(&["--help"], &[]).await;
    let (stdout, _) = text(&out);
    assert!(out.status.success());
    for word in ["serve", "migrate", "dev", "TENANT_PLANE__DATABASE__URL"] {
        assert!(stdout.contains(word), "{word} missing from --help");
    }
    let out = tenant_plane(&["dev", "send-webhook", "--help"], &[]).await;
    assert!(text(&out).0.contains("--org-id"));
}
