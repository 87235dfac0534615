use leptos::{html, prelude::*, server_fn::ServerFn};
use leptos_meta::Title;
use leptos_router::hooks::{use_params_map, use_query_map};

use super::{
    composer::{form_post_error, Composer},
    message::{Highlighted, MessageItem},
    search::SearchBox,
    toast::{toast, ToastArea, Toasts},
    viewer::{Approvers, Viewer},
};
use crate::{
    api::{
        list_messages, older_messages, rename_thread, set_granularity,
        RenameThread as RenameThreadFn, SetGranularity, MAX_TITLE_CHARS,
    },
    live::MessageList,
    model::{AccessMode, Granularity, ThreadPage as Page},
};

/// `/t/:id`, rendered on the server; [`ThreadView`] is the island.
#[component]
pub fn ThreadPage() -> impl IntoView {
    let params = use_params_map();
    let thread_id = move || params.read().get("id").unwrap_or_default();
    let page = Resource::new(thread_id, list_messages);
    // Read here: the view below renders after the data arrives, when the
    // router's state may be gone. `?m=<id>` is a search hit to scroll to;
    // `__err` is a failed post's error, when it was posted without
    // JavaScript.
    let (target, post_error) = use_query_map().with_untracked(|q| {
        let target = q.get("m").and_then(|m| m.parse::<i64>().ok());
        (target, form_post_error(q))
    });
    view! {
        <Suspense fallback=|| view! { <p class="loading">"Loading…"</p> }>
            {move || {
                let post_error = post_error.clone();
                Suspend::new(async move {
                    match page.await {
                        Ok(page) => view! {
                            <Title text=format!("{} · streamchat", page.thread.title)/>
                            <ThreadView page target post_error/>
                        }.into_any(),
                        Err(e) => view! {
                            <main class="thread">
                                <p class="page-error" role="alert">{e.to_string()}</p>
                                <a href="/">"Back to all threads"</a>
                            </main>
                        }.into_any(),
                    }
                })
            }}
        </Suspense>
    }
}

/// The thread, live: the one island of this page. Its props travel to the
/// browser in the page, so it hydrates without loading anything again.
#[island]
fn ThreadView(page: Page, target: Option<i64>, post_error: Option<String>) -> impl IntoView {
    let Page {
        thread,
        messages,
        rev,
        author,
        granularity,
        default_granularity,
        more,
        bots,
        signed_in,
        request_id,
        search,
        access,
        requester_approves,
    } = page;
    // An island sees no context from the page around it, so what its parts
    // share is provided here, the toasts included.
    let toasts = Toasts::provide();
    let list = MessageList::new(thread.id.clone(), messages);
    provide_context(list);
    let author = signed_in.clone().or(author);
    provide_context(Viewer(RwSignal::new(author.clone().unwrap_or_default())));
    provide_context(Approvers {
        requester_only: requester_approves,
        fixed_name: signed_in.is_some(),
    });
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
    let history = History::new(thread.id.clone(), list, scroller, more);
    // `?m=<id>` (a search hit): load older history until that message is
    // held, then scroll to it and highlight it.
    let highlighted = RwSignal::new(None::<i64>);
    provide_context(Highlighted(highlighted));
    if let Some(target) = target {
        stick.set_value(false);
        Effect::new(move |_| history.reveal(target, highlighted));
    }
    let on_scroll = move |_| {
        if let Some(el) = scroller.get_untracked() {
            stick.set_value(el.scroll_height() - el.scroll_top() - el.client_height() < 48);
            if el.scroll_top() < 300 {
                history.load_older();
            }
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

    let initial_title = thread.title.clone();
    let title = Signal::derive(move || list.title.get().unwrap_or_else(|| initial_title.clone()));
    #[cfg(feature = "hydrate")]
    Effect::new(move |_| {
        if let Some(renamed) = list.title.get() {
            document().set_title(&format!("{renamed} · streamchat"));
        }
    });
    let export_href = format!("/t/{}/export.md", thread.id);
    let members_href = thread
        .owner
        .is_some()
        .then(|| format!("/t/{}/members", thread.id));
    let account_label = (access == AccessMode::Accounts)
        .then(|| format!("Signed in as {}", signed_in.clone().unwrap_or_default()));
    let handles = bots
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let sep = if i == 0 {
                ""
            } else if i + 1 == bots.len() {
                " or "
            } else {
                ", "
            };
            view! { {sep}<code>{format!("@{h}")}</code> }
        })
        .collect_view();
    view! {
        <main class="thread">
            <header class="thread-header">
                <nav class="crumbs">
                    <a href="/">"← All threads"</a>
                    {account_label.map(|label| view! {
                        " · "<a href="/account" rel="external">{label}</a>
                    })}
                </nav>
                <div class="title-row">
                    <h1>{title}</h1>
                    <RenameThread thread_id=thread.id.clone() title/>
                    <a class="export" href=export_href download>"Export (Markdown)"</a>
                    {members_href.map(|href| view! {
                        <a class="members" href=href rel="external">"Private · Members"</a>
                    })}
                </div>
                <Show when=move || !list.connected.get()>
                    <p class="offline" role="status">"Connection lost. Reconnecting by itself; new text will appear when it is back."</p>
                </Show>
                <p class="presence">
                    {move || list.watchers.get().map(|n| {
                        if n == 1 { "1 watching".to_owned() } else { format!("{n} watching") }
                    })}
                    {move || {
                        let writing = list.writing();
                        (!writing.is_empty()).then(|| {
                            view! { <span class="writing">{format!(" · {} writing…", writing.join(", "))}</span> }
                        })
                    }}
                </p>
                <p class="hint">"Mention " {handles} " to ask a bot; everyone here sees the reply as it is written."</p>
                {(access == AccessMode::Open).then(|| view! {
                    <p class="hint open-mode">"Open mode: anyone who reaches this app posts under any name they type."</p>
                })}
                <GranularityPicker thread_id=thread.id.clone() current=granularity default=default_granularity/>
                {search.then(|| view! { <SearchBox thread=Some(thread.id.clone())/> })}
            </header>
            <section
                class="messages"
                aria-label="Conversation"
                node_ref=scroller
                on:scroll=on_scroll
                on:click=copy_code
            >
                <Show when=move || history.more.get()>
                    <button type="button" class="older" on:click=move |_| history.load_older() disabled=move || history.loading.get()>
                        {move || if history.loading.get() { "Loading older messages…" } else { "Load older messages" }}
                    </button>
                </Show>
                <Show when=move || list.is_empty()>
                    <p class="empty">"No messages yet. Say hello, or ask @gpt something."</p>
                </Show>
                <For each=move || list.items() key=|m| m.id let:message>
                    <MessageItem message local_time/>
                </For>
            </section>
            <p class="sr-only" role="status" aria-live="polite">{move || list.announcement.get()}</p>
            <Composer thread_id=thread.id author signed_in=signed_in.is_some() request_id bots list post_error on_sent=scroll_to_end/>
            <ToastArea toasts/>
        </main>
    }
    .into_any()
}

