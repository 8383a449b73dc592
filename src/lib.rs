//! aotel: an OpenTelemetry-native collector for AI-agent sessions. OTLP in (gRPC, HTTP), one SQLite
//! file, query APIs out. `run` starts a whole server on listeners the caller bound, so tests use port 0.

pub mod config;
pub mod model;
pub mod query;
pub mod receiver;
pub mod store;

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
    query::api::router()
        .merge(query::trace_apis())
        .with_state(state)
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
    let store = store::open(&config.db, &config.store)?;
    let (grpc_addr, http_addr, api_addr) = listeners.addrs();
    tracing::info!(path = %config.db.display(), "data stored in SQLite");
    tracing::info!(addr = %grpc_addr, "OTLP/gRPC listening");
    tracing::info!(addr = %http_addr, "OTLP/HTTP listening");
    tracing::info!(addr = %api_addr, url = %format!("http://{api_addr}/"), "API and web page listening");

    let state = AppState {
        writer: store.writer.clone(),
        reader: store.reader.clone(),
        config: std::sync::Arc::new(config.clone()),
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
    });

    let grpc = receiver::grpc::serve(
        listeners.grpc,
        store.writer.clone(),
        config.max_request_bytes,
        stopped(),
    );
    let http_app = receiver::http::router(store.writer.clone(), config.max_request_bytes);
    let http = axum::serve(listeners.http, http_app).with_graceful_shutdown(stopped());
    let api = axum::serve(listeners.api, api_router(state)).with_graceful_shutdown(stopped());
    let (g, h, a) = tokio::join!(grpc, http, api);
    let closed = store.close().await;
    g.map_err(|e| serve_error("OTLP/gRPC")(Box::new(e)))?;
    h.map_err(|e| serve_error("OTLP/HTTP")(Box::new(e)))?;
    a.map_err(|e| serve_error("API")(Box::new(e)))?;
    closed?;
    tracing::info!("stopped cleanly");
    Ok(())
}
