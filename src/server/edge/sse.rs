//! `GET /api/threads/{id}/events`: one SSE connection carries every stream
//! of a thread.
//!
//! Order matters for exactly-once: subscribe to the hub FIRST, then read the
//! thread's revision, then the snapshot (rows changed after the client's
//! revision, from `Last-Event-ID` or `?since=`, a page at a time as the
//! socket takes them), then forward live events newer than that revision. A
//! subscriber that falls more than the hub's capacity behind is resynced
//! from the database instead of slowing anyone down.
//!
//! Event ids are revisions. Every event but a token delta carries one; a
//! delta carries one at most every [`ID_EVERY`], which keeps a delta under
//! 50 bytes. Resume stays exact: a reconnect asks for rows changed after an
//! older revision, and the client drops what it already holds.
//!
//! Events that are ready together go out in one write (fewer syscalls under
//! load); the SSE text is written here, not per event by a framework.
//!
//! `?granularity=word|sentence` asks for a coarser view on this connection
//! only: its deltas are regrouped at those boundaries (with the configured
//! maximum delay), and events carry an id only while nothing is held back,
//! so a reconnect never skips held text.

use std::{collections::HashMap, convert::Infallible, fmt::Write, sync::Arc, time::Duration};

use axum::{
    body::{Body, Bytes},
    extract::{Extension, Path, Query, State},
    http::{header, HeaderMap},
    response::{IntoResponse, Response},
};
use futures::{Stream, StreamExt};
use serde::Deserialize;
use tokio::{
    sync::broadcast::{
        error::{RecvError, TryRecvError},
        Receiver,
    },
    time::Instant,
};
use tokio_util::sync::CancellationToken;

use super::access::Requester;
use crate::server::{
    accounts::{Accounts, Members, SessionRef, Watching},
    config::Config,
    fanout::hub::{Envelope, Hub},
    ingest::budget::PerClient,
    ingest::chunker::Chunker,
    metrics::Metrics,
    sleep_until,
    store::Store,
};
use crate::{
    error::AppError,
    model::{ChatEvent, Granularity, Part},
};

/// What serving subscriptions uses (from `AppState`).
#[derive(Clone)]
pub struct Subscriptions {
    pub config: Arc<Config>,
    pub store: Store,
    pub hub: Hub,
    pub metrics: Arc<Metrics>,
    /// Cancelled on shutdown: ends live subscriptions.
    pub shutdown: CancellationToken,
    /// Open subscriptions per client.
    pub per_client: PerClient,
    /// Built-in accounts: a subscription made with a session ends with it.
    pub accounts: Option<Accounts>,
    /// A private thread's subscription is for members, and ends with the
    /// membership.
    pub members: Members,
}

/// A token delta carries an event id at most this often.
const ID_EVERY: Duration = Duration::from_millis(250);
/// A comment line goes out after this much silence (proxies close idle streams).
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Most ready events written together.
const MAX_WRITE: usize = 256;

#[derive(Debug, Default, Deserialize)]
pub struct EventsQuery {
    since: Option<i64>,
    granularity: Option<String>,
}

pub async fn events(
    State(state): State<Subscriptions>,
    Path(thread_id): Path<String>,
    Query(query): Query<EventsQuery>,
    who: Option<Extension<Requester>>,
    session: Option<Extension<SessionRef>>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let last_event_id = headers.get("last-event-id").and_then(|v| v.to_str().ok());
    let watching = watch(&state, session);
    let stream = open(state, thread_id, last_event_id, query, who, watching).await?;
    Ok(event_stream_response(stream))
}

/// The hold on the subscription's session, when it has one.
fn watch(state: &Subscriptions, session: Option<Extension<SessionRef>>) -> Option<Watching> {
    let Extension(session) = session?;
    Some(state.accounts.as_ref()?.watch_session(&session))
}

/// Resolves on shutdown, or once what the subscription holds has ended:
/// its session (signed out on any instance, expired, or its account
/// disabled), or its membership of a private thread.
async fn stopped(shutdown: CancellationToken, holds: Vec<Watching>) {
    if holds.is_empty() {
        return shutdown.cancelled().await;
    }
    let ended = futures::future::select_all(holds.iter().map(|h| Box::pin(h.ended())));
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = ended => {}
    }
}

