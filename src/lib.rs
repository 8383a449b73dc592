//! aotel: an OpenTelemetry-native collector for AI-agent sessions. OTLP in (gRPC, HTTP), one SQLite
//! file, query APIs out. `run` starts a whole server on listeners the caller bound, so tests use port 0.

pub mod auth;
pub mod config;
pub mod forward;
pub mod ingest;
pub mod live;
pub mod metrics;
pub mod model;
pub mod query;
pub mod receiver;
pub mod serve;
pub mod store;
pub mod tls;

pub use config::Config;

use std::future::Future;
use std::net::SocketAddr;
use store::{Reader, StoreError, Writer};
use tokio::net::TcpListener;
use tokio::sync::watch;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Forward(#[from] forward::ForwardError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("{what} listener failed: {source}")]
    Serve {
        what: &'static str,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("could not bind {what} on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// What every HTTP handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub writer: Writer,
    pub reader: Reader,
    pub config: std::sync::Arc<Config>,
    pub retention: std::sync::Arc<std::sync::Mutex<store::retention::RetentionStatus>>,
    pub live: live::Hub,
    pub forward: forward::Forwarders,
}

/// The three sockets aotel serves on, bound by the caller.
pub struct Listeners {
    pub grpc: TcpListener,
    pub http: TcpListener,
    pub api: TcpListener,
}

impl Listeners {
    pub async fn bind(
        grpc: SocketAddr,
        http: SocketAddr,
        api: SocketAddr,
    ) -> Result<Listeners, Error> {
        async fn one(what: &'static str, addr: SocketAddr) -> Result<TcpListener, Error> {
            TcpListener::bind(addr)
                .await
                .map_err(|source| Error::Bind { what, addr, source })
        }
        Ok(Listeners {
            grpc: one("OTLP/gRPC", grpc).await?,
            http: one("OTLP/HTTP", http).await?,
            api: one("API", api).await?,
        })
    }

    /// Three free loopback ports: for tests and benchmarks.
    pub async fn ephemeral() -> Result<Listeners, Error> {
        let any: SocketAddr = ([127, 0, 0, 1], 0).into();
        Listeners::bind(any, any, any).await
    }

    /// (gRPC, HTTP, API) addresses actually bound.
    pub fn addrs(&self) -> (SocketAddr, SocketAddr, SocketAddr) {
        let addr = |l: &TcpListener| l.local_addr().unwrap_or_else(|_| ([0, 0, 0, 0], 0).into());
        (addr(&self.grpc), addr(&self.http), addr(&self.api))
    }
}

/// The HTTP API router: the page, the query APIs and the legacy endpoints all hang off this.
pub fn api_router(state: AppState) -> axum::Router {
    let tokens = state.config.tokens.clone();
    query::api::router()
        .merge(query::metrics::router())
        .merge(query::trace_apis())
        .merge(live::router())
        .merge(forward::api::router())
        .with_state(state.clone())
        .merge(ingest::legacy::router(state))
        .layer(axum::middleware::from_fn(move |req, next| {
            auth::api_layer(tokens.clone(), req, next)
        }))
}

/// Serves `app` on `listener`, over TLS when an identity is configured, until `stopped` resolves.
fn serve_http(
    listener: TcpListener,
    app: axum::Router,
    identity: Option<&tls::Identity>,
    stopped: impl Future<Output = ()> + Send + 'static,
) -> tokio::task::JoinHandle<std::io::Result<()>> {
    match identity {
        Some(id) => tokio::spawn(serve::serve(id.listener(listener), app, stopped)),
        None => tokio::spawn(serve::serve(listener, app, stopped)),
    }
}

/// Runs `work` every `period`, the first time at once, until `stopped` resolves; a run that takes longer
/// than `period` delays the next instead of bunching them up.
async fn periodically<F, Fut>(
    period: std::time::Duration,
    stopped: impl Future<Output = ()>,
    mut work: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            _ = tick.tick() => {}
        }
        work().await;
    }
}

/// Applies the retention policy every `retention_interval` until shutdown.
async fn retention_loop(state: AppState, stopped: impl Future<Output = ()>) {
    periodically(state.config.retention_interval, stopped, || async {
        let result = store::retention::run(&state.writer, state.config.retention, 10_000).await;
        match &result {
            Ok(r) if r.sessions > 0 => tracing::info!(
                sessions = r.sessions,
                spans = r.spans,
                logs = r.logs,
                unforwarded_dropped = r.unforwarded_spans_dropped,
                "retention deleted old sessions"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "retention failed"),
        }
        if let Ok(mut status) = state.retention.lock() {
            status.record(&result);
        }
    })
    .await
}

