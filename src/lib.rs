//! slurmlab: Jupyter kernels on SLURM clusters, driven from Kubernetes.
//!
//! - [`api`]: the custom resources (SlurmCluster, ComputeAllocation, JupyterSession).
//! - [`cli`]: the non-service subcommands of the `slurmlab` binary.
//! - [`slurm`]: slurmrestd access.

pub mod api;
pub mod cli;
pub mod slurm;
