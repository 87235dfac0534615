//! Several instances on one PostgreSQL: the wake-up listener, the only
//! publisher of changes to this instance's hub.
//!
//! Every committing transaction sends one `NOTIFY` naming the threads whose
//! revisions moved (never the text). This task LISTENs on one connection
//! and, for each thread someone here watches, reads the rows committed
//! after the revision it last read, once, and publishes them to the hub:
//! database reads grow with instances, not with viewers. A viewer never
//! sees text the database does not hold, wherever it was written.
//!
//! When the listening connection drops, the task listens again first, then
//! reads every watched thread from the revision it had read up to (no gap:
//! every later commit is notified to the new connection; no duplicate:
//! subscribers drop what is not newer than what they hold). A thread it
//! had never read is resynced by its subscribers themselves.
//!
//! The same connection carries control messages between instances: Stop
//! for a reply generating elsewhere, and viewer counts (presence).

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgListener, PgNotification, PgPoolOptions};
use tokio_util::sync::CancellationToken;

use crate::model::{body_hash, ChatEvent, Message, Part, ReplyStats, Role, Status, Usage};
use crate::server::store::{
    coordination::OnStop,
    postgres::{writes::Moved, PostgresStore},
    storage::Storage,
    Change, CONTROL_CHANNEL, WAKE_CHANNEL,
};
use crate::server::{
    fanout::hub::{Hub, PRESENCE_REPEAT},
    Background,
};

/// The application name of the listening connection
/// (`pg_stat_activity.application_name`), followed by the instance.
const LISTENER_APP_NAME: &str = "streamchat-listen";

/// A control message between instances.
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
enum Control {
    Stop {
        stop: i64,
        by: String,
    },
    Presence {
        presence: String,
        instance: String,
        watchers: u32,
    },
    /// A thread was created or renamed on `instance`.
    Thread {
        thread: String,
        instance: String,
    },
}

/// Tells the other instances that a thread was created or renamed (their
/// home pages and the thread's viewers show it).
pub(super) async fn thread_changed(pg: &PostgresStore, thread_id: &str) {
    let message = Control::Thread {
        thread: thread_id.to_owned(),
        instance: pg.lease().owner.to_string(),
    };
    let payload = serde_json::to_string(&message).expect("serializes");
    if let Err(e) = pg.notify(&payload).await {
        tracing::warn!(error = %e, "could not tell other instances of a thread change");
    }
}

/// Starts the listener; `on_stop(id, by)` is called when someone pressed
/// Stop on reply `id` (on any instance).
pub(super) fn spawn(store: PostgresStore, hub: Hub, on_stop: OnStop, background: &Background) {
    let listener = Listener {
        store,
        hub,
        on_stop,
        lengths: HashMap::new(),
    };
    background.spawn(listener.run(background.stop.clone()));
}

/// What the listener serves while it waits for the database.
struct Timers {
    /// Viewer counts changed on this instance (the hub sends them).
    presence_in: tokio::sync::mpsc::UnboundedReceiver<(String, u32)>,
    /// Every [`PRESENCE_REPEAT`]: [`Listener::repeat`].
    repeat: tokio::time::Interval,
}

struct Listener {
    store: PostgresStore,
    hub: Hub,
    on_stop: OnStop,
    /// The length of each streaming reply's text (answer, thinking) as
    /// published here: a reply whose end arrives with other lengths (its
    /// last log rows were folded into the row before they were read) is
    /// sent whole.
    lengths: HashMap<i64, [usize; Part::COUNT]>,
}

impl Listener {
    fn pg(&self) -> &PostgresStore {
        &self.store
    }

