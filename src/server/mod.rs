//! Everything that runs only on the server, one folder per step of the data
//! path (see docs/ARCHITECTURE.md): `ingest` (post -> provider -> deltas),
//! `store` (the database and its single writer), `fanout` (the in-memory
//! hub), `edge` (SSE, access, headers, export, health). `state` composes
//! them; `app_server` wires and serves them. `accounts` is who people
//! are when the app keeps its own accounts.

pub mod accounts;
pub mod config;
pub mod edge;
pub mod fanout;
pub mod ingest;
pub mod metrics;
pub mod state;
pub mod store;

pub mod app_server;

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

/// The server's long-lived tasks (watchdog, adoption, listener, thread
/// list): all stop when `stop` is cancelled, and shutdown waits for them
/// (a [`TaskTracker`]) before it closes the database pools.
#[derive(Clone, Default)]
pub struct Background {
    pub stop: tokio_util::sync::CancellationToken,
    tasks: tokio_util::task::TaskTracker,
}

impl Background {
    pub fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        self.tasks.spawn(task);
    }

    /// Runs `tick` every `period` until stopped. A tick that runs long
    /// delays the next one instead of bunching them up.
    pub fn every<F, Fut>(&self, period: std::time::Duration, mut tick: F)
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let stop = self.stop.clone();
        self.spawn(async move {
            let mut interval = tokio::time::interval(period);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = interval.tick() => {}
                }
                tick().await;
            }
        });
    }

    /// Stops every task and waits for them to return, at most `within`;
    /// false if some did not.
    pub async fn stop_and_wait(&self, within: std::time::Duration) -> bool {
        self.stop.cancel();
        self.tasks.close();
        tokio::time::timeout(within, self.tasks.wait())
            .await
            .is_ok()
    }
}
