//! New databases use small pages (a token's commit writes one page to the
//! WAL); a database made before, with 4 KiB pages, keeps them and keeps
//! working: replies stream, end and read back whole.

use std::time::Duration;

use sqlx::{
    sqlite::{SqliteConnectOptions, SqliteJournalMode},
    SqlitePool,
};
use streamchat::model::Status;

use crate::support::{spawn_app, spawn_app_with, FakeProvider, Scripted};

async fn page_size(pool: &SqlitePool) -> i64 {
    sqlx::query_scalar("PRAGMA page_size")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_new_database_uses_512_byte_pages() {
    let app = spawn_app(FakeProvider::with(Scripted::new(&["hi"])).await).await;
    assert_eq!(page_size(&app.db).await, 512);
}

/// A database made before #10 (4 KiB pages, WAL, some history); `crashed`:
/// its process was killed (the WAL left full), else it was stopped cleanly
/// (the WAL checkpointed and removed).
async fn upgrade(crashed: bool) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("before.db");
    let options = SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(true)
        .page_size(4096)
        .journal_mode(SqliteJournalMode::Wal);
    let old = SqlitePool::connect_with(options.clone()).await.unwrap();
    sqlx::migrate!("./migrations").run(&old).await.unwrap();
    // Some history, in the WAL while the connection is open.
    for i in 0..50 {
        sqlx::query(
            "INSERT INTO messages (thread_id, author, role, body, status, created_at, updated_at, rev) \
             VALUES ('lobby', 'Bo', 'user', ?, 'done', 0, 0, ?)",
        )
        .bind(format!("message {i} {}", "x".repeat(300)))
        .bind(i + 1)
        .execute(&old)
        .await
        .unwrap();
    }
    let upgraded = if crashed {
        // The files as a crash leaves them: the database and its WAL.
        let copy = dir.path().join("crashed.db");
        std::fs::copy(&path, &copy).unwrap();
        std::fs::copy(
            dir.path().join("before.db-wal"),
            dir.path().join("crashed.db-wal"),
        )
        .unwrap();
        copy
    } else {
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&old)
            .await
            .unwrap();
        old.close().await;
        // As SQLite leaves it when the last connection closes: no WAL.
        for suffix in ["-wal", "-shm"] {
            let _ = std::fs::remove_file(dir.path().join(format!("before.db{suffix}")));
        }
        path.clone()
    };
    let script = Scripted::words(300, Duration::from_millis(1));
    let app = spawn_app_with(FakeProvider::with(script.clone()).await, |c| {
        c.database = upgraded.clone()
    })
    .await;
    // Two replies: the second's prompt reads the first (the readers' pool).
    for _ in 0..2 {
        let reply = app.post("lobby", "Ann", "@gpt go").await.replies.remove(0);
        let ended = crate::support::poll_until(
            Duration::from_secs(20),
            Duration::from_millis(20),
            "the reply did not end",
            || app.get_message("lobby", reply.id),
            |m| m.status != Status::Streaming,
        )
        .await;
        assert_eq!(ended.status, Status::Done, "{:?}", ended.error);
        assert_eq!(ended.body, script.text());
    }
    let after = SqlitePool::connect_with(SqliteConnectOptions::new().filename(&upgraded))
        .await
        .unwrap();
    assert_eq!(page_size(&after).await, 4096);
    let history: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM messages WHERE author = 'Bo'")
        .fetch_one(&after)
        .await
        .unwrap();
    assert_eq!(history, 50, "the history in the WAL survived");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_with_4_kib_pages_stopped_cleanly_keeps_them_and_works() {
    upgrade(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_with_4_kib_pages_left_by_a_crash_keeps_them_and_works() {
    upgrade(true).await;
}
