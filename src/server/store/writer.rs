//! The appender: the only writer of messages.
//!
//! Every change (a post and its placeholder, streamed text, a reply's end)
//! is a [`Command`] on one channel. The writer task takes all pending
//! commands, applies them in ONE transaction (group commit: an append alone
//! when idle, hundreds per commit under load), and only after the commit
//! publishes their events to the hub, in revision order. Streamed text
//! becomes rows of the append-only reply log (one per reply per batch); a
//! batch of nothing but text is a single `INSERT`, atomic without a
//! transaction around it. Being the single writer makes revisions strictly
//! increasing in commit order and lets it keep each streaming reply's log
//! cursor (length, next row) in memory for the delta offsets.
//!
//! The writer applies; it does not decide. What may be restarted, and with
//! which row, is the outbox's business (`ingest/outbox.rs`).
//!
//! On PostgreSQL several instances write one database, each through its
//! own writer. A transaction then locks the threads it writes (in id
//! order) and takes their next revisions from them, so a thread's
//! revisions are in commit order across instances. Each streaming reply
//! is leased to one instance: the writer remembers the epoch of each
//! lease it holds, refuses (and ends) a reply whose lease another instance
//! took over, and renews its leases every third of their term. It does not
//! publish: every instance's wake-up listener reads the committed rows
//! back (`store/wakeups.rs`), its own included, so all viewers see one
//! order.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use tokio::{
    sync::{mpsc, oneshot},
    time::Instant,
};

use super::{Coordination, LogAppend, LogCursor, NewMessage, Store, Tx};
use crate::server::{fanout::hub::Hub, metrics::Metrics, now_ms};
use crate::{
    error::AppError,
    model::{body_hash, ChatEvent, Message, NewPost, Outcome, Part, Posted, Role, Status},
};

/// Commands queued before senders wait. Generation tasks await a free slot,
/// so a slow disk slows producers, never viewers.
const CHANNEL_CAPACITY: usize = 4096;
/// Most commands in one transaction.
const MAX_BATCH: usize = 1024;

/// Where the writer answers a post.
type PostReply = oneshot::Sender<Result<Posted, AppError>>;
/// Where the writer answers a restart.
type RestartReply = oneshot::Sender<Result<Message, AppError>>;

/// A new placeholder reply answering the prompt before `context_before`
/// (Regenerate).
pub struct NewAttempt {
    pub thread_id: String,
    pub author: String,
    pub model: String,
    pub requested_by: String,
    pub context_before: i64,
}

enum Command {
    Post(NewPost, PostReply),
    /// Inserts a placeholder reply.
    Attempt(NewAttempt, RestartReply),
    /// Puts an ended reply back to `streaming` if its status is one of `from`.
    Reopen {
        thread_id: String,
        id: i64,
        from: &'static [Status],
        requested_by: String,
        reply: RestartReply,
    },
    Append {
        thread_id: Arc<str>,
        id: i64,
        part: Part,
        text: String,
        /// When the provider sent the oldest part of `text` (for metrics).
        received: Instant,
    },
    /// Answered once every command queued before it is committed.
    Ping(oneshot::Sender<()>),
    /// Shutdown: commit everything queued, answer, and stop.
    Close(oneshot::Sender<()>),
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
    /// A reasoning reply's answer starts: how long it thought.
    Thought {
        thread_id: Arc<str>,
        id: i64,
        thinking_ms: i64,
    },
    /// Extends every lease this writer holds (PostgreSQL).
    Renew,
    /// Gives up this instance's lease on a reply it stops producing without
    /// ending it (shutdown): another instance takes it over at once.
    Release {
        thread_id: Arc<str>,
        id: i64,
    },
    /// Takes over a streaming reply whose producer's lease expired.
    Adopt {
        thread_id: String,
        id: i64,
        reply: oneshot::Sender<Result<Option<Adopted>, AppError>>,
    },
}

/// A reply this instance took over from one that stopped renewing its
/// lease: the row as stored (its text so far) and whether someone pressed
/// Stop while no one produced it.
#[derive(Debug)]
pub struct Adopted {
    pub message: Message,
    pub stop_requested_by: Option<String>,
}

/// Why a reply's text cannot be written any more.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unwritable {
    /// The database refused its text.
    Storage,
    /// Another instance took over its lease: this one must stop producing.
    LeaseLost,
}

#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Command>,
}

