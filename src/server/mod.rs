//! Everything that runs only on the server, one folder per step of the data
//! path (see docs/ARCHITECTURE.md): `ingest` (post -> provider -> deltas),
//! `store` (the database and its single writer), `fanout` (the in-memory
//! hub), `edge` (SSE, access, headers, export, health). `state` composes
//! them; `app_server` wires and serves them.

pub mod config;
pub mod edge;
pub mod fanout;
pub mod ingest;
pub mod metrics;
pub mod state;
pub mod store;

mod app_server;
pub use app_server::{router, run, self_base_url, serve};

/// Wall-clock time as Unix epoch milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// Sleeps until `deadline`, or forever without one (for `select!` arms).
pub async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Runs `tick` every `period` until `shutdown` (the server's periodic
/// tasks: the watchdog, adoption of orphaned replies). A tick that runs
/// long delays the next one instead of bunching them up.
pub fn every<F, Fut>(
    period: std::time::Duration,
    shutdown: tokio_util::sync::CancellationToken,
    mut tick: F,
) where
    F: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = interval.tick() => {}
            }
            tick().await;
        }
    });
}
