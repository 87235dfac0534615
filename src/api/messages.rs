use leptos::prelude::*;

use crate::{
    error::AppError,
    model::{HistoryPage, Message, Posted, ThreadPage},
};

/// Posts a message; when it mentions `@gpt` the bot's reply starts streaming.
/// A post repeating an earlier `request_id` in the thread stores nothing and
/// answers with what the first one stored.
#[server(endpoint = "send_message")]
pub async fn send_message(
    thread: String,
    #[server(default)] author: String,
    #[server(default)] body: String,
    #[server(default)] request_id: String,
) -> Result<Posted, AppError> {
    use super::respond;
    use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};

    let state = respond::state();
    let result = async {
        let (who, _) = respond::member(&state, &thread).await?;
        let post = crate::server::ingest::outbox::Post {
            thread_id: thread,
            author: who.name_or(&author),
            body: &body,
            request_id: &request_id,
            signed_in: who.identity.is_some(),
        };
        crate::server::ingest::outbox::send(&respond::ingest(&state), &who.client, post).await
    }
    .await;
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
        let (who, thread) = respond::member(&state, &thread).await?;
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
            signed_in: who.identity,
            request_id: crate::server::ingest::outbox::new_request_id(),
            thread,
            messages: latest.messages,
            rev: latest.rev,
            author,
            granularity,
            default_granularity: state.config.stream.granularity,
            more,
            bots: state.bots.handles(),
            search: state.config.search.enabled,
            access: state.config.access.mode(),
            requester_approves: state.config.tools.approver
                == crate::server::config::Approver::Requester,
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
    let result = async {
        respond::member(&state, &thread).await?;
        let (messages, more) = state
            .store
            .messages_before(&thread, before, crate::model::PAGE_SIZE)
            .await?;
        Ok(HistoryPage { messages, more })
    }
    .await;
    respond::finish(result)
}

/// One message of a thread as stored now (a client re-fetches after a gap
/// or a hash mismatch). A message is only ever read through its thread.
#[server(endpoint = "get_message")]
pub async fn get_message(thread: String, id: i64) -> Result<Message, AppError> {
    use super::respond;

    let state = respond::state();
    let result = async {
        respond::member(&state, &thread).await?;
        state
            .store
            .message(&thread, id)
            .await?
            .ok_or_else(|| AppError::no_message(id))
    }
    .await;
    respond::finish(result)
}
