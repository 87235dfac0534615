//! A reasoning model's thinking: a second stream of the same reply, with
//! its own offsets, through the same log, resume and end rules as the
//! answer; kept out of the model's context; marked in the export.

use std::time::Duration;

use streamchat::model::{ChatEvent, Part, Status};

use crate::support::{client_list, spawn_app, FakeProvider, Scripted, SseClient};

/// Reads events into `list` (the browser's rules: every event must apply
/// cleanly) until `stop` says so or the reply ends. Returns whether it ended.
async fn read_until(
    client: &mut SseClient,
    list: &streamchat::live::MessageList,
    id: i64,
    mut stop: impl FnMut(&ChatEvent) -> bool,
) -> bool {
    loop {
        let (rev, event) = tokio::time::timeout(Duration::from_secs(20), client.next())
            .await
            .expect("events keep coming")
            .expect("the subscription stays open");
        let ended = match &event {
            ChatEvent::Finished { id: done, .. } => *done == id,
            ChatEvent::Message { message } => {
                message.id == id && message.status != Status::Streaming
            }
            _ => false,
        };
        let stopping = stop(&event);
        assert_eq!(list.apply(event, rev), None, "no gap, whole copies");
        if ended {
            return true;
        }
        if stopping {
            return false;
        }
    }
}

crate::both_backends! {
/// 500 thinking deltas then 200 answer deltas: a viewer that reconnects in
/// the middle of each part ends with both exact; a viewer asking for
/// sentences gets both parts regrouped, exact too.
async fn both_parts_exact_across_reconnects() {
    let script = Scripted::reasoning(500, 200, Duration::from_millis(3));
    let app = spawn_app(FakeProvider::with(script.clone()).await).await;
    let url = app.events_url("lobby");
    let mut viewer = SseClient::connect(&url, None).await;
    let mut coarse = SseClient::connect(&format!("{url}?granularity=sentence"), None).await;
    let (_owner, list) = client_list();
    let (_owner2, coarse_list) = client_list();
    let reply = app.post("lobby", "Ann", "@gpt think first").await.replies.remove(0);

    // Mid-thinking: drop the connection, resume from the last id.
    let ended = read_until(&mut viewer, &list, reply.id, |_| {
        list.thinking(reply.id).is_some_and(|t| t.len() > script.thinking_text().len() / 4)
    })
    .await;
    assert!(!ended, "the reply was still thinking");
    assert_eq!(list.body(reply.id).as_deref(), Some(""), "no answer yet");
    let last = viewer.last_id.clone();
    drop(viewer);
    let mut viewer = SseClient::connect(&url, last.as_deref()).await;

    // Mid-answer: again.
    let mut answer_deltas = 0;
    let ended = read_until(&mut viewer, &list, reply.id, |event| {
        if let ChatEvent::Delta { part: Part::Answer, .. } = event {
            answer_deltas += 1;
        }
        answer_deltas >= 20
    })
    .await;
    if !ended {
        assert_eq!(list.thinking(reply.id).unwrap(), script.thinking_text(), "thinking whole before the answer");
        assert!(
            list.stats(reply.id).unwrap().thinking_ms.is_some(),
            "how long it thought is known once the answer starts"
        );
        let row = app.message(reply.id).await;
        assert!(row.status == Status::Streaming && row.thinking_ms.is_some());
        let last = viewer.last_id.clone();
        drop(viewer);
        let mut viewer = SseClient::connect(&url, last.as_deref()).await;
        assert!(read_until(&mut viewer, &list, reply.id, |_| false).await);
    }
    assert!(read_until(&mut coarse, &coarse_list, reply.id, |_| false).await);

    let stored = app.wait_finished(reply.id).await;
    assert_eq!(stored.status, Status::Done);
    assert_eq!(stored.thinking, script.thinking_text());
    assert_eq!(stored.body, script.text());
    assert_eq!(stored.reasoning_tokens, Some(500));
    assert_eq!(stored.completion_tokens, Some(700));
    assert!(stored.thinking_ms.is_some(), "how long it thought is recorded");
    for list in [&list, &coarse_list] {
        assert_eq!(list.thinking(reply.id).unwrap(), stored.thinking);
        assert_eq!(list.body(reply.id).unwrap(), stored.body);
    }
    if app.pg.is_none() {
        assert_eq!(app.log_rows(reply.id).await, 0, "the log was folded into the row");
    }
}
}

/// A sentence viewer's deltas are regrouped per part: fewer answer deltas
/// than the provider sent (its words carry no sentence end), and no delta
/// mixes the parts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentence_view_regroups_both_parts() {
    let script = Scripted::reasoning(60, 200, Duration::from_millis(2));
    let app = spawn_app(FakeProvider::with(script.clone()).await).await;
    let mut coarse = SseClient::connect(
        &format!("{}?granularity=sentence", app.events_url("lobby")),
        None,
    )
    .await;
    let (_owner, list) = client_list();
    let reply = app
        .post("lobby", "Ann", "@gpt think")
        .await
        .replies
        .remove(0);
    let (mut thinking, mut answer) = (Vec::new(), Vec::new());
    read_until(&mut coarse, &list, reply.id, |event| {
        if let ChatEvent::Delta { part, text, .. } = event {
            match part {
                Part::Thinking => thinking.push(text.clone()),
                Part::Answer => answer.push(text.clone()),
                Part::Tools => panic!("no tool calls here"),
            }
        }
        false
    })
    .await;
    assert_eq!(thinking.concat(), script.thinking_text());
    assert_eq!(answer.concat(), script.text());
    assert!(answer.len() < 200, "{} answer deltas", answer.len());
    assert!(
        thinking.iter().all(|t| t.ends_with(". ")),
        "thinking goes out in whole sentences: {thinking:?}"
    );
}

crate::both_backends! {
/// The thinking is not sent back to the model; the export has it, marked;
/// the page shows it folded with how long it took.
async fn thinking_stays_out_of_the_context_and_is_exported() {
    let script = Scripted::reasoning(5, 5, Duration::from_millis(1));
    let app = spawn_app(FakeProvider::with(script.clone()).await).await;
    let first = app.post("lobby", "Ann", "@gpt one").await.replies.remove(0);
    let first = app.wait_finished(first.id).await;
    assert_eq!(first.thinking, script.thinking_text());
    let second = app.post("lobby", "Ann", "@gpt two").await.replies.remove(0);
    app.wait_finished(second.id).await;

    let prompt = app.fake.request_bodies()[1].to_string();
    assert!(prompt.contains(script.text().trim_end()), "the answer is context: {prompt}");
    assert!(!prompt.contains("t3."), "the thinking is not: {prompt}");

    let export = app.page("/t/lobby/export.md").await;
    assert!(export.contains("> **Thinking"), "{export}");
    assert!(export.contains("> t0. t1. t2. t3. t4."), "{export}");
    assert!(export.contains(script.text().trim_end()), "{export}");

    let page = app.page("/t/lobby").await;
    assert!(page.contains("<details class=\"thinking\">"), "folded once done");
    assert!(page.contains("Thought for"), "how long it thought");
}
}
