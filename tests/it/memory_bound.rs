//! The server as a real process: 300 subscriptions from `since=0` on a
//! thread of 5,000 messages of 1 KB (a 5 MB snapshot each), none of which
//! ever reads (4 KB receive buffers), and 50 exports of it read by no one,
//! grow the server's resident memory by less than 100 MB: a snapshot and
//! an export go out a page at a time as the socket takes them, so a client
//! that does not read holds one page.

use std::{process::Command, time::Duration};

use tokio::io::AsyncWriteExt;

use crate::support::{poll_until, FakeProvider, Scripted, ROOMY_LIMITS};

fn rss_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

/// A connection that sends `request` and never reads, with a receive
/// buffer of 4 KB.
async fn non_reader(addr: std::net::SocketAddr, request: &str) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut tcp = socket.connect(addr).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    tcp
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_non_reading_subscriptions_hold_little_memory() {
    let fake = FakeProvider::with(Scripted::new(&["ok"])).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("big.db");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_streamchat"))
        .current_dir(dir.path())
        .env("LEPTOS_OUTPUT_NAME", "streamchat")
        // The tests of typed names; tests/it/accounts.rs tries accounts.
        .env("STREAMCHAT_ACCESS_MODE", "open")
        .env("LEPTOS_SITE_ROOT", dir.path().join("site"))
        .env("LEPTOS_SITE_ADDR", addr.to_string())
        .env("STREAMCHAT_DATABASE", &db)
        .env("OPENAI_BASE_URL", &fake.base_url)
        .env("OPENAI_API_KEY", "sk-test-key")
        .env("RUST_LOG", "warn")
        .envs(ROOMY_LIMITS)
        .spawn()
        .expect("server starts");
    let url = format!("http://{addr}");
    poll_until(
        Duration::from_secs(30),
        Duration::from_millis(50),
        "the server comes up",
        || async {
            reqwest::get(format!("{url}/healthz"))
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        },
        |status| *status == 200,
    )
    .await;

    // 5,000 messages of 1 KB in the lobby, written beside the running server.
    crate::support::load::seed_lobby(&db, 5000, 1000).await;

    let pid = child.id();
    // Warm up the paths once (a subscription read to its end, an export).
    let whole = reqwest::get(format!("{url}/t/lobby/export.md"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(whole.len() > 5_000_000, "the export is the whole thread");
    let before = rss_of(pid);

    let mut held = Vec::new();
    for _ in 0..300 {
        held.push(
            non_reader(
                addr,
                "GET /api/threads/lobby/events?since=0 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
            )
            .await,
        );
    }
    for _ in 0..50 {
        held.push(
            non_reader(
                addr,
                "GET /t/lobby/export.md HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
            )
            .await,
        );
    }
    // All 300 are being served (counted as viewers), each stuck on a full
    // socket; the peak over the next seconds is the bound's test.
    poll_until(
        Duration::from_secs(60),
        Duration::from_millis(100),
        "300 viewers",
        || async {
            reqwest::get(format!("{url}/metrics"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        },
        |metrics: &String| {
            metrics
                .lines()
                .any(|l| l.starts_with("streamchat_viewers ") && l.ends_with(" 300"))
        },
    )
    .await;
    let mut peak = before;
    // Sampled for 3 s (a measurement, not a wait for a condition).
    for _ in 0..30 {
        peak = peak.max(rss_of(pid));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let grew = peak.saturating_sub(before);
    println!(
        "RSS before {} MB, peak with 300 non-reading subscriptions and 50 exports {} MB (+{} MB)",
        before >> 20,
        peak >> 20,
        grew >> 20
    );
    assert!(grew < 100 << 20, "RSS grew {} MB", grew >> 20);
    // The server still answers everyone else.
    let health = reqwest::get(format!("{url}/healthz")).await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
    drop(held);
    let _ = child.kill();
    let _ = child.wait();
}
