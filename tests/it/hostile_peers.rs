//! A hostile provider or tool server, tried against the server as a real
//! process (its resident memory read from `/proc`): one endless provider
//! event, a 300 MB MCP result over stdio and over HTTP, an MCP program
//! reading its environment, and an MCP URL carrying a credential. Each is
//! bounded while it is read and shown to no one.

use std::{path::Path, time::Duration};

use streamchat::{
    model::{Message, Status},
    tools::{ToolCall, ToolLog, ToolState},
};

use crate::support::{
    ended_at, fake_provider::Ending, pg::NodeProcess, post_to, FakeProvider, KillOnDrop, Scripted,
};

/// How much more than its resident memory before the attack the server
/// may have held at its peak.
const MAX_GROWTH_MB: f64 = 50.0;

fn proc_kb(pid: u32, key: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0)
}

/// Starts counting the server's peak resident memory afresh (Linux:
/// `clear_refs` 5 resets `VmHWM`), so start-up and warm-up do not count.
fn reset_peak(server: &NodeProcess) {
    std::fs::write(format!("/proc/{}/clear_refs", server.child.id()), "5")
        .expect("the peak resident memory can be reset");
}

/// The server's resident memory now, and its peak so far, in MB.
fn memory_mb(server: &NodeProcess) -> (f64, f64) {
    let pid = server.child.id();
    (
        proc_kb(pid, "VmRSS:") / 1024.0,
        proc_kb(pid, "VmHWM:") / 1024.0,
    )
}

fn script() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hostile_mcp.py")
        .display()
        .to_string()
}

/// A server process in `dir` whose bot `gpt` has the MCP server `server`
/// (its TOML lines) and all of its tools.
async fn server_with_mcp(
    dir: &Path,
    fake: &FakeProvider,
    server: &str,
    env: &[(&str, &str)],
) -> NodeProcess {
    std::fs::write(
        dir.join("Leptos.toml"),
        format!(
            "[[bots]]\nhandle = \"gpt\"\nmodel = \"fake-model\"\n\
             [[bots.mcp_servers]]\nname = \"hostile\"\n{server}\n\
             [[bots.tools]]\nname = \"hostile/*\"\n"
        ),
    )
    .unwrap();
    let db = dir.join("hostile.db").display().to_string();
    let mut all = vec![("STREAMCHAT_DATABASE", db.as_str())];
    all.extend_from_slice(env);
    NodeProcess::spawn_in(dir, fake, None, &all).await
}

/// A model that calls `tool` with `arguments` once, then answers "Done.".
async fn calling(tool: &str, arguments: &str) -> FakeProvider {
    let (tool, arguments) = (tool.to_owned(), arguments.to_owned());
    FakeProvider::start(move |n, _| match n {
        0 => Scripted::tool_call(&tool, &arguments),
        _ => Scripted::new(&["Done."]),
    })
    .await
}

fn calls(message: &Message) -> Vec<ToolCall> {
    ToolLog::parse(&message.tools).calls().to_vec()
}

/// Asks `@gpt`, waits for the reply's end; the reply and its one call.
async fn ask(server: &NodeProcess) -> (Message, ToolCall) {
    let reply = post_to(&server.url, "Ann", "@gpt go").await;
    let stored = ended_at(&server.url, reply.id).await;
    let call = calls(&stored).into_iter().next().expect("one call");
    (stored, call)
}

