//! Starting replies: validate, commit the rows (the user's message and the
//! placeholder reply in one transaction, or a restart), and only then start
//! the generation task. A placeholder row is the job record: one a crash
//! leaves `streaming` is found again at start-up ([`recover`]).

use super::{
    generate,
    generations::EndRequest,
    state::AppState,
    store::Store,
    writer::{NewPost, NewReply, Restart},
};
use crate::{
    error::AppError,
    model::{validate_post, Message, Posted, MAX_AUTHOR_CHARS},
};

pub async fn send(
    state: &AppState,
    thread_id: String,
    author: &str,
    body: &str,
) -> Result<Posted, AppError> {
    let (author, body) = validate_post(author, body)?;
    // Limits are checked before anything is written: a refused request
    // changes nothing and the author still holds their text.
    let bots = state.bots.mentioned(&body);
    let mut slots = Vec::with_capacity(bots.len());
    for _ in &bots {
        slots.push(state.generations.reserve()?);
    }
    if !bots.is_empty() {
        state.generations.check_rate(&author)?;
    }
    let replies = bots
        .iter()
        .map(|bot| NewReply {
            handle: bot.config.handle.clone(),
            model: bot.provider.model().to_owned(),
        })
        .collect();
    let posted = state
        .writer
        .post(NewPost {
            thread_id,
            author,
            body,
            replies,
        })
        .await?;
    for (reply, slot) in posted.replies.iter().zip(slots) {
        tracing::info!(message_id = reply.id, thread_id = %reply.thread_id, bot = %reply.author, "reply started");
        let handle = state.generations.register(reply.id, slot);
        generate::spawn(state.clone(), reply.clone(), handle, false);
    }
    Ok(posted)
}

/// Regenerate (a new reply to the same prompt) or Continue (the same reply,
/// picked up where it stopped).
pub async fn restart(
    state: &AppState,
    id: i64,
    kind: Restart,
    by: &str,
) -> Result<Message, AppError> {
    let by = requester(by);
    let slot = state.generations.reserve()?;
    state.generations.check_rate(&by)?;
    let original = state
        .store
        .message(id)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("There is no message {id}.")))?;
    let model = state.bots.get(&original.author).provider.model().to_owned();
    let reply = state.writer.restart(id, kind, by, model).await?;
    tracing::info!(message_id = reply.id, ?kind, "reply restarted");
    let handle = state.generations.register(reply.id, slot);
    generate::spawn(
        state.clone(),
        reply.clone(),
        handle,
        kind == Restart::Continue,
    );
    Ok(reply)
}

/// Stop: ends a streaming reply, keeping its text, recording who stopped it.
pub async fn stop(state: &AppState, id: i64, by: &str) -> Result<(), AppError> {
    let by = requester(by);
    if state.generations.end(id, EndRequest::Stop { by }) {
        return Ok(());
    }
    match state.store.message(id).await? {
        None => Err(AppError::NotFound(format!("There is no message {id}."))),
        Some(m) => Err(AppError::Conflict(format!(
            "This reply has already ended ({}).",
            m.status.label()
        ))),
    }
}

/// A name for who asked, from what the browser sent.
fn requester(by: &str) -> String {
    let by: String = by
        .trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_AUTHOR_CHARS)
        .collect();
    if by.is_empty() {
        "someone".into()
    } else {
        by
    }
}

/// Start-up recovery, before the writer starts: replies left `streaming` by
/// a crash become `interrupted` with their text kept. Returns the last
/// revision used.
pub async fn recover(store: &Store) -> anyhow::Result<i64> {
    let rev = store.max_rev().await? + 1;
    let interrupted = store.interrupt_streaming(rev).await?;
    if interrupted > 0 {
        tracing::warn!(
            interrupted,
            "replies left streaming by a previous run marked interrupted"
        );
        Ok(rev)
    } else {
        Ok(rev - 1)
    }
}
