//! Load generator and benchmark report (`scripts/bench`).
//!
//! Starts the real release server as a child process on a temporary SQLite
//! file, with a fake OpenAI provider (in this process) that stamps each
//! token with the time it was emitted. Real SSE viewers over loopback read
//! every delta; a token's latency is the time from the provider emitting it
//! to a viewer receiving it. Server CPU and memory come from /proc; commits
//! and tokens from the server's /metrics. Prints one table (S1-S5).

#[allow(dead_code)]
#[path = "../tests/it/support/fake_provider.rs"]
mod fake_provider;
#[allow(dead_code)]
#[path = "../tests/it/support/sse.rs"]
mod sse;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::{Child, Command},
    time::{Duration, Instant},
};

use fake_provider::{stamp_age, FakeProvider, Scripted};
use futures::future::join_all;
use sse::SseClient;
use streamchat::model::{ChatEvent, Posted, Status};

struct Server {
    child: Child,
    url: String,
    startup: Duration,
}

impl Server {
    async fn start(binary: &Path, dir: &Path, fake: &FakeProvider) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let db = dir.join("bench.db");
        let log = std::fs::File::create(std::env::temp_dir().join("streamchat-bench-server.log"))
            .unwrap();
        let started = Instant::now();
        let child = Command::new(binary)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("LEPTOS_SITE_ADDR", format!("127.0.0.1:{port}"))
            .env("LEPTOS_OUTPUT_NAME", "streamchat")
            .env("LEPTOS_SITE_ROOT", "target/site")
            .env("LEPTOS_ENV", "PROD")
            .env("STREAMCHAT_DATABASE", &db)
            .env("OPENAI_BASE_URL", &fake.base_url)
            .env("OPENAI_API_KEY", "sk-bench")
            .env("STREAMCHAT_MAX_CONCURRENT_REPLIES", "100000")
            .env("STREAMCHAT_MENTIONS_PER_MINUTE", "100000")
            .env(
                "RUST_LOG",
                std::env::var("BENCH_SERVER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("the release server binary (scripts/bench builds it)");
        let url = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        loop {
            if let Ok(r) = client.get(format!("{url}/healthz")).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "server did not start"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Self {
            startup: started.elapsed(),
            child,
            url,
        }
    }

    fn proc_status(&self, key: &str) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    }

    fn rss_mb(&self) -> f64 {
        self.proc_status("VmRSS:")
    }

    fn peak_rss_mb(&self) -> f64 {
        self.proc_status("VmHWM:")
    }

    /// User + system CPU seconds used so far.
    fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .collect();
        let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
        ticks / 100.0
    }

    async fn metrics(&self) -> HashMap<String, f64> {
        let text = reqwest::get(format!("{}/metrics", self.url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (k, v) = l.rsplit_once(' ')?;
                Some((k.to_owned(), v.parse().ok()?))
            })
            .collect()
    }

    /// Creates `n` threads through the server; returns their ids.
    async fn create_threads(&self, n: usize) -> Vec<String> {
        let http = reqwest::Client::new();
        let mut ids = Vec::new();
        for i in 0..n {
            let thread: streamchat::model::Thread = http
                .post(format!("{}/api/create_thread", self.url))
                .header("accept", "application/json")
                .form(&[("title", format!("bench {i}"))])
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            ids.push(thread.id);
        }
        ids
    }

