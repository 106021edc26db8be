//! The orphan sweep: a job slurmlab submitted whose ComputeAllocation no longer exists
//! (deleted while the controller was down, with its finalizer removed by hand) is
//! cancelled, with a log line and an event on the SlurmCluster.
//!
//! A sweep asks accounting for the unfinished slurmlab jobs of the users this cluster
//! maps to and reads only those the poller does not follow already
//! ([`super::job_lookup`]), so its cost follows our users' jobs. The first sweep after
//! start and every `--orphan-full-sweep-every`th (default [`FULL_SWEEP_EVERY`]) read the
//! whole job table instead: they also
//! find jobs of a user no current allocation or mapping names any more (a namespace
//! annotation changed or removed since), and jobs accounting has not recorded.

use std::sync::{Arc, Weak};
use std::time::Duration;

use kube::api::Api;
use kube::{Resource, ResourceExt};
use tracing::{info, warn};

use k8s_openapi::api::core::v1::Namespace;

use crate::api::{ComputeAllocation, SlurmCluster};
use crate::slurm::{RestClient, SlurmApi};

use super::context::Context;
use super::identity::parse_comment;
use super::job_lookup::{self, Listing};

/// Default: one sweep in this many reads the whole job table (at the default 300 s
/// between sweeps: once an hour).
pub const FULL_SWEEP_EVERY: u64 = 12;

/// Whether sweep number `n` (0 = the first after start) reads the whole table.
pub fn full_sweep(n: u64, every: u64) -> bool {
    every != 0 && n.is_multiple_of(every)
}

/// Sweeps the cluster now and then, until the context goes away.
pub async fn sweep_forever(
    cluster: String,
    cluster_uid: String,
    client: Arc<RestClient>,
    ctx: Weak<Context>,
) {
    // A restarted controller cleans up soon, not after a full period.
    let mut delay = Duration::from_secs(5);
    let mut n: u64 = 0;
    loop {
        tokio::time::sleep(delay).await;
        let Some(ctx) = ctx.upgrade() else { return };
        delay = ctx.settings.orphan_sweep;
        let full = full_sweep(n, ctx.settings.orphan_full_sweep_every);
        n = n.wrapping_add(1);
        match sweep(&cluster, &cluster_uid, &client, &ctx, full).await {
            Ok(0) => {}
            Ok(n) => info!(%cluster, cancelled = n, "cancelled orphaned jobs"),
            Err(e) => warn!(%cluster, error = %e, "orphan sweep failed; trying again later"),
        }
    }
}

/// Whether `user` is the SLURM user `namespace` maps to on this cluster. A namespace
/// that is gone (its orphans outlive it) can no longer say: then any user the cluster
/// maps to counts.
async fn is_mapped_user(
    ctx: &Context,
    handle: Option<&super::context::ClusterHandle>,
    namespace: &str,
    user: &str,
) -> bool {
    let Some(handle) = handle else {
        return false;
    };
    if user.is_empty() {
        return false;
    }
    match Api::<Namespace>::all(ctx.client.clone())
        .get_opt(namespace)
        .await
    {
        Ok(Some(ns)) => super::request::slurm_user(
            namespace,
            ns.annotations(),
            &handle.spec,
            handle.token_user.as_deref(),
        )
        .is_ok_and(|mapped| mapped == user),
        Ok(None) => handle.sweep_users().iter().any(|u| u == user),
        // Unknown now: leave the job for the next sweep rather than cancel a stranger's.
        Err(_) => false,
    }
}

/// A warning event on the SlurmCluster (see `events.rs` for where those go).
async fn cluster_event(ctx: &Context, cluster: &str, reason: &str, message: &str) {
    if let Ok(Some(sc)) = Api::<SlurmCluster>::all(ctx.client.clone())
        .get_opt(cluster)
        .await
    {
        ctx.events
            .warning(&sc.object_ref(&()), reason, message)
            .await;
    }
}

/// One sweep (`full`: read the whole table); returns how many jobs were cancelled.
pub async fn sweep(
    cluster: &str,
    cluster_uid: &str,
    client: &RestClient,
    ctx: &Context,
    full: bool,
) -> Result<usize, String> {
    let handle = ctx.clusters.get(cluster);
    let users = match (&handle, full) {
        (Some(h), false) => h.sweep_users(),
        _ => vec![],
    };
    // Jobs the poller follows belong to live allocations: no need to read them again.
    let known = |id: u64| handle.as_ref().is_some_and(|h| h.poller.is_tracked(id));
    let (jobs, listing) = job_lookup::unfinished_jobs(client, &users, &[], &known)
        .await
        .map_err(|e| e.to_string())?;
    ctx.metrics
        .job_lookup(cluster, "orphan_sweep", listing.label());
    if listing == Listing::WholeTable && !full {
        info!(%cluster, "accounting could not list our jobs; this sweep read the whole job table");
    }
    let mut cancelled = 0;
    for job in jobs {
        let parsed = job
            .comment
            .as_deref()
            .map(parse_comment)
            .unwrap_or_default();
        let Some(owner) = parsed.owner else {
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
        // Any SLURM user can name a job and write our tag into its comment: only a job
        // whose tag we signed, of the user the owner's namespace maps to, is ours to cancel.
        let signed = parsed
            .mac
            .as_deref()
            .is_some_and(|mac| ctx.tag_key.verify(&owner, mac));
        let forged = if !signed {
            Some("no valid signature of this controller's (forged, or from before the job tag key existed)".to_owned())
        } else if !is_mapped_user(ctx, handle.as_deref(), &owner.namespace, &user).await {
            Some(format!(
                "runs as SLURM user {user:?}, which that namespace does not map to"
            ))
        } else {
            None
        };
        if let Some(why) = forged {
            let message = format!(
                "ignored job {} ({}): it carries the tag of ComputeAllocation {}/{} but {why}; it was left alone",
                job.id, job.name, owner.namespace, owner.name
            );
            warn!(%cluster, job = job.id, "{message}");
            ctx.metrics.forged_job(cluster, "orphan_sweep");
            cluster_event(ctx, cluster, "ForgedJobIgnored", &message).await;
            continue;
        }
        let message = format!(
            "cancelled orphaned job {} (ComputeAllocation {}/{} with UID {} no longer exists)",
            job.id, owner.namespace, owner.name, owner.uid
        );
        match client.cancel(&user, job.id).await {
            Ok(_) => {
                cancelled += 1;
                warn!(%cluster, job = job.id, "{message}");
                cluster_event(ctx, cluster, "OrphanCancelled", &message).await;
            }
            Err(e) => warn!(%cluster, job = job.id, error = %e, "could not cancel an orphaned job"),
        }
    }
    Ok(cancelled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_sweep_and_every_nth_read_the_whole_table() {
        let full: Vec<u64> = (0..30).filter(|n| full_sweep(*n, 12)).collect();
        assert_eq!(full, vec![0, 12, 24]);
        assert!((0..30).all(|n| !full_sweep(n, 0)), "0 turns them off");
    }
}
