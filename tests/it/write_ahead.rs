//! Write-ahead: every delta a subscriber receives is already in the
//! database when it arrives.

use std::time::Duration;

use crate::support::{spawn_app, FakeProvider, Scripted, SseClient};
use streamchat::model::ChatEvent;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_received_delta_is_already_stored() {
    let deltas: Vec<String> = (0..80).map(|i| format!("tok{i} ")).collect();
    let script = Scripted {
        deltas,
        pause: Duration::from_millis(1),
        ..Scripted::new(&[])
    };
    let app = spawn_app(FakeProvider::with(script.clone()).await).await;
    let mut viewer = SseClient::connect(&app.events_url("lobby"), None).await;
    let reply = app.post("lobby", "Ann", "@gpt go").await.replies.remove(0);

    let mut checked = 0;
    loop {
        let (_, event) = tokio::time::timeout(Duration::from_secs(20), viewer.next())
            .await
            .expect("events keep coming")
            .expect("open");
        match event {
            ChatEvent::Delta {
                id, offset, text, ..
            } => {
                assert_eq!(id, reply.id);
                let stored = app.message(id).await.body;
                assert!(
                    stored.len() >= offset + text.len(),
                    "delta at {offset} (+{}) arrived before it was stored ({} bytes)",
                    text.len(),
                    stored.len()
                );
                assert_eq!(&stored[offset..offset + text.len()], text);
                checked += 1;
            }
            ChatEvent::Finished { id, len, .. } if id == reply.id => {
                let stored = app.message(id).await;
                assert_eq!(stored.body.len(), len);
                break;
            }
            _ => {}
        }
    }
    assert!(checked > 0);
    assert_eq!(app.message(reply.id).await.body, script.text());
}

/// The claim proved directly: while another connection holds the database's
/// write lock, the writer cannot commit, and no delta beyond what was
/// committed before reaches a viewer; once released, the rest arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_delta_reaches_a_viewer_while_the_database_is_locked() {
    let deltas: Vec<String> = (0..400).map(|i| format!("tok{i} ")).collect();
    let script = Scripted {
        deltas,
        pause: Duration::from_millis(3),
        ..Scripted::new(&[])
    };
    let app = spawn_app(FakeProvider::with(script.clone()).await).await;
    let mut viewer = SseClient::connect(&app.events_url("lobby"), None).await;
    let reply = app.post("lobby", "Ann", "@gpt go").await.replies.remove(0);
    app.wait_for_text(reply.id).await;

    let mut lock = app.db.acquire().await.unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut *lock)
        .await
        .unwrap();
    // The reply's committed text: its body and its log rows.
    let committed: i64 = sqlx::query_scalar(
        "SELECT length(CAST(body AS BLOB)) + COALESCE((SELECT SUM(length(CAST(text AS BLOB))) \
         FROM reply_log WHERE key >= (?1 << 32) AND key < ((?1 + 1) << 32)), 0) \
         FROM messages WHERE id = ?1",
    )
    .bind(reply.id)
    .fetch_one(&mut *lock)
    .await
    .unwrap();
    // Held for a second (under the writer's 5 s busy timeout).
    let held_until = tokio::time::Instant::now() + Duration::from_secs(1);
    let mut while_locked = 0;
    while let Ok(next) = tokio::time::timeout_at(held_until, viewer.next()).await {
        if let Some((_, ChatEvent::Delta { offset, text, .. })) = next {
            assert!(
                (offset + text.len()) as i64 <= committed,
                "a delta ending at {} reached a viewer while only {committed} bytes were committed",
                offset + text.len()
            );
            while_locked += 1;
        }
    }
    let _ = while_locked;
    sqlx::query("ROLLBACK").execute(&mut *lock).await.unwrap();
    drop(lock);

    // Released: the rest arrives, beyond what was committed before.
    let mut beyond = false;
    loop {
        let (_, event) = tokio::time::timeout(Duration::from_secs(20), viewer.next())
            .await
            .expect("deltas arrive once released")
            .expect("open");
        match event {
            ChatEvent::Delta { offset, text, .. } if (offset + text.len()) as i64 > committed => {
                beyond = true;
            }
            ChatEvent::Finished { id, .. } if id == reply.id => break,
            _ => {}
        }
    }
    assert!(beyond);
    assert_eq!(app.message(reply.id).await.body, script.text());
}
