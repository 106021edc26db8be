//! `SlurmCluster`: how to reach one SLURM cluster through slurmrestd and the policy for
//! using it. Cluster-scoped and written by cluster admins; users only name it.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::conditions::Condition;
use super::fields::{Duration, MemoryQuantity, SecretKeyRef};

/// Condition type: slurmrestd answered the last ping with our credentials.
pub const CONDITION_REACHABLE: &str = "Reachable";
/// Whether the controller's service user sees the jobs it submits for other SLURM users
/// (PrivateData=jobs hides them from a user that is not an operator).
pub const CONDITION_JOBS_VISIBLE: &str = "JobsVisible";

/// How to reach a SLURM cluster's slurmrestd and the policy for using it.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "slurmlab.io",
    version = "v1alpha1",
    kind = "SlurmCluster",
    status = "SlurmClusterStatus",
    shortname = "slc",
    category = "slurmlab",
    doc = "A SLURM cluster reached through slurmrestd, and the policy for running Jupyter servers on it.",
    printcolumn(name = "URL", type_ = "string", json_path = ".spec.restApi.url"),
    printcolumn(
        name = "Reachable",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Reachable\")].status"
    ),
    printcolumn(name = "API", type_ = "string", json_path = ".status.apiVersion"),
    printcolumn(name = "Slurm", type_ = "string", json_path = ".status.slurmVersion"),
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
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!has(self.defaults) || !has(self.limits) || !has(self.defaults.cpus) || !has(self.limits.maxCpus) || self.defaults.cpus <= self.limits.maxCpus",
        "message": "defaults.cpus must not exceed limits.maxCpus",
        "fieldPath": ".defaults.cpus"
    },
    {
        "rule": "!has(self.defaults) || !has(self.limits) || !has(self.defaults.memory) || !has(self.limits.maxMemory) || quantity(self.defaults.memory).compareTo(quantity(self.limits.maxMemory)) <= 0",
        "message": "defaults.memory must not exceed limits.maxMemory",
        "fieldPath": ".defaults.memory"
    },
    {
        "rule": "!has(self.defaults) || !has(self.defaults.partition) || !has(self.limits) || !has(self.limits.partitions) || size(self.limits.partitions) == 0 || self.defaults.partition in self.limits.partitions",
        "message": "defaults.partition must be one of limits.partitions",
        "fieldPath": ".defaults.partition"
    }
]))]
pub struct SlurmClusterSpec {
    /// Where slurmrestd listens and which REST API version to speak.
    pub rest_api: RestApi,
    /// How the controller authenticates to slurmrestd.
    pub auth: ClusterAuth,
    /// Which SLURM user owns the jobs of a namespace. Users never choose it themselves.
    #[serde(default)]
    pub user_mapping: UserMapping,
    /// Values used when an allocation leaves a field empty.
    #[serde(default)]
    pub defaults: AllocationDefaults,
    /// Upper bounds an allocation must stay within.
    #[serde(default)]
    pub limits: AllocationLimits,
    /// How the batch job starts the Jupyter server.
    pub job_template: JobTemplate,
    /// How often job states are polled and how many requests per second slurmrestd gets.
    #[serde(default)]
    pub polling: Polling,
}

/// slurmrestd's address and API version.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestApi {
    /// Base URL of slurmrestd, e.g. `https://slurm.example.org:6820`.
    #[schemars(pattern(r"^https?://[^\s/]+(/.*)?$"))]
    pub url: String,
    /// REST API version: `auto` (the newest both sides speak) or one of v0.0.40 to v0.0.45.
    #[serde(default = "default_api_version")]
    #[schemars(pattern(r"^(auto|v0\.0\.4[0-5])$"))]
    pub version: String,
    /// A Secret key holding the PEM CA bundle that signed slurmrestd's certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretKeyRef>,
}

fn default_api_version() -> String {
    "auto".to_owned()
}

/// Exactly one of `jwtKeySecretRef` and `tokenSecretRef`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.jwtKeySecretRef) != has(self.tokenSecretRef)",
    "message": "set exactly one of auth.jwtKeySecretRef (a JWT key: tokens for every mapped user) and auth.tokenSecretRef (one static token)"
}]))]
pub struct ClusterAuth {
    /// The cluster's HS256 `jwt_key`: the controller mints a short-lived token per SLURM
    /// user and refreshes it before it expires. Set this or `tokenSecretRef`, not both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt_key_secret_ref: Option<SecretKeyRef>,
    /// A static token (e.g. from `scontrol token`), re-read when the Secret changes; it
    /// acts for one SLURM user only. Set this or `jwtKeySecretRef`, not both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret_ref: Option<SecretKeyRef>,
    /// Lifetime of minted tokens (jwtKeySecretRef only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_lifetime: Option<Duration>,
}

