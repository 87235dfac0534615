//! Sends a completion request and returns the response once its head
//! arrived. Plain `http://` endpoints (a local model, the demo model) go on
//! a connection the reply's own task drives (`http1.rs`); HTTPS, and any
//! request while a proxy is configured, through reqwest.

use std::time::Duration;

use axum::body::Bytes;
use futures::{Stream, StreamExt};

use super::{
    decode::BodyError,
    errors::{unreachable, without_url, StartError},
    http1,
    wire::ChatRequest,
};

/// Most of a refusal's body read (an error envelope is a few hundred
/// bytes; a provider's error page is not read further).
const MAX_ERROR_BODY: usize = 64 * 1024;

/// The longest `Retry-After` taken as it is: a larger (or infinite) one is
/// this, which is past any idle timeout, so the reply fails saying so.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

/// POSTs `request` as JSON to `endpoint` with `key` as its bearer token.
pub async fn send(
    http: &reqwest::Client,
    endpoint: &str,
    key: &str,
    request: &ChatRequest,
    http1_lane: bool,
) -> Result<reqwest::Response, StartError> {
    let body = serde_json::to_vec(request).map_err(|e| unreachable(&e.to_string()))?;
    let request = http
        .post(endpoint)
        .header(reqwest::header::AUTHORIZATION, format!("Bearer {key}"))
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .build()
        .map_err(|e| unreachable(&without_url(&e)))?;
    if http1_lane && http1::applies(&request) {
        http1::send(request)
            .await
            .map_err(|e| unreachable(&crate::error::causes(&e)))
    } else {
        http.execute(request)
            .await
            .map_err(|e| unreachable(&without_url(&e)))
    }
}

/// The provider's `Retry-After`, in seconds (HTTP dates are treated as
/// absent), clamped to [`MAX_RETRY_AFTER`]: the header is the provider's,
/// any number.
pub fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after)
}

pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let seconds = value.trim().parse::<f64>().ok().filter(|s| *s >= 0.0)?;
    Some(Duration::try_from_secs_f64(seconds).map_or(MAX_RETRY_AFTER, |d| d.min(MAX_RETRY_AFTER)))
}

/// The first [`MAX_ERROR_BODY`] bytes of a refusal's body.
pub async fn error_body(response: reqwest::Response) -> Result<Vec<u8>, StartError> {
    let mut body = Vec::new();
    let mut chunks = std::pin::pin!(response.bytes_stream());
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|e| unreachable(&without_url(&e)))?;
        let room = MAX_ERROR_BODY - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() == MAX_ERROR_BODY {
            break;
        }
    }
    Ok(body)
}

/// A started stream's body, its failures in words safe to show.
pub fn body(response: reqwest::Response) -> impl Stream<Item = Result<Bytes, BodyError>> + Send {
    response
        .bytes_stream()
        .map(|chunk| chunk.map_err(|e| BodyError(without_url(&e))))
}

#[cfg(test)]
mod tests {
    use super::{parse_retry_after, MAX_RETRY_AFTER};
    use std::time::Duration;

    #[test]
    fn any_number_is_clamped_never_a_panic() {
        assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after(" 0.5 "), Some(Duration::from_millis(500)));
        for huge in ["inf", "+inf", "1e20", "18446744073709551616", "1.8e308"] {
            assert_eq!(parse_retry_after(huge), Some(MAX_RETRY_AFTER), "{huge}");
        }
        for bad in [
            "-1",
            "-inf",
            "NaN",
            "nan",
            "",
            "Wed, 21 Oct 2015 07:28:00 GMT",
        ] {
            assert_eq!(parse_retry_after(bad), None, "{bad}");
        }
    }
}
