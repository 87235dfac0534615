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
//! Where instances share the database (coordination's `Shared`), each
//! writes through its own writer: a transaction locks the threads it
//! writes (in id order) and takes their next revisions from them, so a
//! thread's revisions are in commit order across instances. Each streaming
//! reply is claimed by one instance: the writer remembers the epoch of
//! each claim (`replies.rs`), refuses (and ends) a reply whose lease
//! another instance took over, and renews its leases every third of their
//! term. It does not publish then: every instance's listener reads the
//! committed rows back, its own included, so all viewers see one order.
//! The writer asks coordination at each of those points and never which
//! kind it is.

mod effects;
mod pending;
mod replies;
mod task;

use std::sync::Arc;

use tokio::{
    sync::{mpsc, oneshot},
    time::Instant,
};

use super::{Coordination, Store};
use crate::server::{fanout::hub::Hub, metrics::Metrics};
use crate::{
    error::AppError,
    model::{Message, NewPost, Outcome, Part, Posted, Status},
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

pub(super) enum Command {
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

impl Command {
    /// Gives the command's caller its answer (on the command's own channel).
    fn answer(self, answer: effects::Answer) {
        use effects::Answer;
        match (self, answer) {
            (Command::Post(_, reply), Answer::Posted(result)) => {
                let _ = reply.send(result);
            }
            (
                Command::Attempt(_, reply) | Command::Reopen { reply, .. },
                Answer::Restarted(result),
            ) => {
                let _ = reply.send(result);
            }
            (Command::Adopt { reply, .. }, Answer::Adopted(adopted)) => {
                let _ = reply.send(Ok(adopted));
            }
            (Command::Ping(reply), Answer::Pong) => {
                let _ = reply.send(());
            }
            (_, Answer::Nothing) => {}
            (command, answer) => {
                debug_assert!(false, "{answer:?} answers another command");
                drop(command);
            }
        }
    }

    /// Refuses the command's caller, if one waits (nothing was stored).
    fn refuse(self, error: AppError) {
        match self {
            Command::Post(_, reply) => {
                let _ = reply.send(Err(error));
            }
            Command::Attempt(_, reply) | Command::Reopen { reply, .. } => {
                let _ = reply.send(Err(error));
            }
            Command::Adopt { reply, .. } => {
                let _ = reply.send(Err(error));
            }
            // Dropped unanswered: the health check reports the writer failing.
            _ => {}
        }
    }
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
    /// Starts the writer task. `on_unstorable` is called with a reply whose text can no longer be
    /// written, and why (its producer should end it).
    pub fn start(
        store: Store,
        coordination: Coordination,
        hub: Hub,
        metrics: Arc<Metrics>,
        on_unstorable: impl Fn(i64, Unwritable) + Send + Sync + 'static,
    ) -> Self {
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let task = task::WriterTask::new(
            store,
            coordination.clone(),
            hub,
            metrics,
            Box::new(on_unstorable),
        );
        tokio::spawn(task.run(rx));
        coordination.keep_claims(tx.downgrade());
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
