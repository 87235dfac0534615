//! The search box (home page: every listed thread; a thread's page: that
//! thread) and `/search`, the results page. The box is a plain GET form, so
//! searching works without JavaScript, and results are linkable.

use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_query_map;

use crate::{
    api::search,
    model::format_datetime_utc,
    search::{Fragment, SearchHit, SearchResults},
};

/// A search form; with `thread`, limited to that thread.
#[component]
pub fn SearchBox(thread: Option<String>, #[prop(optional)] value: String) -> impl IntoView {
    let label = if thread.is_some() {
        "Search this thread"
    } else {
        "Search all threads"
    };
    view! {
        <form role="search" method="get" action="/search" class="search-box">
            <label>
                {label}
                <input type="search" name="q" value=value required maxlength=200 autocomplete="off" placeholder="Words to find"/>
            </label>
            {thread.map(|id| view! { <input type="hidden" name="thread" value=id/> })}
            <button type="submit">"Search"</button>
        </form>
    }
}

/// `/search?q=...[&thread=...][&before=...]`.
#[component]
pub fn SearchPage() -> impl IntoView {
    let query = use_query_map();
    let params = move || {
        query.with(|query| {
            (
                query.get("q").unwrap_or_default(),
                query.get("thread").filter(|t| !t.is_empty()),
                query.get("before").and_then(|b| b.parse::<i64>().ok()),
            )
        })
    };
    // The resource carries the query it answers: the view reads nothing
    // else (an async render may finish after the router's memos are gone).
    let results = Resource::new(params, |(q, thread, before)| async move {
        let results = search(q.clone(), thread.clone(), before).await;
        (results, q, thread)
    });
    view! {
        <main class="search-page">
            <Suspense fallback=|| view! { <p class="loading">"Searching…"</p> }>
                {move || Suspend::new(async move {
                    let (results, q, thread) = results.await;
                    let back = match &thread {
                        Some(id) => view! { <a href=format!("/t/{id}")>"← Back to the thread"</a> }.into_any(),
                        None => view! { <a href="/">"← All threads"</a> }.into_any(),
                    };
                    view! {
                        <Title text=format!("{q} · search · streamchat")/>
                        <nav class="crumbs">{back}</nav>
                        <h1>"Search"</h1>
                        <SearchBox thread=thread.clone() value=q.clone()/>
                        {match results {
                            Ok(results) => view! { <Results results q thread/> }.into_any(),
                            Err(e) => view! { <p class="page-error" role="alert">{e.to_string()}</p> }.into_any(),
                        }}
                    }
                })}
            </Suspense>
        </main>
    }
}

#[component]
fn Results(results: SearchResults, q: String, thread: Option<String>) -> impl IntoView {
    let SearchResults { hits, next_before } = results;
    let count = hits.len();
    let more = next_before.map(|before| {
        let mut href = format!("/search?q={}&before={before}", encode(&q));
        if let Some(thread) = &thread {
            href.push_str(&format!("&thread={}", encode(thread)));
        }
        view! { <a class="more" href=href>"Older results"</a> }
    });
    view! {
        <p class="result-count" role="status">
            {if count == 0 { "No messages found.".to_owned() } else if more.is_some() { format!("Newest {count} messages found:") } else { format!("{count} found:") }}
        </p>
        <ol class="hits" aria-label="Search results">
            {hits.into_iter().map(|hit| view! { <Hit hit/> }).collect_view()}
        </ol>
        {more}
    }
}

#[component]
fn Hit(hit: SearchHit) -> impl IntoView {
    let href = format!("/t/{}?m={}#m-{}", hit.thread_id, hit.id, hit.id);
    view! {
        <li class="hit">
            <a href=href>
                <span class="hit-thread">{hit.thread_title}</span>
                <span class="hit-author">{hit.author}</span>
                <time>{format_datetime_utc(hit.created_at)}" UTC"</time>
                <span class="snippet">
                    {hit.snippet.into_iter().map(|Fragment { text, hit }| {
                        if hit {
                            view! { <mark>{text}</mark> }.into_any()
                        } else {
                            text.into_any()
                        }
                    }).collect_view()}
                </span>
            </a>
        </li>
    }
}

/// Percent-encodes a query string value.
fn encode(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC).to_string()
}