    async fn post(
        &self,
        client: &reqwest::Client,
        thread: &str,
        author: &str,
        body: &str,
    ) -> Posted {
        let response = client
            .post(format!("{}/api/send_message", self.url))
            .header("accept", "application/json")
            .form(&[("thread", thread), ("author", author), ("body", body)])
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "post: {}",
            response.status()
        );
        response.json().await.unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one viewer measured.
#[derive(Default)]
struct Seen {
    latencies_us: Vec<u64>,
    tokens: usize,
    bytes: usize,
    /// Each reply's text as rebuilt from offsets.
    texts: HashMap<i64, String>,
}

/// A delta's fields, read without a JSON parser (the measuring side must
/// stay cheap: it shares the machine with the server).
fn quick_delta(data: &str) -> Option<(i64, usize, &str)> {
    let rest = data.strip_prefix(r#"{"t":"d","i":"#)?;
    let (id, rest) = rest.split_once(r#","o":"#)?;
    let (offset, rest) = rest.split_once(r#","x":""#)?;
    let text = rest.strip_suffix(r#""}"#)?;
    (!text.contains('\\')).then_some(())?;
    Some((id.parse().ok()?, offset.parse().ok()?, text))
}

/// Reads a thread's events until `replies` replies finished.
async fn watch(mut client: SseClient, replies: usize) -> Seen {
    let mut seen = Seen::default();
    let mut finished = 0;
    let start_bytes = client.bytes;
    while finished < replies {
        let Ok(Some((_, data))) =
            tokio::time::timeout(Duration::from_secs(120), client.next_raw()).await
        else {
            panic!("a viewer stopped receiving after {finished} of {replies} replies");
        };
        let event = match quick_delta(&data) {
            Some((id, offset, text)) => {
                for stamp in text.split(' ').filter(|s| !s.is_empty()) {
                    if let Some(age) = stamp_age(stamp) {
                        seen.latencies_us.push(age.as_micros() as u64);
                        seen.tokens += 1;
                    }
                }
                let body = seen.texts.entry(id).or_default();
                assert_eq!(body.len(), offset, "a viewer's copy has a gap");
                body.push_str(text);
                continue;
            }
            None => serde_json::from_str::<ChatEvent>(&data).expect("a ChatEvent"),
        };
        match event {
            ChatEvent::Delta { id, offset, text } => {
                let body = seen.texts.entry(id).or_default();
                assert_eq!(body.len(), offset, "a viewer's copy has a gap");
                body.push_str(&text);
            }
            ChatEvent::Message { message } if message.status == Status::Streaming => {
                seen.texts.insert(message.id, message.body);
            }
            ChatEvent::Finished { .. } => finished += 1,
            _ => {}
        }
    }
    seen.bytes = client.bytes - start_bytes;
    seen
}

struct Row {
    name: String,
    figures: Vec<(String, String)>,
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at] as f64 / 1000.0
}

struct Outcome {
    p50: f64,
    p95: f64,
    p99: f64,
    max: f64,
    bytes_per_token: f64,
    delivered: usize,
    tokens_in: f64,
    commits: f64,
    cpu: f64,
    peak_rss: f64,
    /// Mean time inside the server from a token's arrival to its publication.
    server_publish_ms: f64,
    /// RSS once every viewer is connected, before any reply.
    rss_connected: f64,
    wall: Duration,
}

/// `threads` threads, each with `replies` replies and `viewers` viewers;
/// each reply streams `tokens` tokens at `rate` tokens/s.
async fn scenario(
    server: &Server,
    fake: &FakeProvider,
    _tag: &str,
    threads: usize,
    replies: usize,
    viewers: usize,
    tokens: usize,
) -> Outcome {
    let _ = fake;
    let ids = server.create_threads(threads).await;
    let http = reqwest::Client::new();
    let mut clients = Vec::new();
    for id in &ids {
        for _ in 0..viewers {
            clients.push((
                id.clone(),
                SseClient::connect(&format!("{}/api/threads/{id}/events", server.url), None).await,
            ));
        }
    }
    // Each viewer first reads its opening snapshot.
    for (_, c) in clients.iter_mut() {
        let (_, first) = c.next().await.expect("snapshot");
        assert!(matches!(first, ChatEvent::Sync { .. }));
    }
    let rss_connected = server.rss_mb();
    let before = server.metrics().await;
    let cpu_before = server.cpu_seconds();
    let started = Instant::now();
    let watchers: Vec<_> = clients
        .into_iter()
        .map(|(_, c)| tokio::spawn(watch(c, replies)))
        .collect();
    let mut reply_ids = Vec::new();
    let posts = ids
        .iter()
        .flat_map(|id| (0..replies).map(move |r| (id.clone(), r)))
        .map(|(id, r)| {
            let http = http.clone();
            async move {
                server
                    .post(&http, &id, &format!("{id}-a{r}"), "@gpt go")
                    .await
                    .reply
                    .unwrap()
                    .id
            }
        });
    reply_ids.extend(join_all(posts).await);
    let seen: Vec<Seen> = join_all(watchers)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    let wall = started.elapsed();
    let cpu = server.cpu_seconds() - cpu_before;
    let after = server.metrics().await;
    let delta =
        |k: &str| after.get(k).copied().unwrap_or(0.0) - before.get(k).copied().unwrap_or(0.0);

    // Every viewer got every reply whole.
    for id in &reply_ids {
        let stored: streamchat::model::Message = http
            .post(format!("{}/api/get_message", server.url))
            .header("accept", "application/json")
            .form(&[("id", id.to_string())])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(stored.status, Status::Done);
        for s in seen.iter().filter(|s| s.texts.contains_key(id)) {
            assert_eq!(
                s.texts[id], stored.body,
                "a viewer's copy differs from the stored reply"
            );
        }
    }
    let _ = tokens;
    let mut latencies: Vec<u64> = seen
        .iter()
        .flat_map(|s| s.latencies_us.iter().copied())
        .collect();
    latencies.sort_unstable();
    let delivered: usize = seen.iter().map(|s| s.tokens).sum();
    let bytes: usize = seen.iter().map(|s| s.bytes).sum();
    Outcome {
        p50: percentile(&latencies, 0.50),
        p95: percentile(&latencies, 0.95),
        p99: percentile(&latencies, 0.99),
        max: percentile(&latencies, 1.0),
        bytes_per_token: bytes as f64 / delivered.max(1) as f64,
        delivered,
        tokens_in: delta("streamchat_tokens_total"),
        commits: delta("streamchat_commits_total"),
        cpu,
        peak_rss: server.peak_rss_mb(),
        server_publish_ms: 1000.0 * delta("streamchat_token_to_publish_seconds_sum")
            / delta("streamchat_token_to_publish_seconds_count").max(1.0),
        rss_connected,
        wall,
    }
}

fn script(tokens: usize, rate: f64) -> Scripted {
    Scripted {
        stamped: Some(tokens),
        pause: Duration::from_secs_f64(1.0 / rate),
        ..Scripted::new(&[])
    }
}

fn fmt_ms(v: f64) -> String {
    format!("{v:.2} ms")
}

async fn run_fresh(
    binary: &Path,
    rate: f64,
    tokens: usize,
) -> (tempfile::TempDir, FakeProvider, Server) {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeProvider::with(script(tokens, rate)).await;
    let server = Server::start(binary, dir.path(), &fake).await;
    (dir, fake, server)
}

#[tokio::main]
async fn main() {
    let binary = PathBuf::from(
        std::env::var("STREAMCHAT_BIN").expect("STREAMCHAT_BIN: the release server binary"),
    );
    let only: Option<String> = std::env::args().nth(1).filter(|a| a.starts_with('S'));
    let want = |s: &str| only.as_deref().is_none_or(|o| o == s);
    let mut rows: Vec<Row> = Vec::new();
    fake_provider::epoch();

    if want("S1") {
        let (_dir, fake, server) = run_fresh(&binary, 50.0, 200).await;
        let idle = server.rss_mb();
        let o = scenario(&server, &fake, "s1", 1, 1, 1, 200).await;
        rows.push(Row {
            name: "S1 1 reply x 1 viewer, 50 tok/s".into(),
            figures: vec![
                (
                    "latency p50 / p95 / p99 / max".into(),
                    format!(
                        "{} / {} / {} / {}",
                        fmt_ms(o.p50),
                        fmt_ms(o.p95),
                        fmt_ms(o.p99),
                        fmt_ms(o.max)
                    ),
                ),
                (
                    "bytes per token per viewer".into(),
                    format!("{:.1}", o.bytes_per_token),
                ),
                (
                    "commits per token".into(),
                    format!("{:.2}", o.commits / o.tokens_in.max(1.0)),
                ),
                (
                    "start-up to serving / idle RSS".into(),
                    format!(
                        "{:.0} ms / {idle:.1} MB",
                        server.startup.as_secs_f64() * 1000.0
                    ),
                ),
            ],
        });
    }
    if want("S2") {
        let (_dir, fake, server) = run_fresh(&binary, 50.0, 200).await;
        let threads = std::env::var("S2_THREADS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(100);
        let o = scenario(&server, &fake, "s2", threads, 1, 10, 200).await;
        rows.push(Row {
            name: "S2 100 replies x 10 viewers each, 50 tok/s".into(),
            figures: vec![
                (
                    "latency p50 / p95 / p99 / max".into(),
                    format!(
                        "{} / {} / {} / {}",
                        fmt_ms(o.p50),
                        fmt_ms(o.p95),
                        fmt_ms(o.p99),
                        fmt_ms(o.max)
                    ),
                ),
                (
                    "bytes per token per viewer".into(),
                    format!("{:.1}", o.bytes_per_token),
                ),
                (
                    "commits per token".into(),
                    format!("{:.3}", o.commits / o.tokens_in.max(1.0)),
                ),
                (
                    "server CPU per 1,000 delivered tokens".into(),
                    format!("{:.2} ms", o.cpu * 1000.0 / (o.delivered as f64 / 1000.0)),
                ),
                (
                    "server: token arrival to publish, mean".into(),
                    fmt_ms(o.server_publish_ms),
                ),
                (
                    "tokens delivered / wall time / peak RSS".into(),
                    format!(
                        "{} / {:.1} s / {:.1} MB",
                        o.delivered,
                        o.wall.as_secs_f64(),
                        o.peak_rss
                    ),
                ),
            ],
        });
    }
    if want("S3") {
        let mut ceiling = 0.0;
        let mut steps = Vec::new();
        for rate in [5_000.0, 10_000.0, 20_000.0, 40_000.0, 60_000.0, 80_000.0] {
            let replies = (rate / 1000.0) as usize;
            let (_dir, fake, server) = run_fresh(&binary, 1000.0, 2000).await;
            let o = scenario(&server, &fake, "s3", replies, 1, 1, 2000).await;
            let achieved = o.delivered as f64 / o.wall.as_secs_f64();
            steps.push(format!("{:.0}k/s: p99 {:.1} ms", achieved / 1000.0, o.p99));
            if o.p99 > 50.0 {
                break;
            }
            ceiling = achieved;
        }
        rows.push(Row {
            name: "S3 ingest ramp (1,000 tok/s per reply, 1 viewer each)".into(),
            figures: vec![
                (
                    "ceiling (p99 <= 50 ms)".into(),
                    format!("{:.0} tokens/s", ceiling),
                ),
                ("steps".into(), steps.join("; ")),
            ],
        });
    }
    if want("S4") {
        let (_dir, fake, server) = run_fresh(&binary, 50.0, 200).await;
        let before = server.rss_mb();
        let viewers = std::env::var("S4_VIEWERS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(10_000);
        let o = scenario(&server, &fake, "s4", 1, 1, viewers, 200).await;
        rows.push(Row {
            name: format!("S4 {viewers} idle viewers on one thread, then 1 reply"),
            figures: vec![
                (
                    "RSS idle / with viewers connected / peak".into(),
                    format!(
                        "{before:.1} MB / {:.1} MB / {:.1} MB",
                        o.rss_connected, o.peak_rss
                    ),
                ),
                (
                    "latency p50 / p99 / max".into(),
                    format!("{} / {} / {}", fmt_ms(o.p50), fmt_ms(o.p99), fmt_ms(o.max)),
                ),
                (
                    "tokens delivered / wall time / server CPU per 1,000".into(),
                    format!(
                        "{} / {:.1} s / {:.2} ms",
                        o.delivered,
                        o.wall.as_secs_f64(),
                        o.cpu * 1000.0 / (o.delivered as f64 / 1000.0)
                    ),
                ),
            ],
        });
    }
    if want("S5") {
        let (_dir, _fake, server) = run_fresh(&binary, 50.0, 10).await;
        let thread = server.create_threads(1).await.remove(0);
        let http = reqwest::Client::new();
        for i in 0..100 {
            server
                .post(
                    &http,
                    &thread,
                    "bench",
                    &format!("Message number {i}, with a little text to render."),
                )
                .await;
        }
        let mut times = Vec::new();
        for _ in 0..200 {
            let t = Instant::now();
            let html = http
                .get(format!("{}/t/{thread}", server.url))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            times.push(t.elapsed().as_micros() as u64);
            assert!(html.contains("Message number 99"));
        }
        times.sort_unstable();
        let gz = |file: &str| -> u64 {
            let out = Command::new("sh")
                .arg("-c")
                .arg(format!("gzip -9 -c {file} | wc -c"))
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .unwrap_or(0)
        };
        let wasm = gz("target/site/pkg/streamchat.wasm");
        let js = gz("target/site/pkg/streamchat.js");
        rows.push(Row {
            name: "S5 server rendering and bundle".into(),
            figures: vec![
                (
                    "SSR of a 100-message thread, p50 / p99 (loopback round trip)".into(),
                    format!(
                        "{} / {}",
                        fmt_ms(percentile(&times, 0.5)),
                        fmt_ms(percentile(&times, 0.99))
                    ),
                ),
                (
                    "hydrate bundle, gzip -9 (wasm + js)".into(),
                    format!("{:.1} KB ({} + {})", (wasm + js) as f64 / 1024.0, wasm, js),
                ),
            ],
        });
    }

    println!("\n| scenario | figure | value |\n| --- | --- | --- |");
    for row in &rows {
        for (i, (figure, value)) in row.figures.iter().enumerate() {
            let name = if i == 0 { row.name.as_str() } else { "" };
            println!("| {name} | {figure} | {value} |");
        }
    }
}
