//! A fake OpenAI-compatible provider: a real HTTP server on port 0 that
//! answers `POST /v1/chat/completions` with a scripted SSE stream in the
//! exact wire format (role chunk, content deltas, finish chunk, usage chunk
//! with empty `choices`, `[DONE]`), or with a scripted fault: an HTTP error
//! with `Retry-After`, an error event mid-stream, a reset connection, a
//! stall, a malformed chunk, no usage, no `[DONE]`. It can write its body
//! in small byte pieces that cut through multi-byte characters, and it
//! records when each response was dropped (the client closed it).

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use axum::{
    body::{Body, Bytes},
    extract::State,
    routing::post,
    Json, Router,
};
use serde_json::{json, Value};

/// How a scripted stream ends after its deltas.
#[derive(Clone, Debug, PartialEq)]
pub enum Ending {
    /// Finish chunk (`stop`), usage chunk (unless `usage` is None), `[DONE]`.
    Complete,
    /// An `error` object under HTTP 200, then the body ends.
    ErrorEvent(String),
    /// The connection breaks (the body errors out).
    Reset,
    /// Nothing more is sent; the connection stays open.
    Stall,
    /// A chunk that is not JSON.
    Malformed,
    /// The body just ends: no finish reason, no `[DONE]`.
    Truncated,
    /// Content deltas without end, as fast as they are taken.
    Forever,
    /// One `data:` line of this many bytes that never ends, sent in 64 KiB
    /// pieces (never held whole here either).
    HugeLine(usize),
    /// One event that never ends: `data:` lines of this many bytes each,
    /// without the blank line that would end it, for as long as the client
    /// takes them.
    EndlessEvent(usize),
}

/// What the fake answers one request with.
#[derive(Clone, Debug)]
pub struct Scripted {
    /// A reasoning model's thinking, sent before `deltas` as
    /// `reasoning_content` deltas (with `content: null`).
    pub thinking: Vec<String>,
    pub deltas: Vec<String>,
    /// Write the HTTP body in pieces of this many bytes (None: one piece per event).
    pub piece_bytes: Option<usize>,
    /// Pause between pieces (zero: as fast as the connection takes them).
    pub pause: Duration,
    /// Usage chunk counts; None sends no usage chunk.
    pub usage: Option<(i64, i64)>,
    pub ending: Ending,
    /// An HTTP status other than 200 answers with `error_body` instead of a stream.
    pub status: u16,
    pub error_body: String,
    pub retry_after: Option<String>,
    /// Exact bytes to serve instead of a generated stream (recorded fixtures).
    pub raw: Option<Vec<u8>>,
    /// Benchmarks: send this many tokens, each " xxxxx" stamped at emission
    /// with [`stamp_now`], instead of `deltas`.
    pub stamped: Option<usize>,
    /// Tool calls after the text: (name, argument fragments), each streamed
    /// as OpenAI does (id and name first, then the fragments by `index`);
    /// the finish reason is then `tool_calls`.
    pub tool_calls: Vec<(String, Vec<String>)>,
}

/// The shared clock of stamped tokens.
pub fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

const STAMP_WRAP: u64 = 36u64.pow(5);

/// Now, in microseconds since [`epoch`], as 5 base-36 digits (wraps every minute).
pub fn stamp_now() -> String {
    let mut n = epoch().elapsed().as_micros() as u64 % STAMP_WRAP;
    let mut digits = [b'0'; 5];
    for d in digits.iter_mut().rev() {
        *d = b"0123456789abcdefghijklmnopqrstuvwxyz"[(n % 36) as usize];
        n /= 36;
    }
    String::from_utf8(digits.to_vec()).unwrap()
}

/// How long ago a stamp was made.
pub fn stamp_age(stamp: &str) -> Option<Duration> {
    let then = u64::from_str_radix(stamp, 36).ok()?;
    let now = epoch().elapsed().as_micros() as u64 % STAMP_WRAP;
    Some(Duration::from_micros(
        (now + STAMP_WRAP - then) % STAMP_WRAP,
    ))
}

impl Scripted {
    pub fn new(deltas: &[&str]) -> Self {
        Self {
            thinking: Vec::new(),
            deltas: deltas.iter().map(|d| d.to_string()).collect(),
            piece_bytes: None,
            pause: Duration::from_millis(1),
            usage: Some((11, deltas.len() as i64)),
            ending: Ending::Complete,
            status: 200,
            error_body: String::new(),
            retry_after: None,
            raw: None,
            stamped: None,
            tool_calls: Vec::new(),
        }
    }

