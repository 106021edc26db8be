//! Ready sessions the gateway drives: each one's Jupyter server, its kernel channel (one
//! execution at a time) and its notebook writer (one per session). Access is
//! checked as the caller before a session is handed out (a GET to read it; a
//! SelfSubjectAccessReview for `create` on `jupytersessions/exec` to run code in it, as
//! `pods/exec` is for pods); the Jupyter token is then read with the gateway's own
//! identity and never leaves this module.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};

use super::GatewayError;
use super::identity::Caller;
use super::record::Recorder;
use super::sessions::SessionId;
use crate::api::{ComputeAllocation, JupyterSession, SessionPhase};
use crate::controller::{read_jupyter_token, token_key};
use crate::jupyter::{JupyterServer, KernelChannel};

/// How long an access check (a GET or an access review as the caller) is trusted.
const ACCESS_TTL: Duration = Duration::from_secs(5);
/// The RBAC subresource that lets a caller run code in a session.
pub const EXEC_SUBRESOURCE: &str = "exec";

/// What a tool needs from the caller on the session it touches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    /// Read it: its notebook, its files (`get` on the JupyterSession).
    Read,
    /// Drive its kernel or write through it: run, edit, upload, interrupt, restart
    /// (`get`, and `create` on `jupytersessions/exec`).
    Exec,
}
/// Timeout of one Jupyter REST call.
const REST_TIMEOUT: Duration = Duration::from_secs(30);

/// One Ready session.
pub struct LiveSession {
    pub id: SessionId,
    uid: String,
    pub kernel_id: String,
    pub notebook_path: String,
    endpoint: String,
    pub server: JupyterServer,
    /// The kernel's websocket; `None` until first used or after it failed.
    pub kernel: tokio::sync::Mutex<Option<KernelChannel>>,
    /// The notebook's one writer.
    pub notebook: Recorder,
    /// When the allocation's SLURM job reaches its time limit (and the kernel ends).
    pub job_ends_at: Option<k8s_openapi::jiff::Timestamp>,
    /// When the session was last handed out (for [`LiveSessions::prune`]).
    last_used: Mutex<Instant>,
}

/// Results warn when less than this is left of the job's time limit.
pub const WALLTIME_WARNING: Duration = Duration::from_secs(15 * 60);

/// Seconds from `now` to `ends_at` (negative once past).
pub fn seconds_left(
    ends_at: k8s_openapi::jiff::Timestamp,
    now: k8s_openapi::jiff::Timestamp,
) -> i64 {
    ends_at.as_second().saturating_sub(now.as_second())
}

/// The warning a result carries when the job ends within [`WALLTIME_WARNING`] of `now`
/// (pure; unit-tested).
pub fn walltime_warning(
    ends_at: k8s_openapi::jiff::Timestamp,
    now: k8s_openapi::jiff::Timestamp,
) -> Option<String> {
    let left = seconds_left(ends_at, now);
    if left > WALLTIME_WARNING.as_secs() as i64 {
        return None;
    }
    Some(if left <= 0 {
        format!(
            "[walltime: the SLURM job reached its time limit at {ends_at}; the kernel ends with it]"
        )
    } else {
        format!(
            "[walltime: the SLURM job ends in {} min (at {ends_at}) and the kernel with it: save what matters (files, the notebook is recorded); a new session gets a new job]",
            (left + 59) / 60
        )
    })
}

impl LiveSession {
    /// The walltime warning for a result now, if the job is close to its end.
    pub fn walltime_warning(&self) -> Option<String> {
        walltime_warning(self.job_ends_at?, k8s_openapi::jiff::Timestamp::now())
    }

    fn touch(&self) {
        *lock(&self.last_used) = Instant::now();
    }

    /// The websocket session the gateway connects to this kernel as: the same in every
    /// gateway process, so one restarted gets the messages the kernel sent meanwhile
    /// (see `KernelChannel::connect`, `reattach`).
    pub fn channel_session(&self) -> String {
        format!("slurmlab-gateway-{}", self.uid)
    }

