use leptos::prelude::*;
use leptos_router::components::A;

use crate::{
    api::{list_threads, CreateThread, MAX_TITLE_CHARS},
    model::{format_datetime_utc, ThreadSummary},
};

/// `/`: the threads by last activity, live, and a form to start one.
#[component]
pub fn HomePage() -> impl IntoView {
    let threads = Resource::new(|| (), |_| list_threads());
    view! {
        <main class="home">
            <header class="home-header">
                <h1>"streamchat"</h1>
                <p class="hint">"Group chat where " <code>"@gpt"</code> " answers, and everyone sees the reply as it is written."</p>
            </header>
            <NewThreadForm/>
            <Suspense fallback=|| view! { <p class="loading">"Loading threads…"</p> }>
                {move || Suspend::new(async move {
                    match threads.await {
                        Ok(threads) => view! { <ThreadList threads/> }.into_any(),
                        Err(e) => view! { <p class="page-error" role="alert">{e.to_string()}</p> }.into_any(),
                    }
                })}
            </Suspense>
        </main>
    }
}

#[component]
fn NewThreadForm() -> impl IntoView {
    let create = ServerAction::<CreateThread>::new();
    let error = move || {
        create
            .value()
            .get()
            .and_then(Result::err)
            .map(|e| e.to_string())
    };
    view! {
        <ActionForm action=create attr:class="new-thread">
            <label>
                "New thread"
                <input name="title" required maxlength=MAX_TITLE_CHARS placeholder="What is it about?" autocomplete="off"/>
            </label>
            <button type="submit" disabled=move || create.pending().get()>"Create"</button>
            <p class="form-error" role="alert">{error}</p>
        </ActionForm>
    }
}

/// The thread list, kept current by `/api/threads/events` once hydrated.
#[component]
fn ThreadList(threads: Vec<ThreadSummary>) -> impl IntoView {
    let threads = RwSignal::new(threads);
    #[cfg(feature = "hydrate")]
    Effect::new(move |_| crate::live::subscribe_thread_list(threads));
    view! {
        <nav aria-label="Threads" class="thread-list">
            <Show when=move || threads.with(Vec::is_empty)>
                <p class="empty">"No threads yet. Start one above."</p>
            </Show>
            <ul>
                <For each=move || threads.get() key=|t| (t.id.clone(), t.title.clone(), t.live, t.last_activity_at) let:thread>
                    <li>
                        <A href=format!("/t/{}", thread.id)>
                            <span class="title">{thread.title.clone()}</span>
                            {(thread.live > 0).then(|| view! {
                                <span class="live" title="A reply is being written">"live"</span>
                            })}
                            <time class="activity">{format_datetime_utc(thread.last_activity_at)}" UTC"</time>
                        </A>
                    </li>
                </For>
            </ul>
        </nav>
    }
}