/// SLURM user of a namespace: its entry in `namespaces`, else (only with
/// `honorNamespaceAnnotation`) its annotation, else `defaultUser`; with none, allocations
/// are refused. root, slurm and invalid names never.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserMapping {
    /// Namespace → SLURM user, written by the cluster admin: the authoritative mapping.
    /// A namespace listed here runs as its user whatever its annotations say; its users
    /// need not be repeated in `allowedUsers`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 10000))]
    pub namespaces: BTreeMap<String, String>,
    /// Let a namespace's annotation choose its SLURM user among `allowedUsers` (default
    /// false). Only turn this on where tenants cannot annotate their own namespaces:
    /// whoever may annotate a namespace picks any of those users.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub honor_namespace_annotation: bool,
    /// Namespace annotation naming the SLURM user (default `slurmlab.io/slurm-user`),
    /// read only with `honorNamespaceAnnotation`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_annotation: Option<String>,
    /// SLURM user for namespaces neither in `namespaces` nor (with
    /// `honorNamespaceAnnotation`) annotated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[a-z_][a-z0-9_.-]*$"))]
    pub default_user: Option<String>,
    /// SLURM users `defaultUser` and annotations may name. Required with a
    /// `jwtKeySecretRef` unless `namespaces` maps every namespace that runs jobs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_users: Vec<String>,
}

/// Default namespace annotation naming a namespace's SLURM user.
pub const DEFAULT_USER_ANNOTATION: &str = "slurmlab.io/slurm-user";

/// Values an allocation gets for the fields it leaves empty.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AllocationDefaults {
    /// SLURM partition (default: the cluster's default partition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
    /// SLURM account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// SLURM QOS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qos: Option<String>,
    /// Wall time (default 1h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_limit: Option<Duration>,
    /// CPUs (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub cpus: Option<i32>,
    /// Memory (default: SLURM's default for the partition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryQuantity>,
}

/// Upper bounds for allocations on this cluster.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AllocationLimits {
    /// Longest wall time an allocation may ask for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_time_limit: Option<Duration>,
    /// Most CPUs an allocation may ask for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub max_cpus: Option<i32>,
    /// Most memory an allocation may ask for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory: Option<MemoryQuantity>,
    /// Most allocations (not yet finished) one namespace may have on this cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub max_allocations_per_namespace: Option<i32>,
    /// If set, only these partitions may be used.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partitions: Vec<String>,
}

/// How the batch job prepares the node and starts the Jupyter server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobTemplate {
    /// Shell lines run before the server starts, e.g. `module load python/3.12` or
    /// `source /opt/jupyter/bin/activate`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preamble: Vec<String>,
    /// Command that starts Jupyter Server, e.g. `jupyter server` or
    /// `/opt/jupyter/bin/jupyter-server`; slurmlab adds the port, token and root options.
    #[schemars(length(min = 1))]
    pub server_command: String,
    /// Directory the server serves notebooks from (shell expansions such as `$HOME` work).
    #[serde(default = "default_notebook_root")]
    pub notebook_root: String,
    /// Address every server binds to and reports (default: the job's batch host, see
    /// `nodeDomain`). Use `127.0.0.1` only for single-machine test clusters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind_address: Option<String>,
    /// DNS domain of the compute nodes: servers report `<batch host>.<nodeDomain>` and
    /// the controller accepts exactly that (default: the batch host's name as SLURM
    /// knows it, which the controller must be able to resolve).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(
        pattern = r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
    ))]
    pub node_domain: Option<String>,
    /// Absolute working directory of the job (default `/tmp`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^/"))]
    pub working_directory: Option<String>,
    /// Extra environment variables of the job (PATH and HOME are set by default).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub environment: BTreeMap<String, String>,
}

fn default_notebook_root() -> String {
    "$HOME".to_owned()
}

/// Polling and rate limits towards slurmrestd.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Polling {
    /// Interval of the batched job-state query while nothing is starting (default 10s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
    /// Interval while some job is queued or starting (default 1s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_interval: Option<Duration>,
    /// How often the full record of a running job is read again, for changes of its
    /// comment (default 60s). State changes are seen every round regardless.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_refresh: Option<Duration>,
    /// Most requests per second to slurmrestd from this controller (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub requests_per_second: Option<i32>,
}

/// What the controller last learned about the cluster.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SlurmClusterStatus {
    /// `Reachable`: slurmrestd answers with our credentials.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// REST API version in use (negotiated when the spec says `auto`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Versions slurmrestd offers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub served_versions: Vec<String>,
    /// SLURM release reported by slurmrestd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slurm_version: Option<String>,
    /// Time of the last successful ping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_ping: Option<Time>,
    /// Human-readable state, with the reason when unreachable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The cluster's partitions as of `lastPing`: size, what is free, time limit (what
    /// an agent reads before asking for resources).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub partitions: Vec<PartitionStatus>,
}

/// One partition in a SlurmCluster's status.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PartitionStatus {
    pub name: String,
    /// SLURM's state words (e.g. `UP`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub state: Vec<String>,
    pub nodes: u32,
    pub cpus: u32,
    /// Nodes with nothing allocated that can take jobs.
    pub idle_nodes: u32,
    /// CPUs not allocated on nodes that can take jobs.
    pub idle_cpus: u32,
    /// MaxTime in minutes; absent: unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_time_minutes: Option<i64>,
    /// Generic resources the nodes offer (e.g. `gpu:a100:4`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gres: Vec<String>,
}