/// Opens a subscription: the bytes of the event stream, from the snapshot
/// on (whichever transport carries them: see `sse_listener.rs`).
async fn open(
    state: Subscriptions,
    thread_id: String,
    last_event_id: Option<&str>,
    query: EventsQuery,
    who: Option<Extension<Requester>>,
    session: Option<Watching>,
) -> Result<impl Stream<Item = Bytes> + Send + 'static, AppError> {
    let since = last_event_id
        .and_then(|v| v.trim().parse::<i64>().ok())
        .or(query.since);
    let granularity = match query.granularity.as_deref() {
        None | Some("") => Granularity::Token,
        Some(g) => Granularity::parse(g).ok_or_else(|| {
            AppError::Invalid("granularity must be token, word or sentence.".into())
        })?,
    };
    let identity = who.as_ref().and_then(|Extension(w)| w.identity.clone());
    let held = state
        .per_client
        .hold(&client_of(who))
        .ok_or_else(|| too_many(&state.per_client))?;
    let thread = state
        .members
        .thread(&thread_id, identity.as_deref())
        .await?;
    let holds = session
        .into_iter()
        .chain(state.members.watch(&thread, identity.as_deref()))
        .collect();
    let live = state.hub.subscribe(&thread_id);
    let first_rev = state.store.thread_rev(&thread_id).await?;
    let guard = (
        ViewerGuard::new(state.metrics.clone()),
        state.hub.join(&thread_id),
        held,
    );
    let from = Position {
        since,
        first_rev,
        granularity,
    };
    Ok(stream(state, thread_id, from, live, guard, holds))
}

/// Where a subscription starts.
struct Position {
    /// The revision the client holds (`None`: nothing).
    since: Option<i64>,
    /// The thread's revision when the live channel was joined.
    first_rev: i64,
    granularity: Granularity,
}

/// A subscription's bytes: the snapshot from `from`, then live events
/// gathered and written together (resynced from the database after a lag)
/// until shutdown. `guard` is held for its life (viewer count, presence,
/// the client's slot).
///
/// One generator per subscription, its reads boxed: an idle viewer holds
/// its position and channel, not the state of a read it is not making
/// (10,000 idle viewers are S4).
fn stream(
    state: Subscriptions,
    thread_id: String,
    from: Position,
    mut live: Receiver<Arc<Envelope>>,
    guard: impl Send + 'static,
    holds: Vec<Watching>,
) -> impl Stream<Item = Bytes> + Send + 'static {
    let max_delay = Duration::from_millis(state.config.stream.max_delay_ms);
    async_stream::stream! {
        let _viewer = guard;
        let mut out = Output::new(from.granularity, max_delay);
        out.rev = from.first_rev;
        // The snapshot, and after a lag the rows changed since, go out a
        // page at a time, each read once the socket took the one before:
        // a client that does not read holds one page, not the thread.
        let mut pages = Some(Box::pin(snapshot(state.store.clone(), thread_id.clone(), from.since)));
        let mut keep_alive = tokio::time::interval_at(Instant::now() + KEEP_ALIVE, KEEP_ALIVE);
        // Made once, not per event (each one joins and leaves a waiter list).
        let stopping = stopped(state.shutdown.clone(), holds);
        tokio::pin!(stopping);
        loop {
            if let Some(mut reading) = pages.take() {
                while let Some(frames) = reading.next().await {
                    let Ok(frames) = frames else { return };
                    yield frames;
                }
                out.sync();
                for bytes in out.take() {
                    yield bytes;
                }
            }
            // Shutdown is looked at last: the ends of replies committed
            // before it (the writer has closed by then) still go out.
            let received = tokio::select! {
                biased;
                _ = sleep_until(out.batcher.deadline()) => {
                    out.due(Instant::now());
                    None
                }
                _ = keep_alive.tick() => {
                    yield Bytes::from_static(b":\n\n");
                    continue;
                }
                received = live.recv() => Some(received),
                _ = &mut stopping => break,
            };
            match received.map(|first| gather(&mut out, &mut live, first, &thread_id)) {
                Some(Gathered::Closed) => return,
                Some(Gathered::Resync) => {
                    out.flush_held();
                    let Ok(rev) = Box::pin(state.store.thread_rev(&thread_id)).await else {
                        tracing::error!("resync failed; closing the subscription");
                        return;
                    };
                    // What was written before the lag goes first (below).
                    pages = Some(Box::pin(snapshot(state.store.clone(), thread_id.clone(), Some(out.rev))));
                    out.rev = out.rev.max(rev);
                }
                Some(Gathered::Written) | None => {}
            }
            let ready = out.take();
            if !ready.is_empty() {
                keep_alive.reset();
                // Consecutive chunks are written together (hyper gathers them).
                for bytes in ready {
                    yield bytes;
                }
            }
        }
    }
}

