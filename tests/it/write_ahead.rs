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
            ChatEvent::Delta { id, offset, text } => {
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
