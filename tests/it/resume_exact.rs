//! A subscriber that drops mid-stream and reconnects with `Last-Event-ID`
//! ends with exactly the stored body, including emoji (ZWJ sequences, flags)
//! and CJK split across deltas, with the provider's HTTP body cut through
//! multi-byte characters.

use std::time::Duration;

use crate::support::{spawn_app, FakeProvider, Scripted, SseClient};
use streamchat::model::{ChatEvent, Status};

/// Deltas that split grapheme clusters between code points.
fn tricky_deltas() -> Vec<String> {
    let text = "Family: 👨‍👩‍👧‍👦, coder 👩🏽‍💻, flag 🇯🇵🇫🇷. 你好，世界！こんにちは。Ünïcödé ✓ done.";
    let chars: Vec<char> = text.chars().collect();
    // 1, 2 or 3 code points per delta: ZWJ sequences and flags get cut.
    let mut deltas = Vec::new();
    let mut i = 0;
    let mut n = 1;
    while i < chars.len() {
        let end = (i + n).min(chars.len());
        deltas.push(chars[i..end].iter().collect());
        i = end;
        n = n % 3 + 1;
    }
    deltas
}

async fn resume_case(script: Scripted) {
    let app = spawn_app(FakeProvider::with(script.clone()).await).await;
    let (_owner, list) = crate::support::client_list();

    let mut first = SseClient::connect(&app.events_url("lobby"), None).await;
    let reply = app
        .post("lobby", "Ann", "@gpt say something tricky")
        .await
        .replies
        .remove(0);

    // Read until a few deltas of the reply arrived, then drop the connection.
    let mut deltas_seen = 0;
    while deltas_seen < 5 {
        let (rev, event) = first.next().await.expect("first connection open");
        if matches!(event, ChatEvent::Delta { .. }) {
            deltas_seen += 1;
        }
        assert_eq!(list.apply(event, rev), None);
    }
    let last_id = first.last_id.clone().expect("events carry ids");
    drop(first);
    let partial = list.body(reply.id).unwrap();
    assert!(!partial.is_empty());

    // Reconnect with Last-Event-ID and read until the reply ends.
    let mut second = SseClient::connect(&app.events_url("lobby"), Some(&last_id)).await;
    second.follow(&list, reply.id).await;

    let stored = app.wait_finished(reply.id).await;
    assert_eq!(stored.status, Status::Done);
    assert_eq!(stored.body, script.text());
    assert_eq!(list.body(reply.id).unwrap(), stored.body);
}

crate::both_backends! {
async fn reconnect_with_last_event_id_ends_exact() {
    let deltas: Vec<String> = (0..60).map(|i| format!("word{i} ")).collect();
    let script = Scripted {
        deltas,
        pause: Duration::from_millis(5),
        ..Scripted::new(&[])
    };
    resume_case(script).await;
}
}

crate::both_backends! {
async fn reconnect_is_exact_for_multibyte_text_cut_in_transit() {
    let script = Scripted {
        deltas: tricky_deltas(),
        // 5-byte HTTP pieces cut through 3- and 4-byte characters.
        piece_bytes: Some(5),
        pause: Duration::from_millis(1),
        ..Scripted::new(&[])
    };
    assert!(script.wire_body().len() > 1000);
    resume_case(script).await;
}
}
