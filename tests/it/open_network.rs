//! Safe on an open network: what a stranger's cheap requests can make the
//! server hold or do is bounded, each bound tried from outside. Floods of
//! state-changing requests, bot mentions and generating replies get 429
//! past their budget and change nothing; hosts the app does not serve get
//! 421; identity mode refuses every route without the proxy's header, or
//! with one from outside the proxy list; a half-sent or idle connection is
//! closed within the header timeout; connections and subscriptions per
//! client are capped; and 300 subscriptions that never read a 5 MB thread
//! hold little memory.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use serde_json::Value;
use streamchat::server::config::BotConfig;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::support::{
    error_text, fake_provider::Ending, poll_until, spawn_app_with, FakeProvider, Scripted, TestApp,
};

/// Sends `request` on a new connection and reads until the server closes
/// it (at most `within`): what came back, and how long until it closed
/// (`None`: still open at `within`).
async fn exchange(addr: SocketAddr, request: &str, within: Duration) -> (String, Option<Duration>) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at((started + within).into(), tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                return (
                    String::from_utf8_lossy(&got).into(),
                    Some(started.elapsed()),
                )
            }
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&got).into(), None),
        }
    }
}

/// A form post of a server function from the client at `ip` (the
/// trusted proxy's `X-Forwarded-For` says so).
async fn call_from(
    app: &TestApp,
    ip: &str,
    function: &str,
    fields: &[(&str, &str)],
) -> reqwest::Response {
    app.http
        .post(format!("{}/api/{function}", app.url))
        .header("accept", "application/json")
        .header("x-forwarded-for", ip)
        .form(fields)
        .send()
        .await
        .unwrap()
}

/// Sends `n` calls from one client with a budget of 30 a minute, checks
/// that the first 30 pass and the rest are refused (but for what the
/// budget refilled meanwhile: one every 2 s), and returns how many passed.
/// Every refusal carries `Retry-After` and a message naming the limit.
async fn flood(
    app: &TestApp,
    ip: &str,
    n: usize,
    call: impl Fn(usize) -> (&'static str, Vec<(&'static str, String)>),
) -> usize {
    let started = Instant::now();
    let (mut accepted, mut refused) = (0, 0);
    for i in 0..n {
        let (function, fields) = call(i);
        let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let response = call_from(app, ip, function, &fields).await;
        if response.status().as_u16() == 429 {
            let retry: u64 = response.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!((1..=60).contains(&retry), "Retry-After {retry}");
            let body: Value = response.json().await.unwrap();
            assert!(error_text(&body).contains("Nothing was changed"), "{body}");
            refused += 1;
        } else {
            assert!(
                response.status().is_success()
                    || response.status().is_redirection()
                    || response.status().as_u16() == 409,
                "{function}: {}",
                response.status()
            );
            accepted += 1;
        }
    }
    let refilled = (started.elapsed().as_secs_f64() / 2.0).ceil() as usize;
    assert!(
        accepted >= 30 && accepted <= 30 + refilled && refused > 0,
        "{accepted} accepted, {refused} refused of {n} in {:?}",
        started.elapsed()
    );
    accepted
}

crate::both_backends! {
async fn floods_of_changes_get_429_after_the_budget_and_change_nothing() {
    let app = spawn_app_with(FakeProvider::with(Scripted::new(&["ok"])).await, |c| {
        c.limits.writes_per_minute = 30;
        c.access.client_ip_header = Some("X-Forwarded-For".into());
    })
    .await;
    let big = "x".repeat(8 * 1024 - 16);
    let posts = flood(&app, "10.0.0.1", 60, |i| {
        ("send_message", vec![("thread", "lobby".into()), ("author", "Flood".into()), ("body", format!("{i} {big}"))])
    })
    .await;
    assert_eq!(
        app.message_count().await,
        posts as i64,
        "refused posts stored nothing"
    );

    let threads_before = app.state.store.list_threads(1000).await.unwrap().len();
    let created = flood(&app, "10.0.0.2", 45, |i| ("create_thread", vec![("title", format!("t{i}"))])).await;
    assert_eq!(app.state.store.list_threads(1000).await.unwrap().len(), threads_before + created);

    flood(&app, "10.0.0.3", 40, |i| ("rename_thread", vec![("thread", "lobby".into()), ("title", format!("name {i}"))])).await;
    flood(&app, "10.0.0.4", 40, |_| ("set_granularity", vec![("thread", "lobby".into()), ("granularity", "word".into())])).await;
    flood(&app, "10.0.0.5", 35, |_| ("stop_reply", vec![("thread", "lobby".into()), ("id", "1".into())])).await;
    // Another client keeps its own budget.
    let other = call_from(&app, "10.0.0.9", "send_message", &[("thread", "lobby"), ("author", "Ann"), ("body", "hi")]).await;
    assert!(other.status().is_success());
}
}

