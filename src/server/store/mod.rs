//! The store: the one interface the rest of the server reads and writes
//! through, whatever database is behind it.
//!
//! [`Store`] is an enum over backends: SQLite (one instance, the embedded
//! default) and PostgreSQL (several instances on one database). It has the reads, the
//! start-up recovery, and [`Store::begin`], which opens a [`Tx`]: the
//! statements the writer runs inside one group commit. No type of a
//! backend's driver appears outside this folder.
//!
//! Streamed text is an append-only log (see the `reply_log` migration): a
//! streaming reply's text is its `body` followed by its log rows; the body
//! is written once, when the reply ends. Every read returns that composed
//! text, so callers never see the difference.

pub mod coordination;
pub mod postgres;
pub mod sqlite;
pub mod wakeups;
pub mod writer;

use std::path::Path;

use crate::{
    error::AppError,
    model::{
        Granularity, Message, Outcome, Part, Posted, Role, Status, Thread, ThreadSummary,
        UsageTotals,
    },
};

pub use coordination::Coordination;
pub use postgres::{Cluster, Lease, PostgresStore};
pub use sqlite::LIST_THREADS;

/// The PostgreSQL channel of wake-ups: a commit names the threads whose
/// revisions moved (JSON `[{t, first, last, m}]`), never their text.
pub const WAKE_CHANNEL: &str = "streamchat_wake";
/// The PostgreSQL channel of control messages between instances (Stop,
/// presence).
pub const CONTROL_CHANNEL: &str = "streamchat_control";

/// One committed change of a thread, as a wake-up reads it back.
#[derive(Debug)]
pub enum Change {
    /// A message row as it now stands (text composed with its log).
    Row(Box<Message>),
    /// Text appended to reply `id` at byte `offset`.
    Text {
        id: i64,
        part: Part,
        offset: usize,
        rev: i64,
        text: String,
    },
}

impl Change {
    pub fn rev(&self) -> i64 {
        match self {
            Change::Row(m) => m.rev,
            Change::Text { rev, .. } => *rev,
        }
    }
}

/// Where a search looks.
#[derive(Clone, Copy, Debug)]
pub enum SearchScope<'a> {
    /// Every listed thread (the home page's search).
    Listed,
    /// One thread, listed or not (the search on its own page).
    Thread(&'a str),
}

/// Rows a subscriber must (re)load, and the revision they bring it to.
#[derive(Debug)]
pub struct Snapshot {
    pub messages: Vec<Message>,
    pub rev: i64,
}

/// A history page from up to `limit + 1` rows read newest first: the
/// `limit` newest of them oldest first, and whether older ones remain.
fn oldest_first_page(mut messages: Vec<Message>, limit: i64) -> (Vec<Message>, bool) {
    let more = messages.len() as i64 > limit;
    messages.truncate(limit.max(0) as usize);
    messages.reverse();
    (messages, more)
}

/// A row for the writer to insert.
pub struct NewMessage<'a> {
    pub thread_id: &'a str,
    pub author: &'a str,
    pub role: Role,
    pub body: &'a str,
    pub status: Status,
    pub model: Option<&'a str>,
    pub requested_by: Option<&'a str>,
    pub context_before: Option<i64>,
    /// The composer's id for a post (user messages).
    pub request_id: Option<&'a str>,
    /// The user message a first answer replies to.
    pub reply_to: Option<i64>,
}

/// One log row to append: text for reply `id` at byte `offset`, its place
/// `seq` in the reply's log, stamped with revision `rev`.
#[derive(Clone, Copy, Debug)]
pub struct LogAppend<'a> {
    pub thread_id: &'a str,
    pub id: i64,
    pub part: Part,
    pub seq: u32,
    pub offset: usize,
    pub rev: i64,
    pub text: &'a str,
}

/// Where a streaming reply's log stands: the length in bytes of each part's
/// text (by [`Part::index`]) and the `seq` its next row takes (one sequence
/// for both parts: a part's text is its rows in `seq` order).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogCursor {
    pub lens: [usize; 2],
    pub next_seq: u32,
}

impl LogCursor {
    pub fn len(&self, part: Part) -> usize {
        self.lens[part.index()]
    }

    /// The cursor after appending `bytes` to `part` in one row.
    pub fn after(mut self, part: Part, bytes: usize) -> Self {
        self.lens[part.index()] += bytes;
        self.next_seq += 1;
        self
    }
}

/// The store, over one backend. Cheap to clone (a pool handle).
#[derive(Clone, Debug)]
pub enum Store {
    Sqlite(sqlite::SqliteStore),
    Postgres(postgres::PostgresStore),
}

