//! The SQLite backend: the pool, migrations and reads ([`writes`] has the
//! statements the writer runs inside its transactions).
//!
//! SQLite runs in WAL mode: readers never block the single writer and see a
//! consistent snapshot; `synchronous = NORMAL` keeps every committed
//! transaction across a process crash (`kill -9`), which is what the
//! write-ahead invariant needs.
//!
//! New databases use 512-byte pages. A commit writes every page it changed
//! to the WAL; appending one log row changes one leaf page, so the page
//! size is what one token costs on disk at one token per commit (measured:
//! ~4.7 KB with 4 KiB pages, ~0.7 KB with 512-byte ones). Long bodies span
//! more overflow pages, which costs reads little. An existing database
//! keeps its page size (WAL mode cannot change it).

mod connection;
pub(super) mod writes;

use connection::open_appends;
pub use connection::{SqliteTx, WriterConnection};

use std::{path::Path, str::FromStr, time::Duration};

use sqlx::{
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
    Connection, SqliteConnection, SqlitePool,
};

use super::{SearchScope, Snapshot, Storage, ToolDecision};
use crate::model::{AuthorUsage, Granularity, Message, Posted, Thread, ThreadSummary, UsageTotals};
use crate::search::FoundMessage;

/// Page size for new databases (see the module doc).
const PAGE_SIZE: u32 = 512;

/// The message columns, with `$body` for the text.
macro_rules! message_columns {
    ($body:expr, $thinking:expr, $tools:expr, $rev:expr) => {
        concat!(
            "id, thread_id, author, role, ",
            $body,
            ", status, error, finish_reason, model, created_at, updated_at, finished_at, \
             prompt_tokens, completion_tokens, ",
            $rev,
            ", requested_by, context_before, stopped_by, \
             notice, retries, usage_estimated, ttft_ms, tokens_per_second, ",
            $thinking,
            ", thinking_ms, reasoning_tokens, ",
            $tools
        )
    };
}

/// The rows of reply `$id`'s log (both parts): its keys are `id << 32 | seq`.
macro_rules! log_of {
    ($id:literal) => {
        concat!(
            "reply_log WHERE key >= (",
            $id,
            " << 32) AND key < ((",
            $id,
            " + 1) << 32)"
        )
    };
}
pub(super) use log_of;

/// The text of one part (0 answer, 1 thinking, 2 tools) of reply `messages.id`'s
/// log, in order ('' without rows).
macro_rules! log_text {
    ($part:literal) => {
        concat!(
            "COALESCE((SELECT group_concat(text, '' ORDER BY key) FROM reply_log \
             WHERE key >= (messages.id << 32) AND key < ((messages.id + 1) << 32) AND part = ",
            $part,
            "), '')"
        )
    };
}

/// Every message read returns its text: the body, and for a streaming
/// reply its log rows after it; and its revision: for a streaming reply,
/// its last log row's if newer (a client keeps the newer of two copies).
pub(super) const MESSAGE_COLUMNS: &str = message_columns!(
    concat!(
        "CASE WHEN messages.status = 'streaming' THEN messages.body || ",
        log_text!(0),
        " ELSE messages.body END AS body"
    ),
    concat!(
        "CASE WHEN messages.status = 'streaming' THEN messages.thinking || ",
        log_text!(1),
        " ELSE messages.thinking END AS thinking"
    ),
    concat!(
        "CASE WHEN messages.status = 'streaming' THEN messages.tools || ",
        log_text!(2),
        " ELSE messages.tools END AS tools"
    ),
    "CASE WHEN messages.status = 'streaming' THEN MAX(messages.rev, COALESCE(\
     (SELECT rev FROM reply_log WHERE key >= (messages.id << 32) \
      AND key < ((messages.id + 1) << 32) ORDER BY key DESC LIMIT 1), 0)) \
     ELSE messages.rev END AS rev"
);
/// For `RETURNING`, where the log is known to be empty.
pub(super) const STORED_COLUMNS: &str = message_columns!("body", "thinking", "tools", "rev");

/// The revision of a streaming reply's last log row (NULL without one).
const LAST_LOG_REV: &str = "(SELECT rev FROM reply_log \
     WHERE key >= (m.id << 32) AND key < ((m.id + 1) << 32) ORDER BY key DESC LIMIT 1)";

