//! PostgreSQL for tests: a database of its own per test on the server
//! `STREAMCHAT_TEST_DATABASE_URL` names (default: the local one, trust
//! auth), and instances of the app on it, in this process (`spawn_node`)
//! or as child processes (`NodeProcess`, for `kill -9` and `SIGSTOP`).

use std::{
    process::{Child, Command},
    time::Duration,
};

use leptos::config::LeptosOptions;
use sqlx::{postgres::PgPoolOptions, Connection, PgConnection, PgPool};
use streamchat::{
    model::{Message, Posted, Status},
    server::{
        app_server::{self_base_url, serve},
        config::Config,
        config::Secret,
        state::AppState,
    },
};
use tokio_util::sync::CancellationToken;

use super::{poll_until, FakeProvider};

/// The server tests create their databases on.
pub fn server_url() -> String {
    std::env::var("STREAMCHAT_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A database of one test's own, dropped when the test ends well.
pub struct PgDb {
    pub url: String,
    name: String,
    pub pool: PgPool,
}

/// `base` with its database name replaced by `name`.
fn with_database(base: &str, name: &str) -> String {
    let (head, query) = match base.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (base, None),
    };
    let root = match head.rfind('/') {
        Some(at) if at > head.find("//").map_or(0, |s| s + 1) => &head[..at],
        _ => head,
    };
    match query {
        Some(q) => format!("{root}/{name}?{q}"),
        None => format!("{root}/{name}"),
    }
}

impl PgDb {
    pub async fn create() -> Self {
        let server = server_url();
        let name = format!(
            "sc_test_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let mut admin = PgConnection::connect(&server).await.unwrap_or_else(|e| {
            panic!("PostgreSQL at {server} (STREAMCHAT_TEST_DATABASE_URL): {e}")
        });
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("create a test database");
        let url = with_database(&server, &name);
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .connect_lazy(&url)
            .unwrap();
        Self { url, name, pool }
    }

    /// Drops the database now (it is also dropped when this goes out of
    /// scope).
    pub async fn drop_db(self) {
        self.pool.close().await;
    }

    /// Message `id` as stored: its body and, while it streams, its log
    /// (an ended reply's log rows, kept a little while, are in its body).
    pub async fn message(&self, id: i64) -> Message {
        sqlx::query_as(
            "SELECT m.id, m.thread_id, author, role, \
             CASE WHEN status = 'streaming' THEN body || COALESCE((SELECT string_agg(text, '' ORDER BY seq) \
             FROM reply_log l WHERE l.message_id = m.id AND l.part = 0), '') ELSE body END AS body, \
             CASE WHEN status = 'streaming' THEN thinking || COALESCE((SELECT string_agg(text, '' ORDER BY seq) \
             FROM reply_log l WHERE l.message_id = m.id AND l.part = 1), '') ELSE thinking END AS thinking, \
             status, error, finish_reason, model, created_at, updated_at, finished_at, prompt_tokens, \
             completion_tokens, rev, requested_by, context_before, stopped_by, notice, retries, \
             usage_estimated, ttft_ms, tokens_per_second, thinking_ms, reasoning_tokens, \
             CASE WHEN status = 'streaming' THEN tools || COALESCE((SELECT string_agg(text, '' ORDER BY seq) \
             FROM reply_log l WHERE l.message_id = m.id AND l.part = 2), '') ELSE tools END AS tools \
             FROM messages m WHERE id = $1",
        )
        .bind(id)
        .fetch_one(&self.pool)
        .await
        .unwrap()
    }

    /// Waits (up to `within`) until message `id` has left `streaming`.
    pub async fn wait_finished(&self, id: i64, within: Duration) -> Message {
        poll_until(
            within,
            Duration::from_millis(20),
            &format!("message {id} still streaming"),
            || self.message(id),
            |m: &Message| m.status != Status::Streaming,
        )
        .await
    }

    /// Waits until message `id` has at least `bytes` of text stored.
    pub async fn wait_for_text(&self, id: i64, bytes: usize) -> Message {
        poll_until(
            Duration::from_secs(20),
            Duration::from_millis(10),
            &format!("message {id} got no text"),
            || self.message(id),
            |m: &Message| m.body.len() >= bytes,
        )
        .await
    }

    /// Ends instance `instance`'s wake-up listening connection from the
    /// server's side; what each matching backend said (true: terminated).
    pub async fn terminate_listener(&self, instance: &str) -> Vec<bool> {
        sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = $1 AND datname = current_database()",
        )
        .bind(format!("streamchat-listen:{instance}"))
        .fetch_all(&self.pool)
        .await
        .unwrap()
    }

    /// Replies still `streaming`.
    pub async fn streaming(&self) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM messages WHERE status = 'streaming'")
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }
}

impl Drop for PgDb {
    /// Drops the test's database (its connections are ended: `FORCE`), on a
    /// thread of its own, since `drop` cannot wait in the test's runtime.
    fn drop(&mut self) {
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async {
                if let Ok(mut admin) = PgConnection::connect(&server_url()).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut admin)
                        .await;
                }
            });
        })
        .join();
    }
}

