use leptos::{html, prelude::*, server_fn::ServerFn};
use leptos_router::params::ParamsMap;

use crate::{
    api::{send_message, SendMessage},
    error::AppError,
    live::MessageList,
    model::{MAX_AUTHOR_CHARS, MAX_BODY_BYTES},
    ui::viewer::Viewer,
};

/// A plain form posting to `send_message`: it works without JavaScript
/// (the server redirects back, with any error in the URL), and once
/// hydrated it posts in place, Enter sends and Shift+Enter breaks the line.
#[component]
pub fn Composer(
    thread_id: String,
    author: Option<String>,
    /// The name comes from the sign-in service and cannot be changed here.
    signed_in: bool,
    /// The id of the next post; a resent form repeats it, so the server
    /// stores the post once.
    request_id: String,
    /// Bot handles, suggested as one types `@`.
    bots: Vec<String>,
    list: MessageList,
    /// The error a post without JavaScript was sent back with, if any.
    post_error: Option<String>,
    on_sent: impl Fn() + Copy + Send + Sync + 'static,
) -> impl IntoView {
    let viewer = expect_context::<Viewer>().0;
    let body_ref = NodeRef::<html::Textarea>::new();
    let pending = RwSignal::new(false);
    // None until this page posts; then the last post's error, if any.
    let posted_error = RwSignal::new(None::<Option<String>>);
    let thread = StoredValue::new(thread_id.clone());
    // Kept until a post succeeds (a retry after a failure repeats it), then
    // replaced: `<page's id>-<n>` stays unique without a random source.
    let base_request_id = StoredValue::new(request_id.clone());
    let request_id = RwSignal::new(request_id);
    let sent = StoredValue::new(0u32);
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let Some(textarea) = body_ref.get_untracked() else {
            return;
        };
        if pending.get_untracked() {
            return; // one post at a time: a second Enter must not send it twice
        }
        let (author, body) = (viewer.get_untracked(), textarea.value());
        let id = request_id.get_untracked();
        pending.set(true);
        leptos::task::spawn_local(async move {
            match send_message(thread.get_value(), author, body.clone(), id).await {
                Ok(posted) => {
                    sent.update_value(|n| *n += 1);
                    request_id.set(format!(
                        "{}-{}",
                        base_request_id.get_value(),
                        sent.get_value()
                    ));
                    list.upsert(posted.message);
                    for reply in posted.replies {
                        list.upsert(reply);
                    }
                    // Keep whatever was typed while this one was on its way.
                    if textarea.value() == body {
                        textarea.set_value("");
                    }
                    posted_error.set(Some(None));
                    on_sent();
                }
                Err(e) => posted_error.set(Some(Some(e.to_string()))),
            }
            pending.set(false);
        });
    };
    let error = move || match posted_error.get() {
        Some(error) => error,
        None => post_error.clone(),
    };
    // `@` suggestions: the handles starting with what follows the `@`
    // before the caret; Tab or Enter takes the highlighted one.
    let suggestions = RwSignal::new(Vec::<String>::new());
    let highlighted = RwSignal::new(0usize);
    let bots = StoredValue::new(bots);
    let update_suggestions = move || {
        let Some((_, value, caret)) = text_and_caret(body_ref) else {
            return;
        };
        let found = mention_prefix(&value[..caret])
            .map(|prefix| {
                bots.with_value(|bots| {
                    bots.iter()
                        .filter(|h| h.starts_with(&prefix.to_lowercase()) && **h != prefix)
                        .cloned()
                        .collect()
                })
            })
            .unwrap_or_default();
        highlighted.set(0);
        suggestions.set(found);
    };
    let accept = move |handle: String| {
        let Some((textarea, value, caret)) = text_and_caret(body_ref) else {
            return;
        };
        let Some(prefix) = mention_prefix(&value[..caret]) else {
            return;
        };
        let start = caret - prefix.len();
        let completed = format!("{}{handle} {}", &value[..start], &value[caret..]);
        textarea.set_value(&completed);
        let at = (value[..start].encode_utf16().count() + handle.encode_utf16().count() + 1) as u32;
        let _ = textarea.set_selection_range(at, at);
        let _ = textarea.focus();
        suggestions.set(Vec::new());
    };
    let on_keydown = move |ev: leptos::ev::KeyboardEvent| {
        let open = suggestions.with_untracked(|s| s.len());
        if open > 0 {
            match ev.key().as_str() {
                "ArrowDown" => {
                    ev.prevent_default();
                    highlighted.update(|i| *i = (*i + 1) % open);
                    return;
                }
                "ArrowUp" => {
                    ev.prevent_default();
                    highlighted.update(|i| *i = (*i + open - 1) % open);
                    return;
                }
                "Tab" | "Enter" if !ev.shift_key() => {
                    ev.prevent_default();
                    let handle = suggestions
                        .with_untracked(|s| s[highlighted.get_untracked().min(open - 1)].clone());
                    accept(handle);
                    return;
                }
                "Escape" => {
                    suggestions.set(Vec::new());
                    return;
                }
                _ => {}
            }
        }
        if ev.key() == "Enter" && !ev.shift_key() && !ev.is_composing() {
            ev.prevent_default();
            if let Some(textarea) = body_ref.get_untracked() {
                if !textarea.value().trim().is_empty() {
                    if let Some(form) = textarea.form() {
                        let _ = form.request_submit();
                    }
                }
            }
        }
    };

    view! {
        <form method="post" action=SendMessage::url() class="composer" on:submit=submit>
            <input type="hidden" name="thread" value=thread_id/>
            <input type="hidden" name="request_id" prop:value=move || request_id.get() value=request_id.get_untracked()/>
            <label class="author-field">
                "Name"
                <input
                    name="author"
                    value=author
                    readonly=signed_in
                    on:input:target=move |ev| viewer.set(ev.target().value())
                    maxlength=MAX_AUTHOR_CHARS
                    autocomplete="nickname"
                    placeholder="Your name"
                />
            </label>
            <label class="body-field">
                "Message"
                <textarea
                    name="body"
                    node_ref=body_ref
                    rows="2"
                    maxlength=MAX_BODY_BYTES
                    placeholder="Write a message. Mention @gpt to ask the bot."
                    on:keydown=on_keydown
                    on:input=move |_| update_suggestions()
                    on:blur=move |_| set_timeout(move || suggestions.set(Vec::new()), std::time::Duration::from_millis(150))
                    aria-autocomplete="list"
                    aria-controls="bot-suggestions"
                ></textarea>
            </label>
            <ul id="bot-suggestions" class="suggestions" role="listbox" aria-label="Bots" hidden=move || suggestions.with(Vec::is_empty)>
                {move || suggestions.get().into_iter().enumerate().map(|(i, handle)| {
                    let label = format!("@{handle}");
                    let take = handle.clone();
                    view! {
                        <li role="option" aria-selected=move || (highlighted.get() == i).to_string()
                            on:mousedown=move |ev| { ev.prevent_default(); accept(take.clone()); }>
                            {label}
                        </li>
                    }
                }).collect_view()}
            </ul>
            <button type="submit" disabled=move || pending.get()>"Send"</button>
            <p class="form-error" role="alert">{error}</p>
        </form>
    }
}

