//! Bots that call tools: the calls are parts of the reply (assembled from
//! the providers' real shapes, stored, streamed, replayed exactly), the
//! loop runs each call and asks the model again until it answers, and a
//! call that needs approval waits for the thread to decide.

use std::time::Duration;

use serde_json::Value;
use streamchat::{
    model::{ChatEvent, Status},
    server::config::{Approval, Config, ToolConfig},
    tools::{ToolCall, ToolLog, ToolState},
};

use crate::support::{
    client_list, poll_until, spawn_app_with, FakeProvider, Scripted, SseClient, TestApp,
};

/// The default bot with these built-in tools.
fn with_tools(tools: &[(&str, Approval)]) -> impl FnOnce(&mut Config) {
    let tools: Vec<ToolConfig> = tools
        .iter()
        .map(|(name, approval)| ToolConfig {
            name: (*name).into(),
            approval: *approval,
            idempotent: None,
        })
        .collect();
    move |config: &mut Config| config.bots[0].tools = tools
}

/// The calls a recording makes, read independently of the app: by
/// `index`, the first non-empty id and name, the argument fragments joined.
fn recorded_calls(bytes: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(bytes).replace("\r\n", "\n");
    let mut calls: Vec<(u64, String, String)> = Vec::new();
    for line in text.lines() {
        let Some(data) = line.strip_prefix("data:") else {
            continue;
        };
        let Ok(chunk) = serde_json::from_str::<Value>(data.trim()) else {
            continue;
        };
        for choice in chunk["choices"].as_array().into_iter().flatten() {
            for delta in choice["delta"]["tool_calls"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let index = delta["index"].as_u64().unwrap_or(0);
                let at = match calls.iter().position(|c| c.0 == index) {
                    Some(at) => at,
                    None => {
                        calls.push((index, String::new(), String::new()));
                        calls.len() - 1
                    }
                };
                let name = delta["function"]["name"].as_str().unwrap_or_default();
                if calls[at].1.is_empty() {
                    calls[at].1 = name.to_owned();
                }
                calls[at].2 += delta["function"]["arguments"].as_str().unwrap_or_default();
            }
        }
    }
    calls.into_iter().map(|(_, n, a)| (n, a)).collect()
}

fn calls_of(app_message: &streamchat::model::Message) -> Vec<ToolCall> {
    ToolLog::parse(&app_message.tools).calls().to_vec()
}

crate::both_backends! {
/// Every recording with tool calls (02, 07, 08, 09, 11) gives tool parts
/// whose names and arguments equal the recording's; the calls (to tools
/// this bot does not have) fail, the model is told so and answers.
async fn recorded_tool_calls_become_tool_parts() {
    let dir = crate::support::provider_fixtures_dir();
    let mut checked = 0;
    for prefix in ["02-", "07-", "08-", "09-", "11-"] {
        let file = std::fs::read_dir(&dir)
            .expect("the provider recordings are required")
            .map(|e| e.unwrap().path())
            .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
            .unwrap_or_else(|| panic!("no recording {prefix}*"));
        let bytes = std::fs::read(&file).unwrap();
        let expected = recorded_calls(&bytes);
        assert!(!expected.is_empty(), "{file:?} has tool calls");
        let raw = bytes.clone();
        let fake = FakeProvider::start(move |n, _| match n {
            0 => Scripted {
                raw: Some(raw.clone()),
                piece_bytes: Some(61),
                ..Scripted::new(&[])
            },
            _ => Scripted::new(&["Answered", " after the call."]),
        })
        .await;
        let app = spawn_app_with(fake, with_tools(&[("current_time", Approval::Never)])).await;
        let reply = app.post("lobby", "Ann", "@gpt go").await.replies.remove(0);
        let stored = app.wait_finished(reply.id).await;
        assert_eq!(stored.status, Status::Done, "{file:?}: {:?}", stored.error);
        let calls = calls_of(&stored);
        let got: Vec<(String, String)> = calls
            .iter()
            .map(|c| (c.name.clone(), c.arguments.clone()))
            .collect();
        assert_eq!(got, expected, "{file:?}: assembled calls");
        assert!(calls.iter().all(|c| c.state == ToolState::Failed && !c.id.is_empty()));
        assert!(stored.body.ends_with("Answered after the call."), "{file:?}");
        // The second request carried the calls and their results.
        let second = &app.fake.request_bodies()[1];
        let messages = second["messages"].as_array().unwrap();
        let asked = messages
            .iter()
            .find(|m| m["tool_calls"].is_array())
            .expect("the assistant's calls are sent back");
        assert_eq!(asked["tool_calls"].as_array().unwrap().len(), expected.len());
        let results: Vec<&Value> = messages.iter().filter(|m| m["role"] == "tool").collect();
        assert_eq!(results.len(), expected.len());
        assert!(results[0]["content"].as_str().unwrap().contains("no tool named"));
        checked += 1;
    }
    assert_eq!(checked, 5);
}
}

