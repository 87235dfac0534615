//! Private threads with built-in accounts, tried from outside: a thread is
//! answered to a non-member exactly as an unknown id is, by every route
//! (page, both event streams, export, search, every server function, the
//! members page, a bot's tools); its owner adds and removes members; a
//! removed member's open stream closes.

use std::time::Duration;

use reqwest::StatusCode;
use streamchat::model::{Status, Thread};
use streamchat::server::config::{Approval, ToolConfig};
use streamchat::tools::ToolLog;

use crate::support::{accounts::*, FakeProvider, Scripted, TestApp};

/// Ann (admin, the owner), Bob and Mallory (members of the app), and a
/// private thread of Ann's holding a secret, asked about once.
struct Scene {
    app: TestApp,
    ann: Browser,
    bob: Browser,
    mallory: Browser,
    thread: Thread,
}

async fn scene(configure: impl FnOnce(&mut streamchat::server::config::Config)) -> Scene {
    scene_on(accounts_app(configure).await).await
}

async fn scene_on(app: TestApp) -> Scene {
    let mut ann = Browser::new(&app.url);
    set_up(&app, &mut ann, "Ann").await;
    let bob = invite_member(&app, &mut ann, "Bob").await;
    let mallory = invite_member(&app, &mut ann, "Mallory").await;
    let made = ann
        .call("create_thread", &[("title", "Plans"), ("private", "true")])
        .await;
    assert!(made.status().is_success(), "{}", made.status());
    let thread: Thread = made.json().await.unwrap();
    assert!(!thread.listed);
    assert_eq!(thread.owner.as_deref(), Some("Ann"));
    let sent = ann
        .call(
            "send_message",
            &[
                ("thread", &thread.id),
                ("body", "the password is zebra @gpt"),
            ],
        )
        .await;
    assert!(sent.status().is_success(), "{}", sent.status());
    let posted: streamchat::model::Posted = sent.json().await.unwrap();
    app.wait_finished(posted.replies[0].id).await;
    Scene {
        app,
        ann,
        bob,
        mallory,
        thread,
    }
}

/// What `who` gets from every route naming `thread`: status and body per
/// route, the id replaced by `ID` (so a private thread's answers can be
/// compared with an unknown id's).
async fn every_route(
    who: &mut Browser,
    thread: &str,
    message: i64,
) -> Vec<(String, StatusCode, String)> {
    let message = message.to_string();
    let mut answers = Vec::new();
    for path in [
        format!("/t/{thread}"),
        format!("/t/{thread}/export.md"),
        format!("/t/{thread}/members"),
        format!("/api/search?q=zebra&thread={thread}"),
    ] {
        let response = who.get(&path).await;
        answers.push((path, response.status(), response.text().await.unwrap()));
    }
    let events = who
        .get_events(&format!("/api/threads/{thread}/events"))
        .await;
    answers.push((
        "events".into(),
        events.status(),
        events.text().await.unwrap(),
    ));
    let calls: [(&str, Vec<(&str, &str)>); 12] = [
        ("list_messages", vec![]),
        ("older_messages", vec![("before", &message)]),
        ("get_message", vec![("id", &message)]),
        ("send_message", vec![("body", "hello")]),
        ("stop_reply", vec![("id", &message)]),
        ("regenerate_reply", vec![("id", &message)]),
        ("continue_reply", vec![("id", &message)]),
        ("usage_totals", vec![]),
        ("set_granularity", vec![("granularity", "word")]),
        ("rename_thread", vec![("title", "Mine now")]),
        (
            "decide_tool_call",
            vec![
                ("id", &message),
                ("call", "0"),
                ("arguments_hash", "x"),
                ("decision", "approve"),
            ],
        ),
        ("search", vec![("q", "zebra")]),
    ];
    for (function, mut fields) in calls {
        fields.push(("thread", thread));
        let response = if function == "search" {
            who.get_json(&format!("/api/search?q=zebra&thread={thread}"))
                .await
        } else {
            who.call(function, &fields).await
        };
        answers.push((
            function.into(),
            response.status(),
            response.text().await.unwrap(),
        ));
    }
    for answer in &mut answers {
        answer.0 = answer.0.replace(thread, "ID");
        answer.2 = without_nonces(&answer.2.replace(thread, "ID"));
    }
    answers
}

