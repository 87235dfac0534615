use leptos::{html, prelude::*};
use leptos_router::{hooks::use_query_map, params::ParamsMap};

use crate::{
    api::SendMessage,
    error::AppError,
    live::MessageList,
    model::{MAX_AUTHOR_CHARS, MAX_BODY_BYTES},
    ui::message::Viewer,
};

/// A plain form posting to `send_message`: it works without JavaScript
/// (the server redirects back, with any error in the URL), and once
/// hydrated it posts in place, Enter sends and Shift+Enter breaks the line.
#[component]
pub fn Composer(
    thread_id: String,
    author: Option<String>,
    list: MessageList,
    on_sent: impl Fn() + Copy + Send + Sync + 'static,
) -> impl IntoView {
    let send = ServerAction::<SendMessage>::new();
    let viewer = expect_context::<Viewer>().0;
    let body_ref = NodeRef::<html::Textarea>::new();
    let query = use_query_map();

    Effect::new(move |_| {
        if let Some(Ok(posted)) = send.value().get() {
            list.upsert(posted.message);
            if let Some(reply) = posted.reply {
                list.upsert(reply);
            }
            if let Some(textarea) = body_ref.get_untracked() {
                textarea.set_value("");
            }
            on_sent();
        }
    });
    let error = move || match send.value().get() {
        Some(Err(e)) => Some(e.to_string()),
        Some(Ok(_)) => None,
        None => query.with(form_post_error),
    };
    let on_keydown = move |ev: leptos::ev::KeyboardEvent| {
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
        <ActionForm action=send attr:class="composer">
            <input type="hidden" name="thread" value=thread_id/>
            <label class="author-field">
                "Name"
                <input
                    name="author"
                    value=author
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
                ></textarea>
            </label>
            <button type="submit" disabled=move || send.pending().get()>"Send"</button>
            <p class="form-error" role="alert">{error}</p>
        </ActionForm>
    }
}

/// The error a no-JavaScript form post was redirected back with, if any.
fn form_post_error(query: &ParamsMap) -> Option<String> {
    use base64::{engine::general_purpose::URL_SAFE, Engine};
    let encoded = query.get("__err")?;
    let bytes = URL_SAFE.decode(encoded.as_bytes()).ok()?;
    let error: AppError = serde_json::from_slice(&bytes).ok()?;
    Some(error.to_string())
}
