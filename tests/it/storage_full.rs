//! Storage faults end in a named state: with the database full mid-stream
//! (SQLite's `max_page_count` lowered on the live database; no root needed)
//! the reply ends `failed` with a storage error, every delta a viewer got is
//! stored, `/healthz` says 503 and reads keep working; once the database can
//! grow again the app works on without a restart.

use std::time::Duration;

use crate::support::{spawn_app, FakeProvider, Scripted, SseClient, TestApp};
use streamchat::model::{ChatEvent, Status};

/// Caps the database at `pages` pages (`None`: its size now) on every
/// connection of the app's own (the readers' pool and the writer's two).
async fn limit_pages(app: &TestApp, pages: Option<i64>) {
    assert!(
        app.state.store.cap_pages_for_tests(pages).await,
        "a SQLite store"
    );
}

async fn health(app: &TestApp) -> u16 {
    app.http
        .get(format!("{}/healthz", app.url))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_database_fails_the_reply_by_name_and_the_app_recovers() {
    let deltas: Vec<String> = (0..2000)
        .map(|i| format!("{i:04} lorem ipsum dolor sit amet "))
        .collect();
    let script = Scripted {
        deltas,
        pause: Duration::from_millis(2),
        ..Scripted::new(&[])
    };
    let app = spawn_app(FakeProvider::with(script).await).await;
    assert_eq!(health(&app).await, 200);
    let mut viewer = SseClient::connect(&app.events_url("lobby"), None).await;
    let reply = app.post("lobby", "Ann", "@gpt go").await.replies.remove(0);

    let mut seen = String::new();
    let mut limited = false;
    let (status, error) = loop {
        let Ok(next) = tokio::time::timeout(Duration::from_secs(30), viewer.next()).await else {
            let m = app.message(reply.id).await;
            panic!(
                "events stopped; stored: {:?} {:?} {} bytes, seen {}",
                m.status,
                m.error,
                m.body.len(),
                seen.len()
            );
        };
        let (_, event) = next.expect("open");
        match event {
            ChatEvent::Delta {
                id, offset, text, ..
            } if id == reply.id => {
                assert_eq!(offset, seen.len(), "no gap, no duplicate");
                seen.push_str(&text);
                if !limited && seen.len() > 2000 {
                    limit_pages(&app, None).await;
                    limited = true;
                }
            }
            ChatEvent::Finished {
                id,
                status,
                error,
                len,
                ..
            } if id == reply.id => {
                assert_eq!(len, seen.len(), "the final length is what was published");
                break (status, error.unwrap_or_default());
            }
            _ => {}
        }
    };
    assert_eq!(status, Status::Failed);
    assert!(error.contains("could not be stored"), "{error}");
    let stored = app.message(reply.id).await;
    assert_eq!(stored.status, Status::Failed);
    assert_eq!(
        stored.body, seen,
        "every delta a viewer got is stored, nothing else published"
    );
    assert!(seen.len() < 2000 * 26, "the fault hit mid-stream");

    // Unhealthy, but reads still work.
    assert_eq!(health(&app).await, 503);
    let page = app
        .http
        .get(format!("{}/t/lobby", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status().as_u16(), 200);
    assert_eq!(app.get_message("lobby", reply.id).await.body, seen);

    // Room again: healthy without a restart, and a new reply ends done.
    limit_pages(&app, Some(1_073_741_823)).await;
    crate::support::poll_until(
        Duration::from_secs(20),
        Duration::from_millis(50),
        "never healthy again",
        || health(&app),
        |status| *status == 200,
    )
    .await;
    let again = app
        .post("lobby", "Ann", "@gpt again")
        .await
        .replies
        .remove(0);
    let done = app.wait_finished(again.id).await;
    assert_eq!(done.status, Status::Done);
}
