//! Several instances: an instance whose wake-up listener reads a reply's
//! whole life at once (it was paused, or listens again after losing its
//! connection) sends that reply's row before any of its text or its end:
//! its viewers never hold a delta or an end for a message they were not
//! sent. Both instances are real child processes; B is paused with SIGSTOP
//! while A's reply starts and ends.

use std::time::Duration;

use streamchat::model::{ChatEvent, Status};

use crate::support::{
    client_list,
    pg::{NodeProcess, PgDb},
    post_at, FakeProvider, Scripted, SseClient,
};

/// How a paused instance loses track of the database meanwhile.
#[derive(Clone, Copy)]
enum Lag {
    /// Paused only.
    Paused,
    /// Paused, and its listening connection terminated meanwhile: it
    /// listens again and catches up on resuming.
    PausedAndReconnected,
}

async fn a_whole_reply_read_at_once_reaches_the_viewer_whole(lag: Lag) {
    let db = PgDb::create().await;
    let script = Scripted::new(&["One ", "short ", "reply ", "here."]);
    let fake = FakeProvider::with(script.clone()).await;
    let a = NodeProcess::start(&db, &fake, "producer", 5.0, None).await;
    let b = NodeProcess::start(&db, &fake, "lagging", 5.0, None).await;
    let (_owner, list) = client_list();
    let mut viewer = SseClient::connect(&b.events_url("lobby"), None).await;
    // The subscription is live (its snapshot and sync arrived).
    loop {
        let (rev, event) = tokio::time::timeout(Duration::from_secs(10), viewer.next())
            .await
            .expect("the snapshot arrives")
            .expect("open");
        let synced = matches!(event, ChatEvent::Sync { .. });
        assert_eq!(list.apply(event, rev), None);
        if synced {
            break;
        }
    }
    // A first message B reads normally: B has read the thread.
    let http = reqwest::Client::new();
    let first = post_at(&http, &a.url, "lobby", "Ann", "hello")
        .await
        .message;
    while list.body(first.id).is_none() {
        let (rev, event) = tokio::time::timeout(Duration::from_secs(10), viewer.next())
            .await
            .expect("B publishes A's message")
            .expect("open");
        assert_eq!(list.apply(event, rev), None);
    }

    b.signal("STOP");
    if let Lag::PausedAndReconnected = lag {
        let killed = db.terminate_listener("lagging").await;
        assert!(
            !killed.is_empty() && killed.iter().all(|k| *k),
            "B's listening connection terminated: {killed:?}"
        );
    }
    let reply = post_at(&http, &a.url, "lobby", "Ann", "@gpt go")
        .await
        .replies[0]
        .clone();
    let stored = db.wait_finished(reply.id, Duration::from_secs(20)).await;
    assert_eq!(stored.status, Status::Done);
    b.signal("CONT");

    // Every event B sends applies cleanly, and the reply arrives whole.
    let mut saw_row_first = false;
    while list.body(reply.id).as_deref() != Some(stored.body.as_str())
        || list.status(reply.id) != Some(Status::Done)
    {
        let (rev, event) = tokio::time::timeout(Duration::from_secs(20), viewer.next())
            .await
            .expect("B publishes the reply after resuming")
            .expect("open");
        match &event {
            ChatEvent::Message { message } if message.id == reply.id => saw_row_first = true,
            ChatEvent::Delta { id, .. } | ChatEvent::Finished { id, .. } if *id == reply.id => {
                assert!(
                    saw_row_first,
                    "a delta or end of reply {id} before its row: {event:?}"
                )
            }
            _ => {}
        }
        assert_eq!(
            list.apply(event, rev),
            None,
            "no gap: the viewer holds every message an event names"
        );
    }
    assert_eq!(list.body(reply.id).unwrap(), script.text());
    if let Lag::PausedAndReconnected = lag {
        let listening: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pg_stat_activity \
             WHERE application_name = 'streamchat-listen:lagging' \
             AND datname = current_database()",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
        assert!(listening >= 1, "B listens again");
    }
    drop((a, b));
    db.drop_db().await;
}

#[tokio::test]
async fn a_paused_listener_sends_a_whole_short_reply_as_its_row() {
    a_whole_reply_read_at_once_reaches_the_viewer_whole(Lag::Paused).await;
}

#[tokio::test]
async fn a_listener_that_reconnects_sends_a_whole_short_reply_as_its_row() {
    a_whole_reply_read_at_once_reaches_the_viewer_whole(Lag::PausedAndReconnected).await;
}
