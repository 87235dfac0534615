//! Security headers on every response, a Content Security Policy on every
//! page, and the same-origin rule for requests that change state.

use axum::{
    extract::Request,
    http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
};
use tower_http::set_header::SetResponseHeaderLayer;

/// Sent with every response (the SSE lean path writes them itself).
pub const HEADERS: [(&str, &str); 3] = [
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "same-origin"),
];

/// The policy of a page whose inline scripts (Leptos's hydration and
/// resource scripts) carry `nonce`: no other inline script, no plug-ins,
/// no framing, and nothing loaded from elsewhere.
pub fn content_security_policy(nonce: &str) -> String {
    format!(
        "default-src 'self'; script-src 'self' 'nonce-{nonce}' 'wasm-unsafe-eval'; \
         style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; \
         base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )
}

/// Adds [`HEADERS`] to every response that does not set them itself
/// (tower-http's `SetResponseHeaderLayer`, one per header).
pub fn headers<S>(router: axum::Router<S>) -> axum::Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    HEADERS.iter().fold(router, |router, (name, value)| {
        router.layer(SetResponseHeaderLayer::if_not_present(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        ))
    })
}

/// Refuses a state-changing request (anything but GET, HEAD, OPTIONS) that
/// a browser sent from another origin: a page elsewhere must not post in
/// someone's name. Requests without browser origin headers (scripts, curl)
/// pass; cookies are `SameSite=Lax` as a second line.
pub async fn same_origin(request: Request, next: Next) -> Response {
    let safe = matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    if safe || is_same_origin(request.headers()) {
        next.run(request).await
    } else {
        tracing::warn!(
            method = %request.method(),
            path = request.uri().path(),
            origin = ?request.headers().get(header::ORIGIN),
            "cross-origin request refused"
        );
        (
            StatusCode::FORBIDDEN,
            "This request came from another site and was refused. Use the app's own page.",
        )
            .into_response()
    }
}

fn is_same_origin(headers: &HeaderMap) -> bool {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    if let Some(origin) = text(header::ORIGIN.as_str()) {
        // The origin's host[:port] must be the host the request was sent to.
        let host = text(header::HOST.as_str()).unwrap_or_default();
        let origin_host = origin
            .split_once("://")
            .map(|(_, rest)| rest.trim_end_matches('/'))
            .unwrap_or("");
        return !host.is_empty() && origin_host.eq_ignore_ascii_case(host);
    }
    // No Origin: a browser's Sec-Fetch-Site still tells a cross-site request.
    !matches!(text("sec-fetch-site"), Some("cross-site" | "same-site"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (HeaderName::from_static(k), HeaderValue::from_static(v)))
            .collect()
    }

    #[test]
    fn origins() {
        assert!(is_same_origin(&headers(&[
            ("host", "chat.example:3000"),
            ("origin", "http://chat.example:3000")
        ])));
        assert!(is_same_origin(&headers(&[("host", "chat.example")])));
        assert!(is_same_origin(&headers(&[(
            "sec-fetch-site",
            "same-origin"
        )])));
        assert!(!is_same_origin(&headers(&[
            ("host", "chat.example"),
            ("origin", "https://evil.example")
        ])));
        assert!(!is_same_origin(&headers(&[
            ("host", "chat.example"),
            ("origin", "null")
        ])));
        assert!(!is_same_origin(&headers(&[
            ("host", "chat.example"),
            ("origin", "http://chat.example.evil.example")
        ])));
        assert!(!is_same_origin(&headers(&[(
            "sec-fetch-site",
            "cross-site"
        )])));
    }
}