/// What [`gather`] did with what the live channel held.
#[derive(Debug, PartialEq)]
enum Gathered {
    /// Every event taken is in the output.
    Written,
    /// The subscriber must reload from the database (events before the
    /// one that said so are in the output).
    Resync,
    /// The channel closed.
    Closed,
}

/// Takes `first` and every event already waiting, up to [`MAX_WRITE`],
/// into `out`: they go out in one write.
fn gather(
    out: &mut Output,
    live: &mut Receiver<Arc<Envelope>>,
    first: Result<Arc<Envelope>, RecvError>,
    thread_id: &str,
) -> Gathered {
    let mut received = Some(first);
    let mut written = 0;
    while let Some(result) = received.take() {
        if needs_resync(&result, thread_id) {
            return Gathered::Resync;
        }
        match result {
            Ok(envelope) => out.live(&envelope, Instant::now()),
            Err(_) => return Gathered::Closed,
        }
        written += 1;
        if written < MAX_WRITE {
            received = waiting(live);
        }
    }
    Gathered::Written
}

/// Whether a received item means the subscriber must reload from the
/// database: a resync asked for, or events it lagged behind and lost.
fn needs_resync(result: &Result<Arc<Envelope>, RecvError>, thread_id: &str) -> bool {
    match result {
        Ok(envelope) => envelope.resync,
        Err(RecvError::Lagged(missed)) => {
            tracing::debug!(
                thread_id,
                missed,
                "subscriber lagged; resyncing from the database"
            );
            true
        }
        Err(RecvError::Closed) => false,
    }
}

/// The next event already waiting, if any.
fn waiting(live: &mut Receiver<Arc<Envelope>>) -> Option<Result<Arc<Envelope>, RecvError>> {
    match live.try_recv() {
        Ok(envelope) => Some(Ok(envelope)),
        Err(TryRecvError::Lagged(n)) => Some(Err(RecvError::Lagged(n))),
        Err(_) => None,
    }
}

/// Rows a snapshot sends at most per page (read when the previous page
/// has been taken by the connection) ...
const SNAPSHOT_PAGE: i64 = 20;
/// ... and bytes of text: a page holds rows while those before hold less
/// (one long message is still sent whole).
const SNAPSHOT_PAGE_BYTES: i64 = 256 * 1024;

/// The snapshot's rows as SSE frames, a page at a time: every message
/// changed after `since`, or without it the replies still streaming. The
/// rows carry no id (a client cut off mid-snapshot resumes before it). A
/// failed read ends it (and the subscription, which the client reopens).
fn snapshot(
    store: Store,
    thread_id: String,
    since: Option<i64>,
) -> impl Stream<Item = Result<Bytes, ()>> + Send + 'static {
    async_stream::stream! {
        let mut after = 0;
        loop {
            match store.changed_page(&thread_id, since, after, SNAPSHOT_PAGE, SNAPSHOT_PAGE_BYTES).await {
                Ok(rows) => {
                    // A short page is the last unless its bytes cut it (the
                    // rows' text, as sent, is at least what the page counted).
                    let bytes: usize = rows.iter().map(|m| m.part_lens().iter().sum::<usize>()).sum();
                    let last = (rows.len() as i64) < SNAPSHOT_PAGE
                        && (bytes as i64) < SNAPSHOT_PAGE_BYTES;
                    after = rows.last().map_or(after, |m| m.id);
                    let mut frames = String::new();
                    for message in rows {
                        write_event(&mut frames, None, &ChatEvent::Message { message });
                    }
                    if !frames.is_empty() {
                        yield Ok(Bytes::from(frames));
                    }
                    if last {
                        return;
                    }
                }
                Err(e) => {
                    tracing::error!(thread_id, error = %e, "snapshot read failed; closing the subscription");
                    yield Err(());
                    return;
                }
            }
        }
    }
}

