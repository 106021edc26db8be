//! What every MCP connection shares: Kubernetes access, sessions, runs, metrics, settings.

use std::sync::Arc;
use std::time::Duration;

use super::access::KubeAccess;
use super::executions::Executions;
use super::identity::Caller;
use super::journal::Registry;
use super::live::LiveSessions;
use super::metrics::GatewayMetrics;
use super::sessions::{SessionDefaults, Sessions};
use super::tasks::StartTasks;

/// Limits and defaults of tool calls.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Tool calls without a namespace use this one.
    pub default_namespace: String,
    /// stdio: who every call runs as (the gateway's own credentials). HTTP: none; each
    /// request must carry an authenticated caller.
    pub local_caller: Option<Caller>,
    pub sync_timeout: Duration,
    pub execution_timeout: Duration,
    pub text_limit: usize,
    pub upload_limit: usize,
    /// Largest reply (see `reply`).
    pub reply_limit: usize,
}

/// The longest an agent may ask a start to wait for its SLURM job.
pub const MAX_START_WAIT: Duration = Duration::from_secs(24 * 3600);

impl Settings {
    /// A run's time limit: the agent's `timeout`, at most the gateway's own (which also
    /// keeps `Instant + timeout` from overflowing on an absurd value).
    pub fn run_timeout(&self, asked_seconds: Option<u64>) -> Duration {
        clamp(
            asked_seconds,
            self.execution_timeout,
            self.execution_timeout,
        )
    }

    /// How long execute_code blocks before answering with an execution id.
    pub fn sync_wait(&self, asked_seconds: Option<u64>) -> Duration {
        clamp(asked_seconds, self.sync_timeout, self.execution_timeout)
    }

    /// How long a session start may wait for its job (default: the gateway's).
    pub fn start_wait(&self, asked_seconds: Option<u64>) -> Option<Duration> {
        asked_seconds.map(|s| clamp(Some(s), MAX_START_WAIT, MAX_START_WAIT))
    }
    /// The server instructions sent at initialisation, naming the resource `profiles`.
    pub fn instructions(&self, profiles: &[&str]) -> String {
        let profiles = if profiles.is_empty() {
            "none (pass `resources` to size an allocation)".to_owned()
        } else {
            profiles.join(", ")
        };
        format!(
            "slurmlab runs Jupyter kernels inside SLURM jobs. Start with start_new_session (or \
             resume/continue a notebook), then execute_code with the returned session_id. Every \
             executed cell is recorded in the session's notebook. Long runs return an \
             execution_id after {}s: poll get_execution_status / get_execution_result (clients \
             that declare the tasks extension get a task instead, and session starts as \
             tasks at once: poll tasks/get, stop with tasks/cancel). Files \
             live under the notebook root (list_files, read_file, upload_file). Default \
             namespace: {}. Resource profiles: {profiles}. Call shutdown_session when done.",
            self.sync_timeout.as_secs(),
            self.default_namespace
        )
    }
}

fn clamp(asked_seconds: Option<u64>, default: Duration, max: Duration) -> Duration {
    asked_seconds.map_or(default, |s| Duration::from_secs(s).min(max))
}

/// Shared by all connections.
pub struct GatewayState {
    pub access: KubeAccess,
    pub sessions: Sessions,
    pub live: LiveSessions,
    pub executions: Executions,
    pub start_tasks: StartTasks,
    pub metrics: Arc<GatewayMetrics>,
    pub settings: Settings,
}

impl GatewayState {
    pub fn new(
        access: KubeAccess,
        defaults: SessionDefaults,
        settings: Settings,
        registry: Option<Arc<Registry>>,
    ) -> Self {
        let metrics = Arc::new(GatewayMetrics::default());
        Self {
            sessions: Sessions::new(access.own(), defaults),
            live: LiveSessions::new(access.own()),
            executions: Executions::new(metrics.clone(), settings.text_limit, registry),
            // Longer than any start may wait, so a task never expires while it waits.
            start_tasks: StartTasks::new(MAX_START_WAIT.saturating_add(Duration::from_secs(3600))),
            access,
            metrics,
            settings,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_times_are_clamped_to_the_gateways() {
        let s = Settings {
            default_namespace: "ns".into(),
            local_caller: None,
            sync_timeout: Duration::from_secs(30),
            execution_timeout: Duration::from_secs(3600),
            text_limit: 1,
            upload_limit: 1,
            reply_limit: 1,
        };
        assert_eq!(s.run_timeout(None), Duration::from_secs(3600));
        assert_eq!(s.run_timeout(Some(5)), Duration::from_secs(5));
        assert_eq!(s.run_timeout(Some(u64::MAX)), Duration::from_secs(3600));
        assert_eq!(s.sync_wait(None), Duration::from_secs(30));
        assert_eq!(s.sync_wait(Some(u64::MAX)), Duration::from_secs(3600));
        assert_eq!(s.start_wait(None), None);
        assert_eq!(s.start_wait(Some(u64::MAX)), Some(MAX_START_WAIT));
        // The clamped values can be added to an Instant without overflowing.
        let _ = tokio::time::Instant::now() + s.run_timeout(Some(u64::MAX));
        let _ = tokio::time::Instant::now() + s.start_wait(Some(u64::MAX)).unwrap();
    }
}
