//! How this instance shares its database: alone ([`Solo`]) or with other
//! instances ([`Shared`]). Chosen by configuration (`cluster.enabled`),
//! never by the driver: a PostgreSQL database may serve one instance or
//! several. [`Coordination`] is the one handle the rest of the server
//! holds; its methods are the questions callers ask, each answered by the
//! implementation chosen at start-up. No caller asks which one it has
//! (`tests/it/layering.rs`).
//!
//! - **Solo** (`solo.rs`): the only instance on its database (SQLite
//!   always; on PostgreSQL an exclusive advisory lock makes a second one
//!   refuse to start). The writer publishes its own commits to the hub;
//!   start-up ends what a previous run left streaming (`interrupted`);
//!   Stop, the per-client budgets and presence live in this process's
//!   memory; shutdown ends its replies `interrupted`.
//! - **Shared** (`shared/`): one of several instances on one PostgreSQL
//!   database. Each reply it produces is leased to it (renewed by its
//!   writer, fenced by epoch, released on shutdown, adopted by another
//!   instance once it expires); every commit NOTIFYs the threads it moved
//!   and every instance's listener (`shared/listener.rs`) reads them back
//!   and is its hub's only publisher; Stop, budgets and presence go
//!   through the database.
//!
//! **How Stop reaches another instance**: the instance the Stop arrives at
//! finds no generation of that reply in its own memory and asks
//! [`Coordination::request_stop`]; `Shared` marks the row
//! (`stop_requested_by`) and sends a control `NOTIFY`
//! (`shared/statements.rs`); every instance's listener receives it
//! (`shared/listener.rs`) and calls the `on_stop` it was started with,
//! which ends the generation on the instance producing it. If none
//! produces it (its instance died), the instance that adopts it reads the
//! mark and ends it `cancelled`.

mod shared;
mod solo;

use std::{sync::Arc, time::Duration};

use futures::future::BoxFuture;

use shared::Shared;
use solo::Solo;

use super::{writer::Command, Store, StoreError, Tx};
use crate::model::{ChatEvent, Message};
use crate::server::{config::Config, fanout::hub::Hub, Background};

/// See the module's documentation. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Coordination(Kind);

#[derive(Clone, Debug)]
enum Kind {
    Solo(Solo),
    Shared(Shared),
}

/// Calls the same method on whichever implementation this is.
macro_rules! each {
    ($self:expr, $c:ident => $e:expr) => {
        match &$self.0 {
            Kind::Solo($c) => $e,
            Kind::Shared($c) => $e,
        }
    };
}

/// Called with reply `id` and who asked, when someone pressed Stop on it
/// on any instance.
pub type OnStop = Arc<dyn Fn(i64, String) + Send + Sync>;

/// Called with each reply found without a live producer (thread, id);
/// answers false once no more should be handed out (shutdown began).
pub type OnOrphan = Arc<dyn Fn(String, i64) -> BoxFuture<'static, bool> + Send + Sync>;

/// What shutdown does with a reply still generating here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AtShutdown {
    /// End it `interrupted` (no other instance could continue it).
    Interrupt,
    /// Hand it over: release its lease so another instance continues it.
    HandOver,
}

impl Coordination {
    /// One instance on its database, with nothing opened (unit tests of
    /// what takes a coordination).
    pub fn solo() -> Self {
        Self(Kind::Solo(Solo::default()))
    }

    /// Logs what this instance is part of (start-up).
    pub fn announce(&self) {
        each!(self, c => c.announce())
    }

    /// The name this instance gives its answers (`X-Streamchat-Instance`),
    /// where several answer behind one address.
    pub fn answering_instance(&self) -> Option<&str> {
        each!(self, c => c.answering_instance())
    }

    /// Start-up, before the writer starts: what a previous run left
    /// streaming. Alone, every such reply is ended `interrupted` (text
    /// kept); shared, another instance may be producing them, and expired
    /// leases are adopted instead. Returns how many were ended.
    pub async fn recover(&self, store: &Store) -> Result<u64, StoreError> {
        each!(self, c => c.recover(store).await)
    }

    /// Takes `n` from client `key`'s budget of `per_minute` (in memory
    /// alone; in the database when shared, so every instance counts it);
    /// `Err(wait)` when the client must wait, nothing taken.
    pub async fn take_budget(
        &self,
        key: &str,
        n: u32,
        per_minute: u32,
    ) -> Result<Result<(), Duration>, StoreError> {
        each!(self, c => c.take_budget(key, n, per_minute).await)
    }

    /// `by` pressed Stop on reply `id`, which does not generate on this
    /// instance: true if another instance will end it (shared: the row is
    /// marked and every instance told); false if nothing generates it.
    pub async fn request_stop(
        &self,
        thread_id: &str,
        id: i64,
        by: &str,
    ) -> Result<bool, StoreError> {
        each!(self, c => c.request_stop(thread_id, id, by).await)
    }

    /// A thread was created or renamed here: the other instances' home
    /// pages and viewers are told (alone, the hub told everyone already).
    pub async fn thread_changed(&self, thread_id: &str) {
        each!(self, c => c.thread_changed(thread_id).await)
    }

