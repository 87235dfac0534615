//! Regenerate answers the same prompt again in a new message (the old one
//! stays); Continue picks a cut-short reply up and appends to it.

use std::time::Duration;

use crate::support::{fake_provider::Ending, spawn_app, FakeProvider, Scripted};
use serde_json::Value;
use streamchat::model::{Message, Status};

crate::both_backends! {
async fn regenerate_answers_the_same_prompt_in_a_new_message() {
    let fake = FakeProvider::start(|n, _| match n {
        0 => Scripted::new(&["half "]).ending(Ending::ErrorEvent("boom".into())),
        _ => Scripted::new(&["a whole ", "answer"]),
    })
    .await;
    let app = spawn_app(fake).await;
    app.post("lobby", "Ann", "earlier context").await;
    let first = app
        .post("lobby", "Ann", "@gpt question")
        .await
        .replies
        .remove(0);
    let failed = app.wait_finished(first.id).await;
    assert_eq!(failed.status, Status::Failed);
    assert!(failed.can_regenerate());
    app.post("lobby", "Bob", "a later message").await;

    let response = app
        .call(
            "regenerate_reply",
            &[
                ("thread", "lobby"),
                ("id", &first.id.to_string()),
                ("by", "Bob"),
            ],
        )
        .await;
    assert!(response.status().is_success(), "{}", response.status());
    let second: Message = response.json().await.unwrap();
    assert_ne!(second.id, first.id);
    // Bob pressed it; the reply is still Ann's (she asked).
    assert_eq!(second.requested_by.as_deref(), Some("Ann"));
    let done = app.wait_finished(second.id).await;
    assert_eq!(
        (done.status, done.body.as_str()),
        (Status::Done, "a whole answer")
    );
    // The old reply stays as it was.
    assert_eq!(app.message(first.id).await.body, "half ");

    // Same prompt: the later message is not in it.
    let requests = app.fake.request_bodies();
    assert_eq!(requests[0]["messages"], requests[1]["messages"]);

    // A reply that is done is not regenerated: refused clearly.
    let refused = app
        .call(
            "regenerate_reply",
            &[
                ("thread", "lobby"),
                ("id", &second.id.to_string()),
                ("by", "Bob"),
            ],
        )
        .await;
    assert_eq!(refused.status().as_u16(), 409);
    let body: Value = refused.json().await.unwrap();
    assert!(crate::support::error_text(&body).contains("cannot be regenerated"));
}
}

crate::both_backends! {
async fn continue_appends_to_a_stopped_reply() {
    let full = Scripted::words(400, Duration::from_millis(3));
    let fake = FakeProvider::continuing(full).await;
    let app = spawn_app(fake).await;
    let reply = app
        .post("lobby", "Ann", "@gpt long one")
        .await
        .replies
        .remove(0);
    app.wait_for_text(reply.id).await;
    app.call(
        "stop_reply",
        &[
            ("thread", "lobby"),
            ("id", &reply.id.to_string()),
            ("by", "Ann"),
        ],
    )
    .await;
    let stopped = app.wait_finished(reply.id).await;
    assert_eq!(stopped.status, Status::Cancelled);
    assert!(stopped.can_continue());

    let response = app
        .call(
            "continue_reply",
            &[
                ("thread", "lobby"),
                ("id", &reply.id.to_string()),
                ("by", "Bob"),
            ],
        )
        .await;
    assert!(response.status().is_success(), "{}", response.status());
    let resumed: Message = response.json().await.unwrap();
    assert_eq!((resumed.id, resumed.status), (reply.id, Status::Streaming));
    // Bob continued it; it is still Ann's reply (her approvals, her tools).
    assert_eq!(resumed.requested_by.as_deref(), Some("Ann"));
    assert_eq!(resumed.body, stopped.body, "the kept text stays");
    let done = app.wait_finished(reply.id).await;
    assert_eq!(done.status, Status::Done);
    assert_eq!(done.body, Scripted::words(400, Duration::ZERO).text());
    assert_eq!((done.stopped_by, done.error), (None, None));
}
}
