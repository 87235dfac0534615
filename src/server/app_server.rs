//! Wiring: state, routes, and the serve loop tests call on port 0.

use std::{
    future::Future,
    net::SocketAddr,
    sync::{Arc, OnceLock},
};

use axum::http::HeaderName;
use axum::{
    extract::{DefaultBodyLimit, FromRef},
    routing::{get, post},
    Router,
};
use leptos::{config::LeptosOptions, prelude::provide_context};
use leptos_axum::{generate_route_list, AxumRouteListing, LeptosRoutes};
use tokio::net::TcpListener;
use tower_http::{
    catch_panic::CatchPanicLayer, limit::RequestBodyLimitLayer, set_header::SetResponseHeaderLayer,
    trace::TraceLayer,
};

use super::{
    accounts::{Accounts, Members},
    config::{AccessMode, Config},
    edge::{
        access::{self, Gate},
        account_pages,
        close_delimited::ConnectionLimits,
        connections::{self, DRAIN_MARGIN},
        export, health, limits, member_pages, oidc_pages, passkey_pages, security, sse,
        sse_listener::{Lean, SseListener},
        thread_list,
    },
    fanout::hub::Hub,
    ingest::{
        adopt,
        bots::Bots,
        budget::{Budget, PerClient, Spend},
        demo::{self, DemoModel},
        generations::{EndRequest, Generations},
        Ingest,
    },
    metrics::Metrics,
    state::AppState,
    store::{
        coordination,
        writer::{Unwritable, Writer},
        Coordination, Store,
    },
    Background,
};
use crate::app::{shell, App};

/// Largest request body any endpoint accepts (a message is at most 8 KiB).
const MAX_REQUEST_BYTES: usize = 64 * 1024;

impl AppState {
    /// Opens the store, recovers interrupted replies and starts the writer.
    /// `self_base_url` is where this server's own demo endpoint lives.
    pub async fn build(
        leptos_options: LeptosOptions,
        config: Config,
        self_base_url: &str,
    ) -> anyhow::Result<Self> {
        let (store, coordination) = coordination::open(&config, instance_name(&config)).await?;
        coordination.announce();
        let interrupted = coordination.recover(&store).await?;
        if interrupted > 0 {
            tracing::warn!(
                interrupted,
                "replies left streaming by a previous run marked interrupted"
            );
        }
        let hub = Hub::new(config.stream.viewer_buffer);
        let metrics = Arc::new(Metrics::default());
        let generations = Generations::new(&config.limits);
        let writer = Writer::start(
            store.clone(),
            coordination.clone(),
            hub.clone(),
            metrics.clone(),
            unwritable_ends(generations.clone()),
        );
        let bots = Bots::from_config(&config, self_base_url);
        let background = Background::default();
        generations.spawn_watchdog(&config.limits, &background);
        thread_list::spawn(store.clone(), hub.clone(), &background);
        for bot in bots.iter() {
            tracing::info!(
                handle = %bot.config.handle,
                provider = bot.provider.base_url(),
                model = bot.provider.model(),
                "bot ready"
            );
        }
        let (accounts, members) = who_is_who(&config, &store, &coordination, &background);
        tracing::info!(mode = ?config.access.mode(), "state ready");
        let config_access = config.access.clone();
        let site_addr = leptos_options.site_addr;
        let writes_per_minute = config.limits.writes_per_minute;
        let subscriptions_per_client = config.limits.subscriptions_per_client;
        let state = Self {
            leptos_options,
            config: Arc::new(config),
            store,
            coordination,
            writer,
            hub,
            bots,
            generations,
            metrics,
            demo: DemoModel::default(),
            background,
            gate: Arc::new(Gate::new(&config_access, site_addr)),
            accounts,
            members,
            writes: Budget::new(Spend::Writes, writes_per_minute),
            subscriptions: PerClient::new(subscriptions_per_client),
        };
        state.start_coordination();
        Ok(state)
    }
}

impl AppState {
    /// Coordination's background tasks: Stop from any instance ends the
    /// generation here; a reply whose producer died is adopted here.
    fn start_coordination(&self) {
        let ingest: Ingest = FromRef::from_ref(self);
        let generations = self.generations.clone();
        self.coordination.start(
            self.hub.clone(),
            Arc::new(move |id, by| {
                generations.end(id, EndRequest::Stop { by });
            }),
            Arc::new(move |thread_id, id| {
                let ingest = ingest.clone();
                Box::pin(async move { adopt::orphan(&ingest, thread_id, id).await })
            }),
            &self.background,
        );
    }
}

