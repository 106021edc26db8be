//! Writing a session's notebook: every executed cell (source, outputs, execution count,
//! and `slurmlab` metadata with the execution id and duration) goes in, so the notebook
//! is the durable record of what the agent did. Callers hold the session's notebook lock.

use serde_json::{Value, json};

use super::GatewayError;
use super::live::LiveSession;
use crate::jupyter::{JupyterError, Output, notebook};

/// One change to a notebook.
pub enum Change<'a> {
    /// A new code cell at the end.
    Append {
        source: &'a str,
        outputs: &'a [Output],
        execution_count: Option<u64>,
        metadata: Value,
    },
    /// A cell re-run with new code (negative indices count from the end).
    Replace {
        index: i64,
        source: &'a str,
        outputs: &'a [Output],
        execution_count: Option<u64>,
    },
    /// A markdown cell at the end.
    Markdown(&'a str),
}

/// The cell metadata slurmlab adds to executed cells.
pub fn cell_metadata(execution_id: &str, duration_ms: u128, status: &str) -> Value {
    json!({"slurmlab": {"execution_id": execution_id, "duration_ms": duration_ms, "status": status}})
}

/// Reads the notebook (a new one when it was removed).
pub async fn load(live: &LiveSession) -> Result<nbformat::v4::Notebook, GatewayError> {
    match live.server.get(&live.notebook_path, true).await {
        Ok(model) => Ok(notebook::from_json(&model.content)?),
        Err(JupyterError::NotFound { .. }) => {
            Ok(notebook::new_notebook("python3", "Python 3", "python"))
        }
        Err(e) => Err(e.into()),
    }
}

/// Applies `change` and writes the notebook; returns the cell's index.
pub async fn apply(live: &LiveSession, change: Change<'_>) -> Result<usize, GatewayError> {
    let mut nb = load(live).await?;
    let index = match change {
        Change::Append {
            source,
            outputs,
            execution_count,
            metadata,
        } => notebook::append_code(&mut nb, source, outputs, execution_count, metadata)?,
        Change::Replace {
            index,
            source,
            outputs,
            execution_count,
        } => notebook::replace_code(&mut nb, index, source, outputs, execution_count)?,
        Change::Markdown(text) => notebook::append_markdown(&mut nb, text),
    };
    live.server
        .put_notebook(&live.notebook_path, &notebook::to_json(&nb)?)
        .await?;
    Ok(index)
}
