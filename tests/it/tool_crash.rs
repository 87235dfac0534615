//! Durable tool steps under `kill -9`: the server is a child process with a
//! bot whose tool is an MCP server that counts its runs
//! (`tests/fixtures/counting_mcp.py`). Killed while the model writes a
//! call, while a tool runs, and while a call waits for approval; after the
//! restart, Continue goes on from the last committed step: a call whose
//! result is stored never runs again, one that was running is not run
//! twice (the tool is not idempotent), a waiting call waits again; nothing
//! a viewer saw is lost. The same across instances on PostgreSQL, where
//! another instance takes the reply over.

use std::{path::PathBuf, time::Duration};

use streamchat::{
    live::MessageList,
    model::{Message, Status},
    tools::{ToolCall, ToolLog, ToolState},
};

use crate::support::{
    client_list,
    pg::{NodeProcess, PgDb},
    poll_until, FakeProvider, Scripted, SseClient,
};

/// A directory with the server's `Leptos.toml` (a bot whose one tool is
/// the counting MCP server's `count`) and the count file.
struct Rig {
    dir: tempfile::TempDir,
}

impl Rig {
    fn new(approval: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/counting_mcp.py");
        std::fs::write(
            dir.path().join("Leptos.toml"),
            format!(
                r#"
[[bots]]
handle = "gpt"
model = "fake-model"
[[bots.mcp_servers]]
name = "counter"
command = "python3"
args = ["{}"]
[[bots.tools]]
name = "counter/count"
approval = "{approval}"
"#,
                script.display()
            ),
        )
        .unwrap();
        Self { dir }
    }

    fn count_file(&self) -> PathBuf {
        self.dir.path().join("count.txt")
    }

    /// How many times the tool started.
    fn runs(&self) -> usize {
        std::fs::read_to_string(self.count_file())
            .map(|t| t.lines().count())
            .unwrap_or(0)
    }

    /// A server on the rig's SQLite file, or with `env` naming another database.
    async fn start(&self, fake: &FakeProvider, env: &[(&str, &str)]) -> NodeProcess {
        let count = self.count_file().display().to_string();
        let db = self.dir.path().join("tools.db").display().to_string();
        let mut all = vec![("COUNT_FILE", count.as_str())];
        if !env.iter().any(|(k, _)| *k == "DATABASE_URL") {
            all.push(("STREAMCHAT_DATABASE", db.as_str()));
        }
        all.extend_from_slice(env);
        NodeProcess::spawn_in(self.dir.path(), fake, None, &all).await
    }

    /// One of several instances on `db`, with a short lease.
    async fn start_instance(&self, fake: &FakeProvider, db: &PgDb, name: &str) -> NodeProcess {
        self.start(
            fake,
            &[
                ("DATABASE_URL", db.url.as_str()),
                ("STREAMCHAT_CLUSTER", "true"),
                ("STREAMCHAT_INSTANCE", name),
                ("STREAMCHAT_LEASE_SECS", "2"),
                ("STREAMCHAT_DB_CONNECTIONS", "4"),
            ],
        )
        .await
    }
}

async fn post(url: &str, body: &str) -> Message {
    let response = reqwest::Client::new()
        .post(format!("{url}/api/send_message"))
        .header("accept", "application/json")
        .form(&[("thread", "lobby"), ("author", "Ann"), ("body", body)])
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    let mut posted: streamchat::model::Posted = response.json().await.unwrap();
    posted.replies.remove(0)
}

async fn call_fn(url: &str, function: &str, fields: &[(&str, &str)]) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{url}/api/{function}"))
        .header("accept", "application/json")
        .form(fields)
        .send()
        .await
        .unwrap()
}

async fn get_message(url: &str, id: i64) -> Message {
    call_fn(
        url,
        "get_message",
        &[("thread", "lobby"), ("id", &id.to_string())],
    )
    .await
    .json()
    .await
    .unwrap()
}

fn calls(message: &Message) -> Vec<ToolCall> {
    ToolLog::parse(&message.tools).calls().to_vec()
}

/// Applies the viewer's events until `done` holds of reply `id`'s calls.
async fn watch(
    viewer: &mut SseClient,
    list: &MessageList,
    id: i64,
    done: impl Fn(&[ToolCall]) -> bool,
) {
    loop {
        if list.tool_calls(id).is_some_and(|c| done(&c)) {
            return;
        }
        let (rev, event) = tokio::time::timeout(Duration::from_secs(20), viewer.next())
            .await
            .expect("events keep coming")
            .expect("the subscription stays open");
        assert_eq!(list.apply(event, rev), None, "no gap, whole copies");
    }
}

