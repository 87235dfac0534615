//! Where the writer meets coordination before a batch's writes: the
//! threads it writes and the claims it holds go to
//! [`Coordination::before_writes`], which may answer that another instance
//! took some of them; those are given up.

use super::{Command, Unwritable, WriterTask};
use crate::server::store::{StoreError, Tx};

#[cfg(doc)]
use crate::server::store::Coordination;

impl WriterTask {
    /// The epoch of the claim this instance holds on streaming reply `id`.
    pub(super) async fn epoch(&self, tx: &mut Tx, id: i64) -> Result<Option<i64>, StoreError> {
        self.coordination.claim(tx, id).await
    }

    /// Before a batch's writes: the replies it writes whose claim this
    /// instance lost are given up, and nothing more of theirs is written.
    pub(super) async fn before_writes(
        &mut self,
        tx: &mut Tx,
        commands: &[Command],
    ) -> Result<(), StoreError> {
        let (threads, mut writes) = written_by(commands);
        writes.sort_unstable();
        writes.dedup();
        let claims: Vec<(i64, Option<i64>)> = writes
            .into_iter()
            .filter(|id| !self.replies.is_lost(*id))
            .map(|id| (id, self.replies.epoch(id)))
            .collect();
        for id in self
            .coordination
            .before_writes(tx, &threads, &claims)
            .await?
        {
            self.lose(id);
        }
        Ok(())
    }

    /// Gives up reply `id`, whose claim another instance holds now.
    pub(super) fn lose(&mut self, id: i64) {
        if self.replies.lose(id) {
            tracing::warn!(
                message_id = id,
                "another instance took over this reply's lease; this one stops producing it"
            );
            (self.on_unstorable)(id, Unwritable::LeaseLost);
        }
    }
}

/// The threads a batch writes, and the streaming replies it writes.
fn written_by(commands: &[Command]) -> (Vec<&str>, Vec<i64>) {
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
    (threads, writes)
}
