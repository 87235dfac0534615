//! On PostgreSQL the writer has its own connections: a flood of reads (50
//! exports of a 2 MB thread at once, more than the read pool's
//! connections) slows reads, never the commits of a live reply, which ends
//! `done` with every word while the exports all arrive whole.

use std::time::Duration;

use streamchat::model::Status;

use crate::support::{on_backend, spawn_app_with, Backend, FakeProvider, Scripted};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_exports_during_a_live_reply_leave_it_done() {
    on_backend(Backend::Postgres, async {
        let fake = FakeProvider::with(Scripted::words(300, Duration::from_millis(5))).await;
        let app = spawn_app_with(fake, |c| {
            c.cluster.max_connections = 4;
        })
        .await;
        let pg = app.pg.clone().unwrap();
        sqlx::query(
            "INSERT INTO messages (thread_id, author, role, body, status, created_at, updated_at, rev) \
             SELECT 'lobby', 'seed', 'user', repeat('z', 1000), 'done', 0, 0, 0 FROM generate_series(1, 2000)",
        )
        .execute(&pg.pool)
        .await
        .unwrap();
        let reply = app.post("lobby", "Ann", "@gpt count").await.replies.remove(0);
        let exports = (0..50).map(|_| {
            let http = app.http.clone();
            let url = format!("{}/t/lobby/export.md", app.url);
            tokio::spawn(async move {
                let response = http.get(url).send().await.unwrap();
                assert_eq!(response.status().as_u16(), 200);
                response.text().await.unwrap().len()
            })
        });
        let sizes = futures::future::join_all(exports).await;
        let done = app.wait_finished(reply.id).await;
        assert_eq!(done.status, Status::Done, "{:?}", done.error);
        assert_eq!(done.body, Scripted::words(300, Duration::ZERO).text());
        for size in sizes {
            assert!(size.unwrap() > 2_000_000, "every export whole");
        }
    })
    .await;
}
