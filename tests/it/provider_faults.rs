//! Every provider fault ends the reply in the right state, keeps the text
//! that arrived, shows the provider's words, and retries only 429 / 5xx.

use std::time::Duration;

use crate::support::{
    fake_provider::Ending, spawn_app, spawn_app_with, FakeProvider, Scripted, TestApp,
};
use streamchat::model::{Message, Status};

async fn ask(app: &TestApp) -> Message {
    let reply = app
        .post("lobby", "Ann", "@gpt hello?")
        .await
        .replies
        .remove(0);
    app.wait_finished(reply.id).await
}

crate::both_backends! {
async fn rate_limit_is_retried_honouring_retry_after() {
    let ok = Scripted::new(&["after ", "the wait"]);
    let fake = FakeProvider::start(move |n, _| match n {
        0 => Scripted::http_error(429, "Rate limit reached for requests", Some("1")),
        _ => ok.clone(),
    })
    .await;
    let app = spawn_app(fake).await;
    let done = ask(&app).await;
    assert_eq!(done.status, Status::Done);
    assert_eq!(done.body, "after the wait");
    assert_eq!(done.retries, 1);
    assert_eq!(app.fake.requests(), 2);
    // Retry-After (1 s) wins over the 10 ms backoff the test configures.
    let at = app.fake.received_at();
    assert!(
        at[1] - at[0] >= Duration::from_millis(950),
        "retried after {:?}",
        at[1] - at[0]
    );
}
}

crate::both_backends! {
async fn server_errors_are_retried_with_backoff_then_fail() {
    let fake =
        FakeProvider::with(Scripted::http_error(503, "The engine is overloaded", None)).await;
    let app = spawn_app_with(fake, |c| c.limits.provider_retries = 2).await;
    let failed = ask(&app).await;
    assert_eq!(failed.status, Status::Failed);
    assert_eq!(failed.retries, 2);
    assert_eq!(app.fake.requests(), 3);
    let error = failed.error.unwrap();
    assert!(
        error.contains("503") && error.contains("The engine is overloaded"),
        "{error}"
    );
    assert!(
        !error.contains('{') && !error.contains("fake_error"),
        "the message, not the provider's JSON envelope: {error}"
    );
    assert_eq!(failed.body, "");
    assert_eq!(failed.notice, None);
}
}

crate::both_backends! {
async fn a_retry_after_longer_than_the_idle_timeout_fails_saying_so() {
    let fake = FakeProvider::with(Scripted::http_error(429, "Slow down", Some("120"))).await;
    let app = spawn_app_with(fake, |c| c.limits.idle_timeout_secs = 5.0).await;
    let failed = ask(&app).await;
    assert_eq!(
        failed.status,
        Status::Failed,
        "not timed out: the provider did answer"
    );
    let error = failed.error.unwrap();
    assert!(
        error.contains("Slow down") && error.contains("wait 120 s"),
        "{error}"
    );
    assert_eq!(app.fake.requests(), 1, "no pointless wait and retry");
}
}

crate::both_backends! {
/// `Retry-After` is the provider's to write, any number: an infinite or
/// huge one (which `Duration` cannot hold) ends the reply `failed` at once,
/// never a panic that leaves it `streaming` (with its lease renewed).
async fn an_absurd_retry_after_fails_the_reply_at_once() {
    for header in ["inf", "1e20", "18446744073709551616"] {
        let fake = FakeProvider::start(move |n, _| match n {
            0 => Scripted::http_error(429, "Slow down", Some(header)),
            _ => Scripted::new(&["still ", "here"]),
        })
        .await;
        let app = spawn_app_with(fake, |c| {
            c.limits.idle_timeout_secs = 3.0;
            c.limits.total_timeout_secs = 6.0;
        })
        .await;
        let failed = ask(&app).await;
        assert_eq!(failed.status, Status::Failed, "Retry-After: {header}");
        let error = failed.error.unwrap();
        assert!(
            error.contains("Slow down") && error.contains("longer than this app waits"),
            "Retry-After: {header}: {error}"
        );
        assert_eq!(app.fake.requests(), 1, "Retry-After: {header}");
        // The app goes on serving: the next reply is written.
        let done = ask(&app).await;
        assert_eq!((done.status, done.body.as_str()), (Status::Done, "still here"));
    }
}
}

