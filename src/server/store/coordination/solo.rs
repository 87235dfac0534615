//! The only instance on its database: everything instances would share
//! lives in this process's memory.

use std::{
    collections::HashMap,
    num::NonZeroU32,
    sync::{Arc, Mutex},
    time::Duration,
};

use governor::clock::{Clock, DefaultClock};

use super::{AtShutdown, Command, OnOrphan, OnStop, Store, StoreError, Tx};
use crate::model::{ChatEvent, Message};
use crate::server::{fanout::hub::Hub, Background};

/// Clients held in memory before idle ones are forgotten.
const PRUNE_AT: usize = 10_000;

type Limiter = governor::DefaultKeyedRateLimiter<String>;

/// See the module's documentation.
#[derive(Clone, Debug, Default)]
pub(super) struct Solo {
    /// The per-client budgets (GCRA, `governor`), one limiter per rate.
    budgets: Arc<Mutex<HashMap<u32, Arc<Limiter>>>>,
}

impl Solo {
    pub(super) fn announce(&self) {
        tracing::info!("the only instance on its database");
    }

    pub(super) fn answering_instance(&self) -> Option<&str> {
        None
    }

    pub(super) async fn recover(&self, store: &Store) -> Result<u64, StoreError> {
        store.interrupt_streaming().await
    }

    pub(super) async fn take_budget(
        &self,
        key: &str,
        n: u32,
        per_minute: u32,
    ) -> Result<Result<(), Duration>, StoreError> {
        let Some(n) = NonZeroU32::new(n) else {
            return Ok(Ok(()));
        };
        let limiter = self
            .budgets
            .lock()
            .expect("budgets lock")
            .entry(per_minute)
            .or_insert_with(|| {
                let quota = governor::Quota::per_minute(
                    NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN),
                );
                Arc::new(governor::RateLimiter::keyed(quota))
            })
            .clone();
        if limiter.len() > PRUNE_AT {
            limiter.retain_recent();
        }
        Ok(match limiter.check_key_n(&key.to_owned(), n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(not_until.wait_time_from(DefaultClock::default().now())),
            Err(_) => Err(Duration::from_secs(60)),
        })
    }

    pub(super) async fn request_stop(
        &self,
        _thread_id: &str,
        _id: i64,
        _by: &str,
    ) -> Result<bool, StoreError> {
        Ok(false) // what generates here was asked already; nothing else does
    }

    pub(super) async fn thread_changed(&self, _thread_id: &str) {}

    pub(super) fn at_shutdown(&self) -> AtShutdown {
        AtShutdown::Interrupt
    }

    pub(super) fn start(&self, _: Hub, _: OnStop, _: OnOrphan, _: &Background) {}

    pub(super) fn keep_claims(&self, _writer: tokio::sync::mpsc::WeakSender<Command>) {}

    pub(super) async fn before_writes(
        &self,
        _tx: &mut Tx,
        _threads: &[&str],
        _claims: &[(i64, Option<i64>)],
    ) -> Result<Vec<i64>, StoreError> {
        Ok(Vec::new())
    }

    pub(super) async fn claim(&self, _tx: &mut Tx, _id: i64) -> Result<Option<i64>, StoreError> {
        Ok(Some(0))
    }

    pub(super) async fn renew(
        &self,
        _tx: &mut Tx,
        _held: &[(i64, i64)],
    ) -> Result<Vec<i64>, StoreError> {
        Ok(Vec::new())
    }

    pub(super) async fn release(
        &self,
        _tx: &mut Tx,
        _id: i64,
        _epoch: i64,
    ) -> Result<(), StoreError> {
        Ok(())
    }

    pub(super) async fn adopt(
        &self,
        _tx: &mut Tx,
        _thread_id: &str,
        _id: i64,
        _now: i64,
        _rev: i64,
    ) -> Result<Option<(Message, i64, Option<String>)>, StoreError> {
        Ok(None) // nothing here outlives its producer
    }

    pub(super) fn after_commit(&self, hub: &Hub, events: Vec<(Arc<str>, i64, ChatEvent)>) {
        for (thread_id, rev, event) in events {
            hub.publish(&thread_id, rev, event);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_client_spends_its_budget_and_others_keep_theirs() {
        let solo = Solo::default();
        solo.take_budget("a", 2, 3).await.unwrap().unwrap();
        let wait = solo.take_budget("a", 2, 3).await.unwrap().unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(60));
        solo.take_budget("a", 1, 3).await.unwrap().unwrap();
        assert!(solo.take_budget("a", 1, 3).await.unwrap().is_err());
        solo.take_budget("b", 3, 3).await.unwrap().unwrap();
        // Another rate is another budget.
        solo.take_budget("a", 1, 10).await.unwrap().unwrap();
    }
}
