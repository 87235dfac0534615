//! The one application state, reached through axum's `State` (via `FromRef`)
//! and, in server functions and SSR, through Leptos context.

use std::sync::Arc;

use axum::extract::FromRef;
use leptos::config::LeptosOptions;

use super::{
    accounts::{Accounts, Members},
    config::Config,
    edge::{
        access::{Door, Gate},
        limits::Writes,
        sse::Subscriptions,
    },
    fanout::hub::Hub,
    ingest::{
        bots::Bots,
        budget::{Budget, PerClient},
        demo::DemoModel,
        generations::Generations,
        Ingest,
    },
    metrics::Metrics,
    store::{writer::Writer, Coordination, Store},
    Background,
};

#[derive(Clone, FromRef)]
pub struct AppState {
    pub leptos_options: LeptosOptions,
    pub config: Arc<Config>,
    pub store: Store,
    /// One instance, or one of several on a shared database.
    pub coordination: Coordination,
    /// The only writer of messages (see `writer.rs`).
    pub writer: Writer,
    pub hub: Hub,
    /// The bots and their provider clients.
    pub bots: Bots,
    /// Counters and histograms for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Replies generating now, their limits and the watchdog.
    pub generations: Generations,
    /// The embedded demo model's state (used only when it serves replies).
    pub demo: DemoModel,
    /// The long-lived tasks; its `stop` is cancelled on shutdown, once
    /// every reply's end is committed, and ends live subscriptions too.
    pub background: Background,
    /// Who may come in, and who is asking (hosts, identity, client keys).
    pub gate: Arc<Gate>,
    /// Built-in accounts (`access.mode = "accounts"`), else `None`.
    pub accounts: Option<Accounts>,
    /// Private threads: who may see a thread, its members.
    pub members: Members,
    /// State-changing requests per client per minute.
    pub writes: Budget,
    /// Open live subscriptions per client.
    pub subscriptions: PerClient,
}

impl FromRef<AppState> for Ingest {
    fn from_ref(state: &AppState) -> Self {
        Self {
            config: state.config.clone(),
            store: state.store.clone(),
            coordination: state.coordination.clone(),
            writer: state.writer.clone(),
            bots: state.bots.clone(),
            metrics: state.metrics.clone(),
            generations: state.generations.clone(),
        }
    }
}

impl FromRef<AppState> for Door {
    fn from_ref(state: &AppState) -> Self {
        Self {
            gate: state.gate.clone(),
            accounts: state.accounts.clone(),
        }
    }
}

impl FromRef<AppState> for Writes {
    fn from_ref(state: &AppState) -> Self {
        Self {
            budget: state.writes.clone(),
            coordination: state.coordination.clone(),
        }
    }
}

impl FromRef<AppState> for Subscriptions {
    fn from_ref(state: &AppState) -> Self {
        Self {
            config: state.config.clone(),
            store: state.store.clone(),
            hub: state.hub.clone(),
            metrics: state.metrics.clone(),
            shutdown: state.background.stop.clone(),
            per_client: state.subscriptions.clone(),
            accounts: state.accounts.clone(),
            members: state.members.clone(),
        }
    }
}
