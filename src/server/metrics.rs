//! Operators' numbers, kept in atomics (no locks on the hot path) and
//! rendered in the Prometheus text format at `/metrics`.

use std::{
    fmt::Write,
    sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed},
    time::Duration,
};

use crate::model::Status;

/// A cumulative histogram with fixed bucket bounds.
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    /// Sum of observations, in millionths.
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, value: f64) {
        if let Some(i) = self.bounds.iter().position(|b| value <= *b) {
            self.counts[i].fetch_add(1, Relaxed);
        }
        self.sum_micros.fetch_add((value * 1e6) as u64, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            cumulative += count.load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            self.sum_micros.load(Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// Kinds of provider failure counted separately.
#[derive(Clone, Copy, Debug)]
pub enum ProviderError {
    RateLimited,
    ServerError,
    Refused,
    Unreachable,
    Stream,
}

const PROVIDER_ERRORS: [&str; 5] = [
    "rate_limited",
    "server_error",
    "refused",
    "unreachable",
    "stream",
];
const STATUSES: [Status; 6] = [
    Status::Streaming,
    Status::Done,
    Status::Failed,
    Status::Cancelled,
    Status::TimedOut,
    Status::Interrupted,
];

pub struct Metrics {
    pub replies_live: AtomicI64,
    pub viewers: AtomicI64,
    pub tokens: AtomicU64,
    pub deltas_published: AtomicU64,
    pub commits: AtomicU64,
    pub commit_batch: Histogram,
    pub token_to_publish: Histogram,
    provider_errors: [AtomicU64; 5],
    replies_ended: [AtomicU64; 6],
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            replies_live: AtomicI64::new(0),
            viewers: AtomicI64::new(0),
            tokens: AtomicU64::new(0),
            deltas_published: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            commit_batch: Histogram::new(&[
                1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
            ]),
            token_to_publish: Histogram::new(&[
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
            ]),
            provider_errors: Default::default(),
            replies_ended: Default::default(),
        }
    }
}

impl Metrics {
    pub fn provider_error(&self, kind: ProviderError) {
        self.provider_errors[kind as usize].fetch_add(1, Relaxed);
    }

    pub fn reply_ended(&self, status: Status) {
        if let Some(i) = STATUSES.iter().position(|s| *s == status) {
            self.replies_ended[i].fetch_add(1, Relaxed);
        }
    }

    pub fn commit(&self, commands: usize) {
        self.commits.fetch_add(1, Relaxed);
        self.commit_batch.observe(commands as f64);
    }

    pub fn published(&self, token_age: Duration) {
        self.token_to_publish.observe(token_age.as_secs_f64());
    }

    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let mut gauge = |name: &str, help: &str, value: i64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        };
        gauge(
            "streamchat_replies_live",
            "Replies generating now.",
            self.replies_live.load(Relaxed),
        );
        gauge(
            "streamchat_viewers",
            "Open live subscriptions (SSE).",
            self.viewers.load(Relaxed),
        );
        let mut counter = |name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        };
        counter(
            "streamchat_tokens_total",
            "Text deltas received from providers.",
            self.tokens.load(Relaxed),
        );
        counter(
            "streamchat_deltas_published_total",
            "Text deltas committed and published to viewers.",
            self.deltas_published.load(Relaxed),
        );
        counter(
            "streamchat_commits_total",
            "Writer transactions committed.",
            self.commits.load(Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP streamchat_provider_errors_total Provider failures by kind.\n# TYPE streamchat_provider_errors_total counter"
        );
        for (kind, count) in PROVIDER_ERRORS.iter().zip(&self.provider_errors) {
            let _ = writeln!(
                out,
                "streamchat_provider_errors_total{{kind=\"{kind}\"}} {}",
                count.load(Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP streamchat_replies_ended_total Replies ended, by status.\n# TYPE streamchat_replies_ended_total counter"
        );
        for (status, count) in STATUSES.iter().zip(&self.replies_ended).skip(1) {
            let _ = writeln!(
                out,
                "streamchat_replies_ended_total{{status=\"{}\"}} {}",
                status.as_str(),
                count.load(Relaxed)
            );
        }
        self.commit_batch.render(
            &mut out,
            "streamchat_commit_batch_size",
            "Commands per writer transaction.",
        );
        self.token_to_publish.render(
            &mut out,
            "streamchat_token_to_publish_seconds",
            "From a token's arrival from the provider to its publication after commit.",
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.replies_live.fetch_add(1, Relaxed);
        m.commit(3);
        m.published(Duration::from_micros(300));
        m.provider_error(ProviderError::RateLimited);
        let text = m.render();
        assert!(text.contains("streamchat_replies_live 1\n"));
        assert!(text.contains("streamchat_commit_batch_size_bucket{le=\"4\"} 1\n"));
        assert!(text.contains("streamchat_token_to_publish_seconds_bucket{le=\"0.0005\"} 1\n"));
        assert!(text.contains("streamchat_provider_errors_total{kind=\"rate_limited\"} 1\n"));
    }
}
