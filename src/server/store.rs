//! All SQL lives here: the pool, migrations, reads, and the statements the
//! writer runs inside its transactions.
//!
//! SQLite runs in WAL mode: readers never block the single writer and see a
//! consistent snapshot; `synchronous = NORMAL` keeps every committed
//! transaction across a process crash (`kill -9`), which is what the
//! write-ahead invariant needs.

use std::{path::Path, str::FromStr, time::Duration};

use sqlx::{
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
    SqliteConnection, SqlitePool,
};

use crate::model::{
    AuthorUsage, Granularity, Message, Posted, ReplyStats, Role, Status, Thread, ThreadSummary,
    UsageTotals,
};

const MESSAGE_COLUMNS: &str = "id, thread_id, author, role, body, status, error, finish_reason, \
     model, created_at, updated_at, finished_at, prompt_tokens, completion_tokens, rev, \
     requested_by, context_before, stopped_by, notice, retries, usage_estimated, ttft_ms, \
     tokens_per_second";

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

#[derive(Clone, Debug)]
pub struct Store {
    pool: SqlitePool,
    path: std::path::PathBuf,
}

/// Rows a subscriber must (re)load, and the revision they bring it to.
#[derive(Debug)]
pub struct Snapshot {
    pub messages: Vec<Message>,
    pub rev: i64,
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

/// How a reply ended, as the writer stores it.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub status: Status,
    pub error: Option<String>,
    pub finish_reason: Option<String>,
    pub stopped_by: Option<String>,
    pub stats: ReplyStats,
}

