use leptos::prelude::*;

use crate::{
    live::LiveMessage,
    model::{format_time, Role, Status, DEMO_MODEL},
};

#[component]
pub fn MessageItem(message: LiveMessage, local_time: RwSignal<bool>) -> impl IntoView {
    let LiveMessage {
        id,
        author,
        role,
        model,
        created_at,
        body,
        status,
        error,
        usage,
        ..
    } = message;
    let is_bot = role == Role::Assistant;
    let streaming = {
        let status = status.clone();
        Signal::derive(move || status.get() == Status::Streaming)
    };
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
        let (a, b) = (status.clone(), status.clone());
        view! {
            <span class="status" data-status=move || a.get().as_str()>
                {move || b.get().label()}
            </span>
        }
    });
    view! {
        <article
            class="message"
            class:assistant=is_bot
            class:streaming=streaming
            data-id=id
            data-status={
                let status = status.clone();
                move || status.get().as_str()
            }
            aria-busy=move || streaming.get().to_string()
        >
            <header>
                <span class="author">{author}</span>
                {model_badge}
                <time>{move || format_time(created_at, local_time.get())}</time>
                {status_badge}
            </header>
            <div class="body">{move || body.get()}</div>
            {move || error.get().map(|e| view! { <p class="message-error">{e}</p> })}
            {move || {
                usage.get().map(|u| view! {
                    <p class="usage">
                        {format!("{} prompt + {} completion tokens", u.prompt_tokens, u.completion_tokens)}
                    </p>
                })
            }}
        </article>
    }
}
