//! One batch of commands as one transaction, one function per command,
//! each returning its caller's answer and recording what the commit will
//! do ([`Effects`]). A batch of nothing but text for replies the writer
//! tracks is a single statement where the store can number it alone.

use std::{collections::HashMap, sync::Arc};

use super::{faults::stored_in_part, WriterTask};
use crate::server::{
    now_ms,
    store::{
        writer::{
            effects::{Answer, Effects},
            pending::{log_rows, Pending, PendingAppend, Placed},
            replies::{Claim, Log},
            Adopted, Command, NewAttempt,
        },
        LogCursor, NewMessage, StoreError, Tx,
    },
};
use crate::{
    error::AppError,
    model::{body_hash, ChatEvent, Message, NewPost, Outcome, Posted, Role, Status},
};

/// A transaction under way: the transaction, the batch's waiting text and
/// what the commit will do.
struct Batch {
    tx: Tx,
    pending: Pending,
    effects: Effects,
    now: i64,
}

impl WriterTask {
    /// Applies `commands` in one transaction; nothing of it is stored or
    /// changed in the writer unless it commits.
    pub(super) async fn apply(&mut self, commands: &[Command]) -> Result<Effects, StoreError> {
        if let Some(effects) = self.apply_text_only(commands).await? {
            return Ok(effects);
        }
        let mut tx = self.store.begin().await?;
        self.before_writes(&mut tx, commands).await?;
        let mut batch = Batch {
            tx,
            pending: Pending::default(),
            effects: Effects::default(),
            now: now_ms(),
        };
        for command in commands {
            let answer = self.command(&mut batch, command).await?;
            batch.effects.answer(answer);
        }
        let rest = std::mem::take(&mut batch.pending).into_appends();
        self.flush(&mut batch, rest).await?;
        let Batch {
            tx, mut effects, ..
        } = batch;
        effects.committed(tx.commit().await?);
        Ok(effects)
    }

    async fn command(&mut self, b: &mut Batch, command: &Command) -> Result<Answer, StoreError> {
        Ok(match command {
            Command::Append {
                thread_id,
                id,
                part,
                text,
                received,
            } => {
                if !self.replies.is_broken(*id) && !self.replies.is_lost(*id) {
                    b.pending.merge(thread_id, *id, *part, text, *received);
                }
                Answer::Nothing
            }
            Command::Ping(_) => Answer::Pong,
            Command::Close(_) => Answer::Nothing,
            Command::Renew => self.renew(b).await?,
            Command::Release { id, .. } => self.release(b, *id).await?,
            Command::Adopt { thread_id, id, .. } => self.adopt(b, thread_id, *id).await?,
            Command::Finish {
                thread_id,
                id,
                outcome,
            } => self.finish(b, thread_id, *id, outcome).await?,
            Command::Post(post, _) => Answer::Posted(self.post(b, post).await?),
            Command::Attempt(attempt, _) => Answer::Restarted(Ok(self.attempt(b, attempt).await?)),
            Command::Reopen {
                thread_id,
                id,
                from,
                requested_by,
                ..
            } => self.reopen(b, thread_id, *id, from, requested_by).await?,
            Command::Notice {
                thread_id,
                id,
                notice,
                retries,
            } => self.notice(b, thread_id, *id, notice, *retries).await?,
            Command::Thought {
                thread_id,
                id,
                thinking_ms,
            } => self.thought(b, thread_id, *id, *thinking_ms).await?,
        })
    }

    /// Renews every claim held; those another instance took are given up.
    async fn renew(&mut self, b: &mut Batch) -> Result<Answer, StoreError> {
        let held = self.replies.held();
        for id in self.coordination.renew(&mut b.tx, &held).await? {
            self.lose(id);
        }
        Ok(Answer::Nothing)
    }

