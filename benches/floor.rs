//! S1's floor on this machine: what a lone token costs a process that does
//! only what the design requires of the server per token, and nothing of
//! the app. Per token it reads the provider's bytes from a loopback socket,
//! commits them in one autocommitted SQLite `INSERT` (WAL, `synchronous =
//! NORMAL`, 512-byte pages: the writer's append path), and writes one SSE
//! frame to a viewer's loopback socket. No HTTP, no JSON, no metrics.
//!
//! The "server" is this binary again, as a child process (as S1 runs the
//! app); this process sends a token at a fixed rate, reads it back, and
//! reads the child's CPU time. Variants:
//! - `tokio`: the app's shape: three tasks on a two-worker runtime (the
//!   reply reads, the writer commits and publishes on a broadcast channel,
//!   the viewer's task writes);
//! - `tokio, no commit`: the same without the `INSERT` (what the commit costs);
//! - `one thread, blocking`: no runtime at all.
//!
//! `cargo bench --features ssr --bench floor` (`FLOOR_TOKENS`, default 1,000).

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

const VARIANTS: [(&str, &str); 3] = [
    ("tokio", "tokio, 3 tasks"),
    ("tokio-nodb", "tokio, 3 tasks, no commit"),
    ("blocking", "one thread, blocking"),
];

fn main() {
    if let Ok(variant) = std::env::var("FLOOR_CHILD") {
        let db = std::env::var("FLOOR_DB").expect("FLOOR_DB");
        return serve(&variant, Path::new(&db));
    }
    let tokens: usize = std::env::var("FLOOR_TOKENS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(1000);
    println!(
        "| S1's floor: per token, read + commit + write | rate | CPU per token | latency p50 |"
    );
    println!("| --- | --- | --- | --- |");
    for rate in [50, 1000] {
        for (variant, name) in VARIANTS {
            let (cpu, p50) = drive(variant, rate, tokens);
            println!(
                "| {name} | {rate} tok/s | {:.3} ms | {:.3} ms |",
                cpu.as_secs_f64() * 1e3,
                p50.as_secs_f64() * 1e3
            );
        }
    }
}

/// Runs one variant as a child process; returns its CPU time per token and
/// the median time from sending a token to reading its frame.
fn drive(variant: &str, rate: u64, tokens: usize) -> (Duration, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env("FLOOR_CHILD", variant)
        .env("FLOOR_DB", dir.path().join("floor.db"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut port = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut port)
        .unwrap();
    let port: u16 = port.trim().parse().unwrap();
    // The child takes the provider's connection first, then the viewer's.
    let mut provider = TcpStream::connect(("127.0.0.1", port)).unwrap();
    provider.write_all(b"hello").unwrap();
    let mut viewer = TcpStream::connect(("127.0.0.1", port)).unwrap();
    provider.set_nodelay(true).unwrap();
    let mut buf = [0u8; 4096];
    let _ = viewer.read(&mut buf).unwrap(); // the hello: both are connected
    let period = Duration::from_micros(1_000_000 / rate);
    let warm_up = 50;
    let mut cpu_before = Duration::ZERO;
    let mut latencies = Vec::with_capacity(tokens);
    let mut next = Instant::now();
    for i in 0..warm_up + tokens {
        if i == warm_up {
            cpu_before = cpu_of(child.id());
        }
        next += period;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let sent = Instant::now();
        provider.write_all(b" token").unwrap();
        assert!(
            viewer.read(&mut buf).unwrap() > 0,
            "the floor server hung up"
        );
        latencies.push(sent.elapsed());
    }
    let cpu = cpu_of(child.id()) - cpu_before;
    // The child ends at the provider's end of stream (so a profiler run
    // around it, e.g. callgrind's, writes its figures); killed if not.
    drop(provider);
    let until = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
    latencies.sort();
    (cpu / tokens as u32, latencies[latencies.len() / 2])
}

/// CPU time of every thread of `pid` (`/proc/<pid>/task/*/schedstat`: the
/// same run time `/proc/<pid>/stat` reports in 10 ms ticks, in ns).
fn cpu_of(pid: u32) -> Duration {
    let mut ns = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        if let Ok(stat) = std::fs::read_to_string(task.unwrap().path().join("schedstat")) {
            ns += stat
                .split_whitespace()
                .next()
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Duration::from_nanos(ns)
}

/// The child: the floor server.
fn serve(variant: &str, db: &Path) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    println!("{}", listener.local_addr().unwrap().port());
    std::io::stdout().flush().unwrap();
    let (provider, _) = listener.accept().unwrap();
    let (viewer, _) = listener.accept().unwrap();
    viewer.set_nodelay(true).unwrap();
    let mut log = (variant != "tokio-nodb").then(|| Log::open(db));
    if variant == "blocking" {
        let (mut provider, mut viewer) = (provider, viewer);
        let mut buf = [0u8; 4096];
        loop {
            let n = provider.read(&mut buf).unwrap();
            if n == 0 {
                return;
            }
            let text = String::from_utf8_lossy(&buf[..n]);
            let frame = log.as_mut().unwrap().append(&text);
            viewer.write_all(frame.as_bytes()).unwrap();
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        provider.set_nonblocking(true).unwrap();
        viewer.set_nonblocking(true).unwrap();
        let mut provider = tokio::net::TcpStream::from_std(provider).unwrap();
        let mut viewer = tokio::net::TcpStream::from_std(viewer).unwrap();
        let (to_writer, mut commands) = tokio::sync::mpsc::channel::<String>(64);
        let (hub, mut subscription) = tokio::sync::broadcast::channel::<std::sync::Arc<str>>(256);
        let reply = tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = provider.read(&mut buf).await {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                if to_writer.send(text).await.is_err() {
                    return;
                }
            }
        });
        let writer = tokio::spawn(async move {
            let mut offset = 0;
            while let Some(text) = commands.recv().await {
                let frame = match &mut log {
                    Some(log) => log.append(&text),
                    None => {
                        offset += text.len();
                        frame(offset, &text)
                    }
                };
                let _ = hub.send(frame.into());
            }
        });
        let view = tokio::spawn(async move {
            while let Ok(frame) = subscription.recv().await {
                if viewer.write_all(frame.as_bytes()).await.is_err() {
                    return;
                }
            }
        });
        let _ = tokio::join!(reply, writer, view);
    });
}

