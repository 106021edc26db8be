//! A run's whole text output, streamed to a file next to the notebook while it runs, so
//! the gateway keeps only a head and a tail in memory (`jupyter::bounded`) and the agent
//! and the notebook get a pointer to the rest. Nothing is written for output under the
//! threshold (the reply and the notebook carry all of it). Uploads are chunked saves
//! through the contents API; while more than [`PACE`] bytes wait for them the run stops
//! reading the kernel's messages (a fast printer is slowed to the upload's pace, its
//! backlog waiting on the Jupyter side, in the job). Should one message still overrun
//! [`MAX_PENDING`], the excess is counted, not kept, and the file ends with a note.

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use std::sync::Arc;

use crate::jupyter::bounded::Pace;
use crate::jupyter::{JupyterError, JupyterServer, OutputChange};

use super::{GatewayError, render};

/// Bytes per upload.
const CHUNK: usize = 512 * 1024;
/// Bytes held at most: waiting, queued and being uploaded (more is counted, not kept).
const MAX_PENDING: usize = 8 * 1024 * 1024;
/// Held bytes above which the run stops reading the kernel until uploads catch up.
const PACE: usize = 2 * 1024 * 1024;
/// Uploads queued at most (the byte bound above is what limits memory).
const IN_FLIGHT: usize = 16;

/// The upload task and its queue of (text, chunk number).
type Writer = (
    mpsc::Sender<(String, i64)>,
    JoinHandle<Result<(), JupyterError>>,
);

/// The spill of one run.
pub struct Spill {
    path: String,
    server: JupyterServer,
    threshold: usize,
    total: u64,
    pending: String,
    dropped: u64,
    next_chunk: i64,
    /// Bytes taken and not yet uploaded; the run reads the kernel only while this is
    /// under [`PACE`].
    pace: Arc<Pace>,
    writer: Option<Writer>,
}

impl Spill {
    /// A spill to `path` once the text passes `threshold` bytes.
    pub fn new(server: JupyterServer, path: String, threshold: usize) -> Self {
        Spill {
            path,
            server,
            threshold,
            total: 0,
            pending: String::new(),
            dropped: 0,
            next_chunk: 1,
            // Text under the threshold is held until it is known to need a file: the pace
            // must leave room for it, or the run would wait for uploads that never start.
            pace: Arc::new(Pace::new(PACE.max(threshold.saturating_add(CHUNK)))),
            writer: None,
        }
    }

    /// The backpressure the run's channel follows.
    pub fn pace(&self) -> Arc<Pace> {
        self.pace.clone()
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    /// Takes the text of an output change (called for every change, in order).
    pub fn observe(&mut self, change: OutputChange<'_>) {
        match change {
            OutputChange::Pushed(o) => self.push(&render::full_text(o)),
            OutputChange::Appended(more) => self.push(more),
            OutputChange::Cleared | OutputChange::Replaced(..) => {}
        }
    }

    fn push(&mut self, text: &str) {
        self.total = self.total.saturating_add(text.len() as u64);
        let most = MAX_PENDING.max(self.threshold.saturating_add(CHUNK).saturating_mul(2));
        if self.pace.held() + text.len() > most {
            self.dropped = self.dropped.saturating_add(text.len() as u64);
        } else {
            self.pending.push_str(text);
            self.pace.hold(text.len());
        }
        if self.total > self.threshold as u64 && self.pending.len() >= CHUNK {
            self.send_pending();
        }
    }

    /// Hands the pending text to the writer unless its queue is full (then it waits in
    /// `pending`, within MAX_PENDING).
    fn send_pending(&mut self) {
        let (tx, _) = self.writer.get_or_insert_with(|| {
            let (tx, rx) = mpsc::channel(IN_FLIGHT);
            let task = tokio::spawn(write_chunks(
                self.server.clone(),
                self.path.clone(),
                rx,
                self.pace.clone(),
            ));
            (tx, task)
        });
        let text = std::mem::take(&mut self.pending);
        match tx.try_send((text, self.next_chunk)) {
            Ok(()) => self.next_chunk += 1,
            Err(mpsc::error::TrySendError::Full((text, _)))
            | Err(mpsc::error::TrySendError::Closed((text, _))) => self.pending = text,
        }
    }

    /// Writes what is left; the file's path if one was written.
    pub async fn finish(mut self) -> Result<Option<String>, GatewayError> {
        if self.total <= self.threshold as u64 {
            return Ok(None);
        }
        if self.dropped > 0 {
            self.pending.push_str(&format!(
                "\n[slurmlab: {} bytes of output were not saved: the Jupyter server took them \
                 slower than the run printed them]\n",
                self.dropped
            ));
        }
        let last = std::mem::take(&mut self.pending);
        match self.writer.take() {
            None => {
                self.server.put_file(&self.path, &last, "text").await?;
            }
            Some((tx, task)) => {
                let _ = tx.send((last, -1)).await;
                drop(tx);
                task.await
                    .map_err(|e| GatewayError::Failed(format!("the spill writer failed: {e}")))??;
            }
        }
        Ok(Some(self.path))
    }
}

/// Uploads chunks in order; the first error ends it (and is what `finish` returns).
async fn write_chunks(
    server: JupyterServer,
    path: String,
    mut rx: mpsc::Receiver<(String, i64)>,
    pace: Arc<Pace>,
) -> Result<(), JupyterError> {
    while let Some((text, chunk)) = rx.recv().await {
        let uploaded = server.put_file_chunk(&path, &text, chunk).await;
        pace.release(text.len());
        uploaded?;
    }
    Ok(())
}