/// A page with its per-response CSP nonces taken out (`nonce` and the
/// `crossorigin` Leptos writes them into).
fn without_nonces(page: &str) -> String {
    let mut text = page.to_owned();
    for attribute in ["nonce=\"", "crossorigin=\""] {
        let mut out = String::new();
        let mut rest = text.as_str();
        while let Some(at) = rest.find(attribute) {
            out.push_str(&rest[..at]);
            rest = &rest[at + attribute.len()..];
            rest = rest.find('"').map_or("", |end| &rest[end + 1..]);
        }
        out.push_str(rest);
        text = out;
    }
    text
}

crate::both_backends! {
async fn a_private_thread_is_an_unknown_id_to_a_non_member_everywhere() {
    let Scene { app, mut ann, mut mallory, thread, .. } = scene(|c| c.search.enabled = true).await;
    let message = app.message_ids(&thread.id).await[0];
    let private = every_route(&mut mallory, &thread.id, message).await;
    let unknown = every_route(&mut mallory, "0123456789abcdef", message).await;
    assert_eq!(private.len(), 17);
    for (seen, missing) in private.iter().zip(&unknown) {
        assert_eq!(seen.1, StatusCode::NOT_FOUND, "{}: {}", seen.0, seen.2);
        assert_eq!(seen, missing, "a private thread answers {} as an unknown id does", seen.0);
    }
    // Nor does her home page list it.
    let home = mallory.get("/").await.text().await.unwrap();
    assert!(!home.contains("Plans"), "{home}");
    // Search over every listed thread does not find it either.
    let everywhere = mallory.get_json("/api/search?q=zebra").await.text().await.unwrap();
    assert!(!everywhere.contains("zebra") && !everywhere.contains(&thread.id), "{everywhere}");
    // Nothing Mallory sent changed the thread.
    let page = ann.get(&format!("/t/{}", thread.id)).await;
    assert_eq!(page.status(), StatusCode::OK);
    let page = page.text().await.unwrap();
    assert!(page.contains("Plans") && !page.contains("Mine now") && !page.contains(">hello<"));

    // Once a member, the same routes answer.
    let added = ann
        .form(&format!("/t/{}/members", thread.id), &[("action", "add"), ("name", "mallory")])
        .await;
    assert_eq!(added.status(), StatusCode::SEE_OTHER);
    let members = ann.get(&format!("/t/{}/members", thread.id)).await.text().await.unwrap();
    assert!(members.contains("<li>Mallory"), "stored as the account spells it: {members}");
    assert_eq!(mallory.get(&format!("/t/{}", thread.id)).await.status(), StatusCode::OK);
    let home = mallory.get("/").await.text().await.unwrap();
    assert!(home.contains("Your private threads") && home.contains("Plans"), "{home}");
    assert_eq!(mallory.get(&format!("/t/{}/export.md", thread.id)).await.status(), StatusCode::OK);
    let found = mallory.get_json(&format!("/api/search?q=zebra&thread={}", thread.id)).await;
    assert_eq!(found.status(), StatusCode::OK);
    assert!(found.text().await.unwrap().contains("zebra"));
    mallory.subscribe(&format!("/api/threads/{}/events", thread.id)).await;
}
}

crate::both_backends! {
async fn a_removed_members_stream_closes_within_2_s_and_they_are_refused() {
    let Scene { app: _app, mut ann, bob, thread, .. } = scene(|_| {}).await;
    let members = format!("/t/{}/members", thread.id);
    assert_eq!(ann.form(&members, &[("action", "add"), ("name", "Bob")]).await.status(), StatusCode::SEE_OTHER);
    let mut stream = bob.subscribe(&format!("/api/threads/{}/events", thread.id)).await;
    let mut lobby = bob.subscribe("/api/threads/lobby/events").await;
    assert!(closed_within(&mut stream, Duration::from_millis(1200)).await.is_none(), "open while a member");

    assert_eq!(ann.form(&members, &[("action", "remove"), ("name", "Bob")]).await.status(), StatusCode::SEE_OTHER);
    let closed = closed_within(&mut stream, Duration::from_secs(2)).await;
    println!("a removed member's stream closed after {closed:?}");
    assert!(closed.is_some(), "the removed member's stream closes within 2 s");
    assert!(closed_within(&mut lobby, Duration::from_millis(700)).await.is_none(), "other streams stay open");
    let again = bob.call("list_messages", &[("thread", &thread.id)]).await;
    assert_eq!(again.status(), StatusCode::NOT_FOUND);
}
}

