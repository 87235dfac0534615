//! Bad input gets a clear 4xx error and writes nothing.

use crate::support::{error_text, spawn_app, FakeProvider, Scripted};
use serde_json::Value;

crate::both_backends! {
async fn bad_posts_are_refused_and_write_nothing() {
    let app = spawn_app(FakeProvider::with(Scripted::new(&["x"])).await).await;
    let too_long = "x".repeat(8 * 1024 + 1);
    type Fields<'a> = &'a [(&'a str, &'a str)];
    let cases: [(Fields, u16, &str); 5] = [
        (
            &[("thread", "lobby"), ("author", "Ann"), ("body", "")],
            400,
            "The message is empty.",
        ),
        (
            &[("thread", "lobby"), ("author", "Ann"), ("body", "  \n\t ")],
            400,
            "The message is empty.",
        ),
        (
            &[("thread", "lobby"), ("author", "Ann"), ("body", &too_long)],
            400,
            "The message is too long: 8193 bytes, at most 8192.",
        ),
        (
            &[("thread", "lobby"), ("body", "@gpt hi")],
            400,
            "Please enter your name.",
        ),
        (
            &[("thread", "nope"), ("author", "Ann"), ("body", "@gpt hi")],
            404,
            "There is no thread \"nope\".",
        ),
    ];
    for (fields, status, message) in cases {
        let response = app.post_raw(fields).await;
        assert_eq!(response.status().as_u16(), status, "{fields:?}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(error_text(&body), message);
    }
    let long_name = "n".repeat(41);
    let response = app
        .post_raw(&[("thread", "lobby"), ("author", &long_name), ("body", "hi")])
        .await;
    assert_eq!(response.status().as_u16(), 400);

    assert_eq!(app.message_count().await, 0, "nothing was written");
    assert_eq!(app.fake.requests(), 0, "no reply was started");
}
}

crate::both_backends! {
async fn a_plain_form_post_redirects_back_with_the_error() {
    let app = spawn_app(FakeProvider::with(Scripted::new(&["x"])).await).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = client
        .post(format!("{}/api/send_message", app.url))
        .header("accept", "text/html")
        .header("referer", format!("{}/", app.url))
        .form(&[("thread", "lobby"), ("author", "Ann"), ("body", "")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 302);
    let location = response.headers()["location"].to_str().unwrap();
    assert!(location.contains("__err="), "{location}");
    assert_eq!(app.message_count().await, 0);
}
}
