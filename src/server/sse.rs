//! `GET /api/threads/{id}/events`: one SSE connection carries every stream
//! of a thread.
//!
//! Order matters for exactly-once: subscribe to the hub FIRST, then read the
//! snapshot (rows changed after the client's revision, from `Last-Event-ID`
//! or `?since=`), then forward live events newer than the snapshot. Every
//! event's SSE id is the revision it brings the client to, so a reconnect
//! resumes exactly. A subscriber that falls more than the hub's capacity
//! behind is resynced from the database instead of slowing anyone down.

use std::{convert::Infallible, time::Duration};

use axum::{
    extract::{Path, Query, State},
    http::HeaderMap,
    response::sse::{Event, KeepAlive, Sse},
};
use futures::Stream;
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;

use super::{state::AppState, store::Snapshot};
use crate::{error::AppError, model::ChatEvent};

#[derive(Debug, Deserialize)]
pub struct SinceQuery {
    since: Option<i64>,
}

pub async fn events(
    State(state): State<AppState>,
    Path(thread_id): Path<String>,
    Query(query): Query<SinceQuery>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, AppError> {
    let since = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok())
        .or(query.since);
    if state.store.thread(&thread_id).await?.is_none() {
        return Err(AppError::NotFound(format!(
            "There is no thread \"{thread_id}\"."
        )));
    }
    let mut live = state.hub.subscribe(&thread_id);
    let first = state.store.snapshot(&thread_id, since).await?;

    let stream = async_stream::stream! {
        let mut rev = first.rev;
        for event in snapshot_events(first) {
            yield Ok(event);
        }
        loop {
            let received = tokio::select! {
                _ = state.shutdown.cancelled() => break,
                received = live.recv() => received,
            };
            match received {
                Ok(envelope) if envelope.rev > rev => {
                    rev = envelope.rev;
                    yield Ok(Event::default().id(rev.to_string()).data(&envelope.json));
                }
                Ok(_) => {} // already in the snapshot
                Err(RecvError::Lagged(missed)) => {
                    tracing::debug!(thread_id, missed, "subscriber lagged; resyncing from the database");
                    match state.store.snapshot(&thread_id, Some(rev)).await {
                        Ok(snapshot) => {
                            rev = rev.max(snapshot.rev);
                            for event in snapshot_events(snapshot) {
                                yield Ok(event);
                            }
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "resync failed; closing the subscription");
                            break;
                        }
                    }
                }
                Err(RecvError::Closed) => break,
            }
        }
    };
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// The snapshot's rows, then a `sync` event carrying its revision as the id
/// (rows carry no id: a client cut off mid-snapshot resumes before it).
fn snapshot_events(snapshot: Snapshot) -> impl Iterator<Item = Event> {
    let rev = snapshot.rev;
    snapshot
        .messages
        .into_iter()
        .map(|message| ChatEvent::Message { message })
        .chain(std::iter::once(ChatEvent::Sync { rev }))
        .map(move |event| {
            let data = serde_json::to_string(&event).expect("events serialize");
            match event {
                ChatEvent::Sync { .. } => Event::default().id(rev.to_string()).data(data),
                _ => Event::default().data(data),
            }
        })
}
