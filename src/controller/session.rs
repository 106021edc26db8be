//! The JupyterSession reconciler: one kernel on an allocation's Jupyter server, tied to
//! one notebook. Pending until the allocation is Ready, then the kernel is started and
//! the notebook created (New), forked (Continue) or re-executed (Resume); Ready sessions
//! are watched for activity (idle timeout) and for their kernel or allocation going away.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tokio::sync::OwnedMutexGuard;
use tracing::{info, warn};

use crate::api::conditions::{self, FALSE, TRUE};
use crate::api::{
    AllocationPhase, ComputeAllocation, DEFAULT_MAX_SESSIONS, JupyterSession, JupyterSessionStatus,
    NotebookMode, RestoreError, RestoreStatus, SessionPhase,
};
use crate::jupyter::{JupyterError, JupyterServer, KernelChannel, notebook};

use super::context::Context;
use super::error::ReconcileError;
use super::stores::{self, GuardedSession};
use super::{invalid, read_jupyter_token, token_key, writes};
use crate::api::membership::{self, owned_allocation_name};

/// Finalizer that shuts the kernel down before the session goes away.
pub const SESSION_FINALIZER: &str = "slurmlab.io/shutdown-kernel";
const CONDITION_READY: &str = "Ready";
/// How often a Ready session's kernel is looked at (activity, liveness).
const ACTIVITY_CHECK: Duration = Duration::from_secs(15);
/// How often a waiting session is looked at again without any event (its allocation's
/// changes wake it sooner).
const RESYNC: Duration = Duration::from_secs(60);
/// Timeout of one notebook cell while restoring.
const RESTORE_CELL_TIMEOUT: Duration = Duration::from_secs(600);

pub async fn reconcile(
    guarded: Arc<GuardedSession>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let session = match &guarded.0 {
        Ok(session) => session,
        Err(invalid) => {
            return invalid::handle::<JupyterSession>(&ctx, SESSION_FINALIZER, invalid).await;
        }
    };
    // Places are counted from the caches: never from a half-filled one.
    ctx.stores
        .ready()
        .await
        .map_err(|e| ReconcileError::Other(e.to_string()))?;
    let started = Instant::now();
    let result = SessionReconcile::new(session, &ctx).run().await;
    ctx.metrics
        .reconciled("JupyterSession", result.is_ok(), started.elapsed());
    let uid = session.uid().unwrap_or_default();
    ctx.invalid.forget(&uid);
    if result.is_ok() {
        ctx.retries.succeeded(&uid);
    }
    result
}

struct SessionReconcile<'a> {
    session: &'a JupyterSession,
    ctx: &'a Arc<Context>,
    ns: String,
    name: String,
    api: Api<JupyterSession>,
    before: JupyterSessionStatus,
    status: JupyterSessionStatus,
    generation: Option<i64>,
    /// Held from counting the allocation's places until this session's admission
    /// (Starting) is written and seen in the cache.
    admission: Option<OwnedMutexGuard<bool>>,
}

impl<'a> SessionReconcile<'a> {
    fn new(session: &'a JupyterSession, ctx: &'a Arc<Context>) -> Self {
        let ns = session.namespace().unwrap_or_default();
        let before = session.status.clone().unwrap_or_default();
        Self {
            session,
            ctx,
            api: Api::namespaced(ctx.client.clone(), &ns),
            name: session.name_any(),
            ns,
            status: before.clone(),
            before,
            generation: session.metadata.generation,
            admission: None,
        }
    }

    async fn run(mut self) -> Result<Action, ReconcileError> {
        if self.session.meta().deletion_timestamp.is_some() {
            return self.finalize().await;
        }
        if writes::add_finalizer(&self.api, self.session, SESSION_FINALIZER).await? {
            return Ok(Action::await_change());
        }
        self.status.observed_generation = self.generation;
        let action = self.step().await;
        self.save().await?;
        action
    }

