//! The app's settings: `Leptos.toml`, then environment variables over it.
//! Secrets come from the environment only and never appear in `Debug` output.

use std::{fmt, path::Path, path::PathBuf, time::Duration};

use anyhow::Context;
use serde::Deserialize;

use crate::model::Granularity;

mod accounts;
mod tools;
pub use accounts::{AccessMode, AccountsConfig, OidcProviderConfig};
pub use tools::{Approval, Approver, Interrupted, McpServerConfig, ToolConfig, ToolsConfig};

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// SQLite file; created with its directory when missing.
    pub database: PathBuf,
    /// A PostgreSQL URL (`postgres://...`): several instances share it
    /// instead of each having a SQLite file.
    pub database_url: Option<String>,
    pub cluster: ClusterConfig,
    /// The bots, each answering its own `@handle`; the first is the default.
    pub bots: Vec<BotConfig>,
    pub stream: StreamConfig,
    pub limits: LimitsConfig,
    pub demo: DemoConfig,
    pub access: AccessConfig,
    pub search: SearchConfig,
    pub tools: ToolsConfig,
    /// The hand-written fast paths (all on; one is turned off only to
    /// measure what it buys: `STREAMCHAT_LANES_OFF`, docs/BENCHMARKS.md).
    pub lanes: LanesConfig,
    /// Provider endpoint; `None` with no API key means the embedded demo.
    #[serde(skip)]
    pub openai_base_url: Option<String>,
    #[serde(skip)]
    pub openai_api_key: Option<Secret>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BotConfig {
    /// What to write after `@` to ask this bot (letters, digits, `_`, `-`).
    pub handle: String,
    pub model: String,
    pub context_messages: u32,
    pub system_prompt: String,
    /// An OpenAI-compatible endpoint for this bot alone; otherwise the app's.
    pub base_url: Option<String>,
    /// The environment variable holding the key for `base_url`. The app's
    /// `OPENAI_API_KEY` is never sent to a bot's own endpoint.
    pub api_key_env: Option<String>,
    /// For reasoning models: how hard to think (`low`, `medium`, `high`),
    /// sent as `reasoning_effort`. The demo model thinks aloud when it is set.
    pub reasoning_effort: Option<String>,
    /// Most tokens one reply may have the provider generate (sent as
    /// `max_tokens`, or `max_completion_tokens` for a reasoning model).
    pub max_tokens: u32,
    /// The tools it may call (`[[bots.tools]]`).
    pub tools: Vec<ToolConfig>,
    /// The MCP servers whose tools it may call (`[[bots.mcp_servers]]`).
    pub mcp_servers: Vec<McpServerConfig>,
    /// The key read from `api_key_env`.
    #[serde(skip)]
    pub api_key: Option<Secret>,
}

/// How streamed text is committed and published.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamConfig {
    /// Default granularity; a thread may override it.
    pub granularity: Granularity,
    /// Pending text goes out after this long even without a boundary.
    pub max_delay_ms: u64,
    /// Events a viewer may fall behind by before it is resynced from the database.
    pub viewer_buffer: usize,
}

/// Protection for the provider bill and the server.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Replies generating at once on this instance; more are refused.
    pub max_concurrent_replies: usize,
    /// `@gpt` requests per author per minute.
    pub mentions_per_minute: u32,
    /// Retries of a 429 / 5xx answer before the first token.
    pub provider_retries: u32,
    /// First retry delay; doubles each attempt (a `Retry-After` wins).
    pub retry_base_ms: u64,
    /// A reply with no new text for this long is `timed_out`.
    pub idle_timeout_secs: f64,
    /// A reply taking longer than this in all is `timed_out`.
    pub total_timeout_secs: f64,
    /// How often the watchdog looks.
    pub watchdog_period_secs: f64,
    /// Replies one client may have generating at once (beside the global cap).
    pub replies_per_client: usize,
    /// Replies one client may have waiting for a tool-call decision at once
    /// (a waiting reply holds no generation slot).
    pub waiting_replies_per_client: usize,
    /// State-changing requests (posts, new threads, renames, granularity,
    /// Stop / Regenerate / Continue) per client per minute.
    pub writes_per_minute: u32,
    /// Open connections per client address (a trusted proxy's are not counted).
    pub connections_per_client: usize,
    /// Open live subscriptions per client.
    pub subscriptions_per_client: usize,
    /// A request head (and the next one on a kept-alive connection) must
    /// arrive within this; an idle connection is closed after it.
    pub header_timeout_secs: f64,
    /// A connection whose client takes nothing of what it is sent for this
    /// long is closed.
    pub write_timeout_secs: f64,
    /// Largest reply (answer, thinking and tool log together, in bytes; a
    /// continued reply's kept text counts); a reply reaching it ends `done`
    /// with the finish reason `length`, its text kept.
    pub max_reply_bytes: usize,
    /// Largest line of a provider's stream, and largest event (its lines
    /// up to the blank line); a longer one fails the reply.
    pub max_provider_line_bytes: usize,
    /// Database reads (pages, exports, search) longer than this are
    /// cancelled (PostgreSQL; the writer is not affected).
    pub read_timeout_secs: f64,
    /// How long a shutdown (SIGTERM, Ctrl-C) may take: replies are ended or
    /// handed over and the writer commits everything queued within it.
    pub shutdown_secs: f64,
}

