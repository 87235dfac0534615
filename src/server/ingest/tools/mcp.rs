//! A Model Context Protocol server's tools, through `rmcp` (the official
//! Rust SDK): a program speaking MCP on its stdin and stdout, or a
//! streamable-HTTP endpoint. One connection per configured server, made on
//! first use and kept (a server that went away is connected again on the
//! next use); every step (start, listing, call) has the server's timeout.
//! What a server says is untrusted: names are made safe for the model,
//! descriptions and results are bounded.

use std::time::Duration;

use rmcp::{
    model::CallToolRequestParams,
    service::{Peer, RunningService},
    transport::{StreamableHttpClientTransport, TokioChildProcess},
    RoleClient, ServiceExt,
};
use serde_json::Value;
use tokio::sync::Mutex;

use crate::server::config::McpServerConfig;

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
    peer: Peer<RoleClient>,
    tools: Vec<ListedTool>,
}

pub struct McpServer {
    config: McpServerConfig,
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
    pub fn new(config: McpServerConfig) -> Self {
        Self {
            config,
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
        let (_, tools) = self.connected().await?;
        Ok(tools)
    }

    /// Calls `tool`; `Err` is the server's refusal or a failure to reach it.
    pub async fn call(&self, tool: &str, arguments: Value) -> Result<String, String> {
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
        let service = match (&self.config.command, &self.config.url) {
            (Some(command), _) => {
                let mut cmd = tokio::process::Command::new(command);
                cmd.args(&self.config.args)
                    .stderr(std::process::Stdio::null())
                    .kill_on_drop(true);
                let transport = TokioChildProcess::new(cmd).map_err(|e| {
                    format!("The MCP server `{name}` could not be started (`{command}`): {e}")
                })?;
                ().serve(transport).await.map_err(|e| {
                    format!("The MCP server `{name}` (`{command}`) did not start: {e}")
                })?
            }
            (None, Some(url)) => {
                let transport = StreamableHttpClientTransport::from_uri(url.as_str());
                ().serve(transport).await.map_err(|e| {
                    format!("The MCP server `{name}` ({url}) could not be reached: {e}")
                })?
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
            tools,
        })
    }
}
