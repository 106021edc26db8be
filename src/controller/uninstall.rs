//! `slurmlab uninstall`: run by the chart's pre-delete hook, while the controller still
//! runs. Deletes the sessions and allocations this installation manages (its watched
//! namespace and cluster selector) and waits until the controller has cancelled their
//! SLURM jobs and released their finalizers, so `helm uninstall` leaves no job running
//! and no object stuck on a finalizer nobody will remove.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use kube::api::{Api, DeleteParams, ListParams};
use kube::{Client, ResourceExt};
use tracing::info;

use crate::api::{ComputeAllocation, JupyterSession, SlurmCluster};

/// Arguments of `slurmlab uninstall` (the controller's scope flags, same names).
#[derive(Debug, clap::Args)]
pub struct UninstallArgs {
    /// Path to a kubeconfig (default: in-cluster, then $KUBECONFIG).
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// The controller's watched namespace (empty: all namespaces).
    #[arg(long, env = "SLURMLAB_WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,
    /// The controller's SlurmCluster label selector (empty: every cluster).
    #[arg(long, env = "SLURMLAB_CLUSTER_SELECTOR")]
    pub cluster_selector: Option<String>,
    /// How long to wait for the controller to release everything.
    #[arg(long, default_value_t = 300)]
    pub timeout_seconds: u64,
}

/// Why `slurmlab uninstall` did not finish.
#[derive(Debug, thiserror::Error)]
pub enum UninstallError {
    #[error("cannot build a Kubernetes client: {0} (set --kubeconfig or run in a pod)")]
    Client(String),
    #[error(
        "cannot {action}: {source} (the hook needs list, watch and delete on slurmlab objects)"
    )]
    Api {
        action: &'static str,
        source: kube::Error,
    },
    #[error(
        "{left} {kind} still exist after {seconds} s: {names} (is the controller running? \
         `kubectl describe` them for the reason)"
    )]
    Timeout {
        kind: &'static str,
        left: usize,
        seconds: u64,
        names: String,
    },
}

/// Whether a session belongs to this installation: its own allocation's cluster, or the
/// cluster of the allocation it uses.
fn session_in_scope(
    session: &JupyterSession,
    clusters: &BTreeSet<String>,
    allocations: &BTreeSet<(String, String)>,
) -> bool {
    match (
        &session.spec.allocation_template,
        &session.spec.allocation_ref,
    ) {
        (Some(template), _) => clusters.contains(&template.cluster_ref),
        (None, Some(name)) => {
            allocations.contains(&(session.namespace().unwrap_or_default(), name.clone()))
        }
        (None, None) => false,
    }
}

fn key<K: ResourceExt>(o: &K) -> (String, String) {
    (o.namespace().unwrap_or_default(), o.name_any())
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Deletes `targets` and waits (bounded) until none of them exists any more.
async fn delete_and_wait<K>(
    client: &Client,
    namespace: Option<&str>,
    kind: &'static str,
    targets: BTreeSet<(String, String)>,
    deadline: tokio::time::Instant,
    seconds: u64,
) -> Result<(), UninstallError>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned,
    K::DynamicType: Default,
{
    for (ns, name) in &targets {
        info!(kind, namespace = %ns, %name, "deleting");
        match Api::<K>::namespaced(client.clone(), ns)
            .delete(name, &DeleteParams::background())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(source) => {
                return Err(UninstallError::Api {
                    action: "delete",
                    source,
                });
            }
        }
    }
    loop {
        let left: Vec<(String, String)> = api::<K>(client, namespace)
            .list(&ListParams::default())
            .await
            .map_err(|source| UninstallError::Api {
                action: "list",
                source,
            })?
            .items
            .iter()
            .map(key)
            .filter(|k| targets.contains(k))
            .collect();
        if left.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(UninstallError::Timeout {
                kind,
                left: left.len(),
                seconds,
                names: left
                    .iter()
                    .map(|(ns, n)| format!("{ns}/{n}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Sessions first (their own allocations go with them), then the remaining allocations.
pub async fn run(args: UninstallArgs) -> Result<(), UninstallError> {
    let config = crate::process::kube_config(args.kubeconfig.as_deref())
        .await
        .map_err(UninstallError::Client)?;
    let client = Client::try_from(config).map_err(|e| UninstallError::Client(e.to_string()))?;
    let ns = args.watch_namespace.as_deref().filter(|n| !n.is_empty());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.timeout_seconds);
    let list_err = |source| UninstallError::Api {
        action: "list",
        source,
    };

    let mut lp = ListParams::default();
    if let Some(selector) = args.cluster_selector.as_deref().filter(|s| !s.is_empty()) {
        lp = lp.labels(selector);
    }
    let clusters: BTreeSet<String> = Api::<SlurmCluster>::all(client.clone())
        .list(&lp)
        .await
        .map_err(list_err)?
        .items
        .iter()
        .map(ResourceExt::name_any)
        .collect();
    let allocations: BTreeSet<(String, String)> = api::<ComputeAllocation>(&client, ns)
        .list(&ListParams::default())
        .await
        .map_err(list_err)?
        .items
        .iter()
        .filter(|a| clusters.contains(&a.spec.cluster_ref))
        .map(key)
        .collect();
    let sessions: BTreeSet<(String, String)> = api::<JupyterSession>(&client, ns)
        .list(&ListParams::default())
        .await
        .map_err(list_err)?
        .items
        .iter()
        .filter(|s| session_in_scope(s, &clusters, &allocations))
        .map(key)
        .collect();
    info!(
        clusters = clusters.len(),
        sessions = sessions.len(),
        allocations = allocations.len(),
        "releasing everything this installation manages"
    );
    let seconds = args.timeout_seconds;
    delete_and_wait::<JupyterSession>(&client, ns, "sessions", sessions, deadline, seconds).await?;
    delete_and_wait::<ComputeAllocation>(
        &client,
        ns,
        "allocations",
        allocations,
        deadline,
        seconds,
    )
    .await?;
    info!("every session and allocation is gone; their SLURM jobs are cancelled");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(spec: serde_json::Value) -> JupyterSession {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "slurmlab.io/v1alpha1", "kind": "JupyterSession",
            "metadata": {"name": "s", "namespace": "ns"}, "spec": spec
        }))
        .unwrap()
    }

    #[test]
    fn a_session_is_in_scope_through_its_template_or_its_allocation() {
        let clusters = BTreeSet::from(["ours".to_owned()]);
        let allocations = BTreeSet::from([("ns".to_owned(), "a".to_owned())]);
        let own = session(serde_json::json!({"allocationTemplate": {"clusterRef": "ours"}}));
        let other = session(serde_json::json!({"allocationTemplate": {"clusterRef": "theirs"}}));
        let shared = session(serde_json::json!({"allocationRef": "a"}));
        let foreign = session(serde_json::json!({"allocationRef": "b"}));
        assert!(session_in_scope(&own, &clusters, &allocations));
        assert!(!session_in_scope(&other, &clusters, &allocations));
        assert!(session_in_scope(&shared, &clusters, &allocations));
        assert!(!session_in_scope(&foreign, &clusters, &allocations));
    }
}