/// One transaction of the writer's. Dropped without [`Tx::commit`], it
/// rolls back.
pub enum Tx {
    Sqlite(sqlite::SqliteTx),
    Postgres(postgres::PgTx),
}

/// Calls the same method on whichever backend `$self` holds.
macro_rules! on_backend {
    ($self:expr, $backend:ident => $call:expr) => {
        match $self {
            Store::Sqlite($backend) => $call,
            Store::Postgres($backend) => $call,
        }
    };
}

impl Store {
    /// Opens (creating if needed) a SQLite database file and runs the
    /// embedded migrations.
    pub async fn open_sqlite(path: &Path) -> anyhow::Result<Self> {
        Ok(Self::Sqlite(sqlite::SqliteStore::open(path).await?))
    }

    /// The SQLite backend, if that is this store's (tests inject faults
    /// through its pool).
    pub fn as_sqlite(&self) -> Option<&sqlite::SqliteStore> {
        match self {
            Store::Sqlite(s) => Some(s),
            Store::Postgres(_) => None,
        }
    }

    /// Closes the pools (shutdown, after the writer's last commit).
    pub async fn close(&self) {
        on_backend!(self, s => s.close().await)
    }

    /// Opens a transaction for the writer.
    pub async fn begin(&self) -> Result<Tx, sqlx::Error> {
        Ok(match self {
            Store::Sqlite(s) => Tx::Sqlite(s.begin().await?),
            Store::Postgres(s) => Tx::Postgres(s.begin().await?),
        })
    }

    /// Whether the operating system lets this process write the database
    /// now (whether commits succeed is the writer's ping). A server
    /// database (PostgreSQL) answers through its commits alone.
    pub fn probe_write(&self) -> std::io::Result<()> {
        match self {
            Store::Sqlite(s) => s.probe_write(),
            Store::Postgres(_) => Ok(()),
        }
    }

    /// The thread, or the 404 a request naming a missing one gets.
    pub async fn existing_thread(&self, id: &str) -> Result<Thread, AppError> {
        self.thread(id)
            .await?
            .ok_or_else(|| AppError::no_thread(id))
    }

    pub async fn thread(&self, id: &str) -> Result<Option<Thread>, sqlx::Error> {
        on_backend!(self, s => s.thread(id).await)
    }

    pub async fn create_thread(
        &self,
        id: &str,
        title: &str,
        listed: bool,
    ) -> Result<(), sqlx::Error> {
        on_backend!(self, s => s.create_thread(id, title, listed).await)
    }

    /// Renames a thread; false if there is no such thread.
    pub async fn rename_thread(&self, id: &str, title: &str) -> Result<bool, sqlx::Error> {
        on_backend!(self, s => s.rename_thread(id, title).await)
    }

    /// Listed threads by last activity, newest first, with their streaming
    /// replies counted.
    pub async fn list_threads(&self, limit: i64) -> Result<Vec<ThreadSummary>, sqlx::Error> {
        on_backend!(self, s => s.list_threads(limit).await)
    }

    pub async fn thread_summary(&self, id: &str) -> Result<Option<ThreadSummary>, sqlx::Error> {
        on_backend!(self, s => s.thread_summary(id).await)
    }

    /// A thread's entry for the thread list; `None` for an unlisted thread.
    pub async fn listed_summary(&self, id: &str) -> Result<Option<ThreadSummary>, sqlx::Error> {
        on_backend!(self, s => s.listed_summary(id).await)
    }

    /// Up to `limit` messages of a thread older than message `before`,
    /// oldest first, and whether older ones remain (a cursor on the id, so
    /// rows added meanwhile never shift a page).
    pub async fn messages_before(
        &self,
        thread_id: &str,
        before: i64,
        limit: i64,
    ) -> Result<(Vec<Message>, bool), sqlx::Error> {
        on_backend!(self, s => s.messages_before(thread_id, before, limit).await)
    }

    /// Up to `limit` messages whose text is final and holds every one of
    /// `terms` (whole words, any case), newest first, older than message
    /// `before` when given. Served by the full-text index (FTS5 on SQLite,
    /// a GIN index on PostgreSQL).
    pub async fn search(
        &self,
        terms: &[String],
        scope: SearchScope<'_>,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<crate::search::FoundMessage>, sqlx::Error> {
        if terms.is_empty() {
            return Ok(Vec::new());
        }
        let before = before.unwrap_or(i64::MAX);
        on_backend!(self, s => s.search(terms, scope, before, limit).await)
    }

