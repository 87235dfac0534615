//! A Model Context Protocol server's tools, through `rmcp` (the official
//! Rust SDK): a program speaking MCP on its stdin and stdout, or a
//! streamable-HTTP endpoint. One connection per configured server, made on
//! first use and kept (a server that went away is connected again on the
//! next use); every step (start, listing, call) has the server's timeout.
//! What a server says is untrusted: every message is capped while it is
//! read (a stdio line, an HTTP body or event: `tools.max_message_bytes`),
//! names are made safe for the model, descriptions and results are
//! bounded, and its errors are shown cut, without URLs or key-like text.
//! What a server is given is only what its configuration names (see
//! [`McpServerConfig`]).

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use rmcp::{
    model::CallToolRequestParams,
    service::{Peer, RunningService},
    transport::{
        async_rw::AsyncRwTransport, streamable_http_client::StreamableHttpClientTransportConfig,
        StreamableHttpClientTransport,
    },
    RoleClient, ServiceExt,
};
use serde_json::Value;
use tokio::sync::Mutex;

use super::capped::CappedLines;
use crate::server::config::McpServerConfig;
use crate::server::ingest::provider::shown_without_urls;

/// Longest tool description passed to the model, in bytes.
const MAX_DESCRIPTION: usize = 2048;
/// Most tools taken from one server.
const MAX_TOOLS: usize = 64;

/// A tool a server lists.
#[derive(Clone, Debug)]
pub struct ListedTool {
    pub name: String,
    pub description: String,
    pub parameters: Value,
}

struct Connected {
    /// Kept so the connection (and a child process) lives; dropped, it ends.
    service: RunningService<RoleClient, ()>,
    /// A stdio server's process, killed when this is dropped.
    _child: Option<tokio::process::Child>,
    peer: Peer<RoleClient>,
    tools: Vec<ListedTool>,
}

pub struct McpServer {
    config: McpServerConfig,
    /// Largest message read from it (a line, a body, an event).
    max_message: usize,
    /// Set when the server sent a longer one (its connection is then closed).
    oversized: Arc<AtomicBool>,
    /// The connection, made on first use. The lock is held while
    /// connecting (so one use connects), never during a call.
    connection: Mutex<Option<Connected>>,
}

