//! Test harness: the real server on port 0 with a temporary SQLite file and
//! a fake provider that is a real HTTP server speaking the OpenAI SSE format.
#![allow(dead_code, unused_imports)]

pub mod accounts;
pub mod fake_provider;
pub mod load;
pub mod oidc_provider;
pub mod pg;
pub mod sse;

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use leptos::config::LeptosOptions;
use serde_json::Value;
use sqlx::{sqlite::SqliteConnectOptions, SqlitePool};
use streamchat::{
    model::{Message, Posted, Status},
    server::{
        app_server::{self_base_url, serve},
        config::Config,
        config::Secret,
        state::AppState,
    },
};

pub use fake_provider::{FakeProvider, Scripted};
pub use sse::SseClient;

/// The database a [`TestApp`] runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

tokio::task_local! {
    /// The backend `spawn_app` uses inside [`on_backend`] (SQLite otherwise).
    static BACKEND: Backend;
}

/// Runs a test body with `spawn_app` on `backend`.
pub async fn on_backend<F: std::future::Future>(backend: Backend, body: F) -> F::Output {
    BACKEND.scope(backend, body).await
}

/// Defines a test that runs on both backends: `name::sqlite` and
/// `name::postgres`, the same body (it reaches the database only through
/// the app and `TestApp`'s helpers).
#[macro_export]
macro_rules! both_backends {
    ($(#[doc = $doc:literal])* async fn $name:ident() $body:block) => {
        $(#[doc = $doc])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                $crate::support::on_backend($crate::support::Backend::Sqlite, async $body).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                $crate::support::on_backend($crate::support::Backend::Postgres, async $body).await
            }
        }
    };
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub url: String,
    pub db_path: PathBuf,
    /// The server's own state (its store's connections, for fault injection).
    pub state: AppState,
    /// A separate pool on the same file, for assertions (SQLite only: on
    /// PostgreSQL it names no file; use the helpers).
    pub db: SqlitePool,
    /// The test's own PostgreSQL database, when it runs there.
    pub pg: Option<std::sync::Arc<pg::PgDb>>,
    pub fake: FakeProvider,
    pub http: reqwest::Client,
    _dir: tempfile::TempDir,
}

pub use load::{events_url, ROOMY_LIMITS};

/// Calls server function `function` of the server at `url` with form
/// fields, as a hydrated page does.
pub async fn call_at(url: &str, function: &str, fields: &[(&str, &str)]) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{url}/api/{function}"))
        .header("accept", "application/json")
        .form(fields)
        .send()
        .await
        .unwrap()
}

/// Message `id` of the lobby, from the server at `url`.
pub async fn message_at(url: &str, id: i64) -> Message {
    call_at(
        url,
        "get_message",
        &[("thread", "lobby"), ("id", &id.to_string())],
    )
    .await
    .json()
    .await
    .unwrap()
}

/// Waits (up to 30 s) until message `id` of the server at `url` has left
/// `streaming`.
pub async fn ended_at(url: &str, id: i64) -> Message {
    poll_until(
        Duration::from_secs(30),
        Duration::from_millis(50),
        &format!("reply {id} did not end"),
        || message_at(url, id),
        |m: &Message| m.status != Status::Streaming,
    )
    .await
}

/// A child process stopped with the test, whether it passes or not.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The recorded provider streams, copied into the repository
/// (`tests/fixtures/provider-streams/`), or the folder
/// `STREAMCHAT_PROVIDER_FIXTURES` names.
pub fn provider_fixtures_dir() -> PathBuf {
    std::env::var_os("STREAMCHAT_PROVIDER_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/provider-streams")
        })
}

/// [`ROOMY_LIMITS`] on a configuration.
pub fn roomy(config: &mut Config) {
    config.limits.replies_per_client = 100_000;
    config.limits.writes_per_minute = 100_000;
    config.limits.connections_per_client = 100_000;
    config.limits.subscriptions_per_client = 100_000;
}

pub async fn spawn_app(fake: FakeProvider) -> TestApp {
    spawn_app_with(fake, |_| {}).await
}

/// Most tests are of typed names (`open`): the mode, unless a test chose
/// one or set a proxy's identity header. `accounts.rs` tries accounts.
pub fn typed_names_unless_chosen(config: &mut Config) {
    if config.access.mode.is_none() && config.access.identity_header.is_none() {
        config.access.mode = Some(streamchat::server::config::AccessMode::Open);
    }
}

