//! The PostgreSQL backend, for several instances on one database: the pool,
//! migrations (`migrations/postgres/`) and reads; [`writes`] has the
//! statements the writer runs in its transactions, [`cluster`] what only
//! several instances need (leases, wake-ups, the shared `@gpt` limit, the
//! rows a wake-up reads).
//!
//! The same append-only log as SQLite: a streaming reply's text is its body
//! followed by its `reply_log` rows in `seq` order, written into the body
//! once when it ends. Revisions are per thread (`threads.rev`), allocated
//! by the committing transaction under the thread row's lock.

pub(super) mod writes;

use std::time::Duration;

use sqlx::{
    postgres::{PgConnectOptions, PgPoolOptions},
    Connection, PgConnection, PgPool,
};

use super::{SearchScope, Snapshot, Storage, ToolDecision};
use crate::model::{AuthorUsage, Granularity, Message, Posted, Thread, ThreadSummary, UsageTotals};
use crate::search::FoundMessage;

pub use writes::PgTx;

/// The message columns with `$body` for the text and `$rev` for the revision.
macro_rules! pg_message_columns {
    ($body:expr, $thinking:expr, $tools:expr, $rev:expr) => {
        concat!(
            "messages.id, messages.thread_id, author, role, ",
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

/// Every read of a message returns its text: the body and, for a streaming
/// reply, its log rows after it; and its revision, its last log row's when
/// newer. (A finished reply's log rows stay a little while after its text
/// went into its body, so that wake-ups read them; see [`PostgresStore::prune_log`].)
pub(super) const MESSAGE_COLUMNS: &str = pg_message_columns!(
    "CASE WHEN messages.status = 'streaming' THEN messages.body || \
     COALESCE((SELECT string_agg(l.text, '' ORDER BY l.seq) FROM reply_log l \
     WHERE l.message_id = messages.id AND l.part = 0), '') ELSE messages.body END AS body",
    "CASE WHEN messages.status = 'streaming' THEN messages.thinking || \
     COALESCE((SELECT string_agg(l.text, '' ORDER BY l.seq) FROM reply_log l \
     WHERE l.message_id = messages.id AND l.part = 1), '') ELSE messages.thinking END AS thinking",
    "CASE WHEN messages.status = 'streaming' THEN messages.tools || \
     COALESCE((SELECT string_agg(l.text, '' ORDER BY l.seq) FROM reply_log l \
     WHERE l.message_id = messages.id AND l.part = 2), '') ELSE messages.tools END AS tools",
    "CASE WHEN messages.status = 'streaming' THEN GREATEST(messages.rev, \
     COALESCE((SELECT MAX(l.rev) FROM reply_log l WHERE l.message_id = messages.id), 0)) \
     ELSE messages.rev END AS rev"
);

/// How long a finished reply's log rows are kept for wake-ups to read.
const LOG_KEPT_MS: i64 = 30_000;
/// For `RETURNING` after a write that leaves the log as it was.
pub(super) const STORED_COLUMNS: &str = pg_message_columns!(
    "messages.body",
    "messages.thinking",
    "messages.tools",
    "messages.rev"
);

const SUMMARY: &str = "SELECT t.id, t.title, t.last_activity_at, \
     (SELECT COUNT(*) FROM messages m WHERE m.thread_id = t.id AND m.status = 'streaming') AS live \
     FROM threads t";

/// Search over listed threads (public so a test can `EXPLAIN` it): the
/// condition is `idx_messages_search`'s expression and predicate, so the
/// GIN index finds the rows. The terms are plain words (`plainto_tsquery`:
/// all of them required, no query syntax).
pub const SEARCH_LISTED: &str = "SELECT m.id, m.thread_id, t.title AS thread_title, m.author, \
     m.role, m.created_at, m.body FROM messages m JOIN threads t ON t.id = m.thread_id \
     WHERE to_tsvector('simple', m.body) @@ plainto_tsquery('simple', $1) \
     AND m.status <> 'streaming' AND t.listed AND m.id < $2 \
     ORDER BY m.id DESC LIMIT $3";
/// Search within one thread, listed or not.
pub const SEARCH_THREAD: &str = "SELECT m.id, m.thread_id, t.title AS thread_title, m.author, \
     m.role, m.created_at, m.body FROM messages m JOIN threads t ON t.id = m.thread_id \
     WHERE to_tsvector('simple', m.body) @@ plainto_tsquery('simple', $1) \
     AND m.status <> 'streaming' AND m.thread_id = $2 AND m.id < $3 \
     ORDER BY m.id DESC LIMIT $4";

/// Who this instance is and how long its leases last.
#[derive(Clone, Debug)]
pub struct Lease {
    /// This instance's name in `lease_owner` (unique per process).
    pub owner: std::sync::Arc<str>,
    pub ttl: Duration,
}

/// Two pools, so that reads never starve commits: `pool` is the writer's
/// and coordination's (leases, wake-up reads, Stop, shared limits), a few
/// connections no request can hold; `reads` serves every request's reads,
/// each statement cancelled after the read timeout. A flood of slow reads
/// queues for `reads` and slows reads only.
#[derive(Clone, Debug)]
pub struct PostgresStore {
    pool: PgPool,
    reads: PgPool,
    lease: Lease,
    /// Every instance's listener reads this instance's commits back (set
    /// by coordination): a commit then NOTIFYs the threads it moved, and a
    /// finished reply's log rows are kept for the listeners (pruned later).
    listened: bool,
    /// The connection holding this instance's claim on the database (an
    /// advisory lock: exclusive for a lone instance, shared in a cluster),
    /// so that a lone instance and any other never run on one database.
    claim: std::sync::Arc<tokio::sync::Mutex<Option<PgConnection>>>,
}

/// The advisory lock key of an instance's claim on the database.
const CLAIM_KEY: i64 = 0x5354_5245_414d_4348;

/// Connections of the writer's and coordination's pool.
pub const WRITER_CONNECTIONS: u32 = 3;

impl PostgresStore {
    /// Connects and runs the migrations (sqlx holds an advisory lock while
    /// it migrates, so instances starting together migrate once).
    pub async fn open(
        url: &str,
        lease: Lease,
        max_connections: u32,
        read_timeout: Duration,
        listened: bool,
    ) -> anyhow::Result<Self> {
        let options: PgConnectOptions = url.parse()?;
        // A session left idle inside a transaction (its process stopped by
        // SIGSTOP, say) would hold a thread's lock and block every other
        // instance's commits to it: PostgreSQL ends such a session after a
        // fraction of the lease, so another instance can take over.
        let idle_ms = (lease.ttl.as_millis() / 2).clamp(500, 30_000);
        let options = options.options([
            ("idle_in_transaction_session_timeout", idle_ms.to_string()),
            ("lock_timeout", "10000".to_owned()),
        ]);
        let mut conn = PgConnection::connect_with(&options).await?;
        sqlx::migrate!("./migrations/postgres")
            .run(&mut conn)
            .await?;
        let reads = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(read_timeout)
            .connect_with(options.clone().options([(
                "statement_timeout",
                read_timeout.as_millis().max(1).to_string(),
            )]))
            .await?;
        let pool = PgPoolOptions::new()
            .max_connections(WRITER_CONNECTIONS)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        Ok(Self {
            pool,
            reads,
            lease,
            listened,
            claim: std::sync::Arc::new(tokio::sync::Mutex::new(Some(conn))),
        })
    }

    /// Takes this instance's claim on the database on the connection kept
    /// for it: an advisory lock, `exclusive` or shared; false if another
    /// instance's claim excludes it.
    pub(in crate::server::store) async fn claim(
        &self,
        exclusive: bool,
    ) -> Result<bool, sqlx::Error> {
        let mut claim = self.claim.lock().await;
        let Some(conn) = claim.as_mut() else {
            return Ok(false);
        };
        sqlx::query_scalar(if exclusive {
            "SELECT pg_try_advisory_lock($1)"
        } else {
            "SELECT pg_try_advisory_lock_shared($1)"
        })
        .bind(CLAIM_KEY)
        .fetch_one(conn)
        .await
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    pub async fn begin(&self) -> Result<PgTx, sqlx::Error> {
        PgTx::begin(&self.pool, self.lease.clone(), self.listened).await
    }

    /// A read-only transaction with one snapshot for all its statements.
    pub(in crate::server::store) async fn snapshot_tx(
        &self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }

    /// Deletes the log rows of replies that ended more than a little while
    /// ago (their text is in their body; a wake-up read them long since).
    pub async fn prune_log(&self) -> Result<u64, sqlx::Error> {
        sqlx::query(
            "DELETE FROM reply_log l USING messages m WHERE l.message_id = m.id \
             AND m.status <> 'streaming' AND m.finished_at < $1",
        )
        .bind(crate::server::now_ms() - LOG_KEPT_MS)
        .execute(&self.pool)
        .await
        .map(|done| done.rows_affected())
    }

    /// Whether the server takes writes: not a read-only standby.
    pub async fn probe_write(&self) -> Result<(), String> {
        let read_only: bool = sqlx::query_scalar(
            "SELECT pg_is_in_recovery() OR current_setting('transaction_read_only')::bool",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(|e| format!("not answering: {e}"))?;
        if read_only {
            Err("read-only (a standby, or transactions default to read-only)".into())
        } else {
            Ok(())
        }
    }
}

/// The revision a thread is current to: every revision up to it is
/// committed (they are allocated under the thread's lock, in commit order).
async fn thread_rev(conn: &mut PgConnection, thread_id: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COALESCE((SELECT rev FROM threads WHERE id = $1), 0)")
        .bind(thread_id)
        .fetch_one(conn)
        .await
}

super::accounts::account_statements!(PostgresStore, sqlx::Postgres);
super::members::member_statements!(PostgresStore, sqlx::Postgres);
super::sign_ins::sign_in_statements!(PostgresStore, sqlx::Postgres);

impl Storage for PostgresStore {
    async fn all_messages(&self, thread_id: &str) -> Result<Vec<Message>, sqlx::Error> {
        sqlx::query_as(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE thread_id = $1 ORDER BY id"
        ))
        .bind(thread_id)
        .fetch_all(&self.reads)
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
        let candidates = match since {
            Some(_) => "SELECT id FROM (\
                 SELECT id FROM messages WHERE thread_id = $1 AND id > $2 AND rev > $5 \
                 UNION SELECT message_id FROM reply_log WHERE thread_id = $1 AND message_id > $2 AND rev > $5) AS changed \
                 ORDER BY id LIMIT $3",
            None => "SELECT id FROM messages \
                 WHERE thread_id = $1 AND id > $2 AND status = 'streaming' ORDER BY id LIMIT $3",
        };
        // A row is in the page while the rows before it hold less than
        // `max_bytes` (so a page is at most that plus one row).
        let size = "octet_length(m.body) + octet_length(m.thinking) + octet_length(m.tools)";
        let query = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE id IN (\
             SELECT id FROM (SELECT m.id, SUM({size}) OVER (ORDER BY m.id) - ({size}) AS before \
             FROM messages m WHERE m.id IN ({candidates})) AS sized WHERE before < $4) ORDER BY id"
        );
        let mut select = sqlx::query_as(&query)
            .bind(thread_id)
            .bind(after)
            .bind(limit)
            .bind(max_bytes);
        if let Some(since) = since {
            select = select.bind(since);
        }
        select.fetch_all(&self.reads).await
    }

    async fn close(&self) {
        self.reads.close().await;
        self.pool.close().await;
        if let Some(claim) = self.claim.lock().await.take() {
            let _ = claim.close().await;
        }
    }

    async fn context(
        &self,
        thread_id: &str,
        before_id: i64,
        limit: u32,
    ) -> Result<Vec<Message>, sqlx::Error> {
        let mut messages: Vec<Message> = sqlx::query_as(&format!(
            "SELECT * FROM (SELECT {MESSAGE_COLUMNS} FROM messages \
             WHERE thread_id = $1 AND id < $2 ORDER BY id DESC) AS recent \
             WHERE body <> '' LIMIT $3"
        ))
        .bind(thread_id)
        .bind(before_id)
        .bind(i64::from(limit))
        .fetch_all(&self.reads)
        .await?;
        messages.reverse();
        Ok(messages)
    }

    async fn create_thread(&self, id: &str, title: &str, listed: bool) -> Result<(), sqlx::Error> {
        let now = crate::server::now_ms();
        sqlx::query(
            "INSERT INTO threads (id, title, listed, created_at, last_activity_at) \
             VALUES ($1, $2, $3, $4, $4)",
        )
        .bind(id)
        .bind(title)
        .bind(listed)
        .bind(now)
        .execute(&self.pool)
        .await
        .map(drop)
    }

    async fn decide_tool_call(&self, d: &ToolDecision) -> Result<bool, sqlx::Error> {
        sqlx::query(
            "INSERT INTO tool_decisions \
             (message_id, call_index, round, arguments_hash, approved, decided_by, decided_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
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
        let streaming: Vec<(String, i64)> = sqlx::query_as(
            "SELECT thread_id, id FROM messages WHERE status = 'streaming' ORDER BY thread_id, id",
        )
        .fetch_all(&self.pool)
        .await?;
        if streaming.is_empty() {
            return Ok(0);
        }
        let outcome = crate::model::Outcome {
            status: crate::model::Status::Interrupted,
            error: Some(crate::model::SERVER_STOPPED.into()),
            finish_reason: None,
            stopped_by: None,
            stats: Default::default(),
        };
        let now = crate::server::now_ms();
        let mut tx = self.begin().await?;
        let mut interrupted = 0;
        for (thread_id, id) in &streaming {
            let rev = tx.next_rev(thread_id).await?;
            if tx
                .finish(thread_id, *id, &outcome, now, rev)
                .await?
                .is_some()
            {
                interrupted += 1;
            }
        }
        tx.commit().await?;
        Ok(interrupted)
    }

    async fn latest(&self, thread_id: &str, limit: i64) -> Result<Snapshot, sqlx::Error> {
        let mut tx = self.reads.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
        let mut messages: Vec<Message> = sqlx::query_as(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE thread_id = $1 ORDER BY id DESC LIMIT $2"
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
        sqlx::query_as(&format!(
            "{SUMMARY} WHERE t.listed ORDER BY t.last_activity_at DESC, t.id LIMIT $1"
        ))
        .bind(limit)
        .fetch_all(&self.reads)
        .await
    }

    async fn listed_summary(&self, id: &str) -> Result<Option<ThreadSummary>, sqlx::Error> {
        sqlx::query_as(&format!("{SUMMARY} WHERE t.id = $1 AND t.listed"))
            .bind(id)
            .fetch_optional(&self.reads)
            .await
    }

    async fn log_rows(&self, id: i64) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar("SELECT COUNT(*) FROM reply_log WHERE message_id = $1")
            .bind(id)
            .fetch_one(&self.reads)
            .await
    }

    async fn message(&self, thread_id: &str, id: i64) -> Result<Option<Message>, sqlx::Error> {
        sqlx::query_as(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = $1 AND thread_id = $2"
        ))
        .bind(id)
        .bind(thread_id)
        .fetch_optional(&self.reads)
        .await
    }

    async fn messages_after(
        &self,
        thread_id: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<Message>, sqlx::Error> {
        sqlx::query_as(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE thread_id = $1 AND id > $2 ORDER BY id LIMIT $3"
        ))
        .bind(thread_id)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.reads)
        .await
    }

    async fn messages_before(
        &self,
        thread_id: &str,
        before: i64,
        limit: i64,
    ) -> Result<(Vec<Message>, bool), sqlx::Error> {
        let messages: Vec<Message> = sqlx::query_as(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE thread_id = $1 AND id < $2 \
             ORDER BY id DESC LIMIT $3"
        ))
        .bind(thread_id)
        .bind(before)
        .bind(limit + 1)
        .fetch_all(&self.reads)
        .await?;
        Ok(super::oldest_first_page(messages, limit))
    }

    async fn posted_by_request(
        &self,
        thread_id: &str,
        request_id: &str,
    ) -> Result<Option<Posted>, sqlx::Error> {
        let mut conn = self.reads.acquire().await?;
        writes::posted_by_request(&mut conn, thread_id, request_id).await
    }

    async fn rename_thread(&self, id: &str, title: &str) -> Result<bool, sqlx::Error> {
        sqlx::query("UPDATE threads SET title = $1 WHERE id = $2")
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
        let query = terms.join(" ");
        match scope {
            SearchScope::Listed => sqlx::query_as::<_, FoundMessage>(SEARCH_LISTED).bind(query),
            SearchScope::Thread(thread) => sqlx::query_as::<_, FoundMessage>(SEARCH_THREAD)
                .bind(query)
                .bind(thread),
        }
        .bind(before)
        .bind(limit)
        .fetch_all(&self.reads)
        .await
    }

    async fn set_thread_granularity(
        &self,
        id: &str,
        granularity: Option<Granularity>,
    ) -> Result<bool, sqlx::Error> {
        sqlx::query("UPDATE threads SET granularity = $1 WHERE id = $2")
            .bind(granularity.map(Granularity::as_str))
            .bind(id)
            .execute(&self.pool)
            .await
            .map(|r| r.rows_affected() == 1)
    }

    async fn thread(&self, id: &str) -> Result<Option<Thread>, sqlx::Error> {
        sqlx::query_as("SELECT id, title, listed FROM threads WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.reads)
            .await
    }

    async fn thread_granularity(&self, id: &str) -> Result<Option<Granularity>, sqlx::Error> {
        let value: Option<Option<String>> =
            sqlx::query_scalar("SELECT granularity FROM threads WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.reads)
                .await?;
        Ok(value.flatten().as_deref().and_then(Granularity::parse))
    }

    async fn thread_rev(&self, thread_id: &str) -> Result<i64, sqlx::Error> {
        let mut conn = self.reads.acquire().await?;
        thread_rev(&mut conn, thread_id).await
    }

    async fn thread_summary(&self, id: &str) -> Result<Option<ThreadSummary>, sqlx::Error> {
        sqlx::query_as(&format!("{SUMMARY} WHERE t.id = $1"))
            .bind(id)
            .fetch_optional(&self.reads)
            .await
    }

    async fn tool_decision(
        &self,
        message_id: i64,
        call_index: u32,
        round: u32,
    ) -> Result<Option<ToolDecision>, sqlx::Error> {
        sqlx::query_as(
            "SELECT message_id, call_index::BIGINT AS call_index, round::BIGINT AS round, \
             arguments_hash, approved, decided_by, decided_at FROM tool_decisions \
             WHERE message_id = $1 AND call_index = $2 AND round = $3",
        )
        .bind(message_id)
        .bind(i64::from(call_index))
        .bind(i64::from(round))
        .fetch_optional(&self.pool)
        .await
    }

    async fn usage_totals(&self, thread_id: &str) -> Result<UsageTotals, sqlx::Error> {
        let by_author: Vec<AuthorUsage> = sqlx::query_as(
            "SELECT requested_by AS author, COALESCE(SUM(prompt_tokens), 0)::BIGINT AS prompt_tokens, \
             COALESCE(SUM(completion_tokens), 0)::BIGINT AS completion_tokens, COUNT(*) AS replies \
             FROM messages WHERE thread_id = $1 AND role = 'assistant' AND requested_by IS NOT NULL \
             GROUP BY requested_by ORDER BY requested_by",
        )
        .bind(thread_id)
        .fetch_all(&self.reads)
        .await?;
        Ok(UsageTotals::from_authors(by_author))
    }
}
