//! `GET /t/{id}/export.md`: a thread as one Markdown document.

use axum::{
    extract::{Path, State},
    http::header,
    response::{IntoResponse, Response},
};

use crate::server::store::Store;
use crate::{
    error::AppError,
    model::{format_datetime_utc, thinking_secs, Message, Role, Thread},
};

pub async fn export(
    State(store): State<Store>,
    Path(thread_id): Path<String>,
) -> Result<Response, AppError> {
    let thread = store.existing_thread(&thread_id).await?;
    let messages = store.all_messages(&thread.id).await?;
    let filename: String = thread
        .title
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    Ok((
        [
            (
                header::CONTENT_TYPE,
                "text/markdown; charset=utf-8".to_owned(),
            ),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}.md\""),
            ),
        ],
        to_markdown(&thread, &messages),
    )
        .into_response())
}

/// The document: the title, then each message under its author and time
/// (UTC), replies marked with their model and how they ended; a reasoning
/// model's thinking as a quoted "Thinking" section before its answer.
pub fn to_markdown(thread: &Thread, messages: &[Message]) -> String {
    let mut out = format!("# {}\n", thread.title);
    for m in messages {
        let mut heading = format!(
            "\n## {} · {} UTC",
            m.author,
            format_datetime_utc(m.created_at)
        );
        if m.role == Role::Assistant {
            if let Some(model) = &m.model {
                heading.push_str(&format!(" · {model}"));
            }
            heading.push_str(&format!(" · {}", m.status.label()));
        }
        out.push_str(&heading);
        out.push_str("\n\n");
        if !m.thinking.is_empty() {
            // Marked as the model's thinking: a quoted section before the answer.
            let label = match m.thinking_ms {
                Some(ms) => format!("Thinking ({} s)", thinking_secs(ms)),
                None => "Thinking".to_owned(),
            };
            out.push_str(&format!("> **{label}**\n>\n"));
            for line in m.thinking.trim_end().lines() {
                out.push_str(if line.is_empty() { ">" } else { "> " });
                out.push_str(line);
                out.push('\n');
            }
            out.push('\n');
        }
        out.push_str(m.body.trim_end());
        out.push('\n');
    }
    out
}
