//! The ComputeAllocation reconciler: one SLURM batch job running one Jupyter server.
//!
//! Level-triggered and idempotent: each pass reads the object, the job (from the
//! cluster's batched poller) and the server, and moves one step. Safe to crash between
//! any two lines: a job submitted just before a crash is found again by its name and
//! comment and adopted, never submitted twice.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use crate::api::conditions::{self, FALSE, TRUE};
use crate::api::{
    AllocationPhase, ComputeAllocation, ComputeAllocationStatus, DEFAULT_MAX_RESTARTS,
    RestartPolicy, SlurmCluster,
};
use crate::jupyter::JupyterServer;
use crate::slurm::{CancelOutcome, SlurmApi, SlurmError};

use super::allocation_state::{Probe, counts_for_quota, hold_ready, job_status, observe};
use super::context::{ClusterHandle, Context};
use super::endpoint::{EndpointChoice, EndpointPolicy, choose_endpoint, moved_endpoint};
use super::error::ReconcileError;
use super::identity::{self, JobOwner, parse_comment};
use super::invalid;
use super::stores::{self, GuardedAllocation};
use super::{job_lookup, request, script, writes};
use crate::api::membership;

/// Finalizer that cancels the job before the allocation goes away.
pub const FINALIZER: &str = "slurmlab.io/cancel-job";
/// The one Secret per namespace that holds its allocations' Jupyter tokens, one key per
/// allocation (its name). One fixed name lets RBAC grant the gateway exactly these
/// Secrets (`resourceNames`), never the SLURM JWT key or anything else.
pub const TOKEN_SECRET: &str = "slurmlab-jupyter-tokens";
/// Key of the token in a Secret of an allocation's own (made by releases before 0.2).
pub const TOKEN_KEY: &str = "token";
const CONDITION_VALID: &str = "Valid";
const CONDITION_READY: &str = "Ready";
const CONDITION_SLURM: &str = "SlurmReachable";
/// False while the job reports an endpoint other than the pinned one.
const CONDITION_ENDPOINT: &str = "EndpointTrusted";
/// How often a settled allocation is looked at again without any event.
const RESYNC: Duration = Duration::from_secs(60);

/// Test hook: `SLURMLAB_CRASH_AT=after-submit` kills the process right after a submit,
/// before the status records the job, so tests can prove the job is adopted, not
/// submitted twice; `after-claim` right after the attempt is claimed, before anything is
/// submitted. Does nothing unless that variable is set.
fn crash_point(name: &str) {
    if std::env::var("SLURMLAB_CRASH_AT").as_deref() == Ok(name) {
        eprintln!("SLURMLAB_CRASH_AT={name}: aborting");
        std::process::abort();
    }
}

/// The key holding `allocation`'s token in Secret `secret` (its status names the Secret).
pub fn token_key<'a>(secret: &str, allocation: &'a str) -> &'a str {
    if secret == TOKEN_SECRET {
        allocation
    } else {
        TOKEN_KEY
    }
}

/// The Jupyter token of `allocation`, kept in Secret `ns/secret`; `None` when the Secret
/// has no key for it. (The controller's reconcilers go through [`Context::jupyter_token`],
/// which keeps it; the gateway reads it this way.)
pub async fn read_jupyter_token(
    client: &kube::Client,
    ns: &str,
    secret: &str,
    allocation: &str,
) -> Result<Option<String>, kube::Error> {
    let s = Api::<Secret>::namespaced(client.clone(), ns)
        .get(secret)
        .await?;
    let key = token_key(secret, allocation);
    Ok(s.data.and_then(|d| {
        d.get(key)
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
    }))
}

/// Of `allocations`, those on `cluster` other than `except` that count for its quota.
/// One that cannot be decoded counts: it may hold a job.
fn active_on(allocations: &[Arc<GuardedAllocation>], cluster: &str, except: &str) -> usize {
    allocations
        .iter()
        .filter(|a| a.name_any() != except)
        .filter(|a| match &a.0 {
            Ok(a) => {
                a.spec.cluster_ref == cluster && a.status.as_ref().is_some_and(counts_for_quota)
            }
            Err(_) => true,
        })
        .count()
}

/// The field manager that owns one allocation's entries in the shared token Secret, so
/// applies for different allocations never touch each other's keys.
fn token_manager(uid: &str) -> String {
    format!("slurmlab.io/token-{uid}")
}

