//! A minimal SSE client over reqwest, for reading a thread's events the way
//! a browser's `EventSource` does (ids, comments, `Last-Event-ID`).

use std::pin::Pin;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use streamchat::{live::MessageList, model::ChatEvent};

type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, String>> + Send>>;

pub struct SseClient {
    body: ByteStream,
    buffer: Vec<u8>,
    /// The last event id received (what a reconnect sends as `Last-Event-ID`).
    pub last_id: Option<String>,
    /// Bytes of the response body received so far.
    pub bytes: usize,
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
        let mut client = Self::from_response(response);
        client.last_id = last_event_id.map(str::to_owned);
        client
    }

    /// Reads the events of a subscription response already received.
    pub fn from_response(response: reqwest::Response) -> Self {
        assert!(
            response.status().is_success(),
            "subscribe: {}",
            response.status()
        );
        Self {
            body: Box::pin(
                response
                    .bytes_stream()
                    .map(|r| r.map_err(|e| e.to_string())),
            ),
            buffer: Vec::new(),
            last_id: None,
            bytes: 0,
        }
    }

    /// A subscriber over a raw socket with a tiny receive buffer, so that
    /// when it stops reading the server's writes back up quickly.
    pub async fn connect_tiny(addr: std::net::SocketAddr, path: &str) -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(2048).unwrap();
        let mut tcp = socket.connect(addr).await.unwrap();
        let request =
            format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n");
        tcp.write_all(request.as_bytes()).await.unwrap();
        // Read the response head.
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(tcp.read(&mut byte).await.unwrap(), 1, "response head");
            head.push(byte[0]);
        }
        assert!(head.starts_with(b"HTTP/1.1 200") || head.starts_with(b"HTTP/1.0 200"));
        let body = futures::stream::unfold(tcp, |mut tcp| async move {
            let mut buf = vec![0u8; 4096];
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok(Bytes::from(buf)), tcp))
                }
            }
        });
        Self {
            body: Box::pin(body),
            buffer: Vec::new(),
            last_id: None,
            bytes: 0,
        }
    }

    /// The next event and the id it carried, or None when the stream ends.
    pub async fn next(&mut self) -> Option<(Option<i64>, ChatEvent)> {
        let (id, data) = self.next_raw().await?;
        let event = serde_json::from_str(&data).expect("a ChatEvent");
        Some((id, event))
    }

    /// Applies events to `list` (the browser's rules) until reply `id`
    /// finishes; every event must apply cleanly. Returns the delta texts.
    pub async fn follow(&mut self, list: &MessageList, id: i64) -> Vec<String> {
        let mut deltas = Vec::new();
        loop {
            let (rev, event) =
                tokio::time::timeout(std::time::Duration::from_secs(20), self.next())
                    .await
                    .expect("events keep coming")
                    .expect("the subscription stays open");
            if let ChatEvent::Delta { text, .. } = &event {
                deltas.push(text.clone());
            }
            let ended = ended_reply(&event) == Some(id);
            assert_eq!(list.apply(event, rev), None, "no gap, whole copies");
            if ended {
                return deltas;
            }
        }
    }

    /// Applies events to `list` (the browser's rules) until `done(list)`
    /// holds; every event must apply cleanly.
    pub async fn follow_until(&mut self, list: &MessageList, done: impl Fn(&MessageList) -> bool) {
        while !done(list) {
            let (rev, event) =
                tokio::time::timeout(std::time::Duration::from_secs(30), self.next())
                    .await
                    .expect("events keep coming")
                    .expect("the subscription stays open");
            assert_eq!(list.apply(event, rev), None, "no gap, whole copies");
        }
    }

    /// The next event's id and JSON text, unparsed.
    pub async fn next_raw(&mut self) -> Option<(Option<i64>, String)> {
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
                return Some((id.and_then(|i| i.parse().ok()), data));
            }
            match self.body.next().await {
                Some(Ok(bytes)) => {
                    self.bytes += bytes.len();
                    self.buffer.extend_from_slice(&bytes)
                }
                Some(Err(e)) => {
                    eprintln!("SSE stream error: {e}");
                    return None;
                }
                None => return None,
            }
        }
    }
}

/// The reply an event ends, if it ends one: its end event, or (a busy
/// instance whose wake-up read covered the reply's end) its finished row.
pub fn ended_reply(event: &ChatEvent) -> Option<i64> {
    match event {
        ChatEvent::Finished { id, .. } => Some(*id),
        ChatEvent::Message { message }
            if message.status != streamchat::model::Status::Streaming =>
        {
            Some(message.id)
        }
        _ => None,
    }
}
