//! The demo model's tool calls: offered tools and asked to search, to read
//! the thread or for the time, it calls the matching built-in tool (its
//! arguments streamed in fragments, as real models do); once the last
//! message is a tool's result, it answers with what the tool gave.

use serde_json::{json, Value};

/// What the demo model does next with tools.
#[derive(Debug, PartialEq)]
pub enum Turn {
    /// Call `name` with these arguments (JSON text).
    Call {
        name: &'static str,
        arguments: String,
    },
    /// Answer from the tool results that came back.
    Answer(String),
}

/// Whether `name` is among the tools offered.
fn offered(request: &Value, name: &str) -> bool {
    request["tools"]
        .as_array()
        .is_some_and(|tools| tools.iter().any(|t| t["function"]["name"] == name))
}

/// The demo's next turn, if tools are in play: a call when the question
/// asks for one (and nothing was called yet), an answer after results.
pub fn plan(request: &Value, question: &str) -> Option<Turn> {
    let messages = request["messages"].as_array()?;
    let last = messages.last()?;
    if last["role"] == "tool" {
        let results: Vec<String> = messages
            .iter()
            .rev()
            .take_while(|m| m["role"] == "tool")
            .filter_map(|m| m["content"].as_str())
            .map(|r| crate::tools::bounded(r, 600))
            .collect();
        return Some(Turn::Answer(format!(
            "I used a tool for that (this is the demo model: it only repeats what the tool \
             gave). The result was: {}",
            results.join(" | ")
        )));
    }
    let lower = question.to_lowercase();
    if offered(request, "search_threads") {
        if let Some(at) = lower.find("search") {
            let query: String = question[at + "search".len()..]
                .trim_start_matches(|c: char| !c.is_alphanumeric())
                .trim_start_matches("for ")
                .chars()
                .take(100)
                .collect();
            let query = if query.trim().is_empty() {
                "demo"
            } else {
                query.trim()
            };
            return Some(Turn::Call {
                name: "search_threads",
                arguments: json!({ "query": query }).to_string(),
            });
        }
    }
    if offered(request, "current_time") && (lower.contains("time") || lower.contains("date")) {
        return Some(Turn::Call {
            name: "current_time",
            arguments: "{}".into(),
        });
    }
    if offered(request, "recent_messages") && (lower.contains("recent") || lower.contains("summar"))
    {
        return Some(Turn::Call {
            name: "recent_messages",
            arguments: json!({ "count": 10 }).to_string(),
        });
    }
    None
}

/// A call's stream chunks' `choices`: the first fragment carries the id and
/// name, the arguments follow in three pieces.
pub fn call_fragments(name: &str, arguments: &str) -> Vec<Value> {
    let mut cuts = vec![
        0,
        arguments.len() / 3,
        2 * arguments.len() / 3,
        arguments.len(),
    ];
    for cut in &mut cuts {
        while !arguments.is_char_boundary(*cut) {
            *cut += 1;
        }
    }
    let mut out = vec![json!([{"index": 0, "delta": {"tool_calls": [{
        "index": 0, "id": "call_demo", "type": "function",
        "function": {"name": name, "arguments": ""}
    }]}, "finish_reason": null}])];
    for pair in cuts.windows(2) {
        let piece = &arguments[pair[0]..pair[1]];
        if !piece.is_empty() {
            out.push(json!([{"index": 0, "delta": {"tool_calls": [{
                "index": 0, "function": {"arguments": piece}
            }]}, "finish_reason": null}]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(messages: Value) -> Value {
        json!({
            "messages": messages,
            "tools": [
                {"type": "function", "function": {"name": "search_threads"}},
                {"type": "function", "function": {"name": "current_time"}},
            ],
        })
    }

    #[test]
    fn asks_a_tool_then_answers_with_its_result() {
        let asked = request(json!([{"role": "user", "content": "please search for rust tips"}]));
        assert_eq!(
            plan(&asked, "please search for rust tips"),
            Some(Turn::Call {
                name: "search_threads",
                arguments: r#"{"query":"rust tips"}"#.into()
            })
        );
        let answered = request(json!([
            {"role": "user", "content": "what time is it"},
            {"role": "assistant", "content": null, "tool_calls": []},
            {"role": "tool", "content": "12:00", "tool_call_id": "call_demo"},
        ]));
        match plan(&answered, "what time is it") {
            Some(Turn::Answer(text)) => assert!(text.contains("12:00")),
            other => panic!("{other:?}"),
        }
        let plain = request(json!([{"role": "user", "content": "hello"}]));
        assert_eq!(plan(&plain, "hello"), None);
    }

    #[test]
    fn fragments_reassemble_into_the_arguments() {
        let args = r#"{"query":"你好 rust"}"#;
        let joined: String = call_fragments("search_threads", args)
            .iter()
            .filter_map(|c| c[0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str())
            .collect();
        assert_eq!(joined, args);
    }
}