async fn ended(url: &str, id: i64) -> Message {
    poll_until(
        Duration::from_secs(30),
        Duration::from_millis(50),
        &format!("reply {id} did not end"),
        || get_message(url, id),
        |m| m.status != Status::Streaming,
    )
    .await
}

/// A step calling `count` once per entry of `seconds` (how long each runs).
fn counting_step(seconds: &[f64], pause: Duration) -> Scripted {
    let mut script = Scripted::new(&[]);
    for s in seconds {
        script = script.and_call("counter__count", &format!(r#"{{"seconds": {s}}}"#));
    }
    Scripted { pause, ..script }
}

/// After the restart the reply is `interrupted` with every byte the viewer
/// saw; Continue goes on from the last committed step.
async fn restart_and_continue(
    rig: &Rig,
    fake: &FakeProvider,
    server: &mut NodeProcess,
    list: &MessageList,
    id: i64,
) -> NodeProcess {
    server.kill9();
    let restarted = rig.start(fake, &[]).await;
    let stored = get_message(&restarted.url, id).await;
    assert_eq!(stored.status, Status::Interrupted);
    let seen = list.tool_calls(id).unwrap();
    let seen_log: String = list_tools_text(list, id);
    assert!(
        stored.tools.starts_with(&seen_log),
        "the stored tool log holds every byte the viewer saw"
    );
    assert!(!seen.is_empty());
    let resumed = call_fn(
        &restarted.url,
        "continue_reply",
        &[("thread", "lobby"), ("id", &id.to_string()), ("by", "Ann")],
    )
    .await;
    assert!(resumed.status().is_success(), "{}", resumed.status());
    restarted
}

fn list_tools_text(list: &MessageList, id: i64) -> String {
    list.tools(id).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_the_model_writes_a_call_runs_nothing_and_asks_again() {
    let rig = Rig::new("never");
    let fake = FakeProvider::start(|n, _| match n {
        0 => counting_step(&[0.0], Duration::from_millis(300)),
        _ => Scripted::new(&["Answered", " without it."]),
    })
    .await;
    let mut server = rig.start(&fake, &[]).await;
    let (_owner, list) = client_list();
    let mut viewer = SseClient::connect(&server.events_url("lobby"), None).await;
    let reply = post(&server.url, "@gpt count").await;
    watch(&mut viewer, &list, reply.id, |c| {
        c.first().is_some_and(|c| !c.arguments.is_empty())
    })
    .await;
    let server = restart_and_continue(&rig, &fake, &mut server, &list, reply.id).await;
    let stored = ended(&server.url, reply.id).await;
    assert_eq!(stored.status, Status::Done, "{:?}", stored.error);
    let calls = calls(&stored);
    assert_eq!(calls[0].state, ToolState::Failed);
    assert!(!calls[0].complete, "a cut-off call is not sent back");
    assert_eq!(rig.runs(), 0, "the tool never ran");
    assert_eq!(stored.body, "Answered without it.");
    // The step was asked again without the cut-off call.
    let asked = &fake.request_bodies()[1];
    assert!(asked["messages"]
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["role"] != "tool"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_a_tool_runs_never_runs_a_stored_call_again() {
    let rig = Rig::new("never");
    let fake = FakeProvider::start(|n, _| match n {
        0 => counting_step(&[0.0, 20.0], Duration::from_millis(1)),
        _ => Scripted::new(&["Done", " counting."]),
    })
    .await;
    let mut server = rig.start(&fake, &[]).await;
    let (_owner, list) = client_list();
    let mut viewer = SseClient::connect(&server.events_url("lobby"), None).await;
    let reply = post(&server.url, "@gpt count twice").await;
    // The first call's result is stored; the second is running.
    watch(&mut viewer, &list, reply.id, |c| {
        c.len() == 2 && c[0].state == ToolState::Done && c[1].state == ToolState::Running
    })
    .await;
    poll_until(
        Duration::from_secs(10),
        Duration::from_millis(20),
        "the second call never started",
        || async { rig.runs() },
        |n| *n == 2,
    )
    .await;
    let server = restart_and_continue(&rig, &fake, &mut server, &list, reply.id).await;
    let stored = ended(&server.url, reply.id).await;
    assert_eq!(stored.status, Status::Done, "{:?}", stored.error);
    let calls = calls(&stored);
    assert_eq!(calls[0].state, ToolState::Done);
    assert_eq!(calls[1].state, ToolState::Failed);
    assert!(calls[1]
        .output
        .as_deref()
        .unwrap()
        .contains("not run again"));
    assert_eq!(rig.runs(), 2, "each call started once: none ran twice");
    assert_eq!(stored.body, "Done counting.");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_a_call_waits_for_approval_waits_again() {
    let rig = Rig::new("always");
    let fake = FakeProvider::start(|n, _| match n {
        0 => counting_step(&[0.0], Duration::from_millis(1)),
        _ => Scripted::new(&["Counted", " once."]),
    })
    .await;
    let mut server = rig.start(&fake, &[]).await;
    let (_owner, list) = client_list();
    let mut viewer = SseClient::connect(&server.events_url("lobby"), None).await;
    let reply = post(&server.url, "@gpt count after approval").await;
    watch(&mut viewer, &list, reply.id, |c| {
        c.first().is_some_and(|c| c.state == ToolState::Waiting)
    })
    .await;
    let server = restart_and_continue(&rig, &fake, &mut server, &list, reply.id).await;
    let waiting = poll_until(
        Duration::from_secs(20),
        Duration::from_millis(20),
        "the call did not wait again",
        || get_message(&server.url, reply.id),
        |m| {
            m.status == Status::Streaming
                && calls(m)
                    .first()
                    .is_some_and(|c| c.state == ToolState::Waiting)
        },
    )
    .await;
    let call = calls(&waiting).remove(0);
    assert_eq!(rig.runs(), 0);
    let approved = call_fn(
        &server.url,
        "decide_tool_call",
        &[
            ("thread", "lobby"),
            ("id", &reply.id.to_string()),
            ("call", "0"),
            ("arguments_hash", &call.arguments_hash()),
            ("decision", "approve"),
            ("by", "Ann"),
        ],
    )
    .await;
    assert!(approved.status().is_success(), "{}", approved.status());
    let stored = ended(&server.url, reply.id).await;
    assert_eq!(stored.status, Status::Done, "{:?}", stored.error);
    assert_eq!(calls(&stored)[0].state, ToolState::Done);
    assert_eq!(rig.runs(), 1);
    assert_eq!(stored.body, "Counted once.");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_producer_while_a_tool_runs_another_instance_goes_on_without_rerunning() {
    let db = PgDb::create().await;
    let rig = Rig::new("never");
    let fake = FakeProvider::start(|n, _| match n {
        0 => counting_step(&[0.0, 20.0], Duration::from_millis(1)),
        _ => Scripted::new(&["Taken", " over."]),
    })
    .await;
    let mut producer = rig.start_instance(&fake, &db, "producer").await;
    let other = rig.start_instance(&fake, &db, "other").await;
    let (_owner, list) = client_list();
    let mut viewer = SseClient::connect(&other.events_url("lobby"), None).await;
    let reply = post(&producer.url, "@gpt count twice").await;
    watch(&mut viewer, &list, reply.id, |c| {
        c.len() == 2 && c[0].state == ToolState::Done && c[1].state == ToolState::Running
    })
    .await;
    poll_until(
        Duration::from_secs(10),
        Duration::from_millis(20),
        "the second call never started",
        || async { rig.runs() },
        |n| *n == 2,
    )
    .await;
    let seen = list.tools(reply.id).unwrap();
    producer.kill9();
    // The other instance takes the reply over once the lease runs out and
    // goes on from the last committed step; its viewer follows without a gap.
    loop {
        let (rev, event) = tokio::time::timeout(Duration::from_secs(30), viewer.next())
            .await
            .expect("events keep coming")
            .expect("the subscription stays open");
        assert_eq!(list.apply(event, rev), None, "no gap, whole copies");
        if list
            .status(reply.id)
            .is_some_and(|s| s != Status::Streaming)
        {
            break;
        }
    }
    let stored = ended(&other.url, reply.id).await;
    assert_eq!(stored.status, Status::Done, "{:?}", stored.error);
    assert!(
        stored.tools.starts_with(&seen),
        "nothing the viewer saw is lost"
    );
    let calls = calls(&stored);
    assert_eq!(calls[0].state, ToolState::Done);
    assert_eq!(calls[1].state, ToolState::Failed);
    assert!(calls[1]
        .output
        .as_deref()
        .unwrap()
        .contains("not run again"));
    assert_eq!(rig.runs(), 2, "no call ran twice");
    assert_eq!(stored.body, "Taken over.");
    assert_eq!(list.tools(reply.id).unwrap(), stored.tools);
}

/// Follows reply `id` on `viewer` until it ends; every event applies cleanly.
async fn follow_to_end(viewer: &mut SseClient, list: &MessageList, id: i64) {
    while list.status(id) == Some(Status::Streaming) || list.status(id).is_none() {
        let (rev, event) = tokio::time::timeout(Duration::from_secs(30), viewer.next())
            .await
            .expect("events keep coming")
            .expect("the subscription stays open");
        assert_eq!(list.apply(event, rev), None, "no gap, whole copies");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_producer_while_the_model_writes_a_call_another_instance_asks_again() {
    let db = PgDb::create().await;
    let rig = Rig::new("never");
    let fake = FakeProvider::start(|n, _| match n {
        0 => counting_step(&[0.0], Duration::from_millis(300)),
        _ => Scripted::new(&["Answered", " elsewhere."]),
    })
    .await;
    let mut producer = rig.start_instance(&fake, &db, "producer").await;
    let other = rig.start_instance(&fake, &db, "other").await;
    let (_owner, list) = client_list();
    let mut viewer = SseClient::connect(&other.events_url("lobby"), None).await;
    let reply = post(&producer.url, "@gpt count").await;
    watch(&mut viewer, &list, reply.id, |c| {
        c.first().is_some_and(|c| !c.arguments.is_empty())
    })
    .await;
    let seen = list.tools(reply.id).unwrap();
    producer.kill9();
    follow_to_end(&mut viewer, &list, reply.id).await;
    let stored = ended(&other.url, reply.id).await;
    assert_eq!(stored.status, Status::Done, "{:?}", stored.error);
    assert!(
        stored.tools.starts_with(&seen),
        "nothing the viewer saw is lost"
    );
    assert_eq!(calls(&stored)[0].state, ToolState::Failed);
    assert_eq!(rig.runs(), 0, "the cut-off call never ran");
    assert_eq!(stored.body, "Answered elsewhere.");
    assert_eq!(list.tools(reply.id).unwrap(), stored.tools);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_producer_while_a_call_waits_another_instance_waits_and_runs_it_once() {
    let db = PgDb::create().await;
    let rig = Rig::new("always");
    let fake = FakeProvider::start(|n, _| match n {
        0 => counting_step(&[0.0], Duration::from_millis(1)),
        _ => Scripted::new(&["Counted", " once."]),
    })
    .await;
    let mut producer = rig.start_instance(&fake, &db, "producer").await;
    let other = rig.start_instance(&fake, &db, "other").await;
    let (_owner, list) = client_list();
    let mut viewer = SseClient::connect(&other.events_url("lobby"), None).await;
    let reply = post(&producer.url, "@gpt count after approval").await;
    watch(&mut viewer, &list, reply.id, |c| {
        c.first().is_some_and(|c| c.state == ToolState::Waiting)
    })
    .await;
    let call = list.tool_calls(reply.id).unwrap().remove(0);
    producer.kill9();
    // Approved on the surviving instance while no one produces the reply:
    // the decision is a row, so whoever takes the reply over finds it.
    let approved = call_fn(
        &other.url,
        "decide_tool_call",
        &[
            ("thread", "lobby"),
            ("id", &reply.id.to_string()),
            ("call", "0"),
            ("arguments_hash", &call.arguments_hash()),
            ("decision", "approve"),
            ("by", "Ann"),
        ],
    )
    .await;
    assert!(approved.status().is_success(), "{}", approved.status());
    follow_to_end(&mut viewer, &list, reply.id).await;
    let stored = ended(&other.url, reply.id).await;
    assert_eq!(stored.status, Status::Done, "{:?}", stored.error);
    let stored_call = calls(&stored).remove(0);
    assert_eq!(stored_call.state, ToolState::Done);
    assert_eq!(stored_call.decided_by.as_deref(), Some("Ann"));
    assert_eq!(rig.runs(), 1, "ran once, after the approval");
    assert_eq!(stored.body, "Counted once.");
}
