//! The Kubernetes side of sessions, always as the caller: pick or create an allocation,
//! create a JupyterSession, wait for it (reporting where SLURM has the job), list, delete.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, PostParams};
use kube::core::DeserializeGuard;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedSender;

use super::GatewayError;
use super::identity::Caller;
use super::names;
use crate::api::membership;
use crate::api::{
    AllocationPhase, CONDITION_REACHABLE, ComputeAllocation, ComputeAllocationSpec,
    DEFAULT_MAX_SESSIONS, JupyterSession, JupyterSessionSpec, NotebookMode, NotebookSpec,
    RestoreStatus, SessionPhase, SlurmCluster,
};

/// Label: which caller a gateway-made object belongs to (a digest of the user name).
pub const OWNER_LABEL: &str = "slurmlab.io/owner";
/// Annotation: the caller's user name in full.
pub const OWNER_ANNOTATION: &str = "slurmlab.io/owner-name";
/// Annotation: a digest of the resource request an allocation was made for.
pub const REQUEST_ANNOTATION: &str = "slurmlab.io/request";
/// Label on everything the gateway creates.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "slurmlab-gateway");

/// Resources for a new allocation; unset fields come from the profile, then the
/// SlurmCluster's defaults.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourceRequest {
    /// SLURM partition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
    /// CPUs for the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<i32>,
    /// Memory, e.g. "8Gi".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    /// GPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus: Option<i32>,
    /// Wall time, e.g. "2h" or "1h30m".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_limit: Option<String>,
    /// SLURM account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// SLURM QOS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qos: Option<String>,
}

impl ResourceRequest {
    /// Fields set here win over `base`.
    fn over(&self, base: &ResourceRequest) -> ResourceRequest {
        ResourceRequest {
            partition: self.partition.clone().or_else(|| base.partition.clone()),
            cpus: self.cpus.or(base.cpus),
            memory: self.memory.clone().or_else(|| base.memory.clone()),
            gpus: self.gpus.or(base.gpus),
            time_limit: self.time_limit.clone().or_else(|| base.time_limit.clone()),
            account: self.account.clone().or_else(|| base.account.clone()),
            qos: self.qos.clone().or_else(|| base.qos.clone()),
        }
    }
}

/// How new allocations are made.
#[derive(Clone, Debug, Default)]
pub struct SessionDefaults {
    /// The SlurmCluster to use; when unset, the only one there is.
    pub cluster: Option<String>,
    /// Named resource profiles agents can ask for.
    pub profiles: BTreeMap<String, ResourceRequest>,
    /// Idle timeout of allocations the gateway creates (so they do not linger).
    pub allocation_idle_timeout: Option<String>,
    /// Idle timeout of the kernels of sessions the gateway creates.
    pub session_idle_timeout: Option<String>,
    /// How long a start waits for the session to be Ready.
    pub start_timeout: Duration,
}

/// Which notebook a new session gets.
#[derive(Clone, Debug)]
pub enum NotebookChoice {
    New,
    Resume(String),
    Continue(String),
}

/// What a start asks for.
#[derive(Clone, Debug)]
pub struct StartRequest {
    pub experiment_name: String,
    pub namespace: String,
    pub notebook: NotebookChoice,
    pub profile: Option<String>,
    pub resources: Option<ResourceRequest>,
    pub wait: Option<Duration>,
}

/// A session that reached Ready.
#[derive(Clone, Debug, Serialize)]
pub struct StartedSession {
    pub session_id: String,
    pub notebook_path: String,
    pub allocation: String,
    pub job_id: Option<u64>,
    pub node: Option<String>,
    pub reused_allocation: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restore: Option<RestoreStatus>,
}

/// `namespace/name` of a session, as tools name it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SessionId {
    pub namespace: String,
    pub name: String,
}

