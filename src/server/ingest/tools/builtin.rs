//! The tools every bot may be given, needing no network: search the
//! threads the asker can see, read the current thread's recent messages,
//! and the current time.

use serde_json::{json, Value};

use super::CallContext;
use crate::model::Role;
use crate::server::store::SearchScope;

/// The built-in tools, by the name the model calls them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Builtin {
    SearchThreads,
    RecentMessages,
    CurrentTime,
}

/// Most hits `search_threads` returns.
const SEARCH_HITS: i64 = 10;
/// Most messages `recent_messages` returns.
const RECENT_MAX: u64 = 50;

impl Builtin {
    pub const ALL: [Builtin; 3] = [
        Builtin::SearchThreads,
        Builtin::RecentMessages,
        Builtin::CurrentTime,
    ];

    pub fn named(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|b| b.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Builtin::SearchThreads => "search_threads",
            Builtin::RecentMessages => "recent_messages",
            Builtin::CurrentTime => "current_time",
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            Builtin::SearchThreads => {
                "Search the chat's messages (every listed thread, and this one) for words. \
                 Returns the matching messages with their thread, author and a snippet."
            }
            Builtin::RecentMessages => {
                "Read the most recent messages of this thread before the question, oldest first."
            }
            Builtin::CurrentTime => "The current date and time (UTC).",
        }
    }

    pub fn parameters(self) -> Value {
        match self {
            Builtin::SearchThreads => json!({
                "type": "object",
                "properties": {"query": {"type": "string", "description": "The words to look for."}},
                "required": ["query"],
            }),
            Builtin::RecentMessages => json!({
                "type": "object",
                "properties": {"count": {
                    "type": "integer", "minimum": 1, "maximum": RECENT_MAX,
                    "description": "How many messages (default 10)."
                }},
            }),
            Builtin::CurrentTime => json!({"type": "object", "properties": {}}),
        }
    }

    /// Runs the tool; `Err` is a failure the model is told of.
    pub async fn call(self, arguments: &Value, cx: &CallContext<'_>) -> Result<String, String> {
        match self {
            Builtin::SearchThreads => search(arguments, cx).await,
            Builtin::RecentMessages => recent(arguments, cx).await,
            Builtin::CurrentTime => {
                let now = crate::server::now_ms();
                Ok(json!({
                    "utc": format!("{} UTC", crate::model::format_datetime_utc(now)),
                    "unix_ms": now,
                })
                .to_string())
            }
        }
    }
}

async fn search(arguments: &Value, cx: &CallContext<'_>) -> Result<String, String> {
    if !cx.search_enabled {
        return Err("Search is turned off on this server.".into());
    }
    let query = arguments["query"]
        .as_str()
        .ok_or("`query` (a string) is required.")?;
    let terms = crate::search::terms(query);
    if terms.is_empty() {
        return Err("The query has no words to search for.".into());
    }
    let failed = |e| {
        tracing::warn!(error = %e, "search_threads: the search failed");
        "The search failed on the server.".to_owned()
    };
    // What the asker can see: every listed thread, and the one they are in.
    let mut found = cx
        .store
        .search(&terms, SearchScope::Listed, None, SEARCH_HITS)
        .await
        .map_err(failed)?;
    let here = cx
        .store
        .search(&terms, SearchScope::Thread(cx.thread_id), None, SEARCH_HITS)
        .await
        .map_err(failed)?;
    for hit in here {
        if !found.iter().any(|f| f.id == hit.id) {
            found.push(hit);
        }
    }
    found.sort_by_key(|m| std::cmp::Reverse(m.id));
    found.truncate(SEARCH_HITS as usize);
    let hits: Vec<Value> = found
        .into_iter()
        .map(|m| {
            let snippet: String = crate::search::snippet(&m.body, &terms)
                .into_iter()
                .map(|f| f.text)
                .collect();
            json!({
                "thread": m.thread_id,
                "thread_title": m.thread_title,
                "message_id": m.id,
                "author": m.author,
                "time": format!("{} UTC", crate::model::format_datetime_utc(m.created_at)),
                "text": snippet,
            })
        })
        .collect();
    Ok(json!({ "hits": hits }).to_string())
}

async fn recent(arguments: &Value, cx: &CallContext<'_>) -> Result<String, String> {
    let count = arguments["count"]
        .as_u64()
        .unwrap_or(10)
        .clamp(1, RECENT_MAX);
    let messages = cx
        .store
        .context(cx.thread_id, cx.before_id, count as u32)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "recent_messages: the read failed");
            "Could not read the thread.".to_owned()
        })?;
    let messages: Vec<Value> = messages
        .into_iter()
        .map(|m| {
            json!({
                "author": m.author,
                "role": if m.role == Role::User { "user" } else { "assistant" },
                "time": format!("{} UTC", crate::model::format_datetime_utc(m.created_at)),
                "text": crate::tools::bounded(&m.body, 2000),
            })
        })
        .collect();
    Ok(json!({ "messages": messages }).to_string())
}
