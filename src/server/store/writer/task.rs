//! The writer's task: takes every pending command, commits them in one
//! transaction (group commit), and settles: its state follows the commit,
//! coordination acts, callers get their answers. One instance of it runs;
//! it alone writes messages.

use std::{collections::HashMap, sync::Arc};

use tokio::{
    sync::{mpsc, oneshot},
    time::Instant,
};

use super::{batch::Effects, faults::RETRY_PERIOD, Command, Unwritable, MAX_BATCH};
use crate::server::{
    fanout::hub::Hub,
    metrics::Metrics,
    store::{Coordination, LogCursor, Revisions, Store},
};

pub(super) struct WriterTask {
    pub(super) store: Store,
    pub(super) hub: Hub,
    pub(super) metrics: Arc<Metrics>,
    /// Told when a reply's text cannot be stored, so its producer ends it.
    pub(super) on_unstorable: Box<dyn Fn(i64, Unwritable) + Send + Sync>,
    /// Who numbers changes; where the writer does, its next number.
    pub(super) revisions: Revisions,
    pub(super) next_rev: i64,
    /// What the writer knows of each reply streaming here (committed
    /// state), one entry per reply until its producer's end arrives.
    pub(super) replies: HashMap<i64, LiveReply>,
    /// One instance (the writer publishes its commits) or a cluster
    /// (leases and fencing; the wake-up listener publishes).
    pub(super) coordination: Coordination,
    /// Ends of replies that could not be stored yet, retried every
    /// [`RETRY_PERIOD`] and with every batch until they are.
    pub(super) deferred: Vec<Command>,
    /// Set when a write was refused; cleared only when a probe shows the
    /// database can grow again (a ping answers only then: `/healthz` is 503).
    pub(super) writes_failing: bool,
}

/// What the writer knows of one reply streaming here (committed state).
#[derive(Debug, Default)]
pub(super) struct LiveReply {
    /// Where its log stands: the next delta's offset and log row (`None`
    /// once it does not stream here: ended, handed over, taken over).
    pub(super) cursor: Option<LogCursor>,
    /// The epoch of the lease this instance holds on it (0 alone).
    pub(super) epoch: Option<i64>,
    /// Another instance took its lease over: nothing more of it is written
    /// (until its producer's end arrives).
    pub(super) lost: bool,
    /// An append of it could not be stored: later appends are dropped (a
    /// reply never continues past a hole) and its end is recorded `failed`.
    pub(super) broken: bool,
}

impl LiveReply {
    pub(super) fn is_known(&self) -> bool {
        self.cursor.is_some() || self.epoch.is_some() || self.lost || self.broken
    }
}

impl WriterTask {
    pub(super) async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
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
    pub(super) async fn commit(&mut self, mut commands: Vec<Command>) {
        if commands.is_empty() {
            return;
        }
        if !self.replies.values().any(|r| r.epoch.is_some()) {
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

    pub(super) async fn committed(&mut self, effects: Effects, commands: Vec<Command>) {
        self.metrics.commit(commands.len());
        self.metrics.notifications.inc_by(effects.notifications);
        if self.writes_failing && !effects.pings.is_empty() {
            self.writes_failing = !self.probe().await;
            if !self.writes_failing {
                tracing::info!("the database takes writes again");
            }
        }
        self.settle(effects, commands);
    }

    /// After a commit: the writer's state follows it, coordination acts
    /// (one instance publishes), the metrics, and callers get their answers.
    pub(super) fn settle(&mut self, effects: Effects, commands: Vec<Command>) {
        // A producer's end arrived: its flags go (a Continue in the same
        // batch streams it again, with the cursor and lease set below).
        for id in effects.finished {
            if let Some(reply) = self.replies.get_mut(&id) {
                reply.lost = false;
                reply.broken = false;
            }
        }
        for (id, cursor) in effects.cursors {
            self.replies.entry(id).or_default().cursor = cursor;
        }
        for (id, epoch) in effects.leases {
            let reply = self.replies.entry(id).or_default();
            if epoch.is_some() {
                reply.lost = false;
            }
            reply.epoch = epoch;
        }
        self.replies.retain(|_, r| r.is_known());
        self.after_commit(effects.events);
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

    pub(super) fn cursor_of(&self, id: i64) -> Option<LogCursor> {
        self.replies.get(&id).and_then(|r| r.cursor)
    }

    pub(super) fn is_lost(&self, id: i64) -> bool {
        self.replies.get(&id).is_some_and(|r| r.lost)
    }

    pub(super) fn is_broken(&self, id: i64) -> bool {
        self.replies.get(&id).is_some_and(|r| r.broken)
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
