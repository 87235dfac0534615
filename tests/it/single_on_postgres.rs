//! One instance on PostgreSQL (`cluster.enabled` off): the coordination is
//! chosen by configuration, not by the driver. The lone instance publishes
//! its own commits (no listener), a second instance on the same database
//! refuses to start in either mode, and after a `kill -9` the next start-up
//! ends what was streaming `interrupted` with every stored byte.

use std::{process::Command, time::Duration};

use streamchat::model::Status;

use crate::support::{
    client_list,
    pg::{NodeProcess, PgDb},
    FakeProvider, Scripted, SseClient,
};

/// Starts the server binary on `db` with `env` and expects it to refuse:
/// its exit status and what it printed.
fn refused_start(db: &PgDb, fake: &FakeProvider, env: &[(&str, &str)]) -> String {
    let dir = std::env::temp_dir();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let output = Command::new(env!("CARGO_BIN_EXE_streamchat"))
        .current_dir(&dir)
        .env("LEPTOS_OUTPUT_NAME", "streamchat")
        // The tests of typed names; tests/it/accounts.rs tries accounts.
        .env("STREAMCHAT_ACCESS_MODE", "open")
        .env("LEPTOS_SITE_ROOT", dir.join("streamchat-test-site"))
        .env("LEPTOS_SITE_ADDR", format!("127.0.0.1:{port}"))
        .env("DATABASE_URL", &db.url)
        .env("OPENAI_BASE_URL", &fake.base_url)
        .env("OPENAI_API_KEY", "sk-test-key")
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .output()
        .expect("the server binary runs");
    assert!(!output.status.success(), "a second instance must not start");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn a_lone_instance_on_postgres_streams_refuses_company_and_recovers() {
    let db = PgDb::create().await;
    let script = Scripted::words(400, Duration::from_millis(10));
    let fake = FakeProvider::with(script.clone()).await;
    let lone_env = [("DATABASE_URL", db.url.as_str())];
    let mut lone = NodeProcess::spawn(&fake, None, &lone_env).await;
    assert!(
        reqwest::get(format!("{}/healthz", lone.url))
            .await
            .unwrap()
            .headers()
            .get("x-streamchat-instance")
            .is_none(),
        "a lone instance names no instance"
    );

    // Its own writer publishes: a viewer sees the reply grow exactly.
    let (_owner, list) = client_list();
    let mut viewer = SseClient::connect(&lone.events_url("lobby"), None).await;
    let http = reqwest::Client::new();
    let first = crate::support::post_at(&http, &lone.url, "lobby", "Ann", "@gpt go")
        .await
        .replies[0]
        .clone();
    viewer.follow(&list, first.id).await;
    let stored = db.wait_finished(first.id, Duration::from_secs(20)).await;
    assert_eq!(stored.status, Status::Done);
    assert_eq!(list.body(first.id).unwrap(), script.text());
    let log_rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM reply_log")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(log_rows, 0, "an ended reply's log is folded at once");

    // Nobody else on this database, in either mode.
    let alone = refused_start(&db, &fake, &[]);
    assert!(
        alone.contains("another instance runs on this PostgreSQL database"),
        "{alone}"
    );
    let cluster = refused_start(&db, &fake, &[("STREAMCHAT_CLUSTER", "true")]);
    assert!(cluster.contains("without cluster.enabled"), "{cluster}");

    // kill -9 mid-reply; the next start-up ends it interrupted, text kept.
    let second = crate::support::post_at(&http, &lone.url, "lobby", "Ann", "@gpt again")
        .await
        .replies[0]
        .clone();
    let seen = db.wait_for_text(second.id, 30).await.body;
    lone.kill9();
    assert_eq!(
        db.streaming().await,
        1,
        "the killed instance left it streaming"
    );
    let _restarted = NodeProcess::spawn(&fake, None, &lone_env).await;
    let recovered = db.message(second.id).await;
    assert_eq!(recovered.status, Status::Interrupted);
    assert!(recovered.body.starts_with(&seen) && script.text().starts_with(&recovered.body));
    assert_eq!(db.streaming().await, 0);
    db.drop_db().await;
}
