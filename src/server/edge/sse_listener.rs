//! The listener `serve` uses: a new connection whose first request is a
//! plain `GET /api/threads/{id}/events` is served here, without hyper;
//! every other connection goes to the HTTP server (`connections.rs`)
//! unchanged. Both paths hold a connection to the same limits: the client's
//! connection cap (taken here, at accept), the header timeout, the same
//! door (`access::Gate`), the subscription cap and the write timeout.
//!
//! Why: an idle SSE viewer held by hyper and axum costs ~60 KB (the
//! connection's read and write buffers, its dispatcher, the routed service
//! stack) and a thread may have thousands of them. Served here, a viewer is
//! one task holding its socket and the event stream from `sse::open`: a
//! few KB. The bytes sent are the same either way, because both paths use
//! `sse::open`; the route stays in the router for keep-alive connections,
//! clients that send their request in pieces, and tests.
//!
//! Only a request that parses completely from the first bytes, has no body
//! and asks for nothing unusual takes this path; the socket is only peeked
//! until then, so anything else reaches hyper untouched.

use std::net::SocketAddr;

use axum::{
    extract::{ConnectInfo, Query},
    http::{request::Parts, Method, Request, StatusCode, Uri},
    serve::Listener,
};
use futures::StreamExt;
use percent_encoding::percent_decode_str;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::mpsc,
};

use super::{
    access::{client_key, ClientAddr},
    connections::{refuse_connection, ConnectionLimits},
    security,
    sse::{self, EventsQuery, Subscriptions},
};
use crate::server::ingest::budget::Held;

/// Largest request head the lean path reads; longer ones go to hyper.
const MAX_HEAD: usize = 4096;
/// Connections accepted but not yet taken by axum. Small: axum takes them
/// as fast as they come; a full queue slows accepting, not serving.
const HANDOFF_QUEUE: usize = 128;
/// Ready event chunks written in one go.
const MAX_GATHER: usize = 256;

/// A connection for the HTTP server: its socket, its client's address, and
/// its place in that client's connection cap (none for a trusted proxy).
pub type Handoff = (TcpStream, SocketAddr, Option<Held>);

/// Accepts connections, serving SSE subscriptions itself and handing the
/// rest over through [`SseListener::next`].
pub struct SseListener {
    handoff: mpsc::Receiver<Handoff>,
}

impl SseListener {
    pub fn new(listener: TcpListener, state: Subscriptions, limits: ConnectionLimits) -> Self {
        let (tx, handoff) = mpsc::channel(HANDOFF_QUEUE);
        tokio::spawn(accept_loop(listener, state, limits, tx));
        Self { handoff }
    }

    /// The next connection for the HTTP server; `None` once the accept loop
    /// stopped (shutdown).
    pub async fn next(&mut self) -> Option<Handoff> {
        self.handoff.recv().await
    }
}

async fn accept_loop(
    mut listener: TcpListener,
    state: Subscriptions,
    limits: ConnectionLimits,
    handoff: mpsc::Sender<Handoff>,
) {
    loop {
        let (stream, addr) = tokio::select! {
            _ = state.shutdown.cancelled() => return,
            _ = handoff.closed() => return,
            // axum's own accept: retries and backs off on errors (EMFILE).
            conn = Listener::accept(&mut listener) => conn,
        };
        let _ = stream.set_nodelay(true);
        let held = if state.gate.is_proxy(addr.ip()) {
            None
        } else {
            match limits.per_client.hold(&client_key(addr.ip())) {
                Some(held) => Some(held),
                None => {
                    tokio::spawn(refuse_connection(stream, limits.per_client.max()));
                    continue;
                }
            }
        };
        let state = state.clone();
        let handoff = handoff.clone();
        let limits = limits.clone();
        tokio::spawn(async move {
            // Nothing at all within the header timeout: no request is coming.
            let Ok(first) =
                tokio::time::timeout(limits.header_timeout, subscription_request(&stream, addr))
                    .await
            else {
                return;
            };
            match first {
                Some(request) => serve_subscription(stream, state, limits, request).await,
                None => {
                    let _ = handoff.send((stream, addr, held)).await;
                }
            }
        });
    }
}

/// A subscription request read from a connection's first bytes.
struct SubscriptionRequest {
    thread_id: String,
    query: EventsQuery,
    last_event_id: Option<String>,
    /// The head as the door reads it (headers, the connection's address).
    parts: Parts,
    /// Bytes of the request head (peeked, not yet consumed).
    head_len: usize,
}