/// A 300 MB result is refused as it is read: the call fails at the cap
/// (long before the server's 60 s timeout), the model is told and the
/// reply ends; the server's memory grows by less than 50 MB.
async fn a_huge_result_is_refused_while_read(server_toml: &str, extra: &[(&str, &str)]) {
    let dir = tempfile::tempdir().unwrap();
    let fake = calling("hostile__huge", r#"{"megabytes": 300}"#).await;
    let server = server_with_mcp(dir.path(), &fake, server_toml, extra).await;
    reset_peak(&server);
    let (before, _) = memory_mb(&server);
    let started = std::time::Instant::now();
    let (stored, call) = ask(&server).await;
    let took = started.elapsed();
    let (_, peak) = memory_mb(&server);
    assert_eq!(stored.status, Status::Done, "{:?}", stored.error);
    assert_eq!(stored.body, "Done.", "the model was told and answered");
    assert_eq!(call.state, ToolState::Failed);
    let out = call.output.unwrap_or_default();
    assert!(out.contains("1048576"), "the cap is named: {out}");
    assert!(
        took < Duration::from_secs(30),
        "refused as read, not at the 60 s timeout: {took:?}"
    );
    assert!(
        peak - before < MAX_GROWTH_MB,
        "resident memory {before:.1} MB before, peak {peak:.1} MB"
    );
    println!("300 MB MCP result: {before:.1} MB before, peak {peak:.1} MB, refused in {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_300_mb_result_over_stdio_is_refused_while_read() {
    let toml = format!(
        "command = \"python3\"\nargs = [\"{}\"]\ntimeout_secs = 60",
        script()
    );
    a_huge_result_is_refused_while_read(&toml, &[]).await;
}

/// An MCP server over HTTP, started here; stopped with the test.
struct HttpMcp {
    _process: KillOnDrop,
    port: u16,
}

impl HttpMcp {
    async fn start(env: &[(&str, &str)]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new("python3")
            .args([script(), "--http".into(), port.to_string()])
            .envs(env.iter().copied())
            .spawn()
            .expect("python3 runs the MCP server");
        crate::support::poll_until(
            Duration::from_secs(20),
            Duration::from_millis(20),
            "the MCP server did not listen",
            || async { std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() },
            |up| *up,
        )
        .await;
        Self {
            _process: KillOnDrop(child),
            port,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_300_mb_result_over_http_is_refused_while_read() {
    let mcp = HttpMcp::start(&[]).await;
    let toml = format!(
        "url = \"http://127.0.0.1:{}/mcp\"\ntimeout_secs = 60",
        mcp.port
    );
    a_huge_result_is_refused_while_read(&toml, &[]).await;
}

/// A stdio server starts with a cleared environment: `PATH`, what
/// `env_passthrough` names and what `env` sets, nothing else (not the API
/// key, not the database's address, not any other variable of ours).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mcp_program_gets_only_the_environment_it_is_given() {
    let dir = tempfile::tempdir().unwrap();
    let fake = calling("hostile__environment", "{}").await;
    let toml = format!(
        "command = \"python3\"\nargs = [\"{}\"]\nenv_passthrough = [\"PASSED_ON\"]\n\
         env = {{ GIVEN = \"by-config\" }}",
        script()
    );
    let secrets = [
        ("SECRET_PROBE", "probe-value"),
        ("PASSED_ON", "passed-value"),
        ("DATABASE_URL", ""),
    ];
    let server = server_with_mcp(dir.path(), &fake, &toml, &secrets).await;
    let (stored, call) = ask(&server).await;
    assert_eq!(stored.status, Status::Done, "{:?}", stored.error);
    assert_eq!(call.state, ToolState::Done, "{:?}", call.output);
    let env: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&call.output.unwrap()).expect("the environment as JSON");
    assert_eq!(env["GIVEN"], "by-config");
    assert_eq!(env["PASSED_ON"], "passed-value");
    // The server's environment: this process's (it inherits it) and what
    // was set for it. None of it reaches the program but PATH and what was
    // named. (An interpreter's own wrapper, such as pyenv's shim, sets a
    // few of its own: those come from it, not from us.)
    let set_for_server = [
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        "STREAMCHAT_DATABASE",
        "RUST_LOG",
    ];
    let ours: Vec<String> = std::env::vars()
        .map(|(k, _)| k)
        .chain(secrets.iter().map(|(k, _)| (*k).to_owned()))
        .chain(set_for_server.map(String::from))
        .filter(|k| !["PATH", "PASSED_ON", "PWD", "SHLVL"].contains(&k.as_str()))
        .filter(|k| !k.starts_with("PYENV") && !k.starts_with("_PYENV"))
        .collect();
    for name in env.keys() {
        assert!(!ours.contains(name), "the MCP program saw our {name}");
    }
    for secret in [
        "OPENAI_API_KEY",
        "DATABASE_URL",
        "SECRET_PROBE",
        "STREAMCHAT_DATABASE",
    ] {
        assert!(!env.contains_key(secret), "{secret}");
    }
}

/// An endpoint's credential comes from the environment variable its
/// `bearer_env` names; a URL with a query string (a credential some put
/// there) is never shown: not in the reply's error, not to a viewer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mcp_endpoints_credential_is_a_header_and_its_url_is_never_shown() {
    let mcp = HttpMcp::start(&[("REQUIRE_BEARER", "tok-123")]).await;
    let dir = tempfile::tempdir().unwrap();
    let fake = calling("hostile__whoami", "{}").await;
    let toml = format!(
        "url = \"http://127.0.0.1:{}/mcp\"\nbearer_env = \"HOSTILE_MCP_TOKEN\"",
        mcp.port
    );
    let server = server_with_mcp(
        dir.path(),
        &fake,
        &toml,
        &[("HOSTILE_MCP_TOKEN", "tok-123")],
    )
    .await;
    let (stored, call) = ask(&server).await;
    assert_eq!(stored.status, Status::Done, "{:?}", stored.error);
    assert_eq!(call.output.as_deref(), Some("Bearer tok-123"));
    drop(server);

    // Nothing listens at this URL; its query string carries a "key".
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let fake = calling("hostile__whoami", "{}").await;
    let toml =
        format!("url = \"http://127.0.0.1:{closed}/mcp?key=QUERY-SECRET-42\"\ntimeout_secs = 5");
    let server = server_with_mcp(dir.path(), &fake, &toml, &[]).await;
    let mut viewer = crate::support::SseClient::connect(&server.events_url("lobby"), None).await;
    let reply = post_to(&server.url, "Ann", "@gpt go").await;
    let mut seen = String::new();
    loop {
        let (_, data) = tokio::time::timeout(Duration::from_secs(30), viewer.next_raw())
            .await
            .expect("events keep coming")
            .expect("the subscription stays open");
        seen.push_str(&data);
        let event: streamchat::model::ChatEvent = serde_json::from_str(&data).unwrap();
        if crate::support::sse::ended_reply(&event) == Some(reply.id) {
            break;
        }
    }
    let stored = ended_at(&server.url, reply.id).await;
    assert_eq!(stored.status, Status::Failed);
    let error = stored.error.unwrap_or_default();
    assert!(error.contains("MCP server `hostile`"), "{error}");
    for shown in [&error, &seen] {
        assert!(!shown.contains("QUERY-SECRET-42"), "{shown}");
        assert!(
            !shown.contains(&format!(":{closed}")),
            "no address: {shown}"
        );
    }
}

/// One provider event of 1 MB `data:` lines with no blank line, for as
/// long as the server takes them: the reply fails at the event cap, read
/// as it arrives; the server's memory grows by less than 50 MB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_never_ending_provider_event_fails_the_reply_with_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeProvider::start(|n, _| match n {
        // A reply without usage first: its token estimate loads the
        // tokenizer (tens of MB, once), which the attack's reply needs too.
        0 => Scripted {
            usage: None,
            ..Scripted::new(&["warm"])
        },
        _ => Scripted::new(&["before "]).ending(Ending::EndlessEvent(1_000_000)),
    })
    .await;
    let db = dir.path().join("event.db").display().to_string();
    let server = NodeProcess::spawn_in(
        dir.path(),
        &fake,
        None,
        &[
            ("STREAMCHAT_DATABASE", &db),
            ("STREAMCHAT_IDLE_TIMEOUT_SECS", "60"),
        ],
    )
    .await;
    let warm = post_to(&server.url, "Ann", "@gpt warm up").await;
    assert_eq!(ended_at(&server.url, warm.id).await.status, Status::Done);
    reset_peak(&server);
    let (before, _) = memory_mb(&server);
    let reply = post_to(&server.url, "Ann", "@gpt go").await;
    let failed = ended_at(&server.url, reply.id).await;
    let (_, peak) = memory_mb(&server);
    assert_eq!(failed.status, Status::Failed);
    assert_eq!(failed.body, "before ", "the text before the event is kept");
    let error = failed.error.unwrap_or_default();
    assert!(
        error.contains("an event longer than 1048576 bytes"),
        "{error}"
    );
    assert!(
        fake.huge_line_sent() < 64 << 20,
        "{} MB taken of an endless event",
        fake.huge_line_sent() >> 20
    );
    assert!(
        peak - before < MAX_GROWTH_MB,
        "resident memory {before:.1} MB before, peak {peak:.1} MB"
    );
    println!("endless provider event: {before:.1} MB before, peak {peak:.1} MB");
}