pub async fn reconcile(
    guarded: Arc<GuardedAllocation>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let alloc = match &guarded.0 {
        Ok(alloc) => alloc,
        Err(invalid) => {
            if invalid.metadata.deletion_timestamp.is_some() {
                let owner = ObjectRef::new(invalid.metadata.name.as_deref().unwrap_or_default())
                    .within(invalid.metadata.namespace.as_deref().unwrap_or_default());
                ctx.release_jobs_of(&owner);
            }
            return invalid::handle::<ComputeAllocation>(&ctx, FINALIZER, invalid).await;
        }
    };
    // Counts (sessions, quota) come from the caches: never from a half-filled one.
    ctx.stores
        .ready()
        .await
        .map_err(|e| ReconcileError::Other(e.to_string()))?;
    let started = Instant::now();
    let result = Reconcile::new(alloc, &ctx).run().await;
    ctx.metrics
        .reconciled("ComputeAllocation", result.is_ok(), started.elapsed());
    let uid = alloc.uid().unwrap_or_default();
    ctx.invalid.forget(&uid);
    if result.is_ok() {
        ctx.retries.succeeded(&uid);
    }
    let key = format!(
        "{}/{}",
        alloc.namespace().unwrap_or_default(),
        alloc.name_any()
    );
    if alloc.meta().deletion_timestamp.is_some() {
        ctx.metrics.allocation_phase(&key, None);
    }
    result
}

/// One pass over one allocation.
struct Reconcile<'a> {
    alloc: &'a ComputeAllocation,
    ctx: &'a Arc<Context>,
    ns: String,
    name: String,
    api: Api<ComputeAllocation>,
    before: ComputeAllocationStatus,
    status: ComputeAllocationStatus,
    generation: Option<i64>,
    /// Reason of the phase-change event, when more precise than the phase's name.
    event_reason: Option<&'static str>,
}

impl<'a> Reconcile<'a> {
    fn new(alloc: &'a ComputeAllocation, ctx: &'a Arc<Context>) -> Self {
        let ns = alloc.namespace().unwrap_or_default();
        let before = alloc.status.clone().unwrap_or_default();
        Self {
            alloc,
            ctx,
            api: Api::namespaced(ctx.client.clone(), &ns),
            name: alloc.name_any(),
            ns,
            status: before.clone(),
            before,
            generation: alloc.metadata.generation,
            event_reason: None,
        }
    }

    async fn run(mut self) -> Result<Action, ReconcileError> {
        if self.alloc.meta().deletion_timestamp.is_some() {
            return self.finalize().await;
        }
        if writes::add_finalizer(&self.api, self.alloc, FINALIZER).await? {
            return Ok(Action::await_change());
        }
        self.status.observed_generation = self.generation;
        let action = self.step().await;
        self.save().await?;
        action
    }

    fn object_ref(&self) -> k8s_openapi::api::core::v1::ObjectReference {
        self.alloc.object_ref(&())
    }

    fn set_condition(&mut self, type_: &str, ok: bool, reason: &str, message: &str) {
        let status = if ok { TRUE } else { FALSE };
        conditions::set_condition(
            &mut self.status.conditions,
            conditions::condition(type_, status, reason, message, self.generation),
        );
    }

    /// Writes the status if it changed, and emits an event for a new phase.
    async fn save(&mut self) -> Result<(), ReconcileError> {
        let key = format!("{}/{}", self.ns, self.name);
        self.ctx
            .metrics
            .allocation_phase(&key, Some(&format!("{:?}", self.status.phase)));
        if self.status == self.before {
            return Ok(());
        }
        writes::apply_status(&self.api, &self.name, "ComputeAllocation", &self.status).await?;
        if self.status.phase != self.before.phase {
            let message = self.status.message.clone().unwrap_or_default();
            let reason = self
                .event_reason
                .map_or_else(|| format!("{:?}", self.status.phase), str::to_owned);
            info!(allocation = %key, phase = %reason, "{message}");
            match self.status.phase {
                AllocationPhase::Failed => {
                    self.ctx
                        .events
                        .warning(&self.object_ref(), &reason, message)
                        .await
                }
                _ => {
                    self.ctx
                        .events
                        .normal(&self.object_ref(), &reason, message)
                        .await
                }
            }
        }
        Ok(())
    }

