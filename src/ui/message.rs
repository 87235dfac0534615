use leptos::{prelude::*, server_fn::ServerFn};

use super::{body::MessageBody, tool_calls::ToolCalls, viewer::Viewer};
use crate::{
    api::{
        continue_reply, regenerate_reply, stop_reply, ContinueReply, RegenerateReply, StopReply,
    },
    error::AppError,
    live::{LiveMessage, MessageList},
    model::{
        format_datetime_utc, format_time, thinking_secs, Message, ReplyStats, Role, Status,
        DEMO_MODEL,
    },
};

/// One of twelve colours per author name (stable across pages and people).
fn author_hue(author: &str) -> u32 {
    author.bytes().fold(2_166_136_261u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(16_777_619)
    }) % 12
}

/// The message a link pointed at (`?m=` from a search hit), shown
/// highlighted once it is on the page.
#[derive(Clone, Copy)]
pub struct Highlighted(pub RwSignal<Option<i64>>);

#[component]
pub fn MessageItem(message: LiveMessage, local_time: RwSignal<bool>) -> impl IntoView {
    let LiveMessage {
        id,
        author,
        role,
        model,
        created_at,
        body,
        rendered,
        thinking,
        thinking_rendered,
        tool_calls,
        status,
        error,
        stopped_by: _,
        notice,
        stats,
        requested_by,
        ..
    } = message;
    let is_bot = role == Role::Assistant;
    let status = Signal::derive(move || status.get());
    let streaming = Signal::derive(move || status.get() == Status::Streaming);
    let model_badge = model.filter(|_| is_bot).map(|model| {
        if model == DEMO_MODEL {
            view! {
                <span class="badge demo" title="Replies come from the embedded demo model, not a real language model">
                    "demo model"
                </span>
            }
            .into_any()
        } else {
            view! { <span class="badge">{model}</span> }.into_any()
        }
    });
    let status_badge = is_bot.then(|| {
        view! {
            <span class="status" data-status=move || status.get().as_str()>
                {move || status.get().label()}
            </span>
        }
    });
    let highlighted = use_context::<Highlighted>().map(|h| h.0);
    let is_highlighted = move || highlighted.is_some_and(|h| h.get() == Some(id));
    let thinking_stats = stats.clone();
    let stats_line = move || stats.with(describe_stats);
    view! {
        <article
            id=format!("m-{id}")
            class="message"
            class:assistant=is_bot
            class:highlighted=is_highlighted
            aria-current=move || is_highlighted().then_some("true")
            class:streaming=streaming
            data-id=id
            data-status=move || status.get().as_str()
            aria-busy=move || streaming.get().to_string()
        >
            <header>
                <span class="author" data-hue=author_hue(&author)>{author.clone()}</span>
                {model_badge}
                <time title=format_datetime_utc(created_at) + " UTC">{move || format_time(created_at, local_time.get())}</time>
                {status_badge}
            </header>
            {is_bot.then(|| view! {
                <Thinking thinking rendered=thinking_rendered body streaming stats=thinking_stats/>
                <ToolCalls id calls=tool_calls status requested_by=requested_by.clone()/>
            })}
            <MessageBody rendered/>
            {move || notice.get().map(|n| view! { <p class="notice">{n}</p> })}
            {move || {
                error.get().map(|e| view! { <p class="message-error" data-status=move || status.get().as_str()>{e}</p> })
            }}
            {is_bot.then(|| view! {
                <footer class="reply-footer">
                    <span class="usage">{stats_line}</span>
                    <ReplyActions id status/>
                </footer>
            })}
        </article>
    }
    .into_any()
}

/// A reasoning model's thinking, above its answer: open while only thinking
/// streams, folded once the answer starts (the viewer may open it; the
/// reactive `open` changes only at those moments, so a viewer's own toggle
/// stays), "Thought for N s" once the reply recorded it.
#[component]
fn Thinking(
    thinking: ArcRwSignal<String>,
    rendered: crate::ui::body::RenderedBody,
    body: ArcRwSignal<String>,
    streaming: Signal<bool>,
    stats: ArcRwSignal<ReplyStats>,
) -> impl IntoView {
    let has_thinking = {
        let thinking = thinking.clone();
        Memo::new(move |_| thinking.with(|t| !t.is_empty()))
    };
    let answering = Memo::new(move |_| body.with(|b| !b.is_empty()));
    let open = Memo::new(move |_| streaming.get() && !answering.get());
    let summary = Signal::derive(move || match (open.get(), stats.with(|s| s.thinking_ms)) {
        (true, _) => "Thinking…".to_owned(),
        (false, Some(ms)) => format!("Thought for {} s", thinking_secs(ms)),
        (false, None) => "Thought".to_owned(),
    });
    move || {
        let rendered = rendered.clone();
        has_thinking.get().then(move || {
            view! {
                <details class="thinking" open=move || open.get()>
                    <summary>{summary}</summary>
                    <MessageBody rendered/>
                </details>
            }
        })
    }
}

