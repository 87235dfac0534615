//! The writer's task: takes every pending command, commits them in one
//! transaction (group commit), and settles: its state follows the commit,
//! coordination acts, callers get their answers. One instance of it runs;
//! it alone writes messages.

mod apply;
mod faults;
mod fencing;

use std::sync::Arc;

use tokio::{
    sync::{mpsc, oneshot},
    time::Instant,
};

use super::{
    effects::{Answer, Effects, Settled},
    replies::Replies,
    Command, Unwritable, MAX_BATCH,
};
use crate::server::{
    fanout::hub::Hub,
    metrics::Metrics,
    store::{Coordination, Store},
};
use faults::RETRY_PERIOD;

/// The writer's task and everything only it touches.
pub(super) struct WriterTask {
    store: Store,
    hub: Hub,
    metrics: Arc<Metrics>,
    /// Told when a reply's text cannot be stored, so its producer ends it.
    on_unstorable: Box<dyn Fn(i64, Unwritable) + Send + Sync>,
    /// What the writer knows of each reply streaming here.
    replies: Replies,
    /// Alone (the writer publishes its commits) or shared (claims and
    /// fencing; every instance's listener publishes).
    coordination: Coordination,
    /// Ends of replies that could not be stored yet, retried every
    /// [`RETRY_PERIOD`] and with every batch until they are.
    deferred: Vec<Command>,
    /// Set when a write was refused; cleared only when a probe shows the
    /// database can grow again (a ping answers only then: `/healthz` is 503).
    writes_failing: bool,
}

impl WriterTask {
    pub(super) fn new(
        store: Store,
        coordination: Coordination,
        hub: Hub,
        metrics: Arc<Metrics>,
        on_unstorable: Box<dyn Fn(i64, Unwritable) + Send + Sync>,
    ) -> Self {
        Self {
            store,
            hub,
            metrics,
            on_unstorable,
            replies: Replies::default(),
            coordination,
            deferred: Vec::new(),
            writes_failing: false,
        }
    }

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
    async fn commit(&mut self, mut commands: Vec<Command>) {
        if commands.is_empty() {
            return;
        }
        if self.replies.held().is_empty() {
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
        if self.writes_failing && effects.pinged() {
            self.writes_failing = !self.probe().await;
            if !self.writes_failing {
                tracing::info!("the database takes writes again");
            }
        }
        self.settle(effects.settle(), commands);
    }

    /// After a commit: the writer's replies follow it, coordination acts
    /// (alone, the writer publishes), the metrics, and each caller gets its
    /// command's answer.
    fn settle(&mut self, settled: Settled, commands: Vec<Command>) {
        let Settled {
            events,
            answers,
            changes,
            notifications,
            received,
        } = settled;
        self.metrics.notifications.inc_by(notifications);
        self.replies.settle(changes);
        self.coordination.after_commit(&self.hub, events);
        let published = Instant::now();
        self.metrics.deltas_published.inc_by(received.len() as u64);
        for received in received {
            self.metrics.published(published.duration_since(received));
        }
        debug_assert_eq!(answers.len(), commands.len(), "one answer per command");
        for (command, answer) in commands.into_iter().zip(answers) {
            // A ping answers only while writes succeed (`/healthz`).
            if matches!(answer, Answer::Pong) && self.writes_failing {
                continue;
            }
            command.answer(answer);
        }
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
