//! Connections: the accept loop's limits and the HTTP/1 server that serves
//! every connection the lean SSE path does not take.
//!
//! What a stranger could otherwise hold is bounded here: connections per
//! client address (a trusted proxy's are not counted: it carries many
//! clients), a request head that must arrive within the header timeout
//! (which also closes a kept-alive connection left idle), hyper's buffer of
//! a connection (64 KiB), and a client that takes nothing of what it is
//! sent for the write timeout is dropped (its socket full: the response
//! waiting for it is freed).

use std::{
    future::Future,
    io,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use axum::{extract::ConnectInfo, Router};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::Sleep,
};
use tower::ServiceExt;

use super::{access::ClientAddr, close_delimited::ConnectionLimits, sse_listener::SseListener};

/// Largest buffer hyper keeps per connection (request head, queued
/// response bytes).
const MAX_CONNECTION_BUFFER: usize = 64 * 1024;
/// How long connections get to finish once subscriptions have ended, past
/// the shutdown deadline.
pub const DRAIN_MARGIN: Duration = Duration::from_secs(2);

/// Serves `router` on every connection `listener` hands over until
/// `shutdown` resolves; then runs `drain` (the app's own shutdown, at most
/// `within`) while open connections finish, and returns when both have
/// (connections get [`DRAIN_MARGIN`] more than `within`).
pub async fn serve(
    mut listener: SseListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
    drain: impl Future<Output = ()>,
    within: Duration,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(MAX_CONNECTION_BUFFER);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, addr, held) = tokio::select! {
            _ = &mut shutdown => break,
            conn = listener.next() => match conn {
                Some(conn) => conn,
                None => break,
            },
        };
        let service = router
            .clone()
            .map_request(move |mut request: axum::extract::Request<_>| {
                request
                    .extensions_mut()
                    .insert(ConnectInfo(ClientAddr(addr)));
                request
            });
        let io = TokioIo::new(Stalling::new(stream, limits.write_timeout));
        let connection =
            graceful.watch(http.serve_connection(io, TowerToHyperService::new(service)));
        tokio::spawn(async move {
            let _held = held;
            if let Err(e) = connection.await {
                tracing::debug!(client = %addr, error = %e, "connection ended");
            }
        });
    }
    drop(listener);
    // Open requests finish (idle kept-alive connections close now) while
    // `drain` runs; subscriptions end when it has.
    let connections = async {
        if tokio::time::timeout(within + DRAIN_MARGIN, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("connections still open after the drain time; closing them");
        }
    };
    tokio::join!(drain, connections);
}

/// A connection whose writes fail once the client has taken nothing for
/// `timeout` (its socket buffer full all that time).
pub struct Stalling<T> {
    inner: T,
    timeout: Duration,
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<T> Stalling<T> {
    pub fn new(inner: T, timeout: Duration) -> Self {
        Self {
            inner,
            timeout,
            stalled: None,
        }
    }

    fn on_write<R>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        match polled {
            Poll::Pending => {
                let timeout = self.timeout;
                let stalled = self
                    .stalled
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                match stalled.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client took nothing for the write timeout",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
            ready => {
                self.stalled = None;
                ready
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Stalling<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Stalling<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.on_write(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.on_write(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    // A flush (immediate on a TCP socket) says nothing of whether the
    // client takes bytes: it neither starts nor resets the stall.
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
