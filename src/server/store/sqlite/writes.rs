//! Statements the writer runs inside its group-commit transaction.

use sqlx::SqliteConnection;

use super::{log_of, SqliteTx, MESSAGE_COLUMNS, STORED_COLUMNS};
use crate::{
    model::{Message, Outcome, Posted, Status},
    server::store::{LogAppend, LogCursor, NewMessage},
};

/// Size of the storage reserve (see the migration creating it).
const RESERVE_BYTES: usize = 1 << 20;

/// Most rows in one multi-row `INSERT` (SQLite binds at most 32,766
/// parameters; five per row).
const LOG_ROWS_PER_INSERT: usize = 256;

/// Whether the database can grow: puts the storage reserve back if it was
/// used, and writes a few pages into `write_probe`, undone. Fails when the
/// database cannot grow (disk full, `max_page_count`).
pub async fn probe_growth(tx: &mut SqliteTx) -> Result<(), sqlx::Error> {
    sqlx::query(&format!(
        "INSERT OR IGNORE INTO storage_reserve (id, data) VALUES (1, zeroblob({RESERVE_BYTES}))"
    ))
    .execute(&mut **tx)
    .await?;
    sqlx::query("SAVEPOINT probe").execute(&mut **tx).await?;
    sqlx::query("INSERT INTO write_probe (data) VALUES (zeroblob(16384))")
        .execute(&mut **tx)
        .await?;
    sqlx::query("ROLLBACK TO probe").execute(&mut **tx).await?;
    sqlx::query("RELEASE probe")
        .execute(&mut **tx)
        .await
        .map(drop)
}

/// Frees the storage reserve's pages for use (deleting needs no new page).
pub async fn release_reserve(tx: &mut SqliteTx) -> Result<bool, sqlx::Error> {
    sqlx::query("DELETE FROM storage_reserve")
        .execute(&mut **tx)
        .await
        .map(|done| done.rows_affected() > 0)
}

pub async fn message_in(
    tx: &mut SqliteTx,
    thread_id: &str,
    id: i64,
) -> Result<Option<Message>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = ? AND thread_id = ?"
    ))
    .bind(id)
    .bind(thread_id)
    .fetch_optional(&mut **tx)
    .await
}

/// The user message a post with `request_id` stored, and its replies.
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

pub async fn thread_exists(tx: &mut SqliteTx, id: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar::<_, i64>("SELECT 1 FROM threads WHERE id = ?")
        .bind(id)
        .fetch_optional(&mut **tx)
        .await
        .map(|row| row.is_some())
}

