//! The load generator's machinery, shared by `benches/load.rs` (the
//! benchmark report) and the smoke tests in the normal suite: the release
//! (or test) server as a child process, viewers that time every stamped
//! token, and scenarios that check every viewer got every reply whole.
#![allow(dead_code)]

use std::{
    collections::HashMap,
    path::Path,
    process::{Child, Command},
    time::{Duration, Instant},
};

use futures::future::join_all;
use streamchat::model::{ChatEvent, Posted, Status};

use super::{
    fake_provider::{stamp_age, FakeProvider, Scripted},
    sse::SseClient,
};

/// Per-client limits no test of something else reaches (every test client
/// is 127.0.0.1, one client to the app). Tests of a limit set their own.
pub const ROOMY_LIMITS: [(&str, &str); 4] = [
    ("STREAMCHAT_REPLIES_PER_CLIENT", "100000"),
    ("STREAMCHAT_WRITES_PER_MINUTE", "100000"),
    ("STREAMCHAT_CONNECTIONS_PER_CLIENT", "100000"),
    ("STREAMCHAT_SUBSCRIPTIONS_PER_CLIENT", "100000"),
];

/// The live events of `thread` on the server at `url`.
pub fn events_url(url: &str, thread: &str) -> String {
    format!("{url}/api/threads/{thread}/events")
}

