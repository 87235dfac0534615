//! A bot with a Model Context Protocol server's tools: the reference
//! server no one here wrote (`@modelcontextprotocol/server-everything`,
//! from npm, installed by the test command into `end2end/node_modules`)
//! over stdio, and over streamable HTTP. Its tools are offered to the model, a call to `echo` gives
//! the server's answer; a server whose command is missing fails the reply
//! with a message that says so.

use streamchat::{
    model::{Message, Status},
    server::config::{Approval, Config, McpServerConfig, ToolConfig},
    tools::{ToolCall, ToolLog, ToolState},
};

use crate::support::{spawn_app_with, FakeProvider, Scripted, TestApp};

fn everything_server() -> McpServerConfig {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("end2end/node_modules/@modelcontextprotocol/server-everything/dist/index.js");
    assert!(
        script.exists(),
        "{} is required (scripts/test installs it with npm ci in end2end/)",
        script.display()
    );
    McpServerConfig {
        name: "everything".into(),
        command: Some("node".into()),
        args: vec![script.display().to_string(), "stdio".into()],
        timeout_secs: 30.0,
        ..McpServerConfig::default()
    }
}

fn with_server(server: McpServerConfig) -> impl FnOnce(&mut Config) {
    move |config: &mut Config| {
        config.bots[0].mcp_servers = vec![server];
        config.bots[0].tools = vec![ToolConfig {
            name: "everything/echo".into(),
            approval: Approval::Never,
            idempotent: Some(true),
        }];
    }
}

/// A bot with `server` asked once: the model calls `everything__echo` with
/// `message`, then answers `answer`. The app, the reply as it ended, and
/// its one call.
async fn echo_through(
    server: McpServerConfig,
    message: &'static str,
    answer: &'static [&'static str],
) -> (TestApp, Message, ToolCall) {
    let fake = FakeProvider::start(move |n, _| match n {
        0 => Scripted::tool_call(
            "everything__echo",
            &serde_json::json!({ "message": message }).to_string(),
        ),
        _ => Scripted::new(answer),
    })
    .await;
    let app = spawn_app_with(fake, with_server(server)).await;
    let reply = app
        .post("lobby", "Ann", "@gpt echo")
        .await
        .replies
        .remove(0);
    let stored = app.wait_finished(reply.id).await;
    assert_eq!(stored.status, Status::Done, "{:?}", stored.error);
    let call = ToolLog::parse(&stored.tools).calls()[0].clone();
    assert_eq!(call.state, ToolState::Done, "{:?}", call.output);
    assert!(
        call.output.as_deref().unwrap().contains(message),
        "{:?}",
        call.output
    );
    (app, stored, call)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_mcp_servers_echo_answers_through_a_bot() {
    let (app, stored, _) = echo_through(
        everything_server(),
        "hello from the thread",
        &["It", " echoed."],
    )
    .await;
    // The server's tool was offered with the server's own schema.
    let first = &app.fake.request_bodies()[0];
    let offered: Vec<&serde_json::Value> = first["tools"].as_array().unwrap().iter().collect();
    assert_eq!(offered.len(), 1, "only the configured tool: {offered:?}");
    assert_eq!(offered[0]["function"]["name"], "everything__echo");
    assert!(offered[0]["function"]["parameters"]["properties"]["message"].is_object());
    assert_eq!(stored.body, "It echoed.");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_mcp_server_fails_the_reply_saying_so() {
    let fake = FakeProvider::with(Scripted::new(&["never asked"])).await;
    let missing = McpServerConfig {
        command: Some("/nonexistent/mcp-server".into()),
        args: Vec::new(),
        ..everything_server()
    };
    let app = spawn_app_with(fake, with_server(missing)).await;
    let reply = app
        .post("lobby", "Ann", "@gpt echo")
        .await
        .replies
        .remove(0);
    let stored = app.wait_finished(reply.id).await;
    assert_eq!(stored.status, Status::Failed);
    let error = stored.error.unwrap_or_default();
    assert!(
        error.contains("MCP server `everything` could not be started"),
        "{error}"
    );
    assert_eq!(app.fake.requests(), 0, "no provider call without the tools");
}

/// The reference server again, over streamable HTTP (its `streamableHttp`
/// mode on a free port): the bot's calls go to its URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_mcp_server_answers_over_streamable_http() {
    let stdio = everything_server();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _server = crate::support::KillOnDrop(
        std::process::Command::new("node")
            .arg(&stdio.args[0])
            .arg("streamableHttp")
            .env("PORT", port.to_string())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("node runs the reference server"),
    );
    let url = format!("http://127.0.0.1:{port}/mcp");
    crate::support::poll_until(
        std::time::Duration::from_secs(20),
        std::time::Duration::from_millis(50),
        "the MCP server did not listen",
        || async { std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() },
        |up| *up,
    )
    .await;
    let over_http = McpServerConfig {
        command: None,
        args: Vec::new(),
        url: Some(url),
        ..stdio
    };
    echo_through(over_http, "over http", &["Echoed."]).await;
}

/// A tool that runs longer than the reply's idle timeout is not cut short
/// by the watchdog (a running tool is a sign of life; it has its own
/// timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_tool_is_not_an_idle_reply() {
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/counting_mcp.py");
    let fake = FakeProvider::start(|n, _| match n {
        0 => Scripted::tool_call("counter__count", r#"{"seconds": 2.5}"#),
        _ => Scripted::new(&["Slow", " but done."]),
    })
    .await;
    let app = spawn_app_with(fake, move |config| {
        config.bots[0].mcp_servers = vec![McpServerConfig {
            name: "counter".into(),
            command: Some("python3".into()),
            args: vec![script.display().to_string()],
            timeout_secs: 10.0,
            ..McpServerConfig::default()
        }];
        config.bots[0].tools = vec![ToolConfig {
            name: "counter/count".into(),
            approval: Approval::Never,
            idempotent: None,
        }];
        config.limits.idle_timeout_secs = 1.0;
        config.limits.watchdog_period_secs = 0.2;
    })
    .await;
    let reply = app
        .post("lobby", "Ann", "@gpt slowly")
        .await
        .replies
        .remove(0);
    let stored = app.wait_finished(reply.id).await;
    assert_eq!(stored.status, Status::Done, "{:?}", stored.error);
    let log = ToolLog::parse(&stored.tools);
    assert_eq!(log.calls()[0].state, ToolState::Done);
    assert!(log.calls()[0].ms.unwrap() >= 2500);
}
