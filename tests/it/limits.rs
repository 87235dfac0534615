//! Over the generation cap or the per-author rate limit, the user gets a
//! clear message and nothing is written (their text is not lost: the post
//! is refused, so the composer keeps it).

use std::time::Duration;

use crate::support::{error_text, fake_provider::Ending, spawn_app_with, FakeProvider, Scripted};
use serde_json::Value;

#[tokio::test]
async fn over_the_concurrency_cap_a_mention_is_refused_clearly() {
    let stall = Scripted::new(&["thinking "]).ending(Ending::Stall);
    let app = spawn_app_with(FakeProvider::with(stall).await, |c| {
        c.limits.max_concurrent_replies = 2;
    })
    .await;
    let first = app.post("lobby", "Ann", "@gpt one").await.replies.remove(0);
    app.post("lobby", "Bob", "@gpt two").await;
    let before = app.message_count().await;

    let refused = app
        .post_raw(&[
            ("thread", "lobby"),
            ("author", "Cy"),
            ("body", "@gpt three"),
        ])
        .await;
    assert_eq!(refused.status().as_u16(), 429);
    let body: Value = refused.json().await.unwrap();
    assert!(
        error_text(&body).contains("already writing 2 replies"),
        "{body}"
    );
    assert_eq!(app.message_count().await, before, "nothing written");

    // Messages without a mention still go through.
    app.post("lobby", "Cy", "just chatting").await;
    // A slot frees when a reply ends.
    app.call(
        "stop_reply",
        &[("id", &first.id.to_string()), ("by", "Ann")],
    )
    .await;
    app.wait_finished(first.id).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let r = app
            .post_raw(&[
                ("thread", "lobby"),
                ("author", "Cy"),
                ("body", "@gpt three"),
            ])
            .await;
        if r.status().is_success() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "slot never freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn an_author_over_the_rate_limit_is_refused_clearly() {
    let app = spawn_app_with(FakeProvider::with(Scripted::new(&["ok"])).await, |c| {
        c.limits.mentions_per_minute = 2;
    })
    .await;
    app.post("lobby", "Ann", "@gpt one").await;
    app.post("lobby", "Ann", "@gpt two").await;
    let before = app.message_count().await;
    let refused = app
        .post_raw(&[
            ("thread", "lobby"),
            ("author", "ann"),
            ("body", "@gpt three"),
        ])
        .await;
    assert_eq!(refused.status().as_u16(), 429);
    let body: Value = refused.json().await.unwrap();
    assert!(
        error_text(&body).contains("2 times in the last minute"),
        "{body}"
    );
    assert_eq!(app.message_count().await, before);
    // Others are not limited by Ann's requests.
    assert!(app.post("lobby", "Bob", "@gpt mine").await.replies.len() == 1);
}

#[tokio::test]
async fn oversized_requests_are_refused() {
    let app = spawn_app_with(FakeProvider::with(Scripted::new(&["ok"])).await, |_| {}).await;
    let huge = "x".repeat(200 * 1024);
    let response = app
        .post_raw(&[("thread", "lobby"), ("author", "Ann"), ("body", &huge)])
        .await;
    assert_eq!(response.status().as_u16(), 413);
    assert_eq!(app.message_count().await, 0);
}
