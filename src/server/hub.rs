//! In-memory fan-out of committed events, one broadcast channel per thread.
//!
//! Only the writer publishes, and only after its transaction committed, so a
//! subscriber never sees text the database does not hold. Each event is
//! serialized once and shared (`Arc`) by every subscriber: no database read
//! and no encoding per delta per subscriber.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use axum::body::Bytes;
use tokio::sync::broadcast;

use crate::model::ChatEvent;

/// One committed change, ready to send.
#[derive(Debug)]
pub struct Envelope {
    /// The revision the change was committed at (the SSE event id).
    pub rev: i64,
    /// The event as one SSE `data:` frame, shared by every subscriber (a
    /// subscriber sends these very bytes: no copy per viewer).
    pub frame: Bytes,
    /// The event itself, for subscribers that regroup deltas.
    pub event: ChatEvent,
}

#[derive(Clone)]
pub struct Hub {
    threads: Arc<Mutex<HashMap<String, broadcast::Sender<Arc<Envelope>>>>>,
    /// Events a subscriber may fall behind by before it lags. A lagging
    /// subscriber is resynced from the database (see `sse.rs`), so this
    /// bounds memory per thread without ever slowing the writer or other
    /// subscribers.
    capacity: usize,
}

impl Hub {
    pub fn new(capacity: usize) -> Self {
        Self {
            threads: Arc::default(),
            capacity,
        }
    }

    pub fn subscribe(&self, thread_id: &str) -> broadcast::Receiver<Arc<Envelope>> {
        let mut threads = self.threads.lock().expect("hub lock");
        threads
            .entry(thread_id.to_owned())
            .or_insert_with(|| broadcast::channel(self.capacity).0)
            .subscribe()
    }

    /// Sends a committed event to the thread's subscribers, if any. The event
    /// is encoded outside the lock, once for all of them.
    pub fn publish(&self, thread_id: &str, rev: i64, event: ChatEvent) {
        let sender = {
            let mut threads = self.threads.lock().expect("hub lock");
            match threads.get(thread_id) {
                None => return,
                Some(sender) if sender.receiver_count() == 0 => {
                    threads.remove(thread_id);
                    return;
                }
                Some(sender) => sender.clone(),
            }
        };
        let mut frame = b"data:".to_vec();
        serde_json::to_writer(&mut frame, &event).expect("events serialize");
        frame.extend_from_slice(b"\n\n");
        let frame = Bytes::from(frame);
        let _ = sender.send(Arc::new(Envelope { rev, frame, event }));
    }

    /// Events held for a thread's slowest subscriber (at most the capacity).
    pub fn backlog(&self, thread_id: &str) -> usize {
        let threads = self.threads.lock().expect("hub lock");
        threads.get(thread_id).map_or(0, |s| s.len())
    }

    /// Subscribers of a thread right now.
    pub fn viewers(&self, thread_id: &str) -> usize {
        let threads = self.threads.lock().expect("hub lock");
        threads.get(thread_id).map_or(0, |s| s.receiver_count())
    }
}
