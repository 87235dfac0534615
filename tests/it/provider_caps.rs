//! What a provider can make the server hold or show is bounded: each bot's
//! `max_tokens` is sent, a reply stops at the size cap with its text kept,
//! a line longer than the line cap fails the reply (the SSE parser never
//! buffers it whole: the line is not even read to its end), and a provider's error is shown cut and without
//! anything that looks like a key.

use streamchat::model::Status;

use crate::support::{fake_provider::Ending, spawn_app_with, FakeProvider, Scripted};

crate::both_backends! {
async fn a_provider_streaming_forever_ends_at_the_reply_cap_with_its_text() {
    let forever = Scripted::new(&["start "]).ending(Ending::Forever);
    let app = spawn_app_with(FakeProvider::with(forever).await, |c| {
        c.limits.max_reply_bytes = 20_000;
    })
    .await;
    let reply = app.post("lobby", "Ann", "@gpt talk").await.replies.remove(0);
    let done = app.wait_finished(reply.id).await;
    assert_eq!(done.status, Status::Done);
    assert_eq!(done.finish_reason.as_deref(), Some("length"));
    assert!(done.body.starts_with("start more text more text"));
    assert!(
        done.body.len() <= 20_000 && done.body.len() > 19_000,
        "kept up to the cap: {} bytes",
        done.body.len()
    );
    let request = &app.fake.request_bodies()[0];
    assert_eq!(request["max_tokens"], 4096, "the bot's max_tokens is sent");
}
}

crate::both_backends! {
async fn one_fifty_megabyte_line_fails_the_reply_with_bounded_memory() {
    let huge = Scripted::new(&["before "]).ending(Ending::HugeLine(50 << 20));
    let app = spawn_app_with(FakeProvider::with(huge).await, |c| {
        c.limits.max_provider_line_bytes = 256 * 1024;
    })
    .await;
    let reply = app.post("lobby", "Ann", "@gpt go").await.replies.remove(0);
    let failed = app.wait_finished(reply.id).await;
    assert_eq!(failed.status, Status::Failed);
    assert_eq!(failed.body, "before ", "the text before the line is kept");
    let error = failed.error.unwrap_or_default();
    assert!(error.contains("a line longer than 262144 bytes"), "{error}");
    // The line was not read to its end (nothing buffers it whole): the
    // connection closed after the cap and what the sockets hold.
    let sent = app.fake.huge_line_sent();
    assert!(sent < 25 << 20, "{} MB of the 50 MB line taken", sent >> 20);
}
}

crate::both_backends! {
async fn a_provider_error_quoting_the_key_is_shown_without_it() {
    let quoting = Scripted::http_error(
        401,
        &format!(
            "Incorrect API key provided: sk-test-key-9f8e7d6c5b4a. {}",
            "You can find your API key at https://platform.openai.com/account/api-keys. ".repeat(20)
        ),
        None,
    );
    let app = spawn_app_with(FakeProvider::with(quoting).await, |_| {}).await;
    let reply = app.post("lobby", "Ann", "@gpt hi").await.replies.remove(0);
    let failed = app.wait_finished(reply.id).await;
    assert_eq!(failed.status, Status::Failed);
    let error = failed.error.unwrap_or_default();
    assert!(error.contains("Incorrect API key provided"), "{error}");
    assert!(!error.contains("sk-"), "{error}");
    assert!(!error.contains("9f8e7d6c5b4a"), "{error}");
    assert!(error.chars().count() <= 301, "cut: {} chars", error.chars().count());
}
}
