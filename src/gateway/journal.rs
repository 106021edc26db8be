//! Runs that outlive a gateway process. A recorded run still going after [`AFTER`] is
//! written down twice:
//! - its record (whose run, which session and kernel, the request's message id) as one
//!   key of the ConfigMap [`REGISTRY`] in the gateway's own namespace: small, and all a
//!   starting gateway reads to know what to take over, without asking every session;
//! - its code and outputs so far in a file next to the notebook
//!   (`<notebook>_outputs/<id>.run.json`), rewritten shortly after each change.
//!
//! A gateway that starts (after a SIGKILL, or a SIGTERM whose drain ended with runs still
//! going) reads the records and goes on with each run under its old id (`reattach`):
//! it reconnects to the kernel as the same websocket session, so Jupyter hands it what the
//! kernel sent while no gateway listened. What the old process had read but not yet
//! written down (the last few milliseconds before a SIGKILL) is the one thing lost; a
//! SIGTERM hands runs over after writing down exactly what was read.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::executions::{Execution, Placement};
use super::identity::Caller;
use crate::jupyter::{JupyterServer, Output};

/// The ConfigMap holding the records of runs being journaled.
pub const REGISTRY: &str = "slurmlab-gateway-runs";
/// Runs shorter than this are never written down (most cells: no cost for them).
pub const AFTER: Duration = Duration::from_secs(2);
/// Changes within this are written together.
const COALESCE: Duration = Duration::from_millis(30);
/// A journal bigger than this is written at most once a second.
const LARGE: usize = 256 * 1024;
/// Rich outputs (figures) are left out of a journal past this size (text is kept).
const MAX_RICH: usize = 8 * 1024 * 1024;

/// What a starting gateway needs to take a run over.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub id: String,
    /// `namespace/name` of the session.
    pub session: String,
    pub owner: Caller,
    pub kernel_id: String,
    /// The `execute_request`'s message id: the run's outputs answer to it.
    pub msg_id: String,
    pub placement: Placement,
    pub created_at: String,
    /// Milliseconds since the epoch when the run was sent (its timeout counts from there).
    pub started_unix_ms: i64,
    pub timeout_seconds: u64,
    pub notebook_path: String,
}

impl RunRecord {
    /// Where the run's code and outputs so far are kept.
    pub fn journal_path(&self) -> String {
        let stem = self
            .notebook_path
            .strip_suffix(".ipynb")
            .unwrap_or(&self.notebook_path);
        format!("{stem}_outputs/{}.run.json", self.id)
    }
}

/// The file next to the notebook.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JournalFile {
    pub id: String,
    pub code: String,
    pub execution_count: Option<u64>,
    /// nbformat output objects.
    pub outputs: Vec<Value>,
    /// Figures left out to keep the file small (the text is all there).
    #[serde(default)]
    pub rich_left_out: usize,
}

impl JournalFile {
    /// The file for `outputs` (pure): figures past [`MAX_RICH`] bytes are left out.
    pub fn new(id: &str, code: &str, execution_count: Option<u64>, outputs: &[Output]) -> Self {
        let mut rich = 0usize;
        let mut left_out = 0;
        let mut kept = Vec::with_capacity(outputs.len());
        for o in outputs {
            let v = o.to_nbformat();
            if matches!(o, Output::Result { .. } | Output::Display { .. }) {
                let size = v.to_string().len();
                if rich.saturating_add(size) > MAX_RICH {
                    left_out += 1;
                    continue;
                }
                rich = rich.saturating_add(size);
            }
            kept.push(v);
        }
        Self {
            id: id.to_owned(),
            code: code.to_owned(),
            execution_count,
            outputs: kept,
            rich_left_out: left_out,
        }
    }

    /// The outputs read back, with a note for figures left out.
    pub fn outputs(&self) -> Vec<Output> {
        let mut v: Vec<Output> = self
            .outputs
            .iter()
            .filter_map(Output::from_nbformat)
            .collect();
        if self.rich_left_out > 0 {
            v.push(Output::Stream {
                name: "stderr".into(),
                text: format!(
                    "\n[slurmlab: {} figure(s) shown before the gateway restarted are not kept]\n",
                    self.rich_left_out
                ),
            });
        }
        v
    }
}

