use leptos::prelude::*;

use crate::{error::AppError, model::Message};

/// Stops a streaming reply of `thread`; its text so far is kept and who
/// stopped it is recorded.
#[server(endpoint = "stop_reply")]
pub async fn stop_reply(
    thread: String,
    id: i64,
    #[server(default)] by: String,
) -> Result<(), AppError> {
    use super::respond;
    let state = respond::state();
    let result = async {
        let (who, _) = respond::member(&state, &thread).await?;
        crate::server::ingest::outbox::stop(&respond::ingest(&state), &thread, id, who.name_or(&by))
            .await
    }
    .await;
    respond::finish(result)
}

/// A new reply to the same prompt as an ended one (which stays in history).
#[server(endpoint = "regenerate_reply")]
pub async fn regenerate_reply(
    thread: String,
    id: i64,
    #[server(default)] by: String,
) -> Result<Message, AppError> {
    use crate::model::Restart;
    restart(thread, id, Restart::Regenerate, by).await
}

/// Picks a cut-short reply up where it stopped, appending to the same message.
#[server(endpoint = "continue_reply")]
pub async fn continue_reply(
    thread: String,
    id: i64,
    #[server(default)] by: String,
) -> Result<Message, AppError> {
    use crate::model::Restart;
    restart(thread, id, Restart::Continue, by).await
}

#[cfg(feature = "ssr")]
async fn restart(
    thread: String,
    id: i64,
    kind: crate::model::Restart,
    by: String,
) -> Result<Message, AppError> {
    use super::respond;
    let state = respond::state();
    let result = async {
        let (who, _) = respond::member(&state, &thread).await?;
        crate::server::ingest::outbox::restart(
            &respond::ingest(&state),
            &who.client,
            &thread,
            id,
            kind,
            who.name_or(&by),
        )
        .await
    }
    .await;
    respond::finish(result)
}

/// Tokens used by a thread's replies, in total and per asking author.
#[server(endpoint = "usage_totals")]
pub async fn usage_totals(thread: String) -> Result<crate::model::UsageTotals, AppError> {
    use super::respond;
    let state = respond::state();
    let result = async {
        respond::member(&state, &thread).await?;
        Ok(state.store.usage_totals(&thread).await?)
    }
    .await;
    respond::finish(result)
}

/// Sets how this thread's replies stream (`token`, `word`, `sentence`), or
/// back to the configured default with `default`. Applies to new replies.
#[server(endpoint = "set_granularity")]
pub async fn set_granularity(thread: String, granularity: String) -> Result<(), AppError> {
    use super::respond;
    use crate::model::Granularity;
    let state = respond::state();
    let result = async {
        respond::member(&state, &thread).await?;
        let choice = match granularity.as_str() {
            "default" => None,
            g => Some(Granularity::parse(g).ok_or_else(|| {
                AppError::Invalid("Granularity must be token, word, sentence or default.".into())
            })?),
        };
        if state.store.set_thread_granularity(&thread, choice).await? {
            Ok(())
        } else {
            Err(AppError::no_thread(&thread))
        }
    }
    .await;
    respond::finish(result)
}
