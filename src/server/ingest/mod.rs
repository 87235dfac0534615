//! Ingest: from a post to text in the writer's queue. The outbox commits a
//! post and its placeholder replies and starts a generation per reply; a
//! generation calls the provider (or the embedded demo model), cuts the
//! stream into deltas (the chunker) and hands them to the writer.

pub mod adopt;
pub mod approvals;
pub mod bots;
pub mod budget;
pub mod chunker;
pub mod demo;
mod demo_tools;
pub mod generate;
pub mod generations;
pub mod outbox;
pub mod provider;
pub mod tokens;
pub mod tools;

use std::sync::Arc;

use super::{
    config::Config,
    metrics::Metrics,
    store::{writer::Writer, Coordination, Store},
};

/// What producing replies uses (from `AppState`): the outbox and every
/// generation task hold one.
#[derive(Clone)]
pub struct Ingest {
    pub config: Arc<Config>,
    pub store: Store,
    /// One instance or one of several (Stop, budgets, handover, adoption).
    pub coordination: Coordination,
    /// Where posts, text and ends of replies go (the only writer).
    pub writer: Writer,
    pub bots: bots::Bots,
    pub metrics: Arc<Metrics>,
    /// Replies generating now, their limits and the watchdog.
    pub generations: generations::Generations,
}
