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
//!
//! With several instances (PostgreSQL) the wake-up listener is the only
//! publisher of changes; the hub keeps, per thread, the last revision the
//! listener has read up to (see [`Hub::wake`]), and adds the other
//! instances' viewers to each presence count.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::body::Bytes;
use tokio::{
    sync::{broadcast, Notify},
    time::Instant,
};

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
    /// Not an event: the subscriber must reload what changed after its
    /// revision from the database (changes may have been missed while the
    /// wake-up listener was reconnecting).
    pub resync: bool,
}

impl Envelope {
    fn new(rev: i64, event: ChatEvent) -> Arc<Self> {
        // Room for a delta's frame, so it is not regrown as it is written.
        let mut frame = Vec::with_capacity(160);
        frame.extend_from_slice(b"data:");
        serde_json::to_writer(&mut frame, &event).expect("events serialize");
        frame.extend_from_slice(b"\n\n");
        Arc::new(Self {
            rev,
            frame: Bytes::from(frame),
            event,
            resync: false,
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
    /// Several instances: per watched thread, the revision up to which the
    /// wake-up listener has read it.
    read_up_to: Mutex<HashMap<String, i64>>,
    /// Several instances: other instances' viewers per thread.
    remote: Mutex<HashMap<String, RemoteCounts>>,
    /// Where this instance's presence counts go for the other instances.
    presence_out: Mutex<Option<tokio::sync::mpsc::UnboundedSender<(String, u32)>>>,
}

/// Per instance: its viewers of one thread and when it said so.
type RemoteCounts = HashMap<String, (u32, Instant)>;

/// How long another instance's viewer count holds without being repeated
/// (an instance repeats its counts every [`PRESENCE_REPEAT`]).
const REMOTE_PRESENCE_TTL: Duration = Duration::from_secs(25);
/// How often an instance repeats its viewer counts to the others.
pub const PRESENCE_REPEAT: Duration = Duration::from_secs(10);

struct Topic {
    sender: broadcast::Sender<Arc<Envelope>>,
    /// Open subscriptions (see [`Hub::join`]).
    watchers: u32,
    /// A presence event is already due to go out.
    presence_due: bool,
    /// The count last told to the other instances (only a change of this
    /// instance's own count is told: another instance's change must not
    /// echo back and forth).
    announced: u32,
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
                read_up_to: Mutex::default(),
                remote: Mutex::default(),
                presence_out: Mutex::default(),
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
                announced: 0,
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
        let (local, changed) = {
            let mut topics = self.topics();
            let Some(topic) = topics.get_mut(thread_id) else {
                return;
            };
            topic.presence_due = false;
            let changed = std::mem::replace(&mut topic.announced, topic.watchers) != topic.watchers;
            (topic.watchers, changed)
        };
        if changed {
            if let Some(out) = &*self.inner.presence_out.lock().expect("presence lock") {
                let _ = out.send((thread_id.to_owned(), local));
            }
        }
        let watchers = local + self.remote_watchers(thread_id);
        self.publish_ephemeral(thread_id, ChatEvent::Presence { watchers });
    }

    /// Other instances' viewers of the thread (counts not repeated within
    /// [`REMOTE_PRESENCE_TTL`] are dropped: their instance is gone).
    fn remote_watchers(&self, thread_id: &str) -> u32 {
        let mut remote = self.inner.remote.lock().expect("remote lock");
        let Some(counts) = remote.get_mut(thread_id) else {
            return 0;
        };
        counts.retain(|_, (_, at)| at.elapsed() < REMOTE_PRESENCE_TTL);
        counts.values().map(|(n, _)| *n).sum()
    }

    /// Sends this instance's viewer counts to `out` from now on (several
    /// instances: the listener forwards them).
    pub fn send_presence_to(&self, out: tokio::sync::mpsc::UnboundedSender<(String, u32)>) {
        *self.inner.presence_out.lock().expect("presence lock") = Some(out);
    }

    /// This instance's viewer count of every thread it has viewers of.
    pub fn local_watchers(&self) -> Vec<(String, u32)> {
        self.topics()
            .iter()
            .filter(|(_, t)| t.watchers > 0)
            .map(|(id, t)| (id.clone(), t.watchers))
            .collect()
    }

    /// Another instance's viewer count of a thread; this instance's viewers
    /// of it hear the new total shortly.
    pub fn remote_presence(&self, thread_id: &str, instance: &str, watchers: u32) {
        {
            let mut remote = self.inner.remote.lock().expect("remote lock");
            let counts = remote.entry(thread_id.to_owned()).or_default();
            if watchers == 0 {
                counts.remove(instance);
            } else {
                counts.insert(instance.to_owned(), (watchers, Instant::now()));
            }
            if counts.is_empty() {
                remote.remove(thread_id);
            }
        }
        self.watchers_changed(thread_id, 0);
    }

    /// A wake-up: revisions `first..=last` of the thread were committed.
    /// Returns the revision to read the thread from when it has viewers
    /// here: where it was read up to, or, for a thread not read since it
    /// gained viewers, `first - 1` (everything before this commit was
    /// committed before the first viewer subscribed, so its snapshot holds
    /// it). A thread without viewers is forgotten (bounded memory); the
    /// check and the forgetting happen under the hub's lock, atomically
    /// with respect to a viewer subscribing.
    pub fn wake(&self, thread_id: &str, first: i64) -> Option<i64> {
        let topics = self.topics();
        let mut read = self.inner.read_up_to.lock().expect("read lock");
        let watched = topics
            .get(thread_id)
            .is_some_and(|t| t.sender.receiver_count() > 0);
        if watched {
            return Some(read.get(thread_id).copied().unwrap_or(first - 1));
        }
        read.remove(thread_id);
        None
    }

    /// Notes that the thread's changes up to `rev` were read and published.
    pub fn read_up_to(&self, thread_id: &str, rev: i64) {
        let mut read = self.inner.read_up_to.lock().expect("read lock");
        let entry = read.entry(thread_id.to_owned()).or_insert(rev);
        *entry = (*entry).max(rev);
    }

    /// Threads with viewers here, with the revision each was read up to
    /// (`None`: never read since the listener started).
    pub fn watched(&self) -> Vec<(String, Option<i64>)> {
        let topics = self.topics();
        let read = self.inner.read_up_to.lock().expect("read lock");
        topics
            .iter()
            .filter(|(_, t)| t.sender.receiver_count() > 0)
            .map(|(id, _)| (id.clone(), read.get(id).copied()))
            .collect()
    }

    /// Tells the thread's subscribers to reload from the database what
    /// changed after their revision.
    pub fn resync(&self, thread_id: &str) {
        let sender = self.topics().get(thread_id).map(|t| t.sender.clone());
        if let Some(sender) = sender {
            let mut envelope = Envelope::new(0, ChatEvent::Sync { rev: 0 });
            if let Some(e) = Arc::get_mut(&mut envelope) {
                e.resync = true;
            }
            let _ = sender.send(envelope);
        }
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
