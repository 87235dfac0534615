//! `GET /t/{id}/export.md`: a thread as one Markdown document, written a
//! page of messages at a time as the client reads it (a client that does
//! not read holds one page, not the thread).

use axum::{
    body::{Body, Bytes},
    extract::{Extension, Path, State},
    http::header,
    response::{IntoResponse, Response},
};

use super::access::Requester;
use crate::server::{accounts::Members, store::Store};
use crate::{
    error::AppError,
    model::{format_datetime_utc, thinking_secs, Message, Role, Thread},
};

pub async fn export(
    State(store): State<Store>,
    State(members): State<Members>,
    Path(thread_id): Path<String>,
    who: Option<Extension<Requester>>,
) -> Result<Response, AppError> {
    let identity = who.and_then(|Extension(w)| w.identity);
    let thread = members.thread(&thread_id, identity.as_deref()).await?;
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
        Body::from_stream(document(store, thread)),
    )
        .into_response())
}

/// Messages read per page of the export.
const EXPORT_PAGE: i64 = 50;

/// The document's bytes, the title first, then a page of messages at a time.
fn document(
    store: Store,
    thread: Thread,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    async_stream::stream! {
        yield Ok(Bytes::from(title(&thread)));
        let mut after = 0;
        loop {
            let rows = match store.messages_after(&thread.id, after, EXPORT_PAGE).await {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::error!(thread_id = %thread.id, error = %e, "export read failed");
                    yield Err(std::io::Error::other("export read failed"));
                    return;
                }
            };
            let mut out = String::new();
            for m in &rows {
                write_message(&mut out, m);
            }
            yield Ok(Bytes::from(out));
            if (rows.len() as i64) < EXPORT_PAGE {
                return;
            }
            after = rows.last().map_or(after, |m| m.id);
        }
    }
}

fn title(thread: &Thread) -> String {
    format!("# {}\n", thread.title)
}

/// The document: the title, then each message under its author and time
/// (UTC), replies marked with their model and how they ended; a reasoning
/// model's thinking as a quoted "Thinking" section before its answer.
fn write_message(out: &mut String, m: &Message) {
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
    let tools = crate::tools::ToolLog::parse(&m.tools);
    for call in tools.calls() {
        // Each call: its name and state, its arguments and result as code.
        let mut line = format!("**Tool call `{}`** · {}", call.name, call.state.label());
        if let Some(by) = &call.decided_by {
            line.push_str(&format!(" (decided by {by})"));
        }
        if let Some(ms) = call.ms {
            line.push_str(&format!(" · {ms} ms"));
        }
        out.push_str(&line);
        out.push_str("\n\n");
        out.push_str(&crate::markdown::code_block(&call.arguments, "json"));
        out.push_str("\n\n");
        if let Some(output) = &call.output {
            out.push_str(&crate::markdown::code_block(output, ""));
            out.push_str("\n\n");
        }
    }
    out.push_str(m.body.trim_end());
    out.push('\n');
}