/// The thread list (public so a test can `EXPLAIN QUERY PLAN` it).
pub const LIST_THREADS: &str = "SELECT t.id, t.title, t.last_activity_at, \
     (SELECT COUNT(*) FROM messages m WHERE m.thread_id = t.id AND m.status = 'streaming') AS live \
     FROM threads t WHERE t.listed = 1 ORDER BY t.last_activity_at DESC, t.id LIMIT ?";
const THREAD_SUMMARY: &str = "SELECT t.id, t.title, t.last_activity_at, \
     (SELECT COUNT(*) FROM messages m WHERE m.thread_id = t.id AND m.status = 'streaming') AS live \
     FROM threads t WHERE t.id = ?";
/// A thread's entry for the thread list: listed threads only.
const LISTED_THREAD_SUMMARY: &str = "SELECT t.id, t.title, t.last_activity_at, \
     (SELECT COUNT(*) FROM messages m WHERE m.thread_id = t.id AND m.status = 'streaming') AS live \
     FROM threads t WHERE t.id = ? AND t.listed = 1";

/// Search over listed threads (public so a test can `EXPLAIN QUERY PLAN`
/// it): the FTS5 index finds the rows, newest first by its rowid (the
/// message id); threads and messages are looked up by primary key.
pub const SEARCH_LISTED: &str = "SELECT m.id, m.thread_id, t.title AS thread_title, m.author, \
     m.role, m.created_at, m.body FROM messages_fts f \
     JOIN messages m ON m.id = f.rowid JOIN threads t ON t.id = m.thread_id \
     WHERE messages_fts MATCH ?1 AND t.listed = 1 AND f.rowid < ?2 \
     ORDER BY f.rowid DESC LIMIT ?3";
/// Search within one thread, listed or not.
pub const SEARCH_THREAD: &str = "SELECT m.id, m.thread_id, t.title AS thread_title, m.author, \
     m.role, m.created_at, m.body FROM messages_fts f \
     JOIN messages m ON m.id = f.rowid JOIN threads t ON t.id = m.thread_id \
     WHERE messages_fts MATCH ?1 AND m.thread_id = ?2 AND f.rowid < ?3 \
     ORDER BY f.rowid DESC LIMIT ?4";

