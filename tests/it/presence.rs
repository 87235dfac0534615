//! Presence: a thread's viewers hear how many watch it, 1 -> 2 -> 1.

use std::time::Duration;

use crate::support::{spawn_app, FakeProvider, Scripted, SseClient};
use streamchat::model::ChatEvent;

/// Reads until a presence count of `want` arrives.
async fn watchers(viewer: &mut SseClient, want: u32) {
    let seen = async {
        loop {
            if let (id, ChatEvent::Presence { watchers }) = viewer.next().await.expect("open") {
                assert_eq!(id, None, "presence carries no event id");
                if watchers == want {
                    return;
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), seen)
        .await
        .unwrap_or_else(|_| panic!("no presence count of {want}"));
}

crate::both_backends! {
async fn watcher_count_follows_viewers() {
    let app = spawn_app(FakeProvider::with(Scripted::new(&["ok"])).await).await;
    let mut first = SseClient::connect(&app.events_url("lobby"), None).await;
    watchers(&mut first, 1).await;
    let mut second = SseClient::connect(&app.events_url("lobby"), None).await;
    watchers(&mut first, 2).await;
    watchers(&mut second, 2).await;
    drop(second);
    watchers(&mut first, 1).await;
}
}
