//! MCP Tasks (the `io.modelcontextprotocol/tasks` extension): calls that take long come
//! back as tasks the client polls with `tasks/get` and stops with `tasks/cancel`, when
//! the client declared the extension; other clients keep the execution-id flow.
//!
//! - An `execute_code` run still going after its sync wait is a task whose id is the
//!   execution id, so `tasks/get` and `get_execution_result` read the same run and the
//!   run's own store answers both (see [`run_task`]).
//! - A session start, which can wait in the SLURM queue for hours, is a task at once. It
//!   runs under rmcp's [`TaskManager`]; [`StartTasks`] remembers whose it is, because the
//!   manager answers anyone who knows an id.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use rmcp::ErrorData;
use rmcp::RoleServer;
use rmcp::model::{CallToolResult, DetailedTask, JsonObject, Task, TaskPayload, TaskStatus};
use rmcp::service::RequestContext;
use rmcp::task_manager::{TaskContext, TaskFuture, TaskManager, TaskOptions};

use super::executions::ExecStatus;
use super::identity::Caller;

/// How often a client should poll a task (it may wait longer; runs report no faster).
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Whether this call's client declared the tasks extension (only such a client can read
/// a task handle).
pub fn client_takes_tasks(ctx: &RequestContext<RoleServer>) -> bool {
    ctx.client_capabilities()
        .is_some_and(|caps| caps.supports_tasks())
}

/// A run's task payload: working until it finished; then its tool result, which is
/// `completed` even when the cell raised (the result says `isError`, as the extension
/// asks), or `cancelled` when it was interrupted on request.
/// `result` is the finished run's tool result (None while it runs).
pub fn run_payload(status: ExecStatus, result: Option<&CallToolResult>) -> TaskPayload {
    match (status, result) {
        (ExecStatus::Cancelled, _) => TaskPayload::Cancelled,
        (ExecStatus::Completed | ExecStatus::Failed, Some(r)) => TaskPayload::Completed {
            result: to_object(r),
        },
        _ => TaskPayload::Working,
    }
}