    /// A step that calls `name` with `arguments` (sent in three pieces).
    pub fn tool_call(name: &str, arguments: &str) -> Self {
        Self::new(&[]).and_call(name, arguments)
    }

    /// The same script with one more tool call.
    pub fn and_call(mut self, name: &str, arguments: &str) -> Self {
        let third = arguments.len() / 3;
        let mut cuts = vec![0, third, 2 * third, arguments.len()];
        for cut in &mut cuts {
            while !arguments.is_char_boundary(*cut) {
                *cut += 1;
            }
        }
        let fragments = cuts
            .windows(2)
            .map(|w| arguments[w[0]..w[1]].to_owned())
            .collect();
        self.tool_calls.push((name.to_owned(), fragments));
        self
    }

    /// `n` numbered words.
    pub fn words(n: usize, pause: Duration) -> Self {
        let deltas: Vec<String> = (0..n).map(|i| format!("w{i} ")).collect();
        Self {
            usage: Some((11, n as i64)),
            deltas,
            pause,
            ..Self::new(&[])
        }
    }

    /// A reasoning model: `thinking` numbered thoughts, then `answer`
    /// numbered words; usage reports the thoughts as reasoning tokens.
    pub fn reasoning(thinking: usize, answer: usize, pause: Duration) -> Self {
        Self {
            thinking: (0..thinking).map(|i| format!("t{i}. ")).collect(),
            usage: Some((11, (thinking + answer) as i64)),
            ..Self::words(answer, pause)
        }
    }

    pub fn thinking_text(&self) -> String {
        self.thinking.concat()
    }

    /// An HTTP error answer with an OpenAI-style error body.
    pub fn http_error(status: u16, message: &str, retry_after: Option<&str>) -> Self {
        Self {
            status,
            error_body: json!({"error": {"message": message, "type": "fake_error", "param": null, "code": null}}).to_string(),
            retry_after: retry_after.map(str::to_owned),
            ..Self::new(&[])
        }
    }

    pub fn ending(mut self, ending: Ending) -> Self {
        self.ending = ending;
        self
    }

    pub fn text(&self) -> String {
        self.deltas.concat()
    }

    fn frame(choices: Value, usage: Value) -> String {
        let chunk = json!({
            "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1,
            "model": "fake-model", "choices": choices, "usage": usage,
        });
        format!("data: {chunk}\n\n")
    }

    /// The HTTP body before its ending.
    fn body_before_ending(&self) -> String {
        let mut body = Self::frame(
            json!([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]),
            Value::Null,
        );
        for thought in &self.thinking {
            body += &Self::frame(
                json!([{"index": 0, "delta": {"content": null, "reasoning_content": thought}, "finish_reason": null}]),
                Value::Null,
            );
        }
        for delta in &self.deltas {
            body += &Self::frame(
                json!([{"index": 0, "delta": {"content": delta}, "finish_reason": null}]),
                Value::Null,
            );
        }
        body
    }

    /// The exact HTTP body of a complete stream.
    pub fn wire_body(&self) -> Vec<u8> {
        let mut body = self.body_before_ending();
        for (index, (name, fragments)) in self.tool_calls.iter().enumerate() {
            body += &Self::frame(
                json!([{"index": 0, "delta": {"tool_calls": [{
                    "index": index, "id": format!("call_fake_{index}"), "type": "function",
                    "function": {"name": name, "arguments": ""}
                }]}, "finish_reason": null}]),
                Value::Null,
            );
            for fragment in fragments {
                body += &Self::frame(
                    json!([{"index": 0, "delta": {"tool_calls": [{
                        "index": index, "function": {"arguments": fragment}
                    }]}, "finish_reason": null}]),
                    Value::Null,
                );
            }
        }
        let finish = if self.tool_calls.is_empty() {
            "stop"
        } else {
            "tool_calls"
        };
        match &self.ending {
            Ending::Complete => {
                body += &Self::frame(
                    json!([{"index": 0, "delta": {}, "finish_reason": finish}]),
                    Value::Null,
                );
                if let Some((prompt, completion)) = self.usage {
                    body += &Self::frame(
                        json!([]),
                        json!({
                            "prompt_tokens": prompt, "completion_tokens": completion,
                            "total_tokens": prompt + completion,
                            "completion_tokens_details": {"reasoning_tokens": self.thinking.len()},
                        }),
                    );
                }
                body += "data: [DONE]\n\n";
            }
            Ending::ErrorEvent(message) => {
                body += &format!(
                    "data: {}\n\n",
                    json!({"error": {"message": message, "type": "server_error"}})
                );
            }
            Ending::Malformed => {
                body += "data: {\"choices\": [{\"delta\": {\"content\": \"oops\"\n\n"
            }
            Ending::Reset
            | Ending::Stall
            | Ending::Truncated
            | Ending::Forever
            | Ending::HugeLine(_)
            | Ending::EndlessEvent(_) => {}
        }
        body.into_bytes()
    }