    /// What shutdown does with a reply still generating here.
    pub fn at_shutdown(&self) -> AtShutdown {
        each!(self, c => c.at_shutdown())
    }

    /// Starts this coordination's background tasks. Shared: the wake-up
    /// listener (the hub's only publisher; `on_stop(id, by)` when someone
    /// pressed Stop on reply `id` anywhere), and a search every fraction
    /// of the lease for replies whose producer's lease ran out, each
    /// handed to `on_orphan(thread, id)` one by one. Alone: none (the
    /// writer publishes; start-up ended what a crash left streaming).
    pub fn start(&self, hub: Hub, on_stop: OnStop, on_orphan: OnOrphan, background: &Background) {
        each!(self, c => c.start(hub, on_stop, on_orphan, background))
    }

    /// The writer's: starts what keeps its claims alive (shared: sends
    /// [`Command::Renew`] every third of the lease while the writer lives).
    pub(super) fn keep_claims(&self, writer: tokio::sync::mpsc::WeakSender<Command>) {
        each!(self, c => c.keep_claims(writer))
    }

    /// The writer's, before a batch's writes: `threads` are the threads it
    /// writes, `claims` the streaming replies it writes with the epoch of
    /// the claim this instance holds on each, if it holds one. Shared:
    /// locks the threads (in id order) and returns the replies whose lease
    /// this instance does not hold (none, or another instance took it):
    /// nothing more of theirs may be written. Alone: none (the only
    /// producer has nothing to be fenced from).
    pub(super) async fn before_writes(
        &self,
        tx: &mut Tx,
        threads: &[&str],
        claims: &[(i64, Option<i64>)],
    ) -> Result<Vec<i64>, StoreError> {
        each!(self, c => c.before_writes(tx, threads, claims).await)
    }

    /// The writer's: the epoch of the claim this instance holds on
    /// streaming reply `id` (shared: its lease, from the database; `None`
    /// if another instance holds it). Alone: always held, at one epoch.
    pub(super) async fn claim(&self, tx: &mut Tx, id: i64) -> Result<Option<i64>, StoreError> {
        each!(self, c => c.claim(tx, id).await)
    }

    /// The writer's, on [`Command::Renew`]: renews the claims `held`;
    /// returns those another instance took meanwhile.
    pub(super) async fn renew(
        &self,
        tx: &mut Tx,
        held: &[(i64, i64)],
    ) -> Result<Vec<i64>, StoreError> {
        each!(self, c => c.renew(tx, held).await)
    }

    /// The writer's: gives up the claim on reply `id` (handed over).
    pub(super) async fn release(&self, tx: &mut Tx, id: i64, epoch: i64) -> Result<(), StoreError> {
        each!(self, c => c.release(tx, id, epoch).await)
    }

    /// The writer's: takes reply `id` over if its producer's lease expired
    /// (stamped `rev`); its message, epoch and any Stop requested.
    pub(super) async fn adopt(
        &self,
        tx: &mut Tx,
        thread_id: &str,
        id: i64,
        now: i64,
        rev: i64,
    ) -> Result<Option<(Message, i64, Option<String>)>, StoreError> {
        each!(self, c => c.adopt(tx, thread_id, id, now, rev).await)
    }

    /// The writer's, after a commit: alone, the writer publishes the
    /// commit's events to the hub in revision order; shared, every
    /// instance's listener reads the commit back and publishes it (this
    /// one's included), so nothing is published here.
    pub(super) fn after_commit(&self, hub: &Hub, events: Vec<(Arc<str>, i64, ChatEvent)>) {
        each!(self, c => c.after_commit(hub, events))
    }
}

/// Opens the configured database and this instance's coordination.
pub async fn open(config: &Config, instance: String) -> anyhow::Result<(Store, Coordination)> {
    let Some(url) = config.postgres_url() else {
        anyhow::ensure!(
            !config.cluster.enabled,
            "cluster.enabled needs PostgreSQL (DATABASE_URL): a SQLite file serves one instance"
        );
        let store = Store::sqlite(
            super::sqlite::SqliteStore::open(&config.database, config.lanes.append).await?,
        );
        return Ok((store, Coordination::solo()));
    };
    let lease = super::postgres::Lease {
        owner: instance.into(),
        ttl: config.cluster.lease(),
    };
    let shared = config.cluster.enabled;
    let pg = super::postgres::PostgresStore::open(
        url,
        lease,
        config.cluster.max_connections,
        config.limits.read_timeout(),
        // Shared: every instance's listener reads each commit back.
        shared,
    )
    .await?;
    // A lone instance and any other never run on one database: its claim
    // is exclusive, a shared instance's is shared.
    let claimed = pg.claim(!shared).await?;
    anyhow::ensure!(
        claimed,
        if shared {
            "an instance without cluster.enabled runs on this PostgreSQL database: stop it, \
             or run every instance with cluster.enabled = true (STREAMCHAT_CLUSTER=true)"
        } else {
            "another instance runs on this PostgreSQL database: to run several, set \
             cluster.enabled = true (STREAMCHAT_CLUSTER=true) on every one of them"
        }
    );
    let coordination = if shared {
        Coordination(Kind::Shared(Shared::new(pg.clone())))
    } else {
        Coordination::solo()
    };
    Ok((Store::postgres(pg), coordination))
}
