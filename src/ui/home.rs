use leptos::{html, prelude::*, server_fn::ServerFn};

use super::search::SearchBox;
use crate::{
    api::{create_thread, load_home, CreateThread, MAX_TITLE_CHARS},
    model::{format_datetime_utc, AccessMode, Home, ThreadSummary},
};

/// `/`: the threads by last activity, live, and a form to start one.
#[component]
pub fn HomePage() -> impl IntoView {
    // One resource under one Suspense (several Suspenses on one page can
    // leave an async SSR response unfinished: leptos-rs/leptos#4851).
    let page = Resource::new(|| (), |_| load_home());
    view! {
        <main class="home">
            <header class="home-header">
                <h1>"streamchat"</h1>
                <p class="hint">"Group chat where " <code>"@gpt"</code> " answers, and everyone sees the reply as it is written."</p>
            </header>
            <Suspense fallback=|| view! { <p class="loading">"Loading threads…"</p> }>
                {move || Suspend::new(async move {
                    match page.await {
                        Ok(Home { threads, private, search, access }) => view! {
                            <AccessNote access/>
                            {search.then(|| view! { <SearchBox thread=None/> })}
                            <NewThreadForm access/>
                            <PrivateThreads threads=private/>
                            <ThreadList threads/>
                        }.into_any(),
                        Err(e) => view! {
                            <NewThreadForm access=AccessMode::Open/>
                            <p class="page-error" role="alert">{e.to_string()}</p>
                        }.into_any(),
                    }
                })}
            </Suspense>
        </main>
    }
}

/// What the page says about who people are: a link to your account, or
/// that names are typed (open mode).
#[component]
pub fn AccessNote(access: AccessMode) -> impl IntoView {
    match access {
        AccessMode::Accounts => Some(view! {
            <p class="account-link"><a href="/account" rel="external">"Your account"</a></p>
        }.into_any()),
        AccessMode::Open => Some(view! {
            <p class="hint open-mode">"Open mode: anyone who reaches this app posts under any name they type."</p>
        }.into_any()),
        AccessMode::Proxy => None,
    }
}

/// A plain form posting to `create_thread` (which redirects to the new
/// thread); hydrated (an island), it calls the function and opens the
/// thread it made.
#[island]
fn NewThreadForm(access: AccessMode) -> impl IntoView {
    // Where people are signed in, a thread not listed is private (its
    // members only); in open mode it is unlisted (its link is the key).
    let (hidden_name, hidden_label) = if access == AccessMode::Open {
        (
            "unlisted",
            "Unlisted (only people with its link can find it)",
        )
    } else {
        ("private", "Private (only members you add can see it)")
    };
    let input = NodeRef::<html::Input>::new();
    let unlisted = NodeRef::<html::Input>::new();
    let error = RwSignal::new(None::<String>);
    let pending = RwSignal::new(false);
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let Some(title) = input.get_untracked().map(|i| i.value()) else {
            return;
        };
        let hidden = unlisted.get_untracked().is_some_and(|i| i.checked());
        pending.set(true);
        leptos::task::spawn_local(async move {
            let (unlisted, private) = if access == AccessMode::Open {
                (hidden, false)
            } else {
                (false, hidden)
            };
            match create_thread(title, unlisted, private).await {
                Ok(thread) => {
                    if let Err(e) = window().location().set_href(&format!("/t/{}", thread.id)) {
                        error.set(Some(format!("The new thread could not be opened: {e:?}")));
                    }
                }
                Err(e) => error.set(Some(e.to_string())),
            }
            pending.set(false);
        });
    };
    view! {
        <form method="post" action=CreateThread::url() class="new-thread" on:submit=submit>
            <label>
                "New thread"
                <input name="title" node_ref=input required maxlength=MAX_TITLE_CHARS placeholder="What is it about?" autocomplete="off"/>
            </label>
            <label class="unlisted">
                <input type="checkbox" name=hidden_name value="true" node_ref=unlisted/>
                {hidden_label}
            </label>
            <button type="submit" disabled=move || pending.get()>"Create"</button>
            <p class="form-error" role="alert">{move || error.get()}</p>
        </form>
    }
}

/// The viewer's private threads, as of the page load.
#[component]
fn PrivateThreads(threads: Vec<ThreadSummary>) -> impl IntoView {
    (!threads.is_empty()).then(|| {
        view! {
            <nav aria-label="Your private threads" class="thread-list private">
                <ul>
                    {threads.into_iter().map(|thread| view! {
                        <li><a href=format!("/t/{}", thread.id)><span class="title">{thread.title}</span></a></li>
                    }).collect_view()}
                </ul>
            </nav>
        }
    })
}

/// The thread list, kept current by `/api/threads/events` once hydrated
/// (an island).
#[island]
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
                {move || threads.get().into_iter().map(|thread| view! {
                    <li>
                        <a href=format!("/t/{}", thread.id)>
                            <span class="title">{thread.title}</span>
                            {(thread.live > 0).then(|| view! {
                                <span class="live" title="A reply is being written">"live"</span>
                            })}
                            <time class="activity">{format_datetime_utc(thread.last_activity_at)}" UTC"</time>
                        </a>
                    </li>
                }).collect_view()}
            </ul>
        </nav>
    }
}
