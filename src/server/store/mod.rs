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

/// A closure turning a sqlx error into a [`StoreError`] saying what was
/// being done (formatted only when there is an error).
macro_rules! doing {
    ($($arg:tt)*) => {
        |source: sqlx::Error| $crate::server::store::StoreError {
            doing: format!($($arg)*),
            source,
        }
    };
}

mod accounts;
pub mod coordination;
mod members;
mod postgres;
mod sign_ins;
mod sqlite;
mod storage;
mod tx;
pub mod writer;

pub use tx::Tx;

use storage::Storage;

use crate::{
    error::AppError,
    model::{Granularity, Message, Part, Posted, Role, Status, Thread, ThreadSummary, UsageTotals},
};

pub use accounts::{AccountRow, JoinRefusal, NewJoinLink, SessionWindow, UsageRow};
pub use coordination::{AtShutdown, Coordination};
pub use members::{AddRefusal, MemberRow, Membership};
pub use sign_ins::{Credential, NewChallenge, NewMember, PasskeyRow};
pub use sqlite::LIST_THREADS;

/// The search statements, for tests that read their query plans.
#[doc(hidden)]
pub mod search_sql {
    pub use super::postgres::SEARCH_LISTED as POSTGRES_LISTED;
    pub use super::sqlite::SEARCH_LISTED as SQLITE_LISTED;
}

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

/// A database error with what was being done when it happened (which
/// statement, which thread or reply). It is logged once, where it becomes
/// an answer (`AppError`'s `From`) or in the writer's log line; users get a
/// plain message.
#[derive(Debug, thiserror::Error)]
#[error("{doing}: {source}")]
pub struct StoreError {
    pub doing: String,
    #[source]
    pub source: sqlx::Error,
}

/// A database error becomes the plain "something went wrong" answer; the
/// server's log gets it once, with what was being done and every cause
/// behind the driver's error.
impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        tracing::error!(doing = %e.doing, error = %crate::error::causes(&e.source), "database error");
        AppError::Internal
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

/// Someone's decision on a tool call that waits for approval, binding the
/// arguments they were shown (by their hash).
#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct ToolDecision {
    pub message_id: i64,
    #[sqlx(try_from = "i64")]
    pub call_index: u32,
    /// Which round of waiting it answers (see [`crate::tools::ToolCall::round`]).
    #[sqlx(try_from = "i64")]
    pub round: u32,
    pub arguments_hash: String,
    pub approved: bool,
    pub decided_by: String,
    pub decided_at: i64,
}

/// Rows a subscriber must (re)load, and the revision they bring it to.
#[derive(Debug)]
pub struct Snapshot {
    pub messages: Vec<Message>,
    pub rev: i64,
}

