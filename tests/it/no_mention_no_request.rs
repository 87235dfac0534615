//! Only a real `@gpt` mention starts a provider request.

use crate::support::{spawn_app, FakeProvider, Scripted};

crate::both_backends! {
async fn messages_without_a_mention_start_no_request() {
    let app = spawn_app(FakeProvider::with(Scripted::new(&["hi"])).await).await;
    for body in [
        "hello everyone",
        "mail me@gpt.example",
        "@gpt4 is another bot",
        "gpt without at",
    ] {
        let posted = app.post("lobby", "Ann", body).await;
        assert!(posted.replies.is_empty(), "{body:?} started a reply");
    }
    assert_eq!(app.message_count().await, 4);

    // The counter does count: a real mention makes exactly one request.
    let reply = app
        .post("lobby", "Ann", "hey @gpt, hi")
        .await
        .replies
        .remove(0);
    app.wait_finished(reply.id).await;
    assert_eq!(app.fake.requests(), 1);
}
}
