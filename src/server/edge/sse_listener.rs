//! The listener `serve` uses: a new connection whose first request is a
//! plain `GET /api/threads/{id}/events` is served here, without hyper;
//! every other connection goes to the HTTP server (`connections.rs`)
//! unchanged.
//!
//! There is one way to serve a subscription: the router. Here the request
//! head read from the socket goes through the same router as every other
//! request (the door, limits, tracing, panics to 500, security headers, the
//! `sse::events` handler), and only the transport differs: the response is
//! written to the socket as a close-delimited HTTP/1.1 response, its body
//! as the event stream yields it, under the same write timeout.
//!
//! Why a transport of its own: an idle SSE viewer held by hyper costs
//! ~60 KB (the connection's read and write buffers, its dispatcher) and a
//! thread may have thousands of them. Served here, a viewer is one task
//! holding its socket and the response body: a few KB.
//!
//! Only a request that parses completely from the first bytes, has no body
//! and asks for nothing unusual takes this path; the socket is only peeked
//! until then, so anything else reaches hyper untouched.

use std::net::SocketAddr;

use std::sync::Arc;

use axum::{
    body::Body,
    extract::ConnectInfo,
    http::{request::Parts, Method, Request, Response, Uri},
    serve::Listener,
    Router,
};
use futures::StreamExt;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::mpsc,
};
use tower::ServiceExt;

use super::{
    access::{client_key, ClientAddr, Gate},
    close_delimited::{self, refuse_connection, ConnectionLimits},
};
use crate::server::{ingest::budget::Held, Background};

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

/// What the accept loop needs: the router subscriptions go through, the
/// door (to know a trusted proxy, whose connections are not counted), and
/// the shutdown signal.
#[derive(Clone)]
pub struct Lean {
    pub router: Router,
    pub gate: Arc<Gate>,
    /// Its stop is the shutdown signal; the accept loop and every
    /// connection task run on it, so shutdown waits for a subscription to
    /// write the last events it was given (the replies' ends) before the
    /// pools close and the process exits.
    pub background: Background,
    /// Off: every connection goes to hyper (to measure what this path buys).
    pub enabled: bool,
}

impl SseListener {
    pub fn new(listener: TcpListener, lean: Lean, limits: ConnectionLimits) -> Self {
        let (tx, handoff) = mpsc::channel(HANDOFF_QUEUE);
        lean.background
            .clone()
            .spawn(accept_loop(listener, lean, limits, tx));
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
    state: Lean,
    limits: ConnectionLimits,
    handoff: mpsc::Sender<Handoff>,
) {
    loop {
        let (stream, addr) = tokio::select! {
            _ = state.background.stop.cancelled() => return,
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
        let background = state.background.clone();
        if !state.enabled {
            let _ = handoff.send((stream, addr, held)).await;
            continue;
        }
        background.spawn(async move {
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
    /// The request head (headers, the connection's address).
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
    if !matches!(
        uri.path().split('/').collect::<Vec<_>>().as_slice(),
        ["", "api", "threads", id, "events"] if !id.is_empty()
    ) {
        return None;
    }
    let mut head = Request::builder().method(Method::GET).uri(uri);
    for header in request.headers.iter() {
        head = head.header(header.name, header.value);
        let name = header.name.to_ascii_lowercase();
        // A body, an upgrade or a protocol switch: not ours.
        if matches!(
            name.as_str(),
            "content-length" | "transfer-encoding" | "upgrade" | "expect"
        ) {
            return None;
        }
    }
    let mut head = head.body(()).ok()?;
    head.extensions_mut().insert(ConnectInfo(ClientAddr(addr)));
    Some(SubscriptionRequest {
        parts: head.into_parts().0,
        head_len,
    })
}

/// Serves a subscription request through the router, writing its answer
/// (the event stream, or a refusal) to the socket.
async fn serve_subscription(
    mut stream: TcpStream,
    state: Lean,
    limits: ConnectionLimits,
    request: SubscriptionRequest,
) {
    // Consume the head that was only peeked.
    let mut head = vec![0u8; request.head_len];
    if stream.read_exact(&mut head).await.is_err() {
        return;
    }
    drop(head);
    let request = Request::from_parts(request.parts, Body::empty());
    // Boxed: the routed call's state is freed once it answered, instead of
    // staying in every viewer's task for its whole life.
    let Ok(response) = Box::pin(state.router.oneshot(request)).await;
    let (parts, body) = response.into_parts();
    let head = close_delimited::head(&Response::from_parts(parts, ()));
    let wrote = tokio::time::timeout(limits.write_timeout, stream.write_all(&head)).await;
    if !matches!(wrote, Ok(Ok(()))) {
        return;
    }
    let (mut reader, mut writer) = stream.split();
    let mut body = std::pin::pin!(body.into_data_stream());
    let mut scratch = [0u8; 64];
    loop {
        tokio::select! {
            // Notice a viewer that left without waiting for the next write.
            read = reader.read(&mut scratch) => match read {
                Ok(0) | Err(_) => return,
                Ok(_) => {} // nothing is expected from the client; ignore it
            },
            chunks = next_ready(&mut body, MAX_GATHER) => {
                let Some(chunks) = chunks else {
                    let _ = writer.shutdown().await;
                    return;
                };
                let Ok(chunks) = chunks.into_iter().collect::<Result<Vec<_>, _>>() else {
                    return;
                };
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

/// Waits for the stream's next item, then takes every one already waiting
/// (at most `max`), to write them together. Unlike `ready_chunks`, nothing
/// is held between writes: an idle viewer keeps no gathering buffer.
async fn next_ready<S: futures::Stream + Unpin>(
    stream: &mut S,
    max: usize,
) -> Option<Vec<S::Item>> {
    use futures::FutureExt;
    let first = stream.next().await?;
    let mut items = vec![first];
    while items.len() < max {
        match stream.next().now_or_never() {
            Some(Some(item)) => items.push(item),
            _ => break,
        }
    }
    Some(items)
}
