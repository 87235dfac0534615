//! A provider's streamed answer over a connection the reply's own task
//! drives (plain `http://` endpoints: a local model, the demo model).
//!
//! Through reqwest, hyper runs each connection as a task of its own and
//! hands the body over a channel of one chunk: every token wakes the reply's
//! task, whose read of the chunk wakes the connection's task again, while
//! the reply's task also wakes the writer. Two tasks woken in one poll make
//! the runtime wake a second worker thread to share them: one more thread
//! hand-off per token for a lone reply (measured: about half of its server
//! CPU). Here the connection is polled inside the body's own `poll_next`,
//! with a waker that wakes the task only for what happens outside that
//! poll (the socket), so a token is one chain: socket -> reply -> writer ->
//! viewers.
//!
//! HTTPS endpoints, and any request while a proxy is configured in the
//! environment, go through reqwest as before.

use std::{
    io,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    task::{Context, Poll, Wake, Waker},
};

use std::future::Future;

use axum::body::Bytes;
use axum::http;
use futures::{task::AtomicWaker, Stream};
use hyper::{
    body::{Body, Incoming},
    client::conn::http1,
};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

type Connection = http1::Connection<TokioIo<TcpStream>, String>;

/// Whether `request` can go on a connection of the caller's task: plain
/// HTTP, and no proxy that reqwest would have used.
pub fn applies(request: &reqwest::Request) -> bool {
    request.url().scheme() == "http"
        && ["http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"]
            .iter()
            .all(|v| std::env::var_os(v).is_none_or(|v| v.is_empty()))
}

/// Sends `request` on a new connection and answers once the response's
/// head arrived; its body drives the connection as it is read.
pub async fn send(request: reqwest::Request) -> io::Result<reqwest::Response> {
    let url = request.url().clone();
    let host = url
        .host_str()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no host"))?
        .to_owned();
    let port = url.port_or_known_default().unwrap_or(80);
    let stream = TcpStream::connect((host.trim_matches(['[', ']']), port)).await?;
    stream.set_nodelay(true)?;
    let (mut sender, conn) = http1::handshake::<_, String>(TokioIo::new(stream))
        .await
        .map_err(io::Error::other)?;
    let conn = Box::pin(conn);

    let mut head = http::Request::builder()
        .method(request.method().clone())
        .uri(match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        });
    let headers = head.headers_mut().expect("a fresh builder has headers");
    *headers = request.headers().clone();
    let authority = match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.clone(),
    };
    headers.insert(
        http::header::HOST,
        http::HeaderValue::from_str(&authority).map_err(io::Error::other)?,
    );
    let body = match request.body().and_then(reqwest::Body::as_bytes) {
        Some(bytes) => String::from_utf8(bytes.to_vec()).map_err(io::Error::other)?,
        None => String::new(),
    };
    let head = head.body(body).map_err(io::Error::other)?;

    // Until the head arrives, the connection and the request are polled
    // together (a connection that ends with no answer is an error; one that
    // ends right after answering leaves the body to read).
    let mut conn = Some(conn);
    let response = {
        let mut sent = std::pin::pin!(sender.send_request(head));
        std::future::poll_fn(|cx| loop {
            if let Poll::Ready(result) = sent.as_mut().poll(cx) {
                return Poll::Ready(result.map_err(io::Error::other));
            }
            let Some(driving) = conn.as_mut() else {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the provider closed the connection before answering",
                )));
            };
            match driving.as_mut().poll(cx) {
                Poll::Ready(Ok(())) => conn = None, // the answer may be in
                Poll::Ready(Err(e)) => return Poll::Ready(Err(io::Error::other(e))),
                Poll::Pending => return Poll::Pending,
            }
        })
        .await?
    };
    let (parts, body) = response.into_parts();
    let inner = Arc::new(Inner::default());
    let body = Driven {
        conn,
        body,
        waker: Waker::from(inner.clone()),
        inner,
    };
    Ok(reqwest::Response::from(http::Response::from_parts(
        parts,
        reqwest::Body::wrap_stream(body),
    )))
}

/// The response body, driving its connection as it is read.
struct Driven {
    /// `None` once the connection is done (the body may still hold data).
    conn: Option<Pin<Box<Connection>>>,
    body: Incoming,
    inner: Arc<Inner>,
    /// `inner` as a waker, made once (not per token).
    waker: Waker,
}

/// The waker the connection and the body are polled with: a wake during
/// `Driven::poll_next` is only noted (that poll goes round again); any
/// other (the socket became readable) wakes the task.
#[derive(Default)]
struct Inner {
    task: AtomicWaker,
    polling: AtomicBool,
    woken: AtomicBool,
}

impl Wake for Inner {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::SeqCst);
        if !self.polling.load(Ordering::SeqCst) {
            self.task.wake();
        }
    }
}

impl Stream for Driven {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        this.inner.task.register(cx.waker());
        this.inner.polling.store(true, Ordering::SeqCst);
        let mut inner = Context::from_waker(&this.waker);
        let result = loop {
            this.inner.woken.store(false, Ordering::SeqCst);
            if let Some(conn) = this.conn.as_mut() {
                match conn.as_mut().poll(&mut inner) {
                    Poll::Pending => {}
                    Poll::Ready(Ok(())) => this.conn = None,
                    Poll::Ready(Err(e)) => {
                        this.conn = None;
                        break Poll::Ready(Some(Err(io::Error::other(e))));
                    }
                }
            }
            match Pin::new(&mut this.body).poll_frame(&mut inner) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => break Poll::Ready(Some(Ok(data))),
                    Err(_) => continue, // trailers
                },
                Poll::Ready(Some(Err(e))) => break Poll::Ready(Some(Err(io::Error::other(e)))),
                Poll::Ready(None) => break Poll::Ready(None),
                Poll::Pending => {
                    this.inner.polling.store(false, Ordering::SeqCst);
                    if this.inner.woken.load(Ordering::SeqCst) {
                        // Woken while polling: go round once more.
                        this.inner.polling.store(true, Ordering::SeqCst);
                        continue;
                    }
                    return Poll::Pending;
                }
            }
        };
        this.inner.polling.store(false, Ordering::SeqCst);
        result
    }
}
