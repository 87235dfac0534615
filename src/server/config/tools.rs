//! The settings of bots' tools: which tools a bot may call (built in, or
//! an MCP server's), which need approval, and the limits of the loop.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::BotConfig;

/// Whether a call waits for someone in the thread to approve it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Approval {
    #[default]
    Never,
    Always,
}

/// Who may approve or deny a call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Approver {
    /// The person whose message started the reply.
    #[default]
    Requester,
    /// Anyone who can read the thread.
    Anyone,
}

/// What happens to a call that was running when its producer stopped
/// (a crash, a takeover) and whose tool is not idempotent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Interrupted {
    /// It ends `failed`, and the model is told it did not run to the end.
    #[default]
    Fail,
    /// It waits for approval again (someone decides whether to run it twice).
    Ask,
}

/// One tool a bot may call.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolConfig {
    /// A built-in tool (`search_threads`, `recent_messages`,
    /// `current_time`), or `server/tool` for a tool of one of the bot's MCP
    /// servers (`server/*`: all of them).
    pub name: String,
    #[serde(default)]
    pub approval: Approval,
    /// Whether running it twice is harmless: a call that was running when
    /// its producer stopped is run again only if so. Built-in tools are;
    /// an MCP server's are not unless said here.
    #[serde(default)]
    pub idempotent: Option<bool>,
}

/// A Model Context Protocol server whose tools a bot may call. It gets
/// only what it is given: a program starts with a cleared environment
/// (`PATH` and what `env` / `env_passthrough` name); an endpoint gets its
/// credential from a header whose value is read from this server's
/// environment (`bearer_env`, `headers`), never from its URL.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpServerConfig {
    /// How the bot's tools name it (`name/tool`).
    pub name: String,
    /// A program speaking MCP on its stdin and stdout ...
    #[serde(default)]
    pub command: Option<String>,
    #[serde(default)]
    pub args: Vec<String>,
    /// Variables the program gets, with these values.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Variables of this server's own environment the program gets too.
    #[serde(default)]
    pub env_passthrough: Vec<String>,
    /// ... or a streamable-HTTP endpoint.
    #[serde(default)]
    pub url: Option<String>,
    /// The environment variable holding the endpoint's bearer token
    /// (sent as `Authorization: Bearer ...`).
    #[serde(default)]
    pub bearer_env: Option<String>,
    /// Headers sent to the endpoint: header name -> the environment
    /// variable holding its value.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Longest wait for the server to start, list its tools or answer a call.
    #[serde(default = "default_mcp_timeout")]
    pub timeout_secs: f64,
}

impl Default for McpServerConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            command: None,
            args: Vec::new(),
            env: BTreeMap::new(),
            env_passthrough: Vec::new(),
            url: None,
            bearer_env: None,
            headers: BTreeMap::new(),
            timeout_secs: default_mcp_timeout(),
        }
    }
}

fn default_mcp_timeout() -> f64 {
    30.0
}

/// The tool loop's limits (`[tools]`).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ToolsConfig {
    /// Model steps one reply may take (each a provider call); a model still
    /// calling tools after this many ends the reply `failed`.
    pub max_steps: u32,
    /// Calls one step may make; more are answered as refused.
    pub max_calls_per_step: u32,
    /// Largest tool result kept and sent back to the model, in bytes.
    pub max_result_bytes: usize,
    /// Largest arguments a call may have, in bytes (the call fails past it).
    pub max_argument_bytes: usize,
    /// Largest message an MCP server may send (a stdio line, an HTTP body
    /// or event), counted as it is read; past it the call fails.
    pub max_message_bytes: usize,
    /// How long a built-in tool may run.
    pub timeout_secs: f64,
    /// How long a call waits for approval before it is denied.
    pub approval_timeout_secs: f64,
    /// Who may approve.
    pub approver: Approver,
    /// A non-idempotent call interrupted while running: fail or ask again.
    pub on_interrupted: Interrupted,
}