/// Older messages, a page at a time, keeping the reader's place.
#[derive(Clone, Copy)]
struct History {
    thread_id: StoredValue<String>,
    list: MessageList,
    scroller: NodeRef<html::Section>,
    more: RwSignal<bool>,
    loading: RwSignal<bool>,
}

impl History {
    fn new(
        thread_id: String,
        list: MessageList,
        scroller: NodeRef<html::Section>,
        more: bool,
    ) -> Self {
        Self {
            thread_id: StoredValue::new(thread_id),
            list,
            scroller,
            more: RwSignal::new(more),
            loading: RwSignal::new(false),
        }
    }

    fn load_older(self) {
        if !self.more.get_untracked() || self.loading.get_untracked() {
            return;
        }
        self.loading.set(true);
        leptos::task::spawn_local(async move {
            self.fetch_page(true).await;
            self.loading.set(false);
        });
    }

    /// Loads the page before the oldest message held (the caller has set
    /// `loading`); false when there was none or it failed. With
    /// `keep_place`, what the reader was looking at stays in place.
    async fn fetch_page(self, keep_place: bool) -> bool {
        let Some(before) = self.list.oldest_id() else {
            return false;
        };
        match older_messages(self.thread_id.get_value(), before).await {
            Ok(page) => {
                let height = self.scroller.get_untracked().map(|el| el.scroll_height());
                for message in page.messages {
                    self.list.upsert(message);
                }
                self.more.set(page.more);
                if let Some(height) = height.filter(|_| keep_place) {
                    let scroller = self.scroller;
                    request_animation_frame(move || {
                        if let Some(el) = scroller.get_untracked() {
                            el.set_scroll_top(el.scroll_top() + el.scroll_height() - height);
                        }
                    });
                }
                true
            }
            Err(e) => {
                toast(format!("Older messages could not be loaded: {e}"));
                false
            }
        }
    }

    /// Brings message `id` onto the page (loading older pages as needed;
    /// scrolling meanwhile loads nothing more), scrolls to it and
    /// highlights it.
    fn reveal(self, id: i64, highlighted: RwSignal<Option<i64>>) {
        leptos::task::spawn_local(async move {
            self.loading.set(true);
            let mut found = self.list.status(id).is_some();
            while !found && self.more.get_untracked() {
                if !self.fetch_page(false).await {
                    break;
                }
                found = self.list.status(id).is_some();
            }
            self.loading.set(false);
            if !found {
                toast("That message is not in this thread.");
                return;
            }
            highlighted.set(Some(id));
            request_animation_frame(move || {
                #[cfg(feature = "hydrate")]
                if let Some(el) = document().get_element_by_id(&format!("m-{id}")) {
                    el.scroll_into_view_with_bool(true);
                }
            });
        });
    }
}

