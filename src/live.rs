//! The browser's copy of a thread: one reactive entry per message, fed by the
//! thread's SSE subscription (hydrate only) and by the server functions.
//!
//! Exactly-once rules: a delta is applied only at the byte offset the copy
//! holds (an older one is a duplicate and dropped, a later one is a gap and
//! the message is re-fetched); a whole row replaces the copy only if its
//! revision is newer; a finished reply's copy must match the final length
//! and hash, or it is re-fetched.

use leptos::prelude::*;

use crate::model::{body_hash, ChatEvent, Message, Part, ReplyStats, Role, Status, Usage};
use crate::tools::{ToolCall, ToolLog};
use crate::ui::body::RenderedBody;

/// One message as the page shows it; the parts that change are signals.
#[derive(Clone)]
pub struct LiveMessage {
    pub id: i64,
    pub author: String,
    pub role: Role,
    pub model: Option<String>,
    pub created_at: i64,
    pub body: ArcRwSignal<String>,
    /// The body as Markdown, block by block; follows `body`.
    pub rendered: RenderedBody,
    /// A reasoning model's thinking (the reply's second part), and its
    /// Markdown.
    pub thinking: ArcRwSignal<String>,
    pub thinking_rendered: RenderedBody,
    /// Its tool calls: the third part's text, and the calls it folds into.
    pub tools: ArcRwSignal<String>,
    pub tool_calls: ArcRwSignal<ToolLog>,
    pub status: ArcRwSignal<Status>,
    pub error: ArcRwSignal<Option<String>>,
    pub stopped_by: ArcRwSignal<Option<String>>,
    pub notice: ArcRwSignal<Option<String>>,
    pub stats: ArcRwSignal<ReplyStats>,
    pub requested_by: Option<String>,
    rev: ArcRwSignal<i64>,
}

impl LiveMessage {
    fn new(m: Message) -> Self {
        Self {
            id: m.id,
            stats: ArcRwSignal::new(stats_of(&m)),
            author: m.author,
            role: m.role,
            model: m.model,
            created_at: m.created_at,
            rendered: RenderedBody::new(&m.body),
            body: ArcRwSignal::new(m.body),
            thinking_rendered: RenderedBody::new(&m.thinking),
            thinking: ArcRwSignal::new(m.thinking),
            tool_calls: ArcRwSignal::new(ToolLog::parse(&m.tools)),
            tools: ArcRwSignal::new(m.tools),
            status: ArcRwSignal::new(m.status),
            error: ArcRwSignal::new(m.error),
            stopped_by: ArcRwSignal::new(m.stopped_by),
            notice: ArcRwSignal::new(m.notice),
            requested_by: m.requested_by,
            rev: ArcRwSignal::new(m.rev),
        }
    }

    /// One part's text.
    fn text(&self, part: Part) -> &ArcRwSignal<String> {
        match part {
            Part::Answer => &self.body,
            Part::Thinking => &self.thinking,
            Part::Tools => &self.tools,
        }
    }

    /// Appends to one part's text, and follows in what shows it.
    fn append(&self, part: Part, more: &str) {
        let text = self.text(part);
        text.update(|t| t.push_str(more));
        match part {
            Part::Answer => self.body.with_untracked(|b| self.rendered.appended(b)),
            Part::Thinking => self
                .thinking
                .with_untracked(|t| self.thinking_rendered.appended(t)),
            Part::Tools => self.tool_calls.update(|log| log.feed(more)),
        }
    }

    /// Replaces one part's text (a newer copy of the row).
    fn replace(&self, part: Part, new: &str) {
        match part {
            Part::Answer => self.rendered.replaced(new),
            Part::Thinking => self.thinking_rendered.replaced(new),
            Part::Tools => self.tool_calls.set(ToolLog::parse(new)),
        }
        self.text(part).set(new.to_owned());
    }
}

fn stats_of(m: &Message) -> ReplyStats {
    ReplyStats {
        usage: m
            .prompt_tokens
            .zip(m.completion_tokens)
            .map(|(p, c)| Usage {
                prompt_tokens: p,
                completion_tokens: c,
                estimated: m.usage_estimated,
                reasoning_tokens: m.reasoning_tokens,
            }),
        ttft_ms: m.ttft_ms,
        tokens_per_second: m.tokens_per_second,
        retries: m.retries,
        thinking_ms: m.thinking_ms,
    }
}

/// A thread's messages in id (creation) order.
#[derive(Clone, Copy)]
pub struct MessageList {
    /// The thread these messages belong to (every call naming one of them
    /// names it too).
    thread: StoredValue<String>,
    items: RwSignal<Vec<LiveMessage>>,
    /// How many people watch the thread now (from presence events).
    pub watchers: RwSignal<Option<u32>>,
    /// The thread's title, when renamed since the page loaded.
    pub title: RwSignal<Option<String>>,
    /// What the polite live region says: a reply that just ended (once
    /// per reply, never per token).
    pub announcement: RwSignal<String>,
    /// Whether the live subscription is connected (it reconnects by itself).
    pub connected: RwSignal<bool>,
}