/// `GET /api/threads/events`: the thread list's changes (home pages). No
/// ids and no replay: a client refetches the list when it (re)connects, and
/// one that falls behind is disconnected so that it does.
pub async fn thread_list_events(
    State(state): State<Subscriptions>,
    who: Option<Extension<Requester>>,
    session: Option<Extension<SessionRef>>,
) -> Result<Response, AppError> {
    let stopping = stopped(
        state.shutdown.clone(),
        watch(&state, session).into_iter().collect(),
    );
    let held = state
        .per_client
        .hold(&client_of(who))
        .ok_or_else(|| too_many(&state.per_client))?;
    let mut index = state.hub.subscribe_index();
    let stream = async_stream::stream! {
        let _held = held;
        tokio::pin!(stopping);
        yield Bytes::from_static(b":\n\n");
        let mut keep_alive = tokio::time::interval_at(Instant::now() + KEEP_ALIVE, KEEP_ALIVE);
        loop {
            tokio::select! {
                _ = &mut stopping => break,
                _ = keep_alive.tick() => yield Bytes::from_static(b":\n\n"),
                received = index.recv() => match received {
                    Ok(envelope) => yield envelope.frame.clone(),
                    Err(_) => break,
                },
            }
        }
    };
    Ok(event_stream_response(stream))
}

/// The client key the door put on the request.
fn client_of(who: Option<Extension<Requester>>) -> String {
    who.map_or_else(|| "ip:unknown".to_owned(), |Extension(who)| who.client)
}

fn too_many(per_client: &PerClient) -> AppError {
    AppError::limited(
        format!(
            "Too many live views from you: {} at once is the limit. Close some tabs and try again.",
            per_client.max()
        ),
        Duration::from_secs(10),
    )
}

fn event_stream_response(stream: impl Stream<Item = Bytes> + Send + 'static) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        Body::from_stream(stream.map(Ok::<_, Infallible>)),
    )
        .into_response()
}

/// One connection's pending output and position.
struct Output {
    /// Chunks ready to send: shared event frames and text written here.
    ready: Vec<Bytes>,
    buf: String,
    /// The revision the client is current to once `buf` is sent.
    rev: i64,
    granularity: Granularity,
    batcher: Batcher,
    last_id_at: Option<Instant>,
}

impl Output {
    fn new(granularity: Granularity, max_delay: Duration) -> Self {
        Self {
            ready: Vec::new(),
            buf: String::new(),
            rev: 0,
            granularity,
            batcher: Batcher::new(granularity, max_delay),
            last_id_at: None,
        }
    }

    /// Moves text written so far into the ready chunks.
    fn seal(&mut self) {
        if !self.buf.is_empty() {
            self.ready.push(Bytes::from(std::mem::take(&mut self.buf)));
        }
    }

    fn take(&mut self) -> Vec<Bytes> {
        self.seal();
        std::mem::take(&mut self.ready)
    }

    fn flush_held(&mut self) {
        self.batcher.flush_all(&mut self.buf);
    }

    /// The end of a snapshot: a `sync` event carrying its revision as the id.
    fn sync(&mut self) {
        write_event(
            &mut self.buf,
            Some(self.rev),
            &ChatEvent::Sync { rev: self.rev },
        );
    }