crate::both_backends! {
async fn a_server_error_then_success_is_done() {
    let ok = Scripted::new(&["fine ", "now"]);
    let fake = FakeProvider::start(move |n, _| match n {
        0 => Scripted::http_error(500, "oops", None),
        _ => ok.clone(),
    })
    .await;
    let app = spawn_app(fake).await;
    let done = ask(&app).await;
    assert_eq!(
        (done.status, done.body.as_str(), done.retries),
        (Status::Done, "fine now", 1)
    );
}
}

crate::both_backends! {
async fn unauthorized_fails_at_once_with_the_providers_message() {
    let fake = FakeProvider::with(Scripted::http_error(
        401,
        "Incorrect API key provided",
        None,
    ))
    .await;
    let app = spawn_app(fake).await;
    let failed = ask(&app).await;
    assert_eq!(failed.status, Status::Failed);
    assert_eq!(app.fake.requests(), 1, "401 is not retried");
    assert_eq!(failed.retries, 0);
    let error = failed.error.unwrap();
    assert!(error.contains("Incorrect API key provided"), "{error}");
    assert!(!error.contains("sk-test-key"));
}
}

async fn mid_stream(ending: Ending) -> (Message, String) {
    let script = Scripted::new(&["kept ", "partial ", "text"]).ending(ending);
    let app = spawn_app(FakeProvider::with(script.clone()).await).await;
    let failed = ask(&app).await;
    assert_eq!(app.fake.requests(), 1, "mid-stream faults are not retried");
    (failed, script.text())
}

crate::both_backends! {
async fn an_error_event_mid_stream_fails_keeping_the_text() {
    let (failed, text) = mid_stream(Ending::ErrorEvent("Model overloaded mid-answer".into())).await;
    assert_eq!(failed.status, Status::Failed);
    assert_eq!(failed.body, text);
    assert!(failed
        .error
        .unwrap()
        .contains("Model overloaded mid-answer"));
}
}

crate::both_backends! {
async fn a_reset_connection_fails_keeping_the_text() {
    let (failed, text) = mid_stream(Ending::Reset).await;
    assert_eq!(failed.status, Status::Failed);
    assert_eq!(failed.body, text);
    assert!(failed.error.unwrap().contains("stream"));
}
}

crate::both_backends! {
async fn a_malformed_chunk_fails_keeping_the_text() {
    let (failed, text) = mid_stream(Ending::Malformed).await;
    assert_eq!(failed.status, Status::Failed);
    assert_eq!(failed.body, text);
    assert!(failed.error.unwrap().contains("malformed"));
}
}

crate::both_backends! {
async fn a_stream_without_finish_or_done_is_not_done() {
    let (failed, text) = mid_stream(Ending::Truncated).await;
    assert_eq!(failed.status, Status::Failed);
    assert_eq!(failed.body, text);
    assert!(failed
        .error
        .unwrap()
        .contains("ended before the reply was finished"));
}
}

crate::both_backends! {
async fn the_ui_sees_retrying_while_it_waits() {
    let ok = Scripted::new(&["ok"]);
    let fake = FakeProvider::start(move |n, _| match n {
        0 => Scripted::http_error(429, "slow down", Some("1")),
        _ => ok.clone(),
    })
    .await;
    let app = spawn_app(fake).await;
    let reply = app.post("lobby", "Ann", "@gpt hi").await.replies.remove(0);
    // While waiting out Retry-After the stored row says it is retrying.
    let notice = crate::support::poll_until(
        Duration::from_secs(5),
        Duration::from_millis(10),
        "no retry notice",
        || app.message(reply.id),
        |m| m.notice.is_some(),
    )
    .await
    .notice
    .unwrap();
    assert!(
        notice.contains("Retrying") && notice.contains("slow down"),
        "{notice}"
    );
    let done = app.wait_finished(reply.id).await;
    assert_eq!((done.status, done.notice), (Status::Done, None));
}
}
