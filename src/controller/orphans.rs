//! The orphan sweep: a job slurmlab submitted whose ComputeAllocation no longer exists
//! (deleted while the controller was down, with its finalizer removed by hand) is
//! cancelled, with a log line and an event on the SlurmCluster.

use std::sync::{Arc, Weak};
use std::time::Duration;

use kube::api::Api;
use kube::{Resource, ResourceExt};
use tracing::{info, warn};

use crate::api::{ComputeAllocation, SlurmCluster};
use crate::slurm::{RestClient, SlurmApi};

use super::context::Context;
use super::identity::{JOB_NAME_PREFIX, parse_comment};

/// Sweeps the cluster now and then, until the context goes away.
pub async fn sweep_forever(
    cluster: String,
    cluster_uid: String,
    client: Arc<RestClient>,
    ctx: Weak<Context>,
) {
    // A restarted controller cleans up soon, not after a full period.
    let mut delay = Duration::from_secs(5);
    loop {
        tokio::time::sleep(delay).await;
        let Some(ctx) = ctx.upgrade() else { return };
        delay = ctx.settings.orphan_sweep;
        match sweep(&cluster, &cluster_uid, &client, &ctx).await {
            Ok(0) => {}
            Ok(n) => info!(%cluster, cancelled = n, "cancelled orphaned jobs"),
            Err(e) => warn!(%cluster, error = %e, "orphan sweep failed; trying again later"),
        }
    }
}

/// One sweep; returns how many jobs were cancelled.
pub async fn sweep(
    cluster: &str,
    cluster_uid: &str,
    client: &RestClient,
    ctx: &Context,
) -> Result<usize, String> {
    let jobs = client
        .find_jobs(JOB_NAME_PREFIX)
        .await
        .map_err(|e| e.to_string())?;
    let mut cancelled = 0;
    for job in jobs.into_iter().filter(|j| !j.state.is_finished()) {
        let Some(owner) = job.comment.as_deref().and_then(|c| parse_comment(c).owner) else {
            continue;
        };
        if owner.cluster_uid != cluster_uid {
            continue; // another SlurmCluster object (maybe another Kubernetes cluster)
        }
        if ctx
            .settings
            .namespace
            .as_deref()
            .is_some_and(|ns| ns != owner.namespace)
        {
            continue; // another controller's namespace
        }
        let api: Api<ComputeAllocation> = Api::namespaced(ctx.client.clone(), &owner.namespace);
        let alive = api.get_opt(&owner.name).await.map_err(|e| e.to_string())?;
        if alive.as_ref().and_then(|a| a.uid()).as_deref() == Some(owner.uid.as_str()) {
            continue;
        }
        let user = job.user.clone().unwrap_or_default();
        let message = format!(
            "cancelled orphaned job {} (ComputeAllocation {}/{} with UID {} no longer exists)",
            job.id, owner.namespace, owner.name, owner.uid
        );
        match client.cancel(&user, job.id).await {
            Ok(_) => {
                cancelled += 1;
                warn!(%cluster, job = job.id, "{message}");
                if let Ok(Some(sc)) = Api::<SlurmCluster>::all(ctx.client.clone())
                    .get_opt(cluster)
                    .await
                {
                    ctx.events
                        .warning(&sc.object_ref(&()), "OrphanCancelled", &message)
                        .await;
                }
            }
            Err(e) => warn!(%cluster, job = job.id, error = %e, "could not cancel an orphaned job"),
        }
    }
    Ok(cancelled)
}