impl Store {
    /// Opens (creating if needed) the database file and runs the embedded migrations.
    pub async fn open(path: &Path) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Self {
            pool,
            path: path.to_owned(),
        })
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Whether the operating system lets this process write the database
    /// file now. (A new SQLite connection would not tell: in one process
    /// SQLite reuses file handles opened before the change.) Whether
    /// commits succeed is the writer's ping.
    pub fn probe_write(&self) -> std::io::Result<()> {
        std::fs::OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map(drop)
    }

    /// The thread, or the 404 a request naming a missing one gets.
    pub async fn existing_thread(&self, id: &str) -> Result<Thread, crate::error::AppError> {
        self.thread(id)
            .await?
            .ok_or_else(|| crate::error::AppError::no_thread(id))
    }

    pub async fn thread(&self, id: &str) -> Result<Option<Thread>, sqlx::Error> {
        sqlx::query_as("SELECT id, title, listed FROM threads WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
    }

    pub async fn create_thread(
        &self,
        id: &str,
        title: &str,
        listed: bool,
    ) -> Result<(), sqlx::Error> {
        let now = super::now_ms();
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

    /// Renames a thread; false if there is no such thread.
    pub async fn rename_thread(&self, id: &str, title: &str) -> Result<bool, sqlx::Error> {
        sqlx::query("UPDATE threads SET title = ? WHERE id = ?")
            .bind(title)
            .bind(id)
            .execute(&self.pool)
            .await
            .map(|done| done.rows_affected() == 1)
    }

    /// Threads by last activity, newest first, with their streaming replies
    /// counted (`idx_threads_activity`, `idx_messages_live`).
    pub async fn list_threads(&self, limit: i64) -> Result<Vec<ThreadSummary>, sqlx::Error> {
        sqlx::query_as(LIST_THREADS)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
    }

    pub async fn thread_summary(&self, id: &str) -> Result<Option<ThreadSummary>, sqlx::Error> {
        sqlx::query_as(THREAD_SUMMARY)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
    }

    /// A thread's entry for the thread list; `None` for an unlisted thread.
    pub async fn listed_summary(&self, id: &str) -> Result<Option<ThreadSummary>, sqlx::Error> {
        sqlx::query_as(LISTED_THREAD_SUMMARY)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
    }

    /// Up to `limit` messages of a thread older than message `before`,
    /// oldest first, and whether older ones remain. Keyed on the id (a
    /// cursor), so rows added meanwhile never shift a page.
    pub async fn messages_before(
        &self,
        thread_id: &str,
        before: i64,
        limit: i64,
    ) -> Result<(Vec<Message>, bool), sqlx::Error> {
        let mut messages: Vec<Message> = sqlx::query_as(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE thread_id = ? AND id < ? ORDER BY id DESC LIMIT ?"
        ))
        .bind(thread_id)
        .bind(before)
        .bind(limit + 1)
        .fetch_all(&self.pool)
        .await?;
        let more = messages.len() as i64 > limit;
        messages.truncate(limit as usize);
        messages.reverse();
        Ok((messages, more))
    }

    /// Every message of a thread, oldest first (export).
    pub async fn all_messages(&self, thread_id: &str) -> Result<Vec<Message>, sqlx::Error> {
        sqlx::query_as(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE thread_id = ? ORDER BY id"
        ))
        .bind(thread_id)
        .fetch_all(&self.pool)
        .await
    }

    /// Message `id` of thread `thread_id`; `None` when there is no such
    /// message in that thread (a message is only ever read through its thread).
    pub async fn message(&self, thread_id: &str, id: i64) -> Result<Option<Message>, sqlx::Error> {
        sqlx::query_as(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = ? AND thread_id = ?"
        ))
        .bind(id)
        .bind(thread_id)
        .fetch_optional(&self.pool)
        .await
    }

    /// The user message a post with `request_id` stored in the thread, and
    /// the replies it started (a retried post answers with these).
    pub async fn posted_by_request(
        &self,
        thread_id: &str,
        request_id: &str,
    ) -> Result<Option<Posted>, sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        posted_by_request(&mut conn, thread_id, request_id).await
    }

    /// The latest `limit` messages of a thread, oldest first, read in one
    /// transaction with the revision they are current to.
    pub async fn latest(&self, thread_id: &str, limit: i64) -> Result<Snapshot, sqlx::Error> {
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

    /// What a subscriber needs on (re)connecting: every row of the thread
    /// changed after `since`, or without `since` the replies still streaming.
    pub async fn snapshot(
        &self,
        thread_id: &str,
        since: Option<i64>,
    ) -> Result<Snapshot, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let query = match since {
            Some(_) => format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages WHERE thread_id = ? AND rev > ? ORDER BY id"
            ),
            None => format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages WHERE thread_id = ? AND status = 'streaming' ORDER BY id"
            ),
        };
        let messages = sqlx::query_as(&query)
            .bind(thread_id)
            .bind(since.unwrap_or_default())
            .fetch_all(&mut *tx)
            .await?;
        let rev = thread_rev(&mut tx, thread_id).await?;
        tx.commit().await?;
        Ok(Snapshot { messages, rev })
    }

    /// The prompt context for a reply: the thread's most recent `limit`
    /// messages before it, oldest first, without empty placeholders.
    pub async fn context(
        &self,
        thread_id: &str,
        before_id: i64,
        limit: u32,
    ) -> Result<Vec<Message>, sqlx::Error> {
        let mut messages: Vec<Message> = sqlx::query_as(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages \
             WHERE thread_id = ? AND id < ? AND body <> '' ORDER BY id DESC LIMIT ?"
        ))
        .bind(thread_id)
        .bind(before_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        messages.reverse();
        Ok(messages)
    }

    /// A thread's own granularity, if it overrides the configured one.
    pub async fn thread_granularity(&self, id: &str) -> Result<Option<Granularity>, sqlx::Error> {
        let value: Option<Option<String>> =
            sqlx::query_scalar("SELECT granularity FROM threads WHERE id = ?")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(value.flatten().as_deref().and_then(Granularity::parse))
    }

    /// Sets (or, with `None`, clears) a thread's own granularity; false if
    /// there is no such thread.
    pub async fn set_thread_granularity(
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

    /// Tokens used by a thread's replies, in total and per asking author.
    pub async fn usage_totals(&self, thread_id: &str) -> Result<UsageTotals, sqlx::Error> {
        let by_author: Vec<AuthorUsage> = sqlx::query_as(
            "SELECT requested_by AS author, COALESCE(SUM(prompt_tokens), 0) AS prompt_tokens, \
             COALESCE(SUM(completion_tokens), 0) AS completion_tokens, COUNT(*) AS replies \
             FROM messages WHERE thread_id = ? AND role = 'assistant' AND requested_by IS NOT NULL \
             GROUP BY requested_by ORDER BY requested_by",
        )
        .bind(thread_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(UsageTotals {
            prompt_tokens: by_author.iter().map(|a| a.prompt_tokens).sum(),
            completion_tokens: by_author.iter().map(|a| a.completion_tokens).sum(),
            replies: by_author.iter().map(|a| a.replies).sum(),
            by_author,
        })
    }

    /// The highest revision stamped so far; the writer continues after it.
    pub async fn max_rev(&self) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar("SELECT COALESCE(MAX(rev), 0) FROM messages")
            .fetch_one(&self.pool)
            .await
    }

    /// Start-up recovery: replies a crash left `streaming` become
    /// `interrupted`, their text kept. Runs before the writer starts.
    pub async fn interrupt_streaming(&self, rev: i64) -> Result<u64, sqlx::Error> {
        let now = super::now_ms();
        sqlx::query(
            "UPDATE messages SET status = 'interrupted', \
             error = 'The server stopped while this reply was being written.', notice = NULL, \
             finished_at = ?, updated_at = ?, rev = ? WHERE status = 'streaming'",
        )
        .bind(now)
        .bind(now)
        .bind(rev)
        .execute(&self.pool)
        .await
        .map(|r| r.rows_affected())
    }
}

