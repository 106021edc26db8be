//! Errors of a reconcile: each says what failed; the controller retries with backoff.

use crate::api::fields::FieldError;
use crate::jupyter::JupyterError;
use crate::slurm::SlurmError;

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Slurm(#[from] SlurmError),
    #[error(transparent)]
    Jupyter(#[from] JupyterError),
    #[error(transparent)]
    Field(#[from] FieldError),
    #[error("{0}")]
    Other(String),
}
