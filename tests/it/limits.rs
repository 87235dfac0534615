//! Over the generation cap or the per-author rate limit, the user gets a
//! clear message and nothing is written (their text is not lost: the post
//! is refused, so the composer keeps it).

use std::time::Duration;

use crate::support::{error_text, fake_provider::Ending, spawn_app_with, FakeProvider, Scripted};
use serde_json::Value;

crate::both_backends! {
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
        &[
            ("thread", "lobby"),
            ("id", &first.id.to_string()),
            ("by", "Ann"),
        ],
    )
    .await;
    app.wait_finished(first.id).await;
    // The stopped reply's slot is freed once its task ended: the post
    // goes through then.
    crate::support::poll_until(
        Duration::from_secs(5),
        Duration::from_millis(20),
        "slot never freed",
        || app.post_raw(&[("thread", "lobby"), ("author", "Cy"), ("body", "@gpt three")]),
        |r| r.status().is_success(),
    )
    .await;
}
}

/// A post from the client at `ip` (a trusted proxy's header says so).
async fn post_from(app: &crate::support::TestApp, ip: &str, author: &str) -> reqwest::Response {
    app.http
        .post(format!("{}/api/send_message", app.url))
        .header("accept", "application/json")
        .header("x-forwarded-for", format!("203.0.113.99, {ip}"))
        .form(&[("thread", "lobby"), ("author", author), ("body", "@gpt hi")])
        .send()
        .await
        .unwrap()
}

crate::both_backends! {
async fn a_client_over_the_rate_limit_is_refused_clearly_whatever_its_name() {
    let app = spawn_app_with(FakeProvider::with(Scripted::new(&["ok"])).await, |c| {
        c.limits.mentions_per_minute = 2;
        c.access.client_ip_header = Some("X-Forwarded-For".into());
    })
    .await;
    assert!(post_from(&app, "10.0.0.1", "Ann")
        .await
        .status()
        .is_success());
    assert!(post_from(&app, "10.0.0.1", "Bob")
        .await
        .status()
        .is_success());
    let before = app.message_count().await;
    let refused = post_from(&app, "10.0.0.1", "Cy").await;
    assert_eq!(refused.status().as_u16(), 429);
    let body: Value = refused.json().await.unwrap();
    assert!(
        error_text(&body).contains("2 bot replies in the last minute"),
        "{body}"
    );
    assert_eq!(app.message_count().await, before);
    // Another client is not limited by the first one's requests.
    assert!(post_from(&app, "10.0.0.2", "Ann")
        .await
        .status()
        .is_success());
}
}

crate::both_backends! {
async fn twenty_five_names_from_one_address_share_one_limit() {
    // Default settings: 20 a minute, counted by the connection's address;
    // a forwarded-for header nobody configured as trusted changes nothing.
    let app = spawn_app_with(FakeProvider::with(Scripted::new(&["ok"])).await, |_| {}).await;
    let mut accepted = 0;
    let mut refused = 0;
    for i in 0..25 {
        let response = app
            .http
            .post(format!("{}/api/send_message", app.url))
            .header("accept", "application/json")
            .header("x-forwarded-for", format!("10.1.0.{i}"))
            .form(&[
                ("thread", "lobby"),
                ("author", &format!("name{i}")),
                ("body", "@gpt hi"),
            ])
            .send()
            .await
            .unwrap();
        match response.status().as_u16() {
            200 => accepted += 1,
            429 => refused += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!((accepted, refused), (20, 5));
}
}

crate::both_backends! {
async fn oversized_requests_are_refused() {
    let app = spawn_app_with(FakeProvider::with(Scripted::new(&["ok"])).await, |_| {}).await;
    let huge = "x".repeat(200 * 1024);
    let response = app
        .post_raw(&[("thread", "lobby"), ("author", "Ann"), ("body", &huge)])
        .await;
    assert_eq!(response.status().as_u16(), 413);
    assert_eq!(app.message_count().await, 0);
}
}
