//! The embedded demo model: an OpenAI-compatible streaming
//! `/v1/chat/completions` that answers deterministically at a set pace, so
//! the app runs its whole loop (through async-openai) with no API key.

use std::{
    collections::{HashSet, VecDeque},
    convert::Infallible,
    hash::{Hash, Hasher},
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    body::{Body, Bytes},
    extract::State,
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use serde_json::{json, Value};

use crate::model::DEMO_MODEL;
use crate::server::config::Config;

const ANSWER: &str = "This is the demo model answering, not a real language model. \
It streams a fixed text at a steady pace so you can watch the whole loop work: your message \
was saved together with an empty reply in one transaction, then a background task on the \
server asked this OpenAI-compatible endpoint for a streamed completion. Every piece of text \
that arrives is appended to the reply in the database first and only then sent to everyone \
watching this thread, so what you see is always what is stored.\n\n\
Try it: open this thread in a second window and watch both grow together. Reload the page \
in the middle of a reply and it continues exactly where it was, because the database owns \
the reply, not the browser. Close the tab and come back later and the finished reply is \
there. Several people can ask at once and several replies stream side by side. 🚀 \
Multi-byte text is handled too: 你好，世界 — 👩‍💻 writes, 🧑‍🤝‍🧑 watch.\n\n\
To talk to a real model, start the app with your key (and OPENAI_MODEL if you like):\n\n\
```sh\nOPENAI_API_KEY=sk-... scripts/run\n```\n\n\
or point OPENAI_BASE_URL at any OpenAI-compatible server such as Ollama, vLLM or llama.cpp. \
Until then, thanks for trying the demo!";

/// What the demo model "thinks" before answering when asked with a
/// `reasoning_effort` (a reasoning model), streamed as `reasoning_content`.
const THINKING: &str = "The question is {q}. This is the demo model, so there is no real \
reasoning to do here, but a reasoning model would work it through at this point: what exactly \
is being asked, what the thread said before, which parts of it matter and which do not, what a \
short and plain answer would look like, and whether anything in it could be wrong. **This part** \
streams before the answer and is stored as the reply's thinking, apart from the answer itself: \
everyone watching sees it grow, then it folds away as soon as the answer starts, and it stays \
folded after a reload (open it to read it again). It is never sent back to the model as \
context, and an export marks it as thinking. Enough thinking; time to answer.";

/// Marks a question whose first answer fails mid-stream, to show what a
/// failed reply looks like (and Regenerate).
pub const FAIL_ONCE: &str = "[fail once]";
/// In a question: the answer is ten times as long (over 2,000 tokens)
/// and streams ten times as fast, to show a long reply.
pub const LONG: &str = "[long]";

/// `[fail once]` questions remembered; the oldest is forgotten past this
/// (the endpoint is public: its memory is bounded).
const REMEMBERED: usize = 1024;

/// The demo model's memory: which `[fail once]` questions already failed,
/// by hash, the most recent [`REMEMBERED`].
#[derive(Clone, Default)]
pub struct DemoModel {
    failed: Arc<Mutex<(HashSet<u64>, VecDeque<u64>)>>,
}

impl DemoModel {
    /// Whether this answer to `question` should fail (the first one only).
    fn should_fail(&self, question: &str) -> bool {
        if !question.contains(FAIL_ONCE) {
            return false;
        }
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        question.hash(&mut hasher);
        let key = hasher.finish();
        let mut failed = self.failed.lock().expect("demo lock");
        let (seen, order) = &mut *failed;
        if !seen.insert(key) {
            return false;
        }
        order.push_back(key);
        if order.len() > REMEMBERED {
            if let Some(oldest) = order.pop_front() {
                seen.remove(&oldest);
            }
        }
        true
    }
}

/// The question, shortened for quoting.
fn quoted(question: &str) -> String {
    let short: String = question.chars().take(200).collect();
    let ellipsis = if short.len() < question.len() {
        "…"
    } else {
        ""
    };
    format!("\"{short}{ellipsis}\"")
}

/// The demo's tokens: each word with the whitespace before it.
pub fn tokens(question: &str) -> Vec<String> {
    let opening = match question.trim() {
        "" => "Hello!".to_owned(),
        q => format!("You asked: {}.", quoted(q)),
    };
    let repeats = if question.contains(LONG) { 10 } else { 1 };
    words(&format!("{opening} {}", vec![ANSWER; repeats].join("\n\n")))
}

/// The demo's thinking tokens, for a reasoning bot.
pub fn thinking_tokens(question: &str) -> Vec<String> {
    let q = match question.trim() {
        "" => "empty".to_owned(),
        q => quoted(q),
    };
    words(&THINKING.replace("{q}", &q))
}

/// Text cut into words, each with the whitespace before it.
fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for c in text.chars() {
        if c.is_whitespace() && !current.trim().is_empty() {
            out.push(std::mem::take(&mut current));
        }
        current.push(c);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

fn chunk(choices: Value, usage: Value) -> Bytes {
    let chunk = json!({
        "id": "chatcmpl-demo",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": DEMO_MODEL,
        "choices": choices,
        "usage": usage,
    });
    Bytes::from(format!("data: {chunk}\n\n"))
}

/// `POST /v1/chat/completions` (streaming only).
pub async fn completions(
    State(demo): State<DemoModel>,
    State(config): State<Arc<Config>>,
    Json(request): Json<Value>,
) -> Response {
    if request.get("stream").and_then(Value::as_bool) != Some(true) {
        let error = json!({"error": {"message": "the demo model only streams", "type": "invalid_request_error"}});
        return (StatusCode::BAD_REQUEST, Json(error)).into_response();
    }
    let answer = Answer::to(&demo, &config, &request);
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(answer.stream()),
    )
        .into_response()
}

/// What the demo model will stream for one request.
struct Answer {
    thinking: Vec<String>,
    tokens: Vec<String>,
    /// A tool call's fragments (chunks' `choices`), instead of text.
    call: Option<Vec<Value>>,
    /// Fails after a few tokens (`[fail once]` in the question).
    fail: bool,
    prompt_tokens: usize,
    pause: Duration,
}

impl Answer {
    fn to(demo: &DemoModel, config: &Config, request: &Value) -> Self {
        let messages = request["messages"].as_array().cloned().unwrap_or_default();
        let question = messages
            .iter()
            .rev()
            .find(|m| m["role"] == "user")
            .and_then(|m| m["content"].as_str())
            .unwrap_or_default()
            .split(' ')
            .filter(|word| !word.starts_with('@'))
            .collect::<Vec<_>>()
            .join(" ")
            .trim()
            .to_owned();
        let prompt_tokens: usize = messages
            .iter()
            .filter_map(|m| m["content"].as_str())
            .map(|c| c.split_whitespace().count())
            .sum();
        let (tokens, call) = match super::demo_tools::plan(request, &question) {
            Some(super::demo_tools::Turn::Answer(text)) => (words(&text), None),
            Some(super::demo_tools::Turn::Call { name, arguments }) => (
                Vec::new(),
                Some(super::demo_tools::call_fragments(name, &arguments)),
            ),
            None => (tokens(&question), None),
        };
        let thinking = if request
            .get("reasoning_effort")
            .is_some_and(|e| !e.is_null())
        {
            thinking_tokens(&question)
        } else {
            Vec::new()
        };
        let speed = if question.contains(LONG) { 10.0 } else { 1.0 };
        Self {
            thinking,
            tokens,
            call,
            fail: demo.should_fail(&question),
            prompt_tokens,
            pause: Duration::from_secs_f64(1.0 / (config.demo.tokens_per_second * speed)),
        }
    }

    /// The chunks, one every `pause`, then usage and `[DONE]`.
    fn stream(self) -> impl futures::Stream<Item = Result<Bytes, Infallible>> + Send {
        let Answer {
            thinking,
            tokens,
            call,
            fail,
            prompt_tokens,
            pause,
        } = self;
        async_stream::stream! {
            yield Ok::<_, Infallible>(chunk(json!([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]), Value::Null));
            let mut tick = tokio::time::interval(pause);
            for token in &thinking {
                tick.tick().await;
                yield Ok(chunk(json!([{"index": 0, "delta": {"content": null, "reasoning_content": token}, "finish_reason": null}]), Value::Null));
            }
            for (i, token) in tokens.iter().enumerate() {
                tick.tick().await;
                if fail && i == 12 {
                    let error = json!({"error": {"message": "The demo model failed on purpose ([fail once] in the question).", "type": "demo_error"}});
                    yield Ok(Bytes::from(format!("data: {error}\n\n")));
                    return;
                }
                yield Ok(chunk(json!([{"index": 0, "delta": {"content": token}, "finish_reason": null}]), Value::Null));
            }
            let mut finish = "stop";
            for fragment in call.iter().flatten() {
                tick.tick().await;
                yield Ok(chunk(fragment.clone(), Value::Null));
                finish = "tool_calls";
            }
            yield Ok(chunk(json!([{"index": 0, "delta": {}, "finish_reason": finish}]), Value::Null));
            let completion = tokens.len() + thinking.len() + call.as_ref().map_or(0, Vec::len);
            let mut usage = json!({
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion,
                "total_tokens": prompt_tokens + completion,
            });
            if !thinking.is_empty() {
                usage["completion_tokens_details"] = json!({"reasoning_tokens": thinking.len()});
            }
            yield Ok(chunk(json!([]), usage));
            yield Ok(Bytes::from_static(b"data: [DONE]\n\n"));
        }
    }
}

#[cfg(test)]
mod memory_tests {
    use super::*;

    #[test]
    fn fail_once_fails_once_and_its_memory_is_bounded() {
        let demo = DemoModel::default();
        assert!(demo.should_fail("q [fail once]"));
        assert!(!demo.should_fail("q [fail once]"));
        assert!(!demo.should_fail("plain"));
        for i in 0..5000 {
            demo.should_fail(&format!("{i} [fail once]"));
        }
        let (seen, order) = &*demo.failed.lock().unwrap();
        assert_eq!((seen.len(), order.len()), (REMEMBERED, REMEMBERED));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn demo_text_is_a_few_hundred_tokens_and_reassembles() {
        let tokens = super::tokens("what is this?");
        assert!((150..600).contains(&tokens.len()), "{}", tokens.len());
        let text: String = tokens.concat();
        assert!(text.starts_with("You asked: \"what is this?\"."));
        assert!(text.ends_with("thanks for trying the demo!"));
        let long = super::tokens("[long] more");
        assert!(long.len() >= 2000, "{}", long.len());
    }
}