impl Writer {
    /// Starts the writer task; revisions continue after `last_rev`.
    /// `on_unstorable` is called with a reply whose text can no longer be
    /// written, and why (its producer should end it).
    pub fn start(
        store: Store,
        coordination: Coordination,
        hub: Hub,
        metrics: Arc<Metrics>,
        on_unstorable: impl Fn(i64, Unwritable) + Send + Sync + 'static,
        last_rev: i64,
    ) -> Self {
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let shared = coordination.lease();
        let task = WriterTask {
            store,
            hub,
            metrics,
            on_unstorable: Box::new(on_unstorable),
            next_rev: last_rev + 1,
            cursors: HashMap::new(),
            leases: HashMap::new(),
            lost: HashSet::new(),
            broken: HashSet::new(),
            deferred: Vec::new(),
            writes_failing: false,
            publish: coordination.writer_publishes(),
        };
        tokio::spawn(task.run(rx));
        if let Some(ttl) = shared {
            spawn_renewals(tx.downgrade(), ttl / 3);
        }
        Self { tx }
    }

    /// Hands reply `id` over to the other instances: its lease ends now,
    /// its text so far stays, and another instance continues it.
    pub async fn release(&self, thread_id: &Arc<str>, id: i64) -> Result<(), AppError> {
        self.send(Command::Release {
            thread_id: thread_id.clone(),
            id,
        })
        .await
    }

    /// Takes over reply `id` if its producer's lease expired; `None` if it
    /// did not (renewed meanwhile, ended, or another instance was first).
    pub async fn adopt(&self, thread_id: &str, id: i64) -> Result<Option<Adopted>, AppError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Adopt {
            thread_id: thread_id.to_owned(),
            id,
            reply,
        })
        .await?;
        answer
            .await
            .map_err(|_| AppError::internal("writer dropped an adoption"))?
    }

    /// Commits a user message and, if asked, its placeholder reply, in one transaction.
    pub async fn post(&self, post: NewPost) -> Result<Posted, AppError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Post(post, reply)).await?;
        answer
            .await
            .map_err(|_| AppError::internal("writer dropped a post"))?
    }

    /// Inserts a new placeholder reply; returns the row now streaming.
    pub async fn attempt(&self, attempt: NewAttempt) -> Result<Message, AppError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Attempt(attempt, reply)).await?;
        answer
            .await
            .map_err(|_| AppError::internal("writer dropped a restart"))?
    }

    /// Puts reply `id` back to `streaming`, keeping its text, if its status
    /// is one of `from`; returns the row, or `None` if it was not.
    pub async fn reopen(
        &self,
        thread_id: &str,
        id: i64,
        from: &'static [Status],
        requested_by: String,
    ) -> Result<Option<Message>, AppError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Reopen {
            thread_id: thread_id.to_owned(),
            id,
            from,
            requested_by,
            reply,
        })
        .await?;
        match answer
            .await
            .map_err(|_| AppError::internal("writer dropped a restart"))?
        {
            Ok(message) => Ok(Some(message)),
            Err(AppError::Conflict(_)) => Ok(None),
            Err(e) => Err(e),
        }
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

    /// Records how long a reply thought, as its answer starts.
    pub async fn thought(
        &self,
        thread_id: &Arc<str>,
        id: i64,
        thinking_ms: i64,
    ) -> Result<(), AppError> {
        let thread_id = thread_id.clone();
        self.send(Command::Thought {
            thread_id,
            id,
            thinking_ms,
        })
        .await
    }

    /// Appends `text` to one part of a streaming reply.
    pub async fn append(
        &self,
        thread_id: &Arc<str>,
        id: i64,
        part: Part,
        text: String,
        received: Instant,
    ) -> Result<(), AppError> {
        let thread_id = thread_id.clone();
        self.send(Command::Append {
            thread_id,
            id,
            part,
            text,
            received,
        })
        .await
    }

    /// Shutdown: returns once everything queued before this call is
    /// committed (and published) and the writer has stopped; anything sent
    /// afterwards is refused.
    pub async fn close(&self) -> Result<(), AppError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Close(reply)).await?;
        answer
            .await
            .map_err(|_| AppError::internal("the writer stopped before closing"))
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
    /// Told when a reply's text cannot be stored, so its producer ends it.
    on_unstorable: Box<dyn Fn(i64, Unwritable) + Send + Sync>,
    next_rev: i64,
    /// Where the log of each reply streaming now stands (committed state):
    /// the next delta's offset and log row.
    cursors: HashMap<i64, LogCursor>,
    /// The epoch of the lease this instance holds on each reply it
    /// produces (always 0 on SQLite).
    leases: HashMap<i64, i64>,
    /// Replies whose lease another instance took over: nothing more of
    /// theirs is written (cleared when their producer's end arrives).
    lost: HashSet<i64>,
    /// Whether this writer publishes its commits to the hub itself (SQLite:
    /// the only instance). On PostgreSQL the wake-up listener does.
    publish: bool,
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
    cursors: HashMap<i64, Option<LogCursor>>,
    /// Leases taken (Some(epoch)) or given up (None) by this batch.
    leases: HashMap<i64, Option<i64>>,
    /// Adoptions answered, by position in the batch.
    adoptions: Vec<(usize, Option<Adopted>)>,
    /// Wake-ups the commit sent to other instances (PostgreSQL).
    notifications: u64,
    /// Replies whose end this batch recorded.
    finished: Vec<i64>,
    /// When the provider sent each published delta's oldest text.
    received: Vec<Instant>,
}

