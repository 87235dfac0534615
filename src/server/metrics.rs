//! Operators' numbers, kept in `prometheus-client` metrics (atomics: no
//! locks on the hot path) and encoded in the OpenMetrics text format at
//! `/metrics`.

use std::{sync::atomic::AtomicI64, time::Duration};

use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::{Metric, Registry},
};

use crate::model::Status;

/// Kinds of provider failure counted separately.
#[derive(Clone, Copy, Debug)]
pub enum ProviderError {
    RateLimited,
    ServerError,
    Refused,
    Unreachable,
    Stream,
}

impl ProviderError {
    const ALL: [ProviderError; 5] = [
        ProviderError::RateLimited,
        ProviderError::ServerError,
        ProviderError::Refused,
        ProviderError::Unreachable,
        ProviderError::Stream,
    ];

    fn as_str(self) -> &'static str {
        match self {
            ProviderError::RateLimited => "rate_limited",
            ProviderError::ServerError => "server_error",
            ProviderError::Refused => "refused",
            ProviderError::Unreachable => "unreachable",
            ProviderError::Stream => "stream",
        }
    }
}

/// Statuses a reply can end in.
const ENDS: [Status; 5] = [
    Status::Done,
    Status::Failed,
    Status::Cancelled,
    Status::TimedOut,
    Status::Interrupted,
];

type Labels = Vec<(&'static str, &'static str)>;

pub struct Metrics {
    registry: Registry,
    /// Replies generating now (the writer batches harder when > 1).
    pub replies_live: Gauge<i64, AtomicI64>,
    pub viewers: Gauge<i64, AtomicI64>,
    pub tokens: Counter,
    pub deltas_published: Counter,
    commits: Counter,
    /// Wake-ups (PostgreSQL NOTIFYs) sent to other instances.
    pub notifications: Counter,
    commit_batch: Histogram,
    token_to_publish: Histogram,
    provider_errors: Family<Labels, Counter>,
    replies_ended: Family<Labels, Counter>,
    /// Tool calls run, by outcome (`done`, `failed`).
    tool_calls: Family<Labels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("streamchat");
        let r = &mut registry;
        let [replies_live, viewers] = [
            ("replies_live", "Replies generating now"),
            ("viewers", "Open live subscriptions (SSE)"),
        ]
        .map(|(name, help)| add(r, name, help, Gauge::default()));
        let [tokens, deltas_published, commits, notifications] = [
            ("tokens", "Text deltas received from providers"),
            (
                "deltas_published",
                "Text deltas committed and published to viewers",
            ),
            ("commits", "Writer transactions committed"),
            (
                "notifications",
                "Wake-ups sent to other instances (PostgreSQL NOTIFY)",
            ),
        ]
        .map(|(name, help)| add(r, name, help, Counter::default()));
        let commit_batch = add(
            r,
            "commit_batch_size",
            "Commands per writer transaction",
            Histogram::new([
                1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
            ]),
        );
        let token_to_publish = add(
            r,
            "token_to_publish_seconds",
            "From a token's arrival from the provider to its publication after commit",
            Histogram::new([
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
            ]),
        );
        // Every kind and status is shown from the start, at zero.
        let kinds = ProviderError::ALL.map(ProviderError::as_str);
        let statuses = ENDS.map(|status| status.as_str());
        let [provider_errors, replies_ended, tool_calls] = [
            (
                "provider_errors",
                "Provider failures by kind",
                "kind",
                &kinds[..],
            ),
            (
                "replies_ended",
                "Replies ended, by status",
                "status",
                &statuses[..],
            ),
            (
                "tool_calls",
                "Tool calls run, by outcome",
                "outcome",
                &["done", "failed"][..],
            ),
        ]
        .map(|(name, help, label, values)| add(r, name, help, at_zero(label, values)));
        Self {
            registry,
            replies_live,
            viewers,
            tokens,
            deltas_published,
            commits,
            notifications,
            commit_batch,
            token_to_publish,
            provider_errors,
            replies_ended,
            tool_calls,
        }
    }
}

impl Metrics {
    pub fn provider_error(&self, kind: ProviderError) {
        self.provider_errors
            .get_or_create(&vec![("kind", kind.as_str())])
            .inc();
    }

    pub fn tool_call(&self, done: bool) {
        let outcome = if done { "done" } else { "failed" };
        self.tool_calls
            .get_or_create(&vec![("outcome", outcome)])
            .inc();
    }

    pub fn reply_ended(&self, status: Status) {
        if ENDS.contains(&status) {
            self.replies_ended
                .get_or_create(&vec![("status", status.as_str())])
                .inc();
        }
    }

    pub fn commit(&self, commands: usize) {
        self.commits.inc();
        self.commit_batch.observe(commands as f64);
    }

    pub fn published(&self, token_age: Duration) {
        self.token_to_publish.observe(token_age.as_secs_f64());
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        if let Err(e) = encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "metrics could not be encoded");
        }
        out
    }
}

/// Registers `metric` under `name` and returns it (a handle to the same
/// values).
fn add<M: Metric + Clone>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M {
    registry.register(name, help, metric.clone());
    metric
}

/// A counter per value of `label`, each shown from the start at zero.
fn at_zero(label: &'static str, values: &[&'static str]) -> Family<Labels, Counter> {
    let family = Family::<Labels, Counter>::default();
    for value in values {
        let _ = family.get_or_create(&vec![(label, *value)]);
    }
    family
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_openmetrics_text() {
        let m = Metrics::default();
        m.replies_live.inc();
        m.commit(3);
        m.published(Duration::from_micros(300));
        m.provider_error(ProviderError::RateLimited);
        m.tokens.inc_by(5);
        let text = m.render();
        assert!(text.contains("streamchat_replies_live 1\n"), "{text}");
        assert!(text.contains("streamchat_tokens_total 5\n"), "{text}");
        assert!(
            text.contains("streamchat_commit_batch_size_bucket{le=\"4.0\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("streamchat_token_to_publish_seconds_bucket{le=\"0.0005\"} 1\n"));
        assert!(text.contains("streamchat_provider_errors_total{kind=\"rate_limited\"} 1\n"));
        assert!(text.contains("streamchat_replies_ended_total{status=\"interrupted\"} 0\n"));
        assert!(text.ends_with("# EOF\n"));
    }
}
