//! The Kubernetes API of slurmlab: its custom resources (group `slurmlab.io`, version
//! `v1alpha1`) and the field types they share.
//!
//! - [`SlurmCluster`] (cluster-scoped, written by admins): how to reach one SLURM cluster
//!   through slurmrestd and the policy for using it.
//! - [`ComputeAllocation`]: one SLURM batch job running one Jupyter server.
//! - [`JupyterSession`]: one kernel on an allocation, tied to one notebook.
//!
//! Validation that the OpenAPI schema can express lives here (enums, minimums, formats,
//! required fields, mutual exclusion), so the API server refuses bad specs itself.

// kube-derive's repeated `printcolumn(...)` entries look like duplicated attributes to clippy.
#![allow(clippy::duplicated_attributes)]

mod allocation;
mod cluster;
pub mod conditions;
mod crd;
pub mod fields;
pub mod membership;
mod session;

pub use allocation::*;
pub use cluster::*;
pub use crd::{all_crds, crd_file_name, crd_yaml, crds_kustomization};
pub use session::*;

/// API group of every slurmlab resource.
pub const GROUP: &str = "slurmlab.io";
/// The one served and stored version.
pub const VERSION: &str = "v1alpha1";
/// `kubectl get slurmlab` lists every kind in this category.
pub const CATEGORY: &str = "slurmlab";