    fn live(&mut self, envelope: &Envelope, now: Instant) {
        if envelope.event.is_ephemeral() {
            self.seal();
            self.ready.push(envelope.frame.clone());
            return;
        }
        if envelope.rev <= self.rev {
            return; // already in the snapshot
        }
        self.rev = envelope.rev;
        if self.granularity != Granularity::Token {
            self.batcher
                .push(&mut self.buf, &envelope.event, envelope.rev, now);
            return;
        }
        let is_delta = matches!(envelope.event, ChatEvent::Delta { .. });
        let id_due = self
            .last_id_at
            .is_none_or(|at| now.duration_since(at) >= ID_EVERY);
        if !is_delta || id_due {
            self.last_id_at = Some(now);
            let _ = writeln!(self.buf, "id:{}", envelope.rev);
        }
        self.seal();
        self.ready.push(envelope.frame.clone());
    }

    fn due(&mut self, now: Instant) {
        self.batcher.due(&mut self.buf, now, self.rev);
    }
}

/// Writes one SSE event (`data` is one line of JSON).
fn write_frame(buf: &mut String, id: Option<i64>, data: &str) {
    if let Some(id) = id {
        let _ = writeln!(buf, "id:{id}");
    }
    buf.push_str("data:");
    buf.push_str(data);
    buf.push_str("\n\n");
}

fn write_event(buf: &mut String, id: Option<i64>, event: &ChatEvent) {
    let data = serde_json::to_string(event).expect("events serialize");
    write_frame(buf, id, &data);
}

/// Counts an open subscription for as long as its stream lives.
struct ViewerGuard(Arc<Metrics>);

impl ViewerGuard {
    fn new(metrics: Arc<Metrics>) -> Self {
        metrics.viewers.inc();
        Self(metrics)
    }
}

impl Drop for ViewerGuard {
    fn drop(&mut self) {
        self.0.viewers.dec();
    }
}

/// Regroups one connection's deltas at word or sentence boundaries, each
/// part of a reply (answer, thinking) on its own.
struct Batcher {
    granularity: Granularity,
    max_delay: Duration,
    /// Per message part: the offset of the held text, and the chunker
    /// holding it.
    held: HashMap<(i64, Part), (usize, Chunker)>,
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

    fn push(&mut self, buf: &mut String, event: &ChatEvent, rev: i64, now: Instant) {
        match event {
            ChatEvent::Delta {
                id,
                part,
                offset,
                text,
            } => {
                // The other part's held text goes first: a reply's thinking
                // is whole before its answer shows.
                for other in Part::ALL.into_iter().filter(|p| p != part) {
                    self.flush(buf, *id, other);
                }
                let key = (*id, *part);
                let (start, chunker) = self
                    .held
                    .entry(key)
                    .or_insert_with(|| (*offset, Chunker::new(self.granularity, self.max_delay)));
                if *start + chunker.pending_len() != *offset {
                    // Not contiguous (cannot happen from one writer): pass through.
                    self.flush(buf, *id, *part);
                    self.held.remove(&key);
                    write_event(buf, None, event);
                    return;
                }
                if let Some(piece) = chunker.push(text, now) {
                    let delta = ChatEvent::Delta {
                        id: *id,
                        part: *part,
                        offset: *start,
                        text: piece,
                    };
                    *start += delta_len(&delta);
                    let id_rev = self.id(rev);
                    write_event(buf, id_rev, &delta);
                }
            }
            ChatEvent::Finished { id, .. }
            | ChatEvent::Message {
                message: crate::model::Message { id, .. },
            } => {
                for part in Part::ALL {
                    self.flush(buf, *id, part);
                    self.held.remove(&(*id, part));
                }
                write_event(buf, self.id(rev), event);
            }
            _ => write_event(buf, self.id(rev), event),
        }
    }

    /// Held text that waited the maximum delay.
    fn due(&mut self, buf: &mut String, now: Instant, rev: i64) {
        let mut out = Vec::new();
        for (&(id, part), (start, chunker)) in self.held.iter_mut() {
            if let Some(piece) = chunker.poll(now) {
                let delta = ChatEvent::Delta {
                    id,
                    part,
                    offset: *start,
                    text: piece,
                };
                *start += delta_len(&delta);
                out.push(delta);
            }
        }
        let id = self.id(rev);
        let count = out.len();
        for (i, delta) in out.iter().enumerate() {
            write_event(buf, if i + 1 == count { id } else { None }, delta);
        }
    }

