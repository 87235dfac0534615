//! Statements the writer runs inside its group-commit transaction on
//! PostgreSQL, and the transaction itself: it locks the threads it writes
//! (in id order, so two instances' transactions never deadlock), hands out
//! their next revisions, and at commit stores each thread's last revision
//! and sends one `NOTIFY` naming the threads that moved (a wake-up: never
//! the text).

use std::collections::BTreeMap;

use sqlx::{PgConnection, PgPool, Postgres, Transaction};

use super::{Lease, MESSAGE_COLUMNS, STORED_COLUMNS};
use crate::{
    model::{Message, Outcome, Posted, Status},
    server::store::{LogAppend, LogCursor, NewMessage, WAKE_CHANNEL},
};

/// A thread's revisions in one transaction.
#[derive(Clone, Copy, Debug)]
struct ThreadRevs {
    /// The thread's revision when it was locked.
    locked: i64,
    /// The last revision handed out.
    last: i64,
    /// Whether a message row changed (not only log rows): the thread list
    /// needs to look.
    rows_changed: bool,
}

pub struct PgTx {
    tx: Transaction<'static, Postgres>,
    lease: Lease,
    /// Every instance's listener reads commits back (see
    /// `PostgresStore::listened`): commits wake them, and an ended reply's
    /// log rows stay a while for them to read.
    listened: bool,
    threads: BTreeMap<String, ThreadRevs>,
}

/// One thread's part of a wake-up: revisions `first..=last` committed,
/// `m` when a message row changed.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Moved {
    pub t: String,
    pub first: i64,
    pub last: i64,
    #[serde(default)]
    pub m: bool,
}

/// A NOTIFY payload must stay under 8000 bytes.
const MAX_PAYLOAD: usize = 7000;

impl PgTx {
    pub(super) async fn begin(
        pool: &PgPool,
        lease: Lease,
        listened: bool,
    ) -> Result<Self, sqlx::Error> {
        Ok(Self {
            tx: pool.begin().await?,
            lease,
            listened,
            threads: BTreeMap::new(),
        })
    }

    fn conn(&mut self) -> &mut PgConnection {
        &mut self.tx
    }

    /// Locks the threads (in id order) and reads their revisions. Threads
    /// already locked by this transaction are skipped.
    pub async fn lock_threads(&mut self, ids: &[&str]) -> Result<(), sqlx::Error> {
        let mut ids: Vec<&str> = ids
            .iter()
            .copied()
            .filter(|id| !self.threads.contains_key(*id))
            .collect();
        if ids.is_empty() {
            return Ok(());
        }
        ids.sort_unstable();
        ids.dedup();
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT id, rev FROM threads WHERE id = ANY($1) ORDER BY id FOR UPDATE")
                .bind(&ids)
                .fetch_all(self.conn())
                .await?;
        for (id, rev) in rows {
            self.threads.insert(
                id,
                ThreadRevs {
                    locked: rev,
                    last: rev,
                    rows_changed: false,
                },
            );
        }
        Ok(())
    }

    /// The thread's next revision (locking the thread if this transaction
    /// has not yet).
    pub async fn next_rev(&mut self, thread_id: &str) -> Result<i64, sqlx::Error> {
        if !self.threads.contains_key(thread_id) {
            self.lock_threads(&[thread_id]).await?;
        }
        // A thread that does not exist (the insert will fail on its foreign key).
        let revs = self
            .threads
            .entry(thread_id.to_owned())
            .or_insert(ThreadRevs {
                locked: 0,
                last: 0,
                rows_changed: false,
            });
        revs.last += 1;
        Ok(revs.last)
    }

    fn row_changed(&mut self, thread_id: &str) {
        if let Some(revs) = self.threads.get_mut(thread_id) {
            revs.rows_changed = true;
        }
    }

