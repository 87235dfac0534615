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
env_passthrough = ["COUNT_FILE"]
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

/// Ann approves call 0 of reply `id`, shown as `call`.
async fn approve(url: &str, id: i64, call: &ToolCall) {
    let approved = crate::support::call_at(
        url,
        "decide_tool_call",
        &[
            ("thread", "lobby"),
            ("id", &id.to_string()),
            ("call", "0"),
            ("arguments_hash", &call.arguments_hash()),
            ("decision", "approve"),
            ("by", "Ann"),
        ],
    )
    .await;
    assert!(approved.status().is_success(), "{}", approved.status());
}

/// Waits until the tool has started `n` times.
async fn runs_reach(rig: &Rig, n: usize) {
    poll_until(
        Duration::from_secs(10),
        Duration::from_millis(20),
        "the tool did not start",
        || async { rig.runs() },
        |runs| *runs == n,
    )
    .await;
}

fn calls(message: &Message) -> Vec<ToolCall> {
    ToolLog::parse(&message.tools).calls().to_vec()
}

/// A step calling `count` once per entry of `seconds` (how long each runs).
fn counting_step(seconds: &[f64], pause: Duration) -> Scripted {
    let mut script = Scripted::new(&[]);
    for s in seconds {
        script = script.and_call("counter__count", &format!(r#"{{"seconds": {s}}}"#));
    }
    Scripted { pause, ..script }
}

/// Where the reply's producer runs: one server on SQLite (killed, then
/// restarted, then Continue), or the first of two instances on PostgreSQL
/// (killed; the other takes the reply over when the lease runs out).
#[derive(Clone, Copy, PartialEq)]
enum Setup {
    One,
    Two,
}

/// A reply being produced with a viewer following it.
struct Scene {
    setup: Setup,
    rig: Rig,
    fake: FakeProvider,
    _db: Option<PgDb>,
    producer: NodeProcess,
    /// The second instance (Two), where the viewer watches.
    other: Option<NodeProcess>,
    _owner: leptos::prelude::Owner,
    list: MessageList,
    viewer: SseClient,
    id: i64,
}

impl Scene {
    /// Starts the servers; the model's first step is `first`, every later
    /// one answers `answer`; asks `question`.
    async fn start(
        setup: Setup,
        approval: &str,
        first: Scripted,
        answer: &'static [&'static str],
    ) -> Self {
        let rig = Rig::new(approval);
        let fake = FakeProvider::start(move |n, _| match n {
            0 => first.clone(),
            _ => Scripted::new(answer),
        })
        .await;
        let (db, producer, other) = match setup {
            Setup::One => (None, rig.start(&fake, &[]).await, None),
            Setup::Two => {
                let db = PgDb::create().await;
                let producer = rig.start_instance(&fake, &db, "producer").await;
                let other = rig.start_instance(&fake, &db, "other").await;
                (Some(db), producer, Some(other))
            }
        };
        let (owner, list) = client_list();
        let watched = other.as_ref().unwrap_or(&producer);
        let viewer = SseClient::connect(&watched.events_url("lobby"), None).await;
        let id = crate::support::post_to(&producer.url, "Ann", "@gpt count")
            .await
            .id;
        Self {
            setup,
            rig,
            fake,
            _db: db,
            producer,
            other,
            _owner: owner,
            list,
            viewer,
            id,
        }
    }

    /// Follows the reply until `done` holds of its calls.
    async fn until(&mut self, done: impl Fn(&[ToolCall]) -> bool) {
        let id = self.id;
        self.viewer
            .follow_until(&self.list, |l| l.tool_calls(id).is_some_and(|c| done(&c)))
            .await;
    }

    /// Kills the producer with SIGKILL; returns the URL of the server that
    /// goes on. One server: restarted, the reply `interrupted` with every
    /// byte the viewer saw, and continued. Two: the other instance.
    async fn crash(&mut self) -> String {
        let seen = self.list.tools(self.id).unwrap();
        assert!(!seen.is_empty());
        self.producer.kill9();
        let url = match self.setup {
            Setup::Two => self.other.as_ref().unwrap().url.clone(),
            Setup::One => {
                let restarted = self.rig.start(&self.fake, &[]).await;
                let url = restarted.url.clone();
                self.producer = restarted;
                let stored = crate::support::message_at(&url, self.id).await;
                assert_eq!(stored.status, Status::Interrupted);
                assert!(
                    stored.tools.starts_with(&seen),
                    "nothing the viewer saw is lost"
                );
                let resumed = crate::support::call_at(
                    &url,
                    "continue_reply",
                    &[
                        ("thread", "lobby"),
                        ("id", &self.id.to_string()),
                        ("by", "Ann"),
                    ],
                )
                .await;
                assert!(resumed.status().is_success(), "{}", resumed.status());
                url
            }
        };
        url
    }

    /// The reply once it ended `done`; with two instances the viewer
    /// followed it to the end without a gap and holds what is stored.
    async fn done(&mut self, url: &str) -> Message {
        if self.setup == Setup::Two {
            let id = self.id;
            self.viewer
                .follow_until(&self.list, |l| l.status(id) != Some(Status::Streaming))
                .await;
        }
        let stored = crate::support::ended_at(url, self.id).await;
        assert_eq!(stored.status, Status::Done, "{:?}", stored.error);
        if self.setup == Setup::Two {
            assert_eq!(self.list.tools(self.id).unwrap(), stored.tools);
        }
        stored
    }
}

/// Killed while the model writes a call: the call never runs, it is not
/// sent back, and the step is asked again.
async fn while_the_model_writes_a_call(setup: Setup) {
    let first = counting_step(&[0.0], Duration::from_millis(300));
    let mut scene = Scene::start(setup, "never", first, &["Answered", " without it."]).await;
    scene
        .until(|c| c.first().is_some_and(|c| !c.arguments.is_empty()))
        .await;
    let url = scene.crash().await;
    let stored = scene.done(&url).await;
    let calls = calls(&stored);
    assert_eq!(calls[0].state, ToolState::Failed);
    assert!(!calls[0].complete, "a cut-off call is not sent back");
    assert_eq!(scene.rig.runs(), 0, "the tool never ran");
    assert_eq!(stored.body, "Answered without it.");
    let asked = &scene.fake.request_bodies()[1];
    assert!(asked["messages"]
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["role"] != "tool"));
}

