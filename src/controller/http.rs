//! The controller's HTTP endpoints on one port: `/healthz`, `/readyz`, `/metrics`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
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
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(AppState { metrics, readiness });
    crate::process::serve_http(addr, app, shutdown).await
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
    crate::process::metrics_response(&s.metrics.registry)
}