/// Peeks at the first bytes: the request, if it is a subscription this
/// path serves (anything it cannot parse, a bad query included, goes to
/// axum, which answers it as usual).
async fn subscription_request(stream: &TcpStream, addr: SocketAddr) -> Option<SubscriptionRequest> {
    let mut buf = vec![0u8; MAX_HEAD];
    let n = stream.peek(&mut buf).await.ok()?;
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut request = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(head_len) = request.parse(&buf[..n]).ok()? else {
        return None;
    };
    if request.method != Some("GET") {
        return None;
    }
    let uri: Uri = request.path?.parse().ok()?;
    let thread_id = match uri.path().split('/').collect::<Vec<_>>().as_slice() {
        ["", "api", "threads", id, "events"] if !id.is_empty() => {
            percent_decode_str(id).decode_utf8_lossy().into_owned()
        }
        _ => return None,
    };
    let Query(query) = Query::<EventsQuery>::try_from_uri(&uri).ok()?;
    let mut last_event_id = None;
    let mut head = Request::builder().method(Method::GET).uri(uri.clone());
    for header in request.headers.iter() {
        head = head.header(header.name, header.value);
        let name = header.name.to_ascii_lowercase();
        match name.as_str() {
            // A body, an upgrade or a protocol switch: not ours.
            "content-length" | "transfer-encoding" | "upgrade" | "expect" => return None,
            "last-event-id" => last_event_id = Some(std::str::from_utf8(header.value).ok()?.into()),
            _ => {}
        }
    }
    let mut head = head.body(()).ok()?;
    head.extensions_mut().insert(ConnectInfo(ClientAddr(addr)));
    Some(SubscriptionRequest {
        thread_id,
        query,
        last_event_id,
        parts: head.into_parts().0,
        head_len,
    })
}

async fn serve_subscription(
    mut stream: TcpStream,
    state: Subscriptions,
    limits: ConnectionLimits,
    request: SubscriptionRequest,
) {
    // Consume the head that was only peeked.
    let mut head = vec![0u8; request.head_len];
    if stream.read_exact(&mut head).await.is_err() {
        return;
    }
    drop(head);
    let last_event_id = request.last_event_id.as_deref();
    let opened = match state.gate.admit(&request.parts) {
        Ok(who) => {
            sse::open(
                state,
                request.thread_id,
                last_event_id,
                request.query,
                &who.client,
            )
            .await
        }
        Err(refusal) => Err(refusal),
    };
    let events = match opened {
        Ok(events) => events,
        Err(e) => {
            answer_error(&mut stream, &e, limits.write_timeout).await;
            return;
        }
    };
    let head = response_head(StatusCode::OK, "text/event-stream", None);
    if stream.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    let (mut reader, mut writer) = stream.split();
    let mut events = std::pin::pin!(events.ready_chunks(MAX_GATHER));
    let mut scratch = [0u8; 64];
    loop {
        tokio::select! {
            // Notice a viewer that left without waiting for the next write.
            read = reader.read(&mut scratch) => match read {
                Ok(0) | Err(_) => return,
                Ok(_) => {} // nothing is expected from the client; ignore it
            },
            chunks = events.next() => {
                let Some(chunks) = chunks else { return };
                // A viewer that takes nothing for the write timeout is
                // dropped (it resyncs from the database when it returns).
                let written = tokio::time::timeout(limits.write_timeout, async {
                    if let [one] = chunks.as_slice() {
                        writer.write_all(one).await
                    } else {
                        writer.write_all(&chunks.concat()).await
                    }
                })
                .await;
                if !matches!(written, Ok(Ok(()))) {
                    return;
                }
            }
        }
    }
}

/// Answers a connection's (only) request with `error` and closes it, giving
/// up after `within`.
pub(super) async fn answer_error(
    stream: &mut TcpStream,
    error: &crate::error::AppError,
    within: std::time::Duration,
) {
    let body = error.to_string();
    let mut response = response_head(
        error.status(),
        "text/plain; charset=utf-8",
        Some(body.len()),
    );
    if let Some(secs) = error.retry_after() {
        response.insert_str(response.len() - 2, &format!("retry-after: {secs}\r\n"));
    }
    response.push_str(&body);
    let _ = tokio::time::timeout(within, async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
}

/// A close-delimited HTTP/1.1 response head (the connection serves this one
/// response), with the app's security headers.
fn response_head(status: StatusCode, content_type: &str, length: Option<usize>) -> String {
    let mut head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncache-control: no-cache\r\nx-accel-buffering: no\r\nconnection: close\r\n"
    );
    if let Some(length) = length {
        head.push_str(&format!("content-length: {length}\r\n"));
    }
    for (name, value) in security::HEADERS {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    head
}
