//! The replies generating now: a handle per reply (stop, activity, why it
//! ended), the one watchdog task that times replies out, and the limits on
//! how many replies may run and how often an author may ask.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore},
    time::Instant,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::budget::{Budget, Held, PerClient, Spend};
use crate::error::AppError;
use crate::server::{config::LimitsConfig, store::Coordination, Background};

/// Why a reply was told to end early.
#[derive(Clone, Debug, PartialEq)]
pub enum EndRequest {
    Stop {
        by: String,
    },
    IdleTimeout(Duration),
    TotalTimeout(Duration),
    /// The writer could not store the reply's text.
    Storage,
    /// Another instance took the reply over (this one was paused past its
    /// lease): nothing more of this producer's is stored.
    LeaseLost,
    Shutdown,
}

struct Running {
    cancel: CancellationToken,
    started: Instant,
    /// Milliseconds after `started` of the last sign of life.
    last_activity: Arc<AtomicU64>,
    /// Milliseconds spent waiting for people (tool approvals): not counted
    /// against the total time.
    paused: Arc<AtomicU64>,
    end: Arc<Mutex<Option<EndRequest>>>,
}

impl Running {
    /// Records why the reply must end (the first reason wins) and cancels it.
    fn end(&self, reason: EndRequest) {
        let mut end = self.end.lock().expect("end lock");
        if end.is_none() {
            *end = Some(reason);
        }
        self.cancel.cancel();
    }
}

#[derive(Clone)]
pub struct Generations {
    running: Arc<Mutex<HashMap<i64, Running>>>,
    /// One permit per reply allowed to generate at once.
    slots: Arc<Semaphore>,
    max_replies: usize,
    /// Replies generating now per client key.
    per_client: PerClient,
    /// Replies started per client per minute (each bot mention is one).
    asks: Budget,
    /// Every reply's task, so that shutdown can wait until each has
    /// recorded how it ended (or handed itself over).
    tasks: TaskTracker,
    /// Set on shutdown: no reply starts any more.
    closed: Arc<AtomicBool>,
}

/// A reply's registration; dropping it frees the reply's slot.
pub struct Handle {
    id: i64,
    cancel: CancellationToken,
    started: Instant,
    last_activity: Arc<AtomicU64>,
    paused: Arc<AtomicU64>,
    end: Arc<Mutex<Option<EndRequest>>>,
    registry: Generations,
    _slot: Slot,
}

/// A reserved generation slot, not yet tied to a message; it holds one of
/// its client's replies too.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    _client: Option<Held>,
}

impl Generations {
    pub fn new(limits: &LimitsConfig) -> Self {
        Self {
            running: Arc::default(),
            slots: Arc::new(Semaphore::new(limits.max_concurrent_replies)),
            max_replies: limits.max_concurrent_replies,
            per_client: PerClient::new(limits.replies_per_client),
            asks: Budget::new(Spend::Replies, limits.mentions_per_minute),
            tasks: TaskTracker::new(),
            closed: Arc::default(),
        }
    }