impl Effects {
    /// Records appended log rows (each numbered with its reply's cursor
    /// before it, already advanced in `cursors`) as deltas.
    fn appended(&mut self, rows: Vec<(PendingAppend, LogCursor, i64)>) {
        for (append, cursor, rev) in rows {
            let PendingAppend {
                thread_id,
                id,
                part,
                text,
                received,
            } = append;
            let offset = cursor.len(part);
            self.received.push(received);
            self.events.push((
                thread_id,
                rev,
                ChatEvent::Delta {
                    id,
                    part,
                    offset,
                    text,
                },
            ));
        }
    }

    /// Publishes a message row as it now stands.
    fn message(&mut self, rev: i64, message: &Message) {
        self.events.push((
            message.thread_id.as_str().into(),
            rev,
            ChatEvent::Message {
                message: message.clone(),
            },
        ));
    }
}

/// Appends to one part of a message merged within a batch.
struct PendingAppend {
    thread_id: Arc<str>,
    id: i64,
    part: Part,
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
            if self.metrics.replies_live.get() > 1 && batch.len() < MAX_BATCH {
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
            let mut closes = take_closes(&mut commands);
            if closes.is_empty() {
                self.commit(commands).await;
                continue;
            }
            // Shutdown: what is still queued behind the close is committed
            // with it (nothing more can be queued once the channel closes).
            rx.close();
            while let Ok(command) = rx.try_recv() {
                commands.push(command);
            }
            closes.append(&mut take_closes(&mut commands));
            self.commit(commands).await;
            let deferred = std::mem::take(&mut self.deferred);
            if !deferred.is_empty() {
                self.commit(deferred).await;
            }
            if !self.deferred.is_empty() {
                tracing::error!(
                    replies = self.deferred.len(),
                    "stopping with ends of replies the database refused; the next start-up \
                     records them as interrupted"
                );
            }
            for close in closes {
                let _ = close.send(());
            }
            break;
        }
        tracing::info!("writer stopped");
    }

    /// Commits `commands` in one transaction, then publishes. When that
    /// fails, each command is tried alone: one that still fails is refused
    /// ([`WriterTask::refuse`]) and the others commit and publish as usual.
    async fn commit(&mut self, mut commands: Vec<Command>) {
        if commands.is_empty() {
            return;
        }
        if self.leases.is_empty() {
            // Nothing to renew: no transaction for the renewal tick.
            commands.retain(|c| !matches!(c, Command::Renew));
            if commands.is_empty() {
                return;
            }
        }
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
        self.metrics.notifications.inc_by(effects.notifications);
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
            let mut tx = self.store.begin().await?;
            tx.probe_growth().await?;
            tx.commit().await.map(drop)
        }
        .await;
        result.is_ok()
    }

    /// Frees the storage reserve so that ends of replies can be recorded in
    /// a full database; true if there was one to free.
    async fn release_reserve(&self) -> bool {
        let result: Result<bool, sqlx::Error> = async {
            let mut tx = self.store.begin().await?;
            let released = tx.release_reserve().await?;
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
            Command::Attempt(_, reply) | Command::Reopen { reply, .. } => {
                let _ = reply.send(Err(unavailable()));
            }
            Command::Adopt { reply, .. } => {
                let _ = reply.send(Err(unavailable()));
            }
            // Dropped unanswered: the health check reports the writer failing.
            // (A release not stored: the lease simply runs out.)
            Command::Ping(_) | Command::Close(_) | Command::Renew | Command::Release { .. } => {}
            Command::Notice { id, .. } | Command::Thought { id, .. } => {
                tracing::warn!(
                    message_id = id,
                    "a reply's notice or thinking time could not be stored"
                );
            }
            Command::Append { id, .. } => {
                if self.broken.insert(id) {
                    tracing::error!(
                        message_id = id,
                        "a reply's text could not be stored; ending it"
                    );
                    (self.on_unstorable)(id, Unwritable::Storage);
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

    /// The writer's own counter (SQLite: one writer numbers every change).
    fn global_rev(&mut self) -> i64 {
        self.next_rev += 1;
        self.next_rev - 1
    }

    /// The next revision of a thread: from the transaction where the
    /// backend allocates them per thread, else the writer's counter.
    async fn rev(&mut self, tx: &mut Tx, thread_id: &str) -> Result<i64, sqlx::Error> {
        Ok(match tx.next_rev(thread_id).await? {
            Some(rev) => rev,
            None => self.global_rev(),
        })
    }

    /// Locks the batch's threads and finds the replies it writes whose
    /// lease this instance lost (PostgreSQL); those are ended, and nothing
    /// more of theirs is written.
    async fn fence(&mut self, tx: &mut Tx, commands: &[Command]) -> Result<(), sqlx::Error> {
        let mut threads: Vec<&str> = Vec::new();
        let mut writes: Vec<i64> = Vec::new();
        for command in commands {
            match command {
                Command::Post(post, _) => threads.push(&post.thread_id),
                Command::Attempt(attempt, _) => threads.push(&attempt.thread_id),
                Command::Reopen { thread_id, .. } | Command::Adopt { thread_id, .. } => {
                    threads.push(thread_id)
                }
                Command::Append { thread_id, id, .. }
                | Command::Notice { thread_id, id, .. }
                | Command::Thought { thread_id, id, .. }
                | Command::Finish { thread_id, id, .. }
                | Command::Release { thread_id, id } => {
                    threads.push(thread_id);
                    writes.push(*id);
                }
                Command::Ping(_) | Command::Close(_) | Command::Renew => {}
            }
        }
        if self.publish {
            return Ok(()); // one instance: nothing to fence against
        }
        tx.lock_threads(&threads).await?;
        writes.sort_unstable();
        writes.dedup();
        let mut held = Vec::with_capacity(writes.len());
        for id in writes {
            if self.lost.contains(&id) {
                continue;
            }
            match self.leases.get(&id) {
                Some(epoch) => held.push((id, *epoch)),
                None => self.lose(id),
            }
        }
        for id in tx.lost_leases(&held).await? {
            self.lose(id);
        }
        Ok(())
    }

    /// Gives up reply `id`, whose lease another instance holds now.
    fn lose(&mut self, id: i64) {
        self.leases.remove(&id);
        self.cursors.remove(&id);
        if self.lost.insert(id) {
            tracing::warn!(
                message_id = id,
                "another instance took over this reply's lease; this one stops producing it"
            );
            (self.on_unstorable)(id, Unwritable::LeaseLost);
        }
    }

    async fn apply(&mut self, commands: &[Command]) -> Result<Effects, sqlx::Error> {
        if let Some(effects) = self.apply_text_only(commands).await? {
            return Ok(effects);
        }
        let mut effects = Effects::default();
        // Appends are merged per message until something else touches it.
        let mut pending: Vec<PendingAppend> = Vec::new();
        let mut tx = self.store.begin().await?;
        self.fence(&mut tx, commands).await?;
        let now = now_ms();
        for (at, command) in commands.iter().enumerate() {
            match command {
                Command::Append {
                    thread_id,
                    id,
                    part,
                    text,
                    received,
                } => {
                    if self.broken.contains(id) || self.lost.contains(id) {
                        continue;
                    }
                    merge(&mut pending, thread_id, *id, *part, text, *received);
                }
                Command::Ping(_) => effects.pings.push(at),
                Command::Close(_) => {}
                Command::Renew => {
                    let held: Vec<(i64, i64)> =
                        self.leases.iter().map(|(id, e)| (*id, *e)).collect();
                    for id in tx.renew(&held).await? {
                        self.lose(id);
                    }
                }
                Command::Release { id, .. } => {
                    let id = *id;
                    let appends = take_pending(&mut pending, id);
                    self.flush_all(&mut tx, &mut effects, appends).await?;
                    if let Some(epoch) = self.leases.get(&id).copied() {
                        if !self.lost.contains(&id) {
                            tx.release(id, epoch).await?;
                        }
                    }
                    effects.cursors.insert(id, None);
                    effects.leases.insert(id, None);
                    effects.finished.push(id);
                }
                Command::Adopt { thread_id, id, .. } => {
                    let rev = self.rev(&mut tx, thread_id).await?;
                    let adopted = match tx.adopt(thread_id, *id, now, rev).await? {
                        Some((message, epoch, stop_requested_by)) => {
                            let cursor = tx.log_cursor(*id).await?;
                            effects.cursors.insert(*id, cursor);
                            effects.leases.insert(*id, Some(epoch));
                            effects.message(rev, &message);
                            Some(Adopted {
                                message,
                                stop_requested_by,
                            })
                        }
                        None => None,
                    };
                    effects.adoptions.push((at, adopted));
                }
                Command::Finish {
                    thread_id,
                    id,
                    outcome,
                } => {
                    let id = *id;
                    if self.lost.contains(&id) {
                        // Its end is the new producer's to record.
                        pending.retain(|p| p.id != id);
                        effects.finished.push(id);
                        continue;
                    }
                    let appends = take_pending(&mut pending, id);
                    self.flush_all(&mut tx, &mut effects, appends).await?;
                    let outcome = if self.broken.contains(&id) {
                        stored_in_part(outcome)
                    } else {
                        outcome.clone()
                    };
                    let rev = self.rev(&mut tx, thread_id).await?;
                    if let Some((body, thinking)) =
                        tx.finish(thread_id, id, &outcome, now, rev).await?
                    {
                        effects.cursors.insert(id, None);
                        effects.leases.insert(id, None);
                        let event = ChatEvent::Finished {
                            id,
                            status: outcome.status,
                            len: body.len(),
                            hash: body_hash(&body),
                            thinking_len: thinking.len(),
                            thinking_hash: body_hash(&thinking),
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
                Command::Attempt(attempt, _) => {
                    let row = self
                        .insert_attempt(&mut tx, &mut effects, attempt, now)
                        .await?;
                    effects.restarts.push((at, Ok(row)));
                }
                Command::Reopen {
                    thread_id,
                    id,
                    from,
                    requested_by,
                    ..
                } => {
                    let rev = self.rev(&mut tx, thread_id).await?;
                    let result = match tx
                        .reopen(thread_id, *id, from, requested_by, now, rev)
                        .await?
                    {
                        Some(row) => {
                            let epoch = tx.lease_epoch(row.id).await?;
                            effects.leases.insert(row.id, epoch);
                            effects.cursors.insert(
                                row.id,
                                Some(LogCursor {
                                    lens: [row.body.len(), row.thinking.len()],
                                    next_seq: 0,
                                }),
                            );
                            effects.message(rev, &row);
                            Ok(row)
                        }
                        None => Err(AppError::Conflict("This reply cannot be continued.".into())),
                    };
                    effects.restarts.push((at, result));
                }
                Command::Notice {
                    thread_id,
                    id,
                    notice,
                    retries,
                } => {
                    if self.lost.contains(id) {
                        continue;
                    }
                    let rev = self.rev(&mut tx, thread_id).await?;
                    if tx
                        .set_notice(thread_id, *id, notice.as_deref(), *retries, now, rev)
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
                Command::Thought {
                    thread_id,
                    id,
                    thinking_ms,
                } => {
                    if self.lost.contains(id) {
                        continue;
                    }
                    let rev = self.rev(&mut tx, thread_id).await?;
                    if tx
                        .set_thinking_ms(thread_id, *id, *thinking_ms, now, rev)
                        .await?
                    {
                        effects.events.push((
                            thread_id.clone(),
                            rev,
                            ChatEvent::Thought {
                                id: *id,
                                thinking_ms: *thinking_ms,
                            },
                        ));
                    }
                }
            }
        }
        self.flush_all(&mut tx, &mut effects, pending).await?;
        effects.notifications = tx.commit().await?;
        Ok(effects)
    }

    /// The common batch under streaming: nothing but text for replies whose
    /// log this writer tracks. Stored as one statement (atomic on its own,
    /// no BEGIN/COMMIT round trips). `None` when the batch is anything else.
    async fn apply_text_only(
        &mut self,
        commands: &[Command],
    ) -> Result<Option<Effects>, sqlx::Error> {
        if !self.publish {
            return Ok(None); // shared database: every commit locks its threads
        }
        let mut pending: Vec<PendingAppend> = Vec::new();
        for command in commands {
            let Command::Append {
                thread_id,
                id,
                part,
                text,
                received,
            } = command
            else {
                return Ok(None);
            };
            if !self.cursors.contains_key(id) || self.broken.contains(id) {
                return Ok(None);
            }
            merge(&mut pending, thread_id, *id, *part, text, *received);
        }
        let mut effects = Effects::default();
        let mut rows = Vec::with_capacity(pending.len());
        for append in pending {
            let cursor = match effects.cursors.get(&append.id) {
                Some(Some(cursor)) => *cursor,
                _ => self.cursors[&append.id],
            };
            effects.cursors.insert(
                append.id,
                Some(cursor.after(append.part, append.text.len())),
            );
            let rev = self.global_rev();
            rows.push((append, cursor, rev));
        }
        let log = log_rows(&rows);
        // (Revisions handed out for a batch that is not stored leave a gap,
        // as in a failed transaction: revisions only need to increase.)
        if self.store.append_log(&log).await?.is_none() {
            return Ok(None);
        }
        effects.appended(rows);
        Ok(Some(effects))
    }

    /// Where a streaming reply's log stands now (this batch's view), or
    /// None if it is not streaming (it ended, or never streamed here).
    async fn cursor(
        &self,
        tx: &mut Tx,
        effects: &Effects,
        id: i64,
    ) -> Result<Option<LogCursor>, sqlx::Error> {
        Ok(match effects.cursors.get(&id) {
            Some(cursor) => *cursor,
            None => match self.cursors.get(&id) {
                Some(cursor) => Some(*cursor),
                None => tx.log_cursor(id).await?,
            },
        })
    }

    /// Appends (at most one per part of a message) as log rows.
    async fn flush_all(
        &mut self,
        tx: &mut Tx,
        effects: &mut Effects,
        pending: Vec<PendingAppend>,
    ) -> Result<(), sqlx::Error> {
        let mut rows = Vec::with_capacity(pending.len());
        for append in pending {
            match self.cursor(tx, effects, append.id).await? {
                Some(cursor) => {
                    let rev = self.rev(tx, &append.thread_id).await?;
                    effects.cursors.insert(
                        append.id,
                        Some(cursor.after(append.part, append.text.len())),
                    );
                    rows.push((append, cursor, rev));
                }
                None => tracing::warn!(
                    message_id = append.id,
                    "append to a reply that is no longer streaming dropped"
                ),
            }
        }
        if rows.is_empty() {
            return Ok(());
        }
        let log = log_rows(&rows);
        tx.append_log(&log).await?;
        effects.appended(rows);
        Ok(())
    }

    async fn insert_post(
        &mut self,
        tx: &mut Tx,
        effects: &mut Effects,
        post: &NewPost,
        now: i64,
    ) -> Result<Result<Posted, AppError>, sqlx::Error> {
        if !tx.thread_exists(&post.thread_id).await? {
            return Ok(Err(AppError::no_thread(&post.thread_id)));
        }
        if let Some(request_id) = &post.request_id {
            if let Some(mut posted) = tx.posted_by_request(&post.thread_id, request_id).await? {
                posted.repeated = true;
                return Ok(Ok(posted));
            }
        }
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
        let rev = self.rev(tx, &post.thread_id).await?;
        let message = tx.insert_message(&user, now, rev).await?;
        effects.message(rev, &message);
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
            replies.push(self.insert_reply(tx, effects, &placeholder, now).await?);
        }
        Ok(Ok(Posted {
            message,
            replies,
            repeated: false,
        }))
    }

    async fn insert_attempt(
        &mut self,
        tx: &mut Tx,
        effects: &mut Effects,
        attempt: &NewAttempt,
        now: i64,
    ) -> Result<Message, sqlx::Error> {
        let placeholder = NewMessage {
            thread_id: &attempt.thread_id,
            author: &attempt.author,
            role: Role::Assistant,
            body: "",
            status: Status::Streaming,
            model: Some(&attempt.model),
            requested_by: Some(&attempt.requested_by),
            context_before: Some(attempt.context_before),
            request_id: None,
            reply_to: None,
        };
        self.insert_reply(tx, effects, &placeholder, now).await
    }

    /// Inserts an empty streaming reply; its log starts at 0.
    async fn insert_reply(
        &mut self,
        tx: &mut Tx,
        effects: &mut Effects,
        placeholder: &NewMessage<'_>,
        now: i64,
    ) -> Result<Message, sqlx::Error> {
        let rev = self.rev(tx, placeholder.thread_id).await?;
        let row = tx.insert_message(placeholder, now, rev).await?;
        effects.cursors.insert(row.id, Some(LogCursor::default()));
        let epoch = tx.lease_epoch(row.id).await?;
        effects.leases.insert(row.id, epoch);
        effects.message(rev, &row);
        Ok(row)
    }

    fn publish(&mut self, effects: Effects, commands: Vec<Command>) {
        for (id, cursor) in effects.cursors {
            match cursor {
                Some(cursor) => self.cursors.insert(id, cursor),
                None => self.cursors.remove(&id),
            };
        }
        for (id, epoch) in effects.leases {
            match epoch {
                Some(epoch) => {
                    self.lost.remove(&id);
                    self.leases.insert(id, epoch)
                }
                None => self.leases.remove(&id),
            };
        }
        for id in effects.finished {
            self.broken.remove(&id);
            self.lost.remove(&id);
        }
        if self.publish {
            for (thread_id, rev, event) in effects.events {
                self.hub.publish(&thread_id, rev, event);
            }
        }
        let published = Instant::now();
        self.metrics
            .deltas_published
            .inc_by(effects.received.len() as u64);
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
        for (at, adopted) in effects.adoptions {
            if let Some(Command::Adopt { reply, .. }) = commands[at].take() {
                let _ = reply.send(Ok(adopted));
            }
        }
        for (at, result) in effects.restarts {
            if let Some(Command::Attempt(_, reply) | Command::Reopen { reply, .. }) =
                commands[at].take()
            {
                let _ = reply.send(result);
            }
        }
    }
}

/// Adds an append to the batch's pending text, merged with an earlier one
/// to the same part of the same reply.
fn merge(
    pending: &mut Vec<PendingAppend>,
    thread_id: &Arc<str>,
    id: i64,
    part: Part,
    text: &str,
    received: Instant,
) {
    match pending.iter_mut().find(|p| p.id == id && p.part == part) {
        Some(p) => p.text.push_str(text),
        None => pending.push(PendingAppend {
            thread_id: thread_id.clone(),
            id,
            part,
            text: text.to_owned(),
            received,
        }),
    }
}

/// Takes the batch's close requests out of it.
fn take_closes(commands: &mut Vec<Command>) -> Vec<oneshot::Sender<()>> {
    let (closes, kept): (Vec<_>, Vec<_>) = std::mem::take(commands)
        .into_iter()
        .partition(|c| matches!(c, Command::Close(_)));
    *commands = kept;
    closes
        .into_iter()
        .filter_map(|c| match c {
            Command::Close(reply) => Some(reply),
            _ => None,
        })
        .collect()
}

/// Removes reply `id`'s pending appends (both parts), in batch order.
fn take_pending(pending: &mut Vec<PendingAppend>, id: i64) -> Vec<PendingAppend> {
    let (taken, kept) = std::mem::take(pending)
        .into_iter()
        .partition(|p| p.id == id);
    *pending = kept;
    taken
}

/// The log rows for appends numbered with their cursor and revision.
fn log_rows(rows: &[(PendingAppend, LogCursor, i64)]) -> Vec<LogAppend<'_>> {
    rows.iter()
        .map(|(a, cursor, rev)| LogAppend {
            thread_id: &a.thread_id,
            id: a.id,
            part: a.part,
            seq: cursor.next_seq,
            offset: cursor.len(a.part),
            rev: *rev,
            text: &a.text,
        })
        .collect()
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

/// Sends [`Command::Renew`] every `period` while the writer lives (it holds
/// only a weak sender, so the writer still stops when its handles drop).
fn spawn_renewals(writer: mpsc::WeakSender<Command>, period: std::time::Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period.max(std::time::Duration::from_millis(50)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(sender) = writer.upgrade() else {
                break;
            };
            if sender.send(Command::Renew).await.is_err() {
                break;
            }
        }
    });
}
