//! The appender: the only writer of messages.
//!
//! Every change (a post and its placeholder, streamed text, a reply's end)
//! is a [`Command`] on one channel. The writer task takes all pending
//! commands, applies them in ONE transaction (group commit: an append alone
//! when idle, hundreds per commit under load), and only after the commit
//! publishes their events to the hub, in revision order. Being the single
//! writer makes revisions strictly increasing in commit order and lets it
//! keep each streaming body's length in memory for the delta offsets.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use tokio::{
    sync::{mpsc, oneshot},
    time::Instant,
};

use super::{
    generations::{EndRequest, Generations},
    hub::Hub,
    metrics::Metrics,
    now_ms,
    store::{self, NewMessage, Outcome, Store},
};
use crate::{
    error::AppError,
    model::{body_hash, ChatEvent, Message, Posted, Role, Status},
};

/// Commands queued before senders wait. Generation tasks await a free slot,
/// so a slow disk slows producers, never viewers.
const CHANNEL_CAPACITY: usize = 4096;
/// Most commands in one transaction.
const MAX_BATCH: usize = 1024;

pub struct NewPost {
    pub thread_id: String,
    pub author: String,
    pub body: String,
    /// A post with a request id already stored in the thread stores nothing
    /// and is answered with the first one (`Posted::repeated`).
    pub request_id: Option<String>,
    /// The replies to start: one per bot mentioned.
    pub replies: Vec<NewReply>,
}

/// A placeholder reply to insert with a post.
pub struct NewReply {
    /// The bot's handle (the reply's author).
    pub handle: String,
    pub model: String,
}

/// Where the writer answers a post.
type PostReply = oneshot::Sender<Result<Posted, AppError>>;
/// Where the writer answers a restart.
type RestartReply = oneshot::Sender<Result<Message, AppError>>;

/// A new attempt at an ended reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Restart {
    /// A new reply to the same prompt; the old one stays in history.
    Regenerate,
    /// The same reply back to `streaming`, to append what comes next.
    Continue,
}

enum Command {
    Post(NewPost, PostReply),
    Restart {
        thread_id: String,
        id: i64,
        kind: Restart,
        requested_by: String,
        model: String,
        reply: RestartReply,
    },
    Append {
        thread_id: Arc<str>,
        id: i64,
        text: String,
        /// When the provider sent the oldest part of `text` (for metrics).
        received: Instant,
    },
    /// Answered once every command queued before it is committed.
    Ping(oneshot::Sender<()>),
    Notice {
        thread_id: Arc<str>,
        id: i64,
        notice: Option<String>,
        retries: i64,
    },
    Finish {
        thread_id: Arc<str>,
        id: i64,
        outcome: Outcome,
    },
}

#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Command>,
}

impl Writer {
    /// Starts the writer task; revisions continue after `last_rev`.
    pub fn start(
        store: Store,
        hub: Hub,
        metrics: Arc<Metrics>,
        generations: Generations,
        last_rev: i64,
    ) -> Self {
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let task = WriterTask {
            store,
            hub,
            metrics,
            generations,
            next_rev: last_rev + 1,
            lengths: HashMap::new(),
            broken: HashSet::new(),
            deferred: Vec::new(),
            writes_failing: false,
        };
        tokio::spawn(task.run(rx));
        Self { tx }
    }

    /// Commits a user message and, if asked, its placeholder reply, in one transaction.
    pub async fn post(&self, post: NewPost) -> Result<Posted, AppError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Post(post, reply)).await?;
        answer
            .await
            .map_err(|_| AppError::internal("writer dropped a post"))?
    }

    /// Starts a new attempt at an ended reply; returns the row now streaming.
    pub async fn restart(
        &self,
        thread_id: &str,
        id: i64,
        kind: Restart,
        requested_by: String,
        model: String,
    ) -> Result<Message, AppError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Restart {
            thread_id: thread_id.to_owned(),
            id,
            kind,
            requested_by,
            model,
            reply,
        })
        .await?;
        answer
            .await
            .map_err(|_| AppError::internal("writer dropped a restart"))?
    }

    /// Sets (or clears) the passing note shown on a streaming reply.
    pub async fn notice(
        &self,
        thread_id: &Arc<str>,
        id: i64,
        notice: Option<String>,
        retries: i64,
    ) -> Result<(), AppError> {
        let thread_id = thread_id.clone();
        self.send(Command::Notice {
            thread_id,
            id,
            notice,
            retries,
        })
        .await
    }

    pub async fn append(
        &self,
        thread_id: &Arc<str>,
        id: i64,
        text: String,
        received: Instant,
    ) -> Result<(), AppError> {
        let thread_id = thread_id.clone();
        self.send(Command::Append {
            thread_id,
            id,
            text,
            received,
        })
        .await
    }

    /// Whether the writer is alive and committing: answers once everything
    /// queued before it is committed.
    pub async fn ping(&self) -> Result<(), AppError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Ping(reply)).await?;
        answer
            .await
            .map_err(|_| AppError::internal("writer dropped a ping"))
    }

    pub async fn finish(
        &self,
        thread_id: &Arc<str>,
        id: i64,
        outcome: Outcome,
    ) -> Result<(), AppError> {
        let thread_id = thread_id.clone();
        self.send(Command::Finish {
            thread_id,
            id,
            outcome,
        })
        .await
    }

    async fn send(&self, command: Command) -> Result<(), AppError> {
        self.tx
            .send(command)
            .await
            .map_err(|_| AppError::internal("the writer has stopped"))
    }
}