/// A run as a task. `ttl` runs from the run's start: its time limit plus the time its
/// result is kept after.
pub fn run_task(
    id: &str,
    created_at: &str,
    ttl: Duration,
    message: Option<String>,
    payload: TaskPayload,
) -> DetailedTask {
    let mut task = Task::new(
        id,
        TaskStatus::Working,
        created_at,
        rmcp::task_manager::current_timestamp(),
    )
    .with_ttl_ms(millis(ttl))
    .with_poll_interval_ms(millis(POLL_INTERVAL));
    if let Some(m) = message {
        task = task.with_status_message(m);
    }
    DetailedTask::new(task, payload)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn to_object(result: &CallToolResult) -> JsonObject {
    match serde_json::to_value(result) {
        Ok(serde_json::Value::Object(o)) => o,
        _ => JsonObject::new(),
    }
}

/// The error for a task id the caller has no task under (an id of someone else's task
/// reads the same, so ids reveal nothing).
pub fn unknown(id: &str, why: Option<String>) -> ErrorData {
    ErrorData::invalid_params(
        why.unwrap_or_else(|| format!("unknown task {id} (finished tasks are kept for an hour)")),
        None,
    )
}

/// Session starts running as tasks, each with its owner.
pub struct StartTasks {
    manager: TaskManager,
    owners: Mutex<HashMap<String, String>>,
    ttl: Duration,
}

impl StartTasks {
    /// `ttl`: how long a start task (and then its result) is kept.
    pub fn new(ttl: Duration) -> Self {
        Self {
            manager: TaskManager::new(),
            owners: Mutex::new(HashMap::new()),
            ttl,
        }
    }

    fn owners(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.owners.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `work` as a task of `owner`'s and returns its seed.
    pub fn spawn(&self, owner: &Caller, work: impl FnOnce(TaskContext) -> TaskFuture) -> Task {
        let task = self.manager.spawn(
            TaskOptions::new()
                .with_ttl_ms(millis(self.ttl))
                .with_poll_interval_ms(millis(POLL_INTERVAL))
                .with_status_message("starting"),
            work,
        );
        let mut owners = self.owners();
        // Tasks the manager has let go of (past their time to live) are forgotten here too.
        owners.retain(|id, _| self.manager.get_task(id).is_ok());
        owners.insert(task.task_id.clone(), owner.key());
        task
    }

    /// Whether `id` is one of these tasks at all (whoever owns it).
    pub fn knows(&self, id: &str) -> bool {
        self.owners().contains_key(id)
    }

    /// Whether `id` is `caller`'s (else it reads as unknown).
    pub fn owned(&self, id: &str, caller: &Caller) -> Result<(), ErrorData> {
        match self.owners().get(id) {
            Some(owner) if *owner == caller.key() => Ok(()),
            _ => Err(unknown(id, None)),
        }
    }

    pub fn get(&self, id: &str, caller: &Caller) -> Result<DetailedTask, ErrorData> {
        self.owned(id, caller)?;
        self.manager.get_task(id)
    }

    /// Asks the start to stop waiting (what it created stays; see `list_sessions`).
    pub fn cancel(&self, id: &str, caller: &Caller) -> Result<(), ErrorData> {
        self.owned(id, caller)?;
        self.manager.cancel_task(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmcp::model::ContentBlock;

    fn ok() -> CallToolResult {
        CallToolResult::success(vec![ContentBlock::text("2")])
    }

    fn done(status: ExecStatus, r: CallToolResult) -> TaskPayload {
        run_payload(status, Some(&r))
    }

    #[test]
    fn a_run_is_working_until_it_ends_and_a_raised_cell_still_completes() {
        assert_eq!(
            run_payload(ExecStatus::Queued, None).status(),
            TaskStatus::Working
        );
        assert_eq!(
            run_payload(ExecStatus::Running, None).status(),
            TaskStatus::Working
        );
        // Finished but its result not yet rendered: still working, never an empty result.
        assert_eq!(
            run_payload(ExecStatus::Completed, None).status(),
            TaskStatus::Working
        );
        assert_eq!(
            done(ExecStatus::Cancelled, ok()).status(),
            TaskStatus::Cancelled
        );
        let raised = done(
            ExecStatus::Failed,
            CallToolResult::error(vec![ContentBlock::text("ZeroDivisionError")]),
        );
        let TaskPayload::Completed { result } = raised else {
            panic!("a raised cell is a completed task: {raised:?}");
        };
        assert_eq!(result["isError"], serde_json::json!(true));
        let TaskPayload::Completed { result } = done(ExecStatus::Completed, ok()) else {
            panic!("completed");
        };
        assert_eq!(result["content"][0]["text"], "2");
    }

    #[test]
    fn a_run_task_carries_its_id_times_and_status() {
        let t = run_task(
            "ex-abcd-0123456789",
            "2026-12-03T10:00:00Z",
            Duration::from_secs(90),
            Some("running for 3s".into()),
            TaskPayload::Working,
        );
        let wire = serde_json::to_value(rmcp::model::GetTaskResult::new(t)).unwrap();
        assert_eq!(wire["taskId"], "ex-abcd-0123456789");
        assert_eq!(wire["status"], "working");
        assert_eq!(wire["createdAt"], "2026-12-03T10:00:00Z");
        assert_eq!(wire["ttlMs"], 90_000);
        assert_eq!(wire["pollIntervalMs"], 1000);
        assert_eq!(wire["statusMessage"], "running for 3s");
    }

    #[tokio::test]
    async fn start_tasks_answer_only_their_owner() {
        let tasks = StartTasks::new(Duration::from_secs(60));
        let alice = Caller::Local {
            name: "alice".into(),
        };
        let bob = Caller::Local { name: "bob".into() };
        let task = tasks.spawn(&alice, |_| Box::pin(async { Ok(ok()) }));
        assert!(tasks.knows(&task.task_id));
        assert!(tasks.get(&task.task_id, &alice).is_ok());
        let denied = tasks.get(&task.task_id, &bob).unwrap_err();
        assert_eq!(denied.code, rmcp::model::ErrorCode::INVALID_PARAMS);
        assert!(tasks.cancel(&task.task_id, &bob).is_err());
        assert!(tasks.get("nope", &alice).is_err());
    }
}
