//! The MCP server: tools and resources over the gateway's state. Every call runs as its
//! caller; failures come back as tool results with `isError` and a message that says what
//! to do, so the agent can act on them.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolResponse, CallToolResult, CancelTaskParams, ContentBlock, CreateTaskResult,
    DetailedTask, GetTaskParams, GetTaskResult, Implementation, ListResourcesResult,
    PaginatedRequestParams, ProgressNotificationParam, ReadResourceRequestParams,
    ReadResourceResponse, ReadResourceResult, Resource, ResourceContents, ServerCapabilities,
    ServerConfig, UpdateTaskParams,
};
use rmcp::service::RequestContext;
use rmcp::task_manager::TaskExit;
use rmcp::{ErrorData, RoleServer, ServerHandler, tool, tool_handler, tool_router};
use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedSender;

use super::GatewayError;
use super::executions::{ExecStatus, Execution, Placement, RunRequest};
use super::identity::Caller;
use super::live::{Access, LiveSession};
use super::params::*;
use super::sessions::{NotebookChoice, SessionId, StartRequest};
use super::state::GatewayState;
use super::{record, tasks, workspace};
use crate::jupyter::notebook;

/// The gateway's MCP service (one per connection; the state is shared).
#[derive(Clone)]
pub struct SlurmlabMcp {
    state: Arc<GatewayState>,
    #[allow(dead_code)] // read by the tool_handler macro
    tool_router: ToolRouter<Self>,
}

type ToolResult = Result<CallToolResult, ErrorData>;
/// A tool that may answer with a task (when the client takes tasks).
type TaskOrResult = Result<CallToolResponse, ErrorData>;

impl SlurmlabMcp {
    /// Every tool the gateway serves (names, descriptions, input schemas).
    pub fn tool_list() -> Vec<rmcp::model::Tool> {
        Self::tool_router().list_all()
    }

    pub fn new(state: Arc<GatewayState>) -> Self {
        Self {
            state,
            tool_router: Self::tool_router(),
        }
    }

    /// Who is calling: the HTTP layer put an authenticated caller into the request; on
    /// stdio the caller is the gateway's own kubeconfig user.
    fn caller(&self, ctx: &RequestContext<RoleServer>) -> Result<Caller, GatewayError> {
        let from_http = ctx
            .extensions
            .get::<axum::http::request::Parts>()
            .and_then(|p| p.extensions.get::<Caller>())
            .cloned();
        match from_http {
            Some(c) => Ok(c),
            None => match &self.state.settings.local_caller {
                Some(local) => Ok(local.clone()),
                None => Err(GatewayError::Forbidden("no authenticated caller".into())),
            },
        }
    }

