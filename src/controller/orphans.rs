//! The orphan sweep: a job slurmlab submitted whose ComputeAllocation no longer exists
//! (deleted while the controller was down, with its finalizer removed by hand) is
//! cancelled, with a log line and an event on the SlurmCluster. So is a stray: a job of
//! an allocation that exists but is not its current job nor its claimed submission (a
//! second job from a failure window), once it is older than [`STRAY_GRACE`], with an
//! event on the allocation too.
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
use kube::core::DeserializeGuard;
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

/// Default: a job younger than this is never taken for a stray (its allocation's status
/// may not name it yet).
pub const STRAY_GRACE: Duration = Duration::from_secs(300);

/// What the sweep knows of a job of an allocation that exists.
pub struct JobOfAllocation<'a> {
    pub id: u64,
    /// The nonce its tag carries.
    pub nonce: &'a str,
    pub submitted: Option<i64>,
    /// The allocation's current job, and its claimed submission's nonce.
    pub current: Option<u64>,
    pub claimed: Option<&'a str>,
}

/// Whether the job strays from its allocation: neither its current job nor its claimed
/// submission, and older than `grace` at `now` (pure; unit-tested).
pub fn is_stray(job: &JobOfAllocation<'_>, now: i64, grace: Duration) -> bool {
    if job.current == Some(job.id) || (!job.nonce.is_empty() && job.claimed == Some(job.nonce)) {
        return false;
    }
    let grace = i64::try_from(grace.as_secs()).unwrap_or(i64::MAX);
    job.submitted
        .is_some_and(|t| now.saturating_sub(t) >= grace)
}

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
    let now = k8s_openapi::jiff::Timestamp::now().as_second();
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
        let api: Api<DeserializeGuard<ComputeAllocation>> =
            Api::namespaced(ctx.client.clone(), &owner.namespace);
        let found = api.get_opt(&owner.name).await.map_err(|e| e.to_string())?;
        let found = found.filter(|a| a.uid().as_deref() == Some(owner.uid.as_str()));
        let alive = match found {
            Some(DeserializeGuard(Ok(alloc))) => Some(alloc),
            // Its allocation exists but cannot be read: which job is current is unknown,
            // so the job is left alone (the allocation is reported as invalid).
            Some(DeserializeGuard(Err(_))) => continue,
            None => None,
        };
        let stray_of = match &alive {
            Some(alloc) => {
                let st = alloc.status.clone().unwrap_or_default();
                let current = st.job_id();
                let seen = JobOfAllocation {
                    id: job.id,
                    nonce: &owner.nonce,
                    submitted: job.submit_time,
                    current,
                    claimed: st.submit_nonce.as_deref(),
                };
                if !is_stray(&seen, now, ctx.settings.stray_grace) {
                    continue;
                }
                Some((alloc, current))
            }
            None => None,
        };
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
        let (reason, message) = match &stray_of {
            None => (
                "OrphanCancelled",
                format!(
                    "cancelled orphaned job {} (ComputeAllocation {}/{} with UID {} no longer exists)",
                    job.id, owner.namespace, owner.name, owner.uid
                ),
            ),
            Some((_, current)) => (
                "StrayJobCancelled",
                format!(
                    "cancelled stray job {} of ComputeAllocation {}/{} (attempt {}): its current job is {}; a second job from a failure window",
                    job.id,
                    owner.namespace,
                    owner.name,
                    owner.attempt,
                    current.map_or_else(|| "none".to_owned(), |j| j.to_string())
                ),
            ),
        };
        match client.cancel(&user, job.id).await {
            Ok(_) => {
                cancelled += 1;
                warn!(%cluster, job = job.id, "{message}");
                ctx.metrics.swept_job(
                    cluster,
                    if stray_of.is_some() {
                        "stray"
                    } else {
                        "orphan"
                    },
                );
                cluster_event(ctx, cluster, reason, &message).await;
                if let Some((alloc, _)) = &stray_of {
                    ctx.events
                        .warning(&alloc.object_ref(&()), reason, &message)
                        .await;
                }
            }
            Err(e) => warn!(%cluster, job = job.id, error = %e, "could not cancel a job of ours"),
        }
    }
    Ok(cancelled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stray_is_an_old_enough_job_that_is_neither_current_nor_claimed() {
        let now = 1_000 + STRAY_GRACE.as_secs() as i64;
        let stray = |id, nonce, submitted, current, claimed| {
            let job = JobOfAllocation {
                id,
                nonce,
                submitted,
                current,
                claimed,
            };
            is_stray(&job, now, STRAY_GRACE)
        };
        let old = Some(1_000);
        assert!(stray(7, "n7", old, Some(8), Some("n8")));
        assert!(stray(7, "n7", old, None, None));
        // The current job, and the claimed submission not yet recorded, are not strays.
        assert!(!stray(8, "n8", old, Some(8), None));
        assert!(!stray(9, "n9", old, Some(8), Some("n9")));
        // Too young, or of unknown age: left for a later sweep.
        assert!(!stray(7, "n7", Some(now - 10), Some(8), None));
        assert!(!stray(7, "n7", None, Some(8), None));
        // An empty nonce (tags from before nonces) never matches an empty claim.
        assert!(stray(7, "", old, Some(8), Some("")));
    }

    #[test]
    fn the_first_sweep_and_every_nth_read_the_whole_table() {
        let full: Vec<u64> = (0..30).filter(|n| full_sweep(*n, 12)).collect();
        assert_eq!(full, vec![0, 12, 24]);
        assert!((0..30).all(|n| !full_sweep(n, 0)), "0 turns them off");
    }
}