crate::both_backends! {
async fn only_the_owner_adds_and_removes_members_within_the_cap() {
    let Scene { app: _app, mut ann, mut bob, thread, .. } = scene(|c| c.access.members_per_thread = 2).await;
    let members = format!("/t/{}/members", thread.id);
    let add = |name: &'static str| [("action", "add"), ("name", name)];
    // An unknown account, then a real one.
    assert_eq!(ann.form(&members, &add("Zed")).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(ann.form(&members, &add("Bob")).await.status(), StatusCode::SEE_OTHER);
    assert_eq!(ann.form(&members, &add("Bob")).await.status(), StatusCode::CONFLICT);
    // Full at two (the owner counts).
    let full = ann.form(&members, &add("Mallory")).await;
    assert_eq!(full.status(), StatusCode::CONFLICT);
    assert!(full.text().await.unwrap().contains("most members (2)"));
    // A member who is not the owner changes nothing, and the page says who may.
    let page = bob.get(&members).await.text().await.unwrap();
    assert!(page.contains("Only Ann adds and removes members") && !page.contains("Remove</button>"));
    assert_eq!(bob.form(&members, &[("action", "remove"), ("name", "Ann")]).await.status(), StatusCode::FORBIDDEN);
    assert_eq!(bob.form(&members, &add("Mallory")).await.status(), StatusCode::FORBIDDEN);
    // The owner stays.
    assert_eq!(ann.form(&members, &[("action", "remove"), ("name", "Ann")]).await.status(), StatusCode::CONFLICT);
    // A listed thread has no members page.
    assert_eq!(ann.get("/t/lobby/members").await.status(), StatusCode::NOT_FOUND);
}
}

crate::both_backends! {
async fn a_bots_tools_do_not_reach_a_private_thread() {
    let fake = FakeProvider::start(|n, _| match n {
        // The secret's own reply (scene), then Mallory's question: a
        // search, then an answer.
        0 => Scripted::new(&["Noted."]),
        1 => Scripted::tool_call("search_threads", r#"{"query": "zebra"}"#),
        _ => Scripted::new(&["Nothing found."]),
    })
    .await;
    let app = accounts_app_with(fake, |c| {
        c.search.enabled = true;
        c.bots[0].tools = vec![ToolConfig {
            name: "search_threads".into(),
            approval: Approval::Never,
            idempotent: None,
        }];
    })
    .await;
    let Scene { app, mallory, .. } = scene_on(app).await;
    let sent = mallory
        .call("send_message", &[("thread", "lobby"), ("body", "@gpt what is the password?")])
        .await;
    assert!(sent.status().is_success());
    let posted: streamchat::model::Posted = sent.json().await.unwrap();
    let reply = app.wait_finished(posted.replies[0].id).await;
    assert_eq!(reply.status, Status::Done, "{:?}", reply.error);
    let log = ToolLog::parse(&reply.tools);
    let call = &log.calls()[0];
    assert_eq!(call.name, "search_threads");
    let output = call.output.clone().unwrap_or_default();
    assert!(!output.contains("zebra") && !output.contains("Plans"), "{output}");
}
}

/// A request through the proxy as `user`.
async fn as_user(
    app: &TestApp,
    user: &str,
    path: &str,
    fields: &[(&str, &str)],
) -> reqwest::Response {
    app.http
        .post(format!("{}{path}", app.url))
        .header("x-forwarded-user", user)
        .header("accept", "application/json")
        .form(fields)
        .send()
        .await
        .unwrap()
}

/// Behind an authenticating proxy, its identity is who is a member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_proxy_its_identity_is_the_member() {
    let fake = FakeProvider::with(Scripted::words(3, Duration::ZERO)).await;
    let app = crate::support::spawn_app_with(fake, |c| {
        c.access.identity_header = Some("X-Forwarded-User".into());
    })
    .await;
    let made = as_user(
        &app,
        "ann",
        "/api/create_thread",
        &[("title", "Ours"), ("private", "true")],
    )
    .await;
    assert!(made.status().is_success(), "{}", made.status());
    let thread: Thread = made.json().await.unwrap();
    assert_eq!(thread.owner.as_deref(), Some("ann"));
    let read = [("thread", thread.id.as_str())];
    assert_eq!(
        as_user(&app, "ann", "/api/list_messages", &read)
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        as_user(&app, "bob", "/api/list_messages", &read)
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    let members = format!("/t/{}/members", thread.id);
    let added = as_user(&app, "ann", &members, &[("action", "add"), ("name", "bob")]).await;
    // (Followed to the members page, which now lists bob.)
    assert_eq!(added.status(), StatusCode::OK);
    assert!(added.text().await.unwrap().contains("<li>bob"));
    assert_eq!(
        as_user(&app, "bob", "/api/list_messages", &read)
            .await
            .status(),
        StatusCode::OK
    );
}
