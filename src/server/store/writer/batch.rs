//! One batch of commands as one transaction: merged appends, inserts,
//! ends, restarts and leases, and what the batch will do once committed
//! ([`Effects`]). A batch of nothing but text, for replies the writer
//! tracks, is a single statement with one instance.

use crate::server::store::StoreError;
use std::{collections::HashMap, sync::Arc};

use tokio::time::Instant;

use super::{faults::stored_in_part, task::WriterTask, Adopted, Command, NewAttempt};
use crate::server::{
    now_ms,
    store::{LogAppend, LogCursor, NewMessage, Revisions, Tx},
};
use crate::{
    error::AppError,
    model::{body_hash, ChatEvent, Message, NewPost, Part, Posted, Role, Status},
};

/// What a batch will do once committed. Replies to callers are by position
/// in the batch's commands.
#[derive(Default)]
pub(super) struct Effects {
    pub(super) events: Vec<(Arc<str>, i64, ChatEvent)>,
    pub(super) replies: Vec<(usize, Result<Posted, AppError>)>,
    pub(super) restarts: Vec<(usize, Result<Message, AppError>)>,
    pub(super) pings: Vec<usize>,
    pub(super) cursors: HashMap<i64, Option<LogCursor>>,
    /// Leases taken (Some(epoch)) or given up (None) by this batch.
    pub(super) leases: HashMap<i64, Option<i64>>,
    /// Adoptions answered, by position in the batch.
    pub(super) adoptions: Vec<(usize, Option<Adopted>)>,
    /// Wake-ups the commit sent to other instances (PostgreSQL).
    pub(super) notifications: u64,
    /// Replies whose end this batch recorded.
    pub(super) finished: Vec<i64>,
    /// When the provider sent each published delta's oldest text.
    pub(super) received: Vec<Instant>,
}

impl Effects {
    /// Records appended log rows (each numbered with its reply's cursor
    /// before it, already advanced in `cursors`) as deltas.
    pub(super) fn appended(&mut self, rows: Vec<(PendingAppend, LogCursor, i64)>) {
        for (append, cursor, rev) in rows {
            let PendingAppend {
                thread_id,
                id,
                part,
                text,
                received,
            } = append;
            let offset = cursor.len(part);
            self.received.push(received);
            self.events.push((
                thread_id,
                rev,
                ChatEvent::Delta {
                    id,
                    part,
                    offset,
                    text,
                },
            ));
        }
    }

    /// Publishes a message row as it now stands.
    pub(super) fn message(&mut self, rev: i64, message: &Message) {
        self.events.push((
            message.thread_id.as_str().into(),
            rev,
            ChatEvent::Message {
                message: message.clone(),
            },
        ));
    }
}

/// Appends to one part of a message merged within a batch.
pub(super) struct PendingAppend {
    pub(super) thread_id: Arc<str>,
    pub(super) id: i64,
    pub(super) part: Part,
    pub(super) text: String,
    pub(super) received: Instant,
}