    /// Hands reply `id` over: its text so far stored, its claim given up.
    async fn release(&mut self, b: &mut Batch, id: i64) -> Result<Answer, StoreError> {
        let appends = b.pending.take(id);
        self.flush(b, appends).await?;
        if let Some(epoch) = self.replies.epoch(id) {
            if !self.replies.is_lost(id) {
                self.coordination.release(&mut b.tx, id, epoch).await?;
            }
        }
        let changes = b.effects.changes();
        changes.log(id, Log::Closed);
        changes.claim(id, Claim::Released);
        changes.ended(id);
        Ok(Answer::Nothing)
    }

    /// Takes reply `id` over if its producer's claim expired.
    async fn adopt(
        &mut self,
        b: &mut Batch,
        thread_id: &str,
        id: i64,
    ) -> Result<Answer, StoreError> {
        let rev = b.tx.next_rev(thread_id).await?;
        let adopted = self
            .coordination
            .adopt(&mut b.tx, thread_id, id, b.now, rev)
            .await?;
        let Some((message, epoch, stop_requested_by)) = adopted else {
            return Ok(Answer::Adopted(None));
        };
        let cursor = b.tx.log_cursor(id).await?;
        let changes = b.effects.changes();
        changes.log(id, cursor.map_or(Log::Closed, Log::At));
        changes.claim(id, Claim::Held(epoch));
        b.effects.message(rev, &message);
        Ok(Answer::Adopted(Some(Adopted {
            message,
            stop_requested_by,
        })))
    }

    /// Records how reply `id` ended (its text first); a reply whose text
    /// was not all stored ends `failed`; one whose claim was lost is the new
    /// producer's to end.
    async fn finish(
        &mut self,
        b: &mut Batch,
        thread_id: &Arc<str>,
        id: i64,
        outcome: &Outcome,
    ) -> Result<Answer, StoreError> {
        if self.replies.is_lost(id) {
            b.pending.drop_reply(id);
            b.effects.changes().ended(id);
            return Ok(Answer::Nothing);
        }
        let appends = b.pending.take(id);
        self.flush(b, appends).await?;
        let outcome = if self.replies.is_broken(id) {
            stored_in_part(outcome)
        } else {
            outcome.clone()
        };
        let rev = b.tx.next_rev(thread_id).await?;
        if let Some((body, thinking, tools)) =
            b.tx.finish(thread_id, id, &outcome, b.now, rev).await?
        {
            let changes = b.effects.changes();
            changes.log(id, Log::Closed);
            changes.claim(id, Claim::Released);
            let event = ChatEvent::Finished {
                id,
                status: outcome.status,
                len: body.len(),
                hash: body_hash(&body),
                thinking_len: thinking.len(),
                thinking_hash: body_hash(&thinking),
                tools_len: tools.len(),
                tools_hash: body_hash(&tools),
                error: outcome.error,
                finish_reason: outcome.finish_reason,
                stopped_by: outcome.stopped_by,
                stats: outcome.stats,
                finished_at: b.now,
            };
            b.effects.event(thread_id.clone(), rev, event);
        }
        b.effects.changes().ended(id);
        Ok(Answer::Nothing)
    }

    /// A user's message and one placeholder reply per bot it mentions; a
    /// repeated request gets what the first one stored.
    async fn post(
        &mut self,
        b: &mut Batch,
        post: &NewPost,
    ) -> Result<Result<Posted, AppError>, StoreError> {
        if !b.tx.thread_exists(&post.thread_id).await? {
            return Ok(Err(AppError::no_thread(&post.thread_id)));
        }
        if let Some(request_id) = &post.request_id {
            if let Some(mut posted) = b.tx.posted_by_request(&post.thread_id, request_id).await? {
                posted.repeated = true;
                return Ok(Ok(posted));
            }
        }
        let user = NewMessage {
            thread_id: &post.thread_id,
            author: &post.author,
            role: Role::User,
            body: &post.body,
            status: Status::Done,
            model: None,
            requested_by: None,
            context_before: None,
            request_id: post.request_id.as_deref(),
            reply_to: None,
        };
        let rev = b.tx.next_rev(&post.thread_id).await?;
        let message = b.tx.insert_message(&user, b.now, rev).await?;
        b.effects.message(rev, &message);
        let mut replies = Vec::with_capacity(post.replies.len());
        for new_reply in &post.replies {
            let placeholder = NewMessage {
                thread_id: &post.thread_id,
                author: &new_reply.handle,
                role: Role::Assistant,
                body: "",
                status: Status::Streaming,
                model: Some(&new_reply.model),
                requested_by: Some(&post.author),
                context_before: None,
                request_id: None,
                reply_to: Some(message.id),
            };
            replies.push(self.insert_reply(b, &placeholder).await?);
        }
        Ok(Ok(Posted {
            message,
            replies,
            repeated: false,
        }))
    }