    fn namespace(&self, ns: Option<String>) -> Result<String, GatewayError> {
        let ns = ns
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| self.state.settings.default_namespace.clone());
        if super::names::is_dns_label(&ns) {
            Ok(ns)
        } else {
            Err(GatewayError::Invalid(format!(
                "namespace {ns:?} is not a valid namespace name"
            )))
        }
    }

    /// The Ready session `id`, if `caller` has `access` to it.
    async fn live(
        &self,
        caller: &Caller,
        id: &str,
        access: Access,
    ) -> Result<Arc<LiveSession>, GatewayError> {
        let id = SessionId::parse(id, &self.state.settings.default_namespace)?;
        let client = self.state.access.client_for(caller)?;
        self.state.live.get(client, caller, &id, access).await
    }

    /// Runs `code` and puts it with its outputs into cell `index` (edit_cell, run_cell).
    async fn run_in_cell(
        &self,
        live: Arc<LiveSession>,
        caller: &Caller,
        index: i64,
        code: String,
        timeout: Option<u64>,
    ) -> Result<CallToolResult, GatewayError> {
        let exec = self.state.executions.submit(
            live,
            caller,
            RunRequest {
                code,
                timeout: self.state.settings.run_timeout(timeout),
                placement: Placement::Replace(index),
                store_history: true,
            },
        )?;
        exec.finished().await;
        Ok(self.result_of(&exec).await)
    }

    /// A tool that edits the notebook without running anything: `change` applied for a
    /// caller who may run code in the session; the answer carries its result under `key`.
    async fn edit_notebook(
        &self,
        tool: &'static str,
        ctx: &RequestContext<RoleServer>,
        session_id: String,
        change: record::Change,
        key: &'static str,
    ) -> ToolResult {
        self.call(tool, self.caller(ctx), |caller| async move {
            let live = self.live(&caller, &session_id, Access::Exec).await?;
            let n = live.notebook.apply(change).await?;
            Ok(json_result(
                json!({key: n, "notebook_path": live.notebook_path}),
            ))
        })
        .await
    }

    /// Runs a tool body: metrics, a log line, and errors as `isError` results.
    async fn call<F, Fut>(
        &self,
        tool: &'static str,
        caller: Result<Caller, GatewayError>,
        body: F,
    ) -> ToolResult
    where
        F: FnOnce(Caller) -> Fut,
        Fut: Future<Output = Result<CallToolResult, GatewayError>>,
    {
        let started = Instant::now();
        let result = match caller {
            Ok(caller) => {
                let name = caller.name().to_owned();
                let r = body(caller).await;
                tracing::info!(tool, caller = %name, ok = r.is_ok(), ms = started.elapsed().as_millis() as u64, "tool call");
                r
            }
            Err(e) => Err(e),
        };
        let outcome = match &result {
            Ok(r) if r.is_error == Some(true) => "tool_error",
            Ok(_) => "ok",
            Err(e) => e.kind(),
        };
        self.state
            .metrics
            .tool_call(tool, outcome, started.elapsed());
        let result = result
            .unwrap_or_else(|e| CallToolResult::error(vec![ContentBlock::text(e.to_string())]));
        Ok(super::reply::fit(result, self.state.settings.reply_limit))
    }

    /// A session start tool: a task the client polls when it takes tasks (a start can
    /// wait in the SLURM queue for hours), else a call that reports progress while it
    /// waits. A request that is not valid is refused at once either way.
    async fn start_tool(
        &self,
        tool: &'static str,
        ctx: RequestContext<RoleServer>,
        req: Result<StartRequest, GatewayError>,
    ) -> TaskOrResult {
        let caller = self.caller(&ctx);
        let (caller, req) = match (caller, req) {
            (Ok(caller), Ok(req)) if tasks::client_takes_tasks(&ctx) => (caller, req),
            (caller, req) => {
                let result = self
                    .call(tool, caller, |caller| async move {
                        let (tx, forward) = progress_notifier(&ctx);
                        let r = self.start(caller, req?, tx, ctx.ct.cancelled()).await;
                        let _ = forward.await;
                        r
                    })
                    .await?;
                return Ok(result.into());
            }
        };
        let this = self.clone();
        let owner = caller.clone();
        let task = self.state.start_tasks.spawn(&caller, move |tc| {
            Box::pin(async move {
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
                let status = tc.clone();
                let forward = tokio::spawn(async move {
                    while let Some(message) = rx.recv().await {
                        status.set_status_message(message);
                    }
                });
                let result = this
                    .call(tool, Ok(owner), |caller| {
                        this.start(caller, req, tx, tc.cancelled())
                    })
                    .await;
                let _ = forward.await;
                if tc.is_cancel_requested() {
                    return Err(TaskExit::Cancelled);
                }
                result.map_err(TaskExit::Error)
            })
        });
        Ok(CreateTaskResult::new(task).into())
    }

    /// Starts a session, sending progress lines to `progress` while its job queues; stops
    /// waiting when `cancelled` resolves (what was created stays).
    async fn start(
        &self,
        caller: Caller,
        req: StartRequest,
        progress: UnboundedSender<String>,
        cancelled: impl Future<Output = ()>,
    ) -> Result<CallToolResult, GatewayError> {
        let client = self.state.access.client_for(&caller)?;
        let started = tokio::select! {
            r = self.state.sessions.start(client, &caller, req, progress) => r,
            _ = cancelled => Err(GatewayError::Failed(
                "cancelled while waiting; what was created stays (see list_sessions)".into(),
            )),
        };
        let started = started?;
        let mut result = CallToolResult::structured(json!(started));
        if let Some(restore) = &started.restore
            && !restore.errors.is_empty()
        {
            result.content.push(ContentBlock::text(format!(
                "restore: {} of {} cells ran; errors: {}",
                restore.executed,
                restore.total,
                restore
                    .errors
                    .iter()
                    .map(|e| format!("cell {}: {}: {}", e.cell, e.ename, e.evalue))
                    .collect::<Vec<_>>()
                    .join("; ")
            )));
        }
        Ok(result)
    }

    fn start_request(
        &self,
        experiment_name: String,
        notebook: NotebookChoice,
        o: StartOptions,
    ) -> Result<StartRequest, GatewayError> {
        Ok(StartRequest {
            experiment_name,
            namespace: self.namespace(o.namespace)?,
            notebook,
            profile: o.profile,
            resources: o.resources,
            wait: self.state.settings.start_wait(o.wait_seconds),
        })
    }

    /// Resume/Continue: the notebook must be a `.ipynb` under the notebook root.
    fn notebook_start_request(
        &self,
        p: StartFromNotebook,
        choice: fn(String) -> NotebookChoice,
    ) -> Result<StartRequest, GatewayError> {
        crate::jupyter::check_path(&p.notebook_path)?;
        if !p.notebook_path.ends_with(".ipynb") {
            return Err(GatewayError::Invalid(format!(
                "notebook_path {:?} must end in .ipynb",
                p.notebook_path
            )));
        }
        self.start_request(p.experiment_name, choice(p.notebook_path), p.options)
    }

    /// A finished run as a tool result. Rendering decodes and may scale images: CPU work
    /// that runs on the blocking pool, never on the async workers serving other calls.
    async fn result_of(&self, exec: &Arc<super::executions::Execution>) -> CallToolResult {
        let (run, limit) = (exec.clone(), self.state.settings.text_limit);
        let (mut blocks, is_error) = tokio::task::spawn_blocking(move || run.content(limit))
            .await
            .unwrap_or_else(|e| {
                let why = format!("[rendering the result failed: {e}; read the notebook]");
                (vec![ContentBlock::text(why)], true)
            });
        if blocks.is_empty() {
            blocks.push(ContentBlock::text("(no output)"));
        }
        if let Some(warning) = exec.session.walltime_warning() {
            blocks.push(ContentBlock::text(warning));
        }
        if is_error {
            CallToolResult::error(blocks)
        } else {
            CallToolResult::success(blocks)
        }
    }
}

