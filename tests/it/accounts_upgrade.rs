//! A database from before accounts (typed names, an unlisted thread)
//! started with accounts: it migrates, its messages keep their typed names
//! as plain authors, its unlisted thread stays reachable through its URL,
//! and the first admin is made as on a new database.

use std::borrow::Cow;

use reqwest::StatusCode;
use sqlx::{sqlite::SqliteConnectOptions, SqlitePool};

use crate::support::{accounts::*, spawn_app_with, FakeProvider, Scripted};

/// The first migration of built-in accounts.
const ACCOUNTS_MIGRATION: i64 = 20261207120000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_of_typed_names_migrates_and_keeps_its_authors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("before.db");
    let old = SqlitePool::connect_with(
        SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true),
    )
    .await
    .unwrap();
    let mut before = sqlx::migrate!("./migrations");
    before.migrations = Cow::Owned(
        before
            .migrations
            .iter()
            .filter(|m| m.version < ACCOUNTS_MIGRATION)
            .cloned()
            .collect(),
    );
    before.run(&old).await.unwrap();
    sqlx::query(
        "INSERT INTO threads (id, title, listed, created_at, last_activity_at) \
         VALUES ('0123456789abcdef', 'Old plans', 0, 0, 0)",
    )
    .execute(&old)
    .await
    .unwrap();
    for (thread, author, body) in [
        ("lobby", "Bo", "typed in the lobby"),
        ("0123456789abcdef", "Ann", "typed in the unlisted thread"),
    ] {
        sqlx::query(
            "INSERT INTO messages (thread_id, author, role, body, status, created_at, updated_at, rev) \
             VALUES (?, ?, 'user', ?, 'done', 0, 0, 1)",
        )
        .bind(thread)
        .bind(author)
        .bind(body)
        .execute(&old)
        .await
        .unwrap();
    }
    // A reply Ann-the-typed-name asked for, before any account existed.
    sqlx::query(
        "INSERT INTO messages (thread_id, author, role, body, status, created_at, updated_at, rev, \
         requested_by, prompt_tokens, completion_tokens) \
         VALUES ('lobby', 'gpt', 'assistant', 'an old answer', 'done', 0, 0, 2, 'Ann', 5, 7)",
    )
    .execute(&old)
    .await
    .unwrap();
    old.close().await;

    let fake = FakeProvider::with(Scripted::new(&["hi"])).await;
    let app = spawn_app_with(fake, |c| {
        c.database = path.clone();
        c.access.mode = Some(streamchat::server::config::AccessMode::Accounts);
    })
    .await;
    let mut ann = Browser::new(&app.url);
    set_up(&app, &mut ann, "Ann").await;
    let lobby = ann.get("/t/lobby").await.text().await.unwrap();
    assert!(
        lobby.contains(">Bo<") && lobby.contains("typed in the lobby"),
        "{lobby}"
    );
    let old_thread = ann.get("/t/0123456789abcdef").await;
    assert_eq!(
        old_thread.status(),
        StatusCode::OK,
        "reachable through its URL"
    );
    let page = old_thread.text().await.unwrap();
    assert!(page.contains("typed in the unlisted thread"));
    // The old reply asked for by the typed name "Ann" is not the account
    // Ann's: usage counts from the day the account was made.
    assert!(lobby.contains("an old answer"));
    let usage = ann.get("/account").await.text().await.unwrap();
    assert!(usage.contains("No replies yet."), "{usage}");
}
