//! Stop drops the provider request at once and keeps what viewers saw; the
//! watchdog times out stalled and overlong replies.

use std::time::{Duration, Instant};

use crate::support::{
    client_list, fake_provider::Ending, spawn_app, spawn_app_with, FakeProvider, Scripted,
    SseClient,
};
use streamchat::model::Status;

crate::both_backends! {
async fn stop_closes_the_provider_connection_and_keeps_the_text() {
    let app =
        spawn_app(FakeProvider::with(Scripted::words(2000, Duration::from_millis(5))).await).await;
    let (_owner, list) = client_list();
    let mut viewer = SseClient::connect(&app.events_url("lobby"), None).await;
    let reply = app
        .post("lobby", "Ann", "@gpt talk a lot")
        .await
        .replies
        .remove(0);
    app.wait_for_text(reply.id).await;

    let stopped_at = Instant::now();
    let response = app
        .call(
            "stop_reply",
            &[
                ("thread", "lobby"),
                ("id", &reply.id.to_string()),
                ("by", "Bob"),
            ],
        )
        .await;
    assert!(response.status().is_success(), "{}", response.status());

    // The viewer's copy, read to the end of the reply.
    viewer.follow(&list, reply.id).await;
    let stopped = app.wait_finished(reply.id).await;
    assert_eq!(stopped.status, Status::Cancelled);
    assert_eq!(stopped.stopped_by.as_deref(), Some("Bob"));
    assert_eq!(stopped.error.as_deref(), Some("Stopped by Bob."));
    assert!(
        !stopped.body.is_empty()
            && stopped.body.len() < Scripted::words(2000, Duration::ZERO).text().len()
    );
    assert_eq!(
        list.body(reply.id).unwrap(),
        stopped.body,
        "kept text = what the viewer saw"
    );
    assert!(stopped.usage_estimated, "stopped early: usage estimated");

    // The fake saw its connection closed within a second of the stop.
    crate::support::poll_until(
        Duration::from_secs(2),
        Duration::from_millis(5),
        "the provider's connection was not closed",
        || std::future::ready(app.fake.closed_at()),
        |closed| !closed.is_empty(),
    )
    .await;
    let closed = *app
        .fake
        .closed_at()
        .first()
        .expect("the provider connection was closed");
    assert!(
        closed - stopped_at < Duration::from_secs(1),
        "closed after {:?}",
        closed - stopped_at
    );

    // Stopping again is a clear conflict.
    let again = app
        .call(
            "stop_reply",
            &[
                ("thread", "lobby"),
                ("id", &reply.id.to_string()),
                ("by", "Bob"),
            ],
        )
        .await;
    assert_eq!(again.status().as_u16(), 409);
}
}

crate::both_backends! {
async fn a_stalled_stream_times_out_within_the_limit_plus_one_period() {
    let script = Scripted::new(&["some ", "text "]).ending(Ending::Stall);
    let app = spawn_app_with(FakeProvider::with(script).await, |c| {
        c.limits.idle_timeout_secs = 0.6;
        c.limits.watchdog_period_secs = 0.2;
    })
    .await;
    let reply = app
        .post("lobby", "Ann", "@gpt stall")
        .await
        .replies
        .remove(0);
    let with_text = app.wait_for_text(reply.id).await;
    let last_text_at = Instant::now();
    let timed_out = app.wait_finished(reply.id).await;
    let took = last_text_at.elapsed();
    assert_eq!(timed_out.status, Status::TimedOut);
    assert_eq!(timed_out.body, "some text ");
    assert!(with_text.body.len() <= timed_out.body.len());
    assert!(timed_out
        .error
        .unwrap()
        .contains("No reply from the provider for 0.6 s"));
    // Idle limit + one watchdog period, with room for the final commit.
    assert!(
        took <= Duration::from_millis(600 + 200 + 250),
        "timed out after {took:?}"
    );
}
}

crate::both_backends! {
async fn an_overlong_reply_times_out() {
    let app = spawn_app_with(
        FakeProvider::with(Scripted::words(5000, Duration::from_millis(2))).await,
        |c| {
            c.limits.total_timeout_secs = 0.5;
            c.limits.watchdog_period_secs = 0.1;
        },
    )
    .await;
    let reply = app
        .post("lobby", "Ann", "@gpt go on")
        .await
        .replies
        .remove(0);
    let timed_out = app.wait_finished(reply.id).await;
    assert_eq!(timed_out.status, Status::TimedOut);
    assert!(!timed_out.body.is_empty());
    assert!(timed_out.error.unwrap().contains("longer than 0.5 s"));
}
}