/// The replies log rows are for (for an error's context).
fn message_ids(rows: &[LogAppend<'_>]) -> Vec<i64> {
    let mut ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    ids.dedup();
    ids
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
/// for every part: a part's text is its rows in `seq` order).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogCursor {
    pub lens: [usize; Part::COUNT],
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

/// The store, over one backend (private: nothing outside this folder
/// asks which). Cheap to clone (a pool handle).
#[derive(Clone, Debug)]
pub struct Store(Backend);

#[derive(Clone, Debug)]
enum Backend {
    Sqlite(sqlite::SqliteStore),
    Postgres(postgres::PostgresStore),
}

/// Calls the same method on whichever backend `$self` holds.
macro_rules! on_backend {
    ($self:expr, $backend:ident => $call:expr) => {
        match &$self.0 {
            Backend::Sqlite($backend) => $call,
            Backend::Postgres($backend) => $call,
        }
    };
}

impl Store {
    fn sqlite(store: sqlite::SqliteStore) -> Self {
        Self(Backend::Sqlite(store))
    }

    fn postgres(store: postgres::PostgresStore) -> Self {
        Self(Backend::Postgres(store))
    }

    /// Tests: caps the database at `pages` pages (`None`: its size now)
    /// on every connection the app holds, so a write that needs one more
    /// page fails as on a full disk; false where the database has no such
    /// cap (PostgreSQL).
    #[doc(hidden)]
    pub async fn cap_pages_for_tests(&self, pages: Option<i64>) -> bool {
        match &self.0 {
            Backend::Sqlite(s) => {
                s.cap_pages(pages).await;
                true
            }
            Backend::Postgres(_) => false,
        }
    }

    /// Closes the pools (shutdown, after the writer's last commit).
    pub async fn close(&self) {
        on_backend!(self, s => s.close().await)
    }

    /// Opens a transaction for the writer.
    pub async fn begin(&self) -> Result<Tx, StoreError> {
        async {
            Ok(match &self.0 {
                Backend::Sqlite(s) => Tx::Sqlite(s.begin().await?),
                Backend::Postgres(s) => Tx::Postgres(s.begin().await?),
            })
        }
        .await
        .map_err(doing!("Store::begin"))
    }

    /// Whether this process may write the database now (whether commits
    /// succeed is the writer's ping): SQLite, whether the operating system
    /// lets it write the file; PostgreSQL, whether the server takes writes
    /// (not a read-only standby).
    pub async fn probe_write(&self) -> Result<(), String> {
        match &self.0 {
            Backend::Sqlite(s) => s.probe_write().map_err(|e| e.to_string()),
            Backend::Postgres(s) => s.probe_write().await,
        }
    }

    /// The thread, or the 404 a request naming a missing one gets.
    pub async fn existing_thread(&self, id: &str) -> Result<Thread, AppError> {
        self.thread(id)
            .await?
            .ok_or_else(|| AppError::no_thread(id))
    }

    pub async fn thread(&self, id: &str) -> Result<Option<Thread>, StoreError> {
        async { on_backend!(self, s => s.thread(id).await) }
            .await
            .map_err(doing!("Store::thread (thread {id})"))
    }

    pub async fn create_thread(
        &self,
        id: &str,
        title: &str,
        listed: bool,
    ) -> Result<(), StoreError> {
        async { on_backend!(self, s => s.create_thread(id, title, listed).await) }
            .await
            .map_err(doing!("Store::create_thread (thread {id})"))
    }

    /// Renames a thread; false if there is no such thread.
    pub async fn rename_thread(&self, id: &str, title: &str) -> Result<bool, StoreError> {
        async { on_backend!(self, s => s.rename_thread(id, title).await) }
            .await
            .map_err(doing!("Store::rename_thread (thread {id})"))
    }

    /// Records a decision on a tool call waiting for approval; false if one
    /// was already recorded (the first stands).
    pub async fn decide_tool_call(&self, decision: &ToolDecision) -> Result<bool, StoreError> {
        async { on_backend!(self, s => s.decide_tool_call(decision).await) }
            .await
            .map_err(doing!(
                "Store::decide_tool_call (message {}, call {})",
                decision.message_id,
                decision.call_index
            ))
    }

    /// The decision on round `round` of call `call_index` of reply
    /// `message_id`, if made.
    pub async fn tool_decision(
        &self,
        message_id: i64,
        call_index: u32,
        round: u32,
    ) -> Result<Option<ToolDecision>, StoreError> {
        async { on_backend!(self, s => s.tool_decision(message_id, call_index, round).await) }
            .await
            .map_err(doing!(
                "Store::tool_decision (message {message_id}, call {call_index})"
            ))
    }

    /// Listed threads by last activity, newest first, with their streaming
    /// replies counted.
    pub async fn list_threads(&self, limit: i64) -> Result<Vec<ThreadSummary>, StoreError> {
        async { on_backend!(self, s => s.list_threads(limit).await) }
            .await
            .map_err(doing!("Store::list_threads"))
    }

    pub async fn thread_summary(&self, id: &str) -> Result<Option<ThreadSummary>, StoreError> {
        async { on_backend!(self, s => s.thread_summary(id).await) }
            .await
            .map_err(doing!("Store::thread_summary (thread {id})"))
    }

    /// A thread's entry for the thread list; `None` for an unlisted thread.
    pub async fn listed_summary(&self, id: &str) -> Result<Option<ThreadSummary>, StoreError> {
        async { on_backend!(self, s => s.listed_summary(id).await) }
            .await
            .map_err(doing!("Store::listed_summary (thread {id})"))
    }

    /// Up to `limit` messages of a thread older than message `before`,
    /// oldest first, and whether older ones remain (a cursor on the id, so
    /// rows added meanwhile never shift a page).
    pub async fn messages_before(
        &self,
        thread_id: &str,
        before: i64,
        limit: i64,
    ) -> Result<(Vec<Message>, bool), StoreError> {
        async { on_backend!(self, s => s.messages_before(thread_id, before, limit).await) }
            .await
            .map_err(doing!("Store::messages_before (thread {thread_id})"))
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
    ) -> Result<Vec<crate::search::FoundMessage>, StoreError> {
        async {
            if terms.is_empty() {
                return Ok(Vec::new());
            }
            let before = before.unwrap_or(i64::MAX);
            on_backend!(self, s => s.search(terms, scope, before, limit).await)
        }
        .await
        .map_err(doing!("Store::search"))
    }

    /// Every message of a thread, oldest first (export).
    pub async fn all_messages(&self, thread_id: &str) -> Result<Vec<Message>, StoreError> {
        async { on_backend!(self, s => s.all_messages(thread_id).await) }
            .await
            .map_err(doing!("Store::all_messages (thread {thread_id})"))
    }

    /// Message `id` of thread `thread_id`; `None` when there is no such
    /// message in that thread (a message is only ever read through its thread).
    pub async fn message(&self, thread_id: &str, id: i64) -> Result<Option<Message>, StoreError> {
        async { on_backend!(self, s => s.message(thread_id, id).await) }
            .await
            .map_err(doing!("Store::message (thread {thread_id}, message {id})"))
    }

    /// The user message a post with `request_id` stored in the thread, and
    /// the replies it started (a retried post answers with these).
    pub async fn posted_by_request(
        &self,
        thread_id: &str,
        request_id: &str,
    ) -> Result<Option<Posted>, StoreError> {
        async { on_backend!(self, s => s.posted_by_request(thread_id, request_id).await) }
            .await
            .map_err(doing!("Store::posted_by_request (thread {thread_id})"))
    }

    /// The latest `limit` messages of a thread, oldest first, with the
    /// revision they are current to (one consistent read).
    pub async fn latest(&self, thread_id: &str, limit: i64) -> Result<Snapshot, StoreError> {
        async { on_backend!(self, s => s.latest(thread_id, limit).await) }
            .await
            .map_err(doing!("Store::latest (thread {thread_id})"))
    }

    /// One page of what a subscriber needs on (re)connecting: up to `limit`
    /// messages with ids above `after`, oldest first, while those before a
    /// row hold less than `max_bytes` of text (the first row always comes), that changed after
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
        max_bytes: i64,
    ) -> Result<Vec<Message>, StoreError> {
        async {
            on_backend!(self, s => s.changed_page(thread_id, since, after, limit, max_bytes).await)
        }
        .await
        .map_err(doing!("Store::changed_page (thread {thread_id})"))
    }

    /// The revision a thread is at now.
    pub async fn thread_rev(&self, thread_id: &str) -> Result<i64, StoreError> {
        async { on_backend!(self, s => s.thread_rev(thread_id).await) }
            .await
            .map_err(doing!("Store::thread_rev (thread {thread_id})"))
    }

    /// Up to `limit` messages of a thread with ids above `after`, oldest
    /// first (the export, written page by page).
    pub async fn messages_after(
        &self,
        thread_id: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<Message>, StoreError> {
        async { on_backend!(self, s => s.messages_after(thread_id, after, limit).await) }
            .await
            .map_err(doing!("Store::messages_after (thread {thread_id})"))
    }

    /// The prompt context for a reply: the thread's most recent `limit`
    /// messages before it, oldest first, without empty ones.
    pub async fn context(
        &self,
        thread_id: &str,
        before_id: i64,
        limit: u32,
    ) -> Result<Vec<Message>, StoreError> {
        async { on_backend!(self, s => s.context(thread_id, before_id, limit).await) }
            .await
            .map_err(doing!("Store::context (thread {thread_id})"))
    }

    /// A thread's own granularity, if it overrides the configured one.
    pub async fn thread_granularity(&self, id: &str) -> Result<Option<Granularity>, StoreError> {
        async { on_backend!(self, s => s.thread_granularity(id).await) }
            .await
            .map_err(doing!("Store::thread_granularity (thread {id})"))
    }

    /// Sets (or, with `None`, clears) a thread's own granularity; false if
    /// there is no such thread.
    pub async fn set_thread_granularity(
        &self,
        id: &str,
        granularity: Option<Granularity>,
    ) -> Result<bool, StoreError> {
        async { on_backend!(self, s => s.set_thread_granularity(id, granularity).await) }
            .await
            .map_err(doing!("Store::set_thread_granularity (thread {id})"))
    }

    /// Tokens used by a thread's replies, in total and per asking author.
    pub async fn usage_totals(&self, thread_id: &str) -> Result<UsageTotals, StoreError> {
        async { on_backend!(self, s => s.usage_totals(thread_id).await) }
            .await
            .map_err(doing!("Store::usage_totals (thread {thread_id})"))
    }

    /// A lone instance's start-up recovery (see [`Coordination::recover`]):
    /// replies a crash left `streaming` become `interrupted`, their body
    /// written from the log (every byte that was committed) and their log
    /// rows removed. Runs before the writer starts.
    pub(in crate::server::store) async fn interrupt_streaming(&self) -> Result<u64, StoreError> {
        async { on_backend!(self, s => s.interrupt_streaming().await) }
            .await
            .map_err(doing!("Store::interrupt_streaming"))
    }

    /// Whether a batch of nothing but text can be one statement outside a
    /// transaction ([`Store::append_log`]): where the store numbers every
    /// change alone, and the lane is on.
    pub fn appends_alone(&self) -> bool {
        match &self.0 {
            Backend::Sqlite(s) => s.append_lane(),
            Backend::Postgres(_) => false,
        }
    }

    /// Appends log rows in one atomic statement without a transaction
    /// around it (the writer's path for a batch of nothing but text),
    /// stamping each with the database's next revision; `None`, with
    /// nothing written, when the rows cannot be one statement: too many,
    /// the database busy with another process's write, or revisions kept
    /// per thread (PostgreSQL numbers a change under its thread's lock,
    /// inside a transaction).
    pub async fn append_log(&self, rows: &mut [LogAppend<'_>]) -> Result<Option<()>, StoreError> {
        async {
            match &self.0 {
                Backend::Sqlite(s) => sqlite::writes::append_log_alone(s, rows).await,
                Backend::Postgres(_) => Ok(None),
            }
        }
        .await
        .map_err(doing!(
            "Store::append_log (messages {:?})",
            message_ids(rows)
        ))
    }

    /// Log rows of reply `id` still stored (tests and diagnostics: a
    /// finished reply has none).
    pub async fn log_rows(&self, id: i64) -> Result<i64, StoreError> {
        async { on_backend!(self, s => s.log_rows(id).await) }
            .await
            .map_err(doing!("Store::log_rows (message {id})"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A failed read says what it was doing, and keeps the driver's error.
    #[tokio::test]
    async fn a_database_error_keeps_what_was_being_done() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::sqlite(
            sqlite::SqliteStore::open(&dir.path().join("e.db"), true)
                .await
                .unwrap(),
        );
        store.close().await;
        let error = store.thread("lobby").await.unwrap_err();
        assert_eq!(error.doing, "Store::thread (thread lobby)");
        assert!(matches!(error.source, sqlx::Error::PoolClosed), "{error:?}");
        assert!(error
            .to_string()
            .starts_with("Store::thread (thread lobby): "));
        assert!(std::error::Error::source(&error).is_some());
    }
}
