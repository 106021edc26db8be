//! The controller's HTTP endpoints on one port: `/healthz`, `/readyz`, `/metrics`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use super::metrics::Metrics;

/// What `/readyz` reports.
#[derive(Default)]
pub struct Readiness(AtomicU8);

/// 0: starting; then standby or leading.
impl Readiness {
    const STANDBY: u8 = 1;
    const LEADING: u8 = 2;

    pub fn standby(&self) {
        self.0.store(Self::STANDBY, Ordering::Relaxed);
    }

    pub fn leading(&self) {
        self.0.store(Self::LEADING, Ordering::Relaxed);
    }
}

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
}

/// Binds `addr` and serves until `shutdown`; returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    shutdown: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(AppState { metrics, readiness });
    let task = tokio::spawn(async move {
        let server = axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned());
        if let Err(e) = server.await {
            tracing::error!(error = %e, "the health/metrics server stopped");
        }
    });
    Ok((bound, task))
}

/// Ready once started, as leader or as a standby replica waiting for the lease.
async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    match s.readiness.0.load(Ordering::Relaxed) {
        Readiness::LEADING => (StatusCode::OK, "ok: leading"),
        Readiness::STANDBY => (StatusCode::OK, "ok: standby, waiting for the leader lease"),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "starting"),
    }
}

async fn metrics_text(State(s): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
}
