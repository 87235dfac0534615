//! Storage faults: a batch the database refuses is retried command by
//! command; what still fails is refused by name (its caller told, a reply
//! whose text it carried ended `failed`), and the end of a reply is kept
//! and retried (with the storage reserve freed) until it is recorded.

use super::{Command, Unwritable, WriterTask};
use crate::server::store::StoreError;
use crate::{
    error::AppError,
    model::{Outcome, Status},
};

/// How often refused ends of replies are tried again while nothing else comes.
pub(super) const RETRY_PERIOD: std::time::Duration = std::time::Duration::from_secs(1);

impl WriterTask {
    /// Whether the database can grow now: a transaction writing a few pages,
    /// rolled back, where it keeps a storage reserve; else whether it
    /// commits.
    pub(super) async fn probe(&self) -> bool {
        let result: Result<(), StoreError> = async {
            let mut tx = self.store.begin().await?;
            if let Some(reserve) = tx.reserve() {
                reserve.probe_growth().await?;
            }
            tx.commit().await.map(drop)
        }
        .await;
        result.is_ok()
    }

    /// Frees the storage reserve so that ends of replies can be recorded in
    /// a full database; true if there was one to free.
    pub(super) async fn release_reserve(&self) -> bool {
        let result: Result<bool, StoreError> = async {
            let mut tx = self.store.begin().await?;
            let Some(reserve) = tx.reserve() else {
                return Ok(false);
            };
            let released = reserve.release().await?;
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
    pub(super) async fn refuse(&mut self, command: Command) {
        self.writes_failing = true;
        let unavailable = || {
            AppError::Unavailable(
                "The server's database refuses writes right now, so nothing was saved. \
                 Please try again shortly."
                    .into(),
            )
        };
        match command {
            Command::Post(..)
            | Command::Attempt(..)
            | Command::Reopen { .. }
            | Command::Adopt { .. } => {
                command.refuse(unavailable());
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
                if self.replies.break_off(id) {
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
}

/// The end of a reply part of whose text could not be stored: `failed`,
/// whatever the generation reported, with its usage kept.
pub(super) fn stored_in_part(outcome: &Outcome) -> Outcome {
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
