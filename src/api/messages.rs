use leptos::prelude::*;

use crate::{
    error::AppError,
    model::{Message, Posted, ThreadPage},
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
        let thread = state
            .store
            .thread(&thread)
            .await?
            .ok_or_else(|| AppError::NotFound(format!("There is no thread \"{thread}\".")))?;
        let granularity = state.store.thread_granularity(&thread.id).await?;
        let latest = state
            .store
            .latest(&thread.id, crate::model::PAGE_SIZE)
            .await?;
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
        })
    }
    .await;
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