impl Default for ToolsConfig {
    fn default() -> Self {
        Self {
            max_steps: 6,
            max_calls_per_step: 8,
            max_result_bytes: 16 * 1024,
            max_argument_bytes: 16 * 1024,
            max_message_bytes: 1024 * 1024,
            timeout_secs: 10.0,
            approval_timeout_secs: 600.0,
            approver: Approver::Requester,
            on_interrupted: Interrupted::Fail,
        }
    }
}

/// Checks the tool settings: known built-in tools, MCP tools naming a
/// configured server, each server with a command or a url, sane limits.
pub(super) fn validate(tools: &ToolsConfig, bots: &[BotConfig]) -> anyhow::Result<()> {
    const BUILT_IN: [&str; 3] = ["search_threads", "recent_messages", "current_time"];
    anyhow::ensure!(
        tools.max_steps >= 1
            && tools.max_calls_per_step >= 1
            && tools.max_result_bytes >= 256
            && tools.max_argument_bytes >= 256
            && tools.max_message_bytes >= 1024
            && tools.timeout_secs > 0.0
            && tools.approval_timeout_secs > 0.0,
        "tools: steps and calls must be at least 1, sizes at least 256 bytes, timeouts positive"
    );
    for bot in bots {
        let mut names = std::collections::HashSet::new();
        for server in &bot.mcp_servers {
            anyhow::ensure!(
                names.insert(server.name.as_str()),
                "@{}: MCP server {:?} is configured twice",
                bot.handle,
                server.name
            );
            validate_server(&bot.handle, server)?;
        }
        for tool in &bot.tools {
            match tool.name.split_once('/') {
                Some((server, _)) => anyhow::ensure!(
                    names.contains(server),
                    "@{}: tool {:?} names no configured MCP server",
                    bot.handle,
                    tool.name
                ),
                None => anyhow::ensure!(
                    BUILT_IN.contains(&tool.name.as_str()),
                    "@{}: {:?} is not a built-in tool ({})",
                    bot.handle,
                    tool.name,
                    BUILT_IN.join(", ")
                ),
            }
        }
    }
    Ok(())
}

/// One MCP server's settings: a name, a command or a url (without a
/// credential in it), each setting where it applies, a positive timeout.
fn validate_server(handle: &str, server: &McpServerConfig) -> anyhow::Result<()> {
    anyhow::ensure!(
        !server.name.is_empty() && !server.name.contains('/'),
        "@{}: an MCP server needs a name without '/'",
        handle
    );
    anyhow::ensure!(
        server.command.is_some() != server.url.is_some(),
        "@{}: MCP server {:?} needs either a command or a url",
        handle,
        server.name
    );
    if let Some(url) = &server.url {
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| anyhow::anyhow!("@{}: MCP server {:?}: url: {e}", handle, server.name))?;
        anyhow::ensure!(
            parsed.username().is_empty() && parsed.password().is_none(),
            "@{}: MCP server {:?}: no credential in the url; name the variable holding \
                 it in bearer_env or headers",
            handle,
            server.name
        );
    }
    anyhow::ensure!(
        server.command.is_some() || (server.env.is_empty() && server.env_passthrough.is_empty()),
        "@{}: MCP server {:?}: env and env_passthrough are for a command",
        handle,
        server.name
    );
    anyhow::ensure!(
        server.url.is_some() || (server.bearer_env.is_none() && server.headers.is_empty()),
        "@{}: MCP server {:?}: bearer_env and headers are for a url",
        handle,
        server.name
    );
    for header in server.headers.keys() {
        anyhow::ensure!(
            axum::http::HeaderName::from_bytes(header.as_bytes()).is_ok(),
            "@{}: MCP server {:?}: {header:?} is not a header name",
            handle,
            server.name
        );
    }
    anyhow::ensure!(
        server.timeout_secs > 0.0,
        "@{}: MCP server {:?}: timeout_secs must be positive",
        handle,
        server.name
    );
    Ok(())
}