/// Writes `count` user messages of about `bytes` bytes into the lobby of
/// the SQLite file `db`, beside a running server (a big thread to read).
pub async fn seed_lobby(db: &Path, count: i64, bytes: usize) {
    use sqlx::{ConnectOptions, Connection};
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(db)
        .connect()
        .await
        .unwrap();
    let mut tx = conn.begin().await.unwrap();
    let body = "y".repeat(bytes);
    for i in 0..count {
        sqlx::query(
            "INSERT INTO messages (thread_id, author, role, body, status, created_at, updated_at, rev) \
             VALUES ('lobby', 'seed', 'user', ?, 'done', 0, 0, ?)",
        )
        .bind(format!("{i} {body}"))
        .bind(i + 1)
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
}

pub struct Server {
    pub child: Child,
    pub url: String,
    pub startup: Duration,
}

impl Server {
    pub async fn start(binary: &Path, dir: &Path, fake: &FakeProvider) -> Self {
        Self::start_with(binary, dir, fake, &[]).await
    }

    /// [`Server::start`] with more environment (e.g. `DATABASE_URL`).
    pub async fn start_with(
        binary: &Path,
        dir: &Path,
        fake: &FakeProvider,
        env: &[(&str, String)],
    ) -> Self {
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
            // The tests of typed names; tests/it/accounts.rs tries accounts.
            .env("STREAMCHAT_ACCESS_MODE", "open")
            .env("LEPTOS_SITE_ROOT", "target/site")
            .env("LEPTOS_ENV", "PROD")
            .env("STREAMCHAT_DATABASE", &db)
            .env("OPENAI_BASE_URL", &fake.base_url)
            .env("OPENAI_API_KEY", "sk-bench")
            .env("STREAMCHAT_MAX_CONCURRENT_REPLIES", "100000")
            .env("STREAMCHAT_MENTIONS_PER_MINUTE", "100000")
            .envs(ROOMY_LIMITS)
            .env(
                "RUST_LOG",
                std::env::var("BENCH_SERVER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
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

    pub fn proc_status(&self, key: &str) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    }

    pub fn rss_mb(&self) -> f64 {
        self.proc_status("VmRSS:")
    }

    pub fn peak_rss_mb(&self) -> f64 {
        self.proc_status("VmHWM:")
    }

    /// User + system CPU seconds used so far (in 10 ms ticks).
    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds_of(&self.child.id().to_string())
    }

    /// Each of the server's threads' run time now, in ns
    /// (`/proc/<pid>/task/*/schedstat`, the scheduler's own count: a
    /// scenario's CPU in 10 ms ticks was off by up to a tenth in S1).
    pub fn cpu_by_thread(&self) -> HashMap<String, u64> {
        let mut threads = HashMap::new();
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", self.child.id())) else {
            return threads;
        };
        for task in tasks.flatten() {
            let ns = std::fs::read_to_string(task.path().join("schedstat"))
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok());
            if let Some(ns) = ns {
                threads.insert(task.file_name().to_string_lossy().into_owned(), ns);
            }
        }
        threads
    }

    /// CPU seconds the server's threads used since `before`: each thread's
    /// growth, a thread started since counted whole (one that ended in
    /// between is not counted: its time before would be subtracted).
    pub fn cpu_seconds_since(&self, before: &HashMap<String, u64>) -> f64 {
        let ns: u64 = self
            .cpu_by_thread()
            .iter()
            .map(|(tid, now)| now.saturating_sub(before.get(tid).copied().unwrap_or(0)))
            .sum();
        ns as f64 / 1e9
    }

    pub async fn metrics(&self) -> HashMap<String, f64> {
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

    /// Calls server function `name` with form fields, as a hydrated
    /// client does, and reads its JSON answer.
    pub async fn call<T: serde::de::DeserializeOwned>(
        &self,
        client: &reqwest::Client,
        name: &str,
        fields: &[(&str, &str)],
    ) -> T {
        let response = client
            .post(format!("{}/api/{name}", self.url))
            .header("accept", "application/json")
            .form(fields)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{name}: {}",
            response.status()
        );
        response.json().await.unwrap()
    }

    /// Creates `n` threads through the server; returns their ids.
    pub async fn create_threads(&self, n: usize) -> Vec<String> {
        let http = reqwest::Client::new();
        let mut ids = Vec::new();
        for i in 0..n {
            let title = format!("bench {i}");
            let thread: streamchat::model::Thread = self
                .call(&http, "create_thread", &[("title", &title)])
                .await;
            ids.push(thread.id);
        }
        ids
    }

    pub async fn post(
        &self,
        client: &reqwest::Client,
        thread: &str,
        author: &str,
        body: &str,
    ) -> Posted {
        let fields = [("thread", thread), ("author", author), ("body", body)];
        self.call(client, "send_message", &fields).await
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
pub struct Seen {
    pub latencies_us: Vec<u64>,
    pub tokens: usize,
    pub bytes: usize,
    /// Each reply's text as rebuilt from offsets.
    pub texts: HashMap<i64, String>,
}

/// A delta's fields, read without a JSON parser (the measuring side must
/// stay cheap: it shares the machine with the server).
pub fn quick_delta(data: &str) -> Option<(i64, usize, &str)> {
    let rest = data.strip_prefix(r#"{"t":"d","i":"#)?;
    let (id, rest) = rest.split_once(r#","o":"#)?;
    let (offset, rest) = rest.split_once(r#","x":""#)?;
    let text = rest.strip_suffix(r#""}"#)?;
    (!text.contains('\\')).then_some(())?;
    Some((id.parse().ok()?, offset.parse().ok()?, text))
}

/// Reads a thread's events until `replies` replies finished.
pub async fn watch(mut client: SseClient, replies: usize) -> Seen {
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
            ChatEvent::Delta {
                id, offset, text, ..
            } => {
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

pub fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at] as f64 / 1000.0
}

pub struct Outcome {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
    pub bytes_per_token: f64,
    pub delivered: usize,
    pub tokens_in: f64,
    pub commits: f64,
    pub cpu: f64,
    pub peak_rss: f64,
    /// CPU seconds the load generator itself used (it shares the machine).
    pub generator_cpu: f64,
    /// Mean time inside the server from a token's arrival to its publication.
    pub server_publish_ms: f64,
    /// RSS once every viewer is connected, before any reply.
    pub rss_connected: f64,
    pub wall: Duration,
}

/// `threads` threads, each with `replies` replies and `viewers` viewers;
/// each reply streams `tokens` tokens at `rate` tokens/s.
pub async fn scenario(
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
                SseClient::connect(&events_url(&server.url, id), None).await,
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
    let cpu_before = server.cpu_by_thread();
    let own_cpu_before = own_cpu_seconds();
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
                let reply = server
                    .post(&http, &id, &format!("{id}-a{r}"), "@gpt go")
                    .await
                    .replies
                    .remove(0)
                    .id;
                (id, reply)
            }
        });
    reply_ids.extend(join_all(posts).await);
    let seen: Vec<Seen> = join_all(watchers)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    let wall = started.elapsed();
    let cpu = server.cpu_seconds_since(&cpu_before);
    let generator_cpu = own_cpu_seconds() - own_cpu_before;
    let after = server.metrics().await;
    let delta =
        |k: &str| after.get(k).copied().unwrap_or(0.0) - before.get(k).copied().unwrap_or(0.0);

    // Every viewer got every reply whole.
    for (thread, id) in &reply_ids {
        let id_field = id.to_string();
        let stored: streamchat::model::Message = server
            .call(
                &http,
                "get_message",
                &[("thread", thread), ("id", &id_field)],
            )
            .await;
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
        generator_cpu,
        server_publish_ms: 1000.0 * delta("streamchat_token_to_publish_seconds_sum")
            / delta("streamchat_token_to_publish_seconds_count").max(1.0),
        rss_connected,
        wall,
    }
}

pub fn script(tokens: usize, rate: f64) -> Scripted {
    Scripted {
        stamped: Some(tokens),
        pause: Duration::from_secs_f64(1.0 / rate),
        ..Scripted::new(&[])
    }
}

pub async fn run_fresh(
    binary: &Path,
    rate: f64,
    tokens: usize,
) -> (tempfile::TempDir, FakeProvider, Server) {
    run_fresh_with(binary, rate, tokens, &[]).await
}

/// [`run_fresh`] with more environment for the server.
pub async fn run_fresh_with(
    binary: &Path,
    rate: f64,
    tokens: usize,
    env: &[(&str, String)],
) -> (tempfile::TempDir, FakeProvider, Server) {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeProvider::with(script(tokens, rate)).await;
    let server = Server::start_with(binary, dir.path(), &fake, env).await;
    server.settle().await;
    (dir, fake, server)
}

/// User + system CPU seconds of this process (the load generator).
pub fn own_cpu_seconds() -> f64 {
    cpu_seconds_of("self")
}

/// User + system CPU seconds of process `pid` (or `self`), from /proc
/// (clock ticks of 1/100 s).
fn cpu_seconds_of(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    (fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap()) / 100.0
}

impl Server {
    /// Waits until the server's start-up work is over (it loads its
    /// tokenizer on a blocking thread, about a second of CPU), so that no
    /// scenario's CPU figure counts it: until its CPU time stays the same
    /// for half a second (at most 30 s).
    pub async fn settle(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut last = self.cpu_seconds();
        while std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let now = self.cpu_seconds();
            if now == last {
                return;
            }
            last = now;
        }
    }

    /// Bytes the server has caused to be written to storage
    /// (`write_bytes` of `/proc/<pid>/io`: page-cache pages it dirtied).
    pub fn write_bytes(&self) -> f64 {
        std::fs::read_to_string(format!("/proc/{}/io", self.child.id()))
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("write_bytes:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    }
}

/// The server's counters at one moment.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// Tokens the server has received from the provider.
    pub tokens: f64,
    pub commits: f64,
    pub write_bytes: f64,
    pub cpu: f64,
}

impl Sample {
    pub async fn take(server: &Server) -> Self {
        let metrics = server.metrics().await;
        Self {
            tokens: metrics
                .get("streamchat_tokens_total")
                .copied()
                .unwrap_or(0.0),
            commits: metrics
                .get("streamchat_commits_total")
                .copied()
                .unwrap_or(0.0),
            write_bytes: server.write_bytes(),
            cpu: server.cpu_seconds(),
        }
    }
}

/// Samples every `period` until `done` is set; the samples, in order.
pub async fn sample_until(
    server: &Server,
    period: Duration,
    done: &std::sync::atomic::AtomicBool,
) -> Vec<Sample> {
    let mut samples = vec![Sample::take(server).await];
    let mut tick = tokio::time::interval(period);
    while !done.load(std::sync::atomic::Ordering::Relaxed) {
        tick.tick().await;
        samples.push(Sample::take(server).await);
    }
    samples.push(Sample::take(server).await);
    samples
}

/// Per-token cost between the first samples at or past `from` and `to`
/// tokens: (disk bytes, server CPU seconds, commits) per token.
pub fn window(samples: &[Sample], from: f64, to: f64) -> (f64, f64, f64) {
    let at = |tokens: f64| {
        samples
            .iter()
            .find(|s| s.tokens >= tokens)
            .or(samples.last())
            .copied()
            .unwrap()
    };
    let (a, b) = (at(from), at(to));
    let n = (b.tokens - a.tokens).max(1.0);
    (
        (b.write_bytes - a.write_bytes) / n,
        (b.cpu - a.cpu) / n,
        (b.commits - a.commits) / n,
    )
}

/// Latencies of one viewer, split by each reply's token index: the first
/// `edge` tokens, and the last `edge` of `tokens`.
#[derive(Default)]
pub struct Split {
    pub first: Vec<u64>,
    pub last: Vec<u64>,
}

/// Reads a thread's events until `replies` replies finished, checking every
/// copy has no gap; latencies split as [`Split`].
pub async fn watch_split(
    mut client: SseClient,
    replies: usize,
    tokens: usize,
    edge: usize,
) -> Split {
    let mut split = Split::default();
    let mut counts: HashMap<i64, usize> = HashMap::new();
    let mut lengths: HashMap<i64, usize> = HashMap::new();
    let mut finished = 0;
    while finished < replies {
        let Ok(Some((_, data))) =
            tokio::time::timeout(Duration::from_secs(120), client.next_raw()).await
        else {
            panic!("a viewer stopped receiving after {finished} of {replies} replies");
        };
        if let Some((id, offset, text)) = quick_delta(&data) {
            let len = lengths.entry(id).or_default();
            assert_eq!(*len, offset, "a viewer's copy has a gap");
            *len += text.len();
            let count = counts.entry(id).or_default();
            for stamp in text.split(' ').filter(|s| !s.is_empty()) {
                if let Some(age) = stamp_age(stamp) {
                    if *count < edge {
                        split.first.push(age.as_micros() as u64);
                    } else if *count >= tokens - edge {
                        split.last.push(age.as_micros() as u64);
                    }
                    *count += 1;
                }
            }
            continue;
        }
        match serde_json::from_str::<ChatEvent>(&data).expect("a ChatEvent") {
            ChatEvent::Message { message } if message.status == Status::Streaming => {
                lengths.insert(message.id, message.body.len());
            }
            ChatEvent::Finished { id, len, .. } => {
                assert_eq!(lengths.get(&id).copied().unwrap_or(0), len, "whole copy");
                finished += 1;
            }
            _ => {}
        }
    }
    split.first.sort_unstable();
    split.last.sort_unstable();
    split
}

/// Long replies (S6): `threads` threads with one reply of `tokens` tokens
/// each and `viewers` viewers each, the server sampled every `period`.
pub async fn long_replies(
    server: &Server,
    threads: usize,
    viewers: usize,
    tokens: usize,
    edge: usize,
    period: Duration,
) -> (Vec<Sample>, Split) {
    let ids = server.create_threads(threads).await;
    let mut clients = Vec::new();
    for id in &ids {
        for _ in 0..viewers {
            let mut c = SseClient::connect(&events_url(&server.url, id), None).await;
            let (_, first) = c.next().await.expect("snapshot");
            assert!(matches!(first, ChatEvent::Sync { .. }));
            clients.push(c);
        }
    }
    let watchers: Vec<_> = clients
        .into_iter()
        .map(|c| tokio::spawn(watch_split(c, 1, tokens, edge)))
        .collect();
    let done = std::sync::atomic::AtomicBool::new(false);
    let http = reqwest::Client::new();
    let run = async {
        join_all(
            ids.iter()
                .map(|id| server.post(&http, id, "bench", "@gpt a long one")),
        )
        .await;
        let splits = join_all(watchers).await;
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        splits
    };
    let (samples, splits) = tokio::join!(sample_until(server, period, &done), run);
    let mut all = Split::default();
    for s in splits {
        let s = s.unwrap();
        all.first.extend(s.first);
        all.last.extend(s.last);
    }
    all.first.sort_unstable();
    all.last.sort_unstable();
    (samples, all)
}

/// CPU seconds used so far by every PostgreSQL process on this machine
/// (the server and its backends; a backend that exits takes its share).
pub fn postgres_cpu_seconds() -> f64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|pid| pid.bytes().all(|b| b.is_ascii_digit()))
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "postgres")
        })
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
            Some(
                (fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?)
                    / 100.0,
            )
        })
        .sum()
}