/// The name the model calls a server's tool by: `server__tool`, in the
/// characters and length OpenAI accepts (`[A-Za-z0-9_-]{1,64}`).
pub fn model_name(server: &str, tool: &str) -> String {
    let name: String = format!("{server}__{tool}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    name
}

impl McpServer {
    pub fn new(config: McpServerConfig, max_message: usize) -> Self {
        Self {
            config,
            max_message,
            oversized: Arc::default(),
            connection: Mutex::new(None),
        }
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs_f64(self.config.timeout_secs)
    }

    /// The server's tools, connecting first if needed.
    pub async fn tools(&self) -> Result<Vec<ListedTool>, String> {
        let (_, tools) = self.connected().await.map_err(|e| self.said(&e))?;
        Ok(tools)
    }

    /// Calls `tool`; `Err` is the server's refusal or a failure to reach it,
    /// in words safe to show (cut, no URL, nothing key-like).
    pub async fn call(&self, tool: &str, arguments: Value) -> Result<String, String> {
        self.call_unshown(tool, arguments)
            .await
            .map_err(|e| self.said(&e))
    }

    /// A server's (or our) words about it, as viewers may see them. A
    /// message past the cap is said to be so, whatever else failed.
    fn said(&self, words: &str) -> String {
        if self.oversized.load(Ordering::Relaxed) {
            return format!(
                "The MCP server `{}` sent a message longer than {} bytes; the call was ended.",
                self.name(),
                self.max_message
            );
        }
        shown_without_urls(words)
    }

    async fn call_unshown(&self, tool: &str, arguments: Value) -> Result<String, String> {
        let (peer, _) = self.connected().await?;
        let Value::Object(arguments) = arguments else {
            return Err("The arguments must be a JSON object.".into());
        };
        let params = CallToolRequestParams::new(tool.to_owned()).with_arguments(arguments);
        let result = tokio::time::timeout(self.timeout(), peer.call_tool(params))
            .await
            .map_err(|_| {
                format!(
                    "The MCP server `{}` did not answer within {} s.",
                    self.name(),
                    self.config.timeout_secs
                )
            })?
            .map_err(|e| format!("The MCP server `{}` failed the call: {e}", self.name()))?;
        let mut text: Vec<String> = result
            .content
            .iter()
            .filter_map(|block| block.as_text().map(|t| t.text.clone()))
            .collect();
        if text.is_empty() {
            if let Some(structured) = &result.structured_content {
                text.push(structured.to_string());
            }
        }
        let text = text.join("\n");
        if result.is_error == Some(true) {
            Err(text)
        } else {
            Ok(text)
        }
    }

    async fn connected(&self) -> Result<(Peer<RoleClient>, Vec<ListedTool>), String> {
        let mut slot = self.connection.lock().await;
        if let Some(connected) = slot.as_ref() {
            if !connected.service.is_transport_closed() {
                return Ok((connected.peer.clone(), connected.tools.clone()));
            }
            tracing::warn!(
                server = self.name(),
                "MCP server went away; connecting again"
            );
        }
        let connected = tokio::time::timeout(self.timeout(), self.connect())
            .await
            .map_err(|_| {
                format!(
                    "The MCP server `{}` did not start within {} s.",
                    self.name(),
                    self.config.timeout_secs
                )
            })??;
        let answer = (connected.peer.clone(), connected.tools.clone());
        *slot = Some(connected);
        Ok(answer)
    }

    async fn connect(&self) -> Result<Connected, String> {
        let name = self.name();
        self.oversized.store(false, Ordering::Relaxed);
        let (service, child) = match (&self.config.command, &self.config.url) {
            (Some(command), _) => {
                let mut child = self.command(command).spawn().map_err(|e| {
                    format!("The MCP server `{name}` could not be started (`{command}`): {e}")
                })?;
                let (Some(stdout), Some(stdin)) = (child.stdout.take(), child.stdin.take()) else {
                    return Err(format!("The MCP server `{name}` has no stdin or stdout."));
                };
                let stdout = CappedLines::new(stdout, self.max_message, self.oversized.clone());
                let transport = AsyncRwTransport::new_client(stdout, stdin)
                    .with_max_line_length(self.max_message.saturating_add(1));
                let service = ().serve(transport).await.map_err(|e| {
                    format!("The MCP server `{name}` (`{command}`) did not start: {e}")
                })?;
                (service, Some(child))
            }
            (None, Some(url)) => {
                let config = StreamableHttpClientTransportConfig::with_uri(url.as_str())
                    .custom_headers(self.headers()?)
                    .max_json_response_size(self.max_message)
                    .max_sse_event_size(self.max_message)
                    .max_error_response_size(self.max_message.min(64 * 1024));
                let config = match &self.config.bearer_env {
                    Some(var) => config.auth_header(secret_from(name, var)?),
                    None => config,
                };
                let transport =
                    StreamableHttpClientTransport::with_client(reqwest::Client::new(), config);
                let service = ()
                    .serve(transport)
                    .await
                    .map_err(|e| format!("The MCP server `{name}` could not be reached: {e}"))?;
                (service, None)
            }
            (None, None) => {
                return Err(format!(
                    "The MCP server `{name}` has neither a command nor a url."
                ))
            }
        };
        let listed = service
            .list_all_tools()
            .await
            .map_err(|e| format!("The MCP server `{name}` did not list its tools: {e}"))?;
        let tools = listed
            .into_iter()
            .take(MAX_TOOLS)
            .map(|tool| ListedTool {
                name: tool.name.to_string(),
                description: crate::tools::bounded(
                    tool.description.as_deref().unwrap_or_default(),
                    MAX_DESCRIPTION,
                ),
                parameters: Value::Object((*tool.input_schema).clone()),
            })
            .collect();
        tracing::info!(server = name, "MCP server connected");
        Ok(Connected {
            peer: service.peer().clone(),
            service,
            _child: child,
            tools,
        })
    }

    /// A stdio server's command: a cleared environment with only `PATH`
    /// (so a script finds its interpreter), the variables `env_passthrough`
    /// names and those `env` sets; its stderr discarded.
    fn command(&self, program: &str) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(&self.config.args).env_clear();
        let passed =
            std::iter::once("PATH").chain(self.config.env_passthrough.iter().map(String::as_str));
        for var in passed {
            if let Some(value) = std::env::var_os(var) {
                cmd.env(var, value);
            }
        }
        cmd.envs(&self.config.env)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    /// An endpoint's configured headers, each value read from the variable
    /// it names.
    fn headers(&self) -> Result<HashMap<axum::http::HeaderName, axum::http::HeaderValue>, String> {
        let name = self.name();
        self.config
            .headers
            .iter()
            .map(|(header, var)| {
                let header =
                    axum::http::HeaderName::from_bytes(header.as_bytes()).map_err(|_| {
                        format!("The MCP server `{name}`: {header:?} is not a header name.")
                    })?;
                let value =
                    axum::http::HeaderValue::from_str(&secret_from(name, var)?).map_err(|_| {
                        format!("The MCP server `{name}`: ${var} is not a header value.")
                    })?;
                Ok((header, value))
            })
            .collect()
    }
}

/// The value of environment variable `var`, the credential of server `name`.
fn secret_from(name: &str, var: &str) -> Result<String, String> {
    std::env::var(var).map_err(|_| {
        format!("The MCP server `{name}` needs its credential in ${var}, which is not set.")
    })
}