    /// A slot for one more reply of `client` (none: a reply this instance
    /// adopts), or a clear refusal when all slots, or all of the client's,
    /// are taken.
    pub fn reserve(&self, client: Option<&str>) -> Result<Slot, AppError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(AppError::Unavailable(
                "The server is restarting, so no reply can start here now. Please send your \
                 message again in a moment."
                    .into(),
            ));
        }
        let permit = self.slots.clone().try_acquire_owned().map_err(|_| {
            AppError::limited(
                format!(
                    "The bots are already writing {} replies, their limit. Your message was not \
                     sent; please send it again in a moment.",
                    self.max_replies
                ),
                Duration::from_secs(5),
            )
        })?;
        let client = match client {
            None => None,
            Some(key) => Some(self.per_client.hold(key).ok_or_else(|| {
                AppError::limited(
                    format!(
                        "You already have {} replies being written, your limit. Your message \
                         was not sent; send it again once one has ended.",
                        self.per_client.max()
                    ),
                    Duration::from_secs(5),
                )
            })?),
        };
        Ok(Slot {
            _permit: permit,
            _client: client,
        })
    }

    /// Counts `n` replies started by the client `key` (its address or proxy
    /// identity, never a name the client picks), or refuses them all when
    /// that client started too many in the last minute. Counted in the
    /// database when several instances share it.
    pub async fn take_replies(
        &self,
        coordination: &Coordination,
        key: &str,
        n: u32,
    ) -> Result<(), AppError> {
        self.asks.take(coordination, key, n).await
    }

    /// Registers the reply `id` as generating, in the reserved slot.
    pub fn register(&self, id: i64, slot: Slot) -> Handle {
        let running = Running {
            cancel: CancellationToken::new(),
            started: Instant::now(),
            last_activity: Arc::default(),
            paused: Arc::default(),
            end: Arc::default(),
        };
        let handle = Handle {
            id,
            cancel: running.cancel.clone(),
            started: running.started,
            last_activity: running.last_activity.clone(),
            paused: running.paused.clone(),
            end: running.end.clone(),
            registry: self.clone(),
            _slot: slot,
        };
        self.running
            .lock()
            .expect("running lock")
            .insert(id, running);
        handle
    }

    /// Asks reply `id` to end; false if it is not generating here.
    pub fn end(&self, id: i64, reason: EndRequest) -> bool {
        let running = self.running.lock().expect("running lock");
        match running.get(&id) {
            Some(r) => {
                r.end(reason);
                true
            }
            None => false,
        }
    }

    /// Whether reply `id` is generating here (or still winding down).
    pub fn is_running(&self, id: i64) -> bool {
        self.running.lock().expect("running lock").contains_key(&id)
    }

    /// Replies generating now.
    pub fn count(&self) -> usize {
        self.running.lock().expect("running lock").len()
    }

    /// Runs a reply's task (tracked: shutdown waits for it).
    pub fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        self.tasks.spawn(task);
    }

    /// Shutdown: no reply starts any more, every running one is told to
    /// end; returns once every reply's task has returned (each has queued
    /// its end or its handover with the writer), or after `within`, with
    /// how many were still running then.
    pub async fn end_all_and_wait(&self, within: Duration) -> usize {
        self.closed.store(true, Ordering::Release);
        for r in self.running.lock().expect("running lock").values() {
            r.end(EndRequest::Shutdown);
        }
        self.tasks.close();
        match tokio::time::timeout(within, self.tasks.wait()).await {
            Ok(()) => 0,
            Err(_) => self.tasks.len(),
        }
    }

    /// One periodic task for all replies: a reply with no sign of life for
    /// `idle_timeout`, or running longer than `total_timeout`, is ended.
    pub fn spawn_watchdog(&self, limits: &LimitsConfig, background: &Background) {
        let registry = self.clone();
        let (idle, total, period) = (
            limits.idle_timeout(),
            limits.total_timeout(),
            limits.watchdog_period(),
        );
        background.every(period, move || {
            let now = Instant::now();
            for (id, r) in registry.running.lock().expect("running lock").iter() {
                let last =
                    r.started + Duration::from_millis(r.last_activity.load(Ordering::Relaxed));
                let paused = Duration::from_millis(r.paused.load(Ordering::Relaxed));
                if now.duration_since(r.started).saturating_sub(paused) >= total {
                    tracing::warn!(message_id = id, "reply over its total time; timing out");
                    r.end(EndRequest::TotalTimeout(total));
                } else if now.duration_since(last) >= idle {
                    tracing::warn!(message_id = id, "reply idle too long; timing out");
                    r.end(EndRequest::IdleTimeout(idle));
                }
            }
            std::future::ready(())
        });
    }
}

impl Handle {
    pub fn id(&self) -> i64 {
        self.id
    }

    /// Records a sign of life (new text, a retry).
    pub fn touch(&self) {
        let elapsed = self.started.elapsed().as_millis() as u64;
        self.last_activity.store(elapsed, Ordering::Relaxed);
    }

    /// Records time spent waiting for people (not counted against the
    /// reply's total time).
    pub fn paused(&self, waited: Duration) {
        self.paused
            .fetch_add(waited.as_millis() as u64, Ordering::Relaxed);
    }

    pub fn cancel_token(&self) -> &CancellationToken {
        &self.cancel
    }

    /// Why the reply was told to end, if it was.
    pub fn end_request(&self) -> Option<EndRequest> {
        self.end.lock().expect("end lock").clone()
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.registry
            .running
            .lock()
            .expect("running lock")
            .remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: usize, per_minute: u32) -> LimitsConfig {
        LimitsConfig {
            max_concurrent_replies: max,
            mentions_per_minute: per_minute,
            ..LimitsConfig::default()
        }
    }

    #[tokio::test]
    async fn slots_are_bounded_and_freed_with_the_handle() {
        let g = Generations::new(&limits(1, 10));
        let handle = g.register(1, g.reserve(None).unwrap());
        assert!(matches!(g.reserve(None), Err(AppError::Limited { .. })));
        assert_eq!(g.count(), 1);
        drop(handle);
        assert_eq!(g.count(), 0);
        assert!(g.reserve(None).is_ok());
    }

    #[tokio::test]
    async fn a_client_has_its_own_cap_beside_the_global_one() {
        let g = Generations::new(&LimitsConfig {
            replies_per_client: 2,
            ..limits(10, 10)
        });
        let a = g.reserve(Some("ip:10.0.0.1")).unwrap();
        let _b = g.reserve(Some("ip:10.0.0.1")).unwrap();
        assert!(matches!(
            g.reserve(Some("ip:10.0.0.1")),
            Err(AppError::Limited { .. })
        ));
        let _other = g.reserve(Some("ip:10.0.0.2")).unwrap();
        drop(a);
        assert!(g.reserve(Some("ip:10.0.0.1")).is_ok());
    }

    #[tokio::test]
    async fn stop_records_who_and_cancels() {
        let g = Generations::new(&limits(2, 10));
        let handle = g.register(7, g.reserve(None).unwrap());
        assert!(g.end(7, EndRequest::Stop { by: "Bob".into() }));
        assert!(handle.cancel_token().is_cancelled());
        assert!(g.end(7, EndRequest::Shutdown));
        assert_eq!(
            handle.end_request(),
            Some(EndRequest::Stop { by: "Bob".into() })
        );
        assert!(!g.end(8, EndRequest::Shutdown));
    }
}