    /// Moves the allocation one step; the status is saved afterwards whatever happens.
    async fn step(&mut self) -> Result<Action, ReconcileError> {
        let cluster_name = self.alloc.spec.cluster_ref.clone();
        let Some(handle) = self.ctx.clusters.get(&cluster_name) else {
            let exists = Api::<SlurmCluster>::all(self.ctx.client.clone())
                .get_opt(&cluster_name)
                .await?
                .is_some();
            let (reason, message) = if exists {
                (
                    "ClusterNotReady",
                    format!("waiting for SlurmCluster {cluster_name} to become reachable"),
                )
            } else {
                (
                    "ClusterNotFound",
                    format!(
                        "SlurmCluster {cluster_name} does not exist: create it or fix spec.clusterRef"
                    ),
                )
            };
            self.set_condition(CONDITION_VALID, exists, reason, &message);
            self.status.message = Some(message);
            // A cluster that exists connects within seconds (e.g. right after a restart).
            return Ok(Action::requeue(Duration::from_secs(if exists {
                2
            } else {
                10
            })));
        };
        let job_id = self.status.job_id();
        match job_id {
            // Ended for good (a restart clears the job id): nothing to follow any more.
            Some(id) if self.status.phase.is_final() => {
                handle.poller.untrack(id);
                self.ctx.disown_job(&handle.name, id);
                Ok(Action::await_change())
            }
            Some(id) => self.track(&handle, id).await,
            None => self.submit(&handle).await,
        }
    }