/// The app with its settings adjusted by `configure`.
pub async fn spawn_app_with(fake: FakeProvider, configure: impl FnOnce(&mut Config)) -> TestApp {
    // `STREAMCHAT_TEST_LOG=warn` (a filter) shows the server's log.
    if let Ok(filter) = std::env::var("STREAMCHAT_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let db_path = dir.path().join("test.db");
    let pg = match BACKEND.try_with(|b| *b).unwrap_or(Backend::Sqlite) {
        Backend::Sqlite => None,
        Backend::Postgres => Some(std::sync::Arc::new(pg::PgDb::create().await)),
    };
    let mut config = Config {
        database: db_path.clone(),
        database_url: pg.as_ref().map(|db| db.url.clone()),
        ..Config::default()
    };
    config.openai_base_url = Some(fake.base_url.clone());
    config.openai_api_key = Some(Secret("sk-test-key".into()));
    config.bots[0].model = "fake-model".into();
    config.limits.retry_base_ms = 10;
    // The PostgreSQL variant of a test runs the cluster's machinery
    // (leases, wake-ups read back by the listener) with one instance.
    config.cluster.enabled = pg.is_some();
    roomy(&mut config);
    configure(&mut config);
    typed_names_unless_chosen(&mut config);
    let options = LeptosOptions::builder().output_name("streamchat").build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = AppState::build(options, config, &self_base_url(addr))
        .await
        .expect("state builds");
    let serving = state.clone();
    tokio::spawn(async move {
        serve(listener, serving, std::future::pending())
            .await
            .expect("server runs")
    });
    let db = SqlitePool::connect_lazy_with(SqliteConnectOptions::new().filename(&db_path));
    let app = TestApp {
        addr,
        url: format!("http://{addr}"),
        db_path,
        state,
        db,
        pg,
        fake,
        http: reqwest::Client::new(),
        _dir: dir,
    };
    // The listener accepts once the state (migrations, recovery) is ready.
    let status = app
        .http
        .get(format!("{}/api/threads/lobby/events", app.url));
    drop(status.send().await.expect("server is up"));
    app
}

impl TestApp {
    /// Calls the `send_message` server function the way a hydrated client does.
    pub async fn post_raw(&self, fields: &[(&str, &str)]) -> reqwest::Response {
        self.call("send_message", fields).await
    }

    /// `send_message` with these header lines besides (a name given twice
    /// is sent on two lines), as a hydrated client posts.
    pub async fn post_with(
        &self,
        headers: &[(&str, &str)],
        fields: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut request = self
            .http
            .post(format!("{}/api/send_message", self.url))
            .header("accept", "application/json");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.form(fields).send().await.unwrap()
    }

    pub async fn post(&self, thread: &str, author: &str, body: &str) -> Posted {
        post_at(&self.http, &self.url, thread, author, body).await
    }

    /// Calls a server function with form fields, as a hydrated client does.
    pub async fn call(&self, function: &str, fields: &[(&str, &str)]) -> reqwest::Response {
        self.http
            .post(format!("{}/api/{function}", self.url))
            .header("accept", "application/json")
            .form(fields)
            .send()
            .await
            .expect("server function call")
    }

    /// Waits (up to 20 s) until message `id` has some text stored.
    pub async fn wait_for_text(&self, id: i64) -> Message {
        poll_until(
            Duration::from_secs(20),
            Duration::from_millis(5),
            &format!("message {id} got no text"),
            || self.message(id),
            |m: &Message| !m.body.is_empty(),
        )
        .await
    }

    pub async fn create_thread(&self, id: &str) {
        self.state.store.create_thread(id, id, true).await.unwrap();
    }

    /// Message `id` as stored, read straight from the database: a streaming
    /// reply's text is its body followed by its log rows in order (one
    /// read transaction, so the two agree).
    pub async fn message(&self, id: i64) -> Message {
        if let Some(pg) = &self.pg {
            return pg.message(id).await;
        }
        let mut tx = self.db.begin().await.unwrap();
        let mut message: Message = sqlx::query_as("SELECT * FROM messages WHERE id = ?")
            .bind(id)
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        if message.status == streamchat::model::Status::Streaming {
            let log: Vec<(i64, String)> = sqlx::query_as(
                "SELECT part, text FROM reply_log WHERE key >= (?1 << 32) AND key < ((?1 + 1) << 32) \
                 ORDER BY key",
            )
            .bind(id)
            .fetch_all(&mut *tx)
            .await
            .unwrap();
            for (part, text) in log {
                match part {
                    0 => message.body.push_str(&text),
                    1 => message.thinking.push_str(&text),
                    _ => message.tools.push_str(&text),
                }
            }
        }
        tx.commit().await.unwrap();
        message
    }

    /// Log rows still stored for message `id` (a finished reply has none).
    pub async fn log_rows(&self, id: i64) -> i64 {
        if self.pg.is_some() {
            return self.state.store.log_rows(id).await.unwrap();
        }
        sqlx::query_scalar(
            "SELECT COUNT(*) FROM reply_log WHERE key >= (?1 << 32) AND key < ((?1 + 1) << 32)",
        )
        .bind(id)
        .fetch_one(&self.db)
        .await
        .unwrap()
    }

    pub async fn message_count(&self) -> i64 {
        if let Some(pg) = &self.pg {
            return sqlx::query_scalar("SELECT COUNT(*) FROM messages")
                .fetch_one(&pg.pool)
                .await
                .unwrap();
        }
        sqlx::query_scalar("SELECT COUNT(*) FROM messages")
            .fetch_one(&self.db)
            .await
            .unwrap()
    }

    /// The ids of a thread's messages, oldest first.
    pub async fn message_ids(&self, thread: &str) -> Vec<i64> {
        self.state
            .store
            .all_messages(thread)
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.id)
            .collect()
    }

    /// Waits (up to 20 s) until message `id` has left `streaming`.
    pub async fn wait_finished(&self, id: i64) -> Message {
        poll_until(
            Duration::from_secs(20),
            Duration::from_millis(10),
            &format!("message {id} still streaming"),
            || self.message(id),
            |m: &Message| m.status != Status::Streaming,
        )
        .await
    }

    /// The text of the page at `path` (e.g. `/t/lobby`), as a browser gets it
    /// (an answer that never completes fails the test rather than hanging it).
    pub async fn page(&self, path: &str) -> String {
        self.http
            .get(format!("{}{path}", self.url))
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub fn events_url(&self, thread: &str) -> String {
        events_url(&self.url, thread)
    }

    /// Message `id` of `thread` through the server function a browser calls.
    pub async fn get_message(&self, thread: &str, id: i64) -> Message {
        let id = id.to_string();
        self.call("get_message", &[("thread", thread), ("id", &id)])
            .await
            .json()
            .await
            .unwrap()
    }
}

/// Calls `read` until `done` holds for what it returned (every `every`),
/// failing with `what` after `within`. Returns that value.
/// Posts `body` as `author` to the lobby of the server at `url` (a child
/// process); the first reply it started.
pub async fn post_to(url: &str, author: &str, body: &str) -> Message {
    let posted = post_at(&reqwest::Client::new(), url, "lobby", author, body).await;
    posted.replies.into_iter().next().expect("a reply")
}

/// Posts `body` as `author` to `thread` of the server at `url`, as a
/// hydrated page does; what was stored. The one way tests post.
pub async fn post_at(
    http: &reqwest::Client,
    url: &str,
    thread: &str,
    author: &str,
    body: &str,
) -> Posted {
    let response = http
        .post(format!("{url}/api/send_message"))
        .header("accept", "application/json")
        .form(&[("thread", thread), ("author", author), ("body", body)])
        .send()
        .await
        .expect("send_message");
    assert!(
        response.status().is_success(),
        "post failed: {}",
        response.status()
    );
    response.json().await.expect("Posted")
}

pub async fn poll_until<T, Fut>(
    within: Duration,
    every: Duration,
    what: &str,
    mut read: impl FnMut() -> Fut,
    done: impl Fn(&T) -> bool,
) -> T
where
    Fut: std::future::Future<Output = T>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let value = read().await;
        if done(&value) {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} (waited {within:?})"
        );
        tokio::time::sleep(every).await;
    }
}

/// A JSON body's `error` message, as a client shows it.
pub fn error_text(body: &Value) -> String {
    body.as_object()
        .and_then(|o| o.values().next())
        .and_then(|v| {
            v.as_str()
                .or_else(|| v.get("message").and_then(Value::as_str))
        })
        .unwrap_or_default()
        .to_owned()
}

/// A browser-side message list (the real client logic), with the reactive
/// owner it needs kept alive by the returned guard.
pub fn client_list() -> (leptos::prelude::Owner, streamchat::live::MessageList) {
    let owner = leptos::prelude::Owner::new();
    owner.set();
    (
        owner,
        streamchat::live::MessageList::new("lobby".into(), Vec::new()),
    )
}
