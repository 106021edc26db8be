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