    /// No job yet: validate, then adopt an existing job of ours or submit one.
    async fn submit(&mut self, handle: &Arc<ClusterHandle>) -> Result<Action, ReconcileError> {
        let invalid_for_this_spec = self.status.phase == AllocationPhase::Failed
            && self.before.observed_generation == self.generation
            && conditions::find(&self.status.conditions, CONDITION_VALID)
                .is_some_and(|c| c.status == FALSE);
        if self.status.phase.is_final()
            && (invalid_for_this_spec || self.before.observed_generation == self.generation)
        {
            // Ended (or refused) for this spec: wait for a spec change.
            return Ok(Action::await_change());
        }
        if let Some(after) = &self.status.restart_after {
            let wait = after.0.as_second() - Timestamp::now().as_second();
            if wait > 0 {
                return Ok(Action::requeue(Duration::from_secs(wait as u64)));
            }
        }
        let cluster = &handle.spec;
        let resolved = match request::resolve(&self.alloc.spec, cluster) {
            Ok(r) => r,
            Err(message) => return Ok(self.refuse("Invalid", message)),
        };
        let namespace = Api::<Namespace>::all(self.ctx.client.clone())
            .get(&self.ns)
            .await?;
        let user = match request::slurm_user(
            &self.ns,
            namespace.annotations(),
            cluster,
            handle.token_user.as_deref(),
        ) {
            Ok(u) => u,
            Err(message) => return Ok(self.refuse("NoSlurmUser", message)),
        };
        if let Some(why) = handle.hidden_jobs_of(&user) {
            // Not a refusal of this spec: the admin fixes the cluster, the probe sees it.
            let message = format!("waiting for SlurmCluster {}: {why}", handle.name);
            self.set_condition(CONDITION_SLURM, false, "JobsInvisible", &message);
            self.status.phase = AllocationPhase::Pending;
            self.status.message = Some(message);
            return Ok(Action::requeue(Duration::from_secs(30)));
        }
        let attempt = self.status.restarts.max(0);
        let claimed = self.status.submit_claim == Some(attempt);
        // A quota counts claimed submissions, not jobs seen: counting and claiming happen
        // under the namespace's lock (held until this claim is written), so a burst of
        // allocations gets exactly the room there is. An allocation that holds a claim
        // already (a crash after claiming) was counted when it claimed.
        let mut quota_guard = None;
        if let Some(max) = cluster.limits.max_allocations_per_namespace
            && !claimed
        {
            let guard = self
                .ctx
                .quota_lock(&self.ns, &self.alloc.spec.cluster_ref)
                .lock_owned()
                .await;
            let active = if *guard {
                self.active_allocations_listed(&self.alloc.spec.cluster_ref)
                    .await?
            } else {
                self.active_allocations_on(&self.alloc.spec.cluster_ref)
            };
            quota_guard = Some(guard);
            if active >= usize::try_from(max).unwrap_or(0) {
                let message = format!(
                    "namespace {} already has {active} active allocations on {} (limit {max}); waiting for one to end",
                    self.ns, self.alloc.spec.cluster_ref
                );
                self.set_condition(CONDITION_VALID, false, "QuotaExceeded", &message);
                self.status.phase = AllocationPhase::Pending;
                self.status.message = Some(message);
                return Ok(Action::requeue(Duration::from_secs(30)));
            }
        }
        self.set_condition(
            CONDITION_VALID,
            true,
            "Valid",
            "the request is within the cluster's limits",
        );
        let token = self.ensure_token_secret().await?;
        let nonce = match (claimed, &self.status.submit_nonce) {
            (true, Some(n)) => n.clone(),
            _ => identity::new_nonce().map_err(ReconcileError::Other)?,
        };
        let owner = JobOwner {
            namespace: self.ns.clone(),
            name: self.name.clone(),
            uid: self.alloc.uid().unwrap_or_default(),
            attempt: attempt as u32,
            cluster_uid: handle.uid.clone(),
            nonce,
        };

        // An earlier reconcile claimed this attempt and may have submitted it (then
        // crashed, or lost the answer or the status write): look for its job first. A
        // fresh attempt is claimed and written before the submit, so it needs no lookup.
        handle.note_user(&user);
        let existing = if claimed {
            // Claims this attempt (forged or not) ...
            let tagged = |j: &crate::slurm::JobInfo| {
                j.comment
                    .as_deref()
                    .and_then(|c| parse_comment(c).owner)
                    .is_some_and(|o| o.same_object(&owner) && o.attempt == owner.attempt)
            };
            // ... and is the very submission claimed, signed with our key.
            let key = &self.ctx.tag_key;
            let genuine = |j: &crate::slurm::JobInfo| {
                j.comment
                    .as_deref()
                    .and_then(|c| key.authentic_owner(c))
                    .is_some_and(|o| o == owner)
            };
            let found = job_lookup::find_attempt(
                &*handle.client,
                &user,
                &owner.job_name(),
                &tagged,
                &genuine,
            )
            .await;
            match found {
                Ok(search) => {
                    self.ctx
                        .metrics
                        .job_lookup(&handle.name, "adoption", search.listing.label());
                    self.report_forged(&handle.name, &user, &search.forged)
                        .await;
                    search.job
                }
                Err(e) => return Ok(self.slurm_unavailable(e)),
            }
        } else {
            self.status.submit_claim = Some(attempt);
            self.status.submit_nonce = Some(owner.nonce.clone());
            let written =
                writes::apply_status(&self.api, &self.name, "ComputeAllocation", &self.status)
                    .await?;
            // The claim is written; once the cache shows it, it counts for the next
            // reconcile in the namespace.
            if let Some(mut guard) = quota_guard.take() {
                let key = ObjectRef::new(&self.name).within(&self.ns);
                *guard = !stores::catch_up(
                    &self.ctx.stores.allocations,
                    &key,
                    written.as_deref(),
                    stores::CATCH_UP_BOUND,
                )
                .await;
            }
            crash_point("after-claim");
            None
        };
        let (job_id, how) = match existing {
            Some(job) => (job.id, "Adopted"),
            None => {
                let template = &cluster.job_template;
                let comment = owner.comment(&self.ctx.tag_key);
                let batch = script::render(template, &owner, &comment);
                let job = request::job_spec(
                    &resolved,
                    &self.alloc.spec,
                    cluster,
                    owner.job_name(),
                    comment,
                    batch,
                    &token,
                );
                match handle.client.submit(&user, &job).await {
                    Ok(id) => {
                        crash_point("after-submit");
                        (id, "Submitted")
                    }
                    Err(e @ SlurmError::Rejected { .. }) => {
                        return Ok(self.refuse(
                            "SubmitRejected",
                            format!("{e}; fix the spec (partition, account, qos, resources)"),
                        ));
                    }
                    Err(e) => return Ok(self.slurm_unavailable(e)),
                }
            }
        };
        let message = match how {
            "Adopted" => format!("adopted job {job_id} submitted earlier for this allocation"),
            _ => format!(
                "submitted job {job_id} as SLURM user {user} (partition {}, {} CPUs, {} minutes)",
                resolved.partition.as_deref().unwrap_or("default"),
                resolved.cpus,
                resolved.time_limit_minutes
            ),
        };
        self.event_reason = Some(how);
        self.set_condition(CONDITION_SLURM, true, "Reachable", "slurmrestd answers");
        self.status.slurm = Some(job_status(job_id, None, &user));
        self.status.submit_claim = None;
        self.status.submit_nonce = None;
        self.status.token_secret = Some(self.token_secret().to_owned());
        self.status.restart_after = None;
        // A new job: idleness is counted from when it is Ready, and nobody cancelled it.
        self.status.idle_since = None;
        self.status.cancelled_by = None;
        self.status.phase = AllocationPhase::Queued;
        self.status.message = Some(message);
        self.set_condition(CONDITION_READY, false, "Submitted", "the job is queued");
        handle.poller.track(job_id);
        self.ctx
            .own_job(&handle.name, job_id, ObjectRef::from_obj(self.alloc));
        Ok(Action::requeue(RESYNC))
    }

