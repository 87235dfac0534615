//! A minimal SSE client over reqwest, for reading a thread's events the way
//! a browser's `EventSource` does (ids, comments, `Last-Event-ID`).

use std::pin::Pin;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use streamchat::model::ChatEvent;

pub struct SseClient {
    body: Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>,
    buffer: Vec<u8>,
    /// The last event id received (what a reconnect sends as `Last-Event-ID`).
    pub last_id: Option<String>,
}

impl SseClient {
    pub async fn connect(url: &str, last_event_id: Option<&str>) -> Self {
        let mut request = reqwest::Client::new()
            .get(url)
            .header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = request.send().await.expect("subscribe");
        assert!(
            response.status().is_success(),
            "subscribe: {}",
            response.status()
        );
        Self {
            body: Box::pin(response.bytes_stream()),
            buffer: Vec::new(),
            last_id: last_event_id.map(str::to_owned),
        }
    }

    /// The next event and the id it carried, or None when the stream ends.
    pub async fn next(&mut self) -> Option<(Option<i64>, ChatEvent)> {
        loop {
            if let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
                let raw: Vec<u8> = self.buffer.drain(..end + 2).collect();
                let text = String::from_utf8(raw).expect("SSE is UTF-8");
                let mut id = None;
                let mut data = String::new();
                for line in text.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.strip_prefix(' ').unwrap_or(v));
                    }
                }
                if data.is_empty() {
                    continue; // a keep-alive comment
                }
                if let Some(id) = &id {
                    self.last_id = Some(id.clone());
                }
                let event = serde_json::from_str(&data).expect("a ChatEvent");
                return Some((id.and_then(|i| i.parse().ok()), event));
            }
            match self.body.next().await {
                Some(Ok(bytes)) => self.buffer.extend_from_slice(&bytes),
                _ => return None,
            }
        }
    }
}
