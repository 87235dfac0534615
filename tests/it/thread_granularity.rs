//! A thread's own granularity decides how its replies are committed and
//! published: with `word`, every published delta but the last ends a word.

use std::time::Duration;

use streamchat::{model::Granularity, server::ingest::chunker::boundary};

use crate::support::{client_list, spawn_app_with, FakeProvider, Scripted, SseClient};

crate::both_backends! {
async fn a_thread_set_to_words_publishes_whole_words() {
    // Tokens that cut words in pieces.
    let script = Scripted {
        pause: Duration::from_millis(2),
        ..Scripted::new(&[
            "Str", "eam", "ing ", "wor", "ds ", "one ", "by", " one", " 日本", "語 end",
        ])
    };
    let app = spawn_app_with(FakeProvider::with(script.clone()).await, |c| {
        c.stream.max_delay_ms = 10_000
    })
    .await;
    let response = app
        .call(
            "set_granularity",
            &[("thread", "lobby"), ("granularity", "word")],
        )
        .await;
    assert!(response.status().is_success());
    let bad = app
        .call(
            "set_granularity",
            &[("thread", "lobby"), ("granularity", "paragraph")],
        )
        .await;
    assert_eq!(bad.status().as_u16(), 400);

    let (_owner, list) = client_list();
    let mut viewer = SseClient::connect(&app.events_url("lobby"), None).await;
    let reply = app
        .post("lobby", "Ann", "@gpt words")
        .await
        .replies
        .remove(0);
    let deltas = viewer.follow(&list, reply.id).await;
    // The viewer's copy is the stored reply, whole (its end's length and
    // hash were checked); the reply itself must have been written.
    let stored = app.wait_finished(reply.id).await;
    assert_eq!(list.body(reply.id).unwrap(), stored.body);
    assert_eq!(
        (stored.status, stored.error.as_deref()),
        (streamchat::model::Status::Done, None),
        "the reply ended early"
    );
    assert_eq!(list.body(reply.id).unwrap(), script.text());
    assert_eq!(deltas.concat(), script.text());
    assert!(deltas.len() < script.deltas.len());
    for delta in &deltas[..deltas.len() - 1] {
        assert_eq!(
            boundary(delta, Granularity::Word),
            Some(delta.len()),
            "{delta:?}"
        );
    }
}
}
