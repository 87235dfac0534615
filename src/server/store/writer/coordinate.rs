//! Where coordination acts in the writer, at two points: before a batch's
//! writes (a cluster locks the batch's threads, fences replies whose lease
//! another instance took, and allocates revisions under those locks) and
//! after its commit (one instance publishes to the hub; in a cluster every
//! instance's wake-up listener reads the commit back). Also the lease
//! renewals a cluster's writer sends itself.

use crate::server::store::StoreError;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::{task::WriterTask, Command, Unwritable};
use crate::model::ChatEvent;
use crate::server::store::{Revisions, Tx};

impl WriterTask {
    /// After a commit: one instance publishes its events to the hub, in
    /// revision order; a cluster's listener publishes them on every
    /// instance (this one included).
    pub(super) fn after_commit(&self, events: Vec<(Arc<str>, i64, ChatEvent)>) {
        if self.coordination.writer_publishes() {
            for (thread_id, rev, event) in events {
                self.hub.publish(&thread_id, rev, event);
            }
        }
    }

    /// The writer's own counter (where the writer numbers revisions: one
    /// writer numbers every change of the database).
    pub(super) fn global_rev(&mut self) -> i64 {
        self.next_rev += 1;
        self.next_rev - 1
    }

    /// The next revision of a thread: the writer's counter, or where the
    /// database keeps one per thread, from it (under the thread's lock).
    pub(super) async fn rev(&mut self, tx: &mut Tx, thread_id: &str) -> Result<i64, StoreError> {
        match self.revisions {
            Revisions::Writer { .. } => Ok(self.global_rev()),
            Revisions::PerThread => tx
                .postgres()?
                .next_rev(thread_id)
                .await
                .map_err(doing!("numbering a change of thread {thread_id}")),
        }
    }

    /// The fencing epoch of the lease this instance holds on streaming
    /// reply `id`: a cluster's, from the database; alone, 0 (the only
    /// producer, nothing to fence against).
    pub(super) async fn epoch(&self, tx: &mut Tx, id: i64) -> Result<Option<i64>, StoreError> {
        if self.coordination.cluster().is_none() {
            return Ok(Some(0));
        }
        tx.postgres()?
            .lease_epoch(id)
            .await
            .map_err(doing!("reading the lease of message {id}"))
    }

    /// Coordination before a batch's writes. A cluster: locks the batch's
    /// threads and finds the replies it writes whose
    /// lease this instance lost (PostgreSQL); those are ended, and nothing
    /// more of theirs is written.
    pub(super) async fn before_writes(
        &mut self,
        tx: &mut Tx,
        commands: &[Command],
    ) -> Result<(), StoreError> {
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
        if self.coordination.writer_publishes() {
            return Ok(()); // one instance: nothing to fence against
        }
        let shared = tx.postgres()?;
        shared
            .lock_threads(&threads)
            .await
            .map_err(doing!("locking threads {threads:?}"))?;
        writes.sort_unstable();
        writes.dedup();
        let mut held = Vec::with_capacity(writes.len());
        for id in writes {
            if self.is_lost(id) {
                continue;
            }
            match self.replies.get(&id).and_then(|r| r.epoch) {
                Some(epoch) => held.push((id, epoch)),
                None => self.lose(id),
            }
        }
        for id in shared
            .lost_leases(&held)
            .await
            .map_err(doing!("fencing replies {held:?}"))?
        {
            self.lose(id);
        }
        Ok(())
    }

    /// Gives up reply `id`, whose lease another instance holds now.
    pub(super) fn lose(&mut self, id: i64) {
        let reply = self.replies.entry(id).or_default();
        reply.epoch = None;
        reply.cursor = None;
        if !std::mem::replace(&mut reply.lost, true) {
            tracing::warn!(
                message_id = id,
                "another instance took over this reply's lease; this one stops producing it"
            );
            (self.on_unstorable)(id, Unwritable::LeaseLost);
        }
    }
}

/// Sends [`Command::Renew`] every `period` while the writer lives (it holds
/// only a weak sender, so the writer still stops when its handles drop).
pub(super) fn spawn_renewals(writer: mpsc::WeakSender<Command>, period: std::time::Duration) {
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