    /// Stores each moved thread's last revision, queues the wake-up (sent
    /// by PostgreSQL at commit, in commit order) and commits.
    /// Returns how many wake-ups (NOTIFYs) it sent.
    pub async fn commit(mut self) -> Result<u64, sqlx::Error> {
        let mut sent = 0;
        let moved: Vec<Moved> = self
            .threads
            .iter()
            .filter(|(_, r)| r.last > r.locked)
            .map(|(t, r)| Moved {
                t: t.clone(),
                first: r.locked + 1,
                last: r.last,
                m: r.rows_changed,
            })
            .collect();
        if !moved.is_empty() && !self.listened {
            let ids: Vec<&str> = moved.iter().map(|m| m.t.as_str()).collect();
            let revs: Vec<i64> = moved.iter().map(|m| m.last).collect();
            sqlx::query(
                "UPDATE threads SET rev = v.rev \
                 FROM unnest($1::text[], $2::bigint[]) AS v(id, rev) WHERE threads.id = v.id",
            )
            .bind(&ids)
            .bind(&revs)
            .execute(self.conn())
            .await?;
        } else if !moved.is_empty() {
            let ids: Vec<&str> = moved.iter().map(|m| m.t.as_str()).collect();
            let revs: Vec<i64> = moved.iter().map(|m| m.last).collect();
            let payloads = payloads(&moved);
            sent = payloads.len() as u64;
            // One round trip: the threads' last revisions and the wake-ups
            // (queued now, sent by PostgreSQL at commit).
            sqlx::query(
                "WITH moved AS (UPDATE threads SET rev = v.rev \
                 FROM unnest($1::text[], $2::bigint[]) AS v(id, rev) WHERE threads.id = v.id) \
                 SELECT pg_notify($3, p) FROM unnest($4::text[]) AS p",
            )
            .bind(&ids)
            .bind(&revs)
            .bind(WAKE_CHANNEL)
            .bind(&payloads)
            .execute(self.conn())
            .await?;
        }
        self.tx.commit().await?;
        Ok(sent)
    }

    pub async fn thread_exists(&mut self, id: &str) -> Result<bool, sqlx::Error> {
        sqlx::query_scalar::<_, i32>("SELECT 1 FROM threads WHERE id = $1")
            .bind(id)
            .fetch_optional(self.conn())
            .await
            .map(|row| row.is_some())
    }

