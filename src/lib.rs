//! streamchat: a group chat where `@gpt` replies stream into SQLite and out to
//! every viewer.
//!
//! Module map (the data path is described in `docs/ARCHITECTURE.md`):
//! - [`model`]: types shared by server and browser, including [`model::ChatEvent`],
//!   the one wire type of the live subscription.
//! - [`error`]: the one error enum, with its HTTP status mapping on the server.
//! - [`api`]: `#[server]` functions (thin: validate, call the server modules).
//! - [`app`] and [`ui`]: the Leptos shell, router and components.
//! - [`tools`]: a reply's tool calls, the log of records its third part is.
//! - [`markdown`]: message bodies to sanitized HTML, the same on both sides.
//! - [`pretty_json`]: a tool call's JSON arguments laid out for reading.
//! - [`live`]: the browser's per-thread subscription and the message store it feeds.
//! - `server` (feature `ssr`): state, config, store, outbox, generation, provider,
//!   writer (appender), hub, SSE.

#![recursion_limit = "256"]

pub mod api;
pub mod app;
pub mod error;
pub mod live;
pub mod markdown;
pub mod model;
pub mod pretty_json;
pub mod search;
pub mod tools;
pub mod ui;

#[cfg(feature = "ssr")]
pub mod server;

#[cfg(feature = "hydrate")]
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    // Islands mode: the page is server-rendered, and Leptos's island script
    // hydrates each `#[island]` right after this returns.
    leptos::mount::hydrate_islands();
    // A marker for the browser tests: the page is interactive now. The
    // script hydrates the islands in this same turn (promise callbacks
    // only), so a timer set here fires after the last island.
    leptos::prelude::set_timeout(
        || {
            let _ = js_sys::Reflect::set(
                &js_sys::global(),
                &"__streamchatHydrated".into(),
                &true.into(),
            );
        },
        std::time::Duration::ZERO,
    );
}
