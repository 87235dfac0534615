//! Load generator and benchmark report (`scripts/bench`).
//!
//! Starts the real release server as a child process on a temporary SQLite
//! file, with a fake OpenAI provider (in this process) that stamps each
//! token with the time it was emitted. Real SSE viewers over loopback read
//! every delta; a token's latency is the time from the provider emitting it
//! to a viewer receiving it. Server CPU and memory come from /proc; commits
//! and tokens from the server's /metrics, disk writes from /proc/<pid>/io.
//! Prints one table (S1-S6).

#[allow(dead_code)]
#[path = "../tests/it/support/fake_provider.rs"]
mod fake_provider;
#[allow(dead_code)]
#[path = "../tests/it/support/sse.rs"]
mod sse;

use std::{
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

#[path = "../tests/it/support/load.rs"]
mod load;

use load::{percentile, run_fresh, scenario};

struct Row {
    name: String,
    figures: Vec<(String, String)>,
}

fn latency(o: &load::Outcome) -> (String, String) {
    (
        "latency p50 / p95 / p99 / max".into(),
        format!(
            "{} / {} / {} / {}",
            fmt_ms(o.p50),
            fmt_ms(o.p95),
            fmt_ms(o.p99),
            fmt_ms(o.max)
        ),
    )
}

fn bytes_per_token(o: &load::Outcome) -> (String, String) {
    (
        "bytes per token per viewer".into(),
        format!("{:.1}", o.bytes_per_token),
    )
}

fn commits_per_token(o: &load::Outcome) -> (String, String) {
    (
        "commits per token".into(),
        format!("{:.3}", o.commits / o.tokens_in.max(1.0)),
    )
}

/// CPU of the server and of the generator over the run, in cores.
fn cpu_split(o: &load::Outcome) -> (String, String) {
    let wall = o.wall.as_secs_f64();
    (
        "CPU used, server / load generator (of 2 cores)".into(),
        format!("{:.2} / {:.2} cores", o.cpu / wall, o.generator_cpu / wall),
    )
}

/// A scenario's size from the environment (`S2_THREADS=20`), or its default.
fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn fmt_ms(v: f64) -> String {
    format!("{v:.2} ms")
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
        // 1,000 tokens (20 s): enough CPU time to read in 10 ms ticks.
        let tokens = setting("S1_TOKENS", 1000);
        let (_dir, fake, server) = run_fresh(&binary, 50.0, tokens).await;
        let idle = server.rss_mb();
        let o = scenario(&server, &fake, "s1", 1, 1, 1, tokens).await;
        rows.push(Row {
            name: "S1 1 reply x 1 viewer, 50 tok/s".into(),
            figures: vec![
                latency(&o),
                bytes_per_token(&o),
                commits_per_token(&o),
                (
                    "server CPU per token".into(),
                    format!("{:.3} ms", o.cpu * 1000.0 / o.tokens_in.max(1.0)),
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
        let threads = setting("S2_THREADS", 100);
        let o = scenario(&server, &fake, "s2", threads, 1, 10, 200).await;
        rows.push(Row {
            name: "S2 100 replies x 10 viewers each, 50 tok/s".into(),
            figures: vec![
                latency(&o),
                bytes_per_token(&o),
                commits_per_token(&o),
                cpu_split(&o),
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
        let viewers = setting("S4_VIEWERS", 10_000);
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
                cpu_split(&o),
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
    if want("S6") {
        // One reply of 50,000 tokens at 1,000 tokens/s: a lone reply
        // commits each token alone, so this is the cost of one token per
        // commit, measured as the reply grows.
        let tokens = 50_000;
        // Longer than the default reply cap (256 KB): raised.
        let cap = [("STREAMCHAT_MAX_REPLY_BYTES", (4 << 20).to_string())];
        let (_dir, _fake, server) = load::run_fresh_with(&binary, 1000.0, tokens, &cap).await;
        let (samples, _) =
            load::long_replies(&server, 1, 1, tokens, 1000, Duration::from_millis(100)).await;
        let mut figures = Vec::new();
        // The last window stops short of the end: the end writes the whole
        // body once (and deletes the log), shown on its own below.
        for (from, to) in [(0, 1_000), (9_000, 10_000), (48_000, 49_000)] {
            let (bytes, cpu, commits) = load::window(&samples, from as f64, to as f64);
            figures.push((
                format!("tokens {from}-{to}: disk bytes / server CPU / commits, per token"),
                format!("{bytes:.0} B / {:.3} ms / {commits:.2}", cpu * 1000.0),
            ));
        }
        let before_end = samples
            .iter()
            .find(|s| s.tokens >= 49_000.0)
            .copied()
            .unwrap();
        let end = *samples.last().unwrap();
        figures.push((
            "last 1,000 tokens and the end (body written once, log deleted): disk".into(),
            format!(
                "{:.0} KB",
                (end.write_bytes - before_end.write_bytes) / 1024.0
            ),
        ));
        let first = samples[0];
        let at_20k = samples
            .iter()
            .find(|s| s.tokens >= 20_000.0)
            .copied()
            .unwrap();
        figures.push((
            "first 20,000 tokens: disk written / server CPU".into(),
            format!(
                "{:.1} MB / {:.2} s",
                (at_20k.write_bytes - first.write_bytes) / 1e6,
                at_20k.cpu - first.cpu
            ),
        ));
        rows.push(Row {
            name: "S6a one reply of 50,000 tokens x 1 viewer, 1,000 tok/s".into(),
            figures,
        });

        // 20 replies of 10,000 tokens, 5 viewers each, 500 tokens/s each.
        let (replies, tokens) = (20, 10_000);
        let (_dir, _fake, server) = load::run_fresh_with(&binary, 500.0, tokens, &cap).await;
        let (samples, split) = load::long_replies(
            &server,
            replies,
            5,
            tokens,
            1000,
            Duration::from_millis(100),
        )
        .await;
        let lat = |l: &[u64]| {
            format!(
                "{} / {}",
                fmt_ms(percentile(l, 0.5)),
                fmt_ms(percentile(l, 0.99))
            )
        };
        let total = (replies * tokens) as f64;
        let edge = (replies * 1000) as f64;
        let (_, cpu_first, commits_first) = load::window(&samples, 0.0, edge);
        let (_, cpu_last, commits_last) = load::window(&samples, total - edge, total);
        rows.push(Row {
            name: "S6b 20 replies x 10,000 tokens x 5 viewers, 500 tok/s each".into(),
            figures: vec![
                (
                    "latency p50 / p99, first 1,000 tokens of each reply".into(),
                    lat(&split.first),
                ),
                (
                    "latency p50 / p99, last 1,000 tokens of each reply".into(),
                    lat(&split.last),
                ),
                (
                    "server CPU per token, first / last 1,000 of each".into(),
                    format!("{:.3} ms / {:.3} ms", cpu_first * 1000.0, cpu_last * 1000.0),
                ),
                (
                    "commits per token, first / last 1,000 of each".into(),
                    format!("{commits_first:.2} / {commits_last:.2}"),
                ),
            ],
        });
    }

    if want("S7") {
        rows.extend(cluster_rows(&binary).await);
    }
    if want("S8") {
        rows.push(hostile_row(&binary).await);
    }
    if only.as_deref() == Some("S8a") {
        rows.push(s8_alone_ab(&binary).await);
    }

    println!("\n| scenario | figure | value |\n| --- | --- | --- |");
    for row in &rows {
        for (i, (figure, value)) in row.figures.iter().enumerate() {
            let name = if i == 0 { row.name.as_str() } else { "" };
            println!("| {name} | {figure} | {value} |");
        }
    }
}

/// S7: 1 and 3 instances on one PostgreSQL (the local one, or
/// `STREAMCHAT_TEST_DATABASE_URL`'s server), each on a fresh database.
/// Viewers watch every thread on another instance than the one writing it.
async fn cluster_rows(binary: &std::path::Path) -> Vec<Row> {
    use sqlx::Connection;
    let server = std::env::var("STREAMCHAT_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let mut rows = Vec::new();
    for instances in [1usize, 3] {
        let mut figures = Vec::new();
        // (label, threads, viewers per thread, tokens per reply, tokens/s per reply)
        for (label, threads, viewers, tokens, rate) in [
            (
                "20 replies x 300 tokens x 2 viewers, 50 tok/s each",
                20,
                2,
                300,
                50.0,
            ),
            (
                "200 replies x 1,000 tokens x 1 viewer, 200 tok/s each (40,000 tok/s offered)",
                200,
                1,
                1000,
                200.0,
            ),
        ] {
            let name = format!("sc_bench_{instances}_{}", std::process::id());
            let mut admin = sqlx::PgConnection::connect(&server)
                .await
                .expect("PostgreSQL");
            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut admin)
                .await
                .unwrap();
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&mut admin)
                .await
                .unwrap();
            let url = format!("{}/{name}", server.rsplit_once('/').unwrap().0);
            let dir = tempfile::tempdir().unwrap();
            let fake = fake_provider::FakeProvider::with(load::script(tokens, rate)).await;
            let mut servers = Vec::new();
            for i in 0..instances {
                let env = [
                    ("DATABASE_URL", url.clone()),
                    ("STREAMCHAT_CLUSTER", "true".to_owned()),
                    ("STREAMCHAT_INSTANCE", format!("bench{i}")),
                    ("STREAMCHAT_DB_CONNECTIONS", "8".to_owned()),
                ];
                servers.push(load::Server::start_with(binary, dir.path(), &fake, &env).await);
            }
            let o = load::cluster_scenario(&servers, threads, viewers).await;
            figures.push((
                format!("{label}: latency p50 / p99 (provider to a viewer on another instance)"),
                format!("{} / {}", fmt_ms(o.p50), fmt_ms(o.p99)),
            ));
            figures.push((
                format!("{label}: tokens in/s, commits/s, NOTIFYs/s (all instances)"),
                format!(
                    "{:.0} / {:.0} / {:.0}",
                    o.ingest, o.commits_per_s, o.notifications_per_s
                ),
            ));
            figures.push((
                format!("{label}: CPU, instances / PostgreSQL (of 2 cores)"),
                format!(
                    "{:.2} / {:.2} cores ({:.1} s)",
                    o.server_cores,
                    o.postgres_cores,
                    o.wall.as_secs_f64()
                ),
            ));
            drop(servers);
            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut admin)
                .await
                .unwrap();
        }
        rows.push(Row {
            name: format!(
                "S7 {instances} instance{} on one PostgreSQL",
                if instances > 1 { "s" } else { "" }
            ),
            figures,
        });
    }
    rows
}

/// The server's settings in S8: this machine (127.0.0.1, the legitimate
/// load generator, standing for 100 users behind a proxy) is the one
/// trusted proxy; the hostile client comes from 127.0.0.2 with the
/// defaults' limits. The legitimate side needs 100 subscriptions and 10
/// generating replies from its one address, so those two caps are raised.
fn s8_env() -> Vec<(&'static str, String)> {
    vec![
        ("STREAMCHAT_TRUSTED_PROXIES", "127.0.0.1/32".into()),
        ("STREAMCHAT_REPLIES_PER_CLIENT", "20".into()),
        ("STREAMCHAT_SUBSCRIPTIONS_PER_CLIENT", "200".into()),
        ("STREAMCHAT_WRITES_PER_MINUTE", "60".into()),
        ("STREAMCHAT_CONNECTIONS_PER_CLIENT", "64".into()),
    ]
}

const HOSTILE: std::net::Ipv4Addr = std::net::Ipv4Addr::new(127, 0, 0, 2);

/// What the hostile client got.
#[derive(Default, Debug)]
struct Hostile {
    subscriptions_served: usize,
    subscriptions_refused: usize,
    heads_refused: usize,
    heads_closed: usize,
    heads_open: usize,
    posts_accepted: usize,
    posts_refused: usize,
    threads_accepted: usize,
    threads_refused: usize,
}

async fn hostile_socket(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(4096)?;
    socket.bind((HOSTILE, 0).into())?;
    socket.connect(addr).await
}

/// S8's legitimate load alone on a fresh server.
async fn s8_alone(binary: &std::path::Path) -> load::Outcome {
    let dir = tempfile::tempdir().unwrap();
    let fake = fake_provider::FakeProvider::with(load::script(200, 50.0)).await;
    let server = load::Server::start_with(binary, dir.path(), &fake, &s8_env()).await;
    scenario(&server, &fake, "s8", 10, 1, 10, 200).await
}

/// `S8a` (only when named): S8's legitimate load alone, `AB_RUNS` times
/// (default 7). With `STREAMCHAT_BIN_B`, runs alternate between the two
/// binaries, so a latency difference of a fraction of a millisecond can
/// be told from this machine's drift: each run and the medians are printed.
async fn s8_alone_ab(binary: &std::path::Path) -> Row {
    let b = std::env::var("STREAMCHAT_BIN_B").ok().map(PathBuf::from);
    let runs = setting("AB_RUNS", 7).max(1);
    let builds: Vec<&std::path::Path> = std::iter::once(binary).chain(b.as_deref()).collect();
    // Per run: latency p50 and p99, token arrival to publish inside the
    // server, and server CPU per 1,000 delivered tokens (all in ms).
    let mut seen: Vec<Vec<[f64; 4]>> = vec![Vec::new(); builds.len()];
    for run in 0..runs {
        for (i, build) in builds.iter().enumerate() {
            let o = s8_alone(build).await;
            let figures = [
                o.p50,
                o.p99,
                o.server_publish_ms,
                o.cpu * 1000.0 / (o.delivered as f64 / 1000.0),
            ];
            eprintln!(
                "S8a run {run} {}: p50 {:.3} ms, p99 {:.3} ms, publish {:.3} ms, CPU {:.2} ms per 1,000 delivered",
                build.display(),
                figures[0],
                figures[1],
                figures[2],
                figures[3]
            );
            seen[i].push(figures);
        }
    }
    let median = |runs: &[[f64; 4]], k: usize| {
        let mut v: Vec<f64> = runs.iter().map(|r| r[k]).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let figures = builds
        .iter()
        .zip(seen)
        .map(|(build, runs)| {
            (
                format!(
                    "{}: medians of p50 / p99 / arrival to publish / CPU per 1,000 delivered",
                    build.display()
                ),
                format!(
                    "{} / {} / {} / {}",
                    fmt_ms(median(&runs, 0)),
                    fmt_ms(median(&runs, 1)),
                    fmt_ms(median(&runs, 2)),
                    fmt_ms(median(&runs, 3))
                ),
            )
        })
        .collect();
    Row {
        name: format!("S8a S8's legitimate load alone, {runs} runs"),
        figures,
    }
}

/// S8: the S2-style load (10 replies x 10 viewers) alone, then again while
/// one hostile client holds 2,000 non-reading `since=0` subscriptions on a
/// 5 MB thread, 500 half-sent request heads, and floods posts and thread
/// creation.
async fn hostile_row(binary: &std::path::Path) -> Row {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let alone = s8_alone(binary).await;

    let dir = tempfile::tempdir().unwrap();
    let fake = fake_provider::FakeProvider::with(load::script(200, 50.0)).await;
    let server = load::Server::start_with(binary, dir.path(), &fake, &s8_env()).await;
    let addr: std::net::SocketAddr = server.url.trim_start_matches("http://").parse().unwrap();
    // The 5 MB thread: 5,000 messages of 1 KB, written beside the server.
    load::seed_lobby(&dir.path().join("bench.db"), 5000, 1000).await;
    let pid = server.child.id();
    let fds = move || {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    let peak_fds = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(fds()));
    let sampler = {
        let peak_fds = peak_fds.clone();
        tokio::spawn(async move {
            loop {
                peak_fds.fetch_max(fds(), std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    // The hostile client starts first and keeps at it through the run.
    let attack = tokio::spawn(async move {
        let mut got = Hostile::default();
        // Floods first (one budget for posts and threads), then what it holds.
        let http = reqwest::Client::builder()
            .local_address(std::net::IpAddr::V4(HOSTILE))
            .build()
            .unwrap();
        let big = "x".repeat(8000);
        for i in 0..300 {
            let post = http
                .post(format!("http://{addr}/api/send_message"))
                .header("accept", "application/json")
                .form(&[
                    ("thread", "lobby"),
                    ("author", "flood"),
                    ("body", &format!("{i} {big}")),
                ])
                .send()
                .await;
            match post.map(|r| r.status().as_u16()) {
                Ok(200) => got.posts_accepted += 1,
                _ => got.posts_refused += 1,
            }
            let thread = http
                .post(format!("http://{addr}/api/create_thread"))
                .header("accept", "application/json")
                .form(&[("title", format!("flood {i}"))])
                .send()
                .await;
            match thread.map(|r| r.status().as_u16()) {
                Ok(429) | Err(_) => got.threads_refused += 1,
                Ok(_) => got.threads_accepted += 1,
            }
        }
        let mut held = Vec::new();
        for _ in 0..2000 {
            let Ok(mut tcp) = hostile_socket(addr).await else {
                got.subscriptions_refused += 1;
                continue;
            };
            let _ = tcp
                .write_all(
                    b"GET /api/threads/lobby/events?since=0 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
                )
                .await;
            let mut head = [0u8; 16];
            match tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut head)).await {
                Ok(Ok(n)) if head[..n].starts_with(b"HTTP/1.1 200") => {
                    got.subscriptions_served += 1;
                    held.push(tcp);
                }
                _ => got.subscriptions_refused += 1,
            }
        }
        let mut heads = Vec::new();
        for _ in 0..500 {
            if let Ok(mut tcp) = hostile_socket(addr).await {
                let _ = tcp
                    .write_all(b"POST /api/send_message HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le")
                    .await;
                heads.push(tcp);
            }
        }
        // Which half-sent heads the server closed (within its header timeout).
        tokio::time::sleep(Duration::from_secs(12)).await;
        for mut tcp in heads {
            let mut answer = Vec::new();
            let mut buf = [0u8; 512];
            let closed = loop {
                match tokio::time::timeout(Duration::from_millis(50), tcp.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => break true,
                    Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
                    Err(_) => break false,
                }
            };
            if answer.starts_with(b"HTTP/1.1 429") {
                got.heads_refused += 1;
            } else if closed {
                got.heads_closed += 1;
            } else {
                got.heads_open += 1;
            }
        }
        drop(held);
        got
    });
    // Let the attack take hold before the legitimate load starts.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let under = scenario(&server, &fake, "s8", 10, 1, 10, 200).await;
    let got = attack.await.unwrap();
    sampler.abort();
    Row {
        name: "S8 S2-style load (10 replies x 10 viewers) under one hostile client".into(),
        figures: vec![
            (
                "legitimate latency p50 / p99, alone".into(),
                format!("{} / {}", fmt_ms(alone.p50), fmt_ms(alone.p99)),
            ),
            (
                "legitimate latency p50 / p99, under attack".into(),
                format!("{} / {}", fmt_ms(under.p50), fmt_ms(under.p99)),
            ),
            (
                "every legitimate reply whole (checked)".into(),
                format!("{} tokens delivered", under.delivered),
            ),
            (
                "server peak RSS / peak open descriptors".into(),
                format!(
                    "{:.1} MB / {}",
                    server.peak_rss_mb(),
                    peak_fds.load(std::sync::atomic::Ordering::Relaxed)
                ),
            ),
            (
                "hostile: 2,000 since=0 subscriptions served / refused".into(),
                format!(
                    "{} / {}",
                    got.subscriptions_served, got.subscriptions_refused
                ),
            ),
            (
                "hostile: 500 half-sent heads refused at its connection cap (429) / closed by the header timeout / still open after 12 s".into(),
                format!("{} / {} / {}", got.heads_refused, got.heads_closed, got.heads_open),
            ),
            (
                "hostile: 300 posts of 8 KB accepted / 429".into(),
                format!("{} / {}", got.posts_accepted, got.posts_refused),
            ),
            (
                "hostile: 300 new threads accepted / 429".into(),
                format!("{} / {}", got.threads_accepted, got.threads_refused),
            ),
        ],
    }
}