    pub async fn message(
        &mut self,
        thread_id: &str,
        id: i64,
    ) -> Result<Option<Message>, sqlx::Error> {
        sqlx::query_as(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = $1 AND thread_id = $2"
        ))
        .bind(id)
        .bind(thread_id)
        .fetch_optional(self.conn())
        .await
    }

    pub async fn posted_by_request(
        &mut self,
        thread_id: &str,
        request_id: &str,
    ) -> Result<Option<Posted>, sqlx::Error> {
        posted_by_request(self.conn(), thread_id, request_id).await
    }

    /// Inserts a message and marks its thread active; a streaming reply
    /// gets this instance's lease (epoch 1).
    pub async fn insert_message(
        &mut self,
        new: &NewMessage<'_>,
        now: i64,
        rev: i64,
    ) -> Result<Message, sqlx::Error> {
        let streaming = new.status == Status::Streaming;
        let message = sqlx::query_as(&format!(
            "INSERT INTO messages (thread_id, author, role, body, status, model, created_at, updated_at, \
             rev, requested_by, context_before, request_id, reply_to, lease_owner, lease_epoch, lease_expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8, $9, $10, $11, $12, $13, \
             CASE WHEN $14 THEN 1 ELSE 0 END, \
             CASE WHEN $14 THEN clock_timestamp() + make_interval(secs => $15) END) \
             RETURNING {STORED_COLUMNS}"
        ))
        .bind(new.thread_id)
        .bind(new.author)
        .bind(new.role)
        .bind(new.body)
        .bind(new.status)
        .bind(new.model)
        .bind(now)
        .bind(rev)
        .bind(new.requested_by)
        .bind(new.context_before)
        .bind(new.request_id)
        .bind(new.reply_to)
        .bind(streaming.then(|| self.lease.owner.to_string()))
        .bind(streaming)
        .bind(self.lease.ttl.as_secs_f64())
        .fetch_one(self.conn())
        .await?;
        sqlx::query("UPDATE threads SET last_activity_at = $1 WHERE id = $2")
            .bind(now)
            .bind(new.thread_id)
            .execute(self.conn())
            .await?;
        self.row_changed(new.thread_id);
        Ok(message)
    }

    /// Appends log rows in one statement.
    pub async fn append_log(&mut self, rows: &[LogAppend<'_>]) -> Result<(), sqlx::Error> {
        insert_log_rows(self.conn(), rows).await
    }

    pub async fn log_cursor(&mut self, id: i64) -> Result<Option<LogCursor>, sqlx::Error> {
        let row: Option<(i64, i64, i64, i64)> = sqlx::query_as(
            "SELECT octet_length(body)::BIGINT + COALESCE((SELECT SUM(octet_length(text)) FROM reply_log \
             WHERE message_id = $1 AND part = 0), 0)::BIGINT, \
             octet_length(thinking)::BIGINT + COALESCE((SELECT SUM(octet_length(text)) FROM reply_log \
             WHERE message_id = $1 AND part = 1), 0)::BIGINT, \
             octet_length(tools)::BIGINT + COALESCE((SELECT SUM(octet_length(text)) FROM reply_log \
             WHERE message_id = $1 AND part = 2), 0)::BIGINT, \
             COALESCE((SELECT MAX(seq) + 1 FROM reply_log WHERE message_id = $1), 0)::BIGINT \
             FROM messages WHERE id = $1 AND status = 'streaming'",
        )
        .bind(id)
        .fetch_optional(self.conn())
        .await?;
        Ok(
            row.map(|(len, thinking_len, tools_len, next_seq)| LogCursor {
                lens: [len as usize, thinking_len as usize, tools_len as usize],
                next_seq: next_seq as u32,
            }),
        )
    }

    /// Ends a streaming reply, writing its log into its body once (the log
    /// rows are removed later: [`super::PostgresStore::prune_log`]).
    pub async fn finish(
        &mut self,
        thread_id: &str,
        id: i64,
        outcome: &Outcome,
        now: i64,
        rev: i64,
    ) -> Result<Option<(String, String, String)>, sqlx::Error> {
        type Tails = (Option<String>, Option<String>, Option<String>);
        let (tail, thinking_tail, tools_tail): Tails = sqlx::query_as(
            "SELECT string_agg(text, '' ORDER BY seq) FILTER (WHERE part = 0), \
             string_agg(text, '' ORDER BY seq) FILTER (WHERE part = 1), \
             string_agg(text, '' ORDER BY seq) FILTER (WHERE part = 2) \
             FROM reply_log WHERE message_id = $1",
        )
        .bind(id)
        .fetch_one(self.conn())
        .await?;
        // The log rows stay a while (wake-ups of other instances read the
        // last ones); reads of an ended reply take its body alone.
        let stats = &outcome.stats;
        let body = sqlx::query_as(
            "UPDATE messages SET body = body || $1, status = $2, error = $3, finish_reason = $4, \
             stopped_by = $5, prompt_tokens = $6, completion_tokens = $7, usage_estimated = $8, \
             ttft_ms = $9, tokens_per_second = $10, retries = $11, \
             notice = CASE WHEN resumed > 0 THEN 'Resumed by another server after the one writing it stopped.' END, \
             finished_at = $12, updated_at = $12, rev = $13, lease_owner = NULL, lease_expires_at = NULL, \
             thinking = thinking || $15, thinking_ms = COALESCE($16, thinking_ms), reasoning_tokens = $17, \
             tools = tools || $18 \
             WHERE id = $14 AND status = 'streaming' RETURNING body, thinking, tools",
        )
        .bind(tail.unwrap_or_default())
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
        .bind(rev)
        .bind(id)
        .bind(thinking_tail.unwrap_or_default())
        .bind(stats.thinking_ms)
        .bind(stats.usage.and_then(|u| u.reasoning_tokens))
        .bind(tools_tail.unwrap_or_default())
        .fetch_optional(self.conn())
        .await?;
        if !self.listened {
            // No other instance's listener will read them.
            sqlx::query("DELETE FROM reply_log WHERE message_id = $1")
                .bind(id)
                .execute(self.conn())
                .await?;
        }
        self.row_changed(thread_id);
        Ok(body)
    }

    pub async fn set_thinking_ms(
        &mut self,
        thread_id: &str,
        id: i64,
        thinking_ms: i64,
        now: i64,
        rev: i64,
    ) -> Result<bool, sqlx::Error> {
        self.row_changed(thread_id);
        sqlx::query(
            "UPDATE messages SET thinking_ms = $1, updated_at = $2, rev = $3 \
             WHERE id = $4 AND status = 'streaming'",
        )
        .bind(thinking_ms)
        .bind(now)
        .bind(rev)
        .bind(id)
        .execute(self.conn())
        .await
        .map(|r| r.rows_affected() == 1)
    }

    pub async fn set_notice(
        &mut self,
        thread_id: &str,
        id: i64,
        notice: Option<&str>,
        retries: i64,
        now: i64,
        rev: i64,
    ) -> Result<bool, sqlx::Error> {
        self.row_changed(thread_id);
        sqlx::query(
            "UPDATE messages SET notice = $1, retries = $2, updated_at = $3, rev = $4 \
             WHERE id = $5 AND status = 'streaming'",
        )
        .bind(notice)
        .bind(retries)
        .bind(now)
        .bind(rev)
        .bind(id)
        .execute(self.conn())
        .await
        .map(|r| r.rows_affected() == 1)
    }

    /// Continue: the reply back to `streaming` under a new lease of this
    /// instance's (the epoch rises: any earlier producer is fenced).
    #[allow(clippy::too_many_arguments)]
    pub async fn reopen(
        &mut self,
        thread_id: &str,
        id: i64,
        from: &[Status],
        requested_by: &str,
        now: i64,
        rev: i64,
    ) -> Result<Option<Message>, sqlx::Error> {
        let from: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
        self.row_changed(thread_id);
        // A recently ended reply's log rows are in its body already.
        sqlx::query(
            "DELETE FROM reply_log WHERE message_id = $1 AND EXISTS (SELECT 1 FROM messages \
             WHERE id = $1 AND thread_id = $2 AND status = ANY($3))",
        )
        .bind(id)
        .bind(thread_id)
        .bind(&from)
        .execute(self.conn())
        .await?;
        sqlx::query_as(&format!(
            "UPDATE messages SET status = 'streaming', error = NULL, finish_reason = NULL, \
             stopped_by = NULL, stop_requested_by = NULL, notice = NULL, finished_at = NULL, \
             requested_by = $1, updated_at = $2, rev = $3, lease_owner = $4, \
             lease_epoch = lease_epoch + 1, lease_expires_at = clock_timestamp() + make_interval(secs => $5) \
             WHERE id = $6 AND thread_id = $7 AND status = ANY($8) RETURNING {STORED_COLUMNS}"
        ))
        .bind(requested_by)
        .bind(now)
        .bind(rev)
        .bind(self.lease.owner.to_string())
        .bind(self.lease.ttl.as_secs_f64())
        .bind(id)
        .bind(thread_id)
        .bind(&from)
        .fetch_optional(self.conn())
        .await
    }

    /// The epoch of this instance's lease on reply `id`, if it holds one.
    pub async fn lease_epoch(&mut self, id: i64) -> Result<Option<i64>, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT lease_epoch FROM messages WHERE id = $1 AND status = 'streaming' AND lease_owner = $2",
        )
        .bind(id)
        .bind(self.lease.owner.to_string())
        .fetch_optional(self.conn())
        .await
    }

    /// Of the replies this instance writes (id, epoch), those whose lease
    /// it no longer holds. Runs after the replies' threads are locked: no
    /// takeover (which needs the same lock) can slip in before the commit.
    pub async fn lost_leases(&mut self, held: &[(i64, i64)]) -> Result<Vec<i64>, sqlx::Error> {
        if held.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<i64> = held.iter().map(|(id, _)| *id).collect();
        let epochs: Vec<i64> = held.iter().map(|(_, e)| *e).collect();
        sqlx::query_scalar(
            "SELECT v.id FROM unnest($1::bigint[], $2::bigint[]) AS v(id, epoch) \
             WHERE NOT EXISTS (SELECT 1 FROM messages m WHERE m.id = v.id AND m.status = 'streaming' \
             AND m.lease_owner = $3 AND m.lease_epoch = v.epoch)",
        )
        .bind(&ids)
        .bind(&epochs)
        .bind(self.lease.owner.to_string())
        .fetch_all(self.conn())
        .await
    }

    /// Extends this instance's leases (id, epoch); returns those it no
    /// longer holds. Each row's own lock orders this against a takeover.
    pub async fn renew(&mut self, held: &[(i64, i64)]) -> Result<Vec<i64>, sqlx::Error> {
        if held.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<i64> = held.iter().map(|(id, _)| *id).collect();
        let epochs: Vec<i64> = held.iter().map(|(_, e)| *e).collect();
        let renewed: Vec<i64> = sqlx::query_scalar(
            "UPDATE messages m SET lease_expires_at = clock_timestamp() + make_interval(secs => $4) \
             FROM unnest($1::bigint[], $2::bigint[]) AS v(id, epoch) \
             WHERE m.id = v.id AND m.lease_epoch = v.epoch AND m.lease_owner = $3 AND m.status = 'streaming' \
             RETURNING m.id",
        )
        .bind(&ids)
        .bind(&epochs)
        .bind(self.lease.owner.to_string())
        .bind(self.lease.ttl.as_secs_f64())
        .fetch_all(self.conn())
        .await?;
        Ok(ids.into_iter().filter(|id| !renewed.contains(id)).collect())
    }

    pub async fn release(&mut self, id: i64, epoch: i64) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE messages SET lease_expires_at = clock_timestamp() - interval '1 millisecond' \
             WHERE id = $1 AND lease_epoch = $2 AND lease_owner = $3 AND status = 'streaming'",
        )
        .bind(id)
        .bind(epoch)
        .bind(self.lease.owner.to_string())
        .execute(self.conn())
        .await
        .map(drop)
    }

    /// Takes over reply `id` if its lease expired: this instance becomes
    /// its producer under a new epoch, and viewers see a notice.
    pub async fn adopt(
        &mut self,
        thread_id: &str,
        id: i64,
        now: i64,
        rev: i64,
    ) -> Result<Option<(Message, i64, Option<String>)>, sqlx::Error> {
        let row: Option<(i64, Option<String>)> = sqlx::query_as(
            "UPDATE messages SET lease_owner = $1, lease_epoch = lease_epoch + 1, \
             lease_expires_at = clock_timestamp() + make_interval(secs => $2), resumed = resumed + 1, \
             notice = 'The server writing this reply stopped; another one is continuing it.', \
             updated_at = $3, rev = $4 \
             WHERE id = $5 AND thread_id = $6 AND status = 'streaming' \
             AND (lease_expires_at IS NULL OR lease_expires_at < clock_timestamp()) \
             RETURNING lease_epoch, stop_requested_by",
        )
        .bind(self.lease.owner.to_string())
        .bind(self.lease.ttl.as_secs_f64())
        .bind(now)
        .bind(rev)
        .bind(id)
        .bind(thread_id)
        .fetch_optional(self.conn())
        .await?;
        let Some((epoch, stop)) = row else {
            return Ok(None);
        };
        self.row_changed(thread_id);
        let message = self.message(thread_id, id).await?;
        Ok(message.map(|m| (m, epoch, stop)))
    }
}

