//! `JupyterSession`: one kernel on a ComputeAllocation's Jupyter server, tied to one notebook.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ComputeAllocationSpec;
use super::conditions::Condition;
use super::fields::{Duration, NOTEBOOK_SUFFIX_PATTERN, RELATIVE_PATH_PATTERN};

/// One Jupyter kernel on an allocation, recording its work in one notebook.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "slurmlab.io",
    version = "v1alpha1",
    kind = "JupyterSession",
    namespaced,
    status = "JupyterSessionStatus",
    shortname = "jsess",
    category = "slurmlab",
    doc = "A Jupyter kernel on a ComputeAllocation, tied to one notebook.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Allocation",
        type_ = "string",
        json_path = ".status.allocation"
    ),
    printcolumn(
        name = "Kernel",
        type_ = "string",
        json_path = ".status.executionState"
    ),
    printcolumn(name = "Node", type_ = "string", json_path = ".status.node"),
    printcolumn(
        name = "Notebook",
        type_ = "string",
        json_path = ".status.notebookPath"
    ),
    printcolumn(
        name = "Kernel ID",
        type_ = "string",
        json_path = ".status.kernelId",
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
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.allocationRef) != has(self.allocationTemplate)",
    "message": "set exactly one of spec.allocationRef (an existing allocation) and spec.allocationTemplate (a new one for this session)"
}]))]
pub struct JupyterSessionSpec {
    /// Name of an existing ComputeAllocation in this namespace. Set this or
    /// `allocationTemplate`, not both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub allocation_ref: Option<String>,
    /// Spec of an allocation the controller creates for this session alone (deleted with
    /// it). Set this or `allocationRef`, not both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocation_template: Option<ComputeAllocationSpec>,
    /// Kernel spec name on the Jupyter server (default `python3`).
    #[serde(default = "default_kernel")]
    #[schemars(length(min = 1))]
    pub kernel: String,
    /// The notebook the session writes to (and restores from).
    #[serde(default)]
    pub notebook: NotebookSpec,
    /// Shut the kernel down after it has been idle this long (default: never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<Duration>,
}

fn default_kernel() -> String {
    "python3".to_owned()
}

/// Notebook of a session. Paths are relative to the server's notebook root and may not
/// leave it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
///
/// `source` is required for `Resume` and `Continue` (a CEL rule).
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!has(self.mode) || self.mode == 'New' || has(self.source)",
    "message": "notebook.source is required for mode Resume and Continue",
    "fieldPath": ".source",
    "reason": "FieldValueRequired"
}]))]
pub struct NotebookSpec {
    /// Where the session's notebook lives, e.g. `experiments/run1.ipynb` (default: named
    /// after the session; `New` never overwrites, it picks a free name instead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        regex(pattern = RELATIVE_PATH_PATTERN),
        extend("allOf" = [{"pattern": NOTEBOOK_SUFFIX_PATTERN}])
    )]
    pub path: Option<String>,
    /// `New` (default): start an empty notebook. `Resume`: re-execute every code cell of
    /// `source` to restore its state, then keep writing into it. `Continue`: copy `source`
    /// to `path` and start a fresh kernel.
    #[serde(default)]
    pub mode: NotebookMode,
    /// Existing notebook to resume or continue (required for those modes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        regex(pattern = RELATIVE_PATH_PATTERN),
        extend("allOf" = [{"pattern": NOTEBOOK_SUFFIX_PATTERN}])
    )]
    pub source: Option<String>,
    /// Resume only: stop restoring at the first cell that raises (default: record the
    /// error and go on).
    #[serde(default)]
    pub stop_on_error: bool,
}

/// How a session's notebook starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum NotebookMode {
    /// A new, empty notebook.
    #[default]
    New,
    /// Re-execute an existing notebook to restore the kernel's state.
    Resume,
    /// Fork an existing notebook with a fresh kernel.
    Continue,
}

/// Where a session is in its life.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SessionPhase {
    /// Waiting for its allocation to be Ready.
    #[default]
    Pending,
    /// Starting the kernel and preparing the notebook.
    Starting,
    /// Re-executing the notebook (see `status.restore`).
    Restoring,
    /// The kernel is usable.
    Ready,
    /// The kernel or its server went away (see `status.message`).
    Lost,
    /// The kernel was shut down (idle timeout or deletion).
    Terminated,
    /// The session could not start; `status.message` says why.
    Failed,
}

/// One cell that raised while restoring.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreError {
    /// Index of the cell in the notebook (0-based, all cell types counted).
    pub cell: i32,
    /// Exception name.
    pub ename: String,
    /// Exception value.
    pub evalue: String,
}

/// Progress of a Resume (or a restore after the allocation was restarted).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreStatus {
    /// Code cells executed so far.
    pub executed: i32,
    /// Code cells to execute.
    pub total: i32,
    /// Cells that raised.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<RestoreError>,
}

/// What the controller last learned about the session.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JupyterSessionStatus {
    /// Where the session is in its life.
    #[serde(default)]
    pub phase: SessionPhase,
    /// The allocation serving this session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocation: Option<String>,
    /// Kernel id on the Jupyter server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_id: Option<String>,
    /// Notebook path relative to the server's root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notebook_path: Option<String>,
    /// Node running the kernel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// URL of the Jupyter server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Secret holding the server's token (key `token`); the token itself is never in status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret: Option<String>,
    /// Progress of a restore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<RestoreStatus>,
    /// Last kernel activity reported by Jupyter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_activity: Option<Time>,
    /// Kernel execution state reported by Jupyter (idle, busy, starting, dead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_state: Option<String>,
    /// Standard conditions (Ready, AllocationReady).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Human-readable state, with what to do when something is wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}
