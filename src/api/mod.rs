//! Server functions: thin wrappers that validate, call into `server`, and
//! map errors to statuses. One area per file.

mod messages;
mod replies;
mod search;
mod threads;
mod tools;

pub use messages::*;
pub use replies::*;
pub use search::*;
pub use threads::*;
pub use tools::*;

/// The cookie that remembers the author name a browser last posted with.
pub const AUTHOR_COOKIE: &str = "streamchat_author";

/// Server-side helpers shared by the server functions.
#[cfg(feature = "ssr")]
pub(crate) mod respond {
    use axum::http::{header, request::Parts, HeaderValue};
    use leptos::prelude::{expect_context, use_context};
    use leptos_axum::ResponseOptions;

    use crate::{error::AppError, server::state::AppState};

    pub fn state() -> AppState {
        expect_context::<AppState>()
    }

    /// The part of the state that produces replies.
    pub fn ingest(state: &AppState) -> crate::server::ingest::Ingest {
        axum::extract::FromRef::from_ref(state)
    }

    /// Who sent this request (the proxy identity or the client's address).
    pub fn requester(state: &AppState) -> Result<crate::server::edge::access::Requester, AppError> {
        let parts = use_context::<Parts>()
            .ok_or_else(|| AppError::internal("a server function ran without its request"))?;
        crate::server::edge::access::requester(&state.gate, &parts)
    }

    /// Who sent this request, once they may see `thread`: a private thread
    /// is the same 404 as an unknown one to anyone but its members. Every
    /// server function naming a thread asks this first.
    pub async fn member(
        state: &AppState,
        thread: &str,
    ) -> Result<(crate::server::edge::access::Requester, crate::model::Thread), AppError> {
        let who = requester(state)?;
        let thread = state
            .members
            .thread(thread, who.identity.as_deref())
            .await?;
        Ok((who, thread))
    }

    /// Sets the error's HTTP status, except for plain (no-JavaScript) form
    /// posts: those are redirected back with the error in the URL instead.
    pub fn finish<T>(result: Result<T, AppError>) -> Result<T, AppError> {
        if let Err(e) = &result {
            // (A page being rendered asks for HTML too, with a GET: its
            // status is the error's.)
            let form_post = use_context::<Parts>()
                .filter(|parts| parts.method == axum::http::Method::POST)
                .and_then(|parts| parts.headers.get(header::ACCEPT).cloned())
                .and_then(|accept| accept.to_str().ok().map(|a| a.contains("text/html")))
                .unwrap_or(false);
            if !form_post {
                let response = expect_context::<ResponseOptions>();
                response.set_status(e.status());
                if let Some(secs) = e.retry_after() {
                    response.insert_header(header::RETRY_AFTER, secs.into());
                }
            }
        }
        result
    }

    pub fn set_cookie(name: &str, value: &str) {
        let cookie = format!("{name}={value}; Path=/; Max-Age=31536000; SameSite=Lax; HttpOnly");
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            expect_context::<ResponseOptions>().append_header(header::SET_COOKIE, value);
        }
    }

    pub fn cookie(name: &str) -> Option<String> {
        let parts = use_context::<Parts>()?;
        parts
            .headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.to_owned())
    }
}