    async fn save(&mut self) -> Result<(), ReconcileError> {
        if self.status == self.before {
            self.admission = None;
            return Ok(());
        }
        let written =
            writes::apply_status(&self.api, &self.name, "JupyterSession", &self.status).await;
        if let Some(mut admission) = self.admission.take() {
            // The next count of this allocation's places must see this session.
            let key = ObjectRef::new(&self.name).within(&self.ns);
            let seen = match &written {
                Ok(version) => {
                    stores::catch_up(
                        &self.ctx.stores.sessions,
                        &key,
                        version.as_deref(),
                        stores::CATCH_UP_BOUND,
                    )
                    .await
                }
                Err(_) => false,
            };
            *admission = !seen;
        }
        written?;
        if self.status.phase != self.before.phase {
            let message = self.status.message.clone().unwrap_or_default();
            let reason = format!("{:?}", self.status.phase);
            info!(session = %format!("{}/{}", self.ns, self.name), phase = %reason, "{message}");
            let obj = self.session.object_ref(&());
            match self.status.phase {
                SessionPhase::Failed | SessionPhase::Lost => {
                    self.ctx.events.warning(&obj, &reason, message).await
                }
                _ => self.ctx.events.normal(&obj, &reason, message).await,
            }
        }
        self.before = self.status.clone();
        Ok(())
    }

    fn set(&mut self, phase: SessionPhase, reason: &str, message: impl Into<String>) {
        let message = message.into();
        self.status.phase = phase;
        let ready = phase == SessionPhase::Ready;
        conditions::set_condition(
            &mut self.status.conditions,
            conditions::condition(
                CONDITION_READY,
                if ready { TRUE } else { FALSE },
                reason,
                &message,
                self.generation,
            ),
        );
        self.status.message = Some(message);
    }

    async fn step(&mut self) -> Result<Action, ReconcileError> {
        let spec = &self.session.spec;
        if matches!(
            self.status.phase,
            SessionPhase::Terminated | SessionPhase::Failed
        ) {
            return Ok(Action::await_change());
        }
        if spec.notebook.mode != NotebookMode::New && spec.notebook.source.is_none() {
            let mode = format!("{:?}", spec.notebook.mode);
            self.set(SessionPhase::Failed, "Invalid", format!("spec.notebook.source is required when spec.notebook.mode is {mode}: name the notebook to {}", mode.to_lowercase()));
            return Ok(Action::await_change());
        }
        let Some(alloc) = self.allocation().await? else {
            // Its creation (or a fix) wakes this session; the requeue is a fallback.
            return Ok(Action::requeue(RESYNC));
        };
        let alloc_name = alloc.name_any();
        self.status.allocation = Some(alloc_name.clone());
        let alloc_status = alloc.status.clone().unwrap_or_default();

        match alloc_status.phase {
            AllocationPhase::Ready if self.status.kernel_id.is_none() => {
                // Counting the places and writing this session's admission happen under
                // the allocation's lock, so concurrent starts cannot overfill it.
                let admission = self
                    .ctx
                    .admission_lock(&self.ns, &alloc_name)
                    .lock_owned()
                    .await;
                let max = alloc.spec.max_sessions.unwrap_or(DEFAULT_MAX_SESSIONS);
                let used = self.sessions_on(&alloc_name, *admission).await?;
                if used >= usize::try_from(max).unwrap_or(0) {
                    self.set(
                        SessionPhase::Pending,
                        "AllocationFull",
                        format!("allocation {alloc_name} already serves {used} of its {max} sessions (spec.maxSessions); waiting for a place"),
                    );
                    // A place freed changes the allocation's session count, which wakes us.
                    return Ok(Action::requeue(RESYNC));
                }
                self.admission = Some(admission);
            }
            AllocationPhase::Ready => {}
            AllocationPhase::Completed | AllocationPhase::Failed
                if self.status.kernel_id.is_some() =>
            {
                let why = alloc_status.message.clone().unwrap_or_default();
                self.lose(format!("allocation {alloc_name} ended: {why}"));
                return Ok(Action::requeue(Duration::from_secs(30)));
            }
            phase => {
                let why = alloc_status
                    .message
                    .clone()
                    .unwrap_or_else(|| format!("{phase:?}"));
                if self.status.kernel_id.is_some() && self.status.phase != SessionPhase::Lost {
                    self.lose(format!("allocation {alloc_name} is {phase:?}: {why}"));
                } else if self.status.kernel_id.is_none() {
                    self.set(
                        SessionPhase::Pending,
                        "AllocationNotReady",
                        format!("waiting for allocation {alloc_name} ({phase:?}): {why}"),
                    );
                }
                // The allocation's changes wake this session; the requeue is a fallback.
                return Ok(Action::requeue(RESYNC));
            }
        }
        let endpoint = alloc_status.endpoint.clone().unwrap_or_default();
        let token = self
            .token(
                &alloc_status.token_secret.clone().unwrap_or_default(),
                &alloc_name,
                alloc.metadata.uid.as_deref(),
            )
            .await?;
        let server = JupyterServer::new(&endpoint, token, Duration::from_secs(30))?;
        self.status.node = alloc_status.slurm.as_ref().and_then(|s| s.node.clone());
        self.status.token_secret = alloc_status.token_secret.clone();

        match self.status.kernel_id.clone() {
            None => self.start(&server, &endpoint).await,
            Some(kernel_id) => {
                let same_server = self.status.endpoint.as_deref() == Some(endpoint.as_str());
                match server.kernel(&kernel_id).await? {
                    Some(k)
                        if same_server
                            && matches!(
                                self.before.phase,
                                SessionPhase::Starting | SessionPhase::Restoring
                            ) =>
                    {
                        self.resume_start(&server, &k.id).await
                    }
                    Some(k) if same_server => self.watch_activity(&server, k).await,
                    _ if !same_server
                        && alloc.spec.restart_policy == crate::api::RestartPolicy::OnFailure =>
                    {
                        // The allocation came back on a new server: restore by replaying.
                        self.status.kernel_id = None;
                        self.start(&server, &endpoint).await
                    }
                    _ => {
                        self.lose(format!("kernel {kernel_id} is gone from the Jupyter server (it died or the server restarted)"));
                        Ok(Action::requeue(Duration::from_secs(30)))
                    }
                }
            }
        }
    }

