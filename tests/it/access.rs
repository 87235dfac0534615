//! One access model: a listed thread is on the home page for everyone; an
//! unlisted one is reached only through its URL. Every call naming a
//! message names its thread too and is refused, revealing nothing, when the
//! two do not match. Behind an authenticating proxy, the proxy's identity is
//! the author.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::support::{
    error_text, spawn_app, spawn_app_with, FakeProvider, Scripted, SseClient, TestApp,
};
use streamchat::model::{ChatEvent, Message, Thread, ThreadSummary};

async fn create(app: &TestApp, title: &str, unlisted: bool) -> Thread {
    let mut fields = vec![("title", title)];
    if unlisted {
        fields.push(("unlisted", "true"));
    }
    let response = app.call("create_thread", &fields).await;
    assert!(response.status().is_success(), "{}", response.status());
    response.json().await.unwrap()
}

async fn list(app: &TestApp) -> Vec<ThreadSummary> {
    app.call("list_threads", &[]).await.json().await.unwrap()
}

/// Calls `function` on message `id` naming `thread` (or none): status and body.
async fn call_on(
    app: &TestApp,
    function: &str,
    thread: Option<&str>,
    id: i64,
) -> (StatusCode, String) {
    let id = id.to_string();
    let mut fields = vec![("id", id.as_str()), ("by", "Mallory")];
    if let Some(thread) = thread {
        fields.push(("thread", thread));
    }
    let response = app.call(function, &fields).await;
    (response.status(), response.text().await.unwrap())
}

crate::both_backends! {
async fn a_message_is_only_reached_through_its_own_thread() {
    let slow = Scripted::words(400, Duration::from_millis(20));
    let app = spawn_app(FakeProvider::with(slow).await).await;
    let a = create(&app, "A", false).await;
    let b = create(&app, "B", true).await;
    let secret = "the launch code is 1234";
    let posted = app.post(&b.id, "Ann", &format!("{secret} @gpt")).await;
    let reply = posted.replies[0].clone();
    app.wait_for_text(reply.id).await;

    // The unknown-message answer, for comparison: same status, same words.
    let (missing_status, missing_text) = call_on(&app, "get_message", Some(&a.id), 999_999).await;
    assert_eq!(missing_status, StatusCode::NOT_FOUND);
    for function in [
        "get_message",
        "stop_reply",
        "regenerate_reply",
        "continue_reply",
    ] {
        for id in [posted.message.id, reply.id] {
            let (status, text) = call_on(&app, function, Some(&a.id), id).await;
            assert_eq!(
                status,
                StatusCode::NOT_FOUND,
                "{function}({id}) named with thread A"
            );
            assert_eq!(
                text,
                missing_text.replace("999999", &id.to_string()),
                "{function}: refused like an unknown id"
            );
            assert!(
                !text.contains(&b.id) && !text.contains(secret),
                "{function} leaks: {text}"
            );
            let (status, text) = call_on(&app, function, None, id).await;
            assert!(
                status.is_client_error(),
                "{function}({id}) without a thread: {status}"
            );
            assert!(
                !text.contains(&b.id) && !text.contains(secret),
                "{function} leaks: {text}"
            );
        }
    }
    // Nothing changed: the reply still streams, nothing was regenerated.
    let held = app.message(reply.id).await;
    assert_eq!(held.status, streamchat::model::Status::Streaming);
    assert_eq!(app.message_count().await, 2);

    // Through its own thread, it is there and Stop works.
    let response = app
        .call(
            "get_message",
            &[("thread", b.id.as_str()), ("id", &reply.id.to_string())],
        )
        .await;
    let got: Message = response.json().await.unwrap();
    assert_eq!(got.id, reply.id);
    let (status, _) = call_on(&app, "stop_reply", Some(&b.id), reply.id).await;
    assert!(status.is_success(), "{status}");
    assert_eq!(
        app.wait_finished(reply.id).await.status,
        streamchat::model::Status::Cancelled
    );
}
}

crate::both_backends! {
async fn an_unlisted_thread_is_in_no_list_and_read_through_its_url() {
    let app = spawn_app(FakeProvider::with(Scripted::new(&["ok"])).await).await;
    let mut list_viewer =
        SseClient::connect(&format!("{}/api/threads/events", app.url), None).await;
    let hidden = create(&app, "Hidden plans", true).await;
    assert!(!hidden.listed);
    app.post(&hidden.id, "Ann", "psst").await;
    app.call(
        "rename_thread",
        &[("thread", hidden.id.as_str()), ("title", "Still hidden")],
    )
    .await;
    let shown = create(&app, "Open plans", false).await;
    assert!(shown.listed);

    // The live list announces the listed thread and never the unlisted one.
    loop {
        let (_, event) = tokio::time::timeout(Duration::from_secs(10), list_viewer.next())
            .await
            .expect("the listed thread is announced")
            .expect("open");
        if let ChatEvent::Thread { thread } = event {
            assert_ne!(
                thread.id, hidden.id,
                "an unlisted thread in a live list event"
            );
            if thread.id == shown.id {
                break;
            }
        }
    }
    let listed = list(&app).await;
    assert!(listed.iter().any(|t| t.id == shown.id));
    assert!(listed.iter().all(|t| t.id != hidden.id));
    let home = app.page("/").await;
    assert!(
        home.contains("Open plans") && !home.contains("Still hidden") && !home.contains(&hidden.id)
    );

    // Its URL opens it.
    let page = app
        .http
        .get(format!("{}/t/{}", app.url, hidden.id))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let page = page.text().await.unwrap();
    assert!(page.contains("Still hidden") && page.contains("psst"));
    let export = app
        .http
        .get(format!("{}/t/{}/export.md", app.url, hidden.id))
        .send()
        .await
        .unwrap();
    assert!(export.text().await.unwrap().contains("psst"));
}
}

crate::both_backends! {
async fn behind_a_proxy_its_identity_is_the_author() {
    let app = spawn_app_with(FakeProvider::with(Scripted::new(&["ok"])).await, |c| {
        c.access.identity_header = Some("X-Forwarded-User".into());
    })
    .await;
    let send = |user: Option<&'static str>, by: &'static str| {
        let mut request = app
            .http
            .post(format!("{}/api/send_message", app.url))
            .header("accept", "application/json")
            .form(&[("thread", "lobby"), ("author", by), ("body", "hello")]);
        if let Some(user) = user {
            request = request.header("X-Forwarded-User", user);
        }
        request.send()
    };
    let response = send(Some("ann@example.com"), "Mallory").await.unwrap();
    assert!(response.status().is_success());
    let posted: streamchat::model::Posted = response.json().await.unwrap();
    assert_eq!(posted.message.author, "ann@example.com");
    assert_eq!(
        app.message(posted.message.id).await.author,
        "ann@example.com"
    );

    let refused = send(None, "Mallory").await.unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let body: Value = refused.json().await.unwrap();
    assert!(error_text(&body).contains("Sign in"));
    assert_eq!(
        app.message_count().await,
        1,
        "a refused post stores nothing"
    );
}
}
