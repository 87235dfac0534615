//! A post carries the composer's request id: sent twice (a network blip, a
//! double click, the no-JavaScript form resubmitted), it is stored once and
//! starts one reply, and the repeat answers with the first result.

use crate::support::{spawn_app, FakeProvider, Scripted};
use streamchat::model::Posted;

crate::both_backends! {
async fn the_same_request_id_twice_stores_one_message_and_one_reply() {
    let app = spawn_app(FakeProvider::with(Scripted::new(&["one answer"])).await).await;
    let fields = [
        ("thread", "lobby"),
        ("author", "Ann"),
        ("body", "@gpt once please"),
        ("request_id", "3f1c9a0e-1"),
    ];
    // Both at once (a double click) and once more after (a retry).
    let (first, second) = tokio::join!(app.post_raw(&fields), app.post_raw(&fields));
    let first: Posted = first.json().await.unwrap();
    let second: Posted = second.json().await.unwrap();
    let third: Posted = app.post_raw(&fields).await.json().await.unwrap();
    assert_eq!(first.message.id, second.message.id);
    assert_eq!(first.message.id, third.message.id);
    assert_eq!(first.replies.len(), 1);
    assert_eq!(third.replies[0].id, first.replies[0].id);
    assert!(third.repeated);
    app.wait_finished(first.replies[0].id).await;
    assert_eq!(app.message_count().await, 2, "one message, one reply");
    assert_eq!(app.fake.request_bodies().len(), 1, "one provider request");

    // Another id is another post.
    let other: Posted = app
        .post_raw(&[
            ("thread", "lobby"),
            ("author", "Ann"),
            ("body", "@gpt once please"),
            ("request_id", "3f1c9a0e-2"),
        ])
        .await
        .json()
        .await
        .unwrap();
    assert_ne!(other.message.id, first.message.id);
    assert!(!other.repeated);
}
}

crate::both_backends! {
async fn the_no_javascript_form_posted_twice_stores_once() {
    let app = spawn_app(FakeProvider::with(Scripted::new(&["one answer"])).await).await;
    // The page's form carries a fresh request id.
    let page = app.page("/t/lobby").await;
    let marker = "name=\"request_id\" value=\"";
    let at = page.find(marker).expect("the composer sends a request id") + marker.len();
    let request_id = &page[at..at + page[at..].find('"').unwrap()];
    assert!(request_id.len() >= 16, "{request_id}");

    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for _ in 0..2 {
        let response = no_redirects
            .post(format!("{}/api/send_message", app.url))
            .header("accept", "text/html")
            .header("referer", format!("{}/t/lobby", app.url))
            .form(&[
                ("thread", "lobby"),
                ("request_id", request_id),
                ("author", "Ann"),
                ("body", "@gpt from a form"),
            ])
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_redirection() || response.status().is_success(),
            "{}",
            response.status()
        );
    }
    let stored: Vec<(String, String)> = app
        .state
        .store
        .all_messages("lobby")
        .await
        .unwrap()
        .into_iter()
        .map(|m| (format!("{:?}", m.role), m.body))
        .collect();
    assert_eq!(stored.len(), 2, "{stored:?}");
    assert_eq!(stored[0].1, "@gpt from a form");
}
}
