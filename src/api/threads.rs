use leptos::prelude::*;

use crate::{
    error::AppError,
    model::{Home, Thread, ThreadSummary},
};

/// How many threads the thread list shows.
pub const THREAD_LIST_SIZE: i64 = 100;
/// Longest thread title, in characters.
pub const MAX_TITLE_CHARS: usize = 80;

/// Listed threads by last activity, newest first.
#[server(endpoint = "list_threads")]
pub async fn list_threads() -> Result<Vec<ThreadSummary>, AppError> {
    use super::respond;
    let state = respond::state();
    let result = state
        .store
        .list_threads(THREAD_LIST_SIZE)
        .await
        .map_err(AppError::from);
    respond::finish(result)
}

/// The home page's data: the thread list, the viewer's private threads,
/// and whether search is on.
#[server(endpoint = "load_home")]
pub async fn load_home() -> Result<Home, AppError> {
    use super::respond;
    let state = respond::state();
    let result = async {
        let threads = state.store.list_threads(THREAD_LIST_SIZE).await?;
        let who = respond::requester(&state)?;
        let private = state
            .members
            .threads_of(who.identity.as_deref(), THREAD_LIST_SIZE)
            .await?;
        Ok(Home {
            threads,
            private,
            search: state.config.search.enabled,
            access: state.config.access.mode(),
        })
    }
    .await;
    respond::finish(result)
}

/// Creates a thread with an unguessable id and opens it. A listed thread is
/// on the home page for everyone. Where people are signed in (`accounts`,
/// `proxy`), the other kind is private: only its members see it, its
/// creator first (`unlisted` means the same there). In `open` mode it is
/// unlisted: reached only through its URL.
#[server(endpoint = "create_thread")]
pub async fn create_thread(
    #[server(default)] title: String,
    #[server(default)] unlisted: bool,
    #[server(default)] private: bool,
) -> Result<Thread, AppError> {
    use super::respond;
    let state = respond::state();
    let result = async {
        let title = validate_title(&title)?;
        // 64 random bits: an unlisted thread's URL is what lets one read it.
        let id = uuid::Uuid::new_v4().simple().to_string()[..16].to_owned();
        let hidden = unlisted || private;
        let owner = match respond::requester(&state)?.identity {
            Some(name) if hidden && state.members.private_threads() => Some(name),
            _ if private => {
                return Err(AppError::Invalid(
                    "Private threads need people signed in (access.mode accounts or proxy)."
                        .into(),
                ))
            }
            _ => None,
        };
        match &owner {
            Some(owner) => state.store.create_private_thread(&id, &title, owner).await?,
            None => state.store.create_thread(&id, &title, !hidden).await?,
        }
        state.hub.thread_changed(&id);
        state.coordination.thread_changed(&id).await;
        tracing::info!(thread_id = %id, listed = !hidden, private = owner.is_some(), "thread created");
        Ok(Thread {
            id,
            title,
            listed: !hidden,
            owner,
        })
    }
    .await;
    if let Ok(thread) = &result {
        leptos_axum::redirect(&format!("/t/{}", thread.id));
    }
    respond::finish(result)
}

/// Gives a thread a new title; everyone watching it, and the thread list,
/// see it at once.
#[server(endpoint = "rename_thread")]
pub async fn rename_thread(
    thread: String,
    #[server(default)] title: String,
) -> Result<Thread, AppError> {
    use super::respond;
    use crate::model::ChatEvent;
    let state = respond::state();
    let result = async {
        let (_, mut found) = respond::member(&state, &thread).await?;
        let title = validate_title(&title)?;
        if !state.store.rename_thread(&thread, &title).await? {
            return Err(AppError::no_thread(&thread));
        }
        if let Some(summary) = state.store.thread_summary(&thread).await? {
            state
                .hub
                .publish_ephemeral(&thread, ChatEvent::Thread { thread: summary });
        }
        state.hub.thread_changed(&thread);
        state.coordination.thread_changed(&thread).await;
        found.title = title;
        Ok(found)
    }
    .await;
    respond::finish(result)
}

/// A title as stored: trimmed, on one line, 1 to [`MAX_TITLE_CHARS`] characters.
pub fn validate_title(title: &str) -> Result<String, AppError> {
    let title: String = title
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let count = title.chars().count();
    if count == 0 || count > MAX_TITLE_CHARS {
        return Err(AppError::Invalid(format!(
            "A thread title has 1 to {MAX_TITLE_CHARS} characters."
        )));
    }
    Ok(title)
}
