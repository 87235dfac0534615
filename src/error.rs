//! The one error type. Server functions return it (JSON-encoded), axum
//! handlers turn it into a response with its status; internal causes are
//! logged on the server and users only ever see a clear message.

use leptos::server_fn::{codec::JsonEncoding, error::FromServerFnError, error::ServerFnErrorErr};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum AppError {
    /// The request itself is wrong; the message says how to fix it.
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    /// A limit was reached (rate, capacity); the message says when to retry,
    /// and so does `Retry-After` (whole seconds).
    #[error("{message}")]
    Limited { message: String, retry_after: u32 },
    /// The request conflicts with the current state (e.g. the reply already ended).
    #[error("{0}")]
    Conflict(String),
    /// The request needs a signed-in user (an identity header is configured).
    #[error("{0}")]
    Unauthorized(String),
    /// Known, but not allowed to do this.
    #[error("{0}")]
    Forbidden(String),
    /// The request names a host this app does not serve (a DNS-rebound
    /// page, a wrong proxy configuration).
    #[error("{0}")]
    Misdirected(String),
    /// The database refuses writes now (e.g. its disk is full); reads work.
    #[error("{0}")]
    Unavailable(String),
    /// Something failed on the server; the cause is in the server's log.
    #[error("Something went wrong on the server. Please try again.")]
    Internal,
    /// The browser could not reach the server or read its answer.
    #[error("Could not reach the server ({0}). Check your connection and try again.")]
    Network(String),
}

impl AppError {
    /// The answer to any request naming a thread that does not exist.
    pub fn no_thread(id: &str) -> Self {
        AppError::NotFound(format!("There is no thread \"{id}\"."))
    }

    /// The answer to any request naming a message that is not in the thread
    /// it names (the same whether the id exists elsewhere or not at all).
    pub fn no_message(id: i64) -> Self {
        AppError::NotFound(format!("There is no message {id} in this thread."))
    }

    /// A limit's refusal: `message` says which limit and when to retry.
    pub fn limited(message: impl Into<String>, retry_after: std::time::Duration) -> Self {
        AppError::Limited {
            message: message.into(),
            retry_after: retry_after.as_secs_f64().ceil().clamp(1.0, 3600.0) as u32,
        }
    }

    /// Seconds to wait before retrying, for a limit's refusal.
    pub fn retry_after(&self) -> Option<u32> {
        match self {
            AppError::Limited { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
}

impl FromServerFnError for AppError {
    type Encoder = JsonEncoding;

    fn from_server_fn_error(value: ServerFnErrorErr) -> Self {
        match value {
            ServerFnErrorErr::Args(msg) => AppError::Invalid(format!("Malformed request: {msg}")),
            ServerFnErrorErr::MissingArg(arg) => {
                AppError::Invalid(format!("Missing field: {arg}."))
            }
            ServerFnErrorErr::Request(msg) | ServerFnErrorErr::Response(msg) => {
                AppError::Network(msg)
            }
            other => AppError::Network(other.to_string()),
        }
    }
}

#[cfg(feature = "ssr")]
pub use server::causes;

#[cfg(feature = "ssr")]
mod server {
    use super::AppError;
    use axum::{http::StatusCode, response::IntoResponse};

    impl AppError {
        pub fn status(&self) -> StatusCode {
            match self {
                AppError::Invalid(_) => StatusCode::BAD_REQUEST,
                AppError::NotFound(_) => StatusCode::NOT_FOUND,
                AppError::Limited { .. } => StatusCode::TOO_MANY_REQUESTS,
                AppError::Misdirected(_) => StatusCode::MISDIRECTED_REQUEST,
                AppError::Conflict(_) => StatusCode::CONFLICT,
                AppError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
                AppError::Forbidden(_) => StatusCode::FORBIDDEN,
                AppError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
                AppError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
                AppError::Network(_) => StatusCode::BAD_GATEWAY,
            }
        }

        /// Logs an internal failure and returns the error users see for it.
        pub fn internal(cause: impl std::fmt::Display) -> Self {
            tracing::error!(error = %cause, "internal error");
            AppError::Internal
        }
    }

    /// An error and its whole `source()` chain, as one line: "a: b: c"
    /// (a cause whose text the line already holds is not repeated).
    pub fn causes(error: &(dyn std::error::Error + 'static)) -> String {
        let mut line = error.to_string();
        let mut next = error.source();
        while let Some(cause) = next {
            let text = cause.to_string();
            if !line.contains(&text) {
                line.push_str(": ");
                line.push_str(&text);
            }
            next = cause.source();
        }
        line
    }

    impl AppError {
        /// The refusal of a request before its handler ran: JSON, as a
        /// server function answers (its caller decodes it), for `/api/`
        /// paths; plain text for pages.
        pub fn refusal(self, path: &str) -> axum::response::Response {
            if !path.starts_with("/api/") {
                return self.into_response();
            }
            let status = self.status();
            let retry_after = self.retry_after();
            let mut response = (status, axum::Json(self)).into_response();
            if let Some(secs) = retry_after {
                response
                    .headers_mut()
                    .insert(axum::http::header::RETRY_AFTER, secs.into());
            }
            response
        }
    }

    impl IntoResponse for AppError {
        fn into_response(self) -> axum::response::Response {
            let mut response = (self.status(), self.to_string()).into_response();
            if let Some(secs) = self.retry_after() {
                response
                    .headers_mut()
                    .insert(axum::http::header::RETRY_AFTER, secs.into());
            }
            response
        }
    }

    #[cfg(test)]
    mod tests {
        use super::causes;

        #[derive(Debug, thiserror::Error)]
        #[error("reading thread lobby")]
        struct Outer(#[source] std::io::Error);

        #[test]
        fn an_error_is_logged_with_every_cause() {
            let inner = std::io::Error::other("disk on fire");
            assert_eq!(causes(&Outer(inner)), "reading thread lobby: disk on fire");
            // A cause its wrapper already shows is not repeated.
            let shown = std::io::Error::other("x");
            assert_eq!(causes(&shown), "x");
        }
    }
}