    /// A job exists: follow it through the poller, probe the server, handle endings.
    async fn track(
        &mut self,
        handle: &Arc<ClusterHandle>,
        job_id: u64,
    ) -> Result<Action, ReconcileError> {
        handle.poller.track(job_id);
        self.ctx
            .own_job(&handle.name, job_id, ObjectRef::from_obj(self.alloc));
        let job = handle.poller.latest(job_id);
        let vanished = handle.poller.vanished(job_id);
        if let Some(err) = handle.poller.last_error() {
            // Keep the last known state: a brief outage must not fail anything.
            self.set_condition(CONDITION_SLURM, false, "PollFailed", &err);
            return Ok(Action::requeue(Duration::from_secs(10)));
        }
        self.set_condition(CONDITION_SLURM, true, "Reachable", "slurmrestd answers");
        if job.is_none() && !vanished {
            handle.poller.poke();
            return Ok(Action::requeue(Duration::from_secs(2)));
        }
        let user = self.status.slurm_user().unwrap_or_default().to_owned();
        handle.note_user(&user);
        // The endpoint is untrusted input from the job: decided (strictly parsed, the
        // job's own node, pinned once the server answered) before the token goes anywhere.
        let template = &handle.spec.job_template;
        let pinned = self
            .status
            .endpoint
            .as_deref()
            .and_then(|u| u.strip_prefix("http://"))
            .map(str::to_owned);
        let policy = EndpointPolicy {
            bind_address: template.bind_address.as_deref(),
            node_domain: template.node_domain.as_deref(),
            pinned: pinned.as_deref(),
        };
        let running = job.as_ref().filter(|j| j.state.is_running());
        let reported = running
            .and_then(|j| j.comment.as_deref())
            .and_then(|c| parse_comment(c).endpoint);
        let probe = match running.map(|j| choose_endpoint(reported.as_deref(), j, &policy)) {
            Some(EndpointChoice::Trusted(e)) => self.probe(&e).await,
            _ => Probe::NotTried,
        };
        self.report_endpoint_change(job_id, reported.as_deref(), &policy)
            .await;
        let cancelled_by_us = self.status.cancelled_by.is_some();
        let obs = observe(
            job_id,
            job.as_ref(),
            vanished,
            &probe,
            &policy,
            cancelled_by_us,
        );
        let (obs, missed) = hold_ready(self.before.phase, obs, self.status.missed_probes);
        self.status.missed_probes = missed;
        self.status.slurm = Some(job_status(job_id, job.as_ref(), &user));
        self.status.phase = obs.phase;
        self.status.message = Some(obs.message.clone());
        // Pinned from the first answer until the job changes (a restart clears it).
        if obs.phase == AllocationPhase::Ready && pinned.is_none() {
            self.status.endpoint = obs.endpoint.map(|e| format!("http://{e}"));
        } else if running.is_none() {
            self.status.endpoint = None;
        }
        self.set_condition(
            CONDITION_READY,
            obs.phase == AllocationPhase::Ready,
            &obs.reason,
            &obs.message,
        );

        self.status.sessions = self.count_sessions();

        match obs.phase {
            AllocationPhase::Ready => self.idle_check(handle, job_id, &user).await,
            AllocationPhase::Completed | AllocationPhase::Failed => {
                handle.poller.untrack(job_id);
                self.ctx.disown_job(&handle.name, job_id);
                Ok(self.maybe_restart(&obs.reason))
            }
            // Probing a starting server is cheap (it is not slurmctld): look often.
            AllocationPhase::Starting => Ok(Action::requeue(Duration::from_millis(300))),
            _ => Ok(Action::requeue(RESYNC)),
        }
    }

    /// Sessions of this namespace holding a place on this allocation (from the cache).
    fn count_sessions(&self) -> i32 {
        let sessions = self.ctx.stores.sessions_in(&self.ns);
        let n = membership::places_taken(
            sessions.iter().filter_map(|s| s.0.as_ref().ok()),
            &self.name,
            None,
        );
        i32::try_from(n).unwrap_or(i32::MAX)
    }