pub async fn insert_message(
    tx: &mut SqliteTx,
    new: &NewMessage<'_>,
    now: i64,
    rev: i64,
) -> Result<Message, sqlx::Error> {
    let message = sqlx::query_as(&format!(
        "INSERT INTO messages (thread_id, author, role, body, status, model, created_at, updated_at, \
         rev, requested_by, context_before, request_id, reply_to) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING {STORED_COLUMNS}"
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
    .fetch_one(&mut **tx)
    .await?;
    sqlx::query("UPDATE threads SET last_activity_at = ? WHERE id = ?")
        .bind(now)
        .bind(new.thread_id)
        .execute(&mut **tx)
        .await?;
    Ok(message)
}

/// The rowid of reply `id`'s log row `seq`.
fn log_key(id: i64, seq: u32) -> i64 {
    (id << 32) | i64::from(seq)
}

/// Inserts log rows, up to [`LOG_ROWS_PER_INSERT`] per statement (a lone
/// reply's commit is one single-row statement, prepared once).
pub async fn append_log(tx: &mut SqliteTx, rows: &[LogAppend<'_>]) -> Result<(), sqlx::Error> {
    for chunk in rows.chunks(LOG_ROWS_PER_INSERT) {
        insert_log_rows(&mut **tx, chunk).await?;
    }
    Ok(())
}

/// Most rows a text-only batch inserts from the writer's own task (see
/// `WriterConnection::appends`). A lone reply's batch is one row, and what
/// it saves is the hand-offs; a large batch (many replies streaming) is
/// better written on sqlx's worker thread, in parallel with the runtime
/// (S3, one run each: p99 at 37,000 tokens/s was 20.8 ms with every batch
/// inline, 7.5 ms with this split).
const INLINE_ROWS: usize = 4;

/// Appends up to [`LOG_ROWS_PER_INSERT`] rows as one statement, outside
/// any transaction: one statement is atomic by itself, and it saves the
/// round trips of BEGIN and COMMIT. `None` (nothing written) for more rows,
/// or while another process holds the write lock.
pub async fn append_log_alone(
    store: &super::SqliteStore,
    rows: &mut [LogAppend<'_>],
) -> Result<Option<()>, sqlx::Error> {
    if rows.len() > LOG_ROWS_PER_INSERT || !store.append_lane() {
        return Ok(None);
    }
    let mut writer = store.writer_connection().await;
    for row in rows.iter_mut() {
        row.rev = writer.next_rev();
    }
    let rows = &*rows;
    if rows.len() > INLINE_ROWS {
        // Many replies at once: the statement runs on sqlx's worker thread,
        // beside the runtime's threads that read the next tokens.
        return insert_log_rows(&mut writer.conn, rows).await.map(Some);
    }
    // The statement for this many rows, built once (not per token).
    static INLINE_SQL: std::sync::LazyLock<Vec<String>> =
        std::sync::LazyLock::new(|| (0..=INLINE_ROWS).map(insert_log_sql).collect());
    let sql = &INLINE_SQL[rows.len()];
    let inserted = writer.appends.prepare_cached(sql).and_then(|mut insert| {
        let mut at = 1;
        for row in rows {
            let key = log_key(row.id, row.seq);
            let part = i64::from(u8::from(row.part));
            let offset = row.offset as i64;
            insert.raw_bind_parameter(at, key)?;
            insert.raw_bind_parameter(at + 1, part)?;
            insert.raw_bind_parameter(at + 2, offset)?;
            insert.raw_bind_parameter(at + 3, row.rev)?;
            insert.raw_bind_parameter(at + 4, row.text)?;
            at += 5;
        }
        insert.raw_execute()
    });
    match inserted {
        Ok(_) => writer.appended().await.map(Some),
        // Another process holds the write lock (a backup, an operator's
        // `sqlite3`): the append connection never waits for it, as that
        // would block a runtime thread; the batch takes the transaction's
        // path instead, which waits on sqlx's worker thread.
        Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) => Ok(None),
        // A driver error of the append connection, its cause kept.
        Err(e) => Err(sqlx::Error::Io(std::io::Error::other(e))),
    }
}

fn insert_log_sql(rows: usize) -> String {
    format!(
        "INSERT INTO reply_log (key, part, offset, rev, text) VALUES {}",
        vec!["(?, ?, ?, ?, ?)"; rows].join(", ")
    )
}

async fn insert_log_rows<'c, E>(executor: E, rows: &[LogAppend<'_>]) -> Result<(), sqlx::Error>
where
    E: sqlx::Executor<'c, Database = sqlx::Sqlite>,
{
    let sql = insert_log_sql(rows.len());
    let mut insert = sqlx::query(&sql);
    for row in rows {
        insert = insert
            .bind(log_key(row.id, row.seq))
            .bind(i64::from(u8::from(row.part)))
            .bind(row.offset as i64)
            .bind(row.rev)
            .bind(row.text);
    }
    insert.execute(executor).await.map(drop)
}

pub async fn log_cursor(tx: &mut SqliteTx, id: i64) -> Result<Option<LogCursor>, sqlx::Error> {
    /// A part's length: its column and its log rows.
    macro_rules! part_len {
        ($column:literal, $part:literal) => {
            concat!(
                "length(CAST(",
                $column,
                " AS BLOB)) + COALESCE((SELECT SUM(length(CAST(text AS BLOB))) FROM ",
                log_of!("?1"),
                " AND part = ",
                $part,
                "), 0)"
            )
        };
    }
    let row: Option<(i64, i64, i64, i64)> = sqlx::query_as(concat!(
        "SELECT ",
        part_len!("body", 0),
        ", ",
        part_len!("thinking", 1),
        ", ",
        part_len!("tools", 2),
        ", COALESCE((SELECT MAX(key) - (?1 << 32) + 1 FROM ",
        log_of!("?1"),
        "), 0) FROM messages WHERE id = ?1 AND status = 'streaming'"
    ))
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(
        row.map(|(len, thinking_len, tools_len, next_seq)| LogCursor {
            lens: [len as usize, thinking_len as usize, tools_len as usize],
            next_seq: next_seq as u32,
        }),
    )
}

/// Ends a streaming reply, writing its log into its body and thinking
/// once (and its tool log). The log is read and deleted before the row
/// grows, so in a full database the freed pages hold the text. Returns the
/// parts' final text.
pub async fn finish(
    tx: &mut SqliteTx,
    id: i64,
    outcome: &Outcome,
    now: i64,
    rev: i64,
) -> Result<Option<(String, String, String)>, sqlx::Error> {
    type Tails = (Option<String>, Option<String>, Option<String>);
    let (tail, thinking_tail, tools_tail): Tails = sqlx::query_as(concat!(
        "SELECT group_concat(CASE WHEN part = 0 THEN text END, '' ORDER BY key), \
         group_concat(CASE WHEN part = 1 THEN text END, '' ORDER BY key), \
         group_concat(CASE WHEN part = 2 THEN text END, '' ORDER BY key) FROM ",
        log_of!("?1")
    ))
    .bind(id)
    .fetch_one(&mut **tx)
    .await?;
    sqlx::query(concat!("DELETE FROM ", log_of!("?1")))
        .bind(id)
        .execute(&mut **tx)
        .await?;
    let stats = &outcome.stats;
    sqlx::query_as(
        "UPDATE messages SET body = body || ?, thinking = thinking || ?, status = ?, error = ?, \
         finish_reason = ?, stopped_by = ?, prompt_tokens = ?, completion_tokens = ?, \
         usage_estimated = ?, ttft_ms = ?, tokens_per_second = ?, retries = ?, notice = NULL, \
         finished_at = ?, updated_at = ?, rev = ?, \
         thinking_ms = COALESCE(?, thinking_ms), reasoning_tokens = ?, tools = tools || ? \
         WHERE id = ? AND status = 'streaming' RETURNING body, thinking, tools",
    )
    .bind(tail.unwrap_or_default())
    .bind(thinking_tail.unwrap_or_default())
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
    .bind(stats.thinking_ms)
    .bind(stats.usage.and_then(|u| u.reasoning_tokens))
    .bind(tools_tail.unwrap_or_default())
    .bind(id)
    .fetch_optional(&mut **tx)
    .await
}

pub async fn set_thinking_ms(
    tx: &mut SqliteTx,
    id: i64,
    thinking_ms: i64,
    now: i64,
    rev: i64,
) -> Result<bool, sqlx::Error> {
    sqlx::query(
        "UPDATE messages SET thinking_ms = ?, updated_at = ?, rev = ? \
         WHERE id = ? AND status = 'streaming'",
    )
    .bind(thinking_ms)
    .bind(now)
    .bind(rev)
    .bind(id)
    .execute(&mut **tx)
    .await
    .map(|r| r.rows_affected() == 1)
}

pub async fn set_notice(
    tx: &mut SqliteTx,
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
    .execute(&mut **tx)
    .await
    .map(|r| r.rows_affected() == 1)
}

pub async fn reopen(
    tx: &mut SqliteTx,
    thread_id: &str,
    id: i64,
    from: &[Status],
    requested_by: &str,
    now: i64,
    rev: i64,
) -> Result<Option<Message>, sqlx::Error> {
    if from.is_empty() {
        return Ok(None);
    }
    let sql = format!(
        "UPDATE messages SET status = 'streaming', error = NULL, finish_reason = NULL, \
         stopped_by = NULL, notice = NULL, finished_at = NULL, requested_by = ?, updated_at = ?, rev = ? \
         WHERE id = ? AND thread_id = ? AND status IN ({}) RETURNING {STORED_COLUMNS}",
        vec!["?"; from.len()].join(", ")
    );
    let mut update = sqlx::query_as(&sql)
        .bind(requested_by)
        .bind(now)
        .bind(rev)
        .bind(id)
        .bind(thread_id);
    for status in from {
        update = update.bind(*status);
    }
    update.fetch_optional(&mut **tx).await
}
