//! [`Tx`]: the statements the writer runs inside one group commit, on
//! whichever backend the store is.

use super::{postgres, sqlite, LogAppend, LogCursor, NewMessage, StoreError};
use crate::model::{Message, Outcome, Posted, Status};

/// One transaction of the writer's. Dropped without [`Tx::commit`], it
/// rolls back.
pub enum Tx {
    Sqlite(sqlite::SqliteTx),
    Postgres(postgres::PgTx),
}

impl Tx {
    /// The PostgreSQL transaction, for what only instances sharing a
    /// PostgreSQL database do (coordination's `Shared`: thread locks,
    /// leases, fencing and adoption). Asked of any other, an error, never
    /// a silent no-op.
    pub(in crate::server::store) fn postgres(&mut self) -> Result<&mut postgres::PgTx, StoreError> {
        match self {
            Tx::Postgres(tx) => Ok(tx),
            Tx::Sqlite(_) => Err(StoreError {
                doing: "a PostgreSQL statement".into(),
                source: sqlx::Error::Configuration(
                    "a SQLite database has no leases: it serves one instance".into(),
                ),
            }),
        }
    }

    /// The next revision of thread `thread_id`: greater than every revision
    /// of it committed before, in commit order. SQLite numbers every change
    /// of the database with the writer's one counter (one process writes
    /// it); PostgreSQL numbers each thread's changes under the thread's row
    /// lock (`threads.rev`), which this transaction takes if it has not, so
    /// several instances writing one thread still number in commit order.
    pub async fn next_rev(&mut self, thread_id: &str) -> Result<i64, StoreError> {
        match self {
            Tx::Sqlite(tx) => Ok(tx.next_rev()),
            Tx::Postgres(tx) => tx
                .next_rev(thread_id)
                .await
                .map_err(doing!("numbering a change of thread {thread_id}")),
        }
    }

    /// Commits; returns how many wake-ups it sent to other instances.
    pub async fn commit(self) -> Result<u64, StoreError> {
        async {
            match self {
                Tx::Sqlite(tx) => tx.commit().await.map(|()| 0),
                Tx::Postgres(tx) => tx.commit().await,
            }
        }
        .await
        .map_err(doing!("Tx::commit"))
    }

    pub async fn thread_exists(&mut self, id: &str) -> Result<bool, StoreError> {
        async {
            match self {
                Tx::Sqlite(tx) => sqlite::writes::thread_exists(tx, id).await,
                Tx::Postgres(tx) => tx.thread_exists(id).await,
            }
        }
        .await
        .map_err(doing!("Tx::thread_exists (thread {id})"))
    }

    pub async fn message(
        &mut self,
        thread_id: &str,
        id: i64,
    ) -> Result<Option<Message>, StoreError> {
        async {
            match self {
                Tx::Sqlite(tx) => sqlite::writes::message_in(tx, thread_id, id).await,
                Tx::Postgres(tx) => tx.message(thread_id, id).await,
            }
        }
        .await
        .map_err(doing!("Tx::message (thread {thread_id}, message {id})"))
    }

    /// See [`Store::posted_by_request`].
    pub async fn posted_by_request(
        &mut self,
        thread_id: &str,
        request_id: &str,
    ) -> Result<Option<Posted>, StoreError> {
        async {
            match self {
                Tx::Sqlite(tx) => {
                    sqlite::writes::posted_by_request(tx, thread_id, request_id).await
                }
                Tx::Postgres(tx) => tx.posted_by_request(thread_id, request_id).await,
            }
        }
        .await
        .map_err(doing!("Tx::posted_by_request (thread {thread_id})"))
    }

    /// Inserts a message and marks its thread active (a streaming reply is
    /// leased to this instance).
    pub async fn insert_message(
        &mut self,
        new: &NewMessage<'_>,
        now: i64,
        rev: i64,
    ) -> Result<Message, StoreError> {
        async {
            match self {
                Tx::Sqlite(tx) => sqlite::writes::insert_message(tx, new, now, rev).await,
                Tx::Postgres(tx) => tx.insert_message(new, now, rev).await,
            }
        }
        .await
        .map_err(doing!("Tx::insert_message (thread {})", new.thread_id))
    }

