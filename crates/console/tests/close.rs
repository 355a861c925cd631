//! `ConsoleState::close` ends open event streams: the server's graceful
//! shutdown waits for open responses, and a stream never ends by itself.
//! No database is needed: the pool connects lazily and the stream only
//! reads when the registry announces a change.

use std::sync::Arc;
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::{test, App};
use futures::StreamExt;
use provisioner::limits::Plans;
use provisioner::template::Templates;
use provisioner::HostConnector;
use registry::pool::PoolOptions;
use secrecy::SecretString;
use tenant_plane_console::{configure, ConsoleConfig, ConsoleState, Provisioning};

const TOKEN: &str = "close-test-token-0123456789";

fn state() -> Arc<ConsoleState> {
    // Nothing listens on port 1: the NOTIFY listener retries quietly.
    let target = || registry::pool::parse_url("postgres://nobody@127.0.0.1:1/none").unwrap();
    let pool = registry::pool::build_pool(target(), &PoolOptions::default()).unwrap();
    ConsoleState::new(
        &ConsoleConfig {
            tokens: vec![SecretString::from(TOKEN)],
            session_lifetime: Duration::from_secs(3600),
            login_attempts: 5,
            login_window: Duration::from_secs(60),
        },
        pool,
        target(),
        Provisioning {
            plans: Plans::default(),
            connector: HostConnector::default(),
            prefix: model::TenantPrefix::parse("tp_test_close_").unwrap(),
            templates: Templates::embedded(),
            stuck_after: Duration::from_secs(900),
        },
    )
    .expect("a console with a token")
}

#[actix_web::test]
async fn closing_the_console_ends_its_event_streams() {
    let state = state();
    let app = test::init_service(App::new().configure(|cfg| configure(cfg, state.clone()))).await;
    let login = test::call_service(
        &app,
        test::TestRequest::post()
            .uri("/console/login")
            .set_form([("token", TOKEN)])
            .to_request(),
    )
    .await;
    assert_eq!(login.status(), 303);
    let cookie = login
        .response()
        .cookies()
        .next()
        .expect("a session cookie")
        .into_owned();

    let res = test::call_service(
        &app,
        test::TestRequest::get()
            .uri("/console/events")
            .cookie(cookie)
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), 200);
    let mut body = Box::pin(res.into_body());
    let mut body = futures::stream::poll_fn(move |cx| body.as_mut().poll_next(cx));
    let first = body.next().await.expect("the stream opens").unwrap();
    assert_eq!(&first[..], b"retry: 3000\n\n");

    state.close();
    // Whatever was in flight, the stream then ends (a keep-alive at most).
    while let Some(chunk) = body.next().await {
        assert_eq!(&chunk.unwrap()[..], b": keep-alive\n\n");
    }
}

#[actix_web::test]
async fn no_tokens_no_console() {
    let target = registry::pool::parse_url("postgres://nobody@127.0.0.1:1/none").unwrap();
    let pool = registry::pool::build_pool(target.clone(), &PoolOptions::default()).unwrap();
    let none = ConsoleState::new(
        &ConsoleConfig {
            tokens: vec![],
            session_lifetime: Duration::from_secs(3600),
            login_attempts: 5,
            login_window: Duration::from_secs(60),
        },
        pool,
        target,
        Provisioning {
            plans: Plans::default(),
            connector: HostConnector::default(),
            prefix: model::TenantPrefix::parse("tp_test_close_").unwrap(),
            templates: Templates::embedded(),
            stuck_after: Duration::from_secs(900),
        },
    );
    assert!(none.is_none());
}
