//! slurmlab: Jupyter kernels on SLURM clusters, driven from Kubernetes.
//!
//! - [`api`]: the custom resources (SlurmCluster, ComputeAllocation, JupyterSession).
//! - [`cli`]: the non-service subcommands of the `slurmlab` binary.
//! - [`slurm`]: slurmrestd access.
//! - [`controller`]: the reconcilers behind `slurmlab controller`.
//! - [`jupyter`]: Jupyter server access.
//! - [`gateway`]: the MCP gateway behind `slurmlab gateway`.
//! - [`process`]: what every long-running role needs (kubeconfig, shutdown signal).
//! - [`reference`]: reference docs generated from the code.

pub mod api;
pub mod cli;
pub mod controller;
pub mod gateway;
pub mod jupyter;
pub mod process;
pub mod reference;
pub mod slurm;
pub mod tls;