impl SessionId {
    /// Reads `namespace/name`, or `name` in the default namespace.
    pub fn parse(id: &str, default_namespace: &str) -> Result<Self, GatewayError> {
        let (namespace, name) = match id.trim().split_once('/') {
            Some((ns, name)) => (ns.to_owned(), name.to_owned()),
            None => (default_namespace.to_owned(), id.trim().to_owned()),
        };
        for part in [&namespace, &name] {
            if !names::is_dns_label(part) {
                return Err(GatewayError::Invalid(format!(
                    "session_id {id:?} is not `namespace/name` (lowercase letters, digits and '-')"
                )));
            }
        }
        Ok(Self { namespace, name })
    }
}

impl std::fmt::Display for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Session operations against the API server.
pub struct Sessions {
    own: Client,
    defaults: SessionDefaults,
}

/// The phase listings give an object the gateway cannot decode.
const UNREADABLE: &str = "Unreadable";

fn unreadable_message(kind: &str, error: &str) -> String {
    format!("slurmlab cannot read this {kind} ({error}); fix it with kubectl edit or delete it")
}

/// The objects of a listing that decode, and the names and errors of those that do not
/// (one bad object must not hide the others).
fn decoded<K>(items: Vec<DeserializeGuard<K>>) -> (Vec<K>, Vec<(String, String)>) {
    let mut good = Vec::with_capacity(items.len());
    let mut bad = Vec::new();
    for DeserializeGuard(item) in items {
        match item {
            Ok(k) => good.push(k),
            Err(e) => bad.push((e.metadata.name.unwrap_or_default(), e.error)),
        }
    }
    (good, bad)
}

impl Sessions {
    pub fn new(own: Client, defaults: SessionDefaults) -> Self {
        Self { own, defaults }
    }

    /// The partitions of `cluster` (default: the gateway's cluster, else every one), as the
    /// controller last read them into the SlurmClusters' status.
    pub async fn partitions(&self, cluster: Option<&str>) -> Result<Vec<Value>, GatewayError> {
        let api: Api<SlurmCluster> = Api::all(self.own.clone());
        let wanted = cluster.or(self.defaults.cluster.as_deref());
        let clusters = match wanted {
            Some(name) => vec![
                api.get(name)
                    .await
                    .map_err(|e| GatewayError::from_kube(e, &format!("SlurmCluster {name}")))?,
            ],
            None => {
                api.list(&ListParams::default())
                    .await
                    .map_err(|e| GatewayError::Kube(e.to_string()))?
                    .items
            }
        };
        Ok(clusters
            .into_iter()
            .map(|c| {
                let st = c.status.clone().unwrap_or_default();
                let reachable = crate::api::conditions::find(&st.conditions, CONDITION_REACHABLE)
                    .is_some_and(|r| r.status == crate::api::conditions::TRUE);
                json!({
                    "cluster": c.name_any(),
                    "reachable": reachable,
                    "as_of": st.last_ping.map(|t| t.0.to_string()),
                    "partitions": st.partitions,
                })
            })
            .collect())
    }

    /// The names of the resource profiles agents may ask for.
    pub fn profile_names(&self) -> Vec<&str> {
        self.defaults.profiles.keys().map(String::as_str).collect()
    }