async fn thread_rev(conn: &mut SqliteConnection, thread_id: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COALESCE(MAX(rev), 0) FROM messages WHERE thread_id = ?")
        .bind(thread_id)
        .fetch_one(conn)
        .await
}

// Statements for the writer, run inside its group-commit transaction.

/// Whether the database can grow: puts the storage reserve back if it was
/// used, and writes a few pages into `write_probe`, undone. Fails when the
/// database cannot grow (disk full, `max_page_count`).
pub async fn probe_growth(conn: &mut SqliteConnection) -> Result<(), sqlx::Error> {
    sqlx::query(&format!(
        "INSERT OR IGNORE INTO storage_reserve (id, data) VALUES (1, zeroblob({RESERVE_BYTES}))"
    ))
    .execute(&mut *conn)
    .await?;
    sqlx::query("SAVEPOINT probe").execute(&mut *conn).await?;
    sqlx::query("INSERT INTO write_probe (data) VALUES (zeroblob(16384))")
        .execute(&mut *conn)
        .await?;
    sqlx::query("ROLLBACK TO probe").execute(&mut *conn).await?;
    sqlx::query("RELEASE probe").execute(conn).await.map(drop)
}

/// Size of the storage reserve (see the migration creating it).
const RESERVE_BYTES: usize = 1 << 20;

/// Frees the storage reserve's pages for use (deleting needs no new page).
pub async fn release_reserve(conn: &mut SqliteConnection) -> Result<bool, sqlx::Error> {
    sqlx::query("DELETE FROM storage_reserve")
        .execute(conn)
        .await
        .map(|done| done.rows_affected() > 0)
}

pub async fn message_in(
    conn: &mut SqliteConnection,
    thread_id: &str,
    id: i64,
) -> Result<Option<Message>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = ? AND thread_id = ?"
    ))
    .bind(id)
    .bind(thread_id)
    .fetch_optional(conn)
    .await
}

/// See [`Store::posted_by_request`].
pub async fn posted_by_request(
    conn: &mut SqliteConnection,
    thread_id: &str,
    request_id: &str,
) -> Result<Option<Posted>, sqlx::Error> {
    let message: Option<Message> = sqlx::query_as(&format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE thread_id = ? AND request_id = ?"
    ))
    .bind(thread_id)
    .bind(request_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(message) = message else {
        return Ok(None);
    };
    let replies = sqlx::query_as(&format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE reply_to = ? ORDER BY id"
    ))
    .bind(message.id)
    .fetch_all(conn)
    .await?;
    Ok(Some(Posted {
        message,
        replies,
        repeated: true,
    }))
}

pub async fn thread_exists(conn: &mut SqliteConnection, id: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar::<_, i64>("SELECT 1 FROM threads WHERE id = ?")
        .bind(id)
        .fetch_optional(conn)
        .await
        .map(|row| row.is_some())
}

pub async fn insert_message(
    conn: &mut SqliteConnection,
    new: &NewMessage<'_>,
    now: i64,
    rev: i64,
) -> Result<Message, sqlx::Error> {
    let message = sqlx::query_as(&format!(
        "INSERT INTO messages (thread_id, author, role, body, status, model, created_at, updated_at, \
         rev, requested_by, context_before, request_id, reply_to) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING {MESSAGE_COLUMNS}"
    ))
    .bind(new.thread_id)
    .bind(new.author)
    .bind(new.role)
    .bind(new.body)
    .bind(new.status)
    .bind(new.model)
    .bind(now)
    .bind(now)
    .bind(rev)
    .bind(new.requested_by)
    .bind(new.context_before)
    .bind(new.request_id)
    .bind(new.reply_to)
    .fetch_one(&mut *conn)
    .await?;
    sqlx::query("UPDATE threads SET last_activity_at = ? WHERE id = ?")
        .bind(now)
        .bind(new.thread_id)
        .execute(conn)
        .await?;
    Ok(message)
}

