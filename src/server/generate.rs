//! One reply: build the prompt, stream the completion, hand each delta to
//! the writer, and record how it ended. Runs as its own tokio task, so the
//! browser that asked has no say in its lifetime.

use std::sync::Arc;

use futures::StreamExt;

use super::{
    provider::{prompt_name, PromptMessage},
    state::AppState,
    store::Outcome,
};
use crate::model::{Message, Role, Status, Usage};

/// Starts the reply for `placeholder` (a committed `streaming` row).
pub fn spawn(state: AppState, placeholder: Message) {
    tokio::spawn(async move {
        let id = placeholder.id;
        let thread_id: Arc<str> = placeholder.thread_id.as_str().into();
        let outcome = stream_reply(&state, &thread_id, &placeholder).await;
        tracing::info!(message_id = id, status = outcome.status.as_str(), error = ?outcome.error, "reply ended");
        if let Err(e) = state.writer.finish(&thread_id, id, outcome).await {
            tracing::error!(message_id = id, error = %e, "could not record the end of a reply");
        }
    });
}

fn failed(error: impl Into<String>, usage: Option<Usage>) -> Outcome {
    Outcome {
        status: Status::Failed,
        error: Some(error.into()),
        finish_reason: None,
        usage,
    }
}

async fn stream_reply(state: &AppState, thread_id: &Arc<str>, placeholder: &Message) -> Outcome {
    let id = placeholder.id;
    let bot = &state.config.bot;
    let history = match state
        .store
        .context(thread_id, id, bot.context_messages)
        .await
    {
        Ok(history) => history,
        Err(e) => return failed(format!("Could not read the thread: {e}"), None),
    };
    let mut prompt = vec![PromptMessage {
        role: "system",
        content: bot.system_prompt.clone(),
        name: None,
    }];
    prompt.extend(history.into_iter().map(|m| match m.role {
        Role::User => PromptMessage {
            role: "user",
            name: prompt_name(&m.author),
            content: m.body,
        },
        Role::Assistant => PromptMessage {
            role: "assistant",
            name: None,
            content: m.body,
        },
    }));

    tracing::debug!(
        message_id = id,
        prompt_messages = prompt.len(),
        "requesting completion"
    );
    let mut stream = match state.provider.stream(prompt).await {
        Ok(stream) => stream,
        Err(e) => return failed(provider_error(&e), None),
    };

    let mut finish_reason = None;
    let mut usage = None;
    while let Some(item) = stream.next().await {
        let chunk = match item {
            Ok(chunk) => chunk,
            Err(e) => return failed(provider_error(&e), usage),
        };
        if let Some(error) = chunk.error {
            let message = error
                .get("message")
                .and_then(|m| m.as_str())
                .map_or_else(|| error.to_string(), str::to_owned);
            return failed(format!("The provider reported an error: {message}"), usage);
        }
        if let Some(u) = chunk.usage {
            usage = Some(Usage {
                prompt_tokens: u.prompt_tokens,
                completion_tokens: u.completion_tokens,
            });
        }
        for choice in chunk.choices.into_iter().filter(|c| c.index == 0) {
            if let Some(text) = choice.delta.content.filter(|t| !t.is_empty()) {
                if state.writer.append(thread_id, id, text).await.is_err() {
                    return failed("The server is shutting down.", usage);
                }
            }
            if choice.finish_reason.is_some() {
                finish_reason = choice.finish_reason;
            }
        }
    }
    match finish_reason {
        Some(reason) => Outcome {
            status: Status::Done,
            error: None,
            finish_reason: Some(reason),
            usage,
        },
        None => failed(
            "The provider's stream ended before the reply was finished.",
            usage,
        ),
    }
}

/// The provider's own words for a failure, without anything secret.
fn provider_error(e: &async_openai::error::OpenAIError) -> String {
    use async_openai::error::OpenAIError;
    match e {
        OpenAIError::ApiError(api) => format!(
            "The provider refused the request ({}): {}",
            api.status_code, api.api_error.message
        ),
        OpenAIError::Reqwest(e) => format!("Could not reach the provider: {e}"),
        other => format!("The provider's stream failed: {other}"),
    }
}
