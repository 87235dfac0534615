//! `GET /api/threads/{id}/events`: one SSE connection carries every stream
//! of a thread.
//!
//! Order matters for exactly-once: subscribe to the hub FIRST, then read the
//! snapshot (rows changed after the client's revision, from `Last-Event-ID`
//! or `?since=`), then forward live events newer than the snapshot. Every
//! event's SSE id is the revision it brings the client to, so a reconnect
//! resumes exactly. A subscriber that falls more than the hub's capacity
//! behind is resynced from the database instead of slowing anyone down.
//!
//! `?granularity=word|sentence` asks for a coarser view on this connection
//! only: its deltas are regrouped at those boundaries (with the configured
//! maximum delay), and events carry an id only while nothing is held back,
//! so a reconnect never skips held text.

use std::{
    collections::HashMap,
    convert::Infallible,
    sync::{atomic::Ordering::Relaxed, Arc},
    time::Duration,
};

use axum::{
    extract::{Path, Query, State},
    http::HeaderMap,
    response::sse::{Event, KeepAlive, Sse},
};
use futures::Stream;
use serde::Deserialize;
use tokio::{sync::broadcast::error::RecvError, time::Instant};

use super::{chunker::Chunker, metrics::Metrics, sleep_until, state::AppState, store::Snapshot};
use crate::{
    error::AppError,
    model::{ChatEvent, Granularity},
};

#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    since: Option<i64>,
    granularity: Option<String>,
}