    /// Creates a session (reusing one of the caller's allocations with room, else making
    /// one) and waits until it is Ready, sending progress lines to `progress`.
    pub async fn start(
        &self,
        client: Client,
        caller: &Caller,
        req: StartRequest,
        progress: UnboundedSender<String>,
    ) -> Result<StartedSession, GatewayError> {
        let ns = req.namespace.as_str();
        let resources = self.resources(&req)?;
        let request_digest =
            names::digest(&serde_json::to_string(&resources).unwrap_or_default(), 8);
        let allocations: Api<ComputeAllocation> = Api::namespaced(client.clone(), ns);
        let sessions: Api<JupyterSession> = Api::namespaced(client.clone(), ns);
        let (allocation, reused) = match self.reusable(&client, ns, caller, &request_digest).await?
        {
            Some(name) => (name, true),
            None => {
                let spec = self.allocation_spec(&resources).await?;
                let alloc = ComputeAllocation {
                    metadata: owned_meta(names::with_suffix("mcp"), caller, Some(&request_digest)),
                    spec,
                    status: None,
                };
                let made = allocations
                    .create(&PostParams::default(), &alloc)
                    .await
                    .map_err(|e| GatewayError::from_kube_write(e, "creating the allocation"))?;
                (made.name_any(), false)
            }
        };
        let _ = progress.send(format!(
            "{} allocation {ns}/{allocation}",
            if reused { "reusing" } else { "created" }
        ));
        let notebook = match &req.notebook {
            NotebookChoice::New => NotebookSpec {
                path: Some(names::notebook_file(&req.experiment_name)),
                ..Default::default()
            },
            NotebookChoice::Resume(src) => NotebookSpec {
                mode: NotebookMode::Resume,
                source: Some(src.clone()),
                ..Default::default()
            },
            NotebookChoice::Continue(src) => NotebookSpec {
                mode: NotebookMode::Continue,
                source: Some(src.clone()),
                ..Default::default()
            },
        };
        let session = JupyterSession {
            metadata: owned_meta(
                names::with_suffix(&names::slug(&req.experiment_name)),
                caller,
                None,
            ),
            spec: JupyterSessionSpec {
                allocation_ref: Some(allocation.clone()),
                allocation_template: None,
                kernel: "python3".into(),
                notebook,
                idle_timeout: self
                    .defaults
                    .session_idle_timeout
                    .clone()
                    .map(crate::api::fields::Duration),
            },
            status: None,
        };
        let made = sessions
            .create(&PostParams::default(), &session)
            .await
            .map_err(|e| GatewayError::from_kube_write(e, "creating the session"))?;
        let wait = req.wait.unwrap_or(self.defaults.start_timeout);
        self.wait_ready(&sessions, &allocations, made, reused, wait, progress)
            .await
    }

    fn resources(&self, req: &StartRequest) -> Result<ResourceRequest, GatewayError> {
        let profile = match &req.profile {
            None => ResourceRequest::default(),
            Some(p) => self.defaults.profiles.get(p).cloned().ok_or_else(|| {
                GatewayError::Invalid(format!(
                    "unknown profile {p:?}; known profiles: [{}]",
                    self.profile_names().join(", ")
                ))
            })?,
        };
        Ok(req.resources.clone().unwrap_or_default().over(&profile))
    }

    /// One of the caller's live allocations made for the same request, with room.
    async fn reusable(
        &self,
        client: &Client,
        ns: &str,
        caller: &Caller,
        request_digest: &str,
    ) -> Result<Option<String>, GatewayError> {
        let allocations: Api<DeserializeGuard<ComputeAllocation>> =
            Api::namespaced(client.clone(), ns);
        let sessions: Api<DeserializeGuard<JupyterSession>> = Api::namespaced(client.clone(), ns);
        let mine = ListParams::default().labels(&format!("{OWNER_LABEL}={}", caller.owner_label()));
        // Objects that cannot be read are passed over (the controller reports them).
        let (list, _) = decoded(
            allocations
                .list(&mine)
                .await
                .map_err(|e| GatewayError::from_kube_write(e, "listing your allocations"))?
                .items,
        );
        let (all_sessions, _) = decoded(
            sessions
                .list(&ListParams::default())
                .await
                .map_err(|e| GatewayError::from_kube_write(e, "listing your sessions"))?
                .items,
        );
        let mut best: Option<(u8, String)> = None;
        for a in list {
            if a.metadata.deletion_timestamp.is_some()
                || a.annotations().get(REQUEST_ANNOTATION).map(String::as_str)
                    != Some(request_digest)
            {
                continue;
            }
            let phase = a.status.as_ref().map(|s| s.phase).unwrap_or_default();
            // Prefer the allocation closest to Ready.
            let rank = match phase {
                AllocationPhase::Ready => 0,
                AllocationPhase::Starting => 1,
                AllocationPhase::Queued => 2,
                AllocationPhase::Pending => 3,
                _ => continue,
            };
            let max = a.spec.max_sessions.unwrap_or(DEFAULT_MAX_SESSIONS) as usize;
            let name = a.name_any();
            let used = all_sessions
                .iter()
                .filter(|s| membership::spoken_for(s, &name))
                .count();
            if used < max && best.as_ref().is_none_or(|(r, _)| rank < *r) {
                best = Some((rank, name));
            }
        }
        Ok(best.map(|(_, n)| n))
    }