#[derive(Clone, Debug)]
pub struct SqliteStore {
    /// Readers' connections.
    pool: SqlitePool,
    /// The writer's one connection (see [`WriterConnection`]); only the
    /// writer task (and start-up recovery, before it) uses it.
    writer: std::sync::Arc<tokio::sync::Mutex<WriterConnection>>,
    path: std::path::PathBuf,
    /// Whether a batch of nothing but text is one lone `INSERT`.
    append_lane: bool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and runs the embedded migrations.
    /// `append_lane`: a batch of nothing but text goes on the writer's own
    /// connection (see [`WriterConnection`]); off, through a transaction.
    pub async fn open(path: &Path, append_lane: bool) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        // The page size is chosen once, for a new file; an existing
        // database keeps its own (WAL mode cannot change it), and is not
        // asked to change (`page_size.rs` tests both).
        let new_file = std::fs::metadata(path).map_or(true, |m| m.len() == 0);
        let writer_options = if new_file {
            options.clone().page_size(PAGE_SIZE)
        } else {
            options.clone()
        };
        let mut conn = SqliteConnection::connect_with(&writer_options).await?;
        sqlx::migrate!("./migrations").run(&mut conn).await?;
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            // A local file: a ping before each use would only cost a round
            // trip to the connection's worker thread.
            .test_before_acquire(false)
            .connect_with(options)
            .await?;
        let appends = open_appends(path)?;
        let last_rev = max_rev(&mut conn).await?;
        Ok(Self {
            pool,
            writer: std::sync::Arc::new(tokio::sync::Mutex::new(WriterConnection::new(
                conn, appends, last_rev,
            ))),
            path: path.to_owned(),
            append_lane,
        })
    }

    /// See `Store::cap_pages_for_tests`: `PRAGMA max_page_count` is a
    /// per-connection setting, so it is set on every reader's connection
    /// (all held at once) and on the writer's two.
    pub async fn cap_pages(&self, pages: Option<i64>) {
        let mut held = Vec::new();
        for _ in 0..self.pool.options().get_max_connections() {
            held.push(self.pool.acquire().await.expect("a reader's connection"));
        }
        let mut writer = self.writer_connection().await;
        let mut connections: Vec<&mut SqliteConnection> =
            held.iter_mut().map(|c| &mut **c).collect();
        connections.push(&mut writer.conn);
        for conn in connections {
            let pages = match pages {
                Some(pages) => pages,
                None => sqlx::query_scalar("PRAGMA page_count")
                    .fetch_one(&mut *conn)
                    .await
                    .expect("page count"),
            };
            sqlx::query(&format!("PRAGMA max_page_count = {pages}"))
                .execute(&mut *conn)
                .await
                .expect("max page count");
        }
        // The writer's append connection (driven without sqlx).
        let appends = &writer.appends;
        let pages: i64 = match pages {
            Some(pages) => pages,
            None => appends
                .query_row("PRAGMA page_count", [], |row| row.get(0))
                .expect("page count"),
        };
        appends
            .query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))
            .expect("max page count");
    }

    /// Whether a batch of nothing but text is one lone `INSERT`.
    pub fn append_lane(&self) -> bool {
        self.append_lane
    }

    /// The writer's connection, waiting while the writer uses it (tests
    /// inject faults through it).
    pub async fn writer_connection(&self) -> tokio::sync::OwnedMutexGuard<WriterConnection> {
        let mut writer = self.writer.clone().lock_owned().await;
        writer.settle().await;
        writer
    }

    /// Opens a write transaction on the writer's connection (`BEGIN
    /// IMMEDIATE`: it takes the write lock at once).
    pub async fn begin(&self) -> Result<SqliteTx, sqlx::Error> {
        SqliteTx::begin(self.writer_connection().await).await
    }

    /// Whether the operating system lets this process write the database
    /// file now (`access(2)`: permissions and read-only mounts). Whether
    /// commits succeed is the writer's ping.
    ///
    /// The file is never opened here: closing any descriptor of a file
    /// drops every POSIX lock this process holds on it, SQLite's included,
    /// and another process's SQLite (a backup, an operator's `sqlite3`)
    /// would then believe it is the last one open, checkpoint and delete
    /// the WAL under the running server.
    pub fn probe_write(&self) -> std::io::Result<()> {
        use std::os::unix::ffi::OsStrExt;
        let path = std::ffi::CString::new(self.path.as_os_str().as_bytes())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        // SAFETY: `path` is a valid NUL-terminated string for the call.
        if unsafe { libc::access(path.as_ptr(), libc::W_OK) } == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
}

/// The highest revision stamped so far (on a message or a log row): the
/// writer's counter continues after it.
async fn max_rev(conn: &mut SqliteConnection) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT MAX((SELECT COALESCE(MAX(rev), 0) FROM messages), \
         (SELECT COALESCE(MAX(rev), 0) FROM reply_log))",
    )
    .fetch_one(conn)
    .await
}

/// The revision a thread is current to: its messages' and its streaming
/// replies' log rows'.
async fn thread_rev(conn: &mut SqliteConnection, thread_id: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(&format!(
        "SELECT MAX(r) FROM (\
         SELECT COALESCE(MAX(rev), 0) AS r FROM messages WHERE thread_id = ?1 \
         UNION ALL SELECT {LAST_LOG_REV} FROM messages m \
         WHERE m.thread_id = ?1 AND m.status = 'streaming')"
    ))
    .bind(thread_id)
    .fetch_one(conn)
    .await
}

super::accounts::account_statements!(SqliteStore, sqlx::Sqlite);
super::members::member_statements!(SqliteStore, sqlx::Sqlite);
super::sign_ins::sign_in_statements!(SqliteStore, sqlx::Sqlite);