/// What S7 measured on several instances.
pub struct ClusterOutcome {
    pub p50: f64,
    pub p99: f64,
    /// Tokens taken from the provider per second over the run (every one
    /// committed and delivered: the run checks each viewer's copy).
    pub ingest: f64,
    pub commits_per_s: f64,
    pub notifications_per_s: f64,
    /// CPU of all instances / of PostgreSQL, in cores.
    pub server_cores: f64,
    pub postgres_cores: f64,
    pub wall: Duration,
}

/// Several instances on one PostgreSQL: `threads` threads with one reply
/// each, posted round-robin over `servers`; each thread's `viewers` watch
/// it on the NEXT instance (another one, when there are several), so every
/// token measured crossed instances through the database.
pub async fn cluster_scenario(
    servers: &[Server],
    threads: usize,
    viewers: usize,
) -> ClusterOutcome {
    let n = servers.len();
    let ids = servers[0].create_threads(threads).await;
    let mut clients = Vec::new();
    for (t, id) in ids.iter().enumerate() {
        let on = &servers[(t + 1) % n];
        for _ in 0..viewers {
            let mut client = SseClient::connect(&events_url(&on.url, id), None).await;
            let (_, first) = client.next().await.expect("snapshot");
            assert!(matches!(first, ChatEvent::Sync { .. }));
            clients.push(client);
        }
    }
    let sum = |m: &[HashMap<String, f64>], k: &str| -> f64 {
        m.iter().map(|m| m.get(k).copied().unwrap_or(0.0)).sum()
    };
    let before = join_all(servers.iter().map(Server::metrics)).await;
    let cpu_before: f64 = servers.iter().map(Server::cpu_seconds).sum();
    let pg_before = postgres_cpu_seconds();
    let started = Instant::now();
    let watchers: Vec<_> = clients
        .into_iter()
        .map(|c| tokio::spawn(watch(c, 1)))
        .collect();
    let http = reqwest::Client::new();
    let posts = ids.iter().enumerate().map(|(t, id)| {
        let http = http.clone();
        let on = &servers[t % n];
        async move { on.post(&http, id, &format!("{id}-a"), "@gpt go").await }
    });
    let posted: Vec<Posted> = join_all(posts).await;
    let seen: Vec<Seen> = join_all(watchers)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    let wall = started.elapsed();
    // Every viewer got every reply whole, as stored.
    for (t, reply) in posted.iter().map(|p| &p.replies[0]).enumerate() {
        let id_field = reply.id.to_string();
        let fields = [("thread", reply.thread_id.as_str()), ("id", &id_field)];
        let stored: streamchat::model::Message =
            servers[t % n].call(&http, "get_message", &fields).await;
        assert_eq!(stored.status, Status::Done);
        for s in seen.iter().filter(|s| s.texts.contains_key(&reply.id)) {
            assert_eq!(
                s.texts[&reply.id], stored.body,
                "a viewer's copy differs from the stored reply"
            );
        }
    }
    let after = join_all(servers.iter().map(Server::metrics)).await;
    let cpu = servers.iter().map(Server::cpu_seconds).sum::<f64>() - cpu_before;
    let pg = postgres_cpu_seconds() - pg_before;
    let delta = |k: &str| sum(&after, k) - sum(&before, k);
    let mut latencies: Vec<u64> = seen
        .iter()
        .flat_map(|s| s.latencies_us.iter().copied())
        .collect();
    latencies.sort_unstable();
    let secs = wall.as_secs_f64();
    ClusterOutcome {
        p50: percentile(&latencies, 0.50),
        p99: percentile(&latencies, 0.99),
        ingest: delta("streamchat_tokens_total") / secs,
        commits_per_s: delta("streamchat_commits_total") / secs,
        notifications_per_s: delta("streamchat_notifications_total") / secs,
        server_cores: cpu / secs,
        postgres_cores: pg / secs,
        wall,
    }
}