    /// Cancels a Ready allocation that has served no session for `idleTimeout`.
    async fn idle_check(
        &mut self,
        handle: &Arc<ClusterHandle>,
        job_id: u64,
        user: &str,
    ) -> Result<Action, ReconcileError> {
        if self.status.sessions > 0 {
            self.status.idle_since = None;
            return Ok(Action::requeue(RESYNC));
        }
        let since = self
            .status
            .idle_since
            .get_or_insert_with(|| Time(Timestamp::now()))
            .0
            .as_second();
        let Some(timeout) = self
            .alloc
            .spec
            .idle_timeout
            .as_ref()
            .map(|d| d.to_std())
            .transpose()?
        else {
            return Ok(Action::requeue(RESYNC));
        };
        let idle_for = (Timestamp::now().as_second() - since).max(0) as u64;
        if idle_for < timeout.as_secs() {
            return Ok(Action::requeue(
                Duration::from_secs(timeout.as_secs() - idle_for).min(RESYNC),
            ));
        }
        let message = format!(
            "no session for {}; cancelling job {job_id} (spec.idleTimeout)",
            self.alloc
                .spec
                .idle_timeout
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default()
        );
        match handle.client.cancel(user, job_id).await {
            Ok(_) => {
                self.cancelled("IdleTimeout", message).await;
                Ok(Action::requeue(Duration::from_secs(2)))
            }
            Err(e) => Ok(self.slurm_unavailable(e)),
        }
    }

    /// Jobs that carry this allocation's tag under another SLURM user: a warning event
    /// and a metric each; they are left alone (not ours to adopt or cancel).
    async fn report_forged(&self, cluster: &str, user: &str, forged: &[crate::slurm::JobInfo]) {
        for job in forged {
            let job_user = job.user.as_deref().unwrap_or("(unknown)");
            let why = if job_user == user {
                "its tag is not signed with this controller's key for the claimed submission"
                    .to_owned()
            } else {
                format!("it runs as SLURM user {job_user}, not {user}")
            };
            let message = format!(
                "ignored job {} ({}): it carries this allocation's tag but {why}; it was not adopted and is left alone",
                job.id, job.name
            );
            warn!(cluster, job = job.id, "{message}");
            self.ctx.metrics.forged_job(cluster, "adoption");
            self.ctx
                .events
                .warning(&self.object_ref(), "ForgedJobIgnored", &message)
                .await;
        }
    }

    /// slurmlab itself cancelled the job (`why`: IdleTimeout, Deletion): its end will read
    /// as Completed; an event says why.
    async fn cancelled(&mut self, why: &str, message: String) {
        self.ctx
            .events
            .normal(&self.object_ref(), why, &message)
            .await;
        self.status.cancelled_by = Some(why.to_owned());
        self.status.phase = AllocationPhase::Terminating;
        self.status.message = Some(message);
        self.status.endpoint = None;
    }

    /// After a failure with `restartPolicy: OnFailure`: schedule a resubmission.
    fn maybe_restart(&mut self, reason: &str) -> Action {
        let spec = &self.alloc.spec;
        let max = spec.max_restarts.unwrap_or(DEFAULT_MAX_RESTARTS);
        if self.status.phase != AllocationPhase::Failed
            || spec.restart_policy != RestartPolicy::OnFailure
        {
            return Action::await_change();
        }
        if self.status.restarts >= max {
            let message = format!(
                "{} (no restart left: {} of {max} used)",
                self.status.message.clone().unwrap_or_default(),
                self.status.restarts
            );
            self.status.message = Some(message);
            return Action::await_change();
        }
        self.status.restarts += 1;
        self.status.idle_since = None;
        let backoff = Duration::from_secs((5u64 << (self.status.restarts - 1).min(6)).min(300));
        let at = Timestamp::now().as_second() + backoff.as_secs() as i64;
        self.status.restart_after = Timestamp::from_second(at).ok().map(Time);
        let message = format!(
            "{}; resubmitting in {} s (restart {} of {max}, restartPolicy OnFailure)",
            self.status.message.clone().unwrap_or_default(),
            backoff.as_secs(),
            self.status.restarts
        );
        self.status.phase = AllocationPhase::Pending;
        self.status.message = Some(message);
        self.status.endpoint = None;
        if let Some(slurm) = &mut self.status.slurm {
            // Keep the ended job's state visible, but forget its id: a new one comes.
            slurm.job_id = None;
        }
        warn!(allocation = %format!("{}/{}", self.ns, self.name), reason, "restarting after a failure");
        Action::requeue(backoff)
    }

