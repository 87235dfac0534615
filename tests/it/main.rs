//! The integration suite, one module per behaviour, built as one binary
//! (one link instead of one per file). Each test starts the real server on
//! port 0 with its own SQLite file and a fake provider over real HTTP.
#![cfg(feature = "ssr")]

mod support;

mod access;
mod accounts;
mod accounts_upgrade;
mod bots;
mod cluster;
mod cluster_chaos;
mod concurrent_replies;
mod crash_recovery;
mod granularity_view;
mod history;
mod hostile_markdown;
mod hostile_peers;
mod idempotent_send;
mod lagging_listener;
mod lanes;
mod layering;
mod limits;
mod load_smoke;
mod long_reply;
mod mcp_tools;
mod memory_bound;
mod module_graph;
mod no_mention_no_request;
mod oidc;
mod open_network;
mod operations;
mod page_size;
mod presence;
mod private_threads;
mod provider_caps;
mod provider_decode;
mod provider_faults;
mod provider_fixtures;
mod read_flood;
mod reasoning;
mod regenerate_continue;
mod reply_streams_into_database;
mod resume_exact;
mod sanitizer;
mod search;
mod security;
mod shutdown;
mod single_on_postgres;
mod slow_viewer;
mod sse_paths;
mod stop_and_watchdog;
mod storage_full;
mod thread_granularity;
mod thread_isolation;
mod threads;
mod tool_calls;
mod tool_crash;
mod usage;
mod validation;
mod write_ahead;
