//! Talking to a Jupyter server: REST (status, kernels, contents), the kernel websocket
//! (execute with every output, interrupt on timeout), and notebooks (nbformat v4.5).
//! Shared by the controller (sessions) and the gateway.

pub mod bounded;
mod error;
mod kernel;
pub mod notebook;
mod server;

pub use bounded::OutputBudget;
pub use error::JupyterError;
pub use kernel::{ExecuteOptions, Execution, Follow, KernelChannel, Output, OutputChange};
pub use server::{ContentModel, JupyterServer, KernelModel, ServerStatus};

/// Refuses a path that is absolute or leaves the server's root, before any request.
pub fn check_path(path: &str) -> Result<&str, JupyterError> {
    if crate::api::fields::is_contained_relative_path(path) {
        Ok(path)
    } else {
        Err(JupyterError::PathOutsideRoot {
            path: path.to_owned(),
        })
    }
}

/// Joins an error's source chain into one line.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s = format!("{s}: {inner}");
        source = inner.source();
    }
    s
}