    fn pieces(&self) -> Vec<Bytes> {
        let body = self.raw.clone().unwrap_or_else(|| self.wire_body());
        match self.piece_bytes {
            Some(n) => body.chunks(n).map(Bytes::copy_from_slice).collect(),
            None => {
                let mut pieces = Vec::new();
                let mut rest = &body[..];
                while let Some(at) = rest.windows(2).position(|w| w == b"\n\n") {
                    pieces.push(Bytes::copy_from_slice(&rest[..at + 2]));
                    rest = &rest[at + 2..];
                }
                if !rest.is_empty() {
                    pieces.push(Bytes::copy_from_slice(rest));
                }
                pieces
            }
        }
    }
}

type Responder = dyn Fn(usize, &Value) -> Scripted + Send + Sync;

#[derive(Clone)]
struct FakeState {
    respond: Arc<Responder>,
    log: Arc<Log>,
}

#[derive(Default)]
struct Log {
    requests: AtomicUsize,
    bodies: Mutex<Vec<Value>>,
    /// Each request's model and `Authorization` header.
    auth: Mutex<Vec<(String, String)>>,
    received_at: Mutex<Vec<Instant>>,
    closed_at: Mutex<Vec<Instant>>,
    /// Bytes of `Ending::HugeLine` lines taken by the connection.
    huge_sent: AtomicUsize,
}

#[derive(Clone)]
pub struct FakeProvider {
    pub base_url: String,
    log: Arc<Log>,
}

impl FakeProvider {
    /// Starts a fake that answers request number `n` (from 0) with `respond(n, request)`.
    pub async fn start(
        respond: impl Fn(usize, &Value) -> Scripted + Send + Sync + 'static,
    ) -> Self {
        let log = Arc::new(Log::default());
        let state = FakeState {
            respond: Arc::new(respond),
            log: log.clone(),
        };
        let app = Router::new()
            .route("/v1/chat/completions", post(completions))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            base_url: format!("http://{addr}/v1"),
            log,
        }
    }

    /// Answers with `full`, and a continuation request (one whose last
    /// message is the assistant's kept text) with the rest of `full`'s text.
    pub async fn continuing(full: Scripted) -> Self {
        let full_text = full.text();
        Self::start(move |_, request| {
            let last = request["messages"]
                .as_array()
                .and_then(|m| m.last())
                .cloned()
                .unwrap_or_default();
            if last["role"] != "assistant" {
                return full.clone();
            }
            let kept = last["content"].as_str().unwrap_or_default();
            Scripted {
                deltas: full_text[kept.len()..]
                    .split_inclusive(' ')
                    .map(str::to_owned)
                    .collect(),
                ..Scripted::new(&[])
            }
        })
        .await
    }

    /// Answers every request with the same script.
    pub async fn with(script: Scripted) -> Self {
        Self::start(move |_, _| script.clone()).await
    }

    /// Bytes of `Ending::HugeLine` lines the client took before it closed.
    pub fn huge_line_sent(&self) -> usize {
        self.log.huge_sent.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> usize {
        self.log.requests.load(Ordering::SeqCst)
    }

    /// The JSON bodies of the requests received so far.
    pub fn request_bodies(&self) -> Vec<Value> {
        self.log.bodies.lock().unwrap().clone()
    }

    /// Each request's model and `Authorization` header, in arrival order.
    pub fn authorizations(&self) -> Vec<(String, String)> {
        self.log.auth.lock().unwrap().clone()
    }

    /// When each request arrived.
    pub fn received_at(&self) -> Vec<Instant> {
        self.log.received_at.lock().unwrap().clone()
    }

    /// When each streamed response was dropped (finished or closed by the client).
    pub fn closed_at(&self) -> Vec<Instant> {
        self.log.closed_at.lock().unwrap().clone()
    }
}

