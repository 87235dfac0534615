//! Usage: the provider's counts when it sends them, a flagged estimate from
//! a real tokenizer when it does not; per-thread and per-author totals.

use crate::support::{spawn_app, FakeProvider, Scripted};
use serde_json::Value;
use streamchat::model::Status;

crate::both_backends! {
async fn provider_usage_is_stored_as_is() {
    let script = Scripted {
        usage: Some((120, 3)),
        ..Scripted::new(&["one ", "two ", "three"])
    };
    let app = spawn_app(FakeProvider::with(script).await).await;
    let reply = app
        .post("lobby", "Ann", "@gpt count")
        .await
        .replies
        .remove(0);
    let done = app.wait_finished(reply.id).await;
    assert_eq!(
        (done.prompt_tokens, done.completion_tokens),
        (Some(120), Some(3))
    );
    assert!(!done.usage_estimated);
    assert!(done.tokens_per_second.is_some());
}
}

crate::both_backends! {
async fn without_a_usage_chunk_an_estimate_is_flagged() {
    let script = Scripted {
        usage: None,
        ..Scripted::new(&["Hello there, ", "this reply has ", "no usage chunk."])
    };
    let app = spawn_app(FakeProvider::with(script).await).await;
    let reply = app
        .post("lobby", "Ann", "@gpt estimate")
        .await
        .replies
        .remove(0);
    let done = app.wait_finished(reply.id).await;
    assert_eq!(done.status, Status::Done);
    assert!(done.usage_estimated);
    let completion = done.completion_tokens.unwrap();
    assert!((6..=14).contains(&completion), "estimated {completion}");
    assert!(
        done.prompt_tokens.unwrap() > 10,
        "system prompt and question counted"
    );
}
}

crate::both_backends! {
async fn totals_per_thread_and_author() {
    let script = Scripted {
        usage: Some((10, 2)),
        ..Scripted::new(&["a ", "b"])
    };
    let app = spawn_app(FakeProvider::with(script).await).await;
    for author in ["Ann", "Ann", "Bob"] {
        let reply = app.post("lobby", author, "@gpt hi").await.replies.remove(0);
        app.wait_finished(reply.id).await;
    }
    let totals: Value = app
        .call("usage_totals", &[("thread", "lobby")])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(totals["prompt_tokens"], 30);
    assert_eq!(totals["completion_tokens"], 6);
    assert_eq!(totals["replies"], 3);
    assert_eq!(totals["by_author"][0]["author"], "Ann");
    assert_eq!(totals["by_author"][0]["replies"], 2);
    assert_eq!(totals["by_author"][1]["author"], "Bob");
    assert_eq!(totals["by_author"][1]["completion_tokens"], 2);
}
}