impl SlurmlabMcp {
    /// A run as a task: working with a progress line, then its (fitted) tool result.
    async fn run_task(&self, exec: &Arc<Execution>) -> DetailedTask {
        let status = exec.status();
        let result = match status {
            ExecStatus::Completed | ExecStatus::Failed => Some(super::reply::fit(
                self.result_of(exec).await,
                self.state.settings.reply_limit,
            )),
            _ => None,
        };
        let message = (!status.finished()).then(|| exec.progress());
        tasks::run_task(
            &exec.id,
            &exec.created_at,
            exec.ttl,
            message,
            tasks::run_payload(status, result.as_ref()),
        )
    }

    /// The caller's run `id`, as a task error when there is none.
    fn task_run(&self, id: &str, caller: &Caller) -> Result<Arc<Execution>, ErrorData> {
        self.state.executions.get(id, caller).map_err(|e| match e {
            GatewayError::NotFound(_) => tasks::unknown(id, None),
            other => tasks::unknown(id, Some(other.to_string())),
        })
    }

    fn task_caller(&self, ctx: &RequestContext<RoleServer>) -> Result<Caller, ErrorData> {
        self.caller(ctx)
            .map_err(|e| ErrorData::invalid_request(e.to_string(), None))
    }
}

fn json_result(v: Value) -> CallToolResult {
    CallToolResult::structured(v)
}

/// A channel whose lines go to the caller as progress notifications (when the call
/// carried a progress token), and the task forwarding them (ends when the sender drops).
fn progress_notifier(
    ctx: &RequestContext<RoleServer>,
) -> (UnboundedSender<String>, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let token = ctx.meta.get_progress_token();
    let peer = ctx.peer.clone();
    let forward = tokio::spawn(async move {
        let mut step = 0.0;
        while let Some(message) = rx.recv().await {
            if let Some(token) = &token {
                step += 1.0;
                let _ = peer
                    .notify_progress(
                        ProgressNotificationParam::new(token.clone(), step).with_message(message),
                    )
                    .await;
            }
        }
    });
    (tx, forward)
}