    /// Every message of a thread, oldest first (export).
    pub async fn all_messages(&self, thread_id: &str) -> Result<Vec<Message>, sqlx::Error> {
        on_backend!(self, s => s.all_messages(thread_id).await)
    }

    /// Message `id` of thread `thread_id`; `None` when there is no such
    /// message in that thread (a message is only ever read through its thread).
    pub async fn message(&self, thread_id: &str, id: i64) -> Result<Option<Message>, sqlx::Error> {
        on_backend!(self, s => s.message(thread_id, id).await)
    }

    /// The user message a post with `request_id` stored in the thread, and
    /// the replies it started (a retried post answers with these).
    pub async fn posted_by_request(
        &self,
        thread_id: &str,
        request_id: &str,
    ) -> Result<Option<Posted>, sqlx::Error> {
        on_backend!(self, s => s.posted_by_request(thread_id, request_id).await)
    }

    /// The latest `limit` messages of a thread, oldest first, with the
    /// revision they are current to (one consistent read).
    pub async fn latest(&self, thread_id: &str, limit: i64) -> Result<Snapshot, sqlx::Error> {
        on_backend!(self, s => s.latest(thread_id, limit).await)
    }

    /// One page of what a subscriber needs on (re)connecting: up to `limit`
    /// messages with ids above `after`, oldest first, that changed after
    /// `since` (their text included), or without `since` the replies still
    /// streaming. Read page by page as the subscriber's socket drains, after
    /// [`Store::thread_rev`]: a row read later is only newer, and the
    /// subscriber drops what it already holds.
    pub async fn changed_page(
        &self,
        thread_id: &str,
        since: Option<i64>,
        after: i64,
        limit: i64,
    ) -> Result<Vec<Message>, sqlx::Error> {
        on_backend!(self, s => s.changed_page(thread_id, since, after, limit).await)
    }

    /// The revision a thread is at now.
    pub async fn thread_rev(&self, thread_id: &str) -> Result<i64, sqlx::Error> {
        on_backend!(self, s => s.thread_rev(thread_id).await)
    }

