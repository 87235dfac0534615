//! Crash: the server is a child process, 10 replies stream to SSE clients,
//! the server is killed with SIGKILL and restarted. Everything any client
//! saw is still stored, every reply is `interrupted` with its body written
//! from the append-only log (and the log emptied), and Continue finishes one
//! of them to the full text.

use std::{
    collections::HashMap,
    process::{Child, Command},
    time::Duration,
};

use crate::support::{client_list, FakeProvider, Scripted, SseClient};
use sqlx::{sqlite::SqliteConnectOptions, SqlitePool};
use streamchat::model::{ChatEvent, Message, Status};

struct Server {
    child: Child,
    url: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start_server(dir: &std::path::Path, fake: &FakeProvider) -> Server {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_streamchat"))
        .current_dir(dir)
        .env("LEPTOS_OUTPUT_NAME", "streamchat")
        // The tests of typed names; tests/it/accounts.rs tries accounts.
        .env("STREAMCHAT_ACCESS_MODE", "open")
        .env("LEPTOS_SITE_ROOT", dir.join("site"))
        .env("LEPTOS_SITE_ADDR", format!("127.0.0.1:{port}"))
        .env("STREAMCHAT_DATABASE", dir.join("crash.db"))
        .env("OPENAI_BASE_URL", &fake.base_url)
        .env("OPENAI_API_KEY", "sk-test-key")
        .env("RUST_LOG", "warn")
        .envs(crate::support::ROOMY_LIMITS)
        .spawn()
        .expect("server starts");
    let url = format!("http://127.0.0.1:{port}");
    let _up = crate::support::poll_until(
        Duration::from_secs(20),
        Duration::from_millis(50),
        "server did not come up",
        || reqwest::get(format!("{url}/api/threads/lobby/events")),
        |answer| answer.is_ok(),
    )
    .await;
    Server { child, url }
}

use crate::support::post_to as post;

/// Message `id` once it has left `streaming` (read from the database,
/// waiting up to `within`).
async fn ended(db: &SqlitePool, id: i64, within: Duration) -> Message {
    crate::support::poll_until(
        within,
        Duration::from_millis(50),
        &format!("reply {id} did not end"),
        || async {
            sqlx::query_as::<_, Message>("SELECT * FROM messages WHERE id = ?")
                .bind(id)
                .fetch_one(db)
                .await
                .unwrap()
        },
        |m: &Message| m.status != Status::Streaming,
    )
    .await
}

/// The `body` column itself (without the log).
async fn raw_body(db: &SqlitePool, id: i64) -> String {
    sqlx::query_scalar("SELECT body FROM messages WHERE id = ?")
        .bind(id)
        .fetch_one(db)
        .await
        .unwrap()
}

async fn log_rows(db: &SqlitePool, id: i64) -> i64 {
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM reply_log WHERE key >= (?1 << 32) AND key < ((?1 + 1) << 32)",
    )
    .bind(id)
    .fetch_one(db)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_loses_nothing_any_client_saw() {
    let full = Scripted::words(3000, Duration::from_millis(4));
    let fake = FakeProvider::continuing(full).await;
    let dir = tempfile::tempdir().unwrap();
    let mut server = start_server(dir.path(), &fake).await;

    let mut clients = [
        SseClient::connect(&format!("{}/api/threads/lobby/events", server.url), None).await,
        SseClient::connect(&format!("{}/api/threads/lobby/events", server.url), None).await,
    ];
    let mut replies = Vec::new();
    for i in 0..10 {
        replies.push(
            post(&server.url, &format!("user{i}"), &format!("@gpt story {i}"))
                .await
                .id,
        );
    }

    // Read until every reply has shown some text, then kill the server.
    let owners_lists: Vec<_> = clients.iter().map(|_| client_list()).collect();
    let mut seen: HashMap<i64, usize> = HashMap::new();
    while replies
        .iter()
        .any(|id| seen.get(id).copied().unwrap_or(0) < 3)
    {
        let (rev, event) = tokio::time::timeout(Duration::from_secs(10), clients[0].next())
            .await
            .expect("events")
            .expect("open");
        if let ChatEvent::Delta { id, .. } = &event {
            *seen.entry(*id).or_default() += 1;
        }
        assert_eq!(owners_lists[0].1.apply(event, rev), None);
    }
    // While they stream, their text is log rows: no body was rewritten.
    let db =
        SqlitePool::connect_with(SqliteConnectOptions::new().filename(dir.path().join("crash.db")))
            .await
            .unwrap();
    for id in &replies {
        assert_eq!(raw_body(&db, *id).await, "", "reply {id}: body untouched");
        assert!(log_rows(&db, *id).await > 0, "reply {id}: text in the log");
    }
    server.child.kill().expect("SIGKILL");
    server.child.wait().unwrap();

    // Drain what each client had received before the connection died.
    for (client, (_, list)) in clients.iter_mut().zip(&owners_lists) {
        while let Ok(Some((rev, event))) =
            tokio::time::timeout(Duration::from_secs(5), client.next()).await
        {
            assert_eq!(list.apply(event, rev), None);
        }
    }

    let server = start_server(dir.path(), &fake).await;
    for id in &replies {
        let stored: Message = sqlx::query_as("SELECT * FROM messages WHERE id = ?")
            .bind(id)
            .fetch_one(&db)
            .await
            .unwrap();
        assert_eq!(stored.status, Status::Interrupted, "reply {id}");
        for (_, list) in &owners_lists {
            let saw = list.body(*id).unwrap_or_default();
            assert!(
                stored.body.starts_with(&saw),
                "reply {id}: a client saw text that is not stored"
            );
        }
        assert!(!stored.body.is_empty());
        // The body was written from the log at start-up, and the log emptied.
        assert_eq!(log_rows(&db, *id).await, 0, "reply {id}: log rows left");
    }

    // Continue finishes one of them to the full text.
    let id = replies[3];
    let response = reqwest::Client::new()
        .post(format!("{}/api/continue_reply", server.url))
        .header("accept", "application/json")
        .form(&[
            ("thread", "lobby"),
            ("id", id.to_string().as_str()),
            ("by", "user3"),
        ])
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    let done = ended(&db, id, Duration::from_secs(60)).await;
    assert_eq!(done.status, Status::Done);
    assert_eq!(done.body, Scripted::words(3000, Duration::ZERO).text());
    assert_eq!(log_rows(&db, id).await, 0);
    let mut child = server.child;
    child.kill().unwrap();
    child.wait().unwrap();
}

/// `kill -9` while a reasoning model is still thinking: all the thinking
/// any viewer saw is stored after the restart, as the reply's thinking (not
/// its answer), and the log is emptied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_thinking_keeps_the_thinking_seen() {
    let fake = FakeProvider::with(Scripted::reasoning(3000, 50, Duration::from_millis(4))).await;
    let dir = tempfile::tempdir().unwrap();
    let mut server = start_server(dir.path(), &fake).await;
    let mut client =
        SseClient::connect(&format!("{}/api/threads/lobby/events", server.url), None).await;
    let (_owner, list) = client_list();
    let id = post(&server.url, "ann", "@gpt think hard").await.id;
    let mut thoughts = 0;
    while thoughts < 50 {
        let (rev, event) = tokio::time::timeout(Duration::from_secs(10), client.next())
            .await
            .expect("events")
            .expect("open");
        if let ChatEvent::Delta {
            part: streamchat::model::Part::Thinking,
            ..
        } = &event
        {
            thoughts += 1;
        }
        assert_eq!(list.apply(event, rev), None);
    }
    server.child.kill().expect("SIGKILL");
    server.child.wait().unwrap();
    while let Ok(Some((rev, event))) =
        tokio::time::timeout(Duration::from_secs(5), client.next()).await
    {
        assert_eq!(list.apply(event, rev), None);
    }
    let saw = list.thinking(id).unwrap();
    assert!(!saw.is_empty());
    assert_eq!(list.body(id).as_deref(), Some(""), "it was still thinking");

