//! [`Storage`]: what a database backend provides the server, and the
//! rules every backend keeps. `Store` dispatches to one (SQLite or
//! PostgreSQL); the writer's statements are `Tx`'s. A new backend is an
//! implementation of this trait and of `Tx`, nothing outside `store/`.
//!
//! Invariants every implementation keeps:
//!
//! 1. **Revisions only grow, per thread, in commit order.** Every change
//!    of a thread (a row written, a log row appended) carries a revision
//!    greater than every earlier committed change of that thread; a read
//!    "since revision r" therefore misses nothing committed after r.
//! 2. **Reads compose.** A streaming reply's text is its `body` followed by
//!    its log rows in `seq` order; every read returns that composed text
//!    (and its revision: the greater of the row's and its last log row's),
//!    so a reader never sees whether text is still in the log.
//! 3. **Nothing uncommitted is read**, and a page read is one snapshot.
//! 4. **Reads are bounded**: every list takes a `limit` (and pages of text
//!    a `max_bytes`), whatever the thread holds.
//! 5. **Thread ids and message ids are the caller's to check**: a read of
//!    a message names its thread too, and answers `None` when the message
//!    is in another thread.
//! 6. **Only the writer writes messages** (through `Tx`); the writes here
//!    are of threads' own settings and of tool decisions, each one atomic
//!    statement (a decision: the first one for a call and round stands).

use crate::model::{Granularity, Message, Posted, Thread, ThreadSummary, UsageTotals};
use crate::search::FoundMessage;

use super::{SearchScope, Snapshot, ToolDecision};

/// See the module's documentation.
pub(super) trait Storage {
    /// Every message of a thread, oldest first (export).
    async fn all_messages(&self, thread_id: &str) -> Result<Vec<Message>, sqlx::Error>;

    /// Up to `limit` messages of the thread with ids above `after`, oldest
    /// first: those changed after `since` (a streaming reply whose log moved
    /// past it included), or without `since` the replies still streaming.
    async fn changed_page(
        &self,
        thread_id: &str,
        since: Option<i64>,
        after: i64,
        limit: i64,
        max_bytes: i64,
    ) -> Result<Vec<Message>, sqlx::Error>;

    /// Closes the readers' pool (shutdown, after the writer's last commit;
    /// the writer's own connection closes as the last handle drops).
    async fn close(&self);

    /// The prompt context for a reply: the thread's most recent `limit`
    /// messages before it, oldest first, without empty placeholders.
    async fn context(
        &self,
        thread_id: &str,
        before_id: i64,
        limit: u32,
    ) -> Result<Vec<Message>, sqlx::Error>;

    /// Creates thread `id` (an existing id is an error).
    async fn create_thread(&self, id: &str, title: &str, listed: bool) -> Result<(), sqlx::Error>;

    /// Records a decision on a tool call waiting for approval; false if one
    /// was already recorded (the first stands).
    async fn decide_tool_call(&self, d: &ToolDecision) -> Result<bool, sqlx::Error>;

    /// Start-up recovery: replies a crash left `streaming` become
    /// `interrupted`, their body written from the log (every committed
    /// byte) and the log emptied, in one transaction. Runs before the
    /// writer starts.
    async fn interrupt_streaming(&self) -> Result<u64, sqlx::Error>;

    /// The latest `limit` messages of a thread, oldest first, read in one
    /// transaction with the revision they are current to.
    async fn latest(&self, thread_id: &str, limit: i64) -> Result<Snapshot, sqlx::Error>;

    /// Threads by last activity, newest first, with their streaming replies
    /// counted (`idx_threads_activity`, `idx_messages_live`).
    async fn list_threads(&self, limit: i64) -> Result<Vec<ThreadSummary>, sqlx::Error>;

    /// A thread's entry for the thread list; `None` for an unlisted thread.
    async fn listed_summary(&self, id: &str) -> Result<Option<ThreadSummary>, sqlx::Error>;

    async fn log_rows(&self, id: i64) -> Result<i64, sqlx::Error>;

    /// Message `id` of thread `thread_id`; `None` when there is no such
    /// message in that thread (a message is only ever read through its thread).
    async fn message(&self, thread_id: &str, id: i64) -> Result<Option<Message>, sqlx::Error>;

    /// Up to `limit` messages of the thread with ids above `after`, oldest
    /// first (the export, page by page).
    async fn messages_after(
        &self,
        thread_id: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<Message>, sqlx::Error>;

    /// Up to `limit` messages of a thread older than message `before`,
    /// oldest first, and whether older ones remain. Keyed on the id (a
    /// cursor), so rows added meanwhile never shift a page.
    async fn messages_before(
        &self,
        thread_id: &str,
        before: i64,
        limit: i64,
    ) -> Result<(Vec<Message>, bool), sqlx::Error>;

    /// The user message a post with `request_id` stored in the thread, and
    /// the replies it started (a retried post answers with these).
    async fn posted_by_request(
        &self,
        thread_id: &str,
        request_id: &str,
    ) -> Result<Option<Posted>, sqlx::Error>;

    /// Renames a thread; false if there is no such thread.
    async fn rename_thread(&self, id: &str, title: &str) -> Result<bool, sqlx::Error>;

    /// Messages matching every term (words only), newest first, below id
    /// `before`, at most `limit`.
    async fn search(
        &self,
        terms: &[String],
        scope: SearchScope<'_>,
        before: i64,
        limit: i64,
    ) -> Result<Vec<FoundMessage>, sqlx::Error>;

    /// Sets (or, with `None`, clears) a thread's own granularity; false if
    /// there is no such thread.
    async fn set_thread_granularity(
        &self,
        id: &str,
        granularity: Option<Granularity>,
    ) -> Result<bool, sqlx::Error>;

    /// A thread by id.
    async fn thread(&self, id: &str) -> Result<Option<Thread>, sqlx::Error>;

    /// A thread's own granularity, if it overrides the configured one.
    async fn thread_granularity(&self, id: &str) -> Result<Option<Granularity>, sqlx::Error>;

    /// The revision a thread is at now.
    async fn thread_rev(&self, thread_id: &str) -> Result<i64, sqlx::Error>;

    /// A thread as the home page lists it, listed or not.
    async fn thread_summary(&self, id: &str) -> Result<Option<ThreadSummary>, sqlx::Error>;

    async fn tool_decision(
        &self,
        message_id: i64,
        call_index: u32,
        round: u32,
    ) -> Result<Option<ToolDecision>, sqlx::Error>;

    /// Tokens used by a thread's replies, in total and per asking author.
    async fn usage_totals(&self, thread_id: &str) -> Result<UsageTotals, sqlx::Error>;
}