    /// The kernel channel, connected if needed.
    pub async fn channel<'a>(
        &self,
        slot: &'a mut Option<KernelChannel>,
    ) -> Result<&'a mut KernelChannel, GatewayError> {
        if slot.is_none() {
            let session = self.channel_session();
            *slot =
                Some(KernelChannel::connect(&self.server, &self.kernel_id, Some(&session)).await?);
        }
        slot.as_mut()
            .ok_or_else(|| GatewayError::Failed("kernel channel missing".into()))
    }
}

/// Ready sessions by id, and recent access checks by caller.
pub struct LiveSessions {
    own: Client,
    sessions: Mutex<HashMap<SessionId, Arc<LiveSession>>>,
    checked: Mutex<HashMap<(Caller, SessionId, Access), Instant>>,
}

impl LiveSessions {
    pub fn new(own: Client) -> Self {
        Self {
            own,
            sessions: Mutex::new(HashMap::new()),
            checked: Mutex::new(HashMap::new()),
        }
    }

    /// Drops sessions nobody used for `max_idle` (deleted ones among them); a later call
    /// builds them again. A session a run still holds stays: a second one built beside it
    /// would open a second channel as the same websocket session, and Jupyter closes the
    /// older of two such connections (the run's).
    pub fn prune(&self, max_idle: Duration) -> usize {
        let mut sessions = lock(&self.sessions);
        let before = sessions.len();
        sessions.retain(|_, live| {
            Arc::strong_count(live) > 1 || lock(&live.last_used).elapsed() < max_idle
        });
        lock(&self.checked).retain(|_, at| at.elapsed() < ACCESS_TTL);
        before - sessions.len()
    }

    /// How many Ready sessions the gateway holds.
    pub fn count(&self) -> usize {
        lock(&self.sessions).len()
    }

    /// The Ready session `id`, after checking that `caller` (through `client`, which acts
    /// as the caller) has `access` to it.
    pub async fn get(
        &self,
        client: Client,
        caller: &Caller,
        id: &SessionId,
        access: Access,
    ) -> Result<Arc<LiveSession>, GatewayError> {
        let key = (caller.clone(), id.clone(), access);
        let fresh = lock(&self.checked)
            .get(&key)
            .is_some_and(|at| at.elapsed() < ACCESS_TTL);
        if fresh && let Some(live) = lock(&self.sessions).get(id) {
            live.touch();
            return Ok(live.clone());
        }
        let api: Api<JupyterSession> = Api::namespaced(client.clone(), &id.namespace);
        let session = api
            .get(&id.name)
            .await
            .map_err(|e| GatewayError::from_kube(e, &format!("session {id}")))?;
        if access == Access::Exec {
            may_exec(client.clone(), id).await?;
        }
        let live = self.live(&client, id, &session).await?;
        live.touch();
        let mut checked = lock(&self.checked);
        checked.retain(|_, at| at.elapsed() < ACCESS_TTL);
        checked.insert(key, Instant::now());
        Ok(live)
    }

    /// Forgets a session (deleted, or its kernel replaced).
    pub fn forget(&self, id: &SessionId) {
        lock(&self.sessions).remove(id);
        lock(&self.checked).retain(|(_, s, _), _| s != id);
    }