#[tool_router]
impl SlurmlabMcp {
    #[tool(
        description = "Start a Jupyter session on a SLURM job. Reuses one of your Ready or starting allocations with room, else submits a new one; waits until the kernel is Ready, reporting progress (queue state and reason) while SLURM queues the job. An idle kernel is shut down after the gateway's session idle timeout (default 2h; its allocation is then released after its own idle timeout), so call shutdown_session when done anyway. A client that declares the MCP tasks extension gets a task at once (poll tasks/get; its status message says where the job stands). Returns session_id (use it in every other tool), notebook_path, allocation, job_id, node.",
        annotations(
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    async fn start_new_session(
        &self,
        Parameters(p): Parameters<StartNewSession>,
        ctx: RequestContext<RoleServer>,
    ) -> TaskOrResult {
        let req = self.start_request(p.experiment_name, NotebookChoice::New, p.options);
        self.start_tool("start_new_session", ctx, req).await
    }

    #[tool(
        description = "Start a session that re-executes an existing notebook to restore its state (variables, imports), then keeps recording into it. Returns the session and any cells that raised while restoring.",
        annotations(
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    async fn start_session_resume_notebook(
        &self,
        Parameters(p): Parameters<StartFromNotebook>,
        ctx: RequestContext<RoleServer>,
    ) -> TaskOrResult {
        let req = self.notebook_start_request(p, NotebookChoice::Resume);
        self.start_tool("start_session_resume_notebook", ctx, req)
            .await
    }

    #[tool(
        description = "Start a session on a copy of an existing notebook (`<name>_continued.ipynb`) with a fresh kernel: nothing is re-executed.",
        annotations(
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    async fn start_session_continue_notebook(
        &self,
        Parameters(p): Parameters<StartFromNotebook>,
        ctx: RequestContext<RoleServer>,
    ) -> TaskOrResult {
        let req = self.notebook_start_request(p, NotebookChoice::Continue);
        self.start_tool("start_session_continue_notebook", ctx, req)
            .await
    }

    #[tool(
        description = "Execute Python code in a session's kernel and record it as a notebook cell. Returns outputs in order: text, images, rich output; a raised exception gives isError with the traceback. If the run takes longer than sync_timeout seconds (default 30) it returns {status: \"pending\", execution_id} and keeps running: poll get_execution_status / get_execution_result, or cancel_execution (a client that declares the MCP tasks extension gets a task instead, its id the execution_id: poll tasks/get, stop it with tasks/cancel). When the SLURM job has under 15 minutes of its time limit left, the result ends with a walltime warning.",
        annotations(
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = false,
            open_world_hint = true
        )
    )]
    async fn execute_code(
        &self,
        Parameters(p): Parameters<ExecuteCode>,
        ctx: RequestContext<RoleServer>,
    ) -> TaskOrResult {
        let takes_tasks = tasks::client_takes_tasks(&ctx);
        let became_task = std::sync::OnceLock::new();
        let became = &became_task;
        let result = self.call("execute_code", self.caller(&ctx), |caller| async move {
            let live = self.live(&caller, &p.session_id, Access::Exec).await?;
            let settings = &self.state.settings;
            let exec = self.state.executions.submit(
                live,
                &caller,
                RunRequest {
                    code: p.code,
                    timeout: settings.run_timeout(p.timeout),
                    placement: Placement::Append,
                    store_history: true,
                },
            )?;
            let sync = settings.sync_wait(p.sync_timeout);
            tokio::select! {
                _ = exec.finished() => Ok(self.result_of(&exec).await),
                _ = tokio::time::sleep(sync), if takes_tasks => {
                    let _ = became.set(exec);
                    Ok(CallToolResult::success(vec![]))
                }
                _ = tokio::time::sleep(sync), if !takes_tasks => Ok(json_result(json!({
                    "status": "pending",
                    "execution_id": exec.id,
                    "session_id": exec.session.id.to_string(),
                    "message": format!("still running after {}s; poll get_execution_status or get_execution_result with this execution_id", sync.as_secs()),
                }))),
                _ = ctx.ct.cancelled() => {
                    exec.cancel();
                    exec.finished_within(Duration::from_secs(20)).await;
                    Err(GatewayError::Failed(format!("execution {} cancelled: the kernel was interrupted", exec.id)))
                }
            }
        })
        .await?;
        // A run still going after its sync wait is a task whose id is its execution id.
        match became_task.into_inner() {
            Some(exec) => Ok(CreateTaskResult::new(self.run_task(&exec).await.task).into()),
            None => Ok(result.into()),
        }
    }

    #[tool(
        description = "Where a run started by execute_code stands: running/completed/failed/cancelled, elapsed seconds, and the text output so far.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn get_execution_status(
        &self,
        Parameters(p): Parameters<ExecutionRef>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult {
        self.call(
            "get_execution_status",
            self.caller(&ctx),
            |caller| async move {
                let exec = self.state.executions.get(&p.execution_id, &caller)?;
                Ok(json_result(exec.summary(self.state.settings.text_limit)))
            },
        )
        .await
    }

    #[tool(
        description = "The result of a run (the same content execute_code returns). While it is still running this says so; call again later.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn get_execution_result(
        &self,
        Parameters(p): Parameters<ExecutionRef>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult {
        self.call(
            "get_execution_result",
            self.caller(&ctx),
            |caller| async move {
                let exec = self.state.executions.get(&p.execution_id, &caller)?;
                if exec.status().finished() {
                    Ok(self.result_of(&exec).await)
                } else {
                    Ok(json_result(exec.summary(self.state.settings.text_limit)))
                }
            },
        )
        .await
    }

    #[tool(
        description = "Cancel a run: interrupts the kernel (KeyboardInterrupt); the session stays usable. The run is recorded in the notebook as it ended.",
        annotations(
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn cancel_execution(
        &self,
        Parameters(p): Parameters<ExecutionRef>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult {
        self.call("cancel_execution", self.caller(&ctx), |caller| async move {
            let exec = self.state.executions.get(&p.execution_id, &caller)?;
            exec.cancel();
            if !exec.finished_within(Duration::from_secs(30)).await {
                return Err(GatewayError::Failed(format!(
                    "execution {} did not stop within 30s of the interrupt; try restart_kernel",
                    exec.id
                )));
            }
            Ok(json_result(exec.summary(self.state.settings.text_limit)))
        })
        .await
    }

    #[tool(
        description = "Your recent runs (newest first), optionally of one session.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn list_executions(
        &self,
        Parameters(p): Parameters<ListExecutions>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult {
        self.call("list_executions", self.caller(&ctx), |caller| async move {
            let session = match &p.session_id {
                Some(s) => {
                    Some(SessionId::parse(s, &self.state.settings.default_namespace)?.to_string())
                }
                None => None,
            };
            let runs: Vec<Value> = self
                .state
                .executions
                .list(&caller, session.as_deref())
                .iter()
                .map(|e| {
                    let mut s = e.summary(200);
                    if let Some(o) = s.as_object_mut() {
                        o.remove("output_so_far");
                    }
                    s
                })
                .collect();
            Ok(json_result(json!({ "executions": runs })))
        })
        .await
    }

    #[tool(
        description = "Replace a notebook cell's code (negative index counts from the end), execute it, and replace its outputs. Returns the new outputs.",
        annotations(
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = false,
            open_world_hint = true
        )
    )]
    async fn edit_cell(
        &self,
        Parameters(p): Parameters<EditCell>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult {
        self.call("edit_cell", self.caller(&ctx), |caller| async move {
            let live = self.live(&caller, &p.session_id, Access::Exec).await?;
            {
                // Refuse a cell that does not exist before running anything.
                let nb = live.notebook.read().await?;
                notebook::resolve_index(&nb, p.cell_index)?;
            }
            self.run_in_cell(live, &caller, p.cell_index, p.code, p.timeout)
                .await
        })
        .await
    }

    #[tool(
        description = "Add a markdown cell at the end of the session's notebook (notes, explanations).",
        annotations(
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    async fn add_markdown(
        &self,
        Parameters(p): Parameters<AddMarkdown>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult {
        let change = record::Change::Markdown(p.markdown);
        self.edit_notebook("add_markdown", &ctx, p.session_id, change, "cell_index")
            .await
    }

    #[tool(
        description = "The session's notebook, a page of cells at a time (offset, limit: default 50): each cell's index, type, source and a summary of its outputs; brief=true gives each cell's first source line and its number of outputs. Returns total_cells and next_offset (null on the last page).",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn read_notebook(
        &self,
        Parameters(p): Parameters<ReadNotebook>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult {
        self.call("read_notebook", self.caller(&ctx), |caller| async move {
            let live = self.live(&caller, &p.session_id, Access::Read).await?;
            let nb = live.notebook.read().await?;
            let mut page = super::summary::page(&nb, p.offset, p.limit, p.brief);
            page["notebook_path"] = json!(live.notebook_path);
            Ok(json_result(page))
        })
        .await
    }

    #[tool(
        description = "One notebook cell: its type, source, execution count and a summary of its outputs (negative index counts from the end).",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn read_cell(
        &self,
        Parameters(p): Parameters<CellRef>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult {
        self.call("read_cell", self.caller(&ctx), |caller| async move {
            let live = self.live(&caller, &p.session_id, Access::Read).await?;
            let nb = live.notebook.read().await?;
            let i = notebook::resolve_index(&nb, p.cell_index)?;
            let cell = super::summary::cells(&nb).swap_remove(i);
            Ok(json_result(cell))
        })
        .await
    }

    #[tool(
        description = "Run an existing code cell again as it is (negative index counts from the end); its outputs are replaced. Returns the new outputs.",
        annotations(
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = false,
            open_world_hint = true
        )
    )]
    async fn run_cell(
        &self,
        Parameters(p): Parameters<RunCell>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult {
        self.call("run_cell", self.caller(&ctx), |caller| async move {
            let live = self.live(&caller, &p.session_id, Access::Exec).await?;
            let code = notebook::code_source(&live.notebook.read().await?, p.cell_index)?;
            self.run_in_cell(live, &caller, p.cell_index, code, p.timeout)
                .await
        })
        .await
    }

    #[tool(
        description = "Insert a code or markdown cell at an index without running it (0 is first, -1 after the last). Returns its index.",
        annotations(
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    async fn insert_cell(
        &self,
        Parameters(p): Parameters<InsertCell>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult {
        let kind = match p.cell_type {
            NewCellType::Code => notebook::CellKind::Code,
            NewCellType::Markdown => notebook::CellKind::Markdown,
        };
        let change = record::Change::Insert {
            index: p.index,
            kind,
            source: p.source,
        };
        self.edit_notebook("insert_cell", &ctx, p.session_id, change, "cell_index")
            .await
    }

    #[tool(
        description = "Delete a notebook cell (negative index counts from the end). The kernel keeps whatever the cell defined.",
        annotations(
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    async fn delete_cell(
        &self,
        Parameters(p): Parameters<CellRef>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult {
        let change = record::Change::Delete(p.cell_index);
        self.edit_notebook("delete_cell", &ctx, p.session_id, change, "deleted_index")
            .await
    }

    #[tool(
        description = "Move a notebook cell so that it ends up at another index (both may be negative, counting from the end).",
        annotations(
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    async fn move_cell(
        &self,
        Parameters(p): Parameters<MoveCell>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult {
        let change = record::Change::Move {
            from: p.from_index,
            to: p.to_index,
        };
        self.edit_notebook("move_cell", &ctx, p.session_id, change, "cell_index")
            .await
    }

    #[tool(
        description = "Clear the outputs (and execution counts) of one code cell or of every cell, e.g. before sharing the notebook. Returns how many cells had outputs.",
        annotations(
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn clear_outputs(
        &self,
        Parameters(p): Parameters<ClearOutputs>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult {
        let change = record::Change::ClearOutputs(p.cell_index);
        self.edit_notebook("clear_outputs", &ctx, p.session_id, change, "cleared")
            .await
    }

    #[tool(
        description = "The SLURM partitions you can ask for (per SlurmCluster): nodes and CPUs in all and idle now, generic resources such as GPUs, and the time limit, as of the controller's last look (about every 30 s). Use it to pick resources before start_new_session.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn list_partitions(
        &self,
        Parameters(p): Parameters<ClusterRef>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult {
        self.call("list_partitions", self.caller(&ctx), |_caller| async move {
            let clusters = self.state.sessions.partitions(p.cluster.as_deref()).await?;
            Ok(json_result(json!({ "clusters": clusters })))
        })
        .await
    }

    #[tool(
        description = "Interrupt the session's kernel (like Ctrl-C): a running cell raises KeyboardInterrupt.",
        annotations(
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn interrupt_kernel(
        &self,
        Parameters(p): Parameters<SessionRef>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult {
        self.call("interrupt_kernel", self.caller(&ctx), |caller| async move {
            let live = self.live(&caller, &p.session_id, Access::Exec).await?;
            live.server.interrupt(&live.kernel_id).await?;
            Ok(json_result(json!({"interrupted": live.id.to_string()})))
        })
        .await
    }

    #[tool(
        description = "Restart the session's kernel: all variables are lost; the notebook stays. Running cells are cancelled first.",
        annotations(
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    async fn restart_kernel(
        &self,
        Parameters(p): Parameters<SessionRef>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult {
        self.call("restart_kernel", self.caller(&ctx), |caller| async move {
            let live = self.live(&caller, &p.session_id, Access::Exec).await?;
            let id = live.id.to_string();
            for exec in self.state.executions.running_on(&id) {
                exec.cancel();
                exec.finished_within(Duration::from_secs(20)).await;
            }
            let mut slot = live.kernel.lock().await;
            live.server.restart(&live.kernel_id).await?;
            // A fresh channel for the restarted kernel, once it answers.
            *slot = None;
            live.channel(&mut slot)
                .await?
                .wait_ready(Duration::from_secs(60))
                .await?;
            Ok(json_result(json!({"restarted": id})))
        })
        .await
    }

    #[tool(
        description = "What the session's SLURM job has and uses now: CPUs allocated to it and the node's load average, memory (the job's cgroup limit and use when SLURM confines it, the node's total and available), GPUs (from nvidia-smi, when the node has it), CPU and memory of the Jupyter server and its kernels, the job's SLURM variables, and the seconds left before its time limit. Answers while a cell runs (it does not use the kernel).",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn check_resources(
        &self,
        Parameters(p): Parameters<SessionRef>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult {
        self.call("check_resources", self.caller(&ctx), |caller| async move {
            let live = self.live(&caller, &p.session_id, Access::Read).await?;
            let mut found = live.server.resources().await.map_err(|e| match e {
                crate::jupyter::JupyterError::NotFound { .. } => GatewayError::Failed(format!(
                    "the Jupyter server of session {} does not report resources: its SLURM job \
                     was started by an older slurmlab; a session on a new allocation has them",
                    live.id
                )),
                other => other.into(),
            })?;
            if let Some(o) = found.as_object_mut() {
                o.insert("session_id".into(), json!(live.id.to_string()));
                if let Some(ends) = live.job_ends_at {
                    let now = k8s_openapi::jiff::Timestamp::now();
                    o.insert("job_ends_at".into(), json!(ends.to_string()));
                    o.insert(
                        "time_left_seconds".into(),
                        json!(super::live::seconds_left(ends, now).max(0)),
                    );
                }
            }
            Ok(json_result(found))
        })
        .await
    }

    #[tool(
        description = "The user variables in the session's kernel: name, type, shape or length, and a short preview.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn get_workspace(
        &self,
        Parameters(p): Parameters<SessionRef>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult {
        self.call("get_workspace", self.caller(&ctx), |caller| async move {
            let live = self.live(&caller, &p.session_id, Access::Exec).await?;
            let exec = self.state.executions.submit(
                live,
                &caller,
                RunRequest {
                    code: workspace::SNIPPET.to_owned(),
                    timeout: Duration::from_secs(60),
                    placement: Placement::Nowhere,
                    store_history: false,
                },
            )?;
            exec.finished().await;
            let vars = workspace::parse(&exec.outputs())?;
            Ok(json_result(json!({ "variables": vars })))
        })
        .await
    }

    #[tool(
        description = "List files in a directory under the notebook root (default: the root).",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn list_files(
        &self,
        Parameters(p): Parameters<ListFiles>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult {
        self.call("list_files", self.caller(&ctx), |caller| async move {
            let live = self.live(&caller, &p.session_id, Access::Read).await?;
            let entries = live.server.list(p.path.as_deref().unwrap_or("")).await?;
            let files: Vec<Value> = entries
                .iter()
                .map(|e| json!({"path": e.path, "type": e.kind, "size": e.size, "last_modified": e.last_modified}))
                .collect();
            Ok(json_result(json!({ "files": files })))
        })
        .await
    }

    #[tool(
        description = "Read a file under the notebook root: text (page with offset/length) or an image.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn read_file(
        &self,
        Parameters(p): Parameters<ReadFile>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult {
        self.call("read_file", self.caller(&ctx), |caller| async move {
            let live = self.live(&caller, &p.session_id, Access::Read).await?;
            // Metadata first: a page of a huge file costs a page, not the file.
            let meta = live.server.get(&p.path, false).await?;
            super::files::check_file(&meta)?;
            let total = meta.size.unwrap_or(0);
            if let Some(mime) = super::files::image_mime(&p.path) {
                if total > super::files::MAX_IMAGE_FILE {
                    return Err(GatewayError::Invalid(format!(
                        "{} is an image of {total} bytes; read_file shows images up to {} bytes",
                        p.path,
                        super::files::MAX_IMAGE_FILE
                    )));
                }
                let model = live.server.get(&p.path, true).await?;
                return Ok(super::files::image(&model, mime));
            }
            let limit = p
                .length
                .unwrap_or(self.state.settings.text_limit)
                .min(self.state.settings.text_limit.max(1 << 20));
            let offset = p.offset.unwrap_or(0) as u64;
            let bytes = live
                .server
                .read_range(&p.path, offset, limit as u64 + 3)
                .await?;
            Ok(super::files::text_page(
                &p.path, &bytes, offset, limit, total,
            ))
        })
        .await
    }

    #[tool(
        description = "Write a file under the notebook root (text, or base64 with encoding=base64); parent directories are created.",
        annotations(
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn upload_file(
        &self,
        Parameters(p): Parameters<UploadFile>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult {
        self.call("upload_file", self.caller(&ctx), |caller| async move {
            let format = super::files::upload_format(
                p.encoding.as_deref(),
                &p.content,
                self.state.settings.upload_limit,
            )?;
            let live = self.live(&caller, &p.session_id, Access::Exec).await?;
            let model = live.server.put_file(&p.path, &p.content, format).await?;
            Ok(json_result(json!({"path": model.path, "size": model.size})))
        })
        .await
    }

    #[tool(
        description = "End a session: the controller shuts its kernel down; the notebook stays on disk.",
        annotations(
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn shutdown_session(
        &self,
        Parameters(p): Parameters<SessionRef>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult {
        self.call("shutdown_session", self.caller(&ctx), |caller| async move {
            let id = SessionId::parse(&p.session_id, &self.state.settings.default_namespace)?;
            let client = self.state.access.client_for(&caller)?;
            self.state.sessions.delete(client, &id).await?;
            self.state.live.forget(&id);
            Ok(json_result(json!({"deleted": id.to_string()})))
        })
        .await
    }

    #[tool(
        description = "Your sessions in a namespace: phase, allocation, node, notebook.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn list_sessions(
        &self,
        Parameters(p): Parameters<NamespaceRef>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult {
        self.call("list_sessions", self.caller(&ctx), |caller| async move {
            let ns = self.namespace(p.namespace)?;
            let client = self.state.access.client_for(&caller)?;
            let sessions = self.state.sessions.list_sessions(client, &ns).await?;
            Ok(json_result(json!({ "sessions": sessions })))
        })
        .await
    }

    #[tool(
        description = "Your allocations (SLURM jobs running Jupyter) in a namespace: phase, job, node, sessions, seconds left.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn list_allocations(
        &self,
        Parameters(p): Parameters<NamespaceRef>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult {
        self.call("list_allocations", self.caller(&ctx), |caller| async move {
            let ns = self.namespace(p.namespace)?;
            let client = self.state.access.client_for(&caller)?;
            let allocations = self.state.sessions.list_allocations(client, &ns).await?;
            Ok(json_result(json!({ "allocations": allocations })))
        })
        .await
    }
}

/// `slurmlab://status` and one notebook resource per session.
const STATUS_URI: &str = "slurmlab://status";

fn notebook_uri(id: &SessionId) -> String {
    format!("slurmlab://sessions/{}/{}/notebook", id.namespace, id.name)
}

#[tool_handler]
impl ServerHandler for SlurmlabMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .enable_tasks()
                .build(),
        )
        .with_server_info(Implementation::new(
            "slurmlab-gateway",
            env!("CARGO_PKG_VERSION"),
        ))
        .with_instructions(
            self.state
                .settings
                .instructions(&self.state.sessions.profile_names()),
        )
    }

    async fn get_task(
        &self,
        request: GetTaskParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<GetTaskResult, ErrorData> {
        let caller = self.task_caller(&ctx)?;
        let id = request.task_id;
        if self.state.start_tasks.knows(&id) {
            return self
                .state
                .start_tasks
                .get(&id, &caller)
                .map(GetTaskResult::new);
        }
        let exec = self.task_run(&id, &caller)?;
        Ok(GetTaskResult::new(self.run_task(&exec).await))
    }

    /// Cooperative, as the extension says: a run's kernel is interrupted, a start stops
    /// waiting; `tasks/get` shows when it ended.
    async fn cancel_task(
        &self,
        request: CancelTaskParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let caller = self.task_caller(&ctx)?;
        let id = request.task_id;
        if self.state.start_tasks.knows(&id) {
            return self.state.start_tasks.cancel(&id, &caller);
        }
        self.task_run(&id, &caller)?.cancel();
        Ok(())
    }

    /// No task here asks the client for input, so there is nothing to deliver.
    async fn update_task(
        &self,
        request: UpdateTaskParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let caller = self.task_caller(&ctx)?;
        let id = request.task_id;
        if self.state.start_tasks.knows(&id) {
            return self.state.start_tasks.owned(&id, &caller);
        }
        self.task_run(&id, &caller).map(|_| ())
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        let mut resources = vec![
            Resource::new(STATUS_URI, "status")
                .with_description("Your sessions and allocations")
                .with_mime_type("application/json"),
        ];
        let caller = self
            .caller(&ctx)
            .map_err(|e| ErrorData::invalid_request(e.to_string(), None))?;
        let ns = self.state.settings.default_namespace.clone();
        if let Ok(client) = self.state.access.client_for(&caller)
            && let Ok(sessions) = self.state.sessions.list_sessions(client, &ns).await
        {
            for s in sessions {
                let Some(id) = s["session_id"]
                    .as_str()
                    .and_then(|i| SessionId::parse(i, &ns).ok())
                else {
                    continue;
                };
                resources.push(
                    Resource::new(notebook_uri(&id), format!("{id} notebook"))
                        .with_mime_type("application/x-ipynb+json"),
                );
            }
        }
        Ok(ListResourcesResult::with_all_items(resources))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let not_found =
            |uri: &str| ErrorData::resource_not_found(format!("no resource {uri}"), None);
        let caller = self
            .caller(&ctx)
            .map_err(|e| ErrorData::invalid_request(e.to_string(), None))?;
        let uri = request.uri.as_str();
        let text = if uri == STATUS_URI {
            let ns = self.state.settings.default_namespace.clone();
            let client = self.state.access.client_for(&caller).map_err(internal)?;
            let sessions = self
                .state
                .sessions
                .list_sessions(client.clone(), &ns)
                .await
                .map_err(internal)?;
            let allocations = self
                .state
                .sessions
                .list_allocations(client, &ns)
                .await
                .map_err(internal)?;
            json!({"namespace": ns, "sessions": sessions, "allocations": allocations}).to_string()
        } else if let Some(rest) = uri
            .strip_prefix("slurmlab://sessions/")
            .and_then(|r| r.strip_suffix("/notebook"))
        {
            let live = self
                .live(&caller, rest, Access::Read)
                .await
                .map_err(|_| not_found(uri))?;
            live.notebook
                .read()
                .await
                .and_then(|nb| notebook::to_json(&nb).map_err(GatewayError::from))
                .map_err(internal)?
                .to_string()
        } else {
            return Err(not_found(uri));
        };
        let limit = self.state.settings.reply_limit;
        if text.len() > limit {
            // No client would read it (see `reply`): say what to use instead.
            return Err(ErrorData::invalid_request(
                format!(
                    "{uri} is {} bytes, over the gateway's reply bound of {limit}: read it with \
                     read_notebook (pages, brief mode) or read_cell",
                    text.len()
                ),
                None,
            ));
        }
        Ok(ReadResourceResult::new(vec![ResourceContents::text(text, request.uri.clone())]).into())
    }
}

fn internal(e: GatewayError) -> ErrorData {
    ErrorData::internal_error(e.to_string(), None)
}