struct WriterTask {
    store: Store,
    hub: Hub,
    metrics: Arc<Metrics>,
    /// Told when a reply's text cannot be stored, so its task ends it.
    generations: Generations,
    next_rev: i64,
    /// Body length in bytes of each reply streaming now (committed state).
    lengths: HashMap<i64, usize>,
    /// Replies an append of which could not be stored: later appends are
    /// dropped (a reply never continues past a hole) and their end is
    /// recorded as `failed`.
    broken: HashSet<i64>,
    /// Ends of replies that could not be stored yet, retried every
    /// [`RETRY_PERIOD`] and with every batch until they are.
    deferred: Vec<Command>,
    /// Set when a write was refused; cleared only when a probe shows the
    /// database can grow again (a ping answers only then: `/healthz` is 503).
    writes_failing: bool,
}

/// How often refused ends of replies are tried again while nothing else comes.
const RETRY_PERIOD: std::time::Duration = std::time::Duration::from_secs(1);

/// What a batch will do once committed. Replies to callers are by position
/// in the batch's commands.
#[derive(Default)]
struct Effects {
    events: Vec<(Arc<str>, i64, ChatEvent)>,
    replies: Vec<(usize, Result<Posted, AppError>)>,
    restarts: Vec<(usize, Result<Message, AppError>)>,
    pings: Vec<usize>,
    lengths: HashMap<i64, Option<usize>>,
    /// Replies whose end this batch recorded.
    finished: Vec<i64>,
    /// When the provider sent each published delta's oldest text.
    received: Vec<Instant>,
}

/// Appends to one message merged within a batch.
struct PendingAppend {
    thread_id: Arc<str>,
    id: i64,
    text: String,
    received: Instant,
}