    /// A new placeholder reply (Regenerate).
    async fn attempt(
        &mut self,
        b: &mut Batch,
        attempt: &NewAttempt,
    ) -> Result<Message, StoreError> {
        let placeholder = NewMessage {
            thread_id: &attempt.thread_id,
            author: &attempt.author,
            role: Role::Assistant,
            body: "",
            status: Status::Streaming,
            model: Some(&attempt.model),
            requested_by: Some(&attempt.requested_by),
            context_before: Some(attempt.context_before),
            request_id: None,
            reply_to: None,
        };
        self.insert_reply(b, &placeholder).await
    }

    /// Puts an ended reply back to `streaming` (Continue), its text kept.
    async fn reopen(
        &mut self,
        b: &mut Batch,
        thread_id: &str,
        id: i64,
        from: &'static [Status],
        requested_by: &str,
    ) -> Result<Answer, StoreError> {
        let rev = b.tx.next_rev(thread_id).await?;
        let Some(row) =
            b.tx.reopen(thread_id, id, from, requested_by, b.now, rev)
                .await?
        else {
            let refused = AppError::Conflict("This reply cannot be continued.".into());
            return Ok(Answer::Restarted(Err(refused)));
        };
        let epoch = self.epoch(&mut b.tx, row.id).await?;
        let changes = b.effects.changes();
        changes.claim(row.id, epoch.map_or(Claim::Released, Claim::Held));
        changes.log(
            row.id,
            Log::At(LogCursor {
                lens: row.part_lens(),
                next_seq: 0,
            }),
        );
        b.effects.message(rev, &row);
        Ok(Answer::Restarted(Ok(row)))
    }

    /// Sets (or clears) a streaming reply's passing note.
    async fn notice(
        &mut self,
        b: &mut Batch,
        thread_id: &Arc<str>,
        id: i64,
        notice: &Option<String>,
        retries: i64,
    ) -> Result<Answer, StoreError> {
        if self.replies.is_lost(id) {
            return Ok(Answer::Nothing);
        }
        let rev = b.tx.next_rev(thread_id).await?;
        if b.tx
            .set_notice(thread_id, id, notice.as_deref(), retries, b.now, rev)
            .await?
        {
            let event = ChatEvent::Notice {
                id,
                notice: notice.clone(),
                retries,
            };
            b.effects.event(thread_id.clone(), rev, event);
        }
        Ok(Answer::Nothing)
    }

    /// Records how long a reasoning reply thought.
    async fn thought(
        &mut self,
        b: &mut Batch,
        thread_id: &Arc<str>,
        id: i64,
        thinking_ms: i64,
    ) -> Result<Answer, StoreError> {
        if self.replies.is_lost(id) {
            return Ok(Answer::Nothing);
        }
        let rev = b.tx.next_rev(thread_id).await?;
        if b.tx
            .set_thinking_ms(thread_id, id, thinking_ms, b.now, rev)
            .await?
        {
            let event = ChatEvent::Thought { id, thinking_ms };
            b.effects.event(thread_id.clone(), rev, event);
        }
        Ok(Answer::Nothing)
    }