    async fn live(
        &self,
        client: &Client,
        id: &SessionId,
        session: &JupyterSession,
    ) -> Result<Arc<LiveSession>, GatewayError> {
        let st = session.status.clone().unwrap_or_default();
        if st.phase != SessionPhase::Ready {
            self.forget(id);
            return Err(GatewayError::NotReady(format!(
                "session {id} is {:?}, not Ready{}",
                st.phase,
                st.message.map(|m| format!(": {m}")).unwrap_or_default()
            )));
        }
        let (Some(kernel_id), Some(endpoint), Some(secret), Some(allocation)) =
            (st.kernel_id, st.endpoint, st.token_secret, st.allocation)
        else {
            return Err(GatewayError::NotReady(format!(
                "session {id} is Ready but has no kernel/endpoint yet; retry in a moment"
            )));
        };
        let uid = session.uid().unwrap_or_default();
        if let Some(live) = lock(&self.sessions).get(id)
            && live.uid == uid
            && live.kernel_id == kernel_id
            && live.endpoint == endpoint
        {
            return Ok(live.clone());
        }
        let token = self.token(&id.namespace, &secret, &allocation).await?;
        let server = JupyterServer::new(endpoint.as_str(), token, REST_TIMEOUT)?;
        let notebook_path = st.notebook_path.unwrap_or_default();
        // Read as the caller; without it results only lack the walltime warning.
        let job_ends_at = Api::<ComputeAllocation>::namespaced(client.clone(), &id.namespace)
            .get(&allocation)
            .await
            .ok()
            .and_then(|a| a.status?.slurm?.end_time)
            .map(|t| t.0);
        let live = Arc::new(LiveSession {
            id: id.clone(),
            uid,
            kernel_id,
            notebook_path: notebook_path.clone(),
            endpoint,
            notebook: Recorder::spawn(server.clone(), notebook_path),
            server,
            kernel: tokio::sync::Mutex::new(None),
            job_ends_at,
            last_used: Mutex::new(Instant::now()),
        });
        lock(&self.sessions).insert(id.clone(), live.clone());
        Ok(live)
    }

    /// The Jupyter token, read with the gateway's identity (callers never see it).
    async fn token(
        &self,
        namespace: &str,
        secret: &str,
        allocation: &str,
    ) -> Result<String, GatewayError> {
        read_jupyter_token(&self.own, namespace, secret, allocation)
            .await
            .map_err(|e| {
                GatewayError::Failed(format!(
                    "cannot read the session's token Secret {namespace}/{secret}: {e} (the gateway's identity needs get on it: its service account, or on stdio your kubeconfig user)"
                ))
            })?
            .ok_or_else(|| {
                GatewayError::Failed(format!(
                    "Secret {namespace}/{secret} has no key {}",
                    token_key(secret, allocation)
                ))
            })
    }
}

/// Whether the caller behind `client` may run code in session `id`: one
/// SelfSubjectAccessReview (every authenticated user may create one), so the API server's
/// authorizer decides exactly as it would for a request of the caller's own.
async fn may_exec(client: Client, id: &SessionId) -> Result<(), GatewayError> {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                group: Some(crate::api::GROUP.to_owned()),
                resource: Some("jupytersessions".to_owned()),
                subresource: Some(EXEC_SUBRESOURCE.to_owned()),
                verb: Some("create".to_owned()),
                namespace: Some(id.namespace.clone()),
                name: Some(id.name.clone()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let answer = Api::<SelfSubjectAccessReview>::all(client)
        .create(&PostParams::default(), &review)
        .await
        .map_err(|e| GatewayError::Kube(format!("cannot review access to session {id}: {e}")))?;
    match answer.status {
        Some(st) if st.allowed => Ok(()),
        st => Err(GatewayError::Forbidden(format!(
            "you may read session {id} but not run code in it: that needs create on jupytersessions/{EXEC_SUBRESOURCE} (group {}) in namespace {}{}; ask your platform admin for the slurmlab user role",
            crate::api::GROUP,
            id.namespace,
            st.and_then(|s| s.reason)
                .filter(|r| !r.is_empty())
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        ))),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    #[test]
    fn results_warn_only_when_the_job_is_close_to_its_time_limit() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let at = |s: i64| Timestamp::from_second(1_800_000_000 + s).unwrap();
        assert_eq!(walltime_warning(at(3600), now), None);
        let soon = walltime_warning(at(14 * 60 + 1), now).unwrap();
        assert!(soon.contains("ends in 15 min"), "{soon}");
        assert!(
            walltime_warning(at(-5), now)
                .unwrap()
                .contains("reached its time limit")
        );
    }
}
