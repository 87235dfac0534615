//! One of several instances on one PostgreSQL database (see the parent
//! module): leases, fencing, wake-ups and control messages through the
//! database.
//!
//! - `statements.rs`: what instances share outside the writer's
//!   transaction (expired leases, Stop marks, budgets, a wake-up's rows,
//!   control `NOTIFY`s).
//! - `listener.rs`: the one `LISTEN` connection per instance, its hub's
//!   only publisher, and the receiver of Stop and presence.
//! - here: this instance's answers to coordination's questions, the
//!   writer's hooks among them (thread locks, fencing, lease renewal).

mod listener;
mod statements;

use std::{sync::Arc, time::Duration};

use tokio::sync::mpsc;

use super::{AtShutdown, Command, OnOrphan, OnStop, Store, StoreError, Tx};
use crate::model::{ChatEvent, Message};
use crate::server::{fanout::hub::Hub, store::postgres::PostgresStore, Background};

/// See the module's documentation.
#[derive(Clone, Debug)]
pub(super) struct Shared {
    store: PostgresStore,
}

impl Shared {
    pub(super) fn new(store: PostgresStore) -> Self {
        Self { store }
    }

    /// This instance's name in leases.
    fn instance(&self) -> &str {
        &self.store.lease().owner
    }

    /// How long a lease lasts unrenewed.
    fn lease(&self) -> Duration {
        self.store.lease().ttl
    }

    pub(super) fn announce(&self) {
        tracing::info!(
            instance = self.instance(),
            "sharing a PostgreSQL database with other instances"
        );
    }

    pub(super) fn answering_instance(&self) -> Option<&str> {
        Some(self.instance())
    }

    pub(super) async fn recover(&self, _store: &Store) -> Result<u64, StoreError> {
        Ok(0) // another instance may be producing them; expired ones are adopted
    }

    pub(super) async fn take_budget(
        &self,
        key: &str,
        n: u32,
        per_minute: u32,
    ) -> Result<Result<(), Duration>, StoreError> {
        if n == 0 {
            return Ok(Ok(()));
        }
        self.spend_budget(key, n, per_minute)
            .await
            .map_err(doing!("taking {n} from budget {key}"))
    }

    pub(super) async fn request_stop(
        &self,
        thread_id: &str,
        id: i64,
        by: &str,
    ) -> Result<bool, StoreError> {
        self.mark_stop(thread_id, id, by)
            .await
            .map_err(doing!("asking the instances to stop reply {id}"))
    }

    pub(super) async fn thread_changed(&self, thread_id: &str) {
        listener::thread_changed(&self.store, thread_id).await;
    }

    pub(super) fn at_shutdown(&self) -> AtShutdown {
        AtShutdown::HandOver
    }

    pub(super) fn start(
        &self,
        hub: Hub,
        on_stop: OnStop,
        on_orphan: OnOrphan,
        background: &Background,
    ) {
        listener::spawn(self.store.clone(), hub, on_stop, background);
        // Often enough that a reply is taken over within its lease plus a
        // fraction of a second.
        let period =
            (self.lease() / 4).clamp(Duration::from_millis(100), Duration::from_millis(500));
        let shared = self.clone();
        background.every(period, move || {
            let shared = shared.clone();
            let on_orphan = on_orphan.clone();
            async move { shared.hand_out_orphans(on_orphan).await }
        });
    }

    /// Hands every reply whose lease ran out to `on_orphan`, one by one,
    /// until it says to stop (shutdown began).
    async fn hand_out_orphans(&self, on_orphan: OnOrphan) {
        let expired = match self.expired_leases().await {
            Ok(expired) => expired,
            Err(e) => {
                tracing::warn!(error = %e, "could not look for orphaned replies");
                return;
            }
        };
        for (thread_id, id) in expired {
            if !on_orphan(thread_id, id).await {
                return;
            }
        }
    }

    /// Sends [`Command::Renew`] every third of the lease while the writer
    /// lives (a weak sender: the writer still stops when its handles drop).
    pub(super) fn keep_claims(&self, writer: mpsc::WeakSender<Command>) {
        let period = (self.lease() / 3).max(Duration::from_millis(50));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(sender) = writer.upgrade() else {
                    break;
                };
                if sender.send(Command::Renew).await.is_err() {
                    break;
                }
            }
        });
    }

    pub(super) async fn before_writes(
        &self,
        tx: &mut Tx,
        threads: &[&str],
        claims: &[(i64, Option<i64>)],
    ) -> Result<Vec<i64>, StoreError> {
        let tx = tx.postgres()?;
        tx.lock_threads(threads)
            .await
            .map_err(doing!("locking threads {threads:?}"))?;
        let (held, unclaimed): (Vec<_>, Vec<_>) = claims.iter().partition(|(_, e)| e.is_some());
        let held: Vec<(i64, i64)> = held
            .into_iter()
            .filter_map(|&(id, e)| Some((id, e?)))
            .collect();
        let mut lost: Vec<i64> = unclaimed.into_iter().map(|&(id, _)| id).collect();
        lost.extend(
            tx.lost_leases(&held)
                .await
                .map_err(doing!("fencing replies {held:?}"))?,
        );
        Ok(lost)
    }

    pub(super) async fn claim(&self, tx: &mut Tx, id: i64) -> Result<Option<i64>, StoreError> {
        tx.postgres()?
            .lease_epoch(id)
            .await
            .map_err(doing!("reading the lease of message {id}"))
    }

    pub(super) async fn renew(
        &self,
        tx: &mut Tx,
        held: &[(i64, i64)],
    ) -> Result<Vec<i64>, StoreError> {
        tx.postgres()?
            .renew(held)
            .await
            .map_err(doing!("renewing leases {held:?}"))
    }

    pub(super) async fn release(&self, tx: &mut Tx, id: i64, epoch: i64) -> Result<(), StoreError> {
        tx.postgres()?
            .release(id, epoch)
            .await
            .map_err(doing!("releasing reply {id}"))
    }

    pub(super) async fn adopt(
        &self,
        tx: &mut Tx,
        thread_id: &str,
        id: i64,
        now: i64,
        rev: i64,
    ) -> Result<Option<(Message, i64, Option<String>)>, StoreError> {
        tx.postgres()?
            .adopt(thread_id, id, now, rev)
            .await
            .map_err(doing!("adopting reply {id} (thread {thread_id})"))
    }

    pub(super) fn after_commit(&self, _hub: &Hub, _events: Vec<(Arc<str>, i64, ChatEvent)>) {
        // Every instance's listener reads the commit back and publishes it.
    }
}
