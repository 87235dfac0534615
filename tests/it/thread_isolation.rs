//! A viewer of one thread never receives another thread's events, even with
//! ten replies streaming next door.

use std::time::Duration;

use crate::support::{spawn_app_with, FakeProvider, Scripted, SseClient};
use streamchat::model::ChatEvent;

crate::both_backends! {
async fn a_viewer_of_a_gets_nothing_of_b() {
    let script = Scripted::words(30, Duration::from_millis(3));
    let app = spawn_app_with(FakeProvider::with(script).await, |c| {
        c.limits.mentions_per_minute = 100;
    })
    .await;
    app.create_thread("a").await;
    app.create_thread("b").await;
    let mut viewer_a = SseClient::connect(&app.events_url("a"), None).await;
    let mut viewer_b = SseClient::connect(&app.events_url("b"), None).await;

    let mut replies = Vec::new();
    for i in 0..10 {
        let posted = app.post("b", &format!("author{i}"), "@gpt go").await;
        replies.extend(posted.replies.into_iter().map(|m| m.id));
    }
    // B's viewer sees all ten end.
    let mut ended = 0;
    while ended < 10 {
        let (_, event) = tokio::time::timeout(Duration::from_secs(20), viewer_b.next())
            .await
            .expect("b's events keep coming")
            .expect("open");
        if let ChatEvent::Finished { id, .. } = event {
            assert!(replies.contains(&id));
            ended += 1;
        }
    }
    // Then a message in A: the first thing A's viewer gets that is not
    // presence or the snapshot's end must be A's own message.
    let own = app.post("a", "Ann", "hello a").await.message;
    loop {
        let (_, event) = tokio::time::timeout(Duration::from_secs(10), viewer_a.next())
            .await
            .expect("a's event arrives")
            .expect("open");
        match event {
            ChatEvent::Sync { .. } | ChatEvent::Presence { .. } => {}
            ChatEvent::Message { message } => {
                assert_eq!(message.id, own.id, "A's viewer got {message:?}");
                assert_eq!(message.thread_id, "a");
                break;
            }
            other => panic!("A's viewer got B's event {other:?}"),
        }
    }
}
}
