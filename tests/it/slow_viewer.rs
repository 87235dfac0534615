//! A viewer that stops reading never slows the others: while it is stuck,
//! the rest receive every delta as usual; the stuck one, once it reads
//! again, is resynced from the database and ends with the exact text.
//! The hub holds at most `viewer_buffer` (here 256) events for it, however long it
//! stalls (memory bounded by configuration, not by the backlog); one stuck
//! past the write timeout is disconnected (`open_network.rs`).

use std::{collections::HashSet, time::Duration};

use streamchat::model::ChatEvent;

use crate::support::{
    client_list, spawn_app_with, sse::ended_reply, FakeProvider, Scripted, SseClient,
};

crate::both_backends! {
async fn a_stuck_viewer_is_resynced_and_others_are_unaffected() {
    let fake = FakeProvider::start(|n, _| {
        // ~7 MB of events in all: more than the socket buffers (Linux lets a
        // send buffer grow to 4 MB) can hide from the stuck viewer.
        let padding = "x".repeat(400);
        let deltas: Vec<String> = (0..1500).map(|i| format!("r{n}-{i}-{padding} ")).collect();
        Scripted {
            deltas,
            pause: Duration::from_millis(1),
            ..Scripted::new(&[])
        }
    })
    .await;
    let app = spawn_app_with(fake, |c| {
        c.stream.viewer_buffer = 256;
        // Stuck for less than the write timeout: kept, and resynced.
        c.limits.write_timeout_secs = 600.0;
    })
    .await;
    let mut stuck = SseClient::connect_tiny(app.addr, "/api/threads/lobby/events").await;
    let mut healthy = SseClient::connect(&app.events_url("lobby"), None).await;
    // Both read their opening snapshot (nothing streams yet: just `sync`);
    // then the stuck viewer stops reading.
    for client in [&mut stuck, &mut healthy] {
        let (_, first) = client.next().await.expect("snapshot");
        assert!(matches!(first, ChatEvent::Sync { .. }));
    }

    let mut replies = Vec::new();
    for i in 0..10 {
        replies.push(
            app.post("lobby", &format!("u{i}"), "@gpt long")
                .await
                .replies
                .remove(0)
                .id,
        );
    }

    // The healthy viewer gets every reply whole, delta by delta (no resync).
    // It reads as fast as it can and applies afterwards: the reading is
    // what must keep up, not this debug build's rendering.
    let (_o1, healthy_list) = client_list();
    let mut finished = HashSet::new();
    let mut received = Vec::new();
    while finished.len() < replies.len() {
        let (rev, event) = tokio::time::timeout(Duration::from_secs(20), healthy.next())
            .await
            .expect("the healthy viewer keeps receiving")
            .expect("open");
        assert!(
            !matches!(event, ChatEvent::Sync { .. }),
            "the healthy viewer was resynced"
        );
        // (A reply's row sent whole by a busy instance is also its end.)
        finished.extend(ended_reply(&event).filter(|id| replies.contains(id)));
        received.push((rev, event));
    }
    for (rev, event) in received {
        assert_eq!(healthy_list.apply(event, rev), None);
    }
    for id in &replies {
        assert_eq!(
            healthy_list.body(*id).unwrap(),
            app.wait_finished(*id).await.body
        );
    }

    // The replies' text (~7 MB) fills the stuck viewer's socket however the
    // deltas were grouped (a busy instance sends fewer, larger ones), so
    // these rows, one event each, are more than the hub keeps for it: it
    // has lagged for certain.
    let notes: Vec<String> = (0..300).map(|i| format!("note {i}")).collect();
    for batch in notes.chunks(30) {
        futures::future::join_all(batch.iter().map(|note| app.post("lobby", "filler", note)))
            .await;
    }

    // Now the stuck viewer reads again: it was resynced from the database
    // (a snapshot follows its lag, ending in `sync`) and ends exact.
    let (_o2, stuck_list) = client_list();
    let mut resynced = false;
    let mut done = HashSet::new();
    while done.len() < replies.len() || !resynced {
        let (rev, event) = tokio::time::timeout(Duration::from_secs(20), stuck.next())
            .await
            .expect("the stuck viewer catches up and is resynced")
            .expect("open");
        resynced |= matches!(event, ChatEvent::Sync { .. });
        done.extend(ended_reply(&event).filter(|id| replies.contains(id)));
        if let Some(id) = stuck_list.apply(event, rev) {
            // A gap in a copy: re-fetch it, as the browser does.
            stuck_list.replace(app.get_message("lobby", id).await);
        }
    }
    for id in &replies {
        assert_eq!(
            stuck_list.body(*id).unwrap(),
            app.message(*id).await.body,
            "reply {id}"
        );
    }
}
}