impl WriterTask {
    pub(super) async fn apply(&mut self, commands: &[Command]) -> Result<Effects, StoreError> {
        if let Some(effects) = self.apply_text_only(commands).await? {
            return Ok(effects);
        }
        let mut effects = Effects::default();
        // Appends are merged per message until something else touches it.
        let mut pending: Vec<PendingAppend> = Vec::new();
        let mut tx = self.store.begin().await?;
        self.before_writes(&mut tx, commands).await?;
        let now = now_ms();
        for (at, command) in commands.iter().enumerate() {
            match command {
                Command::Append {
                    thread_id,
                    id,
                    part,
                    text,
                    received,
                } => {
                    if self.is_broken(*id) || self.is_lost(*id) {
                        continue;
                    }
                    merge(&mut pending, thread_id, *id, *part, text, *received);
                }
                Command::Ping(_) => effects.pings.push(at),
                Command::Close(_) => {}
                Command::Renew => {
                    let held: Vec<(i64, i64)> = self
                        .replies
                        .iter()
                        .filter_map(|(id, r)| Some((*id, r.epoch?)))
                        .collect();
                    for id in tx
                        .postgres()?
                        .renew(&held)
                        .await
                        .map_err(doing!("renewing leases {held:?}"))?
                    {
                        self.lose(id);
                    }
                }
                Command::Release { id, .. } => {
                    let id = *id;
                    let appends = take_pending(&mut pending, id);
                    self.flush_all(&mut tx, &mut effects, appends).await?;
                    if let Some(epoch) = self.replies.get(&id).and_then(|r| r.epoch) {
                        if !self.is_lost(id) {
                            tx.postgres()?
                                .release(id, epoch)
                                .await
                                .map_err(doing!("releasing reply {id}"))?;
                        }
                    }
                    effects.cursors.insert(id, None);
                    effects.leases.insert(id, None);
                    effects.finished.push(id);
                }
                Command::Adopt { thread_id, id, .. } => {
                    let rev = self.rev(&mut tx, thread_id).await?;
                    let adopted = match tx
                        .postgres()?
                        .adopt(thread_id, *id, now, rev)
                        .await
                        .map_err(doing!("adopting reply {id} (thread {thread_id})"))?
                    {
                        Some((message, epoch, stop_requested_by)) => {
                            let cursor = tx.log_cursor(*id).await?;
                            effects.cursors.insert(*id, cursor);
                            effects.leases.insert(*id, Some(epoch));
                            effects.message(rev, &message);
                            Some(Adopted {
                                message,
                                stop_requested_by,
                            })
                        }
                        None => None,
                    };
                    effects.adoptions.push((at, adopted));
                }
                Command::Finish {
                    thread_id,
                    id,
                    outcome,
                } => {
                    let id = *id;
                    if self.is_lost(id) {
                        // Its end is the new producer's to record.
                        pending.retain(|p| p.id != id);
                        effects.finished.push(id);
                        continue;
                    }
                    let appends = take_pending(&mut pending, id);
                    self.flush_all(&mut tx, &mut effects, appends).await?;
                    let outcome = if self.is_broken(id) {
                        stored_in_part(outcome)
                    } else {
                        outcome.clone()
                    };
                    let rev = self.rev(&mut tx, thread_id).await?;
                    if let Some((body, thinking, tools)) =
                        tx.finish(thread_id, id, &outcome, now, rev).await?
                    {
                        effects.cursors.insert(id, None);
                        effects.leases.insert(id, None);
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
                            finished_at: now,
                        };
                        effects.events.push((thread_id.clone(), rev, event));
                    }
                    effects.finished.push(id);
                }
                Command::Post(post, _) => {
                    let result = self.insert_post(&mut tx, &mut effects, post, now).await?;
                    effects.replies.push((at, result));
                }
                Command::Attempt(attempt, _) => {
                    let row = self
                        .insert_attempt(&mut tx, &mut effects, attempt, now)
                        .await?;
                    effects.restarts.push((at, Ok(row)));
                }
                Command::Reopen {
                    thread_id,
                    id,
                    from,
                    requested_by,
                    ..
                } => {
                    let rev = self.rev(&mut tx, thread_id).await?;
                    let result = match tx
                        .reopen(thread_id, *id, from, requested_by, now, rev)
                        .await?
                    {
                        Some(row) => {
                            let epoch = self.epoch(&mut tx, row.id).await?;
                            effects.leases.insert(row.id, epoch);
                            effects.cursors.insert(
                                row.id,
                                Some(LogCursor {
                                    lens: row.part_lens(),
                                    next_seq: 0,
                                }),
                            );
                            effects.message(rev, &row);
                            Ok(row)
                        }
                        None => Err(AppError::Conflict("This reply cannot be continued.".into())),
                    };
                    effects.restarts.push((at, result));
                }
                Command::Notice {
                    thread_id,
                    id,
                    notice,
                    retries,
                } => {
                    if self.is_lost(*id) {
                        continue;
                    }
                    let rev = self.rev(&mut tx, thread_id).await?;
                    if tx
                        .set_notice(thread_id, *id, notice.as_deref(), *retries, now, rev)
                        .await?
                    {
                        effects.events.push((
                            thread_id.clone(),
                            rev,
                            ChatEvent::Notice {
                                id: *id,
                                notice: notice.clone(),
                                retries: *retries,
                            },
                        ));
                    }
                }
                Command::Thought {
                    thread_id,
                    id,
                    thinking_ms,
                } => {
                    if self.is_lost(*id) {
                        continue;
                    }
                    let rev = self.rev(&mut tx, thread_id).await?;
                    if tx
                        .set_thinking_ms(thread_id, *id, *thinking_ms, now, rev)
                        .await?
                    {
                        effects.events.push((
                            thread_id.clone(),
                            rev,
                            ChatEvent::Thought {
                                id: *id,
                                thinking_ms: *thinking_ms,
                            },
                        ));
                    }
                }
            }
        }
        self.flush_all(&mut tx, &mut effects, pending).await?;
        effects.notifications = tx.commit().await?;
        Ok(effects)
    }

    /// The common batch under streaming: nothing but text for replies whose
    /// log this writer tracks. Stored as one statement (atomic on its own,
    /// no BEGIN/COMMIT round trips). `None` when the batch is anything else.
    pub(super) async fn apply_text_only(
        &mut self,
        commands: &[Command],
    ) -> Result<Option<Effects>, StoreError> {
        if self.revisions == Revisions::PerThread {
            return Ok(None); // each change moves its thread's row: a transaction
        }
        let mut pending: Vec<PendingAppend> = Vec::new();
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
            if self.cursor_of(*id).is_none() || self.is_broken(*id) {
                return Ok(None);
            }
            merge(&mut pending, thread_id, *id, *part, text, *received);
        }
        let mut effects = Effects::default();
        let mut rows = Vec::with_capacity(pending.len());
        for append in pending {
            let cursor = match effects.cursors.get(&append.id) {
                Some(Some(cursor)) => *cursor,
                _ => self.cursor_of(append.id).expect("checked above"),
            };
            effects.cursors.insert(
                append.id,
                Some(cursor.after(append.part, append.text.len())),
            );
            let rev = self.global_rev();
            rows.push((append, cursor, rev));
        }
        let log = log_rows(&rows);
        // (Revisions handed out for a batch that is not stored leave a gap,
        // as in a failed transaction: revisions only need to increase.)
        if self.store.append_log(&log).await?.is_none() {
            return Ok(None);
        }
        effects.appended(rows);
        Ok(Some(effects))
    }

    /// Where a streaming reply's log stands now (this batch's view), or
    /// None if it is not streaming (it ended, or never streamed here).
    pub(super) async fn cursor(
        &self,
        tx: &mut Tx,
        effects: &Effects,
        id: i64,
    ) -> Result<Option<LogCursor>, StoreError> {
        Ok(match effects.cursors.get(&id) {
            Some(cursor) => *cursor,
            None => match self.cursor_of(id) {
                Some(cursor) => Some(cursor),
                None => tx.log_cursor(id).await?,
            },
        })
    }

    /// Appends (at most one per part of a message) as log rows.
    pub(super) async fn flush_all(
        &mut self,
        tx: &mut Tx,
        effects: &mut Effects,
        pending: Vec<PendingAppend>,
    ) -> Result<(), StoreError> {
        let mut rows = Vec::with_capacity(pending.len());
        for append in pending {
            match self.cursor(tx, effects, append.id).await? {
                Some(cursor) => {
                    let rev = self.rev(tx, &append.thread_id).await?;
                    effects.cursors.insert(
                        append.id,
                        Some(cursor.after(append.part, append.text.len())),
                    );
                    rows.push((append, cursor, rev));
                }
                None => tracing::warn!(
                    message_id = append.id,
                    "append to a reply that is no longer streaming dropped"
                ),
            }
        }
        if rows.is_empty() {
            return Ok(());
        }
        let log = log_rows(&rows);
        tx.append_log(&log).await?;
        effects.appended(rows);
        Ok(())
    }

    pub(super) async fn insert_post(
        &mut self,
        tx: &mut Tx,
        effects: &mut Effects,
        post: &NewPost,
        now: i64,
    ) -> Result<Result<Posted, AppError>, StoreError> {
        if !tx.thread_exists(&post.thread_id).await? {
            return Ok(Err(AppError::no_thread(&post.thread_id)));
        }
        if let Some(request_id) = &post.request_id {
            if let Some(mut posted) = tx.posted_by_request(&post.thread_id, request_id).await? {
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
        let rev = self.rev(tx, &post.thread_id).await?;
        let message = tx.insert_message(&user, now, rev).await?;
        effects.message(rev, &message);
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
            replies.push(self.insert_reply(tx, effects, &placeholder, now).await?);
        }
        Ok(Ok(Posted {
            message,
            replies,
            repeated: false,
        }))
    }

    pub(super) async fn insert_attempt(
        &mut self,
        tx: &mut Tx,
        effects: &mut Effects,
        attempt: &NewAttempt,
        now: i64,
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
        self.insert_reply(tx, effects, &placeholder, now).await
    }

    /// Inserts an empty streaming reply; its log starts at 0.
    pub(super) async fn insert_reply(
        &mut self,
        tx: &mut Tx,
        effects: &mut Effects,
        placeholder: &NewMessage<'_>,
        now: i64,
    ) -> Result<Message, StoreError> {
        let rev = self.rev(tx, placeholder.thread_id).await?;
        let row = tx.insert_message(placeholder, now, rev).await?;
        effects.cursors.insert(row.id, Some(LogCursor::default()));
        let epoch = self.epoch(tx, row.id).await?;
        effects.leases.insert(row.id, epoch);
        effects.message(rev, &row);
        Ok(row)
    }
}

