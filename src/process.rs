//! What every long-running role needs from its process: a Kubernetes configuration and
//! a shutdown signal.

use std::path::Path;

/// The Kubernetes configuration from `kubeconfig`, else the usual places (in-cluster
/// service account, `$KUBECONFIG`, `~/.kube/config`).
pub async fn kube_config(kubeconfig: Option<&Path>) -> Result<kube::Config, String> {
    match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .map_err(|e| format!("{}: {e}", path.display()))
        }
        None => kube::Config::infer().await.map_err(|e| e.to_string()),
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

/// Serves `router` on `addr` until `shutdown`; returns the bound address and the task.
pub async fn serve_http(
    addr: std::net::SocketAddr,
    router: axum::Router,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>)> {
    use axum::serve::ListenerExt;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    // Nagle off: an SSE reply goes out as two writes (priming event, then the message),
    // and with Nagle on the second waits for the client's delayed ACK (~40 ms a call).
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY on an accepted socket");
        }
    });
    let task = tokio::spawn(async move {
        // Connect info: handlers may learn the peer's address (the gateway's per-client
        // budget of failed token reviews).
        let server = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown.cancelled_owned());
        if let Err(e) = server.await {
            tracing::error!(error = %e, "an HTTP server stopped");
        }
    });
    Ok((bound, task))
}

/// A `/metrics` response: the registry in the OpenMetrics text format.
pub fn metrics_response(
    registry: &prometheus_client::registry::Registry,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, registry);
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}
