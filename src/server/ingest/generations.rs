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
    /// While the reply waits for people: 1 + milliseconds after `started`
    /// when it began (0: not waiting). Neither clock runs meanwhile.
    waiting_since: Arc<AtomicU64>,
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
    /// Replies waiting for a tool-call decision per client key (they hold
    /// no slot meanwhile).
    waiting: PerClient,
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
    waiting_since: Arc<AtomicU64>,
    end: Arc<Mutex<Option<EndRequest>>>,
    registry: Generations,
    /// The client whose slot the reply holds (none: adopted).
    client: Option<String>,
    /// The reply's slot: given back while it waits for people.
    slot: Mutex<Option<Slot>>,
}

/// How often a reply back from waiting looks for a free slot.
const SLOT_POLL: Duration = Duration::from_millis(100);

/// A reserved generation slot, not yet tied to a message; it holds one of
/// its client's replies too.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    client: Option<Held>,
}

/// A reply waiting for people, holding none of the slots; one of its
/// client's waiting places.
#[derive(Debug)]
pub struct Waiting {
    _place: Option<Held>,
    since: Instant,
}

impl Generations {
    pub fn new(limits: &LimitsConfig) -> Self {
        Self {
            running: Arc::default(),
            slots: Arc::new(Semaphore::new(limits.max_concurrent_replies)),
            max_replies: limits.max_concurrent_replies,
            per_client: PerClient::new(limits.replies_per_client),
            waiting: PerClient::new(limits.waiting_replies_per_client),
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
            client,
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
            waiting_since: Arc::default(),
            end: Arc::default(),
        };
        let handle = Handle {
            id,
            cancel: running.cancel.clone(),
            started: running.started,
            last_activity: running.last_activity.clone(),
            paused: running.paused.clone(),
            waiting_since: running.waiting_since.clone(),
            end: running.end.clone(),
            registry: self.clone(),
            client: slot.client.as_ref().map(|held| held.key().to_owned()),
            slot: Mutex::new(Some(slot)),
        };
        let mut all = self.running.lock().expect("running lock");
        // Registered after shutdown began (a reply adopted, or restarted,
        // at that moment): it is told to end at once, so its task hands it
        // over (releases its lease) like every other.
        if self.closed.load(Ordering::Acquire) {
            running.end(EndRequest::Shutdown);
        }
        all.insert(id, running);
        drop(all);
        handle
    }

    /// Keeps shutdown waiting while this is held (an adoption under way:
    /// its reply is then either generating here, told to hand itself over,
    /// or released); `None` once shutdown began.
    pub fn busy(&self) -> Option<tokio_util::task::task_tracker::TaskTrackerToken> {
        // Under the lock `end_all_and_wait` sets `closed` under.
        let _running = self.running.lock().expect("running lock");
        (!self.closed.load(Ordering::Acquire)).then(|| self.tasks.token())
    }

    /// Whether shutdown has begun (no reply starts here any more).
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
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
        {
            // Under the lock `register` takes: every reply is either ended
            // here or sees `closed` there.
            let running = self.running.lock().expect("running lock");
            self.closed.store(true, Ordering::Release);
            for r in running.values() {
                r.end(EndRequest::Shutdown);
            }
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
                if r.waiting_since.load(Ordering::Relaxed) != 0 {
                    // Waiting for people: bounded by the approval timeout.
                    continue;
                }
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

    /// The reply waits for people (a tool-call decision): its slots (the
    /// global one and its client's) are given back and its clocks stop,
    /// until [`Handle::back_to_work`]. Refused when its client already has
    /// `waiting_replies_per_client` replies waiting.
    pub fn wait_for_people(&self) -> Result<Waiting, String> {
        let place = match &self.client {
            Some(key) => Some(self.registry.waiting.hold(key).ok_or_else(|| {
                format!(
                    "Not asked: the person who asked already has {} replies waiting for a \
                     decision, the limit. Decide on those first.",
                    self.registry.waiting.max()
                )
            })?),
            None => None,
        };
        let since = Instant::now();
        let at = since.saturating_duration_since(self.started).as_millis() as u64 + 1;
        self.waiting_since.store(at, Ordering::Relaxed);
        self.slot.lock().expect("slot lock").take();
        Ok(Waiting {
            _place: place,
            since,
        })
    }

    /// Back from waiting: takes a slot again (its client's too), waiting
    /// for one at most `within`, or says why it could not (the bots stayed
    /// busy, the server is stopping). The wait is not counted against the
    /// reply's time limits. A cancelled reply returns at once.
    pub async fn back_to_work(&self, waiting: Waiting, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        let result = loop {
            match self.registry.reserve(self.client.as_deref()) {
                Ok(slot) => {
                    *self.slot.lock().expect("slot lock") = Some(slot);
                    break Ok(());
                }
                Err(AppError::Unavailable(why)) => break Err(why),
                Err(_) if Instant::now() >= deadline => {
                    break Err(format!(
                        "The bots stayed busy for {} s after the decision, so this reply \
                         stopped here; press Continue to go on.",
                        within.as_secs()
                    ))
                }
                Err(_) => {}
            }
            tokio::select! {
                _ = self.cancel.cancelled() => break Ok(()),
                _ = tokio::time::sleep(SLOT_POLL) => {}
            }
        };
        self.paused(waiting.since.elapsed());
        self.touch();
        self.waiting_since.store(0, Ordering::Relaxed);
        result
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
    async fn shutdown_waits_for_an_adoption_and_ends_what_registers_late() {
        let g = Generations::new(&limits(4, 10));
        let slot = g.reserve(None).unwrap();
        let busy = g.busy().expect("not closed yet");
        let waiting = tokio::spawn({
            let g = g.clone();
            async move { g.end_all_and_wait(Duration::from_secs(5)).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "shutdown waits for the adoption");
        assert!(g.is_closed() && g.busy().is_none());
        // The adoption registers its reply after shutdown began: told to
        // end (hand itself over) at once.
        let handle = g.register(9, slot);
        assert!(handle.cancel_token().is_cancelled());
        assert_eq!(handle.end_request(), Some(EndRequest::Shutdown));
        drop(busy);
        drop(handle);
        assert_eq!(waiting.await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_reply_waiting_for_people_holds_no_slot() {
        let g = Generations::new(&LimitsConfig {
            waiting_replies_per_client: 1,
            ..limits(1, 10)
        });
        let handle = g.register(1, g.reserve(Some("ip:a")).unwrap());
        let waiting = handle.wait_for_people().unwrap();
        drop(
            g.reserve(Some("ip:b"))
                .expect("the slot is free while it waits"),
        );
        let second = g.register(2, g.reserve(Some("ip:a")).unwrap());
        assert!(
            second
                .wait_for_people()
                .unwrap_err()
                .contains("already has 1 replies waiting"),
            "one waiting reply per client"
        );
        drop(second);
        handle
            .back_to_work(waiting, Duration::from_secs(1))
            .await
            .expect("the slot is taken back");
        assert!(g.reserve(None).is_err(), "held again");
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