/// Marks idle log-only sessions finished (`Counters::status`), checking a few times per idle period.
async fn idle_sessions_loop(state: AppState, stopped: impl Future<Output = ()>) {
    let every = (state.config.store.session_idle / 4).clamp(
        std::time::Duration::from_millis(250),
        std::time::Duration::from_secs(60),
    );
    periodically(every, stopped, || async {
        match state.writer.finish_idle_sessions().await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(sessions = n, "idle sessions marked finished"),
            Err(e) => tracing::warn!(error = %e, "could not mark idle sessions finished"),
        }
    })
    .await
}

fn serve_error(
    what: &'static str,
) -> impl FnOnce(Box<dyn std::error::Error + Send + Sync>) -> Error {
    move |source| Error::Serve { what, source }
}

/// Runs aotel until `shutdown` resolves: stops accepting, finishes in-flight requests, commits
/// everything acknowledged, and returns.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    // Certificates are checked before anything is opened: a bad file fails the start, not a client.
    let identity = config.tls.as_ref().map(tls::Identity::load).transpose()?;
    let store = store::open(&config.db, &config.store)?;
    let (grpc_addr, http_addr, api_addr) = listeners.addrs();
    tracing::info!(path = %config.db.display(), "data stored in SQLite");
    tracing::info!(addr = %grpc_addr, "OTLP/gRPC listening");
    tracing::info!(addr = %http_addr, "OTLP/HTTP listening");
    let scheme = if identity.is_some() { "https" } else { "http" };
    tracing::info!(addr = %api_addr, url = %format!("{scheme}://{api_addr}/"), "API and web page listening");

    let live = live::Hub::start(store.writer.clone(), &config.live);
    // Before any listener serves: a new destination's cursor starts at what is stored now.
    let forwarders =
        forward::Forwarders::start(&config.forward, &store.writer, &store.reader).await?;
    let state = AppState {
        live: live.clone(),
        writer: store.writer.clone(),
        reader: store.reader.clone(),
        config: std::sync::Arc::new(config.clone()),
        retention: std::sync::Arc::new(std::sync::Mutex::new(
            store::retention::RetentionStatus::new(&config.retention),
        )),
        forward: forwarders.clone(),
    };

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutting down: no new requests, committing what was accepted");
        let _ = stop_tx.send(true);
        live.close();
    });

    // Each server runs as its own task so the runtime's workers share the load: a future awaited in
    // place would keep every connection it drives on the caller's thread.
    let grpc = tokio::spawn(receiver::grpc::serve(
        listeners.grpc,
        store.writer.tagged("grpc"),
        config.max_request_bytes,
        config.tokens.clone(),
        identity
            .as_ref()
            .map(|id| tonic::transport::Identity::from_pem(&id.cert_pem, &id.key_pem)),
        serve::HEADER_READ_TIMEOUT,
        stopped(),
    ));
    let tokens = config.tokens.clone();
    let http_app = receiver::http::router(store.writer.tagged("http"), config.max_request_bytes)
        .layer(axum::middleware::from_fn(move |req, next| {
            auth::ingest_layer(tokens.clone(), req, next)
        }));
    let http = serve_http(listeners.http, http_app, identity.as_ref(), stopped());
    let state_for_retention = state.clone();
    let state_for_idle = state.clone();
    let api = serve_http(
        listeners.api,
        api_router(state),
        identity.as_ref(),
        stopped(),
    );
    let watcher = (!config.watch.is_empty()).then(|| {
        let opts = ingest::watch::WatchOptions {
            dirs: config.watch.clone(),
            interval: config.watch_interval,
        };
        tokio::spawn(ingest::watch::run(
            store.writer.tagged("watch"),
            store.reader.clone(),
            opts,
            stopped(),
        ))
    });
    let retention_task = config
        .retention
        .is_set()
        .then(|| tokio::spawn(retention_loop(state_for_retention, stopped())));
    let idle_task = tokio::spawn(idle_sessions_loop(state_for_idle, stopped()));
    let (g, h, a) = tokio::join!(grpc, http, api);
    if let Some(task) = retention_task {
        let _ = task.await;
    }
    let _ = idle_task.await;
    if let Some(Ok(Err(e))) = match watcher {
        Some(w) => Some(w.await),
        None => None,
    } {
        tracing::error!(error = %e, "session file watcher stopped with an error");
    }
    let joined = |r: Result<
        Result<(), Box<dyn std::error::Error + Send + Sync>>,
        tokio::task::JoinError,
    >,
                  what| {
        r.map_err(|e| serve_error(what)(Box::new(e)))?
            .map_err(serve_error(what))
    };
    forwarders.stop().await;
    let closed = store.close().await;
    joined(g.map(|r| r.map_err(|e| e.into())), "OTLP/gRPC")?;
    joined(h.map(|r| r.map_err(|e| e.into())), "OTLP/HTTP")?;
    joined(a.map(|r| r.map_err(|e| e.into())), "API")?;
    closed?;
    tracing::info!("stopped cleanly");
    Ok(())
}