crate::both_backends! {
async fn a_post_mentioning_three_bots_counts_three() {
    let app = spawn_app_with(FakeProvider::with(Scripted::new(&["ok"])).await, |c| {
        c.limits.mentions_per_minute = 4;
        for handle in ["critic", "thinker"] {
            let mut bot = c.bots[0].clone();
            bot.handle = handle.into();
            c.bots.push(BotConfig { ..bot });
        }
    })
    .await;
    let three = app.post("lobby", "Ann", "@gpt @critic @thinker what now?").await;
    assert_eq!(three.replies.len(), 3);
    let before = app.message_count().await;
    let refused = app.post_raw(&[("thread", "lobby"), ("author", "Ann"), ("body", "@gpt @critic again")]).await;
    assert_eq!(refused.status().as_u16(), 429, "3 + 2 is past 4");
    assert!(refused.headers().contains_key("retry-after"));
    assert_eq!(app.message_count().await, before, "nothing stored");
    assert_eq!(app.post("lobby", "Ann", "@gpt once").await.replies.len(), 1);
    let refused = app.post_raw(&[("thread", "lobby"), ("author", "Ann"), ("body", "@gpt more")]).await;
    assert_eq!(refused.status().as_u16(), 429);
    let body: Value = refused.json().await.unwrap();
    assert!(error_text(&body).contains("4 bot replies in the last minute"), "{body}");
}
}

