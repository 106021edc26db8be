//! Code runs on session kernels. Each run is a task of its own: a tool call waits for it
//! up to its sync timeout and otherwise hands back an execution id, while the run goes on
//! and can be polled, fetched or cancelled (an interrupt). Runs on one session queue on its
//! kernel channel; each finished run is written into the notebook, whichever way it ended.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::GatewayError;
use super::identity::Caller;
use super::journal::{self, JournalFile, Keeper, Registry, RunRecord};
use super::live::LiveSession;
use super::metrics::GatewayMetrics;
use super::names;
use super::record::{self, Change};
use super::render::{self, RenderOptions};
use super::spill::Spill;
use crate::jupyter::{ExecuteOptions, Follow, Output, OutputBudget};

/// How long a drain waits for runs going past its limit to be handed over.
const HANDOFF: Duration = Duration::from_secs(10);
/// How long a reattached run may be silent before the kernel's state is asked (and then
/// how long an idle kernel may stay silent before the run's end counts as lost).
const IDLE_CHECK: Duration = Duration::from_secs(3);

/// How long finished executions are kept for `get_execution_result`.
const KEEP_FINISHED: Duration = Duration::from_secs(3600);
/// At most this many finished executions are kept.
const MAX_FINISHED: usize = 2_000;

/// Where a run stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecStatus {
    Queued,
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl ExecStatus {
    pub fn finished(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

/// Where a finished run goes in the notebook.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Placement {
    Append,
    Replace(i64),
    /// Not recorded (internal runs such as `get_workspace`).
    Nowhere,
}

/// What a run is asked to do.
pub struct RunRequest {
    pub code: String,
    pub timeout: Duration,
    pub placement: Placement,
    pub store_history: bool,
}

#[derive(Clone, Debug)]
struct ExecState {
    status: ExecStatus,
    outputs: Vec<Output>,
    execution_count: Option<u64>,
    /// Why the run failed when it is not a Python exception (channel lost, …).
    failure: Option<String>,
    duration: Option<Duration>,
    full_output_path: Option<String>,
    record_error: Option<String>,
}

/// One run.
pub struct Execution {
    pub id: String,
    pub session: Arc<LiveSession>,
    pub owner: Caller,
    pub code: String,
    started: Instant,
    /// When it was submitted (RFC 3339), and for how long it may be asked about: its
    /// time limit plus the time a finished run is kept (`Tasks` report both).
    pub created_at: String,
    pub ttl: Duration,
    cancel: CancellationToken,
    /// Fired by a shutdown's drain: stop following the run and leave it to the next
    /// gateway process (see `journal`).
    handoff: CancellationToken,
    state: Mutex<ExecState>,
    done: watch::Sender<bool>,
}

impl ExecState {
    fn new(status: ExecStatus, outputs: Vec<Output>, execution_count: Option<u64>) -> Self {
        Self {
            status,
            outputs,
            execution_count,
            failure: None,
            duration: None,
            full_output_path: None,
            record_error: None,
        }
    }
}

impl Execution {
    /// A run `id` of `owner`'s, sent at `started` with time limit `timeout`.
    #[allow(clippy::too_many_arguments)]
    fn new(
        id: String,
        session: Arc<LiveSession>,
        owner: Caller,
        code: String,
        started: Instant,
        created_at: String,
        timeout: Duration,
        state: ExecState,
    ) -> Self {
        Self {
            id,
            session,
            owner,
            code,
            started,
            created_at,
            ttl: timeout.saturating_add(KEEP_FINISHED),
            cancel: CancellationToken::new(),
            handoff: CancellationToken::new(),
            state: Mutex::new(state),
            done: watch::channel(false).0,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ExecState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn status(&self) -> ExecStatus {
        self.state().status
    }

    /// The outputs so far.
    pub fn outputs(&self) -> Vec<Output> {
        self.state().outputs.clone()
    }

    /// The outputs so far and the execution count, read together.
    pub fn outputs_and_count(&self) -> (Vec<Output>, Option<u64>) {
        let st = self.state();
        (st.outputs.clone(), st.execution_count)
    }

    /// One line on where a going run stands (a task's status message).
    pub fn progress(&self) -> String {
        let st = self.state();
        let last = st
            .outputs
            .iter()
            .rev()
            .map(render::full_text)
            .find_map(|t| {
                t.lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .map(str::to_owned)
            });
        let mut line = format!(
            "{} for {}s",
            st.status.as_str(),
            self.started.elapsed().as_secs()
        );
        if let Some(l) = last {
            line.push_str("; last output: ");
            line.extend(l.chars().take(200));
        }
        line
    }

    /// Interrupts the kernel if the run is going; a no-op once it finished.
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// Waits until the run finished.
    pub async fn finished(&self) {
        let mut rx = self.done.subscribe();
        let _ = rx.wait_for(|d| *d).await;
    }

    /// Waits at most `limit`; true when finished.
    pub async fn finished_within(&self, limit: Duration) -> bool {
        tokio::time::timeout(limit, self.finished()).await.is_ok()
    }

    /// The run's outputs as MCP content, and whether it failed.
    pub fn content(&self, text_limit: usize) -> (Vec<rmcp::model::ContentBlock>, bool) {
        let st = self.state();
        let (mut blocks, mut is_error) = render::render(
            &st.outputs,
            &RenderOptions {
                text_limit,
                full_output_path: st.full_output_path.clone(),
            },
        );
        match st.status {
            ExecStatus::Cancelled => blocks.push(rmcp::model::ContentBlock::text(format!(
                "[execution {} was cancelled: the kernel was interrupted and is still usable]",
                self.id
            ))),
            ExecStatus::Failed if st.failure.is_some() => {
                is_error = true;
                blocks.push(rmcp::model::ContentBlock::text(format!(
                    "[execution {} failed: {}]",
                    self.id,
                    st.failure.clone().unwrap_or_default()
                )));
            }
            _ => {}
        }
        if st.status == ExecStatus::Failed {
            is_error = true;
        }
        (blocks, is_error)
    }

    /// A summary: status, elapsed time, output so far (text only, limited).
    pub fn summary(&self, text_limit: usize) -> Value {
        let st = self.state();
        let elapsed = st.duration.unwrap_or_else(|| self.started.elapsed());
        let mut text = String::new();
        for o in &st.outputs {
            text.push_str(&render::full_text(o));
        }
        if text.len() > text_limit {
            let mut cut = text.len() - text_limit;
            while !text.is_char_boundary(cut) {
                cut += 1;
            }
            text = format!("[… {cut} earlier bytes]\n{}", &text[cut..]);
        }
        json!({
            "execution_id": self.id,
            "session_id": self.session.id.to_string(),
            "status": st.status,
            "elapsed_seconds": (elapsed.as_millis() as f64) / 1000.0,
            "execution_count": st.execution_count,
            "output_so_far": text,
            "images": st.outputs.iter().filter(|o| matches!(o, Output::Display { data, .. } | Output::Result { data, .. } if data.keys().any(|k| k.starts_with("image/")))).count(),
            "failure": st.failure,
            "notebook_error": st.record_error,
            "code": self.code.chars().take(200).collect::<String>(),
        })
    }
}

/// What every run task needs besides its run.
#[derive(Clone)]
struct RunContext {
    text_limit: usize,
    metrics: Arc<GatewayMetrics>,
    /// Where runs that may outlive this process are written down (none: they are not).
    registry: Option<Arc<Registry>>,
}

/// Every run the gateway knows of.
pub struct Executions {
    runs: Mutex<HashMap<String, Arc<Execution>>>,
    ctx: RunContext,
    /// Every run task, so a shutdown can wait for them (see `drain`).
    tasks: TaskTracker,
    draining: std::sync::atomic::AtomicBool,
}

/// What a shutdown's drain saw.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Drained {
    /// Runs going when the drain began that ended (and were recorded) within its time.
    pub finished: usize,
    /// Runs still going at its end: handed over (or recorded as they stood, with a note).
    pub left_running: usize,
}

impl Executions {
    pub fn new(
        metrics: Arc<GatewayMetrics>,
        text_limit: usize,
        registry: Option<Arc<Registry>>,
    ) -> Self {
        Self {
            runs: Mutex::new(HashMap::new()),
            ctx: RunContext {
                text_limit,
                metrics,
                registry,
            },
            tasks: TaskTracker::new(),
            draining: Default::default(),
        }
    }

    pub fn registry(&self) -> Option<&Arc<Registry>> {
        self.ctx.registry.as_ref()
    }

    /// Whether a shutdown's drain has begun.
    pub fn draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// A shutdown: no new runs; waits up to `limit` for the runs going to end and be
    /// written into their notebooks. A run still going then is handed over: written down
    /// as it stands for the next gateway process to go on with (`journal`), or, when it
    /// cannot be, recorded in the notebook as it stands with a note that the gateway
    /// stopped, so the notebook never silently lacks a cell that ran.
    pub async fn drain(&self, limit: Duration) -> Drained {
        self.draining
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let going: Vec<Arc<Execution>> = self
            .runs()
            .values()
            .filter(|e| !e.status().finished())
            .cloned()
            .collect();
        self.tasks.close();
        if tokio::time::timeout(limit, self.tasks.wait()).await.is_ok() {
            return Drained {
                finished: going.len(),
                left_running: 0,
            };
        }
        let left: Vec<Arc<Execution>> = going
            .iter()
            .filter(|e| !e.status().finished())
            .cloned()
            .collect();
        for exec in &left {
            exec.handoff.cancel();
        }
        let _ = tokio::time::timeout(HANDOFF, self.tasks.wait()).await;
        Drained {
            finished: going.len() - left.len(),
            left_running: left.len(),
        }
    }

    fn runs(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Execution>>> {
        self.runs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a run in the background.
    pub fn submit(
        &self,
        session: Arc<LiveSession>,
        owner: &Caller,
        req: RunRequest,
    ) -> Result<Arc<Execution>, GatewayError> {
        if self.draining.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(GatewayError::NotReady(
                "the gateway is shutting down and takes no new runs; retry in a few seconds \
                 (the restarted gateway takes them)"
                    .into(),
            ));
        }
        let exec = Arc::new(Execution::new(
            names::execution_id(),
            session,
            owner.clone(),
            req.code.clone(),
            Instant::now(),
            k8s_openapi::jiff::Timestamp::now().to_string(),
            req.timeout,
            ExecState::new(ExecStatus::Queued, vec![], None),
        ));
        {
            let mut runs = self.runs();
            // Expired runs go in `prune`; only a flood of runs is cut here.
            if runs.len() > MAX_FINISHED {
                runs.retain(|_, e| !e.status().finished());
            }
            if !matches!(req.placement, Placement::Nowhere) {
                runs.insert(exec.id.clone(), exec.clone());
            }
        }
        self.ctx.metrics.running_executions.inc();
        self.tasks.spawn(run(exec.clone(), req, self.ctx.clone()));
        Ok(exec)
    }

    /// Goes on with a run a previous gateway process left (`reattach`): under its id and
    /// owner, from the outputs its journal holds. Returns once the run holds the kernel's
    /// channel.
    pub async fn resume(&self, session: Arc<LiveSession>, record: RunRecord, file: JournalFile) {
        let now = k8s_openapi::jiff::Timestamp::now().as_millisecond();
        let ago = u64::try_from(now.saturating_sub(record.started_unix_ms)).unwrap_or(0);
        let started = Instant::now()
            .checked_sub(Duration::from_millis(ago))
            .unwrap_or_else(Instant::now);
        let timeout = Duration::from_secs(record.timeout_seconds);
        let outputs = file.outputs();
        let exec = Arc::new(Execution::new(
            record.id.clone(),
            session.clone(),
            record.owner.clone(),
            file.code,
            started,
            record.created_at.clone(),
            timeout,
            ExecState::new(ExecStatus::Running, outputs.clone(), file.execution_count),
        ));
        self.runs().insert(exec.id.clone(), exec.clone());
        self.ctx.metrics.running_executions.inc();
        let (locked, holds) = tokio::sync::oneshot::channel();
        let ctx = self.ctx.clone();
        self.tasks.spawn(async move {
            let slot = session.kernel.lock().await;
            let _ = locked.send(());
            let from = Follow {
                started,
                outputs,
                execution_count: file.execution_count,
                idle_check: Some(IDLE_CHECK),
            };
            follow(exec, slot, record, from, ctx).await;
        });
        let _ = holds.await;
    }

    /// Forgets runs that finished more than an hour ago (called periodically).
    pub fn prune(&self) {
        self.runs().retain(|_, e| {
            let st = e.state();
            // A run's end is its start plus its duration (set when it finished).
            let ran = st.duration.unwrap_or_default();
            !st.status.finished() || e.started.elapsed() < ran.saturating_add(KEEP_FINISHED)
        });
    }

    /// A run of `caller`'s (others' runs read as not found).
    pub fn get(&self, id: &str, caller: &Caller) -> Result<Arc<Execution>, GatewayError> {
        let found = self.runs().get(id).filter(|e| &e.owner == caller).cloned();
        found.ok_or_else(|| match names::execution_instance(id) {
            // Told apart from an id that never existed, so the agent does not simply run
            // the code again.
            Some(instance) if instance != names::instance() => GatewayError::Failed(format!(
                "execution {id} was started by an earlier gateway process, which has stopped \
                 (a restart), so its result is gone from the gateway. The kernel ran it: \
                 read_notebook shows the cell if it was recorded (a run going when the gateway \
                 stopped is recorded as it stood, with a note) and get_workspace shows its \
                 variables; check those before running it again"
            )),
            _ => GatewayError::NotFound(format!("execution {id}")),
        })
    }

    /// Unfinished runs on a session, whoever started them.
    pub fn running_on(&self, session: &str) -> Vec<Arc<Execution>> {
        self.runs()
            .values()
            .filter(|e| !e.status().finished() && e.session.id.to_string() == session)
            .cloned()
            .collect()
    }

    /// `caller`'s runs, newest first, optionally of one session.
    pub fn list(&self, caller: &Caller, session: Option<&str>) -> Vec<Arc<Execution>> {
        let mut v: Vec<Arc<Execution>> = self
            .runs()
            .values()
            .filter(|e| &e.owner == caller)
            .filter(|e| session.is_none_or(|s| e.session.id.to_string() == s))
            .cloned()
            .collect();
        v.sort_by_key(|e| std::cmp::Reverse(e.started));
        v
    }
}

/// Runs one execution to its end and records it.
async fn run(exec: Arc<Execution>, req: RunRequest, ctx: RunContext) {
    let session = exec.session.clone();
    let mut slot = session.kernel.lock().await;
    exec.state().status = ExecStatus::Running;
    let sent = match session.channel(&mut slot).await {
        Ok(channel) => channel
            .send_execute(&req.code, req.store_history)
            .await
            .map_err(GatewayError::from),
        Err(e) => Err(e),
    };
    let msg_id = match sent {
        Ok(id) => id,
        Err(e) => {
            *slot = None;
            {
                let mut st = exec.state();
                st.duration = Some(exec.started.elapsed());
                st.failure = Some(e.to_string());
                st.status = ExecStatus::Failed;
            }
            finish(&exec, req.placement, &ctx.metrics, None, slot, None).await;
            return;
        }
    };
    let record = RunRecord {
        id: exec.id.clone(),
        session: session.id.to_string(),
        owner: exec.owner.clone(),
        kernel_id: session.kernel_id.clone(),
        msg_id: msg_id.clone(),
        placement: req.placement,
        created_at: exec.created_at.clone(),
        started_unix_ms: unix_ms_ago(exec.started.elapsed()),
        timeout_seconds: req.timeout.as_secs(),
        notebook_path: session.notebook_path.clone(),
    };
    let from = Follow::new(exec.started);
    follow(exec, slot, record, from, ctx).await;
}

/// Milliseconds since the epoch, `ago` before now.
fn unix_ms_ago(ago: Duration) -> i64 {
    let now = k8s_openapi::jiff::Timestamp::now().as_millisecond();
    now.saturating_sub(i64::try_from(ago.as_millis()).unwrap_or(i64::MAX))
}

/// Follows a sent run to its end (or to a hand-over), journaling it while it goes when it
/// is recorded and a registry is set, and records it.
async fn follow(
    exec: Arc<Execution>,
    mut slot: Slot<'_>,
    record: RunRecord,
    from: Follow,
    ctx: RunContext,
) {
    let RunContext {
        text_limit,
        metrics,
        registry,
    } = ctx;
    let timeout = Duration::from_secs(record.timeout_seconds);
    let session = exec.session.clone();
    // Recorded runs keep a head and a tail of their text in memory and stream the whole
    // to a file next to the notebook once it passes the text limit.
    let recorded = !matches!(record.placement, Placement::Nowhere);
    let mut spill = recorded.then(|| {
        let path = names::output_file(&session.notebook_path, &exec.id);
        Spill::new(session.server.clone(), path, text_limit)
    });
    let keeper = registry.as_ref().filter(|_| recorded).map(|r| {
        Keeper::spawn(
            r.clone(),
            session.server.clone(),
            exec.clone(),
            record.clone(),
        )
    });
    let changed = keeper.as_ref().map(|k| k.changed.clone());
    let budget = match &spill {
        Some(s) => OutputBudget {
            whole_at: Some(s.path().to_owned()),
            ..OutputBudget::default()
        },
        None => OutputBudget::default(),
    };
    // The request is sent already: whether it counts in the history was said then.
    let options = ExecuteOptions {
        cancel: exec.cancel.clone(),
        budget,
        pace: spill.as_ref().map(Spill::pace),
        ..ExecuteOptions::new(timeout)
    };
    let followed = match session.channel(&mut slot).await {
        Ok(channel) => {
            let going = channel.follow(&record.msg_id, options, from, |change| {
                if let Some(s) = spill.as_mut() {
                    s.observe(change);
                }
                change.apply_to(&mut exec.state().outputs);
                if let Some(c) = &changed {
                    c.notify_one();
                }
            });
            tokio::select! {
                r = going => Some(r.map_err(GatewayError::from)),
                _ = exec.handoff.cancelled() => None,
            }
        }
        Err(e) => Some(Err(e)),
    };
    if followed.is_none() {
        // Handed over: close the channel now, so Jupyter starts keeping the kernel's
        // messages for the next process at once (what reached this socket unread is lost).
        *slot = None;
    }
    let registered = match keeper {
        Some(k) => k.stop().await,
        None => false,
    };
    let Some(result) = followed else {
        // A shutdown's drain: the next gateway process goes on with a run written down;
        // one that is not is recorded as it stands.
        if registered {
            tracing::info!(execution = %exec.id, "run handed over to the next gateway process");
            metrics.running_executions.dec();
            exec.state().failure = Some("handed over to the next gateway process".into());
            exec.done.send_replace(true);
            return;
        }
        {
            let mut st = exec.state();
            st.outputs.push(Output::Stream {
                name: "stderr".into(),
                text: format!(
                    "\n[slurmlab: the gateway stopped after {}s of this run; the kernel went \
                     on with it, but output after this point is not recorded]\n",
                    exec.started.elapsed().as_secs()
                ),
            });
            st.duration = Some(exec.started.elapsed());
        }
        let note = Some("running when the gateway stopped");
        finish(&exec, record.placement, &metrics, note, slot, None).await;
        return;
    };
    if result.is_err() {
        // Reconnect on the next run.
        *slot = None;
    }
    {
        let mut st = exec.state();
        match &result {
            Ok(done) => {
                st.outputs = done.outputs.clone();
                st.execution_count = done.execution_count;
                st.duration = Some(exec.started.elapsed());
                st.status = if done.cancelled {
                    ExecStatus::Cancelled
                } else if done.lost_end {
                    st.failure = Some(
                        "the kernel finished this run while no gateway listened, and its last \
                         messages were not kept (another client connected to the kernel \
                         meanwhile); its outputs up to the restart are shown"
                            .into(),
                    );
                    ExecStatus::Failed
                } else if done.interrupted {
                    st.failure = Some(format!(
                        "timed out after {}s; the kernel was interrupted",
                        timeout.as_secs()
                    ));
                    ExecStatus::Failed
                } else if done.status == "ok" {
                    ExecStatus::Completed
                } else {
                    ExecStatus::Failed
                };
            }
            Err(e) => {
                st.duration = Some(exec.started.elapsed());
                st.failure = Some(e.to_string());
                st.status = ExecStatus::Failed;
            }
        }
    }
    if let Some(spill) = spill {
        match spill.finish().await {
            Ok(path) => exec.state().full_output_path = path,
            Err(e) => {
                tracing::warn!(execution = %exec.id, error = %e, "cannot save the whole output")
            }
        }
    }
    let journal = registry.filter(|_| registered).map(|r| (r, record.clone()));
    finish(&exec, record.placement, &metrics, None, slot, journal).await;
}

type Slot<'a> = tokio::sync::MutexGuard<'a, Option<crate::jupyter::KernelChannel>>;

/// Records a run that ended. Its cell is queued before the run reads as finished and
/// before the kernel is released (`slot`), so the notebook's order is the run order and a
/// later read sees this cell; then the write is awaited and the run's journal forgotten.
async fn finish(
    exec: &Arc<Execution>,
    placement: Placement,
    metrics: &GatewayMetrics,
    status_note: Option<&str>,
    slot: Slot<'_>,
    journal: Option<(Arc<Registry>, RunRecord)>,
) {
    let (status, duration, outputs, execution_count) = {
        let st = exec.state();
        (
            st.status,
            st.duration.unwrap_or_default(),
            st.outputs.clone(),
            st.execution_count,
        )
    };
    metrics.execution(status.as_str(), duration);
    metrics.running_executions.dec();
    let metadata = record::cell_metadata(
        &exec.id,
        duration.as_millis(),
        status_note.unwrap_or(status.as_str()),
    );
    let session = &exec.session;
    let queued = match placement {
        Placement::Nowhere => None,
        Placement::Append => Some(session.notebook.submit(Change::Append {
            source: exec.code.clone(),
            outputs,
            execution_count,
            metadata,
        })),
        Placement::Replace(index) => Some(session.notebook.submit(Change::Replace {
            index,
            source: exec.code.clone(),
            outputs,
            execution_count,
        })),
    };
    exec.done.send_replace(true);
    drop(slot);
    if let Some(queued) = queued
        && let Err(e) = record::answer(queued).await
    {
        tracing::warn!(session = %session.id, execution = %exec.id, error = %e, "cannot record the cell in the notebook");
        exec.state().record_error = Some(e.to_string());
    }
    if let Some((registry, record)) = journal {
        journal::forget(&registry, &session.server, &record).await;
    }
}