crate::both_backends! {
/// call, result, call, answer: the reply ends done with both calls and the
/// answer stored, usage summed over the three model steps, and a viewer
/// that reconnects between every step holds exactly what is stored.
async fn a_two_step_loop_ends_done_and_replays_exactly() {
    let fake = FakeProvider::start(|n, _| {
        let script = match n {
            0 => Scripted::tool_call("current_time", "{}"),
            1 => Scripted::tool_call("recent_messages", r#"{"count": 5}"#),
            _ => Scripted::words(40, Duration::from_millis(5)),
        };
        Scripted {
            usage: Some((10, 3)),
            pause: Duration::from_millis(20),
            ..script
        }
    })
    .await;
    let app = spawn_app_with(
        fake,
        with_tools(&[
            ("current_time", Approval::Never),
            ("recent_messages", Approval::Never),
        ]),
    )
    .await;
    let (_owner, list) = client_list();
    let mut viewer = SseClient::connect(&app.events_url("lobby"), None).await;
    let reply = app.post("lobby", "Ann", "@gpt what now?").await.replies.remove(0);
    let id = reply.id;
    let call_done = |index: usize| {
        move |l: &streamchat::live::MessageList| {
            l.tool_calls(id)
                .and_then(|c| c.get(index).map(|c| c.state == ToolState::Done))
                .unwrap_or(false)
        }
    };
    // Between every step: drop the connection, come back from the last id.
    viewer.follow_until(&list, call_done(0)).await;
    let last = viewer.last_id.clone();
    drop(viewer);
    let mut viewer = SseClient::connect(&app.events_url("lobby"), last.as_deref()).await;
    viewer.follow_until(&list, call_done(1)).await;
    let last = viewer.last_id.clone();
    drop(viewer);
    let mut viewer = SseClient::connect(&app.events_url("lobby"), last.as_deref()).await;
    viewer
        .follow_until(&list, |l| l.status(id) == Some(Status::Done))
        .await;

    let stored = app.wait_finished(id).await;
    assert_eq!(stored.status, Status::Done, "{:?}", stored.error);
    let calls = calls_of(&stored);
    assert_eq!(
        calls.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
        ["current_time", "recent_messages"]
    );
    assert!(calls.iter().all(|c| c.state == ToolState::Done));
    assert!(calls[0].output.as_deref().unwrap().contains("UTC"));
    assert!(calls[1].output.as_deref().unwrap().contains("what now?"));
    assert_eq!(stored.body, Scripted::words(40, Duration::ZERO).text());
    assert_eq!((stored.prompt_tokens, stored.completion_tokens), (Some(30), Some(9)));
    assert!(!stored.usage_estimated);
    // What the viewer holds is what is stored, byte for byte.
    assert_eq!(list.body(id).unwrap(), stored.body);
    assert_eq!(list.tool_calls(id).unwrap(), calls);
    assert_eq!(app.fake.requests(), 3);
    // The last request carried both steps: calls and results in order.
    let last = &app.fake.request_bodies()[2];
    let roles: Vec<&str> = last["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles[roles.len() - 4..], ["assistant", "tool", "assistant", "tool"]);
    assert!(last["tools"].as_array().unwrap().len() == 2);
    // The export has each call, its arguments and its result.
    let export = app.page("/t/lobby/export.md").await;
    assert!(export.contains("**Tool call `current_time`** · done"), "{export}");
    assert!(export.contains("**Tool call `recent_messages`** · done"));
    assert!(export.contains(r#""count": 5"#));
}
}

/// A model that keeps calling tools is stopped by the step limit: the reply
/// ends `failed`, saying so, after that many provider calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_step_limit_ends_a_model_that_never_answers() {
    let fake = FakeProvider::with(Scripted::tool_call("current_time", "{}")).await;
    let app = spawn_app_with(fake, |c| {
        with_tools(&[("current_time", Approval::Never)])(c);
        c.tools.max_steps = 3;
    })
    .await;
    let reply = app
        .post("lobby", "Ann", "@gpt loop")
        .await
        .replies
        .remove(0);
    let stored = app.wait_finished(reply.id).await;
    assert_eq!(stored.status, Status::Failed);
    assert!(stored
        .error
        .as_deref()
        .unwrap()
        .contains("in each of its 3 steps"));
    assert_eq!(app.fake.requests(), 3);
    let calls = calls_of(&stored);
    assert_eq!(calls.len(), 3);
    assert_eq!(
        calls[2].state,
        ToolState::Failed,
        "the last step's call is not run"
    );
    assert!(calls[..2].iter().all(|c| c.state == ToolState::Done));
}

/// A tool's result past the cap is cut (and says so); arguments past theirs
/// fail the call without running it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_and_arguments_are_bounded() {
    let long_query = format!(r#"{{"query": "{}"}}"#, "x".repeat(600));
    let fake = FakeProvider::start(move |n, _| match n {
        0 => Scripted::tool_call("recent_messages", r#"{"count": 50}"#)
            .and_call("search_threads", &long_query),
        _ => Scripted::new(&["ok"]),
    })
    .await;
    let app = spawn_app_with(fake, |c| {
        with_tools(&[
            ("recent_messages", Approval::Never),
            ("search_threads", Approval::Never),
        ])(c);
        c.tools.max_result_bytes = 300;
        c.tools.max_argument_bytes = 256;
    })
    .await;
    for i in 0..5 {
        app.post(
            "lobby",
            "Ann",
            &format!("filler message {i} {}", "y".repeat(200)),
        )
        .await;
    }
    let reply = app
        .post("lobby", "Ann", "@gpt read")
        .await
        .replies
        .remove(0);
    let stored = app.wait_finished(reply.id).await;
    assert_eq!(stored.status, Status::Done, "{:?}", stored.error);
    let calls = calls_of(&stored);
    let out = calls[0].output.as_deref().unwrap();
    assert_eq!(calls[0].state, ToolState::Done);
    assert!(
        out.ends_with("… (cut at 300 bytes)") && out.len() < 340,
        "{out}"
    );
    assert_eq!(calls[1].state, ToolState::Failed);
    assert!(calls[1].arguments.len() <= 256);
    assert!(calls[1]
        .output
        .as_deref()
        .unwrap()
        .contains("longer than 256 bytes"));
}

/// Waits until call 0 of reply `id` waits for approval; returns it.
async fn waiting_call(app: &TestApp, id: i64) -> ToolCall {
    let stored = poll_until(
        Duration::from_secs(20),
        Duration::from_millis(10),
        "the call never waited for approval",
        || app.message(id),
        |m| {
            calls_of(m)
                .first()
                .is_some_and(|c| c.state == ToolState::Waiting)
        },
    )
    .await;
    calls_of(&stored).remove(0)
}

async fn decide(app: &TestApp, id: i64, hash: &str, decision: &str, by: &str) -> reqwest::Response {
    app.call(
        "decide_tool_call",
        &[
            ("thread", "lobby"),
            ("id", &id.to_string()),
            ("call", "0"),
            ("arguments_hash", hash),
            ("decision", decision),
            ("by", by),
        ],
    )
    .await
}

/// Asked a question: calls `search_threads`; given a result: answers.
fn approval_fake() -> impl Fn(usize, &Value) -> Scripted + Send + Sync + 'static {
    |_, request| {
        let answered = request["messages"]
            .as_array()
            .is_some_and(|m| m.iter().any(|m| m["role"] == "tool"));
        if answered {
            Scripted::new(&["Found", " it."])
        } else {
            Scripted::tool_call("search_threads", r#"{"query": "lobby"}"#)
        }
    }
}

crate::both_backends! {
/// A call needing approval waits with its arguments; a decision on other
/// arguments, or by someone who may not decide, is refused and changes
/// nothing; the asker's approval runs it, once.
async fn approval_binds_the_arguments_shown() {
    let app = spawn_app_with(
        FakeProvider::start(approval_fake()).await,
        with_tools(&[("search_threads", Approval::Always)]),
    )
    .await;
    let reply = app.post("lobby", "Ann", "@gpt find it").await.replies.remove(0);
    let call = waiting_call(&app, reply.id).await;
    assert_eq!(call.arguments, r#"{"query": "lobby"}"#);
    let other = streamchat::tools::arguments_hash(r#"{"query": "secrets"}"#);
    let refused = decide(&app, reply.id, &other, "approve", "Ann").await;
    assert_eq!(refused.status(), 409);
    let text = refused.text().await.unwrap();
    assert!(text.contains("not the ones you were shown"), "{text}");
    let stranger = decide(&app, reply.id, &call.arguments_hash(), "approve", "Bob").await;
    assert_eq!(stranger.status(), 403);
    // Still waiting: nothing was decided.
    assert_eq!(waiting_call(&app, reply.id).await.state, ToolState::Waiting);
    let ok = decide(&app, reply.id, &call.arguments_hash(), "approve", "Ann").await;
    assert!(ok.status().is_success(), "{}", ok.status());
    let stored = app.wait_finished(reply.id).await;
    assert_eq!(stored.status, Status::Done, "{:?}", stored.error);
    let call = calls_of(&stored).remove(0);
    assert_eq!(call.state, ToolState::Done);
    assert_eq!(call.decided_by.as_deref(), Some("Ann"));
    assert_eq!(stored.body, "Found it.");
    let again = decide(&app, reply.id, &call.arguments_hash(), "approve", "Ann").await;
    assert_eq!(again.status(), 409);
}
}

/// Denied: the call does not run, the model is told, the reply answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_call_does_not_run_and_the_model_is_told() {
    let app = spawn_app_with(FakeProvider::start(approval_fake()).await, |c| {
        with_tools(&[("search_threads", Approval::Always)])(c);
        c.tools.approver = streamchat::server::config::Approver::Anyone;
    })
    .await;
    let reply = app
        .post("lobby", "Ann", "@gpt find it")
        .await
        .replies
        .remove(0);
    let call = waiting_call(&app, reply.id).await;
    let denied = decide(&app, reply.id, &call.arguments_hash(), "deny", "Bob").await;
    assert!(denied.status().is_success());
    let stored = app.wait_finished(reply.id).await;
    assert_eq!(stored.status, Status::Done);
    let call = calls_of(&stored).remove(0);
    assert_eq!(
        (call.state, call.decided_by.as_deref()),
        (ToolState::Denied, Some("Bob"))
    );
    assert!(call.output.is_some_and(|o| o.contains("Denied by Bob")));
    let told = &app.fake.request_bodies()[1];
    let tool = told["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "tool")
        .unwrap();
    assert!(tool["content"].as_str().unwrap().contains("denied"));
}

/// Stop works while a call waits for approval; no one answering ends the
/// wait after the configured time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_and_the_approval_timeout_end_a_wait() {
    let app = spawn_app_with(FakeProvider::start(approval_fake()).await, |c| {
        with_tools(&[("search_threads", Approval::Always)])(c);
        c.tools.approval_timeout_secs = 1.0;
    })
    .await;
    let stopped = app.post("lobby", "Ann", "@gpt one").await.replies.remove(0);
    waiting_call(&app, stopped.id).await;
    let stop = app
        .call(
            "stop_reply",
            &[
                ("thread", "lobby"),
                ("id", &stopped.id.to_string()),
                ("by", "Ann"),
            ],
        )
        .await;
    assert!(stop.status().is_success());
    let stored = app.wait_finished(stopped.id).await;
    assert_eq!(stored.status, Status::Cancelled);
    let call = calls_of(&stored).remove(0);
    assert_eq!(call.state, ToolState::Failed);
    assert!(call.output.unwrap().contains("Stopped by Ann"));

    let unanswered = app.post("lobby", "Ann", "@gpt two").await.replies.remove(0);
    let stored = app.wait_finished(unanswered.id).await;
    assert_eq!(stored.status, Status::Done, "{:?}", stored.error);
    let call = calls_of(&stored).remove(0);
    assert_eq!(call.state, ToolState::Denied);
    assert!(call
        .output
        .unwrap()
        .contains("No one approved it within 1 s"));
}

/// The tool parts are streamed like text: a viewer's deltas for the tool
/// part carry their own offsets (part 2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_records_stream_as_the_third_part() {
    let fake = FakeProvider::start(|n, _| match n {
        0 => Scripted::tool_call("current_time", "{}"),
        _ => Scripted::new(&["ok"]),
    })
    .await;
    let app = spawn_app_with(fake, with_tools(&[("current_time", Approval::Never)])).await;
    let mut viewer = SseClient::connect(&app.events_url("lobby"), None).await;
    let reply = app
        .post("lobby", "Ann", "@gpt time?")
        .await
        .replies
        .remove(0);
    let mut tool_bytes = 0;
    loop {
        let (_, event) = tokio::time::timeout(Duration::from_secs(20), viewer.next())
            .await
            .unwrap()
            .unwrap();
        match event {
            ChatEvent::Delta {
                id,
                part,
                offset,
                text,
            } if id == reply.id && part == streamchat::model::Part::Tools => {
                assert_eq!(offset, tool_bytes, "tool deltas are contiguous");
                tool_bytes += text.len();
            }
            ChatEvent::Finished { id, tools_len, .. } if id == reply.id => {
                assert_eq!(tools_len, tool_bytes);
                break;
            }
            _ => {}
        }
    }
    let stored = app.wait_finished(reply.id).await;
    assert_eq!(stored.tools.len(), tool_bytes);
}

crate::both_backends! {
/// Replies waiting for approval hold no generation slot: four of them from
/// one client, with four slots in all, leave another client's `@gpt`
/// answered; a fifth wait from that client is refused (the model is told);
/// and the wait does not count against the total time: approved after
/// more than `total_timeout_secs`, the reply ends `done`.
async fn waiting_approvals_hold_no_slot_and_no_time() {
    let fake = FakeProvider::start(|_, request| {
        let plain = crate::support::fake_provider::last_user_message(request).contains("plain");
        let answered = request["messages"]
            .as_array()
            .is_some_and(|m| m.iter().any(|m| m["role"] == "tool"));
        if plain || answered {
            Scripted::new(&["Found", " it."])
        } else {
            Scripted::tool_call("search_threads", r#"{"query": "rust"}"#)
        }
    })
    .await;
    let app = spawn_app_with(fake, |c| {
        with_tools(&[("search_threads", Approval::Always)])(c);
        c.limits.max_concurrent_replies = 4;
        c.limits.replies_per_client = 4;
        c.limits.waiting_replies_per_client = 4;
        c.limits.idle_timeout_secs = 3.0;
        c.limits.total_timeout_secs = 3.0;
        c.limits.watchdog_period_secs = 0.2;
        c.tools.approval_timeout_secs = 60.0;
        c.access.client_ip_header = Some("X-Forwarded-For".into());
    })
    .await;
    let post = |ip: &'static str, body: &'static str| {
        let http = app.http.clone();
        let url = format!("{}/api/send_message", app.url);
        async move {
            http.post(url)
                .header("accept", "application/json")
                .header("x-forwarded-for", ip)
                .form(&[("thread", "lobby"), ("author", "Ann"), ("body", body)])
                .send()
                .await
                .unwrap()
        }
    };
    let started = std::time::Instant::now();
    let mut waiting = Vec::new();
    for _ in 0..4 {
        let posted = post("10.0.0.1", "@gpt search for rust").await;
        assert_eq!(posted.status(), 200);
        let posted: streamchat::model::Posted = posted.json().await.unwrap();
        let id = posted.replies[0].id;
        waiting.push((id, waiting_call(&app, id).await));
    }
    // Another client is answered while all four wait.
    let other = post("10.0.0.2", "@gpt plain question").await;
    assert_eq!(other.status(), 200, "{}", other.text().await.unwrap());
    let other: streamchat::model::Posted = other.json().await.unwrap();
    let answered = app.wait_finished(other.replies[0].id).await;
    assert_eq!((answered.status, answered.body.as_str()), (Status::Done, "Found it."));
    // A fifth wait from the first client is refused; its reply goes on.
    let fifth = post("10.0.0.1", "@gpt search for rust").await;
    assert_eq!(fifth.status(), 200);
    let fifth: streamchat::model::Posted = fifth.json().await.unwrap();
    let fifth = app.wait_finished(fifth.replies[0].id).await;
    assert_eq!(fifth.status, Status::Done, "{:?}", fifth.error);
    let call = calls_of(&fifth).remove(0);
    assert_eq!(call.state, ToolState::Failed);
    assert!(call.output.unwrap().contains("already has 4 replies waiting"));
    // Past the total time while waiting: approved, each still ends done.
    let past_total = std::time::Duration::from_secs(4).saturating_sub(started.elapsed());
    tokio::time::sleep(past_total).await;
    for (id, call) in &waiting {
        let ok = decide(&app, *id, &call.arguments_hash(), "approve", "Ann").await;
        assert!(ok.status().is_success(), "{}", ok.status());
    }
    for (id, _) in &waiting {
        let stored = app.wait_finished(*id).await;
        assert_eq!(
            (stored.status, stored.body.as_str()),
            (Status::Done, "Found it."),
            "{:?}",
            stored.error
        );
        assert_eq!(calls_of(&stored)[0].state, ToolState::Done);
    }
}
}

crate::both_backends! {
/// With accounts, who asked is an account: another member cannot approve
/// (whatever name a form carries), the card tells them whose call it is
/// and offers them no buttons; the asker's page offers them and works.
async fn with_accounts_only_the_asking_account_approves_and_the_card_says_so() {
    let app = crate::support::accounts::accounts_app_with(
        FakeProvider::start(approval_fake()).await,
        with_tools(&[("search_threads", Approval::Always)]),
    )
    .await;
    use crate::support::accounts::{invite_member, set_up, Browser};
    let mut ann = Browser::new(&app.url);
    set_up(&app, &mut ann, "Ann").await;
    let mut bob = invite_member(&app, &mut ann, "Bob").await;
    let sent = ann
        .call("send_message", &[("thread", "lobby"), ("body", "@gpt find it")])
        .await;
    let posted: streamchat::model::Posted = sent.json().await.unwrap();
    let reply = posted.replies[0].id;
    let call = waiting_call(&app, reply).await;

    let says = "Only Ann (who asked) may approve or deny this call.";
    let bobs_page = bob.get("/t/lobby").await.text().await.unwrap();
    assert!(bobs_page.contains(says), "the card says who may decide");
    assert!(!bobs_page.contains(">Approve</button>"), "no buttons for Bob");
    let anns_page = ann.get("/t/lobby").await.text().await.unwrap();
    assert!(anns_page.contains(says) && anns_page.contains(">Approve</button>"));

    let fields = |by: &'static str| {
        vec![
            ("thread", "lobby".to_owned()),
            ("id", reply.to_string()),
            ("call", call.index.to_string()),
            ("arguments_hash", call.arguments_hash()),
            ("decision", "approve".to_owned()),
            ("by", by.to_owned()),
        ]
    };
    let bob_fields = fields("Ann");
    let bob_fields: Vec<(&str, &str)> = bob_fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let refused = bob.call("decide_tool_call", &bob_fields).await;
    assert_eq!(refused.status(), 403, "Bob, even naming Ann, may not decide");
    assert!(refused.text().await.unwrap().contains(says));
    assert_eq!(waiting_call(&app, reply).await.state, ToolState::Waiting);

    let ann_fields = fields("");
    let ann_fields: Vec<(&str, &str)> = ann_fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let approved = ann.call("decide_tool_call", &ann_fields).await;
    assert!(approved.status().is_success(), "{}", approved.status());
    let stored = app.wait_finished(reply).await;
    assert_eq!(stored.status, Status::Done, "{:?}", stored.error);
    assert_eq!(calls_of(&stored)[0].decided_by.as_deref(), Some("Ann"));
}
}
