//! A viewer asking for `?granularity=sentence` gets fewer, larger deltas on
//! sentence boundaries, and ends with exactly the text a token viewer has.

use std::time::Duration;

use crate::support::{client_list, spawn_app_with, FakeProvider, Scripted, SseClient};
use streamchat::{model::Granularity, server::ingest::chunker::boundary};

crate::both_backends! {
async fn sentence_viewer_and_token_viewer_end_identical() {
    let text = "First sentence here. Second one, with 日本語 and 👩‍💻! Third? Last words";
    let deltas: Vec<String> = text.split_inclusive(' ').map(str::to_owned).collect();
    let script = Scripted {
        deltas,
        pause: Duration::from_millis(3),
        ..Scripted::new(&[])
    };
    // A long delay: every sentence-view delta but the last ends a sentence.
    let app = spawn_app_with(FakeProvider::with(script).await, |c| {
        c.stream.max_delay_ms = 10_000
    })
    .await;
    let mut tokens = SseClient::connect(&app.events_url("lobby"), None).await;
    let mut sentences = SseClient::connect(
        &format!("{}?granularity=sentence", app.events_url("lobby")),
        None,
    )
    .await;
    let reply = app
        .post("lobby", "Ann", "@gpt sentences")
        .await
        .replies
        .remove(0);

    let mut results = Vec::new();
    for client in [&mut tokens, &mut sentences] {
        let (_owner, list) = client_list();
        let deltas = client.follow(&list, reply.id).await;
        results.push((list.body(reply.id).unwrap(), deltas));
    }
    let stored = app.wait_finished(reply.id).await.body;
    let (token_text, token_deltas) = &results[0];
    let (sentence_text, sentence_deltas) = &results[1];
    assert_eq!(token_text, &stored);
    assert_eq!(sentence_text, &stored);
    // Never more than a token viewer's (which a busy instance may also get
    // merged: on PostgreSQL one wake-up read can carry several tokens).
    assert!(
        sentence_deltas.len() <= token_deltas.len(),
        "{sentence_deltas:?} {token_deltas:?}"
    );
    // Four sentences: four deltas, or fewer when the writer committed two
    // sentence ends together (tokens arriving in one group commit).
    assert!(
        (2..=4).contains(&sentence_deltas.len()),
        "{sentence_deltas:?}"
    );
    for delta in &sentence_deltas[..sentence_deltas.len() - 1] {
        assert_eq!(
            boundary(delta, Granularity::Sentence),
            Some(delta.len()),
            "{delta:?}"
        );
    }
}
}
