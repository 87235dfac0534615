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

crate::both_backends! {
/// Stop then Continue, again and again: the kept text counts, so the reply
/// never passes its cap, and Continue of a reply at its cap is refused.
async fn stop_and_continue_never_take_a_reply_past_its_cap() {
    let slow = Scripted {
        pause: std::time::Duration::from_millis(10),
        ..Scripted::new(&["0123456789"; 300])
    };
    let app = spawn_app_with(FakeProvider::with(slow).await, |c| {
        c.limits.max_reply_bytes = 1000;
    })
    .await;
    let id = app.post("lobby", "Ann", "@gpt count").await.replies[0].id;
    let fields = |id: i64| vec![("thread", "lobby".to_owned()), ("id", id.to_string()), ("by", "Ann".to_owned())];
    let call = |function: &'static str| {
        let app = &app;
        async move {
            let fields = fields(id);
            let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
            app.call(function, &fields).await
        }
    };
    let mut refused = false;
    for round in 0..4 {
        let before = app.message(id).await.body.len();
        crate::support::poll_until(
            std::time::Duration::from_secs(20),
            std::time::Duration::from_millis(5),
            "the reply grew no more",
            || app.message(id),
            |m| m.body.len() >= before + 200 || m.status != Status::Streaming,
        )
        .await;
        call("stop_reply").await;
        let stopped = app.wait_finished(id).await;
        assert!(stopped.body.len() <= 1000, "round {round}: {} bytes", stopped.body.len());
        let resumed = call("continue_reply").await;
        if resumed.status() == 409 {
            let text = resumed.text().await.unwrap();
            assert!(text.contains("size limit (1000 bytes)"), "{text}");
            refused = true;
            break;
        }
        assert!(resumed.status().is_success(), "round {round}: {}", resumed.status());
    }
    let last = app.wait_finished(id).await;
    assert!(last.body.len() <= 1000, "{} bytes kept of a 1000-byte cap", last.body.len());
    assert!(
        refused || last.finish_reason.as_deref() == Some("length"),
        "the cap was reached: {:?} {:?}",
        last.status,
        last.finish_reason
    );
}
}

crate::both_backends! {
/// A model writing many calls with long arguments in small fragments: the
/// tool log counts against the reply's cap (the reply ends `done` with
/// `length`, its calls not run), and fragments are merged into few records.
async fn tool_calls_count_against_the_reply_cap() {
    let arguments = format!(r#"{{"pad": "{}"}}"#, "y".repeat(3000));
    let fragments: Vec<String> = arguments
        .as_bytes()
        .chunks(100)
        .map(|c| String::from_utf8(c.to_vec()).unwrap())
        .collect();
    let step = Scripted {
        tool_calls: (0..8).map(|_| ("current_time".to_owned(), fragments.clone())).collect(),
        ..Scripted::new(&[])
    };
    let app = spawn_app_with(FakeProvider::with(step).await, |c| {
        c.limits.max_reply_bytes = 20_000;
        c.bots[0].tools = vec![streamchat::server::config::ToolConfig {
            name: "current_time".into(),
            approval: streamchat::server::config::Approval::Never,
            idempotent: None,
        }];
    })
    .await;
    let id = app.post("lobby", "Ann", "@gpt go").await.replies[0].id;
    let done = app.wait_finished(id).await;
    assert_eq!(done.status, Status::Done, "{:?}", done.error);
    assert_eq!(done.finish_reason.as_deref(), Some("length"));
    let size = done.body.len() + done.thinking.len() + done.tools.len();
    // Past the cap only the records closing the step's calls are written.
    assert!(size <= 20_000 + 8 * 400, "{size} bytes for a 20,000-byte cap");
    let calls = streamchat::tools::ToolLog::parse(&done.tools).calls().to_vec();
    assert!(!calls.is_empty());
    for call in &calls {
        assert_eq!(call.state, streamchat::tools::ToolState::Failed, "{call:?}");
    }
    assert!(calls.iter().any(|c| c.output.as_deref().is_some_and(|o| o.contains("size limit"))));
    let argument_records = done.tools.lines().filter(|l| l.contains("\"x\":")).count();
    assert!(
        argument_records <= 8 * 3,
        "{argument_records} argument records for 8 calls sent in 240 fragments"
    );
    assert_eq!(app.fake.requests(), 1, "no step after the cap");
}
}
