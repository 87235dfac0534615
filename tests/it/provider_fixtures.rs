//! Every recorded provider stream in `tests/fixtures/provider-streams/`
//! (or `$STREAMCHAT_PROVIDER_FIXTURES`), served byte for byte by the fake
//! provider, ends with the text, thinking (a reasoning model's
//! `reasoning_content` / `reasoning`), usage and state the recording implies.
//! Table-driven over the folder: a new file is tested without new code. The
//! recordings are other projects' data, read in place, never copied here.

use std::path::PathBuf;

use serde_json::Value;
use streamchat::model::Status;

use crate::support::{spawn_app, FakeProvider, Scripted};

/// What a correct client makes of a recording (an independent reading of
/// the wire format, per the folder's README).
#[derive(Debug)]
struct Expected {
    text: String,
    thinking: String,
    status: Status,
    usage: Option<(i64, i64)>,
    reasoning_tokens: Option<i64>,
    error: Option<String>,
}

fn read_sse(bytes: &[u8]) -> Expected {
    let text = String::from_utf8_lossy(bytes).replace("\r\n", "\n");
    let mut expected = Expected {
        text: String::new(),
        thinking: String::new(),
        status: Status::Failed,
        usage: None,
        reasoning_tokens: None,
        error: None,
    };
    let mut finished = false;
    for block in text.split("\n\n") {
        let mut event = "";
        let mut data = String::new();
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("event:") {
                event = v.trim();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.strip_prefix(' ').unwrap_or(v));
            }
        }
        if data.is_empty() || data == "[DONE]" {
            continue;
        }
        let chunk: Value = serde_json::from_str(&data).expect("recorded chunks are JSON");
        if event == "error" || !chunk["error"].is_null() {
            let message = chunk["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            expected.error = Some(message);
            break;
        }
        if chunk["usage"].is_object() {
            expected.usage = Some((
                chunk["usage"]["prompt_tokens"].as_i64().unwrap_or(0),
                chunk["usage"]["completion_tokens"].as_i64().unwrap_or(0),
            ));
            expected.reasoning_tokens =
                chunk["usage"]["completion_tokens_details"]["reasoning_tokens"].as_i64();
        }
        for choice in chunk["choices"].as_array().into_iter().flatten() {
            if choice["index"].as_u64().unwrap_or(0) != 0 {
                continue;
            }
            if let Some(content) = choice["delta"]["content"].as_str() {
                expected.text.push_str(content);
            }
            // One delta's thinking, under either name (never both counted).
            let thinking = [
                &choice["delta"]["reasoning_content"],
                &choice["delta"]["reasoning"],
            ]
            .into_iter()
            .filter_map(Value::as_str)
            .find(|t| !t.is_empty());
            if let Some(thinking) = thinking {
                expected.thinking.push_str(thinking);
            }
            if !choice["finish_reason"].is_null() {
                finished = true;
            }
        }
    }
    if expected.error.is_none() && finished {
        expected.status = Status::Done;
    }
    expected
}

/// A recorded plain HTTP answer (`.http`): status and body.
fn read_http(bytes: &[u8]) -> (u16, String) {
    let text = String::from_utf8_lossy(bytes).replace("\r\n", "\n");
    let (head, body) = text.split_once("\n\n").expect("headers and body");
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}

crate::both_backends! {
async fn every_recorded_provider_stream_ends_right() {
    let dir = crate::support::provider_fixtures_dir();
    // Required: they are in the repository (tests/fixtures/provider-streams/).
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| {
        panic!(
            "the provider recordings are required at {} (set STREAMCHAT_PROVIDER_FIXTURES): {e}",
            dir.display()
        )
    });
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("sse" | "http")))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    let mut thinkers = Vec::new();
    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        let bytes = std::fs::read(file).unwrap();
        let (script, expected) = if name.ends_with(".http") {
            let (status, body) = read_http(&bytes);
            let message = serde_json::from_str::<Value>(&body).unwrap()["error"]["message"]
                .as_str()
                .unwrap()
                .to_owned();
            let script = Scripted {
                status,
                error_body: body,
                ..Scripted::new(&[])
            };
            let expected = Expected {
                text: String::new(),
                thinking: String::new(),
                status: Status::Failed,
                usage: None,
                reasoning_tokens: None,
                error: Some(message),
            };
            (script, expected)
        } else {
            let script = Scripted {
                raw: Some(bytes.clone()),
                piece_bytes: Some(97),
                ..Scripted::new(&[])
            };
            (script, read_sse(&bytes))
        };
        let app = spawn_app(FakeProvider::with(script).await).await;
        let reply = app
            .post("lobby", "Ann", "@gpt replay")
            .await
            .replies
            .remove(0);
        let stored = app.wait_finished(reply.id).await;
        assert_eq!(
            stored.status, expected.status,
            "{name}: status ({:?})",
            stored.error
        );
        assert_eq!(stored.body, expected.text, "{name}: text");
        assert_eq!(stored.thinking, expected.thinking, "{name}: thinking");
        match expected.usage.filter(|_| expected.status == Status::Done) {
            Some((prompt, completion)) => {
                assert!(!stored.usage_estimated, "{name}: provider usage expected");
                assert_eq!(
                    (stored.prompt_tokens, stored.completion_tokens),
                    (Some(prompt), Some(completion)),
                    "{name}: usage"
                );
                assert_eq!(
                    stored.reasoning_tokens, expected.reasoning_tokens,
                    "{name}: reasoning tokens"
                );
            }
            None if expected.status == Status::Done => {
                assert!(stored.usage_estimated, "{name}: estimate expected")
            }
            None => {}
        }
        if let Some(message) = &expected.error {
            let shown = stored.error.clone().unwrap_or_default();
            assert!(
                shown.contains(message.as_str()),
                "{name}: error {shown:?} should say {message:?}"
            );
        }
        if expected.status == Status::Failed && name.ends_with(".http") {
            assert_eq!(app.fake.requests(), 1, "{name}: a 400 is not retried");
        }
        if !stored.thinking.is_empty() {
            thinkers.push(name.clone());
        }
        println!(
            "{name}: {:?}, {} bytes of text, {} bytes of thinking",
            stored.status,
            stored.body.len(),
            stored.thinking.len()
        );
    }
    // The reasoning models' recordings were read as thinking, not dropped.
    for reasoner in ["05-openrouter", "06-groq", "09-deepseek-reasoner"] {
        assert!(
            thinkers.iter().any(|n| n.starts_with(reasoner)),
            "{reasoner}: no thinking stored ({thinkers:?})"
        );
    }
}
}
