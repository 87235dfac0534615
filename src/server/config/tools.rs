//! The settings of bots' tools: which tools a bot may call (built in, or
//! an MCP server's), which need approval, and the limits of the loop.

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

/// A Model Context Protocol server whose tools a bot may call.
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
    /// ... or a streamable-HTTP endpoint.
    #[serde(default)]
    pub url: Option<String>,
    /// Longest wait for the server to start, list its tools or answer a call.
    #[serde(default = "default_mcp_timeout")]
    pub timeout_secs: f64,
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
            && tools.timeout_secs > 0.0
            && tools.approval_timeout_secs > 0.0,
        "tools: steps and calls must be at least 1, sizes at least 256 bytes, timeouts positive"
    );
    for bot in bots {
        let mut names = std::collections::HashSet::new();
        for server in &bot.mcp_servers {
            anyhow::ensure!(
                !server.name.is_empty() && !server.name.contains('/'),
                "@{}: an MCP server needs a name without '/'",
                bot.handle
            );
            anyhow::ensure!(
                names.insert(server.name.as_str()),
                "@{}: MCP server {:?} is configured twice",
                bot.handle,
                server.name
            );
            anyhow::ensure!(
                server.command.is_some() != server.url.is_some(),
                "@{}: MCP server {:?} needs either a command or a url",
                bot.handle,
                server.name
            );
            anyhow::ensure!(
                server.timeout_secs > 0.0,
                "@{}: MCP server {:?}: timeout_secs must be positive",
                bot.handle,
                server.name
            );
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
