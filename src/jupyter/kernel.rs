//! One kernel's websocket channel: execute code and collect every output until the
//! reply and `idle`, interrupting (through REST) when a timeout passes.

use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use jupyter_protocol::{
    ExecuteRequest, ExecutionState, JupyterMessage, JupyterMessageContent, KernelInfoRequest,
    ReplyStatus, Stdio,
};
use jupyter_websocket_client::{JupyterWebSocketReader, JupyterWebSocketWriter, RemoteServer};
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use super::bounded::{Bounded, OutputBudget, Pace};
use super::{JupyterError, JupyterServer, error_chain};

/// One output of an execution, in nbformat's terms.
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    /// Text on stdout or stderr (consecutive chunks of one stream are merged).
    Stream { name: String, text: String },
    /// The value of the last expression.
    Result {
        execution_count: Option<u64>,
        data: Map<String, Value>,
        metadata: Map<String, Value>,
    },
    /// A rich display (e.g. a matplotlib figure: `image/png`, base64).
    Display {
        data: Map<String, Value>,
        metadata: Map<String, Value>,
    },
    /// An exception.
    Error {
        ename: String,
        evalue: String,
        traceback: Vec<String>,
    },
}

impl Output {
    /// An nbformat v4 output object read back (None for one of another shape).
    pub fn from_nbformat(v: &Value) -> Option<Self> {
        let map = |k: &str| {
            v.get(k)
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default()
        };
        let text = |k: &str| match v.get(k) {
            Some(Value::String(s)) => Some(s.clone()),
            // nbformat allows multiline text as a list of lines.
            Some(Value::Array(lines)) => Some(lines.iter().filter_map(Value::as_str).collect()),
            _ => None,
        };
        Some(match v.get("output_type")?.as_str()? {
            "stream" => Self::Stream {
                name: v.get("name")?.as_str()?.to_owned(),
                text: text("text")?,
            },
            "execute_result" => Self::Result {
                execution_count: v.get("execution_count").and_then(Value::as_u64),
                data: map("data"),
                metadata: map("metadata"),
            },
            "display_data" => Self::Display {
                data: map("data"),
                metadata: map("metadata"),
            },
            "error" => Self::Error {
                ename: v.get("ename")?.as_str()?.to_owned(),
                evalue: v.get("evalue")?.as_str()?.to_owned(),
                traceback: v
                    .get("traceback")?
                    .as_array()?
                    .iter()
                    .filter_map(|l| l.as_str().map(str::to_owned))
                    .collect(),
            },
            _ => return None,
        })
    }

    /// The output as a notebook (nbformat v4) output object.
    pub fn to_nbformat(&self) -> Value {
        match self {
            Self::Stream { name, text } => {
                json!({"output_type": "stream", "name": name, "text": text})
            }
            Self::Result {
                execution_count,
                data,
                metadata,
            } => json!({
                "output_type": "execute_result", "execution_count": execution_count, "data": data, "metadata": metadata
            }),
            Self::Display { data, metadata } => {
                json!({"output_type": "display_data", "data": data, "metadata": metadata})
            }
            Self::Error {
                ename,
                evalue,
                traceback,
            } => {
                json!({"output_type": "error", "ename": ename, "evalue": evalue, "traceback": traceback})
            }
        }
    }
}

