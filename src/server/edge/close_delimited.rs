//! Answers written straight to a socket, without hyper: the lean
//! subscription path's response head, and the refusal of a connection
//! before any request is routed (over its client's connection cap). Each
//! is a close-delimited HTTP/1.1 response: the connection serves this one
//! response. A refusal is `AppError`'s own response (its status, text and
//! `Retry-After`) with the headers the router adds to every answer.

use std::time::Duration;

use axum::{
    http::{header, HeaderName, HeaderValue, Response},
    response::IntoResponse,
};
use tokio::{io::AsyncWriteExt, net::TcpStream};

use super::security;
use crate::error::AppError;
use crate::server::{config::LimitsConfig, ingest::budget::PerClient};

/// Largest refusal body read into memory (they are a sentence long).
const MAX_REFUSAL_BYTES: usize = 4096;

/// The limits every connection is held to.
#[derive(Clone)]
pub struct ConnectionLimits {
    /// Open connections per client address.
    pub per_client: PerClient,
    /// A request head must arrive within this (and the next one on an idle
    /// kept-alive connection).
    pub header_timeout: Duration,
    /// A client that takes nothing for this long is disconnected.
    pub write_timeout: Duration,
}

impl ConnectionLimits {
    pub fn new(limits: &LimitsConfig) -> Self {
        Self {
            per_client: PerClient::new(limits.connections_per_client),
            header_timeout: limits.header_timeout(),
            write_timeout: limits.write_timeout(),
        }
    }
}

/// The head of `response` as a close-delimited HTTP/1.1 response.
pub fn head<B>(response: &Response<B>) -> Vec<u8> {
    let mut head = format!("HTTP/1.1 {}\r\n", response.status()).into_bytes();
    for (name, value) in response.headers() {
        if name == header::CONNECTION || name == header::TRANSFER_ENCODING {
            continue;
        }
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"connection: close\r\n\r\n");
    head
}

/// `error` as the bytes of a whole close-delimited response, with the
/// headers the router adds to every answer.
pub async fn refusal(error: &AppError) -> Vec<u8> {
    let mut response = error.clone().into_response();
    for (name, value) in security::HEADERS {
        response
            .headers_mut()
            .entry(HeaderName::from_static(name))
            .or_insert(HeaderValue::from_static(value));
    }
    let (parts, body) = response.into_parts();
    let body = axum::body::to_bytes(body, MAX_REFUSAL_BYTES)
        .await
        .unwrap_or_default();
    let mut response = Response::from_parts(parts, ());
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, body.len().into());
    let mut bytes = head(&response);
    bytes.extend_from_slice(&body);
    bytes
}

/// Answers a connection's (only) request with `error` and closes it, giving
/// up after `within`.
pub async fn answer_error(stream: &mut TcpStream, error: &AppError, within: Duration) {
    let response = refusal(error).await;
    let _ = tokio::time::timeout(within, async {
        stream.write_all(&response).await?;
        stream.shutdown().await
    })
    .await;
}

/// Answers a connection over its client's connection cap and closes it.
pub async fn refuse_connection(mut stream: TcpStream, max: usize) {
    let refusal = AppError::limited(
        format!(
            "Too many connections from your address ({max} at once is the limit). Close some \
             tabs and try again."
        ),
        Duration::from_secs(10),
    );
    answer_error(&mut stream, &refusal, Duration::from_secs(1)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_refusal_is_the_routers_answer_with_its_headers() {
        let error = AppError::limited("Too many.", Duration::from_secs(7));
        let bytes = refusal(&error).await;
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut parsed = httparse::Response::new(&mut headers);
        let httparse::Status::Complete(at) = parsed.parse(&bytes).unwrap() else {
            panic!("a whole head");
        };
        assert_eq!(parsed.code, Some(429));
        let value = |name: &str| {
            parsed
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| std::str::from_utf8(h.value).unwrap().to_owned())
        };
        assert_eq!(value("retry-after").as_deref(), Some("7"));
        assert_eq!(value("connection").as_deref(), Some("close"));
        assert_eq!(value("x-content-type-options").as_deref(), Some("nosniff"));
        assert_eq!(value("x-frame-options").as_deref(), Some("DENY"));
        assert_eq!(value("content-length").as_deref(), Some("9"));
        assert_eq!(&bytes[at..], b"Too many.");
    }
}