/// Appends to several streaming replies in one statement: `(id, text, rev)`
/// each, ids distinct. Returns the ids that were still streaming.
pub async fn append_many(
    conn: &mut SqliteConnection,
    rows: &[(i64, &str, i64)],
    now: i64,
) -> Result<Vec<i64>, sqlx::Error> {
    let values = vec!["(?, ?, ?)"; rows.len()].join(", ");
    let sql = format!(
        "UPDATE messages SET body = body || v.column2, rev = v.column3, updated_at = ? \
         FROM (VALUES {values}) AS v \
         WHERE messages.id = v.column1 AND messages.status = 'streaming' RETURNING messages.id"
    );
    let mut query = sqlx::query_scalar(&sql).bind(now);
    for (id, text, rev) in rows {
        query = query.bind(*id).bind(*text).bind(*rev);
    }
    query.fetch_all(conn).await
}

/// The body's length in bytes.
pub async fn body_len(conn: &mut SqliteConnection, id: i64) -> Result<usize, sqlx::Error> {
    sqlx::query_scalar::<_, i64>("SELECT length(CAST(body AS BLOB)) FROM messages WHERE id = ?")
        .bind(id)
        .fetch_optional(conn)
        .await
        .map(|len| len.unwrap_or_default() as usize)
}

/// Ends a streaming reply; returns its final body, or `None` if it had
/// already ended.
pub async fn finish(
    conn: &mut SqliteConnection,
    id: i64,
    outcome: &Outcome,
    now: i64,
    rev: i64,
) -> Result<Option<String>, sqlx::Error> {
    let stats = &outcome.stats;
    sqlx::query_scalar(
        "UPDATE messages SET status = ?, error = ?, finish_reason = ?, stopped_by = ?, \
         prompt_tokens = ?, completion_tokens = ?, usage_estimated = ?, ttft_ms = ?, \
         tokens_per_second = ?, retries = ?, notice = NULL, finished_at = ?, updated_at = ?, rev = ? \
         WHERE id = ? AND status = 'streaming' RETURNING body",
    )
    .bind(outcome.status)
    .bind(outcome.error.as_deref())
    .bind(outcome.finish_reason.as_deref())
    .bind(outcome.stopped_by.as_deref())
    .bind(stats.usage.map(|u| u.prompt_tokens))
    .bind(stats.usage.map(|u| u.completion_tokens))
    .bind(stats.usage.is_some_and(|u| u.estimated))
    .bind(stats.ttft_ms)
    .bind(stats.tokens_per_second)
    .bind(stats.retries)
    .bind(now)
    .bind(now)
    .bind(rev)
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// Sets the passing note of a streaming reply; false if it is not streaming.
pub async fn set_notice(
    conn: &mut SqliteConnection,
    id: i64,
    notice: Option<&str>,
    retries: i64,
    now: i64,
    rev: i64,
) -> Result<bool, sqlx::Error> {
    sqlx::query(
        "UPDATE messages SET notice = ?, retries = ?, updated_at = ?, rev = ? \
         WHERE id = ? AND status = 'streaming'",
    )
    .bind(notice)
    .bind(retries)
    .bind(now)
    .bind(rev)
    .bind(id)
    .execute(conn)
    .await
    .map(|r| r.rows_affected() == 1)
}

/// Puts a reply that was cut short back to `streaming` (Continue), keeping
/// its text; `None` if it is not in a state that can continue.
pub async fn reopen(
    conn: &mut SqliteConnection,
    id: i64,
    requested_by: &str,
    now: i64,
    rev: i64,
) -> Result<Option<Message>, sqlx::Error> {
    sqlx::query_as(&format!(
        "UPDATE messages SET status = 'streaming', error = NULL, finish_reason = NULL, \
         stopped_by = NULL, notice = NULL, finished_at = NULL, requested_by = ?, updated_at = ?, rev = ? \
         WHERE id = ? AND status IN ('interrupted', 'timed_out', 'cancelled') RETURNING {MESSAGE_COLUMNS}"
    ))
    .bind(requested_by)
    .bind(now)
    .bind(rev)
    .bind(id)
    .fetch_optional(conn)
    .await
}