/// How a running execution's outputs changed: what [`KernelChannel::execute_with`]
/// reports, so an observer keeps its own copy in step at the cost of the change only.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum OutputChange<'a> {
    /// A new output at the end.
    Pushed(&'a Output),
    /// More text for the last output (a stream).
    Appended(&'a str),
    /// `clear_output`: everything so far is gone.
    Cleared,
    /// The output at this index was rewritten (its middle left out to stay in budget).
    Replaced(usize, &'a Output),
}

impl OutputChange<'_> {
    /// Applies the change to a copy of the outputs.
    pub fn apply_to(self, outputs: &mut Vec<Output>) {
        match self {
            Self::Pushed(o) => outputs.push(o.clone()),
            Self::Appended(more) => {
                if let Some(Output::Stream { text, .. }) = outputs.last_mut() {
                    text.push_str(more);
                }
            }
            Self::Cleared => outputs.clear(),
            Self::Replaced(i, o) => {
                if let Some(slot) = outputs.get_mut(i) {
                    *slot = o.clone();
                }
            }
        }
    }
}

/// What one `execute_request` produced.
#[derive(Clone, Debug, PartialEq)]
pub struct Execution {
    pub outputs: Vec<Output>,
    pub execution_count: Option<u64>,
    /// `ok`, `error` or `aborted`.
    pub status: String,
    /// The timeout passed (or a cancel came) and the kernel was interrupted.
    pub interrupted: bool,
    /// The interrupt came from [`ExecuteOptions::cancel`].
    pub cancelled: bool,
    /// Followed after a reconnect, the run's end never came: the kernel went idle, but
    /// its last messages were not kept for this client (see [`Follow::idle_check`]).
    pub lost_end: bool,
    pub duration: Duration,
}

/// Where [`KernelChannel::follow`] picks a run up.
#[derive(Clone, Debug)]
pub struct Follow {
    /// When the run was sent (its timeout and duration count from here).
    pub started: Instant,
    /// Its outputs so far, and its execution count if known.
    pub outputs: Vec<Output>,
    pub execution_count: Option<u64>,
    /// For a run sent before a reconnect: how long without a message of the run before
    /// the kernel's state is asked, and then how long an idle kernel may stay silent
    /// before the run's end counts as lost.
    pub idle_check: Option<Duration>,
}

impl Follow {
    /// A run just sent.
    pub fn new(started: Instant) -> Self {
        Self {
            started,
            outputs: vec![],
            execution_count: None,
            idle_check: None,
        }
    }
}

/// How to run one `execute_request`.
#[derive(Clone, Debug)]
pub struct ExecuteOptions {
    /// After this the kernel is interrupted.
    pub timeout: Duration,
    /// Fired to interrupt the kernel (e.g. an agent cancelled the run).
    pub cancel: CancellationToken,
    /// Whether the cell counts in the kernel's history (`In[n]`, execution count).
    pub store_history: bool,
    /// How much output is kept in memory (see `bounded`).
    pub budget: OutputBudget,
    /// Messages are read only while this consumer keeps up.
    pub pace: Option<std::sync::Arc<Pace>>,
}

impl ExecuteOptions {
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            cancel: CancellationToken::new(),
            store_history: true,
            budget: OutputBudget::default(),
            pace: None,
        }
    }
}

impl Execution {
    /// The first error output, if any.
    pub fn error(&self) -> Option<(&str, &str)> {
        self.outputs.iter().find_map(|o| match o {
            Output::Error { ename, evalue, .. } => Some((ename.as_str(), evalue.as_str())),
            _ => None,
        })
    }
}

/// How long to wait for the kernel to settle after an interrupt.
const AFTER_INTERRUPT: Duration = Duration::from_secs(15);

/// A connected kernel websocket.
pub struct KernelChannel {
    kernel_id: String,
    server: JupyterServer,
    writer: JupyterWebSocketWriter,
    reader: JupyterWebSocketReader,
}

impl KernelChannel {
    /// Opens `/api/kernels/{id}/channels`, as websocket session `session` if given.
    /// Jupyter keeps a kernel's messages while no connection is open and hands them to the
    /// next connection of the same session (a connection of another session discards
    /// them), so a client that always connects as the same session gets what the kernel
    /// said while it was away.
    pub async fn connect(
        server: &JupyterServer,
        kernel_id: &str,
        session: Option<&str>,
    ) -> Result<Self, JupyterError> {
        let remote = RemoteServer {
            base_url: server.base_url().to_owned(),
            token: server.token().to_owned(),
        };
        let (socket, _) = remote
            .connect_to_kernel_with_session(kernel_id, session)
            .await
            .map_err(|e| JupyterError::Channel {
                kernel_id: kernel_id.to_owned(),
                detail: format!("cannot connect: {}", error_chain(e.as_ref())),
            })?;
        let (writer, reader) = socket.split();
        Ok(Self {
            kernel_id: kernel_id.to_owned(),
            server: server.clone(),
            writer,
            reader,
        })
    }