/// A code block's Copy button (the blocks are rendered Markdown, so one
/// listener on the list serves them all).
fn copy_code(ev: leptos::ev::MouseEvent) {
    #[cfg(feature = "hydrate")]
    {
        use wasm_bindgen::JsCast;
        let Some(button) = ev
            .target()
            .and_then(|t| t.dyn_into::<web_sys::Element>().ok())
            .and_then(|el| el.closest("button.copy").ok().flatten())
        else {
            return;
        };
        let Some(code) = button
            .closest(".code")
            .ok()
            .flatten()
            .and_then(|block| block.query_selector("code").ok().flatten())
        else {
            return;
        };
        let text = code.text_content().unwrap_or_default();
        let clipboard = window().navigator().clipboard();
        leptos::task::spawn_local(async move {
            let done = wasm_bindgen_futures::JsFuture::from(clipboard.write_text(&text)).await;
            match done {
                Ok(_) => {
                    button.set_text_content(Some("Copied"));
                    set_timeout(
                        move || button.set_text_content(Some("Copy")),
                        std::time::Duration::from_secs(2),
                    );
                }
                Err(_) => toast(
                    "Copying was refused by the browser; select the code and copy it by hand.",
                ),
            }
        });
    }
    #[cfg(not(feature = "hydrate"))]
    let _ = ev;
}

/// The title with a Rename button that turns it into a small form (a plain
/// form posting to `rename_thread`, called in place once hydrated).
#[component]
fn RenameThread(thread_id: String, title: Signal<String>) -> impl IntoView {
    let editing = RwSignal::new(false);
    let thread_id = StoredValue::new(thread_id);
    let input = NodeRef::<html::Input>::new();
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let Some(input) = input.get_untracked() else {
            return;
        };
        let (thread, title) = (thread_id.get_value(), input.value());
        leptos::task::spawn_local(async move {
            match rename_thread(thread, title).await {
                Ok(_) => editing.set(false),
                Err(e) => toast(e.to_string()),
            }
        });
    };
    view! {
        <Show
            when=move || editing.get()
            fallback=move || view! {
                <button type="button" class="rename" on:click=move |_| editing.set(true)>"Rename"</button>
            }
        >
            <form method="post" action=RenameThreadFn::url() class="rename-form" on:submit=submit>
                <input type="hidden" name="thread" value=thread_id.get_value()/>
                <label>
                    "Thread title"
                    <input name="title" node_ref=input value=title.get_untracked() required maxlength=MAX_TITLE_CHARS autofocus/>
                </label>
                <button type="submit">"Save"</button>
                <button type="button" on:click=move |_| editing.set(false)>"Cancel"</button>
            </form>
        </Show>
    }
}

/// How this thread's replies stream; applies to replies started afterwards.
#[component]
fn GranularityPicker(
    thread_id: String,
    current: Option<Granularity>,
    default: Granularity,
) -> impl IntoView {
    let saved = RwSignal::new(None::<Result<(), String>>);
    let select = NodeRef::<html::Select>::new();
    let thread = StoredValue::new(thread_id.clone());
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let Some(choice) = select.get_untracked().map(|s| s.value()) else {
            return;
        };
        leptos::task::spawn_local(async move {
            let result = set_granularity(thread.get_value(), choice).await;
            saved.set(Some(result.map_err(|e| e.to_string())));
        });
    };
    let selected = current.map_or("default", Granularity::as_str);
    let option = move |value: &'static str, label: String| {
        view! { <option value=value selected=selected == value>{label}</option> }
    };
    view! {
        <form method="post" action=SetGranularity::url() class="granularity" on:submit=submit>
            <input type="hidden" name="thread" value=thread_id/>
            <label>
                "Replies appear by "
                <select name="granularity" node_ref=select>
                    {option("default", format!("default ({})", default.as_str()))}
                    {option("token", "token".into())}
                    {option("word", "word".into())}
                    {option("sentence", "sentence".into())}
                </select>
            </label>
            <button type="submit">"Apply"</button>
            {move || match saved.get() {
                Some(Ok(())) => Some(view! { <span class="saved">"Saved."</span> }.into_any()),
                Some(Err(e)) => Some(view! { <span class="action-error" role="alert">{e}</span> }.into_any()),
                None => None,
            }}
        </form>
    }
}
