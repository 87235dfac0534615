//! A message body on the page: its finished Markdown blocks, each drawn once
//! and kept (a selection or a pressed Copy button in them survives), and the
//! open last block, redrawn as the text grows.

use std::sync::{Arc, Mutex};

use leptos::prelude::*;

use crate::markdown::Blocks;

/// One finished block: its key (render generation, position) and HTML.
pub type Block = ((u64, usize), Arc<str>);

/// The rendered form of one message body, kept in step with it.
#[derive(Clone)]
pub struct RenderedBody {
    /// Finished blocks. Changes only when a block finishes or the body is
    /// replaced, so the list is diffed per block, never per delta.
    pub done: ArcRwSignal<Vec<Block>>,
    /// The open block's HTML: the only part redrawn per delta.
    pub tail: ArcRwSignal<String>,
    /// The renderer's position and the generation keying `done` (bumped when
    /// the body is replaced, so no stale block DOM is reused).
    state: Arc<Mutex<(u64, Blocks)>>,
}

impl RenderedBody {
    pub fn new(body: &str) -> Self {
        let mut blocks = Blocks::default();
        let mut done = Vec::new();
        blocks.extend(body, |html| done.push(((0, done.len()), html.into())));
        Self {
            done: ArcRwSignal::new(done),
            tail: ArcRwSignal::new(blocks.tail.clone()),
            state: Arc::new(Mutex::new((0, blocks))),
        }
    }

    /// The body grew by appended text: render only what changed.
    pub fn appended(&self, body: &str) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let generation = state.0;
        let mut fresh = Vec::new();
        state.1.extend(body, |html| fresh.push(html));
        if !fresh.is_empty() {
            self.done.update(|done| {
                for html in fresh {
                    let key = (generation, done.len());
                    done.push((key, html.into()));
                }
            });
        }
        self.tail.set(state.1.tail.clone());
    }

    /// The body was replaced by other text: render it afresh.
    pub fn replaced(&self, body: &str) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let generation = state.0 + 1;
        let mut blocks = Blocks::default();
        let mut done = Vec::new();
        blocks.extend(body, |html| {
            done.push(((generation, done.len()), html.into()))
        });
        self.done.set(done);
        self.tail.set(blocks.tail.clone());
        *state = (generation, blocks);
    }
}

/// The body's blocks in a `.body` element.
#[component]
pub fn MessageBody(rendered: RenderedBody) -> impl IntoView {
    let RenderedBody { done, tail, .. } = rendered;
    view! {
        <div class="body">
            <For
                each=move || done.get()
                key=|block: &Block| block.0
                children=|block: Block| view! { <div class="block" inner_html=block.1.to_string()></div> }
            />
            <div class="block tail" inner_html=move || tail.get()></div>
        </div>
    }
}
