//! How this instance shares its database: alone, or with other instances.
//! Chosen by configuration (`cluster.enabled`), never by the driver: a
//! PostgreSQL database may serve one instance or several.
//!
//! - **Single**: the only instance on its database (SQLite always; on
//!   PostgreSQL an exclusive advisory lock makes a second one refuse to
//!   start). The writer publishes its own commits to the hub; start-up
//!   ends what a previous run left streaming (`interrupted`); Stop, the
//!   per-client budgets and presence live in this process's memory; a
//!   shutdown ends its replies `interrupted`.
//! - **Cluster**: one of several instances on one PostgreSQL database.
//!   Each reply it produces is leased to it (renewed by its writer, fenced
//!   by epoch, released on shutdown, adopted by another instance once it
//!   expires); revisions are allocated under each thread's row lock; every
//!   commit NOTIFYs the threads it moved and every instance's listener
//!   (`wakeups.rs`) reads them back and is its hub's only publisher; Stop,
//!   budgets and presence go through the database.

use crate::server::store::StoreError;
use std::time::Duration;

use super::{postgres::Cluster, Store};
use crate::server::{config::Config, store::postgres::Lease};

/// See the module's documentation.
#[derive(Clone, Debug)]
pub enum Coordination {
    Single,
    Cluster(Cluster),
}

impl Coordination {
    /// The cluster this instance is part of, if it is.
    pub fn cluster(&self) -> Option<&Cluster> {
        match self {
            Coordination::Single => None,
            Coordination::Cluster(cluster) => Some(cluster),
        }
    }

    /// Whether this instance's writer publishes its own commits (one
    /// instance); in a cluster the wake-up listener does, for all.
    pub fn writer_publishes(&self) -> bool {
        matches!(self, Coordination::Single)
    }

    /// How long a reply's lease lasts unrenewed (cluster only).
    pub fn lease(&self) -> Option<Duration> {
        self.cluster().map(Cluster::lease)
    }

    /// Start-up, before the writer starts: a lone instance ends every reply
    /// a previous run left streaming (`interrupted`, text kept); in a
    /// cluster another instance may be producing them, and expired leases
    /// are adopted instead. Returns how many were ended.
    pub async fn recover(&self, store: &Store) -> Result<u64, StoreError> {
        match self {
            Coordination::Single => store.interrupt_streaming().await,
            Coordination::Cluster(_) => Ok(0),
        }
    }
}

/// Opens the configured database and this instance's coordination.
pub async fn open(config: &Config, instance: String) -> anyhow::Result<(Store, Coordination)> {
    let Some(url) = config.postgres_url() else {
        anyhow::ensure!(
            !config.cluster.enabled,
            "cluster.enabled needs PostgreSQL (DATABASE_URL): a SQLite file serves one instance"
        );
        let store = Store::Sqlite(super::sqlite::SqliteStore::open(&config.database).await?);
        return Ok((store, Coordination::Single));
    };
    let lease = Lease {
        owner: instance.into(),
        ttl: config.cluster.lease(),
    };
    let shared = config.cluster.enabled;
    let pg = super::postgres::PostgresStore::open(
        url,
        lease,
        config.cluster.max_connections,
        config.limits.read_timeout(),
        shared,
    )
    .await?;
    let coordination = if shared {
        Coordination::Cluster(Cluster::new(pg.clone()))
    } else {
        Coordination::Single
    };
    Ok((Store::Postgres(pg), coordination))
}