    /// Inserts an empty streaming reply; its log starts at 0.
    async fn insert_reply(
        &mut self,
        b: &mut Batch,
        placeholder: &NewMessage<'_>,
    ) -> Result<Message, StoreError> {
        let rev = b.tx.next_rev(placeholder.thread_id).await?;
        let row = b.tx.insert_message(placeholder, b.now, rev).await?;
        let epoch = self.epoch(&mut b.tx, row.id).await?;
        let changes = b.effects.changes();
        changes.log(row.id, Log::At(LogCursor::default()));
        changes.claim(row.id, epoch.map_or(Claim::Released, Claim::Held));
        b.effects.message(rev, &row);
        Ok(row)
    }

    /// Where a streaming reply's log stands in this batch, or `None` if it
    /// does not stream (it ended, or never streamed here).
    async fn cursor(&self, b: &mut Batch, id: i64) -> Result<Option<LogCursor>, StoreError> {
        Ok(match b.effects.log_of(id) {
            Some(Log::At(cursor)) => Some(cursor),
            Some(Log::Closed) => None,
            None => match self.replies.cursor(id) {
                Some(cursor) => Some(cursor),
                None => b.tx.log_cursor(id).await?,
            },
        })
    }

    /// Writes appends (at most one per part of a reply) as log rows.
    async fn flush(
        &mut self,
        b: &mut Batch,
        appends: Vec<PendingAppend>,
    ) -> Result<(), StoreError> {
        let mut rows: Vec<Placed> = Vec::with_capacity(appends.len());
        for append in appends {
            let Some(cursor) = self.cursor(b, append.id).await? else {
                tracing::warn!(
                    message_id = append.id,
                    "append to a reply that is no longer streaming dropped"
                );
                continue;
            };
            let rev = b.tx.next_rev(&append.thread_id).await?;
            // The next append of this reply starts after this one.
            let after = cursor.after(append.part, append.text.len());
            b.effects.changes().log(append.id, Log::At(after));
            rows.push((append, cursor, rev));
        }
        if rows.is_empty() {
            return Ok(());
        }
        b.tx.append_log(&log_rows(&rows)).await?;
        b.effects.appended(rows);
        Ok(())
    }

    /// The common batch under streaming: nothing but text for replies whose
    /// log this writer tracks, stored as one statement (atomic on its own,
    /// no BEGIN/COMMIT round trips) where the store numbers it alone.
    /// `None` when the batch is anything else.
    async fn apply_text_only(
        &mut self,
        commands: &[Command],
    ) -> Result<Option<Effects>, StoreError> {
        if !self.store.appends_alone() {
            return Ok(None);
        }
        let mut pending = Pending::default();
        for command in commands {
            let Command::Append {
                thread_id,
                id,
                part,
                text,
                received,
            } = command
            else {
                return Ok(None);
            };
            if self.replies.cursor(*id).is_none() || self.replies.is_broken(*id) {
                return Ok(None);
            }
            pending.merge(thread_id, *id, *part, text, *received);
        }
        let mut rows: Vec<Placed> = Vec::new();
        let mut at: HashMap<i64, LogCursor> = HashMap::new();
        for append in pending.into_appends() {
            let cursor = *at
                .entry(append.id)
                .or_insert_with(|| self.replies.cursor(append.id).expect("checked above"));
            at.insert(append.id, cursor.after(append.part, append.text.len()));
            rows.push((append, cursor, 0));
        }
        // The store stamps each row with its revision.
        let mut log = log_rows(&rows);
        if self.store.append_log(&mut log).await?.is_none() {
            return Ok(None);
        }
        let revs: Vec<i64> = log.iter().map(|row| row.rev).collect();
        for (row, rev) in rows.iter_mut().zip(revs) {
            row.2 = rev;
        }
        let mut effects = Effects::default();
        effects.appended(rows);
        for _ in commands {
            effects.answer(Answer::Nothing);
        }
        Ok(Some(effects))
    }
}
