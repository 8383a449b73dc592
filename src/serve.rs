//! Serves an axum router like `axum::serve`, plus the one timeout it lacks: a connection must finish
//! sending a request's headers within `HEADER_READ_TIMEOUT`. `axum::serve` gives hyper no timer, so
//! hyper's default header timeout never runs and a slow-loris client (headers dribbled byte by byte)
//! would hold its socket for ever; enough of them exhaust the file descriptors and starve everyone.

use axum::serve::Listener;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::time::Duration;
use tokio::sync::watch;

/// How long a client may take to send a request's headers (hyper's own default, now enforced). The same
/// timer closes a keep-alive connection that stays idle this long, as most HTTP servers do.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves `app` until `stopped` resolves, then lets in-flight requests finish (graceful shutdown).
pub async fn serve<L: Listener>(
    listener: L,
    app: Router,
    stopped: impl Future<Output = ()>,
) -> std::io::Result<()> {
    serve_with(listener, app, stopped, HEADER_READ_TIMEOUT).await
}

/// `serve` with a chosen header timeout (tests use a short one).
pub async fn serve_with<L: Listener>(
    mut listener: L,
    app: Router,
    stopped: impl Future<Output = ()>,
    header_read_timeout: Duration,
) -> std::io::Result<()> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    // As axum::serve: WebSockets over HTTP/2 need the CONNECT protocol.
    builder.http2().enable_connect_protocol();
    // Connection tasks hold `closed_rx`; shutdown waits until every one has dropped it.
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (closed_tx, closed_rx) = watch::channel(());
    tokio::pin!(stopped);
    loop {
        let stream = tokio::select! {
            _ = &mut stopped => break,
            // The listener retries failed accepts itself (axum's TcpListener backs off on EMFILE).
            (stream, _) = listener.accept() => stream,
        };
        let conn = builder
            .serve_connection_with_upgrades(
                TokioIo::new(stream),
                TowerToHyperService::new(app.clone()),
            )
            .into_owned();
        let mut shutdown = shutdown_rx.clone();
        let closed = closed_rx.clone();
        tokio::spawn(async move {
            tokio::pin!(conn);
            let mut asked = false;
            loop {
                tokio::select! {
                    result = conn.as_mut() => {
                        if let Err(e) = result {
                            tracing::trace!(error = %e, "connection ended with an error");
                        }
                        break;
                    }
                    _ = shutdown.wait_for(|s| *s), if !asked => {
                        asked = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
            drop(closed);
        });
    }
    drop(listener);
    drop(closed_rx);
    let _ = shutdown_tx.send(true);
    closed_tx.closed().await;
    Ok(())
}