    async fn allocation_spec(
        &self,
        resources: &ResourceRequest,
    ) -> Result<ComputeAllocationSpec, GatewayError> {
        let cluster = match &self.defaults.cluster {
            Some(c) => c.clone(),
            None => {
                // Cluster-scoped and admin-owned: discovered with the gateway's identity.
                let clusters: Api<SlurmCluster> = Api::all(self.own.clone());
                let list = clusters
                    .list(&ListParams::default())
                    .await
                    .map_err(|e| GatewayError::Kube(format!("listing SlurmClusters: {e}")))?;
                match list.items.as_slice() {
                    [one] => one.name_any(),
                    [] => {
                        return Err(GatewayError::Failed(
                            "no SlurmCluster exists: an admin must create one (or start the gateway with --cluster)".into(),
                        ));
                    }
                    many => {
                        let names: Vec<String> = many.iter().map(|c| c.name_any()).collect();
                        return Err(GatewayError::Failed(format!(
                            "several SlurmClusters exist ({}): start the gateway with --cluster to pick one",
                            names.join(", ")
                        )));
                    }
                }
            }
        };
        let mut spec = serde_json::to_value(resources).unwrap_or_else(|_| json!({}));
        spec["clusterRef"] = json!(cluster);
        if let Some(idle) = &self.defaults.allocation_idle_timeout {
            spec["idleTimeout"] = json!(idle);
        }
        serde_json::from_value(spec).map_err(|e| GatewayError::Invalid(format!("resources: {e}")))
    }

