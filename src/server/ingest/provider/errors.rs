//! What a provider's failure says on a reply: a refusal before the stream
//! started ([`StartError`], from the provider's error envelope, parsed with
//! async-openai's `WrappedError`), a connection that failed, or a stream
//! that broke; always without key-like text or URLs, and cut short.

use std::time::Duration;

use async_openai::error::{OpenAIError, WrappedError};

use crate::error::causes;

/// Why a completion could not start.
#[derive(Debug)]
pub struct StartError {
    /// The provider's words (or the connection's), safe to show.
    pub message: String,
    /// The HTTP status, when the provider answered.
    pub status: Option<u16>,
    /// The provider's `Retry-After`, when it sent one.
    pub retry_after: Option<Duration>,
}

impl StartError {
    /// Rate limits and server errors are worth another attempt.
    pub fn retryable(&self) -> bool {
        self.status
            .is_some_and(|s| s == 429 || (500..600).contains(&s))
    }
}

/// The provider answered `status` (not a success) with `body`: its error
/// envelope's message, or the body itself (servers' 5xx pages are text).
pub(super) fn refused(
    status: reqwest::StatusCode,
    body: &[u8],
    retry_after: Option<Duration>,
) -> StartError {
    let message = match serde_json::from_slice::<WrappedError>(body) {
        Ok(wrapped) => wrapped.error.message,
        Err(_) => String::from_utf8_lossy(body).into_owned(),
    };
    StartError {
        message: shown(&format!(
            "The provider refused the request ({status}): {}",
            readable_error(&message)
        )),
        status: Some(status.as_u16()),
        retry_after,
    }
}

/// The request could not be sent, or its answer not read.
pub(super) fn unreachable(cause: &str) -> StartError {
    StartError {
        message: shown(&format!("Could not reach the provider: {cause}")),
        status: None,
        retry_after: None,
    }
}

/// Longest provider error shown on a reply, in characters.
const MAX_SHOWN_CHARS: usize = 300;

/// A provider's words as a reply may show them: anything that looks like a
/// key (`sk-...`, or any long run of key characters) replaced, and cut to
/// [`MAX_SHOWN_CHARS`]. Errors quote what they were sent, keys included.
pub fn shown(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_SHOWN_CHARS * 4));
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        let looks_like_key = run.len() >= 32
            || ((run.starts_with("sk-") || run.starts_with("sk_")) && run.len() > 6);
        if looks_like_key {
            out.push_str("[redacted]");
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in text.chars() {
        if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
        if out.chars().count() > MAX_SHOWN_CHARS * 2 {
            break;
        }
    }
    flush(&mut run, &mut out);
    if out.chars().count() > MAX_SHOWN_CHARS {
        out.chars().take(MAX_SHOWN_CHARS).chain(['…']).collect()
    } else {
        out
    }
}

/// [`shown`], with every URL (anything from `scheme://` to the next space,
/// its query string and credentials included) replaced by `[url]`: for
/// errors of services whose addresses may carry secrets (MCP servers).
pub fn shown_without_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_SHOWN_CHARS * 4));
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        // The scheme: the letters (and + - .) right before `://`.
        let scheme_start = rest[..at]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
            .map_or(0, |i| i + 1);
        let end = rest[at..]
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '`' | ')'))
            .map_or(rest.len(), |i| at + i);
        out.push_str(&rest[..scheme_start]);
        out.push_str("[url]");
        rest = &rest[end..];
        if out.len() > MAX_SHOWN_CHARS * 8 {
            break;
        }
    }
    out.push_str(rest);
    shown(&out)
}

/// The words of a provider's error. Some answers (5xx above all) reach us
/// as their raw body: an OpenAI error envelope (`{"error": {"message":
/// ...}}`), a bare `{"message": ...}`, or text; the message is taken out of
/// the envelope, and anything else is cut to a readable length.
pub fn readable_error(raw: &str) -> String {
    const MAX_CHARS: usize = 300;
    let parsed: Option<serde_json::Value> = serde_json::from_str(raw.trim()).ok();
    let message = parsed.as_ref().and_then(|v| {
        v.pointer("/error/message")
            .or_else(|| v.get("message"))
            .or_else(|| v.get("error").filter(|e| e.is_string()))
            .and_then(|m| m.as_str())
    });
    let text = message.unwrap_or(raw).trim();
    if text.chars().count() > MAX_CHARS {
        text.chars().take(MAX_CHARS).chain(['…']).collect()
    } else {
        text.to_owned()
    }
}