    /// Appends log rows (any replies, at most one row per part of a reply). The
    /// caller (the writer) checked each reply is streaming and owns the
    /// offsets; this only inserts.
    pub async fn append_log(&mut self, rows: &[LogAppend<'_>]) -> Result<(), StoreError> {
        async {
            match self {
                Tx::Sqlite(tx) => sqlite::writes::append_log(tx, rows).await,
                Tx::Postgres(tx) => tx.append_log(rows).await,
            }
        }
        .await
        .map_err(doing!(
            "Tx::append_log (messages {:?})",
            super::message_ids(rows)
        ))
    }

    /// Where a streaming reply's log stands, read from the database; `None`
    /// if it is not streaming.
    pub async fn log_cursor(&mut self, id: i64) -> Result<Option<LogCursor>, StoreError> {
        async {
            match self {
                Tx::Sqlite(tx) => sqlite::writes::log_cursor(tx, id).await,
                Tx::Postgres(tx) => tx.log_cursor(id).await,
            }
        }
        .await
        .map_err(doing!("Tx::log_cursor (message {id})"))
    }

    /// Ends a streaming reply: writes its log into its body, thinking and
    /// tool log (once), removes the log rows, records the outcome. Returns
    /// the final (body, thinking, tools), or `None` if it had already ended.
    pub async fn finish(
        &mut self,
        thread_id: &str,
        id: i64,
        outcome: &Outcome,
        now: i64,
        rev: i64,
    ) -> Result<Option<(String, String, String)>, StoreError> {
        async {
            match self {
                Tx::Sqlite(tx) => sqlite::writes::finish(tx, id, outcome, now, rev).await,
                Tx::Postgres(tx) => tx.finish(thread_id, id, outcome, now, rev).await,
            }
        }
        .await
        .map_err(doing!("Tx::finish (thread {thread_id}, message {id})"))
    }

    /// Sets the passing note of a streaming reply; false if it is not streaming.
    pub async fn set_notice(
        &mut self,
        thread_id: &str,
        id: i64,
        notice: Option<&str>,
        retries: i64,
        now: i64,
        rev: i64,
    ) -> Result<bool, StoreError> {
        async {
            match self {
                Tx::Sqlite(tx) => {
                    sqlite::writes::set_notice(tx, id, notice, retries, now, rev).await
                }
                Tx::Postgres(tx) => {
                    tx.set_notice(thread_id, id, notice, retries, now, rev)
                        .await
                }
            }
        }
        .await
        .map_err(doing!("Tx::set_notice (thread {thread_id}, message {id})"))
    }

    /// Records how long a streaming reply thought; false if it is not streaming.
    pub async fn set_thinking_ms(
        &mut self,
        thread_id: &str,
        id: i64,
        thinking_ms: i64,
        now: i64,
        rev: i64,
    ) -> Result<bool, StoreError> {
        async {
            match self {
                Tx::Sqlite(tx) => {
                    sqlite::writes::set_thinking_ms(tx, id, thinking_ms, now, rev).await
                }
                Tx::Postgres(tx) => {
                    tx.set_thinking_ms(thread_id, id, thinking_ms, now, rev)
                        .await
                }
            }
        }
        .await
        .map_err(doing!(
            "Tx::set_thinking_ms (thread {thread_id}, message {id})"
        ))
    }

    /// Puts reply `id` of the thread back to `streaming` (Continue), keeping
    /// its text, if its status is one of `from`; `None` otherwise.
    pub async fn reopen(
        &mut self,
        thread_id: &str,
        id: i64,
        from: &[Status],
        requested_by: &str,
        now: i64,
        rev: i64,
    ) -> Result<Option<Message>, StoreError> {
        async {
            match self {
                Tx::Sqlite(tx) => {
                    sqlite::writes::reopen(tx, thread_id, id, from, requested_by, now, rev).await
                }
                Tx::Postgres(tx) => tx.reopen(thread_id, id, from, requested_by, now, rev).await,
            }
        }
        .await
        .map_err(doing!("Tx::reopen (thread {thread_id}, message {id})"))
    }

    /// The storage reserve, where the database has one: pages a SQLite
    /// file keeps free so that the ends of replies can still be recorded
    /// once its disk is full (a PostgreSQL server's disk is its
    /// operator's: it has none).
    pub fn reserve(&mut self) -> Option<Reserve<'_>> {
        match self {
            Tx::Sqlite(tx) => Some(Reserve(tx)),
            Tx::Postgres(_) => None,
        }
    }
}

/// See [`Tx::reserve`].
pub struct Reserve<'t>(&'t mut sqlite::SqliteTx);

impl Reserve<'_> {
    /// Whether the database can grow: puts the reserve back if it was used
    /// and writes a few pages, undone.
    pub async fn probe_growth(self) -> Result<(), StoreError> {
        sqlite::writes::probe_growth(self.0)
            .await
            .map_err(doing!("Reserve::probe_growth"))
    }

    /// Frees the reserve's room for use; true if it was there.
    pub async fn release(self) -> Result<bool, StoreError> {
        sqlite::writes::release_reserve(self.0)
            .await
            .map_err(doing!("Reserve::release"))
    }
}