    let mut server = start_server(dir.path(), &fake).await;
    let db =
        SqlitePool::connect_with(SqliteConnectOptions::new().filename(dir.path().join("crash.db")))
            .await
            .unwrap();
    let stored: Message = sqlx::query_as("SELECT * FROM messages WHERE id = ?")
        .bind(id)
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(stored.status, Status::Interrupted);
    assert!(
        stored.thinking.starts_with(&saw),
        "thinking a viewer saw is stored ({} of {} bytes)",
        stored.thinking.len(),
        saw.len()
    );
    assert_eq!(stored.body, "", "no thinking leaked into the answer");
    assert_eq!(log_rows(&db, id).await, 0);
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

/// Another process reading the database while the server runs (a backup, an
/// operator's `sqlite3`) must not make it think it is the last connection:
/// after `/healthz` (which checks the file is writable) the server still
/// holds its locks, the WAL stays, and the reply streaming meanwhile ends
/// whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_process_reading_after_a_health_check_leaves_the_wal_alone() {
    // (With the bug, the server's database calls stall: bounded here.)
    tokio::time::timeout(Duration::from_secs(60), wal_case())
        .await
        .expect("the reply ended within a minute");
}

async fn wal_case() {
    let script = Scripted::words(400, Duration::from_millis(3));
    let fake = FakeProvider::with(script.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut server = start_server(dir.path(), &fake).await;
    let id = post(&server.url, "Ann", "@gpt go").await.id;
    let health = reqwest::get(format!("{}/healthz", server.url))
        .await
        .unwrap();
    assert!(health.status().is_success());

    let db_path = dir.path().join("crash.db");
    let other = SqlitePool::connect_with(SqliteConnectOptions::new().filename(&db_path))
        .await
        .unwrap();
    let _: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM messages")
        .fetch_one(&other)
        .await
        .unwrap();
    other.close().await;
    assert!(
        dir.path().join("crash.db-wal").exists(),
        "the WAL was removed under the running server"
    );

    let db = SqlitePool::connect_with(SqliteConnectOptions::new().filename(&db_path))
        .await
        .unwrap();
    let done = ended(&db, id, Duration::from_secs(30)).await;
    assert_eq!(done.status, Status::Done, "{:?}", done.error);
    assert_eq!(done.body, script.text());
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}
