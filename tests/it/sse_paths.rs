//! A subscription is served the same whether it arrives on a fresh
//! connection (the lean transport in `sse_listener.rs`) or on a kept-alive
//! one after another request (hyper): both go through the one router.

use std::time::Duration;

use crate::support::{client_list, poll_until, spawn_app, FakeProvider, Scripted, SseClient};
use streamchat::model::ChatEvent;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_and_kept_alive_connections_get_the_same_stream() {
    let script = Scripted::words(40, Duration::from_millis(2));
    let app = spawn_app(FakeProvider::with(script.clone()).await).await;

    // Fresh connection: the lean path answers, closing when done.
    let lean = reqwest::Client::new()
        .get(app.events_url("lobby"))
        .send()
        .await
        .unwrap();
    assert_eq!(lean.headers()["connection"], "close");
    // The same client's second request reuses its connection: axum's route.
    let pooled = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .unwrap();
    // Read to the end: only then does the connection go back to the pool,
    // which hyper does on its own task; under load the next request may
    // still find the pool empty and open a fresh connection (the lean
    // path), so ask again until it rides the kept-alive one.
    let routed = poll_until(
        Duration::from_secs(5),
        Duration::from_millis(20),
        "a kept-alive connection is never reused",
        || async {
            let health = pooled
                .get(format!("{}/healthz", app.url))
                .send()
                .await
                .unwrap();
            assert!(health.status().is_success());
            health.text().await.unwrap();
            pooled.get(app.events_url("lobby")).send().await.unwrap()
        },
        |routed| routed.headers().get("transfer-encoding").is_some(),
    )
    .await;
    assert_eq!(routed.headers()["transfer-encoding"], "chunked");
    for response in [&lean, &routed] {
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    }
    // One way to serve a subscription: both answers come from the same
    // router and its layers, so they carry the same headers (only the
    // transport's own differ).
    let names = |response: &reqwest::Response| -> Vec<String> {
        let mut names: Vec<String> = response
            .headers()
            .keys()
            .map(|k| k.as_str().to_owned())
            .filter(|k| {
                !["connection", "transfer-encoding", "date", "content-length"].contains(&k.as_str())
            })
            .collect();
        names.sort();
        names
    };
    assert_eq!(names(&lean), names(&routed));
    // A refusal takes the same way: an unknown thread is the router's 404,
    // with the same message, on a fresh connection as on a kept-alive one.
    let fresh = reqwest::Client::new()
        .get(app.events_url("no-such-thread"))
        .send()
        .await
        .unwrap();
    assert_eq!(fresh.headers()["connection"], "close");
    let kept = pooled
        .get(app.events_url("no-such-thread"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        (fresh.status().as_u16(), kept.status().as_u16()),
        (404, 404)
    );
    assert_eq!(names(&fresh), names(&kept));
    assert_eq!(fresh.text().await.unwrap(), kept.text().await.unwrap());

    let reply = app
        .post("lobby", "Ann", "@gpt both ways")
        .await
        .replies
        .remove(0);
    let mut texts = Vec::new();
    for response in [lean, routed] {
        let mut viewer = SseClient::from_response(response);
        let (_owner, list) = client_list();
        // Skip to the new rows, then follow the reply to its end.
        loop {
            let (rev, event) = viewer.next().await.expect("open");
            let is_reply_row =
                matches!(&event, ChatEvent::Message { message } if message.id == reply.id);
            assert_eq!(list.apply(event, rev), None);
            if is_reply_row {
                break;
            }
        }
        viewer.follow(&list, reply.id).await;
        texts.push(list.body(reply.id).unwrap());
    }
    assert_eq!(texts[0], script.text());
    assert_eq!(texts[1], script.text());
}

crate::both_backends! {
/// A snapshot's page is sized in bytes: ten replies of 60 KB and their
/// questions go out ten rows to a 256 KiB page (not twenty), and a
/// subscriber from the start gets every message, once, in order.
async fn a_snapshot_of_long_messages_is_paged_by_bytes() {
    let piece = "z".repeat(1000);
    let long = Scripted::new(&[piece.as_str(); 60]);
    let app = crate::support::spawn_app(FakeProvider::with(long).await).await;
    let mut ids = Vec::new();
    for i in 0..10 {
        let posted = app.post("lobby", "Ann", &format!("@gpt {i}")).await;
        let reply = app.wait_finished(posted.replies[0].id).await;
        assert_eq!(reply.body.len(), 60_000);
        ids.extend([posted.message.id, reply.id]);
    }
    let page = app
        .state
        .store
        .changed_page("lobby", Some(0), 0, 20, 256 * 1024)
        .await
        .unwrap();
    assert_eq!(page.len(), 10, "the rows before the tenth hold 240 KB, before the eleventh 300 KB");
    let mut viewer = SseClient::connect(&format!("{}?since=0", app.events_url("lobby")), None).await;
    let mut seen = Vec::new();
    while seen.len() < ids.len() {
        let (_, event) = tokio::time::timeout(Duration::from_secs(20), viewer.next())
            .await
            .expect("the snapshot keeps coming")
            .expect("open");
        if let ChatEvent::Message { message } = event {
            seen.push(message.id);
        }
    }
    assert_eq!(seen, ids);
}
}