crate::both_backends! {
async fn one_client_cannot_hold_every_generating_slot() {
    let stall = Scripted::new(&["thinking "]).ending(Ending::Stall);
    let app = spawn_app_with(FakeProvider::with(stall).await, |c| {
        c.limits.replies_per_client = 2;
        c.access.client_ip_header = Some("X-Forwarded-For".into());
    })
    .await;
    let ask = |ip: &'static str| call_from(&app, ip, "send_message", &[("thread", "lobby"), ("author", "A"), ("body", "@gpt go")]);
    assert!(ask("10.0.0.1").await.status().is_success());
    assert!(ask("10.0.0.1").await.status().is_success());
    let before = app.message_count().await;
    let refused = ask("10.0.0.1").await;
    assert_eq!(refused.status().as_u16(), 429);
    let body: Value = refused.json().await.unwrap();
    assert!(error_text(&body).contains("You already have 2 replies being written"), "{body}");
    assert_eq!(app.message_count().await, before);
    assert!(ask("10.0.0.2").await.status().is_success(), "others still may");
}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_the_app_does_not_serve_are_refused_before_anything_runs() {
    let app = spawn_app_with(FakeProvider::with(Scripted::new(&["ok"])).await, |_| {}).await;
    let port = app.addr.port();
    let body = "thread=lobby&author=Eve&body=%40gpt%20spend";
    let rebound = format!(
        "POST /api/send_message HTTP/1.1\r\nHost: evil.test:{port}\r\nOrigin: http://evil.test:{port}\r\n\
         Accept: application/json\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let (answer, _) = exchange(app.addr, &rebound, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 421"), "{answer}");
    assert_eq!(app.message_count().await, 0, "nothing was posted");
    assert_eq!(app.fake.requests(), 0, "no provider call");
    for path in [
        "/",
        "/t/lobby",
        "/api/threads/lobby/events",
        "/t/lobby/export.md",
    ] {
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: evil.test\r\nConnection: close\r\n\r\n");
        let (answer, _) = exchange(app.addr, &request, Duration::from_secs(10)).await;
        assert!(answer.starts_with("HTTP/1.1 421"), "{path}: {answer}");
    }
    let ok =
        format!("GET /healthz HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: close\r\n\r\n");
    let (answer, _) = exchange(app.addr, &ok, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

crate::both_backends! {
async fn identity_mode_refuses_every_route_without_the_proxys_header() {
    let app = spawn_app_with(FakeProvider::with(Scripted::new(&["ok"])).await, |c| {
        c.access.identity_header = Some("X-Forwarded-User".into());
    })
    .await;
    let port = app.addr.port();
    // Every route, on a fresh connection (the lean subscription path too).
    for path in ["/", "/t/lobby", "/t/lobby/export.md", "/api/search?q=hello", "/api/threads/lobby/events", "/api/threads/events"] {
        let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
        let (answer, _) = exchange(app.addr, &request, Duration::from_secs(10)).await;
        assert!(answer.starts_with("HTTP/1.1 401"), "{path}: {answer}");
    }
    for (function, fields) in [
        ("send_message", vec![("thread", "lobby"), ("author", "Mallory"), ("body", "hi")]),
        ("create_thread", vec![("title", "mine")]),
        ("rename_thread", vec![("thread", "lobby"), ("title", "mine")]),
        ("set_granularity", vec![("thread", "lobby"), ("granularity", "word")]),
        ("list_messages", vec![("thread", "lobby")]),
    ] {
        let response = app.call(function, &fields).await;
        assert_eq!(response.status().as_u16(), 401, "{function}");
    }
    // The operator's paths answer without it.
    for path in ["/healthz", "/metrics"] {
        let response = app.http.get(format!("{}{path}", app.url)).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 200, "{path}");
    }
    // A kept-alive connection's next request (served by the router, not
    // the lean path) is refused the same.
    let events = app.http.get(app.events_url("lobby")).send().await.unwrap();
    assert_eq!(events.status().as_u16(), 401);
    assert_eq!(app.message_count().await, 0);

    // With the header from the proxy (this machine), an e-mail address
    // longer than a typed name posts.
    let email = format!("{}@example.com", "long.name".repeat(7));
    let posted = app
        .http
        .post(format!("{}/api/send_message", app.url))
        .header("accept", "application/json")
        .header("x-forwarded-user", &email)
        .form(&[("thread", "lobby"), ("author", "x"), ("body", "hello")])
        .send()
        .await
        .unwrap();
    assert!(posted.status().is_success(), "{}", posted.status());
    let posted: streamchat::model::Posted = posted.json().await.unwrap();
    assert_eq!(posted.message.author, email);
}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_from_outside_the_proxy_list_is_refused() {
    let app = spawn_app_with(FakeProvider::with(Scripted::new(&["ok"])).await, |c| {
        c.access.identity_header = Some("X-Forwarded-User".into());
        c.access.trusted_proxies = vec!["10.9.9.9/32".into()];
    })
    .await;
    let response = app
        .http
        .post(format!("{}/api/send_message", app.url))
        .header("accept", "application/json")
        .header("x-forwarded-user", "admin@example.com")
        .form(&[("thread", "lobby"), ("author", "x"), ("body", "claimed")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    let page = app
        .http
        .get(format!("{}/t/lobby", app.url))
        .header("x-forwarded-user", "admin@example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status().as_u16(), 401);
    assert_eq!(app.message_count().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_and_idle_connections_are_closed_within_the_header_timeout() {
    let app = spawn_app_with(FakeProvider::with(Scripted::new(&["ok"])).await, |c| {
        c.limits.header_timeout_secs = 1.0;
    })
    .await;
    let within = Duration::from_secs(6);
    let cases = [
        (
            "half a page request",
            "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n".to_owned(),
        ),
        (
            "half a subscription",
            "GET /api/threads/lobby/events HTTP/1.1\r\nHost: 127".to_owned(),
        ),
        ("nothing at all", String::new()),
    ];
    for (what, request) in cases {
        let (answer, closed) = exchange(app.addr, &request, within).await;
        let closed = closed.unwrap_or_else(|| panic!("{what}: still open after {within:?}"));
        assert!(!answer.contains("200 OK"), "{what}: answered {answer}");
        assert!(
            closed < Duration::from_secs(4),
            "{what}: closed after {closed:?}"
        );
    }
    // A kept-alive connection left idle after its answer is closed too.
    let (answer, closed) = exchange(
        app.addr,
        "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        within,
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        closed.is_some_and(|c| c < Duration::from_secs(4)),
        "idle keep-alive: {closed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_and_subscriptions_per_client_are_capped() {
    let app = spawn_app_with(FakeProvider::with(Scripted::new(&["ok"])).await, |c| {
        c.limits.connections_per_client = 4;
        c.limits.subscriptions_per_client = 2;
        // This machine is a trusted proxy by default, whose connections
        // carry many clients and are not counted; here it is a client.
        c.access.trusted_proxies = Vec::new();
    })
    .await;
    // The harness's own first request (a subscription) has ended (read in
    // the process: a request would take one of the four connections).
    no_viewers(&app, "no viewers yet").await;
    // Subscriptions first: two live, the third refused with a reason.
    let subscribe = || async {
        let mut tcp = TcpStream::connect(app.addr).await.unwrap();
        tcp.write_all(b"GET /api/threads/lobby/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .await
            .unwrap();
        let mut head = vec![0u8; 512];
        let n = tcp.read(&mut head).await.unwrap();
        (tcp, String::from_utf8_lossy(&head[..n]).into_owned())
    };
    let (first, head) = subscribe().await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let (second, head) = subscribe().await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // The refusal, read to the end (the connection closes after it).
    let (head, _) = exchange(
        app.addr,
        "GET /api/threads/lobby/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 429"), "{head}");
    assert!(head.contains("retry-after"), "{head}");
    assert!(head.contains("2 at once is the limit"), "{head}");
    drop((first, second));
    // Their connections' places are free once the server has seen them go
    // (it notices a closed socket on its own time).
    no_viewers(&app, "the subscriptions closed").await;

    // Connections: four held, the fifth refused; one closed frees a place.
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(app.addr).await.unwrap());
    }
    let (answer, closed) = exchange(app.addr, "", Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    assert!(answer.contains("4 at once is the limit"), "{answer}");
    assert!(closed.is_some());
    held.pop();
    poll_until(
        Duration::from_secs(10),
        Duration::from_millis(20),
        "a closed connection frees its place",
        || async {
            exchange(
                app.addr,
                "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
                Duration::from_secs(5),
            )
            .await
            .0
        },
        |answer: &String| answer.starts_with("HTTP/1.1 200"),
    )
    .await;
}

/// Waits until the server has no live subscription left.
async fn no_viewers(app: &TestApp, what: &str) {
    poll_until(
        Duration::from_secs(10),
        Duration::from_millis(20),
        what,
        || async { viewers(app) },
        |n| *n == 0,
    )
    .await;
}

/// The open live subscriptions (the server's own gauge, read in process).
fn viewers(app: &TestApp) -> i64 {
    app.state.metrics.viewers.get()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_that_takes_nothing_is_dropped_after_the_write_timeout() {
    let fake = FakeProvider::start(|_, _| {
        // ~6 MB of text: far more than socket buffers hold for a viewer.
        let padding = "x".repeat(400);
        Scripted {
            deltas: (0..15_000).map(|i| format!("{i}-{padding} ")).collect(),
            pause: Duration::from_micros(200),
            ..Scripted::new(&[])
        }
    })
    .await;
    let app = spawn_app_with(fake, |c| {
        c.limits.write_timeout_secs = 1.0;
        c.limits.max_reply_bytes = 64 << 20;
    })
    .await;
    let tiny = || async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(2048).unwrap();
        socket.connect(app.addr).await.unwrap()
    };
    // One on the lean path (a fresh connection's first request), one served
    // by the HTTP server (the second request of a kept-alive connection).
    let mut lean = tiny().await;
    lean.write_all(b"GET /api/threads/lobby/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut routed = tiny().await;
    routed
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 1024];
    let n = routed.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    routed
        .write_all(b"GET /api/threads/lobby/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    poll_until(
        Duration::from_secs(10),
        Duration::from_millis(20),
        "both viewers counted",
        || async { viewers(&app) },
        |n| *n == 2,
    )
    .await;

    let reply = app
        .post("lobby", "Ann", "@gpt long")
        .await
        .replies
        .remove(0);
    // Neither reads: both are dropped once their sockets stay full for 1 s,
    // while the reply goes on being written.
    poll_until(
        Duration::from_secs(60),
        Duration::from_millis(50),
        "stuck viewers dropped",
        || async { viewers(&app) },
        |n| *n == 0,
    )
    .await;
    let done = poll_until(
        Duration::from_secs(120),
        Duration::from_millis(50),
        "the reply ends",
        || app.message(reply.id),
        |m| m.status != streamchat::model::Status::Streaming,
    )
    .await;
    assert_eq!(done.status, streamchat::model::Status::Done);
    drop((lean, routed));
}

/// A plain post's fields.
const HI: &[(&str, &str)] = &[("thread", "lobby"), ("author", "A"), ("body", "hi")];

/// A proxy that adds its own `X-Forwarded-For` line instead of merging
/// leaves the client's own line first: the key is the last line's last
/// address, the one the trusted proxy wrote, so a client cannot pick it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_forwarded_header_is_read_by_the_proxys_own_line() {
    let app = spawn_app_with(FakeProvider::with(Scripted::new(&["ok"])).await, |c| {
        c.limits.writes_per_minute = 60;
        c.access.client_ip_header = Some("X-Forwarded-For".into());
    })
    .await;
    let started = Instant::now();
    let (mut accepted, mut refused) = (0, 0);
    for i in 0..70 {
        let first = format!("10.9.0.{i}");
        let lines = [
            ("x-forwarded-for", first.as_str()),
            ("x-forwarded-for", "10.0.0.77"),
        ];
        let response = app.post_with(&lines, HI).await;
        match response.status().as_u16() {
            200 => accepted += 1,
            429 => refused += 1,
            other => panic!("unexpected {other}"),
        }
    }
    let refilled = started.elapsed().as_secs() as usize + 1;
    assert!(
        (60..=60 + refilled).contains(&accepted) && refused > 0,
        "{accepted} accepted, {refused} refused: one client, whatever its first line says"
    );
    assert_eq!(app.message_count().await, accepted as i64);
}

/// `Forwarded` (RFC 7239) is understood: its last element's `for=`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_forwarded_header_keys_clients_by_its_last_for() {
    let app = spawn_app_with(FakeProvider::with(Scripted::new(&["ok"])).await, |c| {
        c.limits.writes_per_minute = 2;
        c.access.client_ip_header = Some("Forwarded".into());
    })
    .await;
    let app = &app;
    let post = |forwarded: String| async move {
        app.post_with(&[("forwarded", forwarded.as_str())], HI)
            .await
    };
    for i in 0..2 {
        let ok = post(format!(
            "for=10.9.0.{i}, for=\"[2001:db8::1]:4711\";proto=https"
        ))
        .await;
        assert_eq!(ok.status(), 200);
    }
    let refused = post("for=10.9.0.9, for=\"[2001:db8::2]\"".into()).await;
    assert_eq!(refused.status(), 429, "the same /64, whatever came first");
    let other = post("for=192.0.2.60;proto=http".into()).await;
    assert_eq!(other.status(), 200, "another client has its own budget");
}

/// The identity header is set by the proxy once; a request carrying it
/// twice (one line the client's) is refused and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_identity_header_is_refused() {
    let app = spawn_app_with(FakeProvider::with(Scripted::new(&["ok"])).await, |c| {
        c.access.identity_header = Some("X-Forwarded-User".into());
    })
    .await;
    let twice = [
        ("x-forwarded-user", "admin@example.com"),
        ("x-forwarded-user", "ann@example.com"),
    ];
    let response = app.post_with(&twice, HI).await;
    assert_eq!(response.status().as_u16(), 400);
    let body: Value = response.json().await.unwrap();
    assert!(error_text(&body).contains("more than once"), "{body}");
    assert_eq!(app.message_count().await, 0);
}