/// Who a request comes from, for deployments behind a reverse proxy.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccessConfig {
    /// Who people are: `open` (the name they type), `proxy` (the
    /// identity header below) or `accounts` (built-in sign-in). Default:
    /// `proxy` when an identity header is set, else `accounts`.
    pub mode: Option<AccessMode>,
    /// The built-in accounts' settings (`accounts` mode).
    pub accounts: AccountsConfig,
    /// A header set by a trusted authenticating proxy (oauth2-proxy,
    /// Authelia, ...), e.g. `X-Forwarded-User`. When set, its value is every
    /// post's author and who pressed Stop / Regenerate / Continue, whatever
    /// the form says, and a request without it is refused. Only set this
    /// when every request passes through that proxy.
    pub identity_header: Option<String>,
    /// A header carrying the client's address set by a trusted proxy (e.g.
    /// `X-Forwarded-For`; its last entry is used). Otherwise the address of
    /// the connection is the client's.
    pub client_ip_header: Option<String>,
    /// The addresses (CIDRs) of those proxies: the two headers above are
    /// believed only on connections from them. Default: this machine.
    pub trusted_proxies: Vec<String>,
    /// The `Host` names this app answers to (a name, or name:port); others
    /// get 421 before anything runs. Default: `localhost`, the loopback
    /// addresses and the address it listens on.
    pub allowed_hosts: Vec<String>,
    /// Paths that are the operator's, answered without the identity header.
    pub operator_paths: Vec<String>,
    /// Most members a private thread has, its owner included.
    pub members_per_thread: u32,
    /// OpenID Connect providers to sign in with (`accounts` mode).
    pub oidc: Vec<OidcProviderConfig>,
}

impl AccessConfig {
    /// The mode in force: as set, else `proxy` with an identity header,
    /// else `accounts`.
    pub fn mode(&self) -> AccessMode {
        self.mode.unwrap_or(if self.identity_header.is_some() {
            AccessMode::Proxy
        } else {
            AccessMode::Accounts
        })
    }
}

impl Default for AccessConfig {
    fn default() -> Self {
        Self {
            mode: None,
            accounts: AccountsConfig::default(),
            identity_header: None,
            client_ip_header: None,
            trusted_proxies: vec!["127.0.0.0/8".into(), "::1/128".into()],
            allowed_hosts: Vec::new(),
            operator_paths: vec!["/healthz".into(), "/metrics".into()],
            members_per_thread: 200,
            oidc: Vec::new(),
        }
    }
}

/// Full-text search over message bodies.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SearchConfig {
    /// Off: no search box on any page, and `/api/search` answers 404.
    pub enabled: bool,
}

impl Default for SearchConfig {
    fn default() -> Self {
        Self { enabled: true }
    }
}

/// The hand-written fast paths beside the libraries' paths, each kept only
/// while a same-run measurement shows what it buys (docs/BENCHMARKS.md).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LanesConfig {
    /// A batch of nothing but text as one autocommitted `INSERT` on the
    /// writer's own SQLite connection (`rusqlite`), without a hop to sqlx's
    /// worker thread.
    pub append: bool,
    /// A plain-`http://` provider's stream on a connection the reply's own
    /// task drives (hyper), instead of reqwest's connection task.
    pub http1: bool,
    /// A fresh connection's first subscription served without hyper
    /// (a close-delimited response from one task).
    pub lean_sse: bool,
}

impl Default for LanesConfig {
    fn default() -> Self {
        Self {
            append: true,
            http1: true,
            lean_sse: true,
        }
    }
}