/// What the writer calls with a reply whose text cannot be written: its
/// generation ends, saying why.
fn unwritable_ends(generations: Generations) -> impl Fn(i64, Unwritable) + Send + Sync + 'static {
    move |id, why| {
        generations.end(
            id,
            match why {
                Unwritable::Storage => EndRequest::Storage,
                Unwritable::LeaseLost => EndRequest::LeaseLost,
            },
        );
    }
}

/// This instance's name in leases: configured, or the host's name, the
/// process id and a random part.
fn instance_name(config: &Config) -> String {
    config.cluster.instance.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_default();
        let random = uuid::Uuid::new_v4().simple().to_string();
        format!("{host}-{}-{}", std::process::id(), &random[..8])
    })
}

/// The app's routes, listed once per process. Leptos lists them by running
/// the app with every resource's load held back by a process-wide flag, and
/// a resource first polled meanwhile, by any render in the process, never
/// loads (leptos#4773): a page being served by another router in the same
/// process (the tests run many) would hang. The routes never change.
fn routes() -> Vec<AxumRouteListing> {
    static ROUTES: OnceLock<Vec<AxumRouteListing>> = OnceLock::new();
    ROUTES.get_or_init(|| generate_route_list(App)).clone()
}

pub fn router(state: AppState) -> Router {
    let routes = routes();
    let context_state = state.clone();
    let mut router = Router::new()
        .route("/api/threads/events", get(sse::thread_list_events))
        .route("/api/threads/{id}/events", get(sse::events))
        .route("/t/{id}/export.md", get(export::export))
        .route("/metrics", get(health::metrics))
        .route("/healthz", get(health::healthz))
        .merge(account_pages::routes())
        .merge(member_pages::routes())
        .merge(oidc_pages::routes())
        .merge(passkey_pages::routes());
    if state.config.uses_demo() {
        router = router.route("/v1/chat/completions", post(demo::completions));
    }
    // Several instances: every answer names the one that gave it (for
    // operators behind a load balancer, and the cluster's browser test).
    let instance = state
        .coordination
        .answering_instance()
        .and_then(|name| axum::http::HeaderValue::from_str(name).ok());
    let router = router
        .leptos_routes_with_context(
            &state,
            routes,
            move || provide_context(context_state.clone()),
            {
                let options = state.leptos_options.clone();
                move || shell(options.clone())
            },
        )
        .fallback(leptos_axum::file_and_error_handler::<AppState, _>(shell))
        .layer(axum::middleware::map_response(error_status))
        // 413 for any larger body, before a handler or server function reads it.
        .layer(RequestBodyLimitLayer::new(MAX_REQUEST_BYTES))
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .layer(TraceLayer::new_for_http())
        // A panic in a handler is a 500 with a plain message, never a hang.
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(axum::middleware::from_fn_with_state(
            <limits::Writes as FromRef<AppState>>::from_ref(&state),
            limits::writes,
        ))
        // Before the write budget: a cross-site request (refused) costs
        // the visitor it was forged for nothing.
        .layer(axum::middleware::from_fn(security::same_origin))
        // The door, before anything else runs: the host, the identity, and
        // who is asking (for every limit after it).
        .layer(axum::middleware::from_fn_with_state(
            <access::Door as FromRef<AppState>>::from_ref(&state),
            access::admit,
        ));
    let router = match instance {
        Some(name) => router.layer(SetResponseHeaderLayer::overriding(
            HeaderName::from_static("x-streamchat-instance"),
            name,
        )),
        None => router,
    };
    security::headers(router).with_state(state)
}