/// Why the journal could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("the run registry (ConfigMap {REGISTRY}): {0}")]
    Registry(#[from] kube::Error),
    #[error("a run record in ConfigMap {REGISTRY} is unreadable: {0}")]
    Record(#[from] serde_json::Error),
}

/// The records, in the ConfigMap [`REGISTRY`] of the gateway's namespace.
pub struct Registry {
    api: Api<ConfigMap>,
}

impl Registry {
    pub fn new(client: kube::Client, namespace: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
        }
    }

    /// Adds or replaces a record (a merge patch: records of other runs stay untouched).
    pub async fn add(&self, record: &RunRecord) -> Result<(), JournalError> {
        let value = serde_json::to_string(record)?;
        let patch = json!({"data": {record.id.as_str(): value}});
        match self
            .api
            .patch(REGISTRY, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => {
                let mut cm = ConfigMap::default();
                cm.metadata.name = Some(REGISTRY.into());
                cm.data = Some(BTreeMap::from([(record.id.clone(), value)]));
                match self.api.create(&PostParams::default(), &cm).await {
                    Ok(_) => Ok(()),
                    // Created meanwhile by another run: patch it.
                    Err(kube::Error::Api(s)) if s.code == 409 => {
                        self.api
                            .patch(REGISTRY, &PatchParams::default(), &Patch::Merge(&patch))
                            .await?;
                        Ok(())
                    }
                    Err(e) => Err(e.into()),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    pub async fn remove(&self, id: &str) -> Result<(), JournalError> {
        let patch = json!({"data": {id: null}});
        match self
            .api
            .patch(REGISTRY, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Every record, and the keys that did not parse (removed by the caller).
    pub async fn list(&self) -> Result<(Vec<RunRecord>, Vec<String>), JournalError> {
        let Some(cm) = self.api.get_opt(REGISTRY).await? else {
            return Ok((vec![], vec![]));
        };
        let mut records = vec![];
        let mut bad = vec![];
        for (key, value) in cm.data.unwrap_or_default() {
            match serde_json::from_str::<RunRecord>(&value) {
                Ok(r) if r.id == key => records.push(r),
                _ => bad.push(key),
            }
        }
        Ok((records, bad))
    }
}

/// Keeps one run's journal while it goes: registers it after [`AFTER`], then rewrites its
/// file shortly after each change (`changed` is notified by the run).
pub struct Keeper {
    pub changed: Arc<Notify>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<bool>,
}

impl Keeper {
    pub fn spawn(
        registry: Arc<Registry>,
        server: JupyterServer,
        exec: Arc<Execution>,
        record: RunRecord,
    ) -> Self {
        let changed = Arc::new(Notify::new());
        let stop = CancellationToken::new();
        let task = tokio::spawn(keep(
            registry,
            server,
            exec,
            record,
            changed.clone(),
            stop.clone(),
        ));
        Self {
            changed,
            stop,
            task,
        }
    }

    /// Stops writing; true when the run was written down (registered) at all, after a
    /// last write of what it holds now.
    pub async fn stop(self) -> bool {
        self.stop.cancel();
        self.task.await.unwrap_or(false)
    }
}

async fn keep(
    registry: Arc<Registry>,
    server: JupyterServer,
    exec: Arc<Execution>,
    record: RunRecord,
    changed: Arc<Notify>,
    stop: CancellationToken,
) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(AFTER) => {}
        _ = stop.cancelled() => return false,
    }
    let path = record.journal_path();
    // The file first, so a registered run always has one.
    let first = journal_of(&exec);
    if let Err(e) = server.put_file(&path, &first, "text").await {
        tracing::warn!(execution = %record.id, error = %e, "cannot write the run's journal; a gateway restart would lose the run");
        return false;
    }
    if let Err(e) = registry.add(&record).await {
        tracing::warn!(execution = %record.id, error = %e, "cannot register the run; a gateway restart would lose it");
        let _ = server.delete(&path).await;
        return false;
    }
    let mut written = first;
    loop {
        let stopping = tokio::select! {
            _ = changed.notified() => false,
            _ = stop.cancelled() => true,
        };
        if !stopping {
            let pause = if written.len() > LARGE {
                Duration::from_secs(1)
            } else {
                COALESCE
            };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = stop.cancelled() => {}
            }
        }
        let now = journal_of(&exec);
        if now != written {
            match server.overwrite_file(&path, &now).await {
                Ok(()) => written = now,
                Err(e) => {
                    tracing::warn!(execution = %record.id, error = %e, "cannot update the run's journal")
                }
            }
        }
        if stopping || stop.is_cancelled() {
            return true;
        }
    }
}

fn journal_of(exec: &Execution) -> String {
    let (outputs, count) = exec.outputs_and_count();
    let file = JournalFile::new(&exec.id, &exec.code, count, &outputs);
    serde_json::to_string(&file).unwrap_or_default()
}

/// Forgets a run that ended and was recorded: its record, then its file.
pub async fn forget(registry: &Registry, server: &JupyterServer, record: &RunRecord) {
    if let Err(e) = registry.remove(&record.id).await {
        tracing::warn!(execution = %record.id, error = %e, "cannot remove the run's record");
        return;
    }
    if let Err(e) = server.delete(&record.journal_path()).await {
        tracing::debug!(execution = %record.id, error = %e, "cannot remove the run's journal");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Map;

    fn record() -> RunRecord {
        RunRecord {
            id: "ex-abcd-0123456789".into(),
            session: "team/exp-1".into(),
            owner: Caller::User {
                name: "alice".into(),
                groups: vec!["lab".into()],
            },
            kernel_id: "k1".into(),
            msg_id: "m1".into(),
            placement: Placement::Replace(-1),
            created_at: "2026-12-03T10:00:00Z".into(),
            started_unix_ms: 1,
            timeout_seconds: 60,
            notebook_path: "dir/Fit.ipynb".into(),
        }
    }

    #[test]
    fn records_round_trip_and_name_their_file_next_to_the_notebook() {
        let r = record();
        let back: RunRecord = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
        assert_eq!(
            r.journal_path(),
            "dir/Fit_outputs/ex-abcd-0123456789.run.json"
        );
    }

    #[test]
    fn a_journal_keeps_text_and_leaves_out_figures_past_its_bound() {
        let text = Output::Stream {
            name: "stdout".into(),
            text: "tick 0\n".into(),
        };
        let mut data = Map::new();
        data.insert("image/png".into(), json!("x".repeat(MAX_RICH / 2 + 1)));
        let figure = Output::Display {
            data,
            metadata: Map::new(),
        };
        let outputs = vec![text.clone(), figure.clone(), figure.clone(), text.clone()];
        let file = JournalFile::new("ex-1", "print(1)", Some(3), &outputs);
        assert_eq!(file.rich_left_out, 1);
        let back = file.outputs();
        assert_eq!(back[0], text);
        assert_eq!(back[1], figure);
        assert_eq!(back[2], text);
        let Output::Stream { text: note, .. } = &back[3] else {
            panic!("{back:?}")
        };
        assert!(note.contains("1 figure(s)"), "{note}");
    }
}