/// The partial handle being typed at the end of `before` (the text up to
/// the caret): what follows an `@` that starts a word.
fn mention_prefix(before: &str) -> Option<&str> {
    let at = before.rfind('@')?;
    let prefix = &before[at + 1..];
    let starts_word = before[..at]
        .chars()
        .next_back()
        .is_none_or(|c| !c.is_alphanumeric());
    (starts_word
        && prefix
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '-'))
    .then_some(prefix)
}

/// The textarea, its text, and the caret as a byte index into the text.
fn text_and_caret(
    body_ref: NodeRef<html::Textarea>,
) -> Option<(leptos::web_sys::HtmlTextAreaElement, String, usize)> {
    let textarea = body_ref.get_untracked()?;
    let value = textarea.value();
    let caret = textarea
        .selection_start()
        .ok()
        .flatten()
        .map_or(value.len(), |c| utf16_to_byte(&value, c as usize));
    Some((textarea, value, caret))
}

/// A textarea's caret (UTF-16 units) as a byte index into its value.
fn utf16_to_byte(value: &str, units: usize) -> usize {
    let mut seen = 0;
    for (i, c) in value.char_indices() {
        if seen >= units {
            return i;
        }
        seen += c.len_utf16();
    }
    value.len()
}

/// The error a no-JavaScript form post was redirected back with, if any.
pub fn form_post_error(query: &ParamsMap) -> Option<String> {
    use base64::{engine::general_purpose::URL_SAFE, Engine};
    let encoded = query.get("__err")?;
    let bytes = URL_SAFE.decode(encoded.as_bytes()).ok()?;
    let error: AppError = serde_json::from_slice(&bytes).ok()?;
    Some(error.to_string())
}
