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
use crate::server::store::Tx;

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

    /// The writer's own counter (SQLite: one writer numbers every change).
    pub(super) fn global_rev(&mut self) -> i64 {
        self.next_rev += 1;
        self.next_rev - 1
    }

    /// The next revision of a thread: from the transaction where the
    /// backend allocates them per thread, else the writer's counter.
    pub(super) async fn rev(&mut self, tx: &mut Tx, thread_id: &str) -> Result<i64, StoreError> {
        Ok(match tx.next_rev(thread_id).await? {
            Some(rev) => rev,
            None => self.global_rev(),
        })
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
        let shared = tx.shared()?;
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