    /// Follows the just-created `session` and its allocation until Ready, reporting each
    /// change (and at least every 10 s) on `progress`.
    async fn wait_ready(
        &self,
        sessions: &Api<JupyterSession>,
        allocations: &Api<ComputeAllocation>,
        mut session: JupyterSession,
        reused: bool,
        wait: Duration,
        progress: UnboundedSender<String>,
    ) -> Result<StartedSession, GatewayError> {
        // Session changes arrive through a watch (no polling delay on the way to Ready);
        // the allocation, whose queue state is the news while SLURM holds the job, is
        // re-read at least every second.
        const ALLOCATION_REFRESH: Duration = Duration::from_secs(1);
        const HEARTBEAT: Duration = Duration::from_secs(10);
        let id = &SessionId {
            namespace: session.namespace().unwrap_or_default(),
            name: session.name_any(),
        };
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + wait;
        let mut last: Option<(String, Instant)> = None;
        let config = watcher::Config::default().fields(&format!("metadata.name={}", id.name));
        let mut events = watcher(sessions.clone(), config)
            .default_backoff()
            .applied_objects()
            .boxed();
        loop {
            let status = session.status.clone().unwrap_or_default();
            let alloc_name = status
                .allocation
                .clone()
                .or_else(|| session.spec.allocation_ref.clone())
                .unwrap_or_default();
            let alloc = allocations.get_opt(&alloc_name).await.ok().flatten();
            match status.phase {
                SessionPhase::Ready => {
                    let job_id = alloc.as_ref().and_then(|a| a.status.as_ref()?.job_id());
                    return Ok(StartedSession {
                        session_id: id.to_string(),
                        notebook_path: status.notebook_path.unwrap_or_default(),
                        allocation: alloc_name,
                        job_id,
                        node: status.node,
                        reused_allocation: reused,
                        restore: status.restore,
                    });
                }
                SessionPhase::Failed | SessionPhase::Terminated | SessionPhase::Lost => {
                    return Err(GatewayError::Failed(format!(
                        "session {id} is {:?}: {}",
                        status.phase,
                        status.message.unwrap_or_default()
                    )));
                }
                _ => {}
            }
            let line = describe_wait(&session, alloc.as_ref());
            let due = match &last {
                None => true,
                Some((prev, at)) => *prev != line || at.elapsed() >= HEARTBEAT,
            };
            if due {
                let _ = progress.send(line.clone());
                last = Some((line.clone(), Instant::now()));
            }
            if started.elapsed() >= wait {
                return Err(GatewayError::Timeout(format!(
                    "session {id} is not Ready after {}s: {line}. The session and allocation \
                     {alloc_name} stay: use the session once list_sessions shows it Ready, \
                     shut it down with shutdown_session, or call start again later (it reuses \
                     the allocation).",
                    wait.as_secs()
                )));
            }
            tokio::select! {
                event = events.next() => match event {
                    Some(Ok(s)) => session = s,
                    // A watch that cannot run (e.g. no watch permission) degrades to reads.
                    Some(Err(_)) | None => {
                        tokio::time::sleep(Duration::from_millis(250)).await;
                        session = sessions
                            .get(&id.name)
                            .await
                            .map_err(|e| GatewayError::from_kube(e, &format!("session {id}")))?;
                    }
                },
                _ = tokio::time::sleep(ALLOCATION_REFRESH) => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    /// The caller's sessions in `namespace`.
    pub async fn list_sessions(
        &self,
        client: Client,
        namespace: &str,
    ) -> Result<Vec<Value>, GatewayError> {
        let api: Api<DeserializeGuard<JupyterSession>> = Api::namespaced(client, namespace);
        let list = api.list(&ListParams::default()).await.map_err(|e| {
            GatewayError::from_kube_write(e, &format!("listing sessions in {namespace}"))
        })?;
        let (sessions, unreadable) = decoded(list.items);
        Ok(sessions
            .iter()
            .map(|s| {
                let st = s.status.clone().unwrap_or_default();
                json!({
                    "session_id": format!("{namespace}/{}", s.name_any()),
                    "phase": st.phase,
                    "allocation": st.allocation.or_else(|| s.spec.allocation_ref.clone()),
                    "node": st.node,
                    "notebook_path": st.notebook_path,
                    "kernel_state": st.execution_state,
                    "message": st.message,
                })
            })
            .chain(unreadable.iter().map(|(name, error)| {
                json!({
                    "session_id": format!("{namespace}/{name}"),
                    "phase": UNREADABLE,
                    "message": unreadable_message("JupyterSession", error),
                })
            }))
            .collect())
    }

    /// The caller's allocations in `namespace`, with the time their job has left.
    pub async fn list_allocations(
        &self,
        client: Client,
        namespace: &str,
    ) -> Result<Vec<Value>, GatewayError> {
        let api: Api<DeserializeGuard<ComputeAllocation>> = Api::namespaced(client, namespace);
        let list = api.list(&ListParams::default()).await.map_err(|e| {
            GatewayError::from_kube_write(e, &format!("listing allocations in {namespace}"))
        })?;
        let (allocations, unreadable) = decoded(list.items);
        let now = k8s_openapi::jiff::Timestamp::now();
        Ok(allocations
            .iter()
            .map(|a| {
                let st = a.status.clone().unwrap_or_default();
                let slurm = st.slurm.clone().unwrap_or_default();
                let left = (st.phase == AllocationPhase::Ready
                    || st.phase == AllocationPhase::Starting)
                    .then(|| {
                        slurm
                            .end_time
                            .as_ref()
                            .map(|t| (t.0.as_second() - now.as_second()).max(0))
                    })
                    .flatten();
                json!({
                    "allocation": format!("{namespace}/{}", a.name_any()),
                    "phase": st.phase,
                    "job_id": slurm.job_id,
                    "job_state": slurm.state,
                    "reason": slurm.reason,
                    "node": slurm.node,
                    "sessions": st.sessions,
                    "max_sessions": a.spec.max_sessions.unwrap_or(DEFAULT_MAX_SESSIONS),
                    "seconds_left": left,
                    "message": st.message,
                })
            })
            .chain(unreadable.iter().map(|(name, error)| {
                json!({
                    "allocation": format!("{namespace}/{name}"),
                    "phase": UNREADABLE,
                    "message": unreadable_message("ComputeAllocation", error),
                })
            }))
            .collect())
    }

    /// Deletes a session (its kernel is shut down by the controller; the notebook stays).
    pub async fn delete(&self, client: Client, id: &SessionId) -> Result<(), GatewayError> {
        let api: Api<JupyterSession> = Api::namespaced(client, &id.namespace);
        api.delete(&id.name, &DeleteParams::default())
            .await
            .map(|_| ())
            .map_err(|e| GatewayError::from_kube(e, &format!("session {id}")))
    }
}

/// Metadata for an object the gateway makes for `caller`.
fn owned_meta(name: String, caller: &Caller, request: Option<&str>) -> ObjectMeta {
    let mut labels = BTreeMap::from([
        (OWNER_LABEL.to_owned(), caller.owner_label()),
        (MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned()),
    ]);
    labels.retain(|_, v| !v.is_empty());
    let mut annotations = BTreeMap::from([(OWNER_ANNOTATION.to_owned(), caller.name().to_owned())]);
    if let Some(r) = request {
        annotations.insert(REQUEST_ANNOTATION.to_owned(), r.to_owned());
    }
    ObjectMeta {
        name: Some(name),
        labels: Some(labels),
        annotations: Some(annotations),
        ..Default::default()
    }
}

/// One line saying where a starting session stands (what the agent sees as progress).
pub fn describe_wait(session: &JupyterSession, alloc: Option<&ComputeAllocation>) -> String {
    let st = session.status.clone().unwrap_or_default();
    if st.phase == SessionPhase::Restoring
        && let Some(r) = &st.restore
    {
        return format!("restoring the notebook: {}/{} cells", r.executed, r.total);
    }
    let Some(alloc) = alloc else {
        return format!("session {:?}: waiting for its allocation", st.phase);
    };
    let ast = alloc.status.clone().unwrap_or_default();
    let slurm = ast.slurm.clone().unwrap_or_default();
    let job = slurm
        .job_id
        .map(|j| format!("job {j}"))
        .unwrap_or_else(|| "job".to_owned());
    match ast.phase {
        AllocationPhase::Pending => format!(
            "allocation {} pending{}",
            alloc.name_any(),
            ast.message.map(|m| format!(": {m}")).unwrap_or_default()
        ),
        AllocationPhase::Queued => format!(
            "{job} pending: {}",
            slurm.reason.unwrap_or_else(|| "queued".into())
        ),
        AllocationPhase::Starting => format!(
            "{job} running on {}; waiting for Jupyter",
            slurm.node.unwrap_or_else(|| "?".into())
        ),
        AllocationPhase::Ready => format!("{job} ready; starting the kernel"),
        other => format!(
            "allocation {} is {other:?}{}",
            alloc.name_any(),
            ast.message.map(|m| format!(": {m}")).unwrap_or_default()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_name_a_namespace_and_a_session() {
        let id = SessionId::parse("team-a/exp-1abcd", "default").unwrap();
        assert_eq!(
            (id.namespace.as_str(), id.name.as_str()),
            ("team-a", "exp-1abcd")
        );
        assert_eq!(SessionId::parse("exp", "ns").unwrap().to_string(), "ns/exp");
        for bad in ["", "a/b/c", "../x", "A/b", "ns/"] {
            assert!(SessionId::parse(bad, "ns").is_err(), "{bad}");
        }
    }

    #[test]
    fn requests_fill_gaps_from_the_profile() {
        let profile = ResourceRequest {
            partition: Some("gpu".into()),
            cpus: Some(8),
            ..Default::default()
        };
        let asked = ResourceRequest {
            cpus: Some(2),
            ..Default::default()
        };
        let merged = asked.over(&profile);
        assert_eq!(merged.partition.as_deref(), Some("gpu"));
        assert_eq!(merged.cpus, Some(2));
    }
}
