//! The per-client budget of state-changing requests, checked before any
//! handler runs: every post, new thread, rename, granularity change, Stop,
//! Regenerate, Continue and tool-call decision takes one from the client's per-minute budget;
//! past it the request is refused (429, `Retry-After`) and changes nothing.

use axum::{
    extract::{Request, State},
    http::Method,
    middleware::Next,
    response::Response,
};

use super::access::Requester;
use crate::server::{ingest::budget::Budget, store::Coordination};

/// The server functions that change something.
pub const STATE_CHANGING: [&str; 8] = [
    "/api/send_message",
    "/api/create_thread",
    "/api/rename_thread",
    "/api/set_granularity",
    "/api/stop_reply",
    "/api/regenerate_reply",
    "/api/continue_reply",
    "/api/decide_tool_call",
];

/// What the write limit uses (from `AppState`).
#[derive(Clone)]
pub struct Writes {
    pub budget: Budget,
    pub coordination: Coordination,
}

pub async fn writes(State(writes): State<Writes>, request: Request, next: Next) -> Response {
    let changes =
        request.method() == Method::POST && STATE_CHANGING.contains(&request.uri().path());
    if changes {
        let key = request
            .extensions()
            .get::<Requester>()
            .map_or("ip:unknown", |who| who.client.as_str());
        if let Err(refusal) = writes.budget.take(&writes.coordination, key, 1).await {
            tracing::info!(
                client = key,
                path = request.uri().path(),
                "write budget spent; refused"
            );
            return refusal.refusal(request.uri().path());
        }
    }
    next.run(request).await
}
