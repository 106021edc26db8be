//! `ComputeAllocation`: one SLURM batch job that runs one Jupyter server.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::conditions::Condition;
use super::fields::{Duration, MemoryQuantity};

/// One SLURM batch job running one Jupyter server, on a [`super::SlurmCluster`].
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "slurmlab.io",
    version = "v1alpha1",
    kind = "ComputeAllocation",
    namespaced,
    status = "ComputeAllocationStatus",
    shortname = "alloc",
    category = "slurmlab",
    doc = "A SLURM batch job that runs a Jupyter server for JupyterSessions.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Job", type_ = "string", json_path = ".status.slurm.jobId"),
    printcolumn(name = "State", type_ = "string", json_path = ".status.slurm.state"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.slurm.reason"),
    printcolumn(name = "Node", type_ = "string", json_path = ".status.slurm.node"),
    printcolumn(name = "Sessions", type_ = "integer", json_path = ".status.sessions"),
    printcolumn(
        name = "Cluster",
        type_ = "string",
        json_path = ".spec.clusterRef",
        priority = 1
    ),
    printcolumn(
        name = "Restarts",
        type_ = "integer",
        json_path = ".status.restarts",
        priority = 1
    ),
    printcolumn(
        name = "Message",
        type_ = "string",
        json_path = ".status.message",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ComputeAllocationSpec {
    /// Name of the SlurmCluster to run on.
    #[schemars(length(min = 1))]
    pub cluster_ref: String,
    /// SLURM partition (default: the cluster's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub partition: Option<String>,
    /// SLURM account to charge (default: the cluster's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub account: Option<String>,
    /// SLURM quality of service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub qos: Option<String>,
    /// Number of nodes (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub nodes: Option<i32>,
    /// CPUs for the Jupyter server and its kernels (default: the cluster's default, or 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub cpus: Option<i32>,
    /// Memory per node, e.g. `16Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryQuantity>,
    /// GPUs per node (becomes the generic resource `gpu:N`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1024))]
    pub gpus: Option<i32>,
    /// Generic resources in SLURM syntax, e.g. `gpu:a100:2` (added to `gpus`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub gres: Option<String>,
    /// Wall time, e.g. `30m` or `4h` (default: the cluster's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_limit: Option<Duration>,
    /// SLURM node feature constraint, e.g. `skylake&ib`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub constraint: Option<String>,
    /// SLURM reservation to run in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub reservation: Option<String>,
    /// Most JupyterSessions this allocation serves at once (default 4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_sessions: Option<i32>,
    /// Cancel the job after it has had no session for this long (default: never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<Duration>,
    /// `Never` (default) or `OnFailure`: resubmit after preemption, node failure or walltime.
    #[serde(default)]
    pub restart_policy: RestartPolicy,
    /// Most resubmissions with `restartPolicy: OnFailure` (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub max_restarts: Option<i32>,
    /// Extra environment variables for the job and its kernels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub environment: BTreeMap<String, String>,
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

/// Default of `maxSessions`.
pub const DEFAULT_MAX_SESSIONS: i32 = 4;
/// Default of `maxRestarts`.
pub const DEFAULT_MAX_RESTARTS: i32 = 3;

/// Whether a job that ended on its own is submitted again.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RestartPolicy {
    /// An ended job ends the allocation.
    #[default]
    Never,
    /// Resubmit after preemption, node failure, walltime or another failure.
    OnFailure,
}

/// Where an allocation is in its life.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum AllocationPhase {
    /// Accepted, not yet submitted (or waiting for its cluster).
    #[default]
    Pending,
    /// Submitted; SLURM has not started it (see `status.slurm.reason`).
    Queued,
    /// Running; the Jupyter server is not answering yet.
    Starting,
    /// The Jupyter server answers at `status.endpoint`.
    Ready,
    /// Being cancelled.
    Terminating,
    /// The job ended normally (or was cancelled on purpose).
    Completed,
    /// The job failed or could not be submitted; `status.message` says why.
    Failed,
}

impl ComputeAllocationStatus {
    /// The current SLURM job's id, if one was submitted.
    pub fn job_id(&self) -> Option<u64> {
        self.slurm
            .as_ref()
            .and_then(|s| s.job_id)
            .and_then(|j| u64::try_from(j).ok())
    }

    /// The SLURM user the current job runs as.
    pub fn slurm_user(&self) -> Option<&str> {
        self.slurm.as_ref().and_then(|s| s.user.as_deref())
    }
}

impl AllocationPhase {
    /// Completed and Failed do not change any more (unless the allocation is restarted).
    pub fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::Failed)
    }
}

/// The SLURM job behind an allocation, as last polled.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SlurmJobStatus {
    /// SLURM job id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<i64>,
    /// SLURM base state (PENDING, RUNNING, COMPLETED, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// SLURM's reason for the state (Priority, Resources, NodeFail, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Node(s) the job runs on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// SLURM user that owns the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// When the job was submitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submit_time: Option<Time>,
    /// When the job started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the job ended, or is expected to end (start + time limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<Time>,
    /// Exit code of the batch script, once ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}

/// What the controller last learned about the allocation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComputeAllocationStatus {
    /// Where the allocation is in its life.
    #[serde(default)]
    pub phase: AllocationPhase,
    /// The SLURM job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slurm: Option<SlurmJobStatus>,
    /// URL of the Jupyter server (e.g. `http://node17:43121`), once Ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Secret (owned by the allocation) holding the Jupyter token under key `token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret: Option<String>,
    /// JupyterSessions using this allocation.
    #[serde(default)]
    pub sessions: i32,
    /// Times the job was resubmitted (restartPolicy OnFailure).
    #[serde(default)]
    pub restarts: i32,
    /// With a restart pending: not before this time (exponential backoff).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_after: Option<Time>,
    /// Why slurmlab itself cancelled the current job (`IdleTimeout`, `Deletion`), so its
    /// end reads as Completed, not as a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelled_by: Option<String>,
    /// The attempt whose job is being submitted, written before the submit: a controller
    /// that finds it set without a job id (it crashed, or the submit's answer was lost)
    /// looks for that job in SLURM before submitting again. Without it no lookup is
    /// needed, so a submit never lists the cluster's job table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submit_claim: Option<i32>,
    /// The claimed submission's nonce: its job's signed tag carries it, so only that very
    /// submission is adopted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub submit_nonce: Option<String>,
    /// Probes of a Ready server that failed in a row (it stays Ready until
    /// a few fail, so one slow answer does not drop every session).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub missed_probes: i32,
    /// Since when the allocation has served no session (for `idleTimeout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_since: Option<Time>,
    /// Standard conditions (Valid, Submitted, Ready, SlurmReachable).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Human-readable state, with what to do when something is wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}
