//! The statements several instances on one database share beyond the
//! reads: expired leases, Stop for a reply produced elsewhere, the
//! per-client budgets every instance counts in, the rows a wake-up reads,
//! and control messages between instances. (A transaction's lease
//! statements, run by the writer, are the PostgreSQL backend's `PgTx`.)

use std::{collections::HashSet, time::Duration};

use super::Shared;
use crate::{
    model::{Message, Part, Status},
    server::store::{
        postgres::{PostgresStore, MESSAGE_COLUMNS},
        Change, CONTROL_CHANNEL,
    },
};

impl Shared {
    /// Streaming replies whose producer's lease ran out (thread, id).
    pub(super) async fn expired_leases(&self) -> Result<Vec<(String, i64)>, sqlx::Error> {
        sqlx::query_as(
            "SELECT thread_id, id FROM messages WHERE status = 'streaming' \
             AND (lease_expires_at IS NULL OR lease_expires_at < clock_timestamp()) \
             ORDER BY lease_expires_at NULLS FIRST LIMIT 100",
        )
        .fetch_all(self.store.pool())
        .await
    }

    /// Records that `by` pressed Stop on a streaming reply produced
    /// elsewhere or by no one (an adopter then ends it `cancelled`) and tells every instance; false if it is not
    /// streaming.
    pub(super) async fn mark_stop(
        &self,
        thread_id: &str,
        id: i64,
        by: &str,
    ) -> Result<bool, sqlx::Error> {
        let marked = sqlx::query(
            "UPDATE messages SET stop_requested_by = $1 WHERE id = $2 AND thread_id = $3 \
             AND status = 'streaming'",
        )
        .bind(by)
        .bind(id)
        .bind(thread_id)
        .execute(self.store.pool())
        .await?
        .rows_affected()
            == 1;
        if marked {
            let payload = serde_json::json!({ "stop": id, "by": by }).to_string();
            self.store.notify(&payload).await?;
        }
        Ok(marked)
    }

    /// Takes `n` from client `key`'s budget of `per_minute`, shared by
    /// every instance (GCRA: one row per client and budget, one atomic
    /// statement); `Err(wait)` when the client must wait.
    pub(super) async fn spend_budget(
        &self,
        key: &str,
        n: u32,
        per_minute: u32,
    ) -> Result<Result<(), Duration>, sqlx::Error> {
        // GCRA: `tat` is when the client's bucket is full again; taking n
        // moves it n intervals on, allowed while it stays within a minute.
        let cost = 60.0 / f64::from(per_minute.max(1)) * f64::from(n.max(1));
        let allowed: Option<i32> = sqlx::query_scalar(
            "INSERT INTO mention_limits AS l (key, tat) \
             VALUES ($1, clock_timestamp() + make_interval(secs => $2)) \
             ON CONFLICT (key) DO UPDATE \
             SET tat = GREATEST(l.tat, clock_timestamp()) + make_interval(secs => $2) \
             WHERE GREATEST(l.tat, clock_timestamp()) + make_interval(secs => $2) \
                   <= clock_timestamp() + interval '60 seconds' \
             RETURNING 1",
        )
        .bind(key)
        .bind(cost)
        .fetch_optional(self.store.pool())
        .await?;
        if allowed.is_some() {
            return Ok(Ok(()));
        }
        let wait: f64 = sqlx::query_scalar(
            "SELECT GREATEST(EXTRACT(EPOCH FROM (tat + make_interval(secs => $2) \
             - interval '60 seconds' - clock_timestamp()))::float8, 1.0) FROM mention_limits WHERE key = $1",
        )
        .bind(key)
        .bind(cost)
        .fetch_optional(self.store.pool())
        .await?
        .unwrap_or(1.0);
        Ok(Err(Duration::from_secs_f64(wait)))
    }
}

impl PostgresStore {
    /// A thread's changes committed after revision `after`, in revision
    /// order, read in one snapshot: rows of messages (their text composed
    /// with their log, so a row carries everything up to its revision) and
    /// log rows of replies whose row did not change.
    pub(super) async fn changes(
        &self,
        thread_id: &str,
        after: i64,
    ) -> Result<Vec<Change>, sqlx::Error> {
        let mut tx = self.snapshot_tx().await?;
        let messages: Vec<Message> = sqlx::query_as(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE thread_id = $1 AND rev > $2"
        ))
        .bind(thread_id)
        .bind(after)
        .fetch_all(&mut *tx)
        .await?;
        let log: Vec<(i64, i16, i64, i64, String)> = sqlx::query_as(
            "SELECT message_id, part, \"offset\", rev, text FROM reply_log \
             WHERE thread_id = $1 AND rev > $2 ORDER BY rev",
        )
        .bind(thread_id)
        .bind(after)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        // A streaming row read above already holds its log's text (an
        // ended one holds it too, but its text goes out first as deltas).
        let whole: HashSet<i64> = messages
            .iter()
            .filter(|m| m.status == Status::Streaming)
            .map(|m| m.id)
            .collect();
        let mut changes: Vec<Change> = Vec::with_capacity(messages.len() + log.len());
        for (id, part, offset, rev, text) in log {
            if whole.contains(&id) {
                continue;
            }
            let Ok(part) = Part::try_from(part as u8) else {
                continue;
            };
            changes.push(Change::Text {
                id,
                part,
                offset: offset as usize,
                rev,
                text,
            });
        }
        changes.extend(messages.into_iter().map(|m| Change::Row(Box::new(m))));
        changes.sort_by_key(Change::rev);
        Ok(changes)
    }

    /// Sends a control message to every instance (this one included).
    pub(super) async fn notify(&self, payload: &str) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CONTROL_CHANNEL)
            .bind(payload)
            .execute(self.pool())
            .await
            .map(drop)
    }
}