/// The user message a post with `request_id` stored, and its replies.
pub async fn posted_by_request(
    conn: &mut PgConnection,
    thread_id: &str,
    request_id: &str,
) -> Result<Option<Posted>, sqlx::Error> {
    let message: Option<Message> = sqlx::query_as(&format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE thread_id = $1 AND request_id = $2"
    ))
    .bind(thread_id)
    .bind(request_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(message) = message else {
        return Ok(None);
    };
    let replies = sqlx::query_as(&format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE reply_to = $1 ORDER BY id"
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

/// The wake-up payloads for `moved`: JSON arrays, each under the limit.
fn payloads(moved: &[Moved]) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Vec<&Moved> = Vec::new();
    let mut size = 2;
    for m in moved {
        let len = m.t.len() + 64;
        if !current.is_empty() && size + len > MAX_PAYLOAD {
            out.push(serde_json::to_string(&current).expect("serializes"));
            current.clear();
            size = 2;
        }
        current.push(m);
        size += len;
    }
    if !current.is_empty() {
        out.push(serde_json::to_string(&current).expect("serializes"));
    }
    out
}

/// Log rows in one `INSERT`.
pub(super) async fn insert_log_rows<'c, E>(
    executor: E,
    rows: &[LogAppend<'_>],
) -> Result<(), sqlx::Error>
where
    E: sqlx::Executor<'c, Database = Postgres>,
{
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    let seqs: Vec<i32> = rows.iter().map(|r| r.seq as i32).collect();
    let threads: Vec<&str> = rows.iter().map(|r| r.thread_id).collect();
    let offsets: Vec<i64> = rows.iter().map(|r| r.offset as i64).collect();
    let revs: Vec<i64> = rows.iter().map(|r| r.rev).collect();
    let texts: Vec<&str> = rows.iter().map(|r| r.text).collect();
    let parts: Vec<i16> = rows.iter().map(|r| i16::from(u8::from(r.part))).collect();
    sqlx::query(
        "INSERT INTO reply_log (message_id, seq, thread_id, \"offset\", rev, text, part) \
         SELECT * FROM unnest($1::bigint[], $2::int[], $3::text[], $4::bigint[], $5::bigint[], $6::text[], $7::smallint[])",
    )
    .bind(&ids)
    .bind(&seqs)
    .bind(&threads)
    .bind(&offsets)
    .bind(&revs)
    .bind(&texts)
    .bind(&parts)
    .execute(executor)
    .await
    .map(drop)
}