    /// Up to `limit` messages of a thread with ids above `after`, oldest
    /// first (the export, written page by page).
    pub async fn messages_after(
        &self,
        thread_id: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<Message>, sqlx::Error> {
        on_backend!(self, s => s.messages_after(thread_id, after, limit).await)
    }

    /// The prompt context for a reply: the thread's most recent `limit`
    /// messages before it, oldest first, without empty ones.
    pub async fn context(
        &self,
        thread_id: &str,
        before_id: i64,
        limit: u32,
    ) -> Result<Vec<Message>, sqlx::Error> {
        on_backend!(self, s => s.context(thread_id, before_id, limit).await)
    }

    /// A thread's own granularity, if it overrides the configured one.
    pub async fn thread_granularity(&self, id: &str) -> Result<Option<Granularity>, sqlx::Error> {
        on_backend!(self, s => s.thread_granularity(id).await)
    }

    /// Sets (or, with `None`, clears) a thread's own granularity; false if
    /// there is no such thread.
    pub async fn set_thread_granularity(
        &self,
        id: &str,
        granularity: Option<Granularity>,
    ) -> Result<bool, sqlx::Error> {
        on_backend!(self, s => s.set_thread_granularity(id, granularity).await)
    }

    /// Tokens used by a thread's replies, in total and per asking author.
    pub async fn usage_totals(&self, thread_id: &str) -> Result<UsageTotals, sqlx::Error> {
        on_backend!(self, s => s.usage_totals(thread_id).await)
    }

    /// The highest revision stamped so far; the writer continues after it.
    pub async fn max_rev(&self) -> Result<i64, sqlx::Error> {
        match self {
            Store::Sqlite(s) => s.max_rev().await,
            // Revisions are per thread, allocated in each transaction.
            Store::Postgres(_) => Ok(0),
        }
    }

    /// A lone instance's start-up recovery (see [`Coordination::recover`]):
    /// replies a crash left `streaming` become `interrupted`, their body
    /// written from the log (every byte that was committed) and their log
    /// rows removed. Runs before the writer starts.
    pub(in crate::server::store) async fn interrupt_streaming(&self) -> Result<u64, sqlx::Error> {
        match self {
            Store::Sqlite(s) => {
                let rev = s.max_rev().await? + 1;
                s.interrupt_streaming(rev).await
            }
            Store::Postgres(s) => s.interrupt_streaming().await,
        }
    }

    /// Appends log rows in one atomic statement without a transaction
    /// around it (the writer's path for a batch of nothing but text);
    /// `None`, with nothing written, when there are too many rows for one
    /// statement.
    pub async fn append_log(&self, rows: &[LogAppend<'_>]) -> Result<Option<()>, sqlx::Error> {
        match self {
            Store::Sqlite(s) => sqlite::writes::append_log_alone(s, rows).await,
            // Every commit locks its threads and moves their revisions.
            Store::Postgres(_) => Ok(None),
        }
    }

    /// Log rows of reply `id` still stored (tests and diagnostics: a
    /// finished reply has none).
    pub async fn log_rows(&self, id: i64) -> Result<i64, sqlx::Error> {
        on_backend!(self, s => s.log_rows(id).await)
    }
}

impl Tx {
    /// Commits; returns how many wake-ups it sent to other instances.
    pub async fn commit(self) -> Result<u64, sqlx::Error> {
        match self {
            Tx::Sqlite(tx) => tx.commit().await.map(|()| 0),
            Tx::Postgres(tx) => tx.commit().await,
        }
    }

    /// Locks the threads this transaction will write, in a fixed order
    /// (PostgreSQL: their revisions are allocated under these locks; SQLite
    /// holds the whole database's write lock already).
    pub async fn lock_threads(&mut self, ids: &[&str]) -> Result<(), sqlx::Error> {
        match self {
            Tx::Sqlite(_) => Ok(()),
            Tx::Postgres(tx) => tx.lock_threads(ids).await,
        }
    }

    /// The next revision of the thread, when the backend allocates them
    /// per thread in the transaction (PostgreSQL); `None` when the writer's
    /// own counter numbers them (SQLite: one writer, one process).
    pub async fn next_rev(&mut self, thread_id: &str) -> Result<Option<i64>, sqlx::Error> {
        match self {
            Tx::Sqlite(_) => Ok(None),
            Tx::Postgres(tx) => tx.next_rev(thread_id).await.map(Some),
        }
    }

    pub async fn thread_exists(&mut self, id: &str) -> Result<bool, sqlx::Error> {
        match self {
            Tx::Sqlite(tx) => sqlite::writes::thread_exists(tx, id).await,
            Tx::Postgres(tx) => tx.thread_exists(id).await,
        }
    }

    pub async fn message(
        &mut self,
        thread_id: &str,
        id: i64,
    ) -> Result<Option<Message>, sqlx::Error> {
        match self {
            Tx::Sqlite(tx) => sqlite::writes::message_in(tx, thread_id, id).await,
            Tx::Postgres(tx) => tx.message(thread_id, id).await,
        }
    }

    /// See [`Store::posted_by_request`].
    pub async fn posted_by_request(
        &mut self,
        thread_id: &str,
        request_id: &str,
    ) -> Result<Option<Posted>, sqlx::Error> {
        match self {
            Tx::Sqlite(tx) => sqlite::writes::posted_by_request(tx, thread_id, request_id).await,
            Tx::Postgres(tx) => tx.posted_by_request(thread_id, request_id).await,
        }
    }

    /// Inserts a message and marks its thread active (a streaming reply is
    /// leased to this instance).
    pub async fn insert_message(
        &mut self,
        new: &NewMessage<'_>,
        now: i64,
        rev: i64,
    ) -> Result<Message, sqlx::Error> {
        match self {
            Tx::Sqlite(tx) => sqlite::writes::insert_message(tx, new, now, rev).await,
            Tx::Postgres(tx) => tx.insert_message(new, now, rev).await,
        }
    }

    /// Appends log rows (any replies, at most one row per part of a reply). The
    /// caller (the writer) checked each reply is streaming and owns the
    /// offsets; this only inserts.
    pub async fn append_log(&mut self, rows: &[LogAppend<'_>]) -> Result<(), sqlx::Error> {
        match self {
            Tx::Sqlite(tx) => sqlite::writes::append_log(tx, rows).await,
            Tx::Postgres(tx) => tx.append_log(rows).await,
        }
    }

    /// Where a streaming reply's log stands, read from the database; `None`
    /// if it is not streaming.
    pub async fn log_cursor(&mut self, id: i64) -> Result<Option<LogCursor>, sqlx::Error> {
        match self {
            Tx::Sqlite(tx) => sqlite::writes::log_cursor(tx, id).await,
            Tx::Postgres(tx) => tx.log_cursor(id).await,
        }
    }

    /// Ends a streaming reply: writes its log into its body and thinking
    /// (once), removes the log rows, records the outcome. Returns the final
    /// (body, thinking), or `None` if it had already ended.
    pub async fn finish(
        &mut self,
        thread_id: &str,
        id: i64,
        outcome: &Outcome,
        now: i64,
        rev: i64,
    ) -> Result<Option<(String, String)>, sqlx::Error> {
        match self {
            Tx::Sqlite(tx) => sqlite::writes::finish(tx, id, outcome, now, rev).await,
            Tx::Postgres(tx) => tx.finish(thread_id, id, outcome, now, rev).await,
        }
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
    ) -> Result<bool, sqlx::Error> {
        match self {
            Tx::Sqlite(tx) => sqlite::writes::set_notice(tx, id, notice, retries, now, rev).await,
            Tx::Postgres(tx) => {
                tx.set_notice(thread_id, id, notice, retries, now, rev)
                    .await
            }
        }
    }

    /// Records how long a streaming reply thought; false if it is not streaming.
    pub async fn set_thinking_ms(
        &mut self,
        thread_id: &str,
        id: i64,
        thinking_ms: i64,
        now: i64,
        rev: i64,
    ) -> Result<bool, sqlx::Error> {
        match self {
            Tx::Sqlite(tx) => sqlite::writes::set_thinking_ms(tx, id, thinking_ms, now, rev).await,
            Tx::Postgres(tx) => {
                tx.set_thinking_ms(thread_id, id, thinking_ms, now, rev)
                    .await
            }
        }
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
    ) -> Result<Option<Message>, sqlx::Error> {
        match self {
            Tx::Sqlite(tx) => {
                sqlite::writes::reopen(tx, thread_id, id, from, requested_by, now, rev).await
            }
            Tx::Postgres(tx) => tx.reopen(thread_id, id, from, requested_by, now, rev).await,
        }
    }

    /// The fencing epoch of this instance's lease on streaming reply `id`
    /// (`Some(0)` on SQLite, where one process is the only producer).
    pub async fn lease_epoch(&mut self, id: i64) -> Result<Option<i64>, sqlx::Error> {
        match self {
            Tx::Sqlite(_) => Ok(Some(0)),
            Tx::Postgres(tx) => tx.lease_epoch(id).await,
        }
    }

    /// Of the replies (id, epoch) this transaction writes, those whose lease
    /// another instance took over: nothing of theirs may be written.
    pub async fn lost_leases(&mut self, held: &[(i64, i64)]) -> Result<Vec<i64>, sqlx::Error> {
        match self {
            Tx::Sqlite(_) => Ok(Vec::new()),
            Tx::Postgres(tx) => tx.lost_leases(held).await,
        }
    }

    /// Extends the leases (id, epoch); returns those no longer held.
    pub async fn renew(&mut self, held: &[(i64, i64)]) -> Result<Vec<i64>, sqlx::Error> {
        match self {
            Tx::Sqlite(_) => Ok(Vec::new()),
            Tx::Postgres(tx) => tx.renew(held).await,
        }
    }

    /// Ends this instance's lease on reply `id` now (it stays streaming, for
    /// another instance to take over).
    pub async fn release(&mut self, id: i64, epoch: i64) -> Result<(), sqlx::Error> {
        match self {
            Tx::Sqlite(_) => Ok(()),
            Tx::Postgres(tx) => tx.release(id, epoch).await,
        }
    }

    /// Takes over a streaming reply whose lease expired: the row (with a
    /// notice), the new epoch, and who asked to stop it meanwhile.
    pub async fn adopt(
        &mut self,
        thread_id: &str,
        id: i64,
        now: i64,
        rev: i64,
    ) -> Result<Option<(Message, i64, Option<String>)>, sqlx::Error> {
        match self {
            Tx::Sqlite(_) => Ok(None),
            Tx::Postgres(tx) => tx.adopt(thread_id, id, now, rev).await,
        }
    }

    /// Whether the database can grow: puts the storage reserve back if it
    /// was used and writes a few pages, undone (SQLite's full-disk path).
    pub async fn probe_growth(&mut self) -> Result<(), sqlx::Error> {
        match self {
            Tx::Sqlite(tx) => sqlite::writes::probe_growth(tx).await,
            Tx::Postgres(_) => Ok(()),
        }
    }

    /// Frees the storage reserve's room for use; true if there was one.
    pub async fn release_reserve(&mut self) -> Result<bool, sqlx::Error> {
        match self {
            Tx::Sqlite(tx) => sqlite::writes::release_reserve(tx).await,
            Tx::Postgres(_) => Ok(false),
        }
    }
}
