//! Sending a message: validate, commit the user's message and (when the bot
//! is mentioned) its placeholder reply in one transaction, and only then
//! start the generation task. The placeholder row is the job record: one a
//! crash leaves `streaming` is found again at start-up ([`recover`]).

use super::{generate, state::AppState, store::Store, writer::NewPost};
use crate::{
    error::AppError,
    model::{mentions, validate_post, Posted, BOT_HANDLE},
};

pub async fn send(
    state: &AppState,
    thread_id: String,
    author: &str,
    body: &str,
) -> Result<Posted, AppError> {
    let (author, body) = validate_post(author, body)?;
    let reply_model = mentions(&body, BOT_HANDLE).then(|| state.provider.model().to_owned());
    let posted = state
        .writer
        .post(NewPost {
            thread_id,
            author,
            body,
            reply_model,
        })
        .await?;
    if let Some(reply) = &posted.reply {
        tracing::info!(message_id = reply.id, thread_id = %reply.thread_id, "reply started");
        generate::spawn(state.clone(), reply.clone());
    }
    Ok(posted)
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