/// Server functions answer a request whose fields they cannot read (one
/// missing, one malformed) with 500; this gives such an answer the status
/// of the error it carries (400 for those). Other answers pass untouched.
async fn error_status(response: axum::response::Response) -> axum::response::Response {
    use axum::{body::Body, http::StatusCode};
    if response.status() != StatusCode::INTERNAL_SERVER_ERROR {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_REQUEST_BYTES).await else {
        return axum::response::IntoResponse::into_response(crate::error::AppError::Internal);
    };
    if let Ok(error) = serde_json::from_slice::<crate::error::AppError>(&bytes) {
        parts.status = error.status();
        if let Some(secs) = error.retry_after() {
            parts
                .headers
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
    }
    axum::response::Response::from_parts(parts, Body::from(bytes))
}

/// The answer to a request whose handler panicked (the panic is logged).
fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> axum::response::Response {
    let detail = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown");
    tracing::error!(panic = detail, "a request handler panicked");
    axum::response::IntoResponse::into_response(crate::error::AppError::Internal)
}

/// Builds the state and serves the app on `listener` until `shutdown` resolves.
pub async fn run(
    listener: TcpListener,
    leptos_options: LeptosOptions,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    let state = AppState::build(leptos_options, config, &self_base_url(addr)).await?;
    announce_setup_link(&state, addr).await?;
    serve(listener, state, shutdown).await
}

/// Who people are: built-in accounts (`accounts` mode) with their pruning
/// and session checks, and private threads' members with theirs.
fn who_is_who(
    config: &Config,
    store: &Store,
    coordination: &Coordination,
    background: &Background,
) -> (Option<Accounts>, Members) {
    let accounts = (config.access.mode() == AccessMode::Accounts).then(|| {
        let accounts = Accounts::new(
            store.clone(),
            coordination.clone(),
            &config.access.accounts,
            &config.access.oidc,
        );
        accounts.spawn_pruning(background);
        accounts.spawn_revalidation(background);
        accounts
    });
    let members = Members::new(
        store.clone(),
        config.access.mode(),
        config.access.members_per_thread,
    );
    if members.private_threads() {
        let period = std::time::Duration::from_secs_f64(config.access.accounts.revalidate_secs);
        members.spawn_revalidation(background, period);
    }
    (accounts, members)
}

/// With built-in accounts and no account yet: prints (and logs) the one
/// link that makes the first admin.
async fn announce_setup_link(state: &AppState, addr: SocketAddr) -> anyhow::Result<()> {
    let Some(accounts) = &state.accounts else {
        return Ok(());
    };
    let Some(token) = accounts.setup_link().await? else {
        return Ok(());
    };
    // Passkeys need a host name, not an address: a loopback or wildcard
    // listener is reached as localhost.
    let host = if addr.ip().is_loopback() || addr.ip().is_unspecified() {
        format!("localhost:{}", addr.port())
    } else {
        addr.to_string()
    };
    let link = format!("http://{host}/setup?token={token}");
    let minutes = accounts.config().setup_link_minutes;
    println!(
        "\nNo account yet. Make the first admin within {minutes} minutes, once, at:\n  {link}\n"
    );
    tracing::warn!(%link, minutes, "no account yet: this setup link makes the first admin");
    Ok(())
}

/// Where a server on `addr` serves its own demo endpoint.
pub fn self_base_url(addr: SocketAddr) -> String {
    format!("http://127.0.0.1:{}/v1", addr.port())
}

/// Serves the app with `state` on `listener` until `shutdown` resolves
/// (tests build the state themselves, to reach its parts), then drains.
///
/// Shutdown, within `limits.shutdown_secs`: stop accepting; end every
/// reply (one instance: `interrupted`; several: handed over) and wait for
/// their tasks; close the writer once it committed everything queued;
/// then end subscriptions and the background tasks, let open requests
/// finish, and close the database pools. Returns only after all of that.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    tracing::info!("listening on http://{addr}");
    let limits = ConnectionLimits::new(&state.config.limits);
    let within = state.config.limits.shutdown_within();
    let app = router(state.clone());
    let lean = Lean {
        router: app.clone(),
        gate: state.gate.clone(),
        background: state.background.clone(),
        enabled: state.config.lanes.lean_sse,
    };
    let listener = SseListener::new(listener, lean, limits.clone());
    let drain = {
        let state = state.clone();
        async move {
            tracing::info!("shutting down: ending replies");
            let started = tokio::time::Instant::now();
            let left = state.generations.end_all_and_wait(within).await;
            if left > 0 {
                tracing::error!(
                    replies = left,
                    "replies still running at the shutdown deadline"
                );
            }
            let rest = within.saturating_sub(started.elapsed());
            match tokio::time::timeout(rest, state.writer.close()).await {
                Ok(Ok(())) => tracing::info!(
                    ms = started.elapsed().as_millis() as u64,
                    "every reply's end is committed"
                ),
                Ok(Err(e)) => tracing::error!(error = %e, "the writer could not close"),
                Err(_) => tracing::error!("the writer did not commit everything by the deadline"),
            }
            state.background.stop.cancel();
        }
    };
    connections::serve(listener, app, limits, shutdown, drain, within).await;
    if !state.background.stop_and_wait(DRAIN_MARGIN).await {
        tracing::warn!("background tasks still running at the deadline");
    }
    state.store.close().await;
    tracing::info!("stopped");
    Ok(())
}