    fn lose(&mut self, message: String) {
        self.status.execution_state = Some("dead".into());
        self.set(SessionPhase::Lost, "Lost", message);
    }

    /// The allocation serving this session: the referenced one, or the owned one created
    /// from the template. `None` (with the status saying why) when it does not exist yet.
    async fn allocation(&mut self) -> Result<Option<ComputeAllocation>, ReconcileError> {
        let allocs: Api<ComputeAllocation> = Api::namespaced(self.ctx.client.clone(), &self.ns);
        let spec = &self.session.spec;
        let (name, template) = match (&spec.allocation_ref, &spec.allocation_template) {
            (Some(name), _) => (name.clone(), None),
            (None, Some(template)) => (owned_allocation_name(&self.name), Some(template)),
            (None, None) => return Ok(None),
        };
        match self.ctx.stores.allocation(&self.ns, &name).as_deref() {
            Some(DeserializeGuard(Ok(a))) => return Ok(Some(a.clone())),
            Some(DeserializeGuard(Err(e))) => {
                self.set(SessionPhase::Pending, "AllocationUnreadable", format!("ComputeAllocation {name} cannot be read by the controller ({}); fix or delete it", e.error));
                return Ok(None);
            }
            // Not cached yet (made a moment ago) or absent: ask the API server.
            None => {}
        }
        let found = allocs.get_opt(&name).await?;
        let Some(template) = template else {
            if found.is_none() {
                self.set(SessionPhase::Pending, "AllocationNotFound", format!("ComputeAllocation {name} does not exist in namespace {}: create it or fix spec.allocationRef", self.ns));
            }
            return Ok(found);
        };
        if let Some(a) = found {
            return Ok(Some(a));
        }
        let owner = OwnerReference {
            api_version: "slurmlab.io/v1alpha1".into(),
            kind: "JupyterSession".into(),
            name: self.name.clone(),
            uid: self.session.uid().unwrap_or_default(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        };
        let alloc: ComputeAllocation = serde_json::from_value(json!({
            "apiVersion": "slurmlab.io/v1alpha1", "kind": "ComputeAllocation",
            "metadata": {"name": name, "namespace": self.ns, "ownerReferences": [owner],
                         "labels": {"slurmlab.io/session": self.name}},
            "spec": template,
        }))
        .map_err(|e| ReconcileError::Other(e.to_string()))?;
        let created = match allocs.create(&PostParams::default(), &alloc).await {
            Ok(a) => a,
            Err(kube::Error::Api(s)) if s.code == 409 => allocs.get(&name).await?,
            Err(e) => return Err(e.into()),
        };
        self.ctx
            .events
            .normal(
                &self.session.object_ref(&()),
                "AllocationCreated",
                format!("created ComputeAllocation {name} for this session"),
            )
            .await;
        Ok(Some(created))
    }

    /// Sessions of this namespace holding a place on the allocation (this one excluded):
    /// from the cache, or from the API server when the cache may lag (`from_api`).
    async fn sessions_on(&self, allocation: &str, from_api: bool) -> Result<usize, ReconcileError> {
        let me = Some(self.name.as_str());
        if from_api {
            let api: Api<GuardedSession> = Api::namespaced(self.ctx.client.clone(), &self.ns);
            let list = api.list(&Default::default()).await?;
            let decoded = list.items.iter().filter_map(|s| s.0.as_ref().ok());
            return Ok(membership::places_taken(decoded, allocation, me));
        }
        let cached = self.ctx.stores.sessions_in(&self.ns);
        Ok(membership::places_taken(
            cached.iter().filter_map(|s| s.0.as_ref().ok()),
            allocation,
            me,
        ))
    }

    /// The Jupyter token of `allocation`, kept in Secret `secret`.
    /// The token of `allocation`: kept when its uid is known, else read from the Secret.
    async fn token(
        &self,
        secret: &str,
        allocation: &str,
        uid: Option<&str>,
    ) -> Result<String, ReconcileError> {
        match uid {
            Some(uid) => {
                self.ctx
                    .jupyter_token(&self.ns, secret, allocation, uid)
                    .await
            }
            None => read_jupyter_token(&self.ctx.client, &self.ns, secret, allocation)
                .await?
                .ok_or_else(|| {
                    ReconcileError::Other(format!(
                        "Secret {secret} has no key {}",
                        token_key(secret, allocation)
                    ))
                }),
        }
    }

    /// Starts the kernel, prepares the notebook by mode, restores if asked.
    async fn start(
        &mut self,
        server: &JupyterServer,
        endpoint: &str,
    ) -> Result<Action, ReconcileError> {
        let spec = self.session.spec.clone();
        let restoring_after_restart =
            self.before.phase == SessionPhase::Lost && self.before.notebook_path.is_some();
        let notebook_path = match (restoring_after_restart, spec.notebook.mode) {
            (true, _) => self.before.notebook_path.clone().unwrap_or_default(),
            (false, NotebookMode::New) => {
                let wanted = spec
                    .notebook
                    .path
                    .clone()
                    .unwrap_or_else(|| format!("{}.ipynb", self.name));
                let path = free_path(server, &wanted).await?;
                let nb = notebook::new_notebook(&spec.kernel, &spec.kernel, "python");
                server.put_notebook(&path, &notebook::to_json(&nb)?).await?;
                path
            }
            (false, NotebookMode::Continue) => {
                let source = spec.notebook.source.clone().unwrap_or_default();
                let wanted = spec
                    .notebook
                    .path
                    .clone()
                    .unwrap_or_else(|| continued_name(&source));
                let path = free_path(server, &wanted).await?;
                match server.copy(&source, &path).await {
                    Ok(_) => path,
                    Err(JupyterError::NotFound { .. }) => return Ok(self.fail_missing(&source)),
                    Err(e) => return Err(e.into()),
                }
            }
            (false, NotebookMode::Resume) => spec.notebook.source.clone().unwrap_or_default(),
        };
        let kernel = server
            .start_kernel(&spec.kernel, Some(&notebook_path))
            .await?;
        self.status.kernel_id = Some(kernel.id.clone());
        self.status.notebook_path = Some(notebook_path.clone());
        self.status.endpoint = Some(endpoint.to_owned());
        self.status.execution_state = kernel.execution_state.clone();
        self.set(
            SessionPhase::Starting,
            "KernelStarted",
            format!("kernel {} started for {notebook_path}", kernel.id),
        );
        let replay = restoring_after_restart || spec.notebook.mode == NotebookMode::Resume;
        // A replay is marked before it begins, so a start cut short knows to run it.
        self.status.restore = replay.then(RestoreStatus::default);
        // Record the kernel before anything long, so a crash leaves no unknown kernel.
        self.save().await?;
        self.complete_start(
            server,
            &kernel.id,
            &notebook_path,
            replay,
            restoring_after_restart,
        )
        .await
    }

    /// A start cut short by a controller restart, a lease hand-over or an error (the
    /// phase still Starting or Restoring, the kernel alive on the same server). A replay
    /// that had begun runs again from the first cell on the restarted kernel: part of it
    /// ran, and a cell running when the controller stopped ran on, so going on from the
    /// last counted cell could run one twice. Without a replay the kernel must answer
    /// first. Only then is the session Ready.
    async fn resume_start(
        &mut self,
        server: &JupyterServer,
        kernel_id: &str,
    ) -> Result<Action, ReconcileError> {
        let notebook_path = self.status.notebook_path.clone().unwrap_or_default();
        let replay = self.before.restore.is_some();
        if replay {
            server.restart(kernel_id).await?;
        }
        self.complete_start(server, kernel_id, &notebook_path, replay, false)
            .await
    }

    /// The rest of a start once the kernel runs: the replay if asked, else the kernel's
    /// first answer; then Ready.
    async fn complete_start(
        &mut self,
        server: &JupyterServer,
        kernel_id: &str,
        notebook_path: &str,
        replay: bool,
        restoring_after_restart: bool,
    ) -> Result<Action, ReconcileError> {
        let spec = self.session.spec.clone();
        if !replay {
            // Ready means the kernel answers, not only that its process was spawned.
            let mut channel = KernelChannel::connect(server, kernel_id, None).await?;
            channel.wait_ready(Duration::from_secs(60)).await?;
        }
        if replay {
            match self
                .restore(
                    server,
                    kernel_id,
                    notebook_path,
                    spec.notebook.stop_on_error,
                )
                .await
            {
                Ok(()) => {}
                Err(JupyterError::NotFound { .. }) => return Ok(self.fail_missing(notebook_path)),
                Err(e) => return Err(e.into()),
            }
        }
        let message = match (&self.status.restore, restoring_after_restart) {
            (Some(r), true) => format!(
                "restored on the restarted allocation by replaying {notebook_path} ({} of {} cells, {} errors)",
                r.executed,
                r.total,
                r.errors.len()
            ),
            (Some(r), false) => format!(
                "kernel ready; {notebook_path} restored ({} of {} cells, {} errors)",
                r.executed,
                r.total,
                r.errors.len()
            ),
            _ => format!("kernel {kernel_id} ready; notebook {notebook_path}"),
        };
        self.status.execution_state = Some("idle".into());
        self.status.last_activity = Some(Time(Timestamp::now()));
        self.set(
            SessionPhase::Ready,
            if restoring_after_restart {
                "Restored"
            } else {
                "Ready"
            },
            message,
        );
        Ok(Action::requeue(ACTIVITY_CHECK))
    }

    fn fail_missing(&mut self, path: &str) -> Action {
        self.set(SessionPhase::Failed, "NotebookNotFound", format!("notebook {path} does not exist on the allocation's server: fix spec.notebook.source"));
        Action::await_change()
    }

    /// Re-executes every code cell of the notebook in order, reporting progress.
    async fn restore(
        &mut self,
        server: &JupyterServer,
        kernel_id: &str,
        path: &str,
        stop_on_error: bool,
    ) -> Result<(), JupyterError> {
        let nb = notebook::from_json(&server.get(path, true).await?.content)?;
        let (cells, skipped) = notebook::restorable_cells(&nb);
        let mut progress = RestoreStatus {
            executed: 0,
            total: cells.len() as i32,
            errors: vec![],
        };
        self.status.restore = Some(progress.clone());
        self.set(
            SessionPhase::Restoring,
            "Restoring",
            format!(
                "re-executing {} code cells of {path}{}",
                cells.len(),
                if skipped > 0 {
                    format!(" ({skipped} recorded as cancelled skipped)")
                } else {
                    String::new()
                }
            ),
        );
        let _ = self.save().await;
        let mut channel = KernelChannel::connect(server, kernel_id, None).await?;
        // After a restart (a replay run again) the kernel answers once it is back.
        channel.wait_ready(Duration::from_secs(60)).await?;
        let mut last_save = Instant::now();
        for (index, source) in cells {
            let exec = channel.execute(&source, RESTORE_CELL_TIMEOUT).await?;
            progress.executed += 1;
            if let Some((ename, evalue)) = exec.error() {
                progress.errors.push(RestoreError {
                    cell: index as i32,
                    ename: ename.to_owned(),
                    evalue: evalue.to_owned(),
                });
            }
            self.status.restore = Some(progress.clone());
            let stop = stop_on_error && !progress.errors.is_empty();
            if stop || last_save.elapsed() > Duration::from_secs(1) {
                let _ = self.save().await;
                last_save = Instant::now();
            }
            if stop {
                break;
            }
        }
        Ok(())
    }

    /// A Ready session: follow Jupyter's activity; shut down after `idleTimeout`.
    async fn watch_activity(
        &mut self,
        server: &JupyterServer,
        kernel: crate::jupyter::KernelModel,
    ) -> Result<Action, ReconcileError> {
        self.status.execution_state = kernel.execution_state.clone();
        let last = kernel
            .last_activity
            .as_deref()
            .and_then(|t| t.parse::<Timestamp>().ok());
        if let Some(t) = last {
            self.status.last_activity = Some(Time(t));
        }
        if self.status.phase != SessionPhase::Ready {
            self.set(
                SessionPhase::Ready,
                "Ready",
                format!(
                    "kernel {} ready; notebook {}",
                    kernel.id,
                    self.status.notebook_path.clone().unwrap_or_default()
                ),
            );
        }
        let Some(timeout) = self
            .session
            .spec
            .idle_timeout
            .as_ref()
            .map(|d| d.to_std())
            .transpose()?
        else {
            return Ok(Action::requeue(ACTIVITY_CHECK));
        };
        let idle_for = last
            .map(|t| (Timestamp::now().as_second() - t.as_second()).max(0) as u64)
            .unwrap_or(0);
        let busy = kernel.execution_state.as_deref() == Some("busy");
        if busy || idle_for < timeout.as_secs() {
            let left = Duration::from_secs(timeout.as_secs().saturating_sub(idle_for).max(1));
            return Ok(Action::requeue(left.min(ACTIVITY_CHECK)));
        }
        server.shutdown(&kernel.id).await?;
        self.status.execution_state = Some("dead".into());
        self.set(
            SessionPhase::Terminated,
            "Idle",
            format!(
                "kernel {} shut down after {idle_for} s without activity (spec.idleTimeout)",
                kernel.id
            ),
        );
        Ok(Action::await_change())
    }

    /// Deletion: shut the kernel down (a gone server is fine), release.
    async fn finalize(self) -> Result<Action, ReconcileError> {
        if !self
            .session
            .finalizers()
            .iter()
            .any(|f| f == SESSION_FINALIZER)
        {
            return Ok(Action::await_change());
        }
        if let (Some(kernel), Some(endpoint), Some(secret), Some(allocation)) = (
            &self.status.kernel_id,
            &self.status.endpoint,
            &self.status.token_secret,
            &self.status.allocation,
        ) {
            let shutdown = async {
                let token = self.token(secret, allocation, None).await?;
                let server = JupyterServer::new(endpoint, token, Duration::from_secs(5))?;
                server.shutdown(kernel).await?;
                Ok::<(), ReconcileError>(())
            };
            if let Err(e) = tokio::time::timeout(Duration::from_secs(10), shutdown)
                .await
                .unwrap_or_else(|_| Err(ReconcileError::Other("timed out".into())))
            {
                warn!(session = %self.name, error = %e, "could not shut the kernel down; releasing the session anyway");
            }
        }
        writes::remove_finalizer(&self.api, self.session, SESSION_FINALIZER).await?;
        Ok(Action::await_change())
    }
}

/// `experiments/run1.ipynb` → `experiments/run1_continued.ipynb`.
pub fn continued_name(source: &str) -> String {
    match source.strip_suffix(".ipynb") {
        Some(stem) => format!("{stem}_continued.ipynb"),
        None => format!("{source}_continued.ipynb"),
    }
}

/// `wanted`, or `stem-1.ipynb`, `stem-2.ipynb`, ... whichever does not exist yet.
async fn free_path(server: &JupyterServer, wanted: &str) -> Result<String, JupyterError> {
    if !server.exists(wanted).await? {
        return Ok(wanted.to_owned());
    }
    let stem = wanted.strip_suffix(".ipynb").unwrap_or(wanted);
    for n in 1..1000 {
        let candidate = format!("{stem}-{n}.ipynb");
        if !server.exists(&candidate).await? {
            return Ok(candidate);
        }
    }
    Err(JupyterError::Notebook(format!(
        "no free name next to {wanted}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_for_forks_and_owned_allocations() {
        assert_eq!(continued_name("exp/run1.ipynb"), "exp/run1_continued.ipynb");
        assert_eq!(owned_allocation_name("s"), "s-alloc");
        assert!(
            membership::holds_a_place(SessionPhase::Ready)
                && !membership::holds_a_place(SessionPhase::Lost)
                && !membership::holds_a_place(SessionPhase::Pending)
        );
    }
}