    async fn run(mut self, shutdown: CancellationToken) {
        let (presence_out, presence_in) = tokio::sync::mpsc::unbounded_channel();
        self.hub.send_presence_to(presence_out);
        let owner = self.pg().lease().owner.clone();
        let mut reconnecting = false;
        let mut repeat = tokio::time::interval(PRESENCE_REPEAT);
        repeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut timers = Timers {
            presence_in,
            repeat,
        };
        loop {
            let mut listener = tokio::select! {
                _ = shutdown.cancelled() => return,
                listener = self.listen(&owner) => listener,
            };
            if reconnecting {
                self.catch_up().await;
            }
            reconnecting = true;
            loop {
                let received = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    received = self.next(&mut listener, &mut timers, &owner) => received,
                };
                match received {
                    Ok(Some(notification)) if notification.channel() == WAKE_CHANNEL => {
                        self.wake(notification.payload()).await;
                    }
                    Ok(Some(notification)) => self.control(notification.payload(), &owner).await,
                    // sqlx listened again before saying so: what was
                    // committed meanwhile is read now.
                    Ok(None) => {
                        tracing::warn!("the wake-up connection closed; listening again");
                        self.catch_up().await;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "the wake-up connection failed; listening again");
                        break;
                    }
                }
            }
        }
    }

    /// The listener's next message, the presence channel and timer served
    /// while it waits. One `try_recv` is polled until it ends: it is not
    /// cancel-safe. On a lost connection it listens again before returning
    /// `Ok(None)`; dropped in between, the next call would find the new
    /// connection and the catch-up would never run.
    async fn next(
        &self,
        listener: &mut PgListener,
        timers: &mut Timers,
        owner: &str,
    ) -> Result<Option<PgNotification>, sqlx::Error> {
        let next = listener.try_recv();
        tokio::pin!(next);
        loop {
            tokio::select! {
                received = &mut next => return received,
                Some((thread, watchers)) = timers.presence_in.recv() => {
                    self.announce(owner, thread, watchers).await;
                }
                _ = timers.repeat.tick() => self.repeat(owner).await,
            }
        }
    }

    /// Every [`PRESENCE_REPEAT`]: this instance's viewer counts again (an
    /// instance that missed one learns them), and ended replies' log rows
    /// pruned.
    async fn repeat(&self, owner: &str) {
        for (thread, watchers) in self.hub.local_watchers() {
            self.announce(owner, thread, watchers).await;
        }
        if let Err(e) = self.pg().prune_log().await {
            tracing::warn!(error = %e, "could not prune ended replies' log rows");
        }
    }

    /// A listening connection of its own (named, so operators and tests
    /// can find it), retried until it works.
    async fn listen(&self, owner: &str) -> PgListener {
        let mut delay = Duration::from_millis(100);
        loop {
            let options = self
                .pg()
                .pool()
                .connect_options()
                .as_ref()
                .clone()
                .application_name(&format!("{LISTENER_APP_NAME}:{owner}"));
            let pool = PgPoolOptions::new()
                .max_connections(1)
                .connect_lazy_with(options);
            let attempt = async {
                let mut listener = PgListener::connect_with(&pool).await?;
                listener.listen_all([WAKE_CHANNEL, CONTROL_CHANNEL]).await?;
                Ok::<_, sqlx::Error>(listener)
            };
            match attempt.await {
                Ok(listener) => return listener,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for wake-ups yet; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    /// After listening again: every watched thread is read from where it
    /// was; one never read here is resynced by its own subscribers.
    async fn catch_up(&mut self) {
        for (thread, read) in self.hub.watched() {
            match read {
                Some(from) => self.read(&thread, from).await,
                None => self.hub.resync(&thread),
            }
        }
    }

    async fn wake(&mut self, payload: &str) {
        let moved: Vec<Moved> = match serde_json::from_str(payload) {
            Ok(moved) => moved,
            Err(e) => {
                tracing::error!(error = %e, payload, "unreadable wake-up");
                return;
            }
        };
        for m in moved {
            if m.m {
                self.hub.thread_changed(&m.t);
            }
            if let Some(from) = self.hub.wake(&m.t, m.first) {
                if from < m.last {
                    self.read(&m.t, from).await;
                }
            }
        }
    }

    /// Reads the thread's changes after `from` and publishes them in
    /// revision order.
    async fn read(&mut self, thread: &str, from: i64) {
        let changes = match self.pg().changes(thread, from).await {
            Ok(changes) => changes,
            Err(e) => {
                // Its subscribers reload from the database themselves.
                tracing::error!(error = %e, thread, "reading a wake-up's rows failed; resyncing");
                self.hub.resync(thread);
                return;
            }
        };
        // Replies whose whole life this one read covers (this instance was
        // paused, or listens again after a lost connection): their row goes
        // out whole; a delta or an end of a reply whose row its viewers
        // were never sent would be a gap.
        let unseen_ended: HashSet<i64> = changes
            .iter()
            .filter_map(|change| match change {
                Change::Row(m) if m.status != Status::Streaming => Some(m.id),
                _ => None,
            })
            .filter(|id| !self.lengths.contains_key(id))
            .collect();
        let mut last = from;
        for change in changes {
            let rev = change.rev();
            last = last.max(rev);
            let event = match change {
                Change::Text { id, .. } if unseen_ended.contains(&id) => continue,
                Change::Text {
                    id,
                    part,
                    offset,
                    text,
                    ..
                } => {
                    self.lengths.entry(id).or_default()[part.index()] = offset + text.len();
                    ChatEvent::Delta {
                        id,
                        part,
                        offset,
                        text,
                    }
                }
                Change::Row(message) => self.row_event(*message),
            };
            self.hub.publish(thread, rev, event);
        }
        self.hub.read_up_to(thread, last);
        if self.lengths.len() > 100_000 {
            self.lengths.clear(); // replies whose end was never read here
        }
    }

    /// A changed row: the reply's end when viewers hold all its text,
    /// otherwise the row itself.
    fn row_event(&mut self, message: Message) -> ChatEvent {
        if message.status == Status::Streaming {
            self.lengths.insert(message.id, message.part_lens());
            return ChatEvent::Message { message };
        }
        let published = self.lengths.remove(&message.id);
        if message.role != Role::Assistant || published != Some(message.part_lens()) {
            return ChatEvent::Message { message };
        }
        let usage = match (message.prompt_tokens, message.completion_tokens) {
            (Some(prompt_tokens), Some(completion_tokens)) => Some(Usage {
                prompt_tokens,
                completion_tokens,
                estimated: message.usage_estimated,
                reasoning_tokens: message.reasoning_tokens,
            }),
            _ => None,
        };
        ChatEvent::Finished {
            id: message.id,
            status: message.status,
            len: message.body.len(),
            hash: body_hash(&message.body),
            thinking_len: message.thinking.len(),
            thinking_hash: body_hash(&message.thinking),
            tools_len: message.tools.len(),
            tools_hash: body_hash(&message.tools),
            error: message.error,
            finish_reason: message.finish_reason,
            stopped_by: message.stopped_by,
            stats: ReplyStats {
                usage,
                ttft_ms: message.ttft_ms,
                tokens_per_second: message.tokens_per_second,
                retries: message.retries,
                thinking_ms: message.thinking_ms,
            },
            finished_at: message.finished_at.unwrap_or(message.updated_at),
        }
    }

    async fn control(&self, payload: &str, owner: &str) {
        match serde_json::from_str(payload) {
            Ok(Control::Thread { thread, instance }) if instance != owner => {
                self.hub.thread_changed(&thread);
                if let Ok(Some(summary)) = self.pg().thread_summary(&thread).await {
                    self.hub
                        .publish_ephemeral(&thread, ChatEvent::Thread { thread: summary });
                }
            }
            Ok(Control::Thread { .. }) => {}
            Ok(Control::Stop { stop, by }) => (self.on_stop)(stop, by),
            Ok(Control::Presence {
                presence,
                instance,
                watchers,
            }) => {
                if instance != owner {
                    self.hub.remote_presence(&presence, &instance, watchers);
                }
            }
            Err(e) => tracing::warn!(error = %e, payload, "unreadable control message"),
        }
    }

    /// Tells the other instances how many viewers a thread has here.
    async fn announce(&self, owner: &str, thread: String, watchers: u32) {
        let message = Control::Presence {
            presence: thread,
            instance: owner.to_owned(),
            watchers,
        };
        let payload = serde_json::to_string(&message).expect("serializes");
        if let Err(e) = self.pg().notify(&payload).await {
            tracing::warn!(error = %e, "could not share presence");
        }
    }
}
