//! Operators' view: `/metrics` shows a live reply and rising token counts;
//! `/healthz` is 200, and 503 once the database file cannot be written.

use std::time::Duration;

use crate::support::{spawn_app, FakeProvider, Scripted};

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from /metrics"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_during_a_reply_and_health() {
    let app =
        spawn_app(FakeProvider::with(Scripted::words(300, Duration::from_millis(5))).await).await;
    let get = |path: &'static str| app.http.get(format!("{}{path}", app.url)).send();
    let scrape = || async {
        let response = get("/metrics").await.unwrap();
        assert!(response.status().is_success());
        response.text().await.unwrap()
    };
    let reply = app
        .post("lobby", "Ann", "@gpt count")
        .await
        .replies
        .remove(0);
    app.wait_for_text(reply.id).await;
    let first = scrape().await;
    assert_eq!(metric(&first, "streamchat_replies_live"), 1.0);
    let tokens_before = metric(&first, "streamchat_tokens_total");
    assert!(tokens_before > 0.0);
    // The counter rises while the reply streams.
    let now = crate::support::poll_until(
        Duration::from_secs(10),
        Duration::from_millis(20),
        "token counter did not rise",
        &scrape,
        |now| metric(now, "streamchat_tokens_total") > tokens_before,
    )
    .await;
    assert!(metric(&now, "streamchat_commits_total") > 0.0);
    assert!(now.contains("streamchat_token_to_publish_seconds_count"));
    app.wait_finished(reply.id).await;
    let after = scrape().await;
    assert_eq!(metric(&after, "streamchat_replies_live"), 0.0);
    assert_eq!(metric(&after, "streamchat_tokens_total"), 300.0);
    assert_eq!(
        metric(&after, "streamchat_replies_ended_total{status=\"done\"}"),
        1.0
    );

    let health = get("/healthz").await.unwrap();
    assert_eq!(health.status().as_u16(), 200);

    // The 503 half, with a fault that needs no root: tests/it/storage_full.rs.
}