/// Tokens, time to first token and speed, in a line.
fn describe_stats(stats: &ReplyStats) -> String {
    let mut parts = Vec::new();
    if let Some(u) = stats.usage {
        let approx = if u.estimated { "≈" } else { "" };
        parts.push(format!(
            "{approx}{} prompt + {approx}{} completion tokens{}",
            u.prompt_tokens,
            u.completion_tokens,
            if u.estimated { " (estimated)" } else { "" }
        ));
        if let Some(reasoning) = u.reasoning_tokens.filter(|r| *r > 0) {
            parts.push(format!("{reasoning} of them thinking"));
        }
    }
    if let Some(ms) = stats.ttft_ms {
        parts.push(format!("first token {ms} ms"));
    }
    if let Some(tps) = stats.tokens_per_second {
        parts.push(format!("{tps:.1} tokens/s"));
    }
    if stats.retries > 0 {
        parts.push(format!("{} retries", stats.retries));
    }
    parts.join(" · ")
}

/// What the buttons under a reply do.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ReplyAction {
    Stop,
    Regenerate,
    Continue,
}

impl ReplyAction {
    fn url(self) -> &'static str {
        match self {
            ReplyAction::Stop => StopReply::url(),
            ReplyAction::Regenerate => RegenerateReply::url(),
            ReplyAction::Continue => ContinueReply::url(),
        }
    }

    fn label(self) -> &'static str {
        match self {
            ReplyAction::Stop => "Stop",
            ReplyAction::Regenerate => "Regenerate",
            ReplyAction::Continue => "Continue",
        }
    }

    /// Calls the server; Regenerate and Continue return the reply row now streaming.
    async fn run(self, thread: String, id: i64, by: String) -> Result<Option<Message>, AppError> {
        match self {
            ReplyAction::Stop => stop_reply(thread, id, by).await.map(|()| None),
            ReplyAction::Regenerate => regenerate_reply(thread, id, by).await.map(Some),
            ReplyAction::Continue => continue_reply(thread, id, by).await.map(Some),
        }
    }
}

/// Stop while streaming; Regenerate and Continue once it ended short. Each
/// is a plain form posting to its server function, so it works without
/// JavaScript; hydrated, it calls the function in place. (Plain forms, not
/// one `ActionForm` per function: each of those costs ~10 KB of WebAssembly.)
#[component]
fn ReplyActions(id: i64, status: Signal<Status>) -> impl IntoView {
    let viewer = expect_context::<Viewer>().0;
    let list = expect_context::<MessageList>();
    let error = RwSignal::new(None::<String>);
    let form = move |action: ReplyAction| {
        let submit = move |ev: leptos::ev::SubmitEvent| {
            ev.prevent_default();
            error.set(None);
            let by = viewer.get_untracked();
            leptos::task::spawn_local(async move {
                match action.run(list.thread(), id, by).await {
                    Ok(Some(message)) => list.upsert(message),
                    Ok(None) => {}
                    Err(e) => error.set(Some(e.to_string())),
                }
            });
        };
        view! {
            <form method="post" action=action.url() class="inline" on:submit=submit>
                <input type="hidden" name="thread" value=list.thread()/>
                <input type="hidden" name="id" value=id/>
                <input type="hidden" name="by" prop:value=move || viewer.get() value=viewer.get_untracked()/>
                <button type="submit" class:stop=action == ReplyAction::Stop>{action.label()}</button>
            </form>
        }
    };
    view! {
        <span class="actions">
            <Show when=move || status.get() == Status::Streaming>
                {form(ReplyAction::Stop)}
            </Show>
            <Show when=move || !matches!(status.get(), Status::Streaming | Status::Done)>
                {form(ReplyAction::Regenerate)}
            </Show>
            <Show when=move || matches!(status.get(), Status::Interrupted | Status::TimedOut | Status::Cancelled)>
                {form(ReplyAction::Continue)}
            </Show>
            <span class="action-error" role="alert">{move || error.get()}</span>
        </span>
    }
}
