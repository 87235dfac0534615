//! The tools a bot may call: built in ([`builtin`]) or an MCP server's
//! ([`mcp`]). A bot's [`Toolbox`] comes from its `[[bots.tools]]` and
//! `[[bots.mcp_servers]]`; for each reply it lists what the model is
//! offered ([`Toolbox::tools`], connecting MCP servers on first use) and
//! runs a call with a timeout and its result bounded. Results are
//! untrusted text: stored as they are (bounded), shown only through the
//! page's safe renderer.

pub mod builtin;
mod capped;
pub mod mcp;

use std::{sync::Arc, time::Duration};

use serde_json::Value;

use self::builtin::Builtin;
use super::provider::{FunctionDefinition, ToolDefinition};
use crate::server::config::{Approval, BotConfig, ToolConfig, ToolsConfig};
use crate::server::store::Store;

/// What a running call may read: where it was asked.
pub struct CallContext<'a> {
    pub store: &'a Store,
    pub thread_id: &'a str,
    /// The reply's prompt is the thread's messages with ids below this.
    pub before_id: i64,
    pub search_enabled: bool,
}

/// One tool as offered to the model for a reply.
#[derive(Clone, Debug)]
pub struct Tool {
    pub definition: ToolDefinition,
    pub approval: Approval,
    /// Whether running it twice is harmless (see [`ToolConfig::idempotent`]).
    pub idempotent: bool,
    target: Target,
}

#[derive(Clone, Debug)]
enum Target {
    Builtin(Builtin),
    Mcp { server: usize, tool: String },
}

impl Tool {
    pub fn name(&self) -> &str {
        &self.definition.function.name
    }
}

/// The tools one bot has.
pub struct Toolbox {
    builtins: Vec<(Builtin, Approval, bool)>,
    servers: Vec<Arc<mcp::McpServer>>,
    /// Entries naming MCP tools (`server/tool`, `server/*`).
    mcp_rules: Vec<ToolConfig>,
    limits: ToolsConfig,
}

impl Toolbox {
    pub fn new(bot: &BotConfig, limits: &ToolsConfig) -> Self {
        let builtins = bot
            .tools
            .iter()
            .filter_map(|t| {
                Builtin::named(&t.name).map(|b| (b, t.approval, t.idempotent.unwrap_or(true)))
            })
            .collect();
        Self {
            builtins,
            servers: bot
                .mcp_servers
                .iter()
                .map(|config| {
                    Arc::new(mcp::McpServer::new(
                        config.clone(),
                        limits.max_message_bytes,
                    ))
                })
                .collect(),
            mcp_rules: bot
                .tools
                .iter()
                .filter(|t| t.name.contains('/'))
                .cloned()
                .collect(),
            limits: limits.clone(),
        }
    }

    /// Whether the bot has any tool at all.
    pub fn is_empty(&self) -> bool {
        self.builtins.is_empty() && self.mcp_rules.is_empty()
    }

    /// The tools the model is offered now. An MCP server that cannot be
    /// reached is an error naming it (the reply fails saying so).
    pub async fn tools(&self) -> Result<Vec<Tool>, String> {
        let mut tools: Vec<Tool> = self
            .builtins
            .iter()
            .map(|&(builtin, approval, idempotent)| Tool {
                definition: definition(
                    builtin.name().into(),
                    builtin.description().into(),
                    builtin.parameters(),
                ),
                approval,
                idempotent,
                target: Target::Builtin(builtin),
            })
            .collect();
        for (index, server) in self.servers.iter().enumerate() {
            let rules: Vec<&ToolConfig> = self
                .mcp_rules
                .iter()
                .filter(|r| r.name.split('/').next() == Some(server.name()))
                .collect();
            if rules.is_empty() {
                continue;
            }
            for listed in server.tools().await? {
                let exact = format!("{}/{}", server.name(), listed.name);
                let Some(rule) = rules
                    .iter()
                    .find(|r| r.name == exact)
                    .or_else(|| rules.iter().find(|r| r.name.ends_with("/*")))
                else {
                    continue;
                };
                tools.push(Tool {
                    definition: definition(
                        mcp::model_name(server.name(), &listed.name),
                        listed.description.clone(),
                        listed.parameters.clone(),
                    ),
                    approval: rule.approval,
                    idempotent: rule.idempotent.unwrap_or(false),
                    target: Target::Mcp {
                        server: index,
                        tool: listed.name.clone(),
                    },
                });
            }
        }
        Ok(tools)
    }

    /// Runs a call; `Err` is a failure the model is told of. The result is
    /// cut to the configured size.
    pub async fn call(
        &self,
        tool: &Tool,
        arguments: &str,
        cx: &CallContext<'_>,
    ) -> Result<String, String> {
        let arguments: Value = if arguments.trim().is_empty() {
            Value::Object(Default::default())
        } else {
            serde_json::from_str(arguments)
                .map_err(|e| format!("The arguments are not valid JSON: {e}."))?
        };
        let result = match &tool.target {
            Target::Builtin(builtin) => {
                let timeout = Duration::from_secs_f64(self.limits.timeout_secs);
                tokio::time::timeout(timeout, builtin.call(&arguments, cx))
                    .await
                    .unwrap_or_else(|_| {
                        Err(format!(
                            "The tool took longer than {} s.",
                            self.limits.timeout_secs
                        ))
                    })
            }
            Target::Mcp { server, tool } => self.servers[*server].call(tool, arguments).await,
        };
        let max = self.limits.max_result_bytes;
        result
            .map(|out| crate::tools::bounded(&out, max))
            .map_err(|e| crate::tools::bounded(&e, max))
    }
}

fn definition(name: String, description: String, parameters: Value) -> ToolDefinition {
    ToolDefinition {
        kind: "function",
        function: FunctionDefinition {
            name,
            description,
            parameters,
        },
    }
}
