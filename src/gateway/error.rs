//! What can go wrong serving a tool call, worded for the agent that made it.

use crate::jupyter::JupyterError;

/// A failed tool call. Its message is what the agent reads: it says what happened and
/// what to do next.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("invalid input: {0}")]
    Invalid(String),
    #[error("{0} not found (or you are not allowed to use it)")]
    NotFound(String),
    #[error("not allowed: {0}")]
    Forbidden(String),
    #[error("{0}")]
    NotReady(String),
    #[error("{0}")]
    Timeout(String),
    #[error("the Kubernetes API failed: {0}")]
    Kube(String),
    #[error("{0}")]
    Jupyter(#[from] JupyterError),
    #[error("{0}")]
    Failed(String),
}

impl GatewayError {
    /// A Kubernetes error about `what`: 404 and 403 both read "not found", so a caller
    /// learns nothing about objects it may not see.
    pub fn from_kube(e: kube::Error, what: &str) -> Self {
        match &e {
            kube::Error::Api(s) if s.code == 404 || s.code == 403 => {
                Self::NotFound(what.to_owned())
            }
            _ => Self::Kube(e.to_string()),
        }
    }

    /// A Kubernetes error on a write, where a 403 is worth saying plainly.
    pub fn from_kube_write(e: kube::Error, action: &str) -> Self {
        match &e {
            kube::Error::Api(s) if s.code == 403 => {
                Self::Forbidden(format!("{action}: {}", s.message))
            }
            kube::Error::Api(s) if s.code == 422 || s.code == 400 => {
                Self::Invalid(format!("{action}: {}", s.message))
            }
            _ => Self::Kube(format!("{action}: {e}")),
        }
    }

    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Invalid(_) => "invalid",
            Self::NotFound(_) => "not_found",
            Self::Forbidden(_) => "forbidden",
            Self::NotReady(_) => "not_ready",
            Self::Timeout(_) => "timeout",
            Self::Kube(_) => "kube",
            Self::Jupyter(_) => "jupyter",
            Self::Failed(_) => "failed",
        }
    }
}