/// The reply's log: one row per token, as the writer's append connection
/// stores it.
struct Log {
    conn: rusqlite::Connection,
    /// The next row's key and the reply's length.
    next: (i64, usize),
}

impl Log {
    fn open(path: &Path) -> Self {
        let conn = rusqlite::Connection::open(path).unwrap();
        conn.execute_batch(
            "PRAGMA page_size = 512; PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;
             CREATE TABLE reply_log (key INTEGER PRIMARY KEY, part INTEGER NOT NULL,
                 offset INTEGER NOT NULL, rev INTEGER NOT NULL, text TEXT NOT NULL);",
        )
        .unwrap();
        Self { conn, next: (1, 0) }
    }

    /// Commits one row; returns the delta's SSE frame.
    fn append(&mut self, text: &str) -> String {
        let (key, offset) = self.next;
        self.conn
            .prepare_cached(
                "INSERT INTO reply_log (key, part, offset, rev, text) VALUES (?, 0, ?, ?, ?)",
            )
            .unwrap()
            .execute(rusqlite::params![key, offset as i64, key, text])
            .unwrap();
        self.next = (key + 1, offset + text.len());
        frame(offset, text)
    }
}

fn frame(offset: usize, text: &str) -> String {
    format!("data: {{\"t\":\"d\",\"i\":1,\"o\":{offset},\"x\":\"{text}\"}}\n\n")
}