    /// The request is refused for this spec: Failed, nothing submitted.
    fn refuse(&mut self, reason: &str, message: String) -> Action {
        self.set_condition(CONDITION_VALID, false, reason, &message);
        self.status.phase = AllocationPhase::Failed;
        self.status.message = Some(message);
        Action::await_change()
    }

    /// slurmrestd is down or refuses us: keep the state, say why, retry.
    fn slurm_unavailable(&mut self, e: SlurmError) -> Action {
        warn!(allocation = %format!("{}/{}", self.ns, self.name), error = %e, "slurmrestd unavailable");
        self.set_condition(CONDITION_SLURM, false, e.kind(), &e.to_string());
        self.status.message = Some(format!("waiting for slurmrestd: {e}"));
        Action::requeue(Duration::from_secs(10))
    }

    /// A job that reports an endpoint other than its pinned one: a condition, and a
    /// Warning event the first time (the rewrite itself is never followed).
    async fn report_endpoint_change(
        &mut self,
        job_id: u64,
        reported: Option<&str>,
        policy: &EndpointPolicy<'_>,
    ) {
        let Some(pinned) = policy.pinned else {
            return;
        };
        let Some(moved) = moved_endpoint(reported, policy) else {
            self.set_condition(
                CONDITION_ENDPOINT,
                true,
                "Pinned",
                "the job's server is where it first answered",
            );
            return;
        };
        let message = format!(
            "job {job_id} now reports {moved}, but its server was pinned at {pinned}; the change is ignored"
        );
        if !conditions::is_false(&self.status.conditions, CONDITION_ENDPOINT) {
            warn!(allocation = %format!("{}/{}", self.ns, self.name), %moved, "a job rewrote its endpoint after Ready; ignored");
            self.ctx
                .events
                .warning(&self.object_ref(), "EndpointChangeRefused", &message)
                .await;
        }
        self.set_condition(CONDITION_ENDPOINT, false, "EndpointChangeRefused", &message);
    }

    async fn probe(&self, endpoint: &str) -> Probe {
        let token = match self.read_token().await {
            Ok(t) => t,
            Err(e) => return Probe::Failed(e.to_string()),
        };
        let server =
            match JupyterServer::new(format!("http://{endpoint}"), token, Duration::from_secs(3)) {
                Ok(s) => s,
                Err(e) => return Probe::Failed(e.to_string()),
            };
        match server.status().await {
            Ok(_) => Probe::Answered,
            Err(crate::jupyter::JupyterError::Unreachable { .. }) => {
                Probe::Failed("not accepting connections yet".into())
            }
            Err(e) => Probe::Failed(e.to_string()),
        }
    }

    /// The Secret holding this allocation's token: the one its status names (an older
    /// release's own Secret), else the namespace's shared one.
    fn token_secret(&self) -> &str {
        self.status.token_secret.as_deref().unwrap_or(TOKEN_SECRET)
    }

    async fn read_token(&self) -> Result<String, ReconcileError> {
        let uid = self.alloc.uid().unwrap_or_default();
        self.ctx
            .jupyter_token(&self.ns, self.token_secret(), &self.name, &uid)
            .await
    }

    /// This allocation's entry in the namespace's token Secret, and an owner reference to
    /// it (the Secret goes with the last allocation); the token is made once.
    async fn ensure_token_secret(&self) -> Result<String, ReconcileError> {
        if let Ok(token) = self.read_token().await {
            return Ok(token);
        }
        let token = identity::random_hex(24)
            .map_err(|e| ReconcileError::Other(format!("cannot make a Jupyter token: {e}")))?;
        self.apply_token_entry(Some(&token)).await?;
        Ok(token)
    }

