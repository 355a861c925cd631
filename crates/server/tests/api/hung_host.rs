//! A part hangs: a db host that accepts connections and never answers (a
//! stuck server, a dead network path), or a template lock held by a long
//! migration. Attempts fail within their deadline with the host named,
//! other hosts' tenants keep provisioning, and intake, look-ups and
//! readiness keep answering meanwhile.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use model::TenantStatus;
use registry::hosts::{self, HostState, NewHost};
use registry::tls::{HostTls, SslMode};
use testkit::{ProxyMode, ToggleProxy};
use webhooks::samples::{SampleEvent, SampleIds};

use crate::helpers::{new_svix_id, spawn_app_configured, spawn_app_with, wait_until, TestApp};
use crate::resolve::SERVICE_TOKEN;

/// What "answers at once" means while a part hangs (a liveness bound).
const ANSWER_WITHIN: Duration = Duration::from_secs(1);
const DEADLINE: Duration = Duration::from_secs(90);

/// A proxy in `mode` in front of the app's own server, registered as db
/// host "stuck" (plaintext, so the proxy can tell the handshake's end).
async fn stuck_host(app: &TestApp, mode: ProxyMode) -> ToggleProxy {
    let config = app.db_config().config;
    let tokio_postgres::config::Host::Tcp(host) = &config.get_hosts()[0] else {
        panic!("tests need TCP")
    };
    let upstream: SocketAddr = format!("{host}:{}", config.get_ports()[0]).parse().unwrap();
    let proxy = ToggleProxy::start(upstream).await;
    proxy.set_mode(mode);
    let client = app.pool().get().await.unwrap();
    hosts::upsert(
        &client,
        &NewHost {
            name: "stuck".into(),
            host: "127.0.0.1".into(),
            port: proxy.addr().port(),
            admin_user: config.get_user().unwrap().into(),
            tls: HostTls {
                sslmode: Some(SslMode::Disable),
                sslrootcert: None,
            },
            capacity: 10,
        },
    )
    .await
    .unwrap();
    proxy
}

/// The stuck host's admin password setting: the app's own server's.
fn stuck_password() -> (&'static str, String) {
    let admin = testkit::parse_admin_url(&testkit::admin_url()).config;
    let password = String::from_utf8(admin.get_password().unwrap_or_default().to_vec()).unwrap();
    ("TENANT_PLANE__HOSTS__STUCK__PASSWORD", password)
}

async fn set_state(app: &TestApp, host: &str, state: HostState) {
    let client = app.pool().get().await.unwrap();
    assert!(hosts::set_state(&client, host, state).await.unwrap());
}

#[tokio::test]
async fn a_host_that_never_answers_fails_the_attempt_within_the_deadline() {
    let (key, password) = stuck_password();
    let app = spawn_app_with(&[
        (key, &password),
        ("TENANT_PLANE__DATABASE__CONNECT_TIMEOUT", "1s"),
    ])
    .await;
    let _proxy = stuck_host(&app, ProxyMode::Silent).await;
    set_state(&app, "default", HostState::Draining).await;
    let ids = app.create_org("on a stuck host").await;
    let org = ids.org_id.as_str();

    // Every attempt ends at the 1 s connect deadline, so the reconciler
    // gets to give up.
    wait_until("the tenant to be given up on", DEADLINE, || async {
        app.reconcile().await;
        app.registry_tenant(org).await.status == TenantStatus::Failed
    })
    .await;
    let t = app.registry_tenant(org).await;
    let error = t.last_error.expect("the attempt was recorded");
    assert!(
        error.contains("\"stuck\"") && error.contains("did not answer within 1s"),
        "{error}"
    );
}

/// The slowest answer of each kind of request, and any that failed.
#[derive(Default)]
struct Probes {
    slowest: BTreeMap<&'static str, Duration>,
    failures: Vec<String>,
}

impl Probes {
    fn record(&mut self, kind: &'static str, took: Duration, status: Result<u16, String>) {
        let slowest = self.slowest.entry(kind).or_default();
        *slowest = (*slowest).max(took);
        match status {
            Ok(200) if took <= ANSWER_WITHIN => {}
            Ok(s) => self.failures.push(format!("{kind}: {s} after {took:?}")),
            Err(e) => self.failures.push(format!("{kind}: {e} after {took:?}")),
        }
    }
}