    fn flush(&mut self, buf: &mut String, id: i64, part: Part) {
        if let Some((start, chunker)) = self.held.get_mut(&(id, part)) {
            if let Some(piece) = chunker.flush() {
                let delta = ChatEvent::Delta {
                    id,
                    part,
                    offset: *start,
                    text: piece,
                };
                *start += delta_len(&delta);
                write_event(buf, None, &delta);
            }
        }
    }

    fn flush_all(&mut self, buf: &mut String) {
        let keys: Vec<(i64, Part)> = self.held.keys().copied().collect();
        for (id, part) in keys {
            self.flush(buf, id, part);
        }
        self.held.clear();
    }
}

fn delta_len(delta: &ChatEvent) -> usize {
    match delta {
        ChatEvent::Delta { text, .. } => text.len(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::broadcast;

    use super::*;

    fn delta(rev: i64, offset: usize) -> Arc<Envelope> {
        let event = ChatEvent::Delta {
            id: 7,
            part: Part::Answer,
            offset,
            text: "x".into(),
        };
        let frame = format!("data:{}\n\n", serde_json::to_string(&event).unwrap());
        Arc::new(Envelope {
            rev,
            frame: Bytes::from(frame),
            event,
            resync: false,
        })
    }

    fn send_deltas(tx: &broadcast::Sender<Arc<Envelope>>, revs: std::ops::RangeInclusive<i64>) {
        for rev in revs {
            tx.send(delta(rev, rev as usize - 1)).unwrap();
        }
    }

    fn written(out: &mut Output) -> String {
        let bytes: Vec<u8> = out.take().concat();
        String::from_utf8(bytes).unwrap()
    }

    fn output() -> Output {
        Output::new(Granularity::Token, Duration::from_millis(100))
    }

    #[tokio::test]
    async fn waiting_events_go_out_together_up_to_the_write_cap() {
        let (tx, mut live) = broadcast::channel(1024);
        send_deltas(&tx, 1..=300);
        let mut out = output();
        let first = live.recv().await;
        assert_eq!(gather(&mut out, &mut live, first, "t"), Gathered::Written);
        let text = written(&mut out);
        assert_eq!(text.matches("data:").count(), MAX_WRITE);
        assert_eq!(out.rev, MAX_WRITE as i64);
        // The rest waits for the next write, in order.
        assert_eq!(live.recv().await.unwrap().rev, MAX_WRITE as i64 + 1);
    }

    #[tokio::test]
    async fn events_the_snapshot_covered_are_not_sent_again() {
        let (tx, mut live) = broadcast::channel(16);
        send_deltas(&tx, 1..=5);
        let mut out = output();
        out.rev = 3;
        let first = live.recv().await;
        assert_eq!(gather(&mut out, &mut live, first, "t"), Gathered::Written);
        let text = written(&mut out);
        assert_eq!(text.matches("data:").count(), 2, "{text}");
        assert!(text.contains(r#""o":3"#) && text.contains(r#""o":4"#));
    }

    #[tokio::test]
    async fn a_lag_asks_for_a_resync_and_keeps_what_came_before() {
        let (tx, mut live) = broadcast::channel(4);
        let mut out = output();
        send_deltas(&tx, 1..=1);
        let first = live.recv().await;
        // Ten more than the channel holds: the subscriber lagged.
        send_deltas(&tx, 2..=11);
        assert_eq!(gather(&mut out, &mut live, first, "t"), Gathered::Resync);
        assert_eq!(written(&mut out).matches("data:").count(), 1);
        assert_eq!(out.rev, 1, "a resync reads from the last revision sent");
    }

    #[tokio::test]
    async fn a_closed_channel_ends_the_subscription() {
        let (tx, mut live) = broadcast::channel::<Arc<Envelope>>(4);
        drop(tx);
        let first = live.recv().await;
        assert_eq!(
            gather(&mut output(), &mut live, first, "t"),
            Gathered::Closed
        );
    }
}