/// Killed while the second of two calls runs: the first's stored result
/// is kept (never run again); the second is not run twice (the tool is not
/// idempotent) and fails saying so.
async fn while_a_tool_runs(setup: Setup) {
    let first = counting_step(&[0.0, 20.0], Duration::from_millis(1));
    let mut scene = Scene::start(setup, "never", first, &["Done", " counting."]).await;
    scene
        .until(|c| {
            c.len() == 2 && c[0].state == ToolState::Done && c[1].state == ToolState::Running
        })
        .await;
    runs_reach(&scene.rig, 2).await;
    let url = scene.crash().await;
    let stored = scene.done(&url).await;
    let calls = calls(&stored);
    assert_eq!(calls[0].state, ToolState::Done);
    assert_eq!(calls[1].state, ToolState::Failed);
    assert!(calls[1]
        .output
        .as_deref()
        .unwrap()
        .contains("not run again"));
    assert_eq!(
        scene.rig.runs(),
        2,
        "each call started once: none ran twice"
    );
    assert_eq!(stored.body, "Done counting.");
}

/// Killed while a call waits for approval: it waits again (the card still
/// shows its arguments), and once approved it runs, once.
async fn while_a_call_waits(setup: Setup) {
    let first = counting_step(&[0.0], Duration::from_millis(1));
    let mut scene = Scene::start(setup, "always", first, &["Counted", " once."]).await;
    scene
        .until(|c| c.first().is_some_and(|c| c.state == ToolState::Waiting))
        .await;
    let call = scene.list.tool_calls(scene.id).unwrap().remove(0);
    let url = scene.crash().await;
    if setup == Setup::One {
        poll_until(
            Duration::from_secs(20),
            Duration::from_millis(20),
            "the call did not wait again",
            || crate::support::message_at(&url, scene.id),
            |m| {
                m.status == Status::Streaming
                    && calls(m)
                        .first()
                        .is_some_and(|c| c.state == ToolState::Waiting)
            },
        )
        .await;
    }
    // Two instances: approved while no one produces the reply; the
    // decision is a row, so whoever takes the reply over finds it.
    assert_eq!(scene.rig.runs(), 0);
    approve(&url, scene.id, &call).await;
    let stored = scene.done(&url).await;
    let stored_call = calls(&stored).remove(0);
    assert_eq!(stored_call.state, ToolState::Done);
    assert_eq!(stored_call.decided_by.as_deref(), Some("Ann"));
    assert_eq!(scene.rig.runs(), 1, "ran once, after the approval");
    assert_eq!(stored.body, "Counted once.");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_the_model_writes_a_call_runs_nothing_and_asks_again() {
    while_the_model_writes_a_call(Setup::One).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_a_tool_runs_never_runs_a_call_twice() {
    while_a_tool_runs(Setup::One).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_a_call_waits_for_approval_waits_again() {
    while_a_call_waits(Setup::One).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_killed_while_the_model_writes_a_call_another_instance_asks_again() {
    while_the_model_writes_a_call(Setup::Two).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_killed_while_a_tool_runs_another_instance_never_runs_a_call_twice() {
    while_a_tool_runs(Setup::Two).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_killed_while_a_call_waits_another_instance_waits_and_runs_it_once() {
    while_a_call_waits(Setup::Two).await;
}
