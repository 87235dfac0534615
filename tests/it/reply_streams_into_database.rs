//! A `@gpt` message gets a placeholder at once, then a body equal to the
//! provider's deltas, status `done` and usage stored.

use crate::support::{spawn_app, FakeProvider, Scripted};
use streamchat::model::{Role, Status};

crate::both_backends! {
async fn mention_streams_the_completion_into_the_reply() {
    let script = Scripted {
        usage: Some((42, 7)),
        ..Scripted::new(&["Hello", ", ", "Ann", "! ", "Rust is ", "a language", "."])
    };
    let app = spawn_app(FakeProvider::with(script.clone()).await).await;

    let posted = app.post("lobby", "Ann", "  @gpt what is Rust?  ").await;
    assert_eq!(posted.message.body, "@gpt what is Rust?");
    assert_eq!(posted.message.role, Role::User);
    let reply = posted
        .replies
        .into_iter()
        .next()
        .expect("a placeholder reply");
    assert_eq!(reply.role, Role::Assistant);
    assert_eq!(reply.status, Status::Streaming);
    assert_eq!(reply.body, "");
    assert_eq!(reply.model.as_deref(), Some("fake-model"));

    let done = app.wait_finished(reply.id).await;
    assert_eq!(done.status, Status::Done);
    assert_eq!(done.body, script.text());
    assert_eq!(done.finish_reason.as_deref(), Some("stop"));
    assert_eq!(
        (done.prompt_tokens, done.completion_tokens),
        (Some(42), Some(7))
    );
    assert!(done.finished_at.is_some());
    assert_eq!(done.error, None);

    // The request was a streamed completion with usage, system prompt first
    // and the author's message as `user` with their name.
    let requests = app.fake.request_bodies();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request["stream"], true);
    assert_eq!(request["stream_options"]["include_usage"], true);
    assert_eq!(request["model"], "fake-model");
    let messages = request["messages"].as_array().unwrap();
    assert_eq!(messages[0]["role"], "system");
    assert_eq!(messages.last().unwrap()["role"], "user");
    assert_eq!(messages.last().unwrap()["name"], "Ann");
    assert_eq!(messages.last().unwrap()["content"], "@gpt what is Rust?");
}
}

crate::both_backends! {
async fn context_holds_recent_messages_with_the_bots_as_assistant() {
    let app = spawn_app(FakeProvider::with(Scripted::new(&["first answer"])).await).await;
    let first = app.post("lobby", "Ann", "@gpt one").await.replies.remove(0);
    app.wait_finished(first.id).await;
    app.post("lobby", "Bob", "no mention").await;
    let second = app.post("lobby", "Cy", "@GPT two").await.replies.remove(0);
    app.wait_finished(second.id).await;

    let requests = app.fake.request_bodies();
    let roles: Vec<(String, String)> = requests[1]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .skip(1)
        .map(|m| {
            (
                m["role"].as_str().unwrap().into(),
                m["content"].as_str().unwrap().into(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = [
        ("user", "@gpt one"),
        ("assistant", "first answer"),
        ("user", "no mention"),
        ("user", "@GPT two"),
    ]
    .iter()
    .map(|(r, c)| (r.to_string(), c.to_string()))
    .collect();
    assert_eq!(roles, expected);
}
}

crate::both_backends! {
async fn a_refused_request_fails_the_reply_with_the_providers_error() {
    // Nothing listens on this port: the connection is refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let mut fake = FakeProvider::with(Scripted::new(&["unused"])).await;
    fake.base_url = format!("http://127.0.0.1:{port}/v1");
    let app = spawn_app(fake).await;

    let reply = app
        .post("lobby", "Ann", "@gpt hello?")
        .await
        .replies
        .remove(0);
    let failed = app.wait_finished(reply.id).await;
    assert_eq!(failed.status, Status::Failed);
    let error = failed.error.unwrap_or_default();
    assert!(error.contains("Could not reach the provider"), "{error}");
    assert!(!error.contains("sk-test-key"));
}
}
