use std::path::Path;

use leptos::config::get_configuration;
use streamchat::server::{app_server::run, config::Config};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(log_filter())
        .init();
    let leptos_options = get_configuration(None)?.leptos_options;
    let config = Config::load(Path::new("Leptos.toml"))?;
    let listener = tokio::net::TcpListener::bind(&leptos_options.site_addr).await?;
    run(listener, leptos_options, config, shutdown_signal()).await
}

/// `RUST_LOG`, else `info`; rmcp's transport logs are off unless
/// `RUST_LOG` names them (they print an MCP endpoint's whole URL, which
/// may carry a credential in its query string).
fn log_filter() -> EnvFilter {
    let asked = std::env::var("RUST_LOG").unwrap_or_default();
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,tower_http=warn"));
    if asked.contains("rmcp") {
        filter
    } else {
        filter.add_directive("rmcp::transport=off".parse().expect("a directive"))
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {},
        _ = term.recv() => {},
    }
}
