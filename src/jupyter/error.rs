//! Failures talking to a Jupyter server.

/// A failed call to a Jupyter server or kernel.
#[derive(Debug, thiserror::Error)]
pub enum JupyterError {
    #[error("cannot reach the Jupyter server at {url}: {detail}")]
    Unreachable { url: String, detail: String },
    #[error(
        "the Jupyter server at {url} refused the token (HTTP {status}); the server may belong to another allocation"
    )]
    Forbidden { url: String, status: u16 },
    #[error("{what} does not exist on the Jupyter server")]
    NotFound { what: String },
    #[error("the Jupyter server at {url} answered HTTP {status}: {detail}")]
    Http {
        url: String,
        status: u16,
        detail: String,
    },
    #[error("the Jupyter server at {url} answered something unreadable: {detail}")]
    Malformed { url: String, detail: String },
    #[error("path {path:?} is outside the notebook root: use a relative path without `..`")]
    PathOutsideRoot { path: String },
    #[error("kernel {kernel_id} channel: {detail}")]
    Channel { kernel_id: String, detail: String },
    #[error("the notebook is not valid nbformat: {0}")]
    Notebook(String),
}
