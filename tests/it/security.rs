//! Safety at the edge: state-changing server functions refuse other
//! origins; pages carry a nonce-based CSP and the usual headers.

use crate::support::{spawn_app, spawn_app_with, FakeProvider, Scripted};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_origin_posts_are_refused() {
    let app = spawn_app(FakeProvider::with(Scripted::new(&["ok"])).await).await;
    let post = |origin: Option<String>, site: Option<&'static str>| {
        let mut request = app
            .http
            .post(format!("{}/api/send_message", app.url))
            .header("accept", "application/json")
            .form(&[
                ("thread", "lobby"),
                ("author", "Eve"),
                ("body", "from afar"),
            ]);
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        if let Some(site) = site {
            request = request.header("sec-fetch-site", site);
        }
        request.send()
    };
    let refused = post(Some("https://evil.example".into()), None)
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    let refused = post(None, Some("cross-site")).await.unwrap();
    assert_eq!(refused.status(), 403);
    let refused = app
        .http
        .post(format!("{}/api/create_thread", app.url))
        .header("origin", "null")
        .form(&[("title", "sneaky")])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    assert_eq!(app.message_count().await, 0, "nothing was stored");

    let same = post(Some(format!("http://{}", app.addr)), Some("same-origin"))
        .await
        .unwrap();
    assert!(same.status().is_success(), "{}", same.status());
    assert_eq!(app.message_count().await, 1);
}

/// A page on another site can make a visitor's browser post here, but the
/// refusals cost the visitor nothing: the origin is checked before the
/// write budget is taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_posts_spend_nothing_of_the_visitors_budget() {
    let app = spawn_app_with(FakeProvider::with(Scripted::new(&["ok"])).await, |c| {
        c.limits.writes_per_minute = 60;
    })
    .await;
    let app = &app;
    let post = |origin: String| async move {
        let fields = [("thread", "lobby"), ("author", "Ann"), ("body", "hello")];
        app.post_with(&[("origin", origin.as_str())], &fields).await
    };
    for _ in 0..60 {
        let refused = post("https://evil.example".into()).await;
        assert_eq!(refused.status(), 403);
    }
    let own = post(format!("http://{}", app.addr)).await;
    assert_eq!(
        own.status(),
        200,
        "the visitor's own post after 60 forged ones"
    );
    assert_eq!(app.message_count().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_carry_security_headers_and_a_nonce_policy() {
    let app = spawn_app(FakeProvider::with(Scripted::new(&["ok"])).await).await;
    let response = app
        .http
        .get(format!("{}/t/lobby", app.url))
        .send()
        .await
        .unwrap();
    let headers = response.headers().clone();
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["x-frame-options"], "DENY");
    let csp = headers["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("frame-ancestors 'none'") && csp.contains("object-src 'none'"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    let nonce = csp
        .split("'nonce-")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .expect("a nonce in the policy");
    let page = response.text().await.unwrap();
    // Every inline script of the page carries this response's nonce.
    let scripts = page.matches("<script").count();
    let with_nonce = page.matches(&format!("nonce=\"{nonce}\"")).count();
    assert!(scripts > 0);
    assert!(
        with_nonce >= scripts,
        "{scripts} scripts, {with_nonce} with the nonce"
    );

    // A second page gets a fresh nonce.
    let again = app
        .http
        .get(format!("{}/t/lobby", app.url))
        .send()
        .await
        .unwrap();
    assert_ne!(
        again.headers()["content-security-policy"].to_str().unwrap(),
        csp
    );

    // The live stream is served with the same basic headers.
    let events = app.http.get(app.events_url("lobby")).send().await.unwrap();
    assert_eq!(events.headers()["x-content-type-options"], "nosniff");
    assert_eq!(events.headers()["content-type"], "text/event-stream");
}