/// A reqwest error's words without the URL (which may carry credentials).
pub fn without_url(e: &reqwest::Error) -> String {
    let mut words = String::from(if e.is_connect() {
        "connection failed"
    } else if e.is_timeout() {
        "timed out"
    } else if e.is_body() || e.is_decode() {
        "reading the answer failed"
    } else {
        "request failed"
    });
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        words.push_str(": ");
        words.push_str(&cause.to_string());
        source = cause.source();
    }
    words
}

/// A failure after the stream started, in words safe to show.
pub fn stream_error(e: &OpenAIError) -> String {
    if let OpenAIError::InvalidArgument(ours) = e {
        return ours.clone();
    }
    shown(&stream_error_words(e))
}

fn stream_error_words(e: &OpenAIError) -> String {
    match e {
        OpenAIError::JSONDeserialize(err, _) => {
            format!("The provider sent a malformed chunk: {err}")
        }
        OpenAIError::StreamError(err) => {
            format!("The provider's stream broke: {}", causes(err.as_ref()))
        }
        OpenAIError::Reqwest(e) => format!("The provider's stream broke: {}", without_url(e)),
        OpenAIError::ApiError(api) => {
            format!(
                "The provider reported an error: {}",
                readable_error(&api.api_error.message)
            )
        }
        other => format!("The provider's stream failed: {other}"),
    }
}

#[cfg(test)]
mod readable_error_tests {
    use super::readable_error;

    #[test]
    fn envelopes_give_their_message() {
        assert_eq!(
            readable_error(
                r#"{"error":{"message":"The engine is overloaded","type":"server_error"}}"#
            ),
            "The engine is overloaded"
        );
        assert_eq!(readable_error(r#"{"message":"busy"}"#), "busy");
        assert_eq!(readable_error(r#"{"error":"busy"}"#), "busy");
        assert_eq!(readable_error("Bad Gateway"), "Bad Gateway");
        assert_eq!(readable_error(&"x".repeat(1000)).chars().count(), 301);
    }

    #[test]
    fn urls_are_never_shown() {
        let text = super::shown_without_urls(
            "Send request: error sending request for url (http://127.0.0.1:9/mcp?token=s3cr3t&x=1): \
             connection refused; see https://user:pw@example.com/x",
        );
        assert!(
            !text.contains("s3cr3t") && !text.contains("pw@") && !text.contains("127.0.0.1"),
            "{text}"
        );
        assert_eq!(
            text,
            "Send request: error sending request for url ([url]): connection refused; see [url]"
        );
        assert_eq!(
            super::shown_without_urls("no address here"),
            "no address here"
        );
        assert_eq!(super::shown_without_urls("://x"), "[url]");
        assert!(
            super::shown_without_urls(&"http://a ".repeat(10_000))
                .chars()
                .count()
                <= 301
        );
    }

    #[test]
    fn keys_are_never_shown_and_errors_are_cut() {
        let text = super::shown(
            "Incorrect API key provided: sk-proj-abcDEF123_456. You can find your API key at \
             https://platform.openai.com/account/api-keys.",
        );
        assert!(!text.contains("sk-proj"), "{text}");
        assert!(!text.contains("abcDEF123"), "{text}");
        assert!(
            text.contains("Incorrect API key provided: [redacted]"),
            "{text}"
        );
        assert!(text.contains("api-keys"), "ordinary words stay: {text}");
        let long = super::shown(&format!("token {} end", "a".repeat(40)));
        assert_eq!(long, "token [redacted] end");
        assert_eq!(super::shown(&"word ".repeat(1000)).chars().count(), 301);
    }
}