impl Storage for SqliteStore {
    async fn all_messages(&self, thread_id: &str) -> Result<Vec<Message>, sqlx::Error> {
        sqlx::query_as(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE thread_id = ? ORDER BY id"
        ))
        .bind(thread_id)
        .fetch_all(&self.pool)
        .await
    }

    async fn changed_page(
        &self,
        thread_id: &str,
        since: Option<i64>,
        after: i64,
        limit: i64,
        max_bytes: i64,
    ) -> Result<Vec<Message>, sqlx::Error> {
        let filter = match since {
            Some(_) => format!("(m.rev > ?5 OR (m.status = 'streaming' AND {LAST_LOG_REV} > ?5))"),
            None => "m.status = 'streaming'".to_owned(),
        };
        // A row is in the page while the rows before it hold less than
        // `max_bytes` (so a page is at most that plus one row).
        let size = "length(CAST(m.body AS BLOB)) + length(CAST(m.thinking AS BLOB)) \
                    + length(CAST(m.tools AS BLOB))";
        let query = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE id IN (\
             SELECT id FROM (SELECT m.id AS id, SUM({size}) OVER (ORDER BY m.id) - ({size}) AS before \
             FROM messages m WHERE m.thread_id = ?1 AND m.id > ?2 AND {filter} \
             ORDER BY m.id LIMIT ?3) WHERE before < ?4) ORDER BY id"
        );
        let mut select = sqlx::query_as(&query)
            .bind(thread_id)
            .bind(after)
            .bind(limit)
            .bind(max_bytes);
        if let Some(since) = since {
            select = select.bind(since);
        }
        select.fetch_all(&self.pool).await
    }

    async fn close(&self) {
        self.pool.close().await;
    }

    async fn context(
        &self,
        thread_id: &str,
        before_id: i64,
        limit: u32,
    ) -> Result<Vec<Message>, sqlx::Error> {
        let mut messages: Vec<Message> = sqlx::query_as(&format!(
            "SELECT * FROM (SELECT {MESSAGE_COLUMNS} FROM messages \
             WHERE thread_id = ? AND id < ? ORDER BY id DESC) WHERE body <> '' LIMIT ?"
        ))
        .bind(thread_id)
        .bind(before_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        messages.reverse();
        Ok(messages)
    }

    async fn create_thread(&self, id: &str, title: &str, listed: bool) -> Result<(), sqlx::Error> {
        let now = crate::server::now_ms();
        sqlx::query(
            "INSERT INTO threads (id, title, listed, created_at, last_activity_at) \
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(id)
        .bind(title)
        .bind(listed)
        .bind(now)
        .bind(now)
        .execute(&self.pool)
        .await
        .map(drop)
    }

    async fn decide_tool_call(&self, d: &ToolDecision) -> Result<bool, sqlx::Error> {
        sqlx::query(
            "INSERT INTO tool_decisions \
             (message_id, call_index, round, arguments_hash, approved, decided_by, decided_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(d.message_id)
        .bind(i64::from(d.call_index))
        .bind(i64::from(d.round))
        .bind(&d.arguments_hash)
        .bind(d.approved)
        .bind(&d.decided_by)
        .bind(d.decided_at)
        .execute(&self.pool)
        .await
        .map(|done| done.rows_affected() == 1)
    }

    async fn interrupt_streaming(&self) -> Result<u64, sqlx::Error> {
        let now = crate::server::now_ms();
        let mut tx = self.begin().await?;
        let rev = tx.next_rev();
        let interrupted = sqlx::query(&format!(
            "UPDATE messages SET status = 'interrupted', body = body || {}, thinking = thinking || {}, \
             tools = tools || {}, error = ?, notice = NULL, \
             finished_at = ?, updated_at = ?, rev = ? WHERE status = 'streaming'",
            log_text!(0),
            log_text!(1),
            log_text!(2)
        ))
        .bind(crate::model::SERVER_STOPPED)
        .bind(now)
        .bind(now)
        .bind(rev)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        // Nothing streams now: every row left is a finished reply's.
        sqlx::query("DELETE FROM reply_log")
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(interrupted)
    }

    async fn latest(&self, thread_id: &str, limit: i64) -> Result<Snapshot, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let mut messages: Vec<Message> = sqlx::query_as(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE thread_id = ? ORDER BY id DESC LIMIT ?"
        ))
        .bind(thread_id)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        messages.reverse();
        let rev = thread_rev(&mut tx, thread_id).await?;
        tx.commit().await?;
        Ok(Snapshot { messages, rev })
    }

    async fn list_threads(&self, limit: i64) -> Result<Vec<ThreadSummary>, sqlx::Error> {
        sqlx::query_as(LIST_THREADS)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
    }

    async fn listed_summary(&self, id: &str) -> Result<Option<ThreadSummary>, sqlx::Error> {
        sqlx::query_as(LISTED_THREAD_SUMMARY)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
    }

    async fn log_rows(&self, id: i64) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar(concat!("SELECT COUNT(*) FROM ", log_of!("?1")))
            .bind(id)
            .fetch_one(&self.pool)
            .await
    }

    async fn message(&self, thread_id: &str, id: i64) -> Result<Option<Message>, sqlx::Error> {
        sqlx::query_as(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = ? AND thread_id = ?"
        ))
        .bind(id)
        .bind(thread_id)
        .fetch_optional(&self.pool)
        .await
    }

    async fn messages_after(
        &self,
        thread_id: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<Message>, sqlx::Error> {
        sqlx::query_as(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE thread_id = ? AND id > ? ORDER BY id LIMIT ?"
        ))
        .bind(thread_id)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
    }

    async fn messages_before(
        &self,
        thread_id: &str,
        before: i64,
        limit: i64,
    ) -> Result<(Vec<Message>, bool), sqlx::Error> {
        let messages: Vec<Message> = sqlx::query_as(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE thread_id = ? AND id < ? ORDER BY id DESC LIMIT ?"
        ))
        .bind(thread_id)
        .bind(before)
        .bind(limit + 1)
        .fetch_all(&self.pool)
        .await?;
        Ok(super::oldest_first_page(messages, limit))
    }

    async fn posted_by_request(
        &self,
        thread_id: &str,
        request_id: &str,
    ) -> Result<Option<Posted>, sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        writes::posted_by_request(&mut conn, thread_id, request_id).await
    }

    async fn rename_thread(&self, id: &str, title: &str) -> Result<bool, sqlx::Error> {
        sqlx::query("UPDATE threads SET title = ? WHERE id = ?")
            .bind(title)
            .bind(id)
            .execute(&self.pool)
            .await
            .map(|done| done.rows_affected() == 1)
    }

    async fn search(
        &self,
        terms: &[String],
        scope: SearchScope<'_>,
        before: i64,
        limit: i64,
    ) -> Result<Vec<FoundMessage>, sqlx::Error> {
        let query = crate::search::fts5_query(terms);
        match scope {
            SearchScope::Listed => sqlx::query_as::<_, FoundMessage>(SEARCH_LISTED).bind(query),
            SearchScope::Thread(thread) => sqlx::query_as::<_, FoundMessage>(SEARCH_THREAD)
                .bind(query)
                .bind(thread),
        }
        .bind(before)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
    }

    async fn set_thread_granularity(
        &self,
        id: &str,
        granularity: Option<Granularity>,
    ) -> Result<bool, sqlx::Error> {
        sqlx::query("UPDATE threads SET granularity = ? WHERE id = ?")
            .bind(granularity.map(Granularity::as_str))
            .bind(id)
            .execute(&self.pool)
            .await
            .map(|r| r.rows_affected() == 1)
    }

    async fn thread(&self, id: &str) -> Result<Option<Thread>, sqlx::Error> {
        sqlx::query_as("SELECT id, title, listed FROM threads WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
    }

    async fn thread_granularity(&self, id: &str) -> Result<Option<Granularity>, sqlx::Error> {
        let value: Option<Option<String>> =
            sqlx::query_scalar("SELECT granularity FROM threads WHERE id = ?")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(value.flatten().as_deref().and_then(Granularity::parse))
    }

    async fn thread_rev(&self, thread_id: &str) -> Result<i64, sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        thread_rev(&mut conn, thread_id).await
    }

    async fn thread_summary(&self, id: &str) -> Result<Option<ThreadSummary>, sqlx::Error> {
        sqlx::query_as(THREAD_SUMMARY)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
    }

    async fn tool_decision(
        &self,
        message_id: i64,
        call_index: u32,
        round: u32,
    ) -> Result<Option<ToolDecision>, sqlx::Error> {
        sqlx::query_as(
            "SELECT message_id, call_index, round, arguments_hash, approved, decided_by, \
             decided_at FROM tool_decisions WHERE message_id = ? AND call_index = ? AND round = ?",
        )
        .bind(message_id)
        .bind(i64::from(call_index))
        .bind(i64::from(round))
        .fetch_optional(&self.pool)
        .await
    }

    async fn usage_totals(&self, thread_id: &str) -> Result<UsageTotals, sqlx::Error> {
        let by_author: Vec<AuthorUsage> = sqlx::query_as(
            "SELECT requested_by AS author, COALESCE(SUM(prompt_tokens), 0) AS prompt_tokens, \
             COALESCE(SUM(completion_tokens), 0) AS completion_tokens, COUNT(*) AS replies \
             FROM messages WHERE thread_id = ? AND role = 'assistant' AND requested_by IS NOT NULL \
             GROUP BY requested_by ORDER BY requested_by",
        )
        .bind(thread_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(UsageTotals::from_authors(by_author))
    }
}
