use leptos::prelude::*;

use crate::{
    error::AppError,
    model::{HistoryPage, Message, Posted, ThreadPage},
};

/// Posts a message; when it mentions `@gpt` the bot's reply starts streaming.
#[server(endpoint = "send_message")]
pub async fn send_message(
    thread: String,
    #[server(default)] author: String,
    #[server(default)] body: String,
) -> Result<Posted, AppError> {
    use super::respond;
    use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};

    let state = respond::state();
    let result = crate::server::outbox::send(&state, thread, &author, &body).await;
    if let Ok(posted) = &result {
        respond::set_cookie(
            super::AUTHOR_COOKIE,
            &URL_SAFE_NO_PAD.encode(&posted.message.author),
        );
    }
    respond::finish(result)
}

/// The thread and its most recent messages, oldest first.
#[server(endpoint = "list_messages")]
pub async fn list_messages(thread: String) -> Result<ThreadPage, AppError> {
    use super::respond;
    use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};

    let state = respond::state();
    let result = async {
        let thread = state.store.existing_thread(&thread).await?;
        let granularity = state.store.thread_granularity(&thread.id).await?;
        // One more than a page tells whether older messages exist.
        let mut latest = state
            .store
            .latest(&thread.id, crate::model::PAGE_SIZE + 1)
            .await?;
        let more = latest.messages.len() as i64 > crate::model::PAGE_SIZE;
        if more {
            latest.messages.remove(0);
        }
        let author = respond::cookie(super::AUTHOR_COOKIE)
            .and_then(|v| URL_SAFE_NO_PAD.decode(v).ok())
            .and_then(|v| String::from_utf8(v).ok());
        Ok(ThreadPage {
            thread,
            messages: latest.messages,
            rev: latest.rev,
            author,
            granularity,
            default_granularity: state.config.stream.granularity,
            more,
            bots: state.bots.handles(),
        })
    }
    .await;
    respond::finish(result)
}

/// Up to a page of the thread's messages older than message `before`
/// (scrolling back).
#[server(endpoint = "older_messages")]
pub async fn older_messages(thread: String, before: i64) -> Result<HistoryPage, AppError> {
    use super::respond;

    let state = respond::state();
    let result = state
        .store
        .messages_before(&thread, before, crate::model::PAGE_SIZE)
        .await
        .map(|(messages, more)| HistoryPage { messages, more })
        .map_err(AppError::from);
    respond::finish(result)
}

/// One message as stored now (a client re-fetches after a gap or a hash mismatch).
#[server(endpoint = "get_message")]
pub async fn get_message(id: i64) -> Result<Message, AppError> {
    use super::respond;

    let state = respond::state();
    let result = state
        .store
        .message(id)
        .await
        .map_err(AppError::from)
        .and_then(|m| m.ok_or_else(|| AppError::NotFound(format!("There is no message {id}."))));
    respond::finish(result)
}