/// Several instances on one PostgreSQL database.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// Whether this instance shares its PostgreSQL database with others
    /// (leases, wake-ups, Stop and limits through the database). Off: it
    /// is the database's only instance (SQLite always is), and a second
    /// one refuses to start.
    pub enabled: bool,
    /// How long an instance's claim on a reply it generates lasts without
    /// renewal (it renews every third of it). After an instance dies,
    /// another takes its replies over once this has run out.
    pub lease_secs: f64,
    /// What another instance does with a reply whose producer died.
    pub orphaned_replies: OrphanedReplies,
    /// This instance's name in leases and logs (default: random, per process).
    pub instance: Option<String>,
    /// Connections this instance opens to PostgreSQL (plus one listening).
    pub max_connections: u32,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OrphanedReplies {
    /// Continue the reply from its stored text (the Continue path).
    #[default]
    Continue,
    /// End it `interrupted`, its text kept.
    Interrupt,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            lease_secs: 10.0,
            orphaned_replies: OrphanedReplies::Continue,
            instance: None,
            max_connections: 10,
        }
    }
}

impl ClusterConfig {
    pub fn lease(&self) -> Duration {
        Duration::from_secs_f64(self.lease_secs)
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DemoConfig {
    pub tokens_per_second: f64,
}

/// A value that must not be logged or sent anywhere but the provider.
#[derive(Clone)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            database: PathBuf::from("data/streamchat.db"),
            database_url: None,
            cluster: ClusterConfig::default(),
            bots: vec![BotConfig::default()],
            stream: StreamConfig::default(),
            limits: LimitsConfig::default(),
            demo: DemoConfig::default(),
            access: AccessConfig::default(),
            search: SearchConfig::default(),
            tools: ToolsConfig::default(),
            lanes: LanesConfig::default(),
            openai_base_url: None,
            openai_api_key: None,
        }
    }
}

impl Default for BotConfig {
    fn default() -> Self {
        Self {
            handle: crate::model::BOT_HANDLE.into(),
            model: "gpt-4o-mini".into(),
            base_url: None,
            api_key_env: None,
            api_key: None,
            reasoning_effort: None,
            max_tokens: 4096,
            tools: Vec::new(),
            mcp_servers: Vec::new(),
            context_messages: 20,
            system_prompt: "You are @gpt, a terse assistant in a group chat. Answer the question \
                            you were mentioned in, briefly and plainly."
                .into(),
        }
    }
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self {
            granularity: Granularity::Token,
            max_delay_ms: 150,
            viewer_buffer: 1024,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_concurrent_replies: 64,
            mentions_per_minute: 20,
            provider_retries: 3,
            retry_base_ms: 500,
            idle_timeout_secs: 60.0,
            total_timeout_secs: 600.0,
            watchdog_period_secs: 2.0,
            replies_per_client: 4,
            waiting_replies_per_client: 4,
            writes_per_minute: 60,
            connections_per_client: 64,
            subscriptions_per_client: 16,
            header_timeout_secs: 10.0,
            write_timeout_secs: 30.0,
            max_reply_bytes: 256 * 1024,
            max_provider_line_bytes: 1024 * 1024,
            read_timeout_secs: 10.0,
            shutdown_secs: 10.0,
        }
    }
}

impl LimitsConfig {
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.idle_timeout_secs)
    }
    pub fn total_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.total_timeout_secs)
    }
    pub fn watchdog_period(&self) -> Duration {
        Duration::from_secs_f64(self.watchdog_period_secs)
    }
    pub fn header_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.header_timeout_secs)
    }
    pub fn write_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.write_timeout_secs)
    }
    pub fn read_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.read_timeout_secs)
    }
    pub fn shutdown_within(&self) -> Duration {
        Duration::from_secs_f64(self.shutdown_secs)
    }
}

impl Default for DemoConfig {
    fn default() -> Self {
        Self {
            tokens_per_second: 30.0,
        }
    }
}

impl Config {
    /// Reads `path` (missing file: defaults) and applies the environment.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let mut config: Config = match std::fs::read_to_string(path) {
            Ok(text) => {
                toml::from_str(&text).with_context(|| format!("reading {}", path.display()))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Config::default(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        config.apply_env(|name| std::env::var(name).ok())?;
        Ok(config)
    }

    /// Overrides settings from environment variables (see README.md).
    pub fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) -> anyhow::Result<()> {
        let set = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        self.database_env(&set)?;
        self.bots_env(&set)?;
        self.stream_env(&set)?;
        self.limits_env(&set)?;
        self.access_env(&set)?;
        self.lanes_env(&set)?;
        self.secrets_env(&set)?;
        self.check_limits()?;
        self.tools_env(&set)?;
        tools::validate(&self.tools, &self.bots)
    }