/// Runs one request of each kind over and over until `stop`: a `user.*`
/// webhook, `organization.updated` for each of `orgs` in turn, `/readyz`
/// and a look-up of each of `orgs`, each with its own client deadline.
async fn probe(app: Arc<TestApp>, orgs: Vec<SampleIds>, stop: Arc<AtomicBool>) -> Probes {
    let mut probes = Probes::default();
    let mut round = 0i64;
    while !stop.load(Ordering::SeqCst) {
        round += 1;
        let ids = &orgs[round as usize % orgs.len()];
        let user = SampleEvent::new("user.created", &SampleIds::random()).unwrap();
        let rename = SampleEvent::new("organization.updated", ids)
            .unwrap()
            .name(format!("Renamed {round}"))
            .updated_at_ms(crate::helpers::now() * 1000 + 1000 + round);
        for (kind, event) in [("user.created", user), ("organization.updated", rename)] {
            let started = Instant::now();
            let answer =
                tokio::time::timeout(DEADLINE, app.deliver(&new_svix_id(), event.to_body())).await;
            let status = answer
                .map(|r| r.status().as_u16())
                .map_err(|_| "no answer".to_owned());
            probes.record(kind, started.elapsed(), status);
        }
        for (kind, path) in [
            ("/readyz", "/readyz".to_owned()),
            (
                "look-up",
                format!("/internal/v1/tenants/by-org/{}", ids.org_id.as_str()),
            ),
        ] {
            let started = Instant::now();
            let answer = app
                .http
                .get(format!("{}{path}", app.address))
                .bearer_auth(SERVICE_TOKEN)
                .timeout(DEADLINE)
                .send()
                .await;
            let status = answer
                .map(|r| r.status().as_u16())
                .map_err(|e| e.to_string());
            probes.record(kind, started.elapsed(), status);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    probes
}

/// When the tenant's first claim and first failed attempt were recorded.
async fn first_claim_and_failure(app: &TestApp, org: &str) -> Option<Duration> {
    let row = app
        .client
        .query_one(
            "SELECT extract(epoch FROM
                      min(e.at) FILTER (WHERE e.kind = 'attempt_failed' OR e.kind = 'failed')
                    - min(e.at) FILTER (WHERE e.kind = 'provisioning'))::float8
               FROM tenant_events e JOIN tenant_registry t ON t.id = e.tenant_id
              WHERE t.clerk_org_id = $1",
            &[&org],
        )
        .await
        .unwrap();
    row.get::<_, Option<f64>>(0).map(Duration::from_secs_f64)
}

#[tokio::test]
async fn with_workers_stuck_on_a_hung_host_everything_else_keeps_answering_and_provisioning() {
    let (key, password) = stuck_password();
    let app = spawn_app_configured(|env| {
        env.with_worker(true)
            .with_worker_concurrency(2)
            .with_internal_tokens(&[SERVICE_TOKEN])
            .set_all(&[
                (key, &password),
                ("TENANT_PLANE__DATABASE__CONNECT_TIMEOUT", "1s"),
                ("TENANT_PLANE__WORKER__ATTEMPT_TIMEOUT", "3s"),
                ("TENANT_PLANE__WORKER__LEASE", "6s"),
            ])
    })
    .await;
    let app = Arc::new(app);
    let _proxy = stuck_host(&app, ProxyMode::SilentAfterHandshake).await;

    // Three tenants placed on the stuck host...
    set_state(&app, "default", HostState::Draining).await;
    let mut stuck = Vec::new();
    for n in 0..3 {
        stuck.push(app.create_org(&format!("stuck {n}")).await);
    }
    for ids in &stuck {
        wait_until("placement on the stuck host", DEADLINE, || async {
            app.registry_tenant(ids.org_id.as_str())
                .await
                .placement
                .is_some_and(|p| p.host == "stuck")
        })
        .await;
    }
    // ... and, once it is drained, three on the healthy one.
    set_state(&app, "stuck", HostState::Draining).await;
    set_state(&app, "default", HostState::Accepting).await;

    let stop = Arc::new(AtomicBool::new(false));
    let probes = tokio::spawn(probe(app.clone(), stuck.clone(), stop.clone()));
    let mut healthy = Vec::new();
    for n in 0..3 {
        healthy.push(app.create_org(&format!("healthy {n}")).await);
    }
    for ids in &healthy {
        wait_until("a healthy host's tenant to be active", DEADLINE, || async {
            app.registry_tenant(ids.org_id.as_str()).await.status == TenantStatus::Active
        })
        .await;
    }
    for ids in &stuck {
        wait_until("an attempt on the stuck host to fail", DEADLINE, || async {
            app.registry_tenant(ids.org_id.as_str())
                .await
                .last_error
                .is_some()
        })
        .await;
    }
    stop.store(true, Ordering::SeqCst);
    let probes = probes.await.unwrap();

    for (kind, took) in &probes.slowest {
        eprintln!("slowest answer while the host hung: {kind}: {took:?}");
    }
    assert!(
        probes.failures.is_empty(),
        "answers that were not 200 within {ANSWER_WITHIN:?}: {:?}",
        probes.failures
    );
    assert_eq!(probes.slowest.len(), 4, "every kind of request was probed");
    for ids in &stuck {
        let t = app.registry_tenant(ids.org_id.as_str()).await;
        assert_eq!(t.status, TenantStatus::Provisioning, "still being retried");
        assert_eq!(t.placement.unwrap().host, "stuck");
        let error = t.last_error.unwrap();
        assert!(
            error.contains("\"stuck\"") && error.contains("did not answer within 3s"),
            "{error}"
        );
        // The renames were applied meanwhile: no lock held them up.
        assert!(t.name.starts_with("Renamed"), "{}", t.name);
        if let Some(took) = first_claim_and_failure(&app, ids.org_id.as_str()).await {
            assert!(
                took < Duration::from_secs(3) + Duration::from_secs(2),
                "the first attempt failed {took:?} after its claim"
            );
        }
    }
    let client = app.pool().get().await.unwrap();
    let host = hosts::get(&client, "stuck").await.unwrap().unwrap();
    assert!(host.failures >= 1, "the stuck host is backing off");
}

#[tokio::test]
async fn a_held_template_lock_keeps_a_clone_waiting_and_does_not_slow_intake() {
    let app =
        spawn_app_configured(|env| env.with_worker(true).with_internal_tokens(&[SERVICE_TOKEN]))
            .await;
    let app = Arc::new(app);
    let client = app.pool().get().await.unwrap();
    let default = hosts::get(&client, "default").await.unwrap().unwrap();
    drop(client);

    // A template migration's lock, held as a long migration would.
    let mut holder = app.pool().get().await.unwrap();
    let migration = holder.transaction().await.unwrap();
    registry::template_versions::lock_for_migration(&migration, default.id)
        .await
        .unwrap();

    let ids = app.create_org("waits for the template").await;
    wait_until(
        "the clone to wait for the template lock",
        DEADLINE,
        || async {
            let waiting: i64 = app
                .client
                .query_one(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            waiting > 0
        },
    )
    .await;

    let stop = Arc::new(AtomicBool::new(false));
    let probes = tokio::spawn(probe(app.clone(), vec![ids.clone()], stop.clone()));
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::SeqCst);
    let probes = probes.await.unwrap();
    for (kind, took) in &probes.slowest {
        eprintln!("slowest answer while the template lock was held: {kind}: {took:?}");
    }
    assert!(probes.failures.is_empty(), "{:?}", probes.failures);
    assert_eq!(
        app.registry_tenant(ids.org_id.as_str()).await.status,
        TenantStatus::Provisioning,
        "the clone waited for the lock"
    );

    migration.rollback().await.unwrap();
    wait_until("the clone to finish", DEADLINE, || async {
        app.registry_tenant(ids.org_id.as_str()).await.status == TenantStatus::Active
    })
    .await;
    let t = app.registry_tenant(ids.org_id.as_str()).await;
    assert_eq!(
        t.attempts, 0,
        "the wait cost no attempt: {:?}",
        t.last_error
    );
    assert!(!app
        .event_kinds(ids.org_id.as_str())
        .await
        .iter()
        .any(|k| k == "attempt_failed"));
}

#[tokio::test]
async fn an_attempt_whose_lease_was_taken_over_records_nothing() {
    let (key, password) = stuck_password();
    let app = spawn_app_with(&[
        (key, &password),
        ("TENANT_PLANE__WORKER__ATTEMPT_TIMEOUT", "2s"),
        ("TENANT_PLANE__WORKER__LEASE", "3s"),
    ])
    .await;
    let _proxy = stuck_host(&app, ProxyMode::SilentAfterHandshake).await;
    set_state(&app, "default", HostState::Draining).await;
    let org = app.create_org("taken over").await.org_id;
    let lease = || async {
        app.client
            .query_one(
                "SELECT lease_token FROM tenant_registry WHERE clerk_org_id = $1",
                &[&org.as_str()],
            )
            .await
            .unwrap()
            .get::<_, Option<uuid::Uuid>>(0)
    };

    // While the pass hangs on the host, another worker takes the tenant
    // over (as it would once the lease lapsed): it writes its own lease.
    let takeover = async {
        wait_until("the claim", DEADLINE, || async { lease().await.is_some() }).await;
        let theirs = uuid::Uuid::now_v7();
        app.client
            .execute(
                "UPDATE tenant_registry SET lease_token = $2 WHERE clerk_org_id = $1",
                &[&org.as_str(), &theirs],
            )
            .await
            .unwrap();
        theirs
    };
    let (pass, theirs) = tokio::join!(app.reconciler.run_once(), takeover);

    assert_eq!(pass.unwrap(), provisioner::reconciler::Pass::LeaseLost);
    let t = app.registry_tenant(org.as_str()).await;
    assert_eq!(t.last_error, None, "the lost attempt recorded its failure");
    assert_eq!(t.attempts, 0);
    assert_eq!(lease().await, Some(theirs), "the new holder's lease stands");
    let client = app.pool().get().await.unwrap();
    let host = hosts::get(&client, "stuck").await.unwrap().unwrap();
    assert_eq!(host.failures, 0, "nor did it back the host off");
}
