//! A fake OpenAI-compatible provider: a real HTTP server on port 0 that
//! answers `POST /v1/chat/completions` with a scripted SSE stream in the
//! exact wire format (role chunk, content deltas, finish chunk, usage chunk
//! with empty `choices`, `[DONE]`), optionally writing its body in small
//! byte pieces that cut through multi-byte characters.

use std::{
    convert::Infallible,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use axum::{
    body::{Body, Bytes},
    extract::State,
    routing::post,
    Json, Router,
};
use serde_json::{json, Value};

/// What the fake answers one request with.
#[derive(Clone, Debug)]
pub struct Scripted {
    pub deltas: Vec<String>,
    /// Write the HTTP body in pieces of this many bytes (None: one piece per event).
    pub piece_bytes: Option<usize>,
    /// Pause between pieces.
    pub pause: Duration,
    pub usage: (i64, i64),
}

impl Scripted {
    pub fn new(deltas: &[&str]) -> Self {
        Self {
            deltas: deltas.iter().map(|d| d.to_string()).collect(),
            piece_bytes: None,
            pause: Duration::from_millis(1),
            usage: (11, deltas.len() as i64),
        }
    }

    pub fn text(&self) -> String {
        self.deltas.concat()
    }

    /// The exact HTTP body the fake writes.
    pub fn wire_body(&self) -> Vec<u8> {
        let frame = |choices: Value, usage: Value| {
            let chunk = json!({
                "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1,
                "model": "fake-model", "choices": choices, "usage": usage,
            });
            format!("data: {chunk}\n\n")
        };
        let mut body = frame(
            json!([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]),
            Value::Null,
        );
        for delta in &self.deltas {
            body += &frame(
                json!([{"index": 0, "delta": {"content": delta}, "finish_reason": null}]),
                Value::Null,
            );
        }
        body += &frame(
            json!([{"index": 0, "delta": {}, "finish_reason": "stop"}]),
            Value::Null,
        );
        let (prompt, completion) = self.usage;
        body += &frame(
            json!([]),
            json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}),
        );
        body += "data: [DONE]\n\n";
        body.into_bytes()
    }

    fn pieces(&self) -> Vec<Bytes> {
        let body = self.wire_body();
        match self.piece_bytes {
            Some(n) => body.chunks(n).map(Bytes::copy_from_slice).collect(),
            None => String::from_utf8(body)
                .unwrap()
                .split_inclusive("\n\n")
                .map(|event| Bytes::copy_from_slice(event.as_bytes()))
                .collect(),
        }
    }
}

type Responder = dyn Fn(&Value) -> Scripted + Send + Sync;

#[derive(Clone)]
struct FakeState {
    respond: Arc<Responder>,
    requests: Arc<AtomicUsize>,
    bodies: Arc<Mutex<Vec<Value>>>,
}

#[derive(Clone)]
pub struct FakeProvider {
    pub base_url: String,
    requests: Arc<AtomicUsize>,
    bodies: Arc<Mutex<Vec<Value>>>,
}

impl FakeProvider {
    /// Starts a fake that answers every request with `respond(request)`.
    pub async fn start(respond: impl Fn(&Value) -> Scripted + Send + Sync + 'static) -> Self {
        let requests = Arc::new(AtomicUsize::new(0));
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let state = FakeState {
            respond: Arc::new(respond),
            requests: requests.clone(),
            bodies: bodies.clone(),
        };
        let app = Router::new()
            .route("/v1/chat/completions", post(completions))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            base_url: format!("http://{addr}/v1"),
            requests,
            bodies,
        }
    }

    /// Answers every request with the same script.
    pub async fn with(script: Scripted) -> Self {
        Self::start(move |_| script.clone()).await
    }

    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// The JSON bodies of the requests received so far.
    pub fn request_bodies(&self) -> Vec<Value> {
        self.bodies.lock().unwrap().clone()
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

async fn completions(
    State(FakeState {
        respond,
        requests,
        bodies,
    }): State<FakeState>,
    Json(request): Json<Value>,
) -> axum::response::Response {
    requests.fetch_add(1, Ordering::SeqCst);
    let script = respond(&request);
    bodies.lock().unwrap().push(request);
    let pieces = script.pieces();
    let pause = script.pause;
    let stream = async_stream::stream! {
        for piece in pieces {
            yield Ok::<_, Infallible>(piece);
            tokio::time::sleep(pause).await;
        }
    };
    axum::response::Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(stream))
        .unwrap()
}
