//! In-memory fan-out of committed events, one broadcast channel per thread,
//! plus the thread list's channel and each thread's presence count.
//!
//! Only the writer publishes changes, and only after its transaction
//! committed, so a subscriber never sees text the database does not hold.
//! Each event is serialized once and shared (`Arc`) by every subscriber: no
//! database read and no encoding per delta per subscriber.
//!
//! Ephemeral events (presence, thread titles) are not changes of the
//! database: they carry revision 0 and no event id.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::body::Bytes;
use tokio::sync::{broadcast, Notify};

use crate::model::ChatEvent;

/// A thread's watcher count goes out at most this often: ten thousand
/// viewers joining send a handful of presence events, not ten thousand.
const PRESENCE_EVERY: Duration = Duration::from_millis(200);
/// Thread-list events a home page may fall behind by (it refetches the
/// list when it lags).
const INDEX_CAPACITY: usize = 256;

/// One committed change, ready to send.
#[derive(Debug)]
pub struct Envelope {
    /// The revision the change was committed at (the SSE event id); 0 for
    /// an ephemeral event.
    pub rev: i64,
    /// The event as one SSE `data:` frame, shared by every subscriber (a
    /// subscriber sends these very bytes: no copy per viewer).
    pub frame: Bytes,
    /// The event itself, for subscribers that regroup deltas.
    pub event: ChatEvent,
}

impl Envelope {
    fn new(rev: i64, event: ChatEvent) -> Arc<Self> {
        let mut frame = b"data:".to_vec();
        serde_json::to_writer(&mut frame, &event).expect("events serialize");
        frame.extend_from_slice(b"\n\n");
        Arc::new(Self {
            rev,
            frame: Bytes::from(frame),
            event,
        })
    }
}

#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

struct Inner {
    topics: Mutex<HashMap<String, Topic>>,
    /// Events a subscriber may fall behind by before it lags. A lagging
    /// subscriber is resynced from the database (see `sse.rs`), so this
    /// bounds memory per thread without ever slowing the writer or other
    /// subscribers.
    capacity: usize,
    /// The thread list's stream (home pages).
    index: broadcast::Sender<Arc<Envelope>>,
    /// Threads whose list entry changed, for the index task (`index.rs`).
    index_dirty: Mutex<HashSet<String>>,
    index_notify: Notify,
}

struct Topic {
    sender: broadcast::Sender<Arc<Envelope>>,
    /// Open subscriptions (see [`Hub::join`]).
    watchers: u32,
    /// A presence event is already due to go out.
    presence_due: bool,
}

impl Hub {
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                topics: Mutex::default(),
                capacity,
                index: broadcast::channel(INDEX_CAPACITY).0,
                index_dirty: Mutex::default(),
                index_notify: Notify::new(),
            }),
        }
    }

    fn topics(&self) -> std::sync::MutexGuard<'_, HashMap<String, Topic>> {
        self.inner.topics.lock().expect("hub lock")
    }

    pub fn subscribe(&self, thread_id: &str) -> broadcast::Receiver<Arc<Envelope>> {
        let capacity = self.inner.capacity;
        self.topics()
            .entry(thread_id.to_owned())
            .or_insert_with(|| Topic {
                sender: broadcast::channel(capacity).0,
                watchers: 0,
                presence_due: false,
            })
            .sender
            .subscribe()
    }

    /// Sends a committed event to the thread's subscribers, if any. The event
    /// is encoded outside the lock, once for all of them.
    pub fn publish(&self, thread_id: &str, rev: i64, event: ChatEvent) {
        if matches!(
            event,
            ChatEvent::Message { .. } | ChatEvent::Finished { .. }
        ) {
            self.thread_changed(thread_id);
        }
        self.send(thread_id, rev, event);
    }

    /// Sends an event that is not a stored change (no revision).
    pub fn publish_ephemeral(&self, thread_id: &str, event: ChatEvent) {
        self.send(thread_id, 0, event);
    }

    fn send(&self, thread_id: &str, rev: i64, event: ChatEvent) {
        let sender = {
            let mut topics = self.topics();
            match topics.get(thread_id) {
                None => return,
                Some(topic) if topic.sender.receiver_count() == 0 && topic.watchers == 0 => {
                    topics.remove(thread_id);
                    return;
                }
                Some(topic) => topic.sender.clone(),
            }
        };
        let _ = sender.send(Envelope::new(rev, event));
    }

    /// Counts a viewer of the thread until the guard drops; the thread's
    /// subscribers hear the new count shortly after.
    pub fn join(&self, thread_id: &str) -> Presence {
        self.watchers_changed(thread_id, 1);
        Presence {
            hub: self.clone(),
            thread_id: thread_id.to_owned(),
        }
    }

    fn watchers_changed(&self, thread_id: &str, delta: i32) {
        let schedule = {
            let mut topics = self.topics();
            let Some(topic) = topics.get_mut(thread_id) else {
                return; // join comes after subscribe, which creates the topic
            };
            topic.watchers = topic.watchers.saturating_add_signed(delta);
            !std::mem::replace(&mut topic.presence_due, true)
        };
        if schedule {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let hub = self.clone();
                let thread_id = thread_id.to_owned();
                runtime.spawn(async move {
                    tokio::time::sleep(PRESENCE_EVERY).await;
                    hub.send_presence(&thread_id);
                });
            }
        }
    }

    fn send_presence(&self, thread_id: &str) {
        let watchers = {
            let mut topics = self.topics();
            let Some(topic) = topics.get_mut(thread_id) else {
                return;
            };
            topic.presence_due = false;
            topic.watchers
        };
        self.publish_ephemeral(thread_id, ChatEvent::Presence { watchers });
    }

    /// The thread list's stream.
    pub fn subscribe_index(&self) -> broadcast::Receiver<Arc<Envelope>> {
        self.inner.index.subscribe()
    }

    /// Marks a thread's list entry as changed (new message, reply ended,
    /// renamed). Nothing is read unless someone watches the list.
    pub fn thread_changed(&self, thread_id: &str) {
        if self.inner.index.receiver_count() == 0 {
            return;
        }
        self.inner
            .index_dirty
            .lock()
            .expect("index lock")
            .insert(thread_id.to_owned());
        self.inner.index_notify.notify_one();
    }

    /// Waits for, and takes, the threads whose list entries changed.
    pub async fn changed_threads(&self) -> HashSet<String> {
        loop {
            let taken = std::mem::take(&mut *self.inner.index_dirty.lock().expect("index lock"));
            if !taken.is_empty() {
                return taken;
            }
            self.inner.index_notify.notified().await;
        }
    }

    pub fn publish_index(&self, event: ChatEvent) {
        let _ = self.inner.index.send(Envelope::new(0, event));
    }
}

/// One counted viewer of a thread (see [`Hub::join`]).
pub struct Presence {
    hub: Hub,
    thread_id: String,
}

impl Drop for Presence {
    fn drop(&mut self) {
        self.hub.watchers_changed(&self.thread_id, -1);
    }
}