impl MessageList {
    pub fn new(thread: String, messages: Vec<Message>) -> Self {
        Self {
            thread: StoredValue::new(thread),
            items: RwSignal::new(messages.into_iter().map(LiveMessage::new).collect()),
            watchers: RwSignal::new(None),
            title: RwSignal::new(None),
            announcement: RwSignal::new(String::new()),
            connected: RwSignal::new(true),
        }
    }

    /// The thread's id.
    pub fn thread(&self) -> String {
        self.thread.get_value()
    }

    /// The id of the oldest message held (the cursor for older pages).
    pub fn oldest_id(&self) -> Option<i64> {
        self.items
            .with_untracked(|items| items.first().map(|m| m.id))
    }

    /// Replies being written now, by author.
    pub fn writing(&self) -> Vec<String> {
        self.items.with(|items| {
            items
                .iter()
                .filter(|m| m.status.get() == Status::Streaming)
                .map(|m| m.author.clone())
                .collect()
        })
    }

    pub fn items(&self) -> Vec<LiveMessage> {
        self.items.get()
    }

    /// The current body of message `id`, if held.
    pub fn body(&self, id: i64) -> Option<String> {
        self.find(id).map(|m| m.body.get_untracked())
    }

    /// The current thinking of message `id`, if held.
    pub fn thinking(&self, id: i64) -> Option<String> {
        self.find(id).map(|m| m.thinking.get_untracked())
    }

    /// The tool log of message `id` (its third part's text), if held.
    pub fn tools(&self, id: i64) -> Option<String> {
        self.find(id).map(|m| m.tools.get_untracked())
    }

    /// The tool calls of message `id` so far, if held.
    pub fn tool_calls(&self, id: i64) -> Option<Vec<ToolCall>> {
        self.find(id)
            .map(|m| m.tool_calls.with_untracked(|log| log.calls().to_vec()))
    }

    /// How message `id` went so far (usage, timings), if held.
    pub fn stats(&self, id: i64) -> Option<ReplyStats> {
        self.find(id).map(|m| m.stats.get_untracked())
    }

    /// The current status of message `id`, if held.
    pub fn status(&self, id: i64) -> Option<Status> {
        self.find(id).map(|m| m.status.get_untracked())
    }

    pub fn is_empty(&self) -> bool {
        self.items.with(Vec::is_empty)
    }

    fn find(&self, id: i64) -> Option<LiveMessage> {
        self.items
            .with_untracked(|items| items.iter().find(|m| m.id == id).cloned())
    }

    /// Adds a row, or replaces the copy of it if the row is newer.
    pub fn upsert(&self, m: Message) {
        match self.find(m.id) {
            Some(held) if m.rev > held.rev.get_untracked() => {
                held.stats.set(stats_of(&m));
                for part in Part::ALL {
                    let new = m.part(part);
                    if held.text(part).with_untracked(|t| t != new) {
                        held.replace(part, new);
                    }
                }
                held.status.set(m.status);
                held.error.set(m.error);
                held.stopped_by.set(m.stopped_by);
                held.notice.set(m.notice);
                held.rev.set(m.rev);
            }
            Some(_) => {}
            None => self.items.update(|items| {
                let at = items.partition_point(|held| held.id < m.id);
                items.insert(at, LiveMessage::new(m));
            }),
        }
    }

    /// Applies one event (at revision `rev`, when it carried one). Returns
    /// the id of a message whose copy cannot be trusted and must be re-fetched.
    pub fn apply(&self, event: ChatEvent, rev: Option<i64>) -> Option<i64> {
        match event {
            ChatEvent::Message { message } => {
                self.upsert(message);
                None
            }
            ChatEvent::Delta {
                id,
                part,
                offset,
                text,
            } => {
                let Some(held) = self.find(id) else {
                    return Some(id); // a message this copy has not seen yet
                };
                let len = held.text(part).with_untracked(String::len);
                if offset == len {
                    held.append(part, &text);
                    if let Some(rev) = rev {
                        held.rev.set(rev);
                    }
                    None
                } else if offset + text.len() <= len {
                    None // already applied
                } else {
                    Some(id) // a gap
                }
            }
            ChatEvent::Notice {
                id,
                notice,
                retries,
            } => {
                let held = self.find(id)?;
                held.notice.set(notice);
                held.stats.update(|s| s.retries = retries);
                if let Some(rev) = rev {
                    held.rev.set(rev);
                }
                None
            }
            ChatEvent::Finished {
                id,
                status,
                len,
                hash,
                thinking_len,
                thinking_hash,
                tools_len,
                tools_hash,
                error,
                stopped_by,
                stats,
                ..
            } => {
                let held = self.find(id)?;
                if held.status.get_untracked() == Status::Streaming {
                    self.announcement.set(announce(&held, status));
                }
                held.status.set(status);
                held.error.set(error);
                held.stopped_by.set(stopped_by);
                held.notice.set(None);
                held.stats.set(stats);
                if let Some(rev) = rev {
                    held.rev.set(rev);
                }
                let whole = held
                    .body
                    .with_untracked(|b| b.len() == len && body_hash(b) == hash)
                    && held.thinking.with_untracked(|t| {
                        t.len() == thinking_len && body_hash(t) == thinking_hash
                    })
                    && held
                        .tools
                        .with_untracked(|t| t.len() == tools_len && body_hash(t) == tools_hash);
                (!whole).then_some(id)
            }
            ChatEvent::Presence { watchers } => {
                self.watchers.set(Some(watchers));
                None
            }
            ChatEvent::Thread { thread } => {
                self.title.set(Some(thread.title));
                None
            }
            ChatEvent::Thought { id, thinking_ms } => {
                let held = self.find(id)?;
                held.stats.update(|s| s.thinking_ms = Some(thinking_ms));
                if let Some(rev) = rev {
                    held.rev.set(rev);
                }
                None
            }
            ChatEvent::Sync { .. } => None,
        }
    }
}

