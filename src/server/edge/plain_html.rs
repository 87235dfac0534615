//! Plain HTML pages (the sign-in and members pages): no JavaScript, the
//! app's stylesheet, every value escaped.

use axum::{
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};

use crate::error::AppError;
use crate::markdown::{escape, escape_attr};

pub fn redirect(to: &str) -> Response {
    let location = HeaderValue::from_str(to).unwrap_or(HeaderValue::from_static("/"));
    (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response()
}

/// A refused form: the page again with the reason, the refusal's status,
/// and `Retry-After` for a limit.
pub fn refused_form(error: &AppError, title: &str, body: &str) -> Response {
    let mut response = html(error.status(), title, body);
    if let Some(secs) = error.retry_after() {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, secs.into());
    }
    response
}

pub fn text(value: &str) -> String {
    let mut out = String::new();
    escape(value, &mut out);
    out
}

pub fn attr(value: &str) -> String {
    let mut out = String::new();
    escape_attr(value, &mut out);
    out
}

pub fn error_line(error: Option<&AppError>) -> String {
    error.map_or_else(String::new, |e| {
        format!(
            r#"<p class="page-error" role="alert">{}</p>"#,
            text(&e.to_string())
        )
    })
}

pub fn html(status: StatusCode, title: &str, body: &str) -> Response {
    let page = format!(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · streamchat</title><link rel="stylesheet" href="/pkg/streamchat.css"><link rel="icon" href="/favicon.svg" type="image/svg+xml">
</head><body><main class="account">{body}</main></body></html>"#,
        title = text(title),
    );
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        page,
    )
        .into_response()
}
