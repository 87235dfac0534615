//! A started stream's body: its lines capped as they arrive, and its SSE
//! events decoded on the reply's own task (see `provider.rs`).

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc,
};

use async_openai::error::OpenAIError;

use super::provider::{without_url, Chunk, ChunkStream};

/// A started stream's chunks, decoded as the reply's task reads them: SSE
/// events by `eventsource-stream`, each event's data as a [`Chunk`];
/// `[DONE]` or the end of the body ends it, `keepalive` events are skipped,
/// and the first error is its last item (as async-openai's stream does).
pub(super) fn decode(response: reqwest::Response) -> ChunkStream {
    use eventsource_stream::Eventsource;
    use futures::StreamExt;
    let events = response
        .bytes_stream()
        .map(|r| r.map_err(std::io::Error::other))
        .eventsource();
    Box::pin(futures::stream::unfold(Some(events), |events| async move {
        let mut events = events?;
        loop {
            let event = match events.next().await? {
                Ok(event) => event,
                Err(e) => {
                    let error = async_openai::error::StreamError::EventStream(e.to_string());
                    return Some((Err(OpenAIError::StreamError(Box::new(error))), None));
                }
            };
            if event.data == "[DONE]" {
                return None;
            }
            if event.event == "keepalive" {
                continue;
            }
            return Some((
                serde_json::from_str::<Chunk>(&event.data)
                    .map_err(|e| OpenAIError::JSONDeserialize(e, event.data)),
                Some(events),
            ));
        }
    }))
}

/// The response with its body failing once a line (bytes between two
/// newlines) grows past `max`: the SSE parser above buffers a line until
/// it ends, so an endless line would grow its buffer without bound.
pub(super) fn cap_lines(
    response: reqwest::Response,
    max: usize,
    oversized: Option<Arc<AtomicUsize>>,
) -> reqwest::Response {
    use futures::StreamExt;
    let mut builder = axum::http::Response::builder()
        .status(response.status())
        .version(response.version());
    if let Some(headers) = builder.headers_mut() {
        *headers = response.headers().clone();
    }
    let mut line = 0usize;
    let body = response.bytes_stream().map(move |chunk| {
        let chunk = chunk.map_err(|e| LineError(without_url(&e)))?;
        for (i, piece) in chunk.split(|b| *b == b'\n').enumerate() {
            line = if i == 0 {
                line + piece.len()
            } else {
                piece.len()
            };
            if line > max {
                if let Some(over) = &oversized {
                    over.store(max, Ordering::Relaxed);
                }
                return Err(LineError(format!(
                    "a line of the provider's stream is longer than {max} bytes"
                )));
            }
        }
        Ok(chunk)
    });
    match builder.body(reqwest::Body::wrap_stream(body)) {
        Ok(response) => reqwest::Response::from(response),
        Err(_) => reqwest::Response::from(axum::http::Response::new(reqwest::Body::from(""))),
    }
}

#[derive(Debug)]
struct LineError(String);

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LineError {}
