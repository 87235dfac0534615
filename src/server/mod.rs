//! Everything that runs only on the server, one step of the data path per
//! file (see docs/ARCHITECTURE.md).

pub mod access;
pub mod bots;
pub mod chunker;
pub mod config;
pub mod demo;
pub mod export;
pub mod generate;
pub mod generations;
pub mod health;
pub mod hub;
pub mod metrics;
pub mod outbox;
pub mod provider;
pub mod security;
pub mod sse;
pub mod sse_listener;
pub mod state;
pub mod store;
pub mod thread_list;
pub mod tokens;
pub mod writer;

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