pub async fn events(
    State(state): State<AppState>,
    Path(thread_id): Path<String>,
    Query(query): Query<EventsQuery>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, AppError> {
    let since = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok())
        .or(query.since);
    let granularity = match query.granularity.as_deref() {
        None | Some("") => Granularity::Token,
        Some(g) => Granularity::parse(g).ok_or_else(|| {
            AppError::Invalid("granularity must be token, word or sentence.".into())
        })?,
    };
    if state.store.thread(&thread_id).await?.is_none() {
        return Err(AppError::NotFound(format!(
            "There is no thread \"{thread_id}\"."
        )));
    }
    let mut live = state.hub.subscribe(&thread_id);
    let first = state.store.snapshot(&thread_id, since).await?;
    let max_delay = Duration::from_millis(state.config.stream.max_delay_ms);

    let metrics = state.metrics.clone();
    let stream = async_stream::stream! {
        let _viewer = ViewerGuard::new(metrics);
        let mut rev = first.rev;
        let mut batcher = Batcher::new(granularity, max_delay);
        for event in snapshot_events(first) {
            yield Ok(event);
        }
        loop {
            let received = tokio::select! {
                _ = state.shutdown.cancelled() => break,
                _ = sleep_until(batcher.deadline()) => {
                    for event in batcher.due(Instant::now(), rev) {
                        yield Ok(event);
                    }
                    continue;
                }
                received = live.recv() => received,
            };
            match received {
                Ok(envelope) if envelope.rev > rev => {
                    rev = envelope.rev;
                    if granularity == Granularity::Token {
                        yield Ok(Event::default().id(rev.to_string()).data(&envelope.json));
                    } else {
                        for event in batcher.push(&envelope.event, rev, Instant::now()) {
                            yield Ok(event);
                        }
                    }
                }
                Ok(_) => {} // already in the snapshot
                Err(RecvError::Lagged(missed)) => {
                    tracing::debug!(thread_id, missed, "subscriber lagged; resyncing from the database");
                    for event in batcher.flush_all(None) {
                        yield Ok(event);
                    }
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

/// Counts an open subscription for as long as its stream lives.
struct ViewerGuard(Arc<Metrics>);

impl ViewerGuard {
    fn new(metrics: Arc<Metrics>) -> Self {
        metrics.viewers.fetch_add(1, Relaxed);
        Self(metrics)
    }
}

impl Drop for ViewerGuard {
    fn drop(&mut self) {
        self.0.viewers.fetch_sub(1, Relaxed);
    }
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
            let id = matches!(event, ChatEvent::Sync { .. }).then_some(rev);
            event_of(&event, id)
        })
}

fn event_of(event: &ChatEvent, id: Option<i64>) -> Event {
    let data = serde_json::to_string(event).expect("events serialize");
    match id {
        Some(id) => Event::default().id(id.to_string()).data(data),
        None => Event::default().data(data),
    }
}

/// Regroups one connection's deltas at word or sentence boundaries.
struct Batcher {
    granularity: Granularity,
    max_delay: Duration,
    /// Per message: the offset of the held text, and the chunker holding it.
    held: HashMap<i64, (usize, Chunker)>,
}

impl Batcher {
    fn new(granularity: Granularity, max_delay: Duration) -> Self {
        Self {
            granularity,
            max_delay,
            held: HashMap::new(),
        }
    }

    fn deadline(&self) -> Option<Instant> {
        self.held.values().filter_map(|(_, c)| c.deadline()).min()
    }

    /// The id an event may carry: the revision, unless text is held back.
    fn id(&self, rev: i64) -> Option<i64> {
        self.held
            .values()
            .all(|(_, c)| c.pending_len() == 0)
            .then_some(rev)
    }

    fn push(&mut self, event: &ChatEvent, rev: i64, now: Instant) -> Vec<Event> {
        let mut out = Vec::new();
        match event {
            ChatEvent::Delta { id, offset, text } => {
                let (start, chunker) = self
                    .held
                    .entry(*id)
                    .or_insert_with(|| (*offset, Chunker::new(self.granularity, self.max_delay)));
                if *start + chunker.pending_len() != *offset {
                    // Not contiguous (cannot happen from one writer): pass through.
                    out.extend(self.flush(*id, None));
                    out.push(event_of(event, None));
                    return out;
                }
                if let Some(piece) = chunker.push(text, now) {
                    let delta = ChatEvent::Delta {
                        id: *id,
                        offset: *start,
                        text: piece,
                    };
                    *start += delta_len(&delta);
                    let id_rev = self.id(rev);
                    out.push(event_of(&delta, id_rev));
                }
            }
            ChatEvent::Finished { id, .. }
            | ChatEvent::Message {
                message: crate::model::Message { id, .. },
            } => {
                out.extend(self.flush(*id, None));
                self.held.remove(id);
                out.push(event_of(event, self.id(rev)));
            }
            _ => out.push(event_of(event, self.id(rev))),
        }
        out
    }

    /// Held text that waited the maximum delay.
    fn due(&mut self, now: Instant, rev: i64) -> Vec<Event> {
        let mut out = Vec::new();
        let ids: Vec<i64> = self.held.keys().copied().collect();
        for id in ids {
            let (start, chunker) = self.held.get_mut(&id).expect("held");
            if let Some(piece) = chunker.poll(now) {
                let delta = ChatEvent::Delta {
                    id,
                    offset: *start,
                    text: piece,
                };
                *start += delta_len(&delta);
                out.push(delta);
            }
        }
        let id = self.id(rev);
        let count = out.len();
        out.into_iter()
            .enumerate()
            .map(|(i, d)| event_of(&d, if i + 1 == count { id } else { None }))
            .collect()
    }

    fn flush(&mut self, id: i64, rev: Option<i64>) -> Option<Event> {
        let (start, chunker) = self.held.get_mut(&id)?;
        let piece = chunker.flush()?;
        let delta = ChatEvent::Delta {
            id,
            offset: *start,
            text: piece,
        };
        *start += delta_len(&delta);
        Some(event_of(&delta, rev))
    }

    fn flush_all(&mut self, rev: Option<i64>) -> Vec<Event> {
        let ids: Vec<i64> = self.held.keys().copied().collect();
        let out = ids
            .into_iter()
            .filter_map(|id| self.flush(id, rev))
            .collect();
        self.held.clear();
        out
    }
}

fn delta_len(delta: &ChatEvent) -> usize {
    match delta {
        ChatEvent::Delta { text, .. } => text.len(),
        _ => 0,
    }
}