impl WriterTask {
    async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        loop {
            let received = if self.deferred.is_empty() {
                rx.recv_many(&mut batch, MAX_BATCH).await
            } else {
                tokio::time::timeout(RETRY_PERIOD, rx.recv_many(&mut batch, MAX_BATCH))
                    .await
                    .unwrap_or(usize::MAX)
            };
            if received == 0 {
                break;
            }
            // With several replies streaming, tokens tend to arrive together:
            // one scheduler turn lets those already on their way join this
            // commit (microseconds, against a commit's few hundred). A lone
            // reply commits at once.
            if self
                .metrics
                .replies_live
                .load(std::sync::atomic::Ordering::Relaxed)
                > 1
                && batch.len() < MAX_BATCH
            {
                tokio::task::yield_now().await;
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(command) => batch.push(command),
                        Err(_) => break,
                    }
                }
            }
            let mut commands = std::mem::take(&mut self.deferred);
            commands.append(&mut batch);
            self.commit(commands).await;
        }
        tracing::info!("writer stopped");
    }

    /// Commits `commands` in one transaction, then publishes. When that
    /// fails, each command is tried alone: one that still fails is refused
    /// ([`WriterTask::refuse`]) and the others commit and publish as usual.
    async fn commit(&mut self, commands: Vec<Command>) {
        let size = commands.len();
        match self.apply(&commands).await {
            Ok(effects) => self.committed(effects, commands).await,
            Err(e) if size == 1 => {
                tracing::error!(error = %e, "commit failed; nothing of it was published");
                for command in commands {
                    self.refuse(command).await;
                }
            }
            Err(e) => {
                tracing::error!(error = %e, size, "group commit failed; retrying its commands one by one");
                for command in commands {
                    match self.apply(std::slice::from_ref(&command)).await {
                        Ok(effects) => self.committed(effects, vec![command]).await,
                        Err(e) => {
                            tracing::error!(error = %e, "commit failed; nothing of it was published");
                            self.refuse(command).await;
                        }
                    }
                }
            }
        }
    }

    async fn committed(&mut self, effects: Effects, commands: Vec<Command>) {
        self.metrics.commit(commands.len());
        if self.writes_failing && !effects.pings.is_empty() {
            self.writes_failing = !self.probe().await;
            if !self.writes_failing {
                tracing::info!("the database takes writes again");
            }
        }
        self.publish(effects, commands);
    }

    /// Whether the database can grow now: a transaction writing a few pages,
    /// rolled back.
    async fn probe(&self) -> bool {
        let result: Result<(), sqlx::Error> = async {
            let mut tx = self.store.pool().begin().await?;
            store::probe_growth(&mut tx).await?;
            tx.commit().await
        }
        .await;
        result.is_ok()
    }

    /// Frees the storage reserve so that ends of replies can be recorded in
    /// a full database; true if there was one to free.
    async fn release_reserve(&self) -> bool {
        let result: Result<bool, sqlx::Error> = async {
            let mut tx = self.store.pool().begin().await?;
            let released = store::release_reserve(&mut tx).await?;
            tx.commit().await?;
            Ok(released)
        }
        .await;
        match result {
            Ok(released) => {
                if released {
                    tracing::warn!("storage reserve released to record how replies end");
                }
                released
            }
            Err(e) => {
                tracing::error!(error = %e, "could not release the storage reserve");
                false
            }
        }
    }

    /// A command that cannot be stored: its caller gets a clear error, a
    /// reply whose text it carried is ended as `failed` (keeping what was
    /// stored), and the end of a reply is kept to retry. Nothing of it is
    /// published.
    async fn refuse(&mut self, command: Command) {
        self.writes_failing = true;
        let unavailable = || {
            AppError::Unavailable(
                "The server's database refuses writes right now, so nothing was saved. \
                 Please try again shortly."
                    .into(),
            )
        };
        match command {
            Command::Post(_, reply) => {
                let _ = reply.send(Err(unavailable()));
            }
            Command::Restart { reply, .. } => {
                let _ = reply.send(Err(unavailable()));
            }
            // Dropped unanswered: the health check reports the writer failing.
            Command::Ping(_) => {}
            Command::Notice { id, .. } => {
                tracing::warn!(message_id = id, "a reply's notice could not be stored");
            }
            Command::Append { id, .. } => {
                if self.broken.insert(id) {
                    tracing::error!(
                        message_id = id,
                        "a reply's text could not be stored; ending it"
                    );
                    self.generations.end(id, EndRequest::Storage);
                }
            }
            Command::Finish { .. } => {
                // The end of a reply must be recorded: with the reserve's
                // pages freed it fits, even in a full database.
                if self.release_reserve().await {
                    if let Ok(effects) = self.apply(std::slice::from_ref(&command)).await {
                        self.committed(effects, vec![command]).await;
                        return;
                    }
                }
                self.deferred.push(command);
            }
        }
    }

    fn rev(&mut self) -> i64 {
        self.next_rev += 1;
        self.next_rev - 1
    }

    async fn apply(&mut self, commands: &[Command]) -> Result<Effects, sqlx::Error> {
        let mut effects = Effects::default();
        // Appends are merged per message until something else touches it.
        let mut pending: Vec<PendingAppend> = Vec::new();
        let mut tx = self.store.pool().begin().await?;
        let now = now_ms();
        for (at, command) in commands.iter().enumerate() {
            match command {
                Command::Append {
                    thread_id,
                    id,
                    text,
                    received,
                } => {
                    if self.broken.contains(id) {
                        continue;
                    }
                    match pending.iter_mut().find(|p| p.id == *id) {
                        Some(p) => p.text.push_str(text),
                        None => pending.push(PendingAppend {
                            thread_id: thread_id.clone(),
                            id: *id,
                            text: text.clone(),
                            received: *received,
                        }),
                    }
                }
                Command::Ping(_) => effects.pings.push(at),
                Command::Finish {
                    thread_id,
                    id,
                    outcome,
                } => {
                    let id = *id;
                    if let Some(at) = pending.iter().position(|p| p.id == id) {
                        let append = pending.remove(at);
                        self.flush_all(&mut tx, &mut effects, vec![append], now)
                            .await?;
                    }
                    let outcome = if self.broken.contains(&id) {
                        stored_in_part(outcome)
                    } else {
                        outcome.clone()
                    };
                    let rev = self.rev();
                    if let Some(body) = store::finish(&mut tx, id, &outcome, now, rev).await? {
                        effects.lengths.insert(id, None);
                        let event = ChatEvent::Finished {
                            id,
                            status: outcome.status,
                            len: body.len(),
                            hash: body_hash(&body),
                            error: outcome.error,
                            finish_reason: outcome.finish_reason,
                            stopped_by: outcome.stopped_by,
                            stats: outcome.stats,
                            finished_at: now,
                        };
                        effects.events.push((thread_id.clone(), rev, event));
                    }
                    effects.finished.push(id);
                }
                Command::Post(post, _) => {
                    let result = self.insert_post(&mut tx, &mut effects, post, now).await?;
                    effects.replies.push((at, result));
                }
                Command::Restart {
                    thread_id,
                    id,
                    kind,
                    requested_by,
                    model,
                    ..
                } => {
                    let result = self
                        .restart(
                            &mut tx,
                            &mut effects,
                            (thread_id, *id),
                            *kind,
                            requested_by,
                            model,
                            now,
                        )
                        .await?;
                    effects.restarts.push((at, result));
                }
                Command::Notice {
                    thread_id,
                    id,
                    notice,
                    retries,
                } => {
                    let rev = self.rev();
                    if store::set_notice(&mut tx, *id, notice.as_deref(), *retries, now, rev)
                        .await?
                    {
                        effects.events.push((
                            thread_id.clone(),
                            rev,
                            ChatEvent::Notice {
                                id: *id,
                                notice: notice.clone(),
                                retries: *retries,
                            },
                        ));
                    }
                }
            }
        }
        self.flush_all(&mut tx, &mut effects, pending, now).await?;
        tx.commit().await?;
        Ok(effects)
    }

    /// Body length now (this batch's view) of a streaming reply, or None if
    /// it ended earlier in this batch.
    async fn offset(
        &self,
        tx: &mut sqlx::SqliteConnection,
        effects: &Effects,
        id: i64,
    ) -> Result<Option<usize>, sqlx::Error> {
        Ok(match effects.lengths.get(&id) {
            Some(len) => *len,
            None => match self.lengths.get(&id) {
                Some(len) => Some(*len),
                None => Some(store::body_len(tx, id).await?),
            },
        })
    }

    /// Appends (at most one per message) in one statement.
    async fn flush_all(
        &mut self,
        tx: &mut sqlx::SqliteConnection,
        effects: &mut Effects,
        pending: Vec<PendingAppend>,
        now: i64,
    ) -> Result<(), sqlx::Error> {
        let mut rows = Vec::with_capacity(pending.len());
        for append in pending {
            if let Some(offset) = self.offset(tx, effects, append.id).await? {
                let rev = self.rev();
                rows.push((append, offset, rev));
            }
        }
        if rows.is_empty() {
            return Ok(());
        }
        let values: Vec<(i64, &str, i64)> = rows
            .iter()
            .map(|(a, _, rev)| (a.id, a.text.as_str(), *rev))
            .collect();
        let appended = store::append_many(tx, &values, now).await?;
        for (append, offset, rev) in rows {
            let PendingAppend {
                thread_id,
                id,
                text,
                received,
            } = append;
            if !appended.contains(&id) {
                tracing::warn!(
                    message_id = id,
                    "append to a reply that is no longer streaming dropped"
                );
                continue;
            }
            effects.lengths.insert(id, Some(offset + text.len()));
            effects.received.push(received);
            effects
                .events
                .push((thread_id, rev, ChatEvent::Delta { id, offset, text }));
        }
        Ok(())
    }

    async fn insert_post(
        &mut self,
        tx: &mut sqlx::SqliteConnection,
        effects: &mut Effects,
        post: &NewPost,
        now: i64,
    ) -> Result<Result<Posted, AppError>, sqlx::Error> {
        if !store::thread_exists(tx, &post.thread_id).await? {
            return Ok(Err(AppError::no_thread(&post.thread_id)));
        }
        if let Some(request_id) = &post.request_id {
            if let Some(mut posted) =
                store::posted_by_request(tx, &post.thread_id, request_id).await?
            {
                posted.repeated = true;
                return Ok(Ok(posted));
            }
        }
        let thread_id: Arc<str> = post.thread_id.as_str().into();
        let user = NewMessage {
            thread_id: &post.thread_id,
            author: &post.author,
            role: Role::User,
            body: &post.body,
            status: Status::Done,
            model: None,
            requested_by: None,
            context_before: None,
            request_id: post.request_id.as_deref(),
            reply_to: None,
        };
        let rev = self.rev();
        let message = store::insert_message(tx, &user, now, rev).await?;
        effects.events.push((
            thread_id.clone(),
            rev,
            ChatEvent::Message {
                message: message.clone(),
            },
        ));
        let mut replies = Vec::with_capacity(post.replies.len());
        for new_reply in &post.replies {
            let placeholder = NewMessage {
                thread_id: &post.thread_id,
                author: &new_reply.handle,
                role: Role::Assistant,
                body: "",
                status: Status::Streaming,
                model: Some(&new_reply.model),
                requested_by: Some(&post.author),
                context_before: None,
                request_id: None,
                reply_to: Some(message.id),
            };
            let rev = self.rev();
            let row = store::insert_message(tx, &placeholder, now, rev).await?;
            effects.lengths.insert(row.id, Some(0));
            effects.events.push((
                thread_id.clone(),
                rev,
                ChatEvent::Message {
                    message: row.clone(),
                },
            ));
            replies.push(row);
        }
        Ok(Ok(Posted {
            message,
            replies,
            repeated: false,
        }))
    }

    #[allow(clippy::too_many_arguments)]
    async fn restart(
        &mut self,
        tx: &mut sqlx::SqliteConnection,
        effects: &mut Effects,
        (thread_id, id): (&str, i64),
        kind: Restart,
        requested_by: &str,
        model: &str,
        now: i64,
    ) -> Result<Result<Message, AppError>, sqlx::Error> {
        let Some(original) = store::message_in(tx, thread_id, id).await? else {
            return Ok(Err(AppError::no_message(id)));
        };
        let allowed = match kind {
            Restart::Regenerate => original.can_regenerate(),
            Restart::Continue => original.can_continue(),
        };
        if !allowed {
            return Ok(Err(AppError::Conflict(format!(
                "This reply is {}; it cannot be {}.",
                original.status.label(),
                if kind == Restart::Continue {
                    "continued"
                } else {
                    "regenerated"
                }
            ))));
        }
        let rev = self.rev();
        let row = match kind {
            Restart::Regenerate => {
                let placeholder = NewMessage {
                    thread_id: &original.thread_id,
                    author: &original.author,
                    role: Role::Assistant,
                    body: "",
                    status: Status::Streaming,
                    model: Some(model),
                    requested_by: Some(requested_by),
                    context_before: Some(original.context_before.unwrap_or(original.id)),
                    request_id: None,
                    reply_to: None,
                };
                let row = store::insert_message(tx, &placeholder, now, rev).await?;
                effects.lengths.insert(row.id, Some(0));
                row
            }
            Restart::Continue => {
                let Some(row) = store::reopen(tx, id, requested_by, now, rev).await? else {
                    return Ok(Err(AppError::Conflict(
                        "This reply cannot be continued.".into(),
                    )));
                };
                effects.lengths.insert(row.id, Some(row.body.len()));
                row
            }
        };
        let thread_id: Arc<str> = row.thread_id.as_str().into();
        effects.events.push((
            thread_id,
            rev,
            ChatEvent::Message {
                message: row.clone(),
            },
        ));
        Ok(Ok(row))
    }

    fn publish(&mut self, effects: Effects, commands: Vec<Command>) {
        for (id, len) in effects.lengths {
            match len {
                Some(len) => self.lengths.insert(id, len),
                None => self.lengths.remove(&id),
            };
        }
        for id in effects.finished {
            self.broken.remove(&id);
        }
        for (thread_id, rev, event) in effects.events {
            self.hub.publish(&thread_id, rev, event);
        }
        let published = Instant::now();
        self.metrics.deltas_published.fetch_add(
            effects.received.len() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        for received in effects.received {
            self.metrics.published(published.duration_since(received));
        }
        // Answer the callers, by position in the batch.
        let mut commands: Vec<Option<Command>> = commands.into_iter().map(Some).collect();
        for at in effects.pings {
            if let Some(Command::Ping(reply)) = commands[at].take() {
                if !self.writes_failing {
                    let _ = reply.send(());
                }
            }
        }
        for (at, result) in effects.replies {
            if let Some(Command::Post(_, reply)) = commands[at].take() {
                let _ = reply.send(result);
            }
        }
        for (at, result) in effects.restarts {
            if let Some(Command::Restart { reply, .. }) = commands[at].take() {
                let _ = reply.send(result);
            }
        }
    }
}

/// The end of a reply part of whose text could not be stored: `failed`,
/// whatever the generation reported, with its usage kept.
fn stored_in_part(outcome: &Outcome) -> Outcome {
    Outcome {
        status: Status::Failed,
        error: Some(
            "The reply could not be stored completely (the server's database refused the \
             write); the text above is what was saved."
                .into(),
        ),
        finish_reason: outcome.finish_reason.clone(),
        stopped_by: None,
        stats: outcome.stats.clone(),
    }
}