/// Adds an append to the batch's pending text, merged with an earlier one
/// to the same part of the same reply.
pub(super) fn merge(
    pending: &mut Vec<PendingAppend>,
    thread_id: &Arc<str>,
    id: i64,
    part: Part,
    text: &str,
    received: Instant,
) {
    match pending.iter_mut().find(|p| p.id == id && p.part == part) {
        Some(p) => p.text.push_str(text),
        None => pending.push(PendingAppend {
            thread_id: thread_id.clone(),
            id,
            part,
            text: text.to_owned(),
            received,
        }),
    }
}

/// Removes reply `id`'s pending appends (both parts), in batch order.
pub(super) fn take_pending(pending: &mut Vec<PendingAppend>, id: i64) -> Vec<PendingAppend> {
    let (taken, kept) = std::mem::take(pending)
        .into_iter()
        .partition(|p| p.id == id);
    *pending = kept;
    taken
}

/// The log rows for appends numbered with their cursor and revision.
pub(super) fn log_rows(rows: &[(PendingAppend, LogCursor, i64)]) -> Vec<LogAppend<'_>> {
    rows.iter()
        .map(|(a, cursor, rev)| LogAppend {
            thread_id: &a.thread_id,
            id: a.id,
            part: a.part,
            seq: cursor.next_seq,
            offset: cursor.len(a.part),
            rev: *rev,
            text: &a.text,
        })
        .collect()
}
