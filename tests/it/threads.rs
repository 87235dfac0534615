//! Threads: created with unguessable ids, renamed, listed by last activity
//! with a live count, pushed live to thread-list subscribers, exported; the
//! list and history queries use their indexes.

use std::time::Duration;

use crate::support::{spawn_app, FakeProvider, Scripted, SseClient};
use streamchat::model::{ChatEvent, Thread, ThreadSummary};

async fn create(app: &crate::support::TestApp, title: &str) -> Thread {
    let response = app.call("create_thread", &[("title", title)]).await;
    assert!(response.status().is_success(), "{}", response.status());
    response.json().await.unwrap()
}

async fn list(app: &crate::support::TestApp) -> Vec<ThreadSummary> {
    app.call("list_threads", &[]).await.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn threads_are_created_renamed_and_listed_by_activity() {
    let script = Scripted {
        pause: Duration::from_millis(30),
        ..Scripted::words(20, Duration::from_millis(30))
    };
    let app = spawn_app(FakeProvider::with(script).await).await;
    let mut list_viewer =
        SseClient::connect(&format!("{}/api/threads/events", app.url), None).await;

    let first = create(&app, "  Planning  ").await;
    let second = create(&app, "Random").await;
    assert_eq!(first.title, "Planning", "titles are trimmed");
    assert_eq!(first.id.len(), 16);
    assert!(first.id.chars().all(|c| c.is_ascii_hexdigit()));
    assert_ne!(first.id, second.id);
    assert!(!app
        .call("create_thread", &[("title", "  ")])
        .await
        .status()
        .is_success());

    // Newest activity first: posting in the older thread moves it up
    // (activity is stamped in milliseconds: the post comes a few later).
    tokio::time::sleep(Duration::from_millis(5)).await;
    let reply = app
        .post(&first.id, "Ann", "@gpt plan it")
        .await
        .replies
        .remove(0);
    let threads = list(&app).await;
    assert_eq!(threads[0].id, first.id);
    assert_eq!(threads[0].live, 1, "a reply is streaming in it");
    assert_eq!(threads[1].id, second.id);
    assert_eq!(threads[1].live, 0);

    // The thread list's stream said so too, without being asked.
    let live_seen = async {
        loop {
            let (id, event) = list_viewer.next().await.expect("list stream open");
            assert_eq!(id, None, "list events carry no id");
            if let ChatEvent::Thread { thread } = event {
                if thread.id == first.id && thread.live == 1 {
                    return;
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), live_seen)
        .await
        .expect("live marker pushed");

    app.wait_finished(reply.id).await;
    let ended = async {
        loop {
            if let Some((_, ChatEvent::Thread { thread })) = list_viewer.next().await {
                if thread.id == first.id && thread.live == 0 {
                    return;
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), ended)
        .await
        .expect("end of live pushed");

    let renamed: Thread = app
        .call(
            "rename_thread",
            &[("thread", &first.id), ("title", "Q3 planning")],
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(renamed.title, "Q3 planning");
    assert_eq!(list(&app).await[0].title, "Q3 planning");
    let missing = app
        .call("rename_thread", &[("thread", "nope"), ("title", "x")])
        .await;
    assert_eq!(missing.status(), 404);

    let export = app
        .http
        .get(format!("{}/t/{}/export.md", app.url, first.id))
        .send()
        .await
        .unwrap();
    assert_eq!(export.status(), 200);
    assert!(export.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/markdown"));
    let text = export.text().await.unwrap();
    assert!(text.starts_with("# Q3 planning\n"), "{text}");
    assert!(
        text.contains("## Ann · ") && text.contains("@gpt plan it"),
        "{text}"
    );
    assert!(
        text.contains(app.message(reply.id).await.body.trim_end()),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_hear_a_rename() {
    let app = spawn_app(FakeProvider::with(Scripted::new(&["ok"])).await).await;
    let thread = create(&app, "Before").await;
    let mut viewer = SseClient::connect(&app.events_url(&thread.id), None).await;
    app.call(
        "rename_thread",
        &[("thread", &thread.id), ("title", "After")],
    )
    .await;
    let heard = async {
        loop {
            if let Some((_, ChatEvent::Thread { thread: t })) = viewer.next().await {
                return t.title;
            }
        }
    };
    let title = tokio::time::timeout(Duration::from_secs(10), heard)
        .await
        .unwrap();
    assert_eq!(title, "After");
}

/// `EXPLAIN QUERY PLAN` of the thread list and of a history page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_and_history_queries_use_their_indexes() {
    let app = spawn_app(FakeProvider::with(Scripted::new(&["ok"])).await).await;
    let plan = |sql: String| {
        let db = app.db.clone();
        async move {
            let rows: Vec<(i64, i64, i64, String)> =
                sqlx::query_as(&format!("EXPLAIN QUERY PLAN {sql}"))
                    .bind(100)
                    .fetch_all(&db)
                    .await
                    .unwrap();
            rows.into_iter().map(|r| r.3).collect::<Vec<_>>().join("\n")
        }
    };
    let threads = plan(streamchat::server::store::LIST_THREADS.to_owned()).await;
    assert!(threads.contains("idx_threads_activity"), "{threads}");
    assert!(threads.contains("idx_messages_live"), "{threads}");
    assert!(!threads.contains("TEMP B-TREE"), "no sort step: {threads}");

    let history = plan(
        "SELECT id FROM messages WHERE thread_id = 'lobby' AND id < ? ORDER BY id DESC LIMIT 50"
            .to_owned(),
    )
    .await;
    assert!(history.contains("idx_messages_thread_id"), "{history}");
    assert!(!history.contains("TEMP B-TREE"), "{history}");
}