    /// The database and how instances share it.
    fn database_env(&mut self, set: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<()> {
        if let Some(v) = set("STREAMCHAT_DATABASE") {
            if is_postgres_url(&v) {
                self.database_url = Some(v);
            } else {
                self.database = v.into();
            }
        }
        if let Some(v) = set("DATABASE_URL") {
            self.database_url = Some(v);
        }
        if let Some(url) = &self.database_url {
            anyhow::ensure!(
                is_postgres_url(url),
                "database_url must be a postgres:// URL (for SQLite set `database` to a file)"
            );
        }
        if let Some(v) = set("STREAMCHAT_CLUSTER") {
            self.cluster.enabled = match v.trim() {
                "1" | "true" | "on" => true,
                "0" | "false" | "off" => false,
                _ => anyhow::bail!("STREAMCHAT_CLUSTER must be true or false"),
            };
        }
        if let Some(v) = set("STREAMCHAT_LEASE_SECS") {
            self.cluster.lease_secs = v.parse().context("STREAMCHAT_LEASE_SECS")?;
        }
        if let Some(v) = set("STREAMCHAT_ORPHANED_REPLIES") {
            self.cluster.orphaned_replies = match v.as_str() {
                "continue" => OrphanedReplies::Continue,
                "interrupt" => OrphanedReplies::Interrupt,
                _ => anyhow::bail!("STREAMCHAT_ORPHANED_REPLIES must be continue or interrupt"),
            };
        }
        if let Some(v) = set("STREAMCHAT_INSTANCE") {
            self.cluster.instance = Some(v);
        }
        if let Some(v) = set("STREAMCHAT_DB_CONNECTIONS") {
            self.cluster.max_connections = v.parse().context("STREAMCHAT_DB_CONNECTIONS")?;
        }
        anyhow::ensure!(
            !self.cluster.enabled || self.database_url.is_some(),
            "cluster.enabled needs PostgreSQL (DATABASE_URL): a SQLite file serves one instance"
        );
        anyhow::ensure!(
            self.cluster.lease_secs >= 0.3 && self.cluster.max_connections >= 2,
            "cluster: lease_secs must be at least 0.3 and max_connections at least 2"
        );
        Ok(())
    }

    /// The first (default) bot, which the environment configures.
    fn bots_env(&mut self, set: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<()> {
        anyhow::ensure!(
            !self.bots.is_empty(),
            "at least one [[bots]] entry is needed"
        );
        // The environment configures the first (default) bot.
        let first = &mut self.bots[0];
        if let Some(v) = set("OPENAI_MODEL") {
            first.model = v;
        }
        if let Some(v) = set("STREAMCHAT_SYSTEM_PROMPT") {
            first.system_prompt = v;
        }
        if let Some(v) = set("STREAMCHAT_CONTEXT_MESSAGES") {
            first.context_messages = v.parse().context("STREAMCHAT_CONTEXT_MESSAGES")?;
        }
        Ok(())
    }

    /// The demo model and how replies stream.
    fn stream_env(&mut self, set: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<()> {
        if let Some(v) = set("STREAMCHAT_DEMO_TOKENS_PER_SECOND") {
            self.demo.tokens_per_second = v.parse().context("STREAMCHAT_DEMO_TOKENS_PER_SECOND")?;
        }
        if let Some(v) = set("STREAMCHAT_GRANULARITY") {
            self.stream.granularity = Granularity::parse(&v)
                .context("STREAMCHAT_GRANULARITY must be token, word or sentence")?;
        }
        if let Some(v) = set("STREAMCHAT_MAX_DELAY_MS") {
            self.stream.max_delay_ms = v.parse().context("STREAMCHAT_MAX_DELAY_MS")?;
        }
        Ok(())
    }

    /// Limits and timeouts.
    fn limits_env(&mut self, set: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<()> {
        if let Some(v) = set("STREAMCHAT_MAX_CONCURRENT_REPLIES") {
            self.limits.max_concurrent_replies =
                v.parse().context("STREAMCHAT_MAX_CONCURRENT_REPLIES")?;
        }
        if let Some(v) = set("STREAMCHAT_MENTIONS_PER_MINUTE") {
            self.limits.mentions_per_minute =
                v.parse().context("STREAMCHAT_MENTIONS_PER_MINUTE")?;
        }
        if let Some(v) = set("STREAMCHAT_IDLE_TIMEOUT_SECS") {
            self.limits.idle_timeout_secs = v.parse().context("STREAMCHAT_IDLE_TIMEOUT_SECS")?;
        }
        if let Some(v) = set("STREAMCHAT_TOTAL_TIMEOUT_SECS") {
            self.limits.total_timeout_secs = v.parse().context("STREAMCHAT_TOTAL_TIMEOUT_SECS")?;
        }
        macro_rules! limit {
            ($($var:literal => $field:ident),* $(,)?) => {$(
                if let Some(v) = set($var) {
                    self.limits.$field = v.trim().parse().context($var)?;
                }
            )*};
        }
        limit! {
            "STREAMCHAT_REPLIES_PER_CLIENT" => replies_per_client,
            "STREAMCHAT_WAITING_REPLIES_PER_CLIENT" => waiting_replies_per_client,
            "STREAMCHAT_WRITES_PER_MINUTE" => writes_per_minute,
            "STREAMCHAT_CONNECTIONS_PER_CLIENT" => connections_per_client,
            "STREAMCHAT_SUBSCRIPTIONS_PER_CLIENT" => subscriptions_per_client,
            "STREAMCHAT_HEADER_TIMEOUT_SECS" => header_timeout_secs,
            "STREAMCHAT_WRITE_TIMEOUT_SECS" => write_timeout_secs,
            "STREAMCHAT_MAX_REPLY_BYTES" => max_reply_bytes,
            "STREAMCHAT_MAX_PROVIDER_LINE_BYTES" => max_provider_line_bytes,
            "STREAMCHAT_READ_TIMEOUT_SECS" => read_timeout_secs,
            "STREAMCHAT_SHUTDOWN_SECS" => shutdown_secs,
        }
        Ok(())
    }

    /// Lanes turned off to measure them (`append`, `http1`, `lean_sse`).
    fn lanes_env(&mut self, set: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<()> {
        let Some(off) = set("STREAMCHAT_LANES_OFF") else {
            return Ok(());
        };
        for lane in off.split(',').map(str::trim).filter(|l| !l.is_empty()) {
            match lane {
                "append" => self.lanes.append = false,
                "http1" => self.lanes.http1 = false,
                "lean_sse" => self.lanes.lean_sse = false,
                _ => {
                    anyhow::bail!("STREAMCHAT_LANES_OFF: {lane:?} is not append, http1 or lean_sse")
                }
            }
        }
        Ok(())
    }

    /// Search, and who may ask (identity, proxies, hosts).
    fn access_env(&mut self, set: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<()> {
        if let Some(v) = set("STREAMCHAT_SEARCH") {
            self.search.enabled = match v.trim() {
                "1" | "true" | "on" => true,
                "0" | "false" | "off" => false,
                _ => anyhow::bail!("STREAMCHAT_SEARCH must be true or false"),
            };
        }
        if let Some(v) = set("STREAMCHAT_ACCESS_MODE") {
            self.access.mode = Some(AccessMode::parse(&v).ok_or_else(|| {
                anyhow::anyhow!("STREAMCHAT_ACCESS_MODE: {v:?} is not open, proxy or accounts")
            })?);
        }
        if let Some(v) = set("STREAMCHAT_IDENTITY_HEADER") {
            self.access.identity_header = Some(v);
        }
        if let Some(v) = set("STREAMCHAT_CLIENT_IP_HEADER") {
            self.access.client_ip_header = Some(v);
        }
        let list = |v: String| -> Vec<String> {
            v.split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        };
        if let Some(v) = set("STREAMCHAT_TRUSTED_PROXIES") {
            self.access.trusted_proxies = list(v);
        }
        if let Some(v) = set("STREAMCHAT_ALLOWED_HOSTS") {
            self.access.allowed_hosts = list(v);
        }
        for provider in &mut self.access.oidc {
            if let Some(name) = provider.client_secret_env.clone() {
                provider.client_secret = set(&name).map(Secret);
            }
        }
        self.access.accounts.check()?;
        for provider in &self.access.oidc {
            provider.check()?;
        }
        anyhow::ensure!(
            self.access.members_per_thread >= 1,
            "access.members_per_thread must be at least 1 (the owner)"
        );
        anyhow::ensure!(
            self.access.mode != Some(AccessMode::Proxy) || self.access.identity_header.is_some(),
            "access.mode = \"proxy\" needs access.identity_header (the header the proxy sets)"
        );
        anyhow::ensure!(
            self.access.mode.is_none_or(|m| m == AccessMode::Proxy)
                || self.access.identity_header.is_none(),
            "access.identity_header is only read in access.mode = \"proxy\""
        );
        for cidr in &self.access.trusted_proxies {
            anyhow::ensure!(
                parse_cidr(cidr).is_some(),
                "access.trusted_proxies: {cidr:?} is not an address or CIDR"
            );
        }
        for header in [&self.access.identity_header, &self.access.client_ip_header]
            .into_iter()
            .flatten()
        {
            anyhow::ensure!(
                axum::http::HeaderName::from_bytes(header.as_bytes()).is_ok(),
                "access: {header:?} is not a header name"
            );
        }
        Ok(())
    }

    /// Secrets (environment only), and each bot's handle and key.
    fn secrets_env(&mut self, set: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<()> {
        self.openai_base_url = set("OPENAI_BASE_URL");
        self.openai_api_key = set("OPENAI_API_KEY").map(Secret);
        anyhow::ensure!(
            self.demo.tokens_per_second > 0.0,
            "demo.tokens_per_second must be positive"
        );
        let mut handles = std::collections::HashSet::new();
        for bot in &mut self.bots {
            bot.api_key = bot.api_key_env.as_deref().and_then(set).map(Secret);
            bot.handle = bot.handle.trim_start_matches('@').to_lowercase();
            anyhow::ensure!(
                !bot.handle.is_empty()
                    && bot
                        .handle
                        .chars()
                        .all(|c| c.is_alphanumeric() || c == '_' || c == '-'),
                "bot handle {:?}: use letters, digits, _ and - only",
                bot.handle
            );
            anyhow::ensure!(
                handles.insert(bot.handle.clone()),
                "bot handle @{} is used twice",
                bot.handle
            );
        }
        Ok(())
    }

    /// Limits that would make the app refuse everything, or nothing.
    fn check_limits(&self) -> anyhow::Result<()> {
        let l = &self.limits;
        anyhow::ensure!(
            l.idle_timeout_secs > 0.0 && l.total_timeout_secs > 0.0 && l.watchdog_period_secs > 0.0,
            "limits: timeouts and the watchdog period must be positive"
        );
        anyhow::ensure!(
            l.max_concurrent_replies > 0,
            "limits.max_concurrent_replies must be at least 1"
        );
        anyhow::ensure!(
            l.replies_per_client > 0
                && l.writes_per_minute > 0
                && l.connections_per_client > 0
                && l.subscriptions_per_client > 0
                && l.max_reply_bytes > 0
                && l.max_provider_line_bytes >= 1024,
            "limits: per-client caps and sizes must be at least 1 (provider lines at least 1024 bytes)"
        );
        anyhow::ensure!(
            l.header_timeout_secs > 0.0
                && l.write_timeout_secs > 0.0
                && l.read_timeout_secs > 0.0
                && l.shutdown_secs > 0.0,
            "limits: header, write, read and shutdown timeouts must be positive"
        );
        anyhow::ensure!(
            self.stream.viewer_buffer > 0,
            "stream.viewer_buffer must be at least 1"
        );
        Ok(())
    }

    /// Who may approve a tool call.
    fn tools_env(&mut self, set: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<()> {
        if let Some(v) = set("STREAMCHAT_TOOL_APPROVER") {
            self.tools.approver = match v.trim() {
                "requester" => Approver::Requester,
                "anyone" => Approver::Anyone,
                _ => anyhow::bail!("STREAMCHAT_TOOL_APPROVER must be requester or anyone"),
            };
        }
        Ok(())
    }

    /// The PostgreSQL URL, when several instances share one database.
    pub fn postgres_url(&self) -> Option<&str> {
        self.database_url.as_deref()
    }

    /// Whether replies come from the embedded demo model.
    pub fn uses_demo(&self) -> bool {
        self.openai_base_url.is_none() && self.openai_api_key.is_none()
    }
}

/// An address or CIDR (`10.0.0.0/8`, `::1`, `192.168.1.7`).
pub fn parse_cidr(text: &str) -> Option<ipnet::IpNet> {
    let text = text.trim();
    text.parse::<ipnet::IpNet>().ok().or_else(|| {
        text.parse::<std::net::IpAddr>()
            .ok()
            .map(ipnet::IpNet::from)
    })
}

fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

#[cfg(test)]
mod tests;