    /// Server-side apply of this allocation's fields in the shared token Secret, as a field
    /// manager of its own: `token` `None` drops its key and keeps its owner reference.
    async fn apply_token_entry(&self, token: Option<&str>) -> Result<(), ReconcileError> {
        let uid = self.alloc.uid().unwrap_or_default();
        let owner = OwnerReference {
            api_version: "slurmlab.io/v1alpha1".into(),
            kind: "ComputeAllocation".into(),
            name: self.name.clone(),
            uid: uid.clone(),
            controller: None,
            block_owner_deletion: None,
        };
        let mut secret = json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": TOKEN_SECRET,
                "namespace": self.ns,
                "labels": {"app.kubernetes.io/managed-by": "slurmlab"},
                "ownerReferences": [owner],
            },
            "type": "Opaque",
        });
        if let Some(t) = token {
            use base64::Engine;
            let encoded = base64::engine::general_purpose::STANDARD.encode(t);
            secret["data"] = json!({ self.name.as_str(): encoded });
        }
        let api: Api<Secret> = Api::namespaced(self.ctx.client.clone(), &self.ns);
        api.patch(
            TOKEN_SECRET,
            &PatchParams::apply(&token_manager(&uid)).force(),
            &Patch::Apply(secret),
        )
        .await?;
        Ok(())
    }

    /// [`Self::active_allocations_on`] read from the API server (after the cache lagged).
    async fn active_allocations_listed(&self, cluster: &str) -> Result<usize, ReconcileError> {
        let api: Api<GuardedAllocation> = Api::namespaced(self.ctx.client.clone(), &self.ns);
        let listed: Vec<_> = api
            .list(&Default::default())
            .await?
            .items
            .into_iter()
            .map(Arc::new)
            .collect();
        Ok(active_on(&listed, cluster, &self.name))
    }

    /// The namespace's other allocations on `cluster` that hold a job or a claim to
    /// submit one, and have not ended, from the cache (a claim waits for the cache to
    /// show it before the quota lock is released, so the next count includes it). One
    /// that cannot be decoded counts: it may hold a job.
    fn active_allocations_on(&self, cluster: &str) -> usize {
        active_on(
            &self.ctx.stores.allocations_in(&self.ns),
            cluster,
            &self.name,
        )
    }

    /// Deletion: cancel the job, wait (bounded) for SLURM to confirm, release.
    async fn finalize(mut self) -> Result<Action, ReconcileError> {
        if !self.alloc.finalizers().iter().any(|f| f == FINALIZER) {
            return Ok(Action::await_change());
        }
        let job_id = self.status.job_id();
        let user = self.status.slurm_user().unwrap_or_default().to_owned();
        let handle = self.ctx.clusters.get(&self.alloc.spec.cluster_ref);
        if let (Some(id), Some(handle)) = (job_id, &handle) {
            let done = match handle.client.job(id).await {
                Ok(job) if job.state.is_finished() => true,
                Ok(_) => {
                    if self.status.cancelled_by.is_none() {
                        match handle.client.cancel(&user, id).await {
                            Ok(CancelOutcome::Unknown) => {}
                            Ok(_) => {
                                let m = format!(
                                    "cancelling job {id} because the allocation is being deleted"
                                );
                                self.cancelled("Deletion", m).await;
                                self.save().await?;
                            }
                            Err(e) => warn!(job = id, error = %e, "cancelling failed; will retry"),
                        }
                    }
                    false
                }
                Err(SlurmError::UnknownJob { .. }) => true,
                Err(e) => {
                    warn!(job = id, error = %e, "cannot check the job while deleting");
                    false
                }
            };
            if !done && !self.cancel_wait_over() {
                return Ok(Action::requeue(Duration::from_secs(2)));
            }
            if !done {
                let m = format!(
                    "job {id} did not end within {} s of the cancel; releasing the allocation anyway (check `squeue -j {id}`; the orphan sweep cancels it again)",
                    self.ctx.settings.cancel_wait.as_secs()
                );
                self.ctx
                    .events
                    .warning(&self.object_ref(), "CancelTimeout", &m)
                    .await;
            }
            handle.poller.untrack(id);
            self.ctx.disown_job(&handle.name, id);
        } else if job_id.is_some() && !self.cancel_wait_over() {
            // The cluster is not connected (yet): give it a moment before giving up.
            return Ok(Action::requeue(Duration::from_secs(2)));
        }
        // The job is gone: so is the point of its token (best effort; the Secret itself goes
        // with the namespace's last allocation).
        if self.token_secret() == TOKEN_SECRET
            && let Err(e) = self.apply_token_entry(None).await
        {
            warn!(error = %e, "cannot drop the allocation's token entry");
        }
        writes::remove_finalizer(&self.api, self.alloc, FINALIZER).await?;
        Ok(Action::await_change())
    }

    fn cancel_wait_over(&self) -> bool {
        let Some(deleted) = &self.alloc.meta().deletion_timestamp else {
            return true;
        };
        let waited = Timestamp::now().as_second() - deleted.0.as_second();
        waited >= self.ctx.settings.cancel_wait.as_secs() as i64
    }
}