/// The settings of an instance on `db` answering from `fake`.
pub fn node_config(db: &PgDb, fake: &FakeProvider, instance: &str) -> Config {
    let mut config = Config {
        database_url: Some(db.url.clone()),
        ..Config::default()
    };
    config.cluster.enabled = true;
    config.cluster.instance = Some(instance.to_owned());
    config.cluster.lease_secs = 1.0;
    config.cluster.max_connections = 4;
    config.openai_base_url = Some(fake.base_url.clone());
    config.openai_api_key = Some(Secret("sk-test-key".into()));
    config.bots[0].model = "fake-model".into();
    config.limits.retry_base_ms = 10;
    super::roomy(&mut config);
    super::typed_names_unless_chosen(&mut config);
    config
}

/// One instance in this process.
pub struct Node {
    pub url: String,
    pub state: AppState,
    pub http: reqwest::Client,
    stop: CancellationToken,
}

pub async fn spawn_node(config: Config) -> Node {
    let options = LeptosOptions::builder().output_name("streamchat").build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = AppState::build(options, config, &self_base_url(addr))
        .await
        .expect("state builds");
    let stop = CancellationToken::new();
    let serving = state.clone();
    let stopped = stop.clone();
    tokio::spawn(async move {
        serve(listener, serving, async move { stopped.cancelled().await })
            .await
            .expect("server runs")
    });
    Node {
        url: format!("http://{addr}"),
        state,
        http: reqwest::Client::new(),
        stop,
    }
}

impl Node {
    pub fn events_url(&self, thread: &str) -> String {
        super::events_url(&self.url, thread)
    }

    pub async fn call(&self, function: &str, fields: &[(&str, &str)]) -> reqwest::Response {
        self.http
            .post(format!("{}/api/{function}", self.url))
            .header("accept", "application/json")
            .form(fields)
            .send()
            .await
            .expect("server function call")
    }

    pub async fn post(&self, thread: &str, author: &str, body: &str) -> Posted {
        super::post_at(&self.http, &self.url, thread, author, body).await
    }

    /// Stops serving (graceful: its replies end `interrupted`).
    pub fn shutdown(&self) {
        self.stop.cancel();
    }
}

/// An instance as a child process (the built server binary).
pub struct NodeProcess {
    pub child: Child,
    pub url: String,
    pub port: u16,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl NodeProcess {
    /// Starts an instance on `db` (lease of `lease_secs`), on `port` or a
    /// free one, and waits until it serves.
    pub async fn start(
        db: &PgDb,
        fake: &FakeProvider,
        instance: &str,
        lease_secs: f64,
        port: Option<u16>,
    ) -> Self {
        Self::start_with(db, fake, instance, lease_secs, port, &[]).await
    }

    /// [`NodeProcess::start`] with more environment.
    pub async fn start_with(
        db: &PgDb,
        fake: &FakeProvider,
        instance: &str,
        lease_secs: f64,
        port: Option<u16>,
        env: &[(&str, &str)],
    ) -> Self {
        let lease = lease_secs.to_string();
        let mut all = vec![
            ("DATABASE_URL", db.url.as_str()),
            ("STREAMCHAT_CLUSTER", "true"),
            ("STREAMCHAT_INSTANCE", instance),
            ("STREAMCHAT_LEASE_SECS", lease.as_str()),
            ("STREAMCHAT_DB_CONNECTIONS", "4"),
        ];
        all.extend_from_slice(env);
        Self::spawn(fake, port, &all).await
    }

    /// The server binary on `port` (or a free one) answering from `fake`,
    /// with `env` (its database among it); waits until it serves.
    pub async fn spawn(fake: &FakeProvider, port: Option<u16>, env: &[(&str, &str)]) -> Self {
        Self::spawn_in(&std::env::temp_dir(), fake, port, env).await
    }

    /// [`NodeProcess::spawn`] in `dir` (it reads `dir/Leptos.toml`, if any).
    pub async fn spawn_in(
        dir: &std::path::Path,
        fake: &FakeProvider,
        port: Option<u16>,
        env: &[(&str, &str)],
    ) -> Self {
        let port = port.unwrap_or_else(free_port);
        let child = Command::new(env!("CARGO_BIN_EXE_streamchat"))
            .current_dir(dir)
            .env("LEPTOS_OUTPUT_NAME", "streamchat")
            // The tests of typed names; tests/it/accounts.rs tries accounts.
            .env("STREAMCHAT_ACCESS_MODE", "open")
            .env("LEPTOS_SITE_ROOT", dir.join("streamchat-test-site"))
            .env("LEPTOS_SITE_ADDR", format!("127.0.0.1:{port}"))
            .env("OPENAI_BASE_URL", &fake.base_url)
            .env("OPENAI_API_KEY", "sk-test-key")
            .env("RUST_LOG", "warn")
            .envs(super::ROOMY_LIMITS)
            .envs(env.iter().copied())
            .spawn()
            .expect("server starts");
        let url = format!("http://127.0.0.1:{port}");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if reqwest::get(format!("{url}/healthz"))
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the server on port {port} did not come up"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self { child, url, port }
    }

    /// Waits (up to `within`) for the process to exit; its status.
    pub async fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the server did not exit within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn events_url(&self, thread: &str) -> String {
        super::events_url(&self.url, thread)
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{signal}");
    }

    pub fn kill9(&mut self) {
        self.signal("KILL");
        let _ = self.child.wait();
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
