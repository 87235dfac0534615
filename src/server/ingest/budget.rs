//! Per-client limits: [`PerClient`] caps what a client holds at once
//! (connections, subscriptions, generating replies); [`Budget`] caps what
//! it spends over a minute (`@gpt` replies started, state-changing
//! requests). Each client key (an address, a /64, or a proxy
//! identity; never a name the client types) has a token bucket refilled
//! evenly over the minute, with the whole minute's budget as its burst.
//!
//! One instance keeps the buckets in memory (`governor`'s keyed limiter,
//! pruned once many clients are held: bounded memory). Several instances on
//! PostgreSQL keep them in the database, so a client's budget is the same
//! whichever instance it reaches.

use std::{
    collections::HashMap,
    num::NonZeroU32,
    sync::{Arc, Mutex},
    time::Duration,
};

use crate::error::AppError;
use crate::server::store::Coordination;

/// At most `max` of something held at once per client key. A key leaves the
/// map when its last hold is dropped, so memory is bounded by what is held.
#[derive(Clone)]
pub struct PerClient {
    counts: Arc<Mutex<HashMap<String, usize>>>,
    max: usize,
}

/// One thing a client holds; dropping it frees its place.
#[derive(Debug)]
pub struct Held {
    key: String,
    counts: Arc<Mutex<HashMap<String, usize>>>,
}

impl PerClient {
    pub fn new(max: usize) -> Self {
        Self {
            counts: Arc::default(),
            max,
        }
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// A place for one more of `key`'s, or `None` when it holds `max`.
    pub fn hold(&self, key: &str) -> Option<Held> {
        let mut counts = self.counts.lock().expect("per-client counts");
        let n = counts.entry(key.to_owned()).or_default();
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(Held {
            key: key.to_owned(),
            counts: self.counts.clone(),
        })
    }
}

impl Held {
    /// The client key this is held for.
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().expect("per-client counts");
        if let Some(n) = counts.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

/// What a budget counts, for its key prefix and its refusal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spend {
    /// Replies started by `@bot` mentions (each mention is one).
    Replies,
    /// Requests that change something (posts, threads, renames, ...).
    Writes,
    /// Sign-in attempts (built-in accounts), per account name and per client.
    SignIns,
}

impl Spend {
    fn prefix(self) -> &'static str {
        match self {
            Spend::Replies => "ask",
            Spend::Writes => "write",
            Spend::SignIns => "signin",
        }
    }
}

#[derive(Clone)]
pub struct Budget {
    spend: Spend,
    per_minute: u32,
}

impl Budget {
    pub fn new(spend: Spend, per_minute: u32) -> Self {
        Self {
            spend,
            per_minute: per_minute.max(1),
        }
    }

    /// Takes `n` from client `key`'s budget, or refuses (429 with
    /// `Retry-After`) and takes nothing.
    pub async fn take(
        &self,
        coordination: &Coordination,
        key: &str,
        n: u32,
    ) -> Result<(), AppError> {
        let Some(n) = NonZeroU32::new(n) else {
            return Ok(());
        };
        if n.get() > self.per_minute {
            return Err(self.refusal(n.get(), Duration::from_secs(60)));
        }
        let key = format!("{}:{key}", self.spend.prefix());
        coordination
            .take_budget(&key, n.get(), self.per_minute)
            .await?
            .map_err(|wait| self.refusal(n.get(), wait))
    }

    fn refusal(&self, n: u32, wait: Duration) -> AppError {
        let secs = wait.as_secs_f64().ceil().max(1.0);
        let message = match self.spend {
            Spend::Replies if n > self.per_minute => format!(
                "That message asks {n} bots; at most {} replies can be started per minute. \
                 Your message was not sent.",
                self.per_minute
            ),
            Spend::Replies => format!(
                "You started {} bot replies in the last minute, the limit. Your message was not \
                 sent; try again in {secs} s.",
                self.per_minute
            ),
            Spend::Writes => format!(
                "Too many changes from you: {} a minute is the limit. Nothing was changed; try \
                 again in {secs} s.",
                self.per_minute
            ),
            Spend::SignIns => format!(
                "Too many sign-in attempts: {} a minute is the limit. Try again in {secs} s.",
                self.per_minute
            ),
        };
        AppError::limited(message, wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_client_spends_its_budget_and_others_keep_theirs() {
        let store = Coordination::solo();
        let budget = Budget::new(Spend::Replies, 3);
        budget.take(&store, "ip:10.0.0.1", 2).await.unwrap();
        let refused = budget.take(&store, "ip:10.0.0.1", 2).await.unwrap_err();
        assert!(refused.retry_after().is_some_and(|s| s >= 1));
        budget.take(&store, "ip:10.0.0.1", 1).await.unwrap();
        assert!(budget.take(&store, "ip:10.0.0.1", 1).await.is_err());
        budget.take(&store, "ip:10.0.0.2", 3).await.unwrap();
        assert!(
            budget.take(&store, "ip:10.0.0.3", 4).await.is_err(),
            "more than a minute's budget at once is refused"
        );
    }
}
