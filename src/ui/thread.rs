use leptos::{html, prelude::*};
use leptos_router::hooks::use_params_map;

use super::{
    composer::Composer,
    message::{MessageItem, Viewer},
};
use crate::{
    api::{list_messages, SetGranularity},
    live::MessageList,
    model::{Granularity, ThreadPage as Page, DEFAULT_THREAD},
};

/// `/` (the default thread) and `/t/:id`.
#[component]
pub fn ThreadPage() -> impl IntoView {
    let params = use_params_map();
    let thread_id = move || {
        params
            .read()
            .get("id")
            .unwrap_or_else(|| DEFAULT_THREAD.to_owned())
    };
    let page = Resource::new(thread_id, list_messages);
    view! {
        <Suspense fallback=|| view! { <p class="loading">"Loading…"</p> }>
            {move || Suspend::new(async move {
                match page.await {
                    Ok(page) => view! { <ThreadView page/> }.into_any(),
                    Err(e) => view! { <p class="page-error" role="alert">{e.to_string()}</p> }.into_any(),
                }
            })}
        </Suspense>
    }
}

#[component]
fn ThreadView(page: Page) -> impl IntoView {
    let Page {
        thread,
        messages,
        rev,
        author,
        granularity,
        default_granularity,
    } = page;
    let list = MessageList::new(messages);
    provide_context(list);
    provide_context(Viewer(RwSignal::new(author.clone().unwrap_or_default())));
    // Times render in UTC on the server and switch to local time once hydrated.
    let local_time = RwSignal::new(false);
    Effect::new(move |_| local_time.set(true));

    let scroller = NodeRef::<html::Section>::new();
    // Follow new text only while the reader is at the bottom.
    let stick = StoredValue::new(true);
    let scroll_to_end = move || {
        if stick.get_value() {
            request_animation_frame(move || {
                if let Some(el) = scroller.get_untracked() {
                    el.set_scroll_top(el.scroll_height());
                }
            });
        }
    };
    let on_scroll = move |_| {
        if let Some(el) = scroller.get_untracked() {
            stick.set_value(el.scroll_height() - el.scroll_top() - el.client_height() < 48);
        }
    };
    Effect::new(move |_| scroll_to_end());

    #[cfg(feature = "hydrate")]
    {
        let thread_id = thread.id.clone();
        Effect::new(move |_| crate::live::subscribe(&thread_id, rev, list, scroll_to_end));
    }
    #[cfg(not(feature = "hydrate"))]
    let _ = rev;

    view! {
        <main class="thread">
            <header class="thread-header">
                <h1>{thread.title.clone()}</h1>
                <GranularityPicker thread_id=thread.id.clone() current=granularity default=default_granularity/>
                <p class="hint">"Mention " <code>"@gpt"</code> " to ask the bot; everyone here sees the reply as it is written."</p>
            </header>
            <section class="messages" aria-label="Conversation" node_ref=scroller on:scroll=on_scroll>
                <Show when=move || list.is_empty()>
                    <p class="empty">"No messages yet. Say hello, or ask @gpt something."</p>
                </Show>
                <For each=move || list.items() key=|m| m.id let:message>
                    <MessageItem message local_time/>
                </For>
            </section>
            <Composer thread_id=thread.id author list on_sent=scroll_to_end/>
        </main>
    }
    .into_any()
}

/// How this thread's replies stream; applies to replies started afterwards.
#[component]
fn GranularityPicker(
    thread_id: String,
    current: Option<Granularity>,
    default: Granularity,
) -> impl IntoView {
    let set = ServerAction::<SetGranularity>::new();
    let selected = current.map_or("default", Granularity::as_str);
    let option = move |value: &'static str, label: String| {
        view! { <option value=value selected=selected == value>{label}</option> }
    };
    view! {
        <ActionForm action=set attr:class="granularity">
            <input type="hidden" name="thread" value=thread_id/>
            <label>
                "Replies appear by "
                <select name="granularity">
                    {option("default", format!("default ({})", default.as_str()))}
                    {option("token", "token".into())}
                    {option("word", "word".into())}
                    {option("sentence", "sentence".into())}
                </select>
            </label>
            <button type="submit">"Apply"</button>
            {move || match set.value().get() {
                Some(Ok(())) => Some(view! { <span class="saved">"Saved."</span> }.into_any()),
                Some(Err(e)) => Some(view! { <span class="action-error" role="alert">{e.to_string()}</span> }.into_any()),
                None => None,
            }}
        </ActionForm>
    }
}