/// The content of the last user message in a request.
pub fn last_user_message(request: &Value) -> String {
    request["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default()
        .to_owned()
}

/// Records when the response body is dropped.
struct DropGuard(Arc<Log>);

impl Drop for DropGuard {
    fn drop(&mut self) {
        self.0.closed_at.lock().unwrap().push(Instant::now());
    }
}

async fn completions(
    State(state): State<FakeState>,
    headers: axum::http::HeaderMap,
    Json(request): Json<Value>,
) -> axum::response::Response {
    let n = state.log.requests.fetch_add(1, Ordering::SeqCst);
    let authorization = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let model = request["model"].as_str().unwrap_or_default().to_owned();
    state.log.auth.lock().unwrap().push((model, authorization));
    state.log.received_at.lock().unwrap().push(Instant::now());
    let script = (state.respond)(n, &request);
    state.log.bodies.lock().unwrap().push(request);
    if script.status != 200 {
        let mut response = axum::response::Response::builder()
            .status(script.status)
            .header("content-type", "application/json");
        if let Some(retry_after) = &script.retry_after {
            response = response.header("retry-after", retry_after);
        }
        return response
            .body(Body::from(script.error_body.clone()))
            .unwrap();
    }
    if let Some(tokens) = script.stamped {
        return stamped_response(tokens, script.pause);
    }
    let pieces = script.pieces();
    let pause = script.pause;
    let ending = script.ending.clone();
    let guard = DropGuard(state.log.clone());
    let log = state.log.clone();
    let stream = async_stream::stream! {
        let _guard = guard;
        for piece in pieces {
            yield Ok::<_, std::io::Error>(piece);
            if pause.is_zero() {
                tokio::task::yield_now().await;
            } else {
                tokio::time::sleep(pause).await;
            }
        }
        match ending {
            Ending::Reset => yield Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset")),
            Ending::Stall => {
                // Keep the connection open; write nothing, but notice a closed client.
                loop {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    yield Ok(Bytes::from_static(b": \n\n"));
                }
            }
            Ending::Forever => {
                let delta = Bytes::from(Scripted::frame(
                    json!([{"index": 0, "delta": {"content": "more text "}, "finish_reason": null}]),
                    Value::Null,
                ));
                loop {
                    yield Ok(delta.clone());
                    tokio::task::yield_now().await;
                }
            }
            Ending::HugeLine(bytes) => {
                yield Ok(Bytes::from_static(b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\""));
                let piece = Bytes::from(vec![b'x'; 64 * 1024]);
                let mut sent = 0;
                while sent < bytes {
                    yield Ok(piece.clone());
                    sent += piece.len();
                    log.huge_sent.fetch_add(piece.len(), Ordering::SeqCst);
                    tokio::task::yield_now().await;
                }
            }
            Ending::EndlessEvent(bytes) => {
                let mut line = b"data: ".to_vec();
                line.resize(bytes, b'x');
                line.push(b'\n');
                let line = Bytes::from(line);
                loop {
                    yield Ok(line.clone());
                    log.huge_sent.fetch_add(line.len(), Ordering::SeqCst);
                    tokio::task::yield_now().await;
                }
            }
            _ => {}
        }
    };
    axum::response::Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(stream))
        .unwrap()
}

/// A stream of `tokens` stamped tokens, one every `pause`, framed like OpenAI.
fn stamped_response(tokens: usize, pause: Duration) -> axum::response::Response {
    let stream = async_stream::stream! {
        let role = Scripted::frame(json!([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]), Value::Null);
        yield Ok::<_, std::io::Error>(Bytes::from(role));
        let mut tick = tokio::time::interval(pause);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        for _ in 0..tokens {
            tick.tick().await;
            let token = format!(" {}", stamp_now());
            yield Ok(Bytes::from(Scripted::frame(json!([{"index": 0, "delta": {"content": token}, "finish_reason": null}]), Value::Null)));
        }
        let mut end = Scripted::frame(json!([{"index": 0, "delta": {}, "finish_reason": "stop"}]), Value::Null);
        end += &Scripted::frame(json!([]), json!({"prompt_tokens": 10, "completion_tokens": tokens, "total_tokens": tokens + 10}));
        end += "data: [DONE]\n\n";
        yield Ok(Bytes::from(end));
    };
    axum::response::Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(stream))
        .unwrap()
}
