//! Writing a session's notebook: every executed cell (source, outputs, execution count,
//! and `slurmlab` metadata with the execution id and duration) goes in, so the notebook
//! is the durable record of what the agent did.
//!
//! One writer task per session applies changes in the order they were queued. Changes
//! that arrive close together (or while a write is in flight) are applied together in one
//! read-change-write, so a burst of quick cells costs the Jupyter server one save, not one
//! each; and the file is re-read only when someone else changed it since.

use nbformat::v4::Notebook;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use super::GatewayError;
use crate::jupyter::{JupyterError, JupyterServer, Output, notebook};

/// One change to a notebook.
pub enum Change {
    /// A new code cell at the end.
    Append {
        source: String,
        outputs: Vec<Output>,
        execution_count: Option<u64>,
        metadata: Value,
    },
    /// A cell re-run with new code (negative indices count from the end).
    Replace {
        index: i64,
        source: String,
        outputs: Vec<Output>,
        execution_count: Option<u64>,
    },
    /// A markdown cell at the end.
    Markdown(String),
    /// An unexecuted cell at an index.
    Insert {
        index: i64,
        kind: notebook::CellKind,
        source: String,
    },
    /// A cell removed.
    Delete(i64),
    /// A cell moved from one index to another.
    Move { from: i64, to: i64 },
    /// Outputs cleared from one code cell, or from all (the answer: how many had any).
    ClearOutputs(Option<i64>),
}

/// The cell metadata slurmlab adds to executed cells.
pub fn cell_metadata(execution_id: &str, duration_ms: u128, status: &str) -> Value {
    json!({"slurmlab": {"execution_id": execution_id, "duration_ms": duration_ms, "status": status}})
}

type Reply<T> = oneshot::Sender<Result<T, GatewayError>>;

enum Message {
    Change(Change, Reply<usize>),
    Read(Reply<Notebook>),
}

/// The handle of a session's notebook writer; the task ends when the handle is dropped.
pub struct Recorder {
    tx: mpsc::UnboundedSender<Message>,
}

impl Recorder {
    /// Starts the writer of `path` on `server`.
    pub fn spawn(server: JupyterServer, path: String) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(write_loop(server, path, rx));
        Self { tx }
    }

    /// Queues `change` now; the answer (the cell's index) comes once it is written.
    pub fn submit(&self, change: Change) -> oneshot::Receiver<Result<usize, GatewayError>> {
        let (reply, rx) = oneshot::channel();
        let _ = self.tx.send(Message::Change(change, reply));
        rx
    }

    /// Applies `change` and waits until it is written.
    pub async fn apply(&self, change: Change) -> Result<usize, GatewayError> {
        answer(self.submit(change)).await
    }

    /// The notebook with every change queued before this call.
    pub async fn read(&self) -> Result<Notebook, GatewayError> {
        let (reply, rx) = oneshot::channel();
        let _ = self.tx.send(Message::Read(reply));
        answer(rx).await
    }
}

/// The result a writer sent back.
pub async fn answer<T>(rx: oneshot::Receiver<Result<T, GatewayError>>) -> Result<T, GatewayError> {
    rx.await
        .unwrap_or_else(|_| Err(GatewayError::Failed("the notebook writer stopped".into())))
}

/// How long the writer lets changes gather before a write (a burst of quick cells is one
/// save: each save makes the Jupyter server parse and validate the whole notebook).
const GATHER: Duration = Duration::from_millis(100);

async fn write_loop(server: JupyterServer, path: String, mut rx: mpsc::UnboundedReceiver<Message>) {
    // The notebook as last written, with the server's modification time then: reused
    // while the file is unchanged, so a write costs one metadata read, not a full one.
    let mut cache: Option<(String, Notebook)> = None;
    while let Some(first) = rx.recv().await {
        if matches!(first, Message::Change(..)) {
            tokio::time::sleep(GATHER).await;
        }
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        let mut nb = match load_cached(&server, &path, cache.take()).await {
            Ok(nb) => nb,
            Err(e) => {
                let msg = e.to_string();
                for m in batch {
                    fail(m, &msg);
                }
                continue;
            }
        };
        let mut written: Vec<(Reply<usize>, Result<usize, GatewayError>)> = vec![];
        let mut changed = false;
        for m in batch {
            match m {
                Message::Change(change, reply) => {
                    let r = apply(&mut nb, change);
                    changed |= r.is_ok();
                    written.push((reply, r));
                }
                Message::Read(reply) => {
                    let _ = reply.send(Ok(nb.clone()));
                }
            }
        }
        let saved = if changed {
            match notebook::to_json(&nb) {
                Ok(json) => server
                    .put_notebook(&path, &json)
                    .await
                    .map(|m| m.last_modified),
                Err(e) => Err(e),
            }
        } else {
            Ok(None)
        };
        match &saved {
            Ok(Some(modified)) => cache = Some((modified.clone(), nb)),
            Ok(None) => {}
            Err(e) => tracing::warn!(notebook = %path, error = %e, "cannot write the notebook"),
        }
        for (reply, r) in written {
            let r = match (&saved, r) {
                (Ok(_), r) => r,
                (Err(e), _) => Err(GatewayError::Failed(format!(
                    "writing the notebook failed: {e}"
                ))),
            };
            let _ = reply.send(r);
        }
    }
}

/// The cached notebook if the file was not modified since it was written, else a fresh read.
async fn load_cached(
    server: &JupyterServer,
    path: &str,
    cache: Option<(String, Notebook)>,
) -> Result<Notebook, JupyterError> {
    if let Some((modified, nb)) = cache
        && let Ok(meta) = server.get(path, false).await
        && meta.last_modified.as_deref() == Some(modified.as_str())
    {
        return Ok(nb);
    }
    load(server, path).await
}

fn fail(m: Message, why: &str) {
    let err = || GatewayError::Failed(format!("reading the notebook failed: {why}"));
    match m {
        Message::Change(_, reply) => {
            let _ = reply.send(Err(err()));
        }
        Message::Read(reply) => {
            let _ = reply.send(Err(err()));
        }
    }
}

/// Reads the notebook (a new one when it was removed).
async fn load(server: &JupyterServer, path: &str) -> Result<Notebook, JupyterError> {
    match server.get(path, true).await {
        Ok(model) => notebook::from_json(&model.content),
        Err(JupyterError::NotFound { .. }) => {
            Ok(notebook::new_notebook("python3", "Python 3", "python"))
        }
        Err(e) => Err(e),
    }
}

fn apply(nb: &mut Notebook, change: Change) -> Result<usize, GatewayError> {
    Ok(match change {
        Change::Append {
            source,
            outputs,
            execution_count,
            metadata,
        } => notebook::append_code(nb, &source, &outputs, execution_count, metadata)?,
        Change::Replace {
            index,
            source,
            outputs,
            execution_count,
        } => notebook::replace_code(nb, index, &source, &outputs, execution_count)?,
        Change::Markdown(text) => notebook::append_markdown(nb, &text),
        Change::Insert {
            index,
            kind,
            source,
        } => notebook::insert_cell(nb, index, kind, &source)?,
        Change::Delete(index) => notebook::delete_cell(nb, index)?,
        Change::Move { from, to } => notebook::move_cell(nb, from, to)?,
        Change::ClearOutputs(index) => notebook::clear_outputs(nb, index)?,
    })
}