    pub fn kernel_id(&self) -> &str {
        &self.kernel_id
    }

    fn channel_error(&self, detail: impl Into<String>) -> JupyterError {
        JupyterError::Channel {
            kernel_id: self.kernel_id.clone(),
            detail: detail.into(),
        }
    }

    /// Waits until the kernel answers a `kernel_info_request` (it is started and listening).
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<(), JupyterError> {
        let request: JupyterMessage = KernelInfoRequest {}.into();
        let msg_id = request.header.msg_id.clone();
        self.writer
            .send(request)
            .await
            .map_err(|e| self.channel_error(format!("send failed: {e}")))?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let next = tokio::time::timeout_at(deadline, self.reader.next())
                .await
                .map_err(|_| {
                    self.channel_error(format!("no kernel_info_reply within {timeout:?}"))
                })?;
            match next {
                Some(Ok(msg)) => {
                    let ours = msg.parent_header.as_ref().map(|h| h.msg_id.as_str())
                        == Some(msg_id.as_str());
                    if ours && matches!(msg.content, JupyterMessageContent::KernelInfoReply(_)) {
                        return Ok(());
                    }
                }
                Some(Err(e)) => return Err(self.channel_error(format!("receive failed: {e}"))),
                None => {
                    return Err(self.channel_error(
                        "the server closed the channel (kernel died or server gone)",
                    ));
                }
            }
        }
    }

    /// Runs `code`; after `timeout` the kernel is interrupted and the outputs so far are
    /// returned with `interrupted` set (the kernel stays usable).
    pub async fn execute(
        &mut self,
        code: &str,
        timeout: Duration,
    ) -> Result<Execution, JupyterError> {
        self.execute_with(code, ExecuteOptions::new(timeout), |_| {})
            .await
    }

    /// Runs `code` like [`execute`](Self::execute), telling `observe` how the outputs
    /// change as messages arrive, and interrupting the kernel when `options.cancel` fires.
    pub async fn execute_with(
        &mut self,
        code: &str,
        options: ExecuteOptions,
        observe: impl FnMut(OutputChange<'_>),
    ) -> Result<Execution, JupyterError> {
        let started = Instant::now();
        let msg_id = self.send_execute(code, options.store_history).await?;
        self.follow(&msg_id, options, Follow::new(started), observe)
            .await
    }

    /// Sends an `execute_request`; returns its message id (what its outputs answer to).
    pub async fn send_execute(
        &mut self,
        code: &str,
        store_history: bool,
    ) -> Result<String, JupyterError> {
        let mut request = ExecuteRequest::new(code.to_owned());
        request.store_history = store_history;
        let request: JupyterMessage = request.into();
        let msg_id = request.header.msg_id.clone();
        self.writer
            .send(request)
            .await
            .map_err(|e| self.channel_error(format!("send failed: {e}")))?;
        Ok(msg_id)
    }

    /// Collects the outputs of the run `msg_id` until its reply and `idle` (see
    /// [`Follow`] for a run sent earlier, e.g. by a gateway process before a restart).
    pub async fn follow(
        &mut self,
        msg_id: &str,
        options: ExecuteOptions,
        from: Follow,
        mut observe: impl FnMut(OutputChange<'_>),
    ) -> Result<Execution, JupyterError> {
        let ExecuteOptions {
            timeout,
            cancel,
            store_history: _,
            budget,
            pace,
        } = options;
        let Follow {
            started,
            outputs,
            execution_count,
            idle_check,
        } = from;
        let mut bounded = Bounded::new(budget);
        for o in &outputs {
            if let Output::Result { data, .. } | Output::Display { data, .. } = o {
                bounded.admit_rich(bundle_size(data));
            }
        }
        let mut deadline = tokio::time::Instant::now() + timeout.saturating_sub(started.elapsed());
        let mut exec = Execution {
            outputs,
            execution_count,
            status: "ok".into(),
            interrupted: false,
            cancelled: false,
            lost_end: false,
            duration: Duration::ZERO,
        };
        // Reattached: when the kernel says it is idle and nothing of this run came for a
        // while, its end was lost (the messages were not kept for us).
        let mut quiet_since = tokio::time::Instant::now();
        let mut idle_seen_at: Option<tokio::time::Instant> = None;
        let (mut replied, mut idle) = (false, false);
        while !(replied && idle) {
            if let Some(check) = idle_check {
                let now = tokio::time::Instant::now();
                if let Some(at) = idle_seen_at
                    && now.duration_since(at) >= check
                {
                    exec.lost_end = true;
                    break;
                }
                if idle_seen_at.is_none() && now.duration_since(quiet_since) >= check {
                    let state = self.server.kernel(&self.kernel_id).await?;
                    if state.and_then(|k| k.execution_state).as_deref() == Some("idle") {
                        idle_seen_at = Some(now);
                    }
                    quiet_since = now;
                }
            }
            if let Some(pace) = &pace {
                // Wait for the consumer; the timeout and a cancel still apply below.
                tokio::select! {
                    _ = pace.below() => {}
                    _ = tokio::time::sleep_until(deadline) => {}
                    _ = cancel.cancelled() => {}
                }
            }
            let tick = match idle_check {
                Some(check) => quiet_since + check,
                None => deadline,
            };
            let next = tokio::select! {
                next = tokio::time::timeout_at(deadline, self.reader.next()) => next,
                _ = tokio::time::sleep_until(tick), if idle_check.is_some() && tick < deadline => continue,
                _ = cancel.cancelled(), if !exec.interrupted && !exec.cancelled => {
                    exec.cancelled = true;
                    exec.interrupted = true;
                    self.server.interrupt(&self.kernel_id).await?;
                    deadline = tokio::time::Instant::now() + AFTER_INTERRUPT;
                    continue;
                }
            };
            let next = match next {
                Ok(next) => next,
                Err(_) if !exec.interrupted => {
                    exec.interrupted = true;
                    self.server.interrupt(&self.kernel_id).await?;
                    deadline = tokio::time::Instant::now() + AFTER_INTERRUPT;
                    continue;
                }
                Err(_) => {
                    return Err(self.channel_error(
                        "the kernel did not settle after an interrupt; restart it",
                    ));
                }
            };
            let msg = match next {
                Some(Ok(msg)) => msg,
                Some(Err(e)) => return Err(self.channel_error(format!("receive failed: {e}"))),
                None => {
                    return Err(self.channel_error(
                        "the server closed the channel (kernel died or server gone)",
                    ));
                }
            };
            if msg.parent_header.as_ref().map(|h| h.msg_id.as_str()) != Some(msg_id) {
                continue;
            }
            quiet_since = tokio::time::Instant::now();
            idle_seen_at = None;
            let pushed = match msg.content {
                JupyterMessageContent::StreamContent(s) => {
                    let name = match s.name {
                        Stdio::Stdout => "stdout",
                        Stdio::Stderr => "stderr",
                    };
                    let index = exec.outputs.len().saturating_sub(1);
                    let rewritten = match exec.outputs.last_mut() {
                        Some(Output::Stream { name: last, text }) if last == name => {
                            text.push_str(&s.text);
                            Some(bounded.after_append(index, text))
                        }
                        _ => None,
                    };
                    match rewritten {
                        Some(rewritten) => {
                            observe(OutputChange::Appended(&s.text));
                            if rewritten && let Some(o) = exec.outputs.get(index) {
                                observe(OutputChange::Replaced(index, o));
                            }
                            continue;
                        }
                        None => Output::Stream {
                            name: name.into(),
                            text: s.text,
                        },
                    }
                }
                JupyterMessageContent::ExecuteResult(r) => {
                    let data = media_map(&r.data);
                    if bounded.admit_rich(bundle_size(&data)) {
                        Output::Result {
                            execution_count: Some(r.execution_count.value() as u64),
                            data,
                            metadata: r.metadata,
                        }
                    } else {
                        rich_note(&bounded)
                    }
                }
                JupyterMessageContent::DisplayData(d) => {
                    let data = media_map(&d.data);
                    if bounded.admit_rich(bundle_size(&data)) {
                        Output::Display {
                            data,
                            metadata: d.metadata,
                        }
                    } else {
                        rich_note(&bounded)
                    }
                }
                JupyterMessageContent::ErrorOutput(e) => Output::Error {
                    ename: e.ename,
                    evalue: e.evalue,
                    traceback: e.traceback,
                },
                JupyterMessageContent::ClearOutput(_) => {
                    exec.outputs.clear();
                    bounded.clear();
                    observe(OutputChange::Cleared);
                    continue;
                }
                JupyterMessageContent::ExecuteReply(r) => {
                    replied = true;
                    exec.execution_count = Some(r.execution_count.value() as u64);
                    exec.status = match r.status {
                        ReplyStatus::Ok => "ok",
                        ReplyStatus::Error => "error",
                        ReplyStatus::Aborted => "aborted",
                    }
                    .into();
                    continue;
                }
                JupyterMessageContent::Status(s) if s.execution_state == ExecutionState::Idle => {
                    idle = true;
                    continue;
                }
                _ => continue,
            };
            exec.outputs.push(pushed);
            let index = exec.outputs.len() - 1;
            observe(OutputChange::Pushed(&exec.outputs[index]));
            // One huge message is kept within budget too.
            if let Some(Output::Stream { text, .. }) = exec.outputs.get_mut(index)
                && bounded.after_append(index, text)
            {
                observe(OutputChange::Replaced(index, &exec.outputs[index]));
            }
        }
        exec.duration = started.elapsed();
        Ok(exec)
    }
}

/// Bytes of a MIME bundle's values (base64 images are most of it).
fn bundle_size(data: &Map<String, Value>) -> usize {
    data.values()
        .map(|v| match v {
            Value::String(s) => s.len(),
            other => other.to_string().len(),
        })
        .sum()
}

/// What stands for a rich output past the run's budget.
fn rich_note(bounded: &Bounded) -> Output {
    Output::Stream {
        name: "stderr".into(),
        text: bounded.rich_note(),
    }
}

/// A MIME bundle as JSON (`{"text/plain": "...", "image/png": "<base64>"}`).
fn media_map(media: &jupyter_protocol::Media) -> Map<String, Value> {
    match serde_json::to_value(media) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_keep_a_copy_of_the_outputs_in_step() {
        let mut copy = vec![];
        let first = Output::Stream {
            name: "stdout".into(),
            text: "a".into(),
        };
        OutputChange::Pushed(&first).apply_to(&mut copy);
        OutputChange::Appended("bc").apply_to(&mut copy);
        assert_eq!(
            copy,
            vec![Output::Stream {
                name: "stdout".into(),
                text: "abc".into()
            }]
        );
        OutputChange::Cleared.apply_to(&mut copy);
        assert!(copy.is_empty());
    }

    #[test]
    fn outputs_become_nbformat_objects() {
        let out = Output::Stream {
            name: "stdout".into(),
            text: "hi\n".into(),
        };
        assert_eq!(
            out.to_nbformat(),
            json!({"output_type": "stream", "name": "stdout", "text": "hi\n"})
        );
        let mut data = Map::new();
        data.insert("text/plain".into(), json!("2"));
        let out = Output::Result {
            execution_count: Some(3),
            data,
            metadata: Map::new(),
        };
        assert_eq!(out.to_nbformat()["execution_count"], 3);
        let err = Output::Error {
            ename: "ValueError".into(),
            evalue: "bad".into(),
            traceback: vec!["tb".into()],
        };
        assert_eq!(err.to_nbformat()["output_type"], "error");
        // And back.
        for o in [&out, &err] {
            assert_eq!(Output::from_nbformat(&o.to_nbformat()).as_ref(), Some(o));
        }
        let lines = json!({"output_type": "stream", "name": "stdout", "text": ["a\n", "b"]});
        assert_eq!(
            Output::from_nbformat(&lines),
            Some(Output::Stream {
                name: "stdout".into(),
                text: "a\nb".into()
            })
        );
        // nbformat accepts what we produce.
        let parsed: nbformat::v4::Output = serde_json::from_value(err.to_nbformat()).unwrap();
        assert!(matches!(parsed, nbformat::v4::Output::Error(_)));
    }
}