/// What a screen reader hears when a reply ends.
fn announce(reply: &LiveMessage, status: Status) -> String {
    if status == Status::Done {
        let text: String = reply.body.with_untracked(|b| b.chars().take(200).collect());
        format!("{} replied: {text}", reply.author)
    } else {
        format!("{}'s reply ended: {}.", reply.author, status.label())
    }
}

/// Subscribes to a thread's events until the calling reactive scope ends.
/// `EventSource` reconnects by itself, sending `Last-Event-ID`.
#[cfg(feature = "hydrate")]
pub fn subscribe(thread_id: &str, since: i64, list: MessageList, on_change: impl Fn() + 'static) {
    use send_wrapper::SendWrapper;
    use wasm_bindgen::{closure::Closure, JsCast};
    use web_sys::{EventSource, MessageEvent};

    let url = format!("/api/threads/{thread_id}/events?since={since}");
    let Ok(source) = EventSource::new(&url) else {
        return;
    };
    let on_message = Closure::<dyn Fn(MessageEvent)>::new(move |msg: MessageEvent| {
        let Some(data) = msg.data().as_string() else {
            return;
        };
        let Ok(event) = serde_json::from_str::<ChatEvent>(&data) else {
            leptos::logging::warn!("unreadable event: {data}");
            return;
        };
        let rev = msg.last_event_id().parse::<i64>().ok();
        if let Some(id) = list.apply(event, rev) {
            refetch(list, id);
        }
        on_change();
    });
    source.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    let on_open = Closure::<dyn Fn(web_sys::Event)>::new(move |_| list.connected.set(true));
    let on_error = Closure::<dyn Fn(web_sys::Event)>::new(move |_| list.connected.set(false));
    source.set_onopen(Some(on_open.as_ref().unchecked_ref()));
    source.set_onerror(Some(on_error.as_ref().unchecked_ref()));
    let guard = SendWrapper::new((source, on_message, on_open, on_error));
    on_cleanup(move || guard.0.close());
}

/// Keeps a thread list current: refetched whenever the stream (re)opens,
/// then updated entry by entry, newest activity first.
#[cfg(feature = "hydrate")]
pub fn subscribe_thread_list(threads: RwSignal<Vec<crate::model::ThreadSummary>>) {
    use send_wrapper::SendWrapper;
    use wasm_bindgen::{closure::Closure, JsCast};
    use web_sys::{Event, EventSource, MessageEvent};

    let Ok(source) = EventSource::new("/api/threads/events") else {
        return;
    };
    let on_open = Closure::<dyn Fn(Event)>::new(move |_: Event| {
        leptos::task::spawn_local(async move {
            if let Ok(list) = crate::api::list_threads().await {
                threads.set(list);
            }
        });
    });
    let on_message = Closure::<dyn Fn(MessageEvent)>::new(move |msg: MessageEvent| {
        let Some(data) = msg.data().as_string() else {
            return;
        };
        if let Ok(ChatEvent::Thread { thread }) = serde_json::from_str::<ChatEvent>(&data) {
            threads.update(|list| {
                list.retain(|t| t.id != thread.id);
                let at = list.partition_point(|t| {
                    (t.last_activity_at, &t.id) > (thread.last_activity_at, &thread.id)
                });
                list.insert(at, thread);
            });
        }
    });
    source.set_onopen(Some(on_open.as_ref().unchecked_ref()));
    source.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    let guard = SendWrapper::new((source, on_open, on_message));
    on_cleanup(move || guard.0.close());
}

/// Replaces a message's copy with the stored row.
pub fn refetch(list: MessageList, id: i64) {
    leptos::task::spawn_local(async move {
        match crate::api::get_message(list.thread(), id).await {
            Ok(message) => list.replace(message),
            Err(e) => leptos::logging::warn!("could not re-fetch message {id}: {e}"),
        }
    });
}

impl MessageList {
    /// A re-fetched row wins over the copy whatever its revision: the copy
    /// was found broken.
    pub fn replace(&self, m: Message) {
        if let Some(held) = self.find(m.id) {
            held.rev.set(m.rev - 1);
        }
        self.upsert(m);
    }
}
