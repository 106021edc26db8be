//! What every MCP connection shares: Kubernetes access, sessions, runs, metrics, settings.

use std::sync::Arc;
use std::time::Duration;

use super::access::KubeAccess;
use super::executions::Executions;
use super::live::LiveSessions;
use super::metrics::GatewayMetrics;
use super::sessions::{SessionDefaults, Sessions};

/// Limits and defaults of tool calls.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Tool calls without a namespace use this one.
    pub default_namespace: String,
    /// HTTP: callers must have been authenticated (no local fallback).
    pub authenticated: bool,
    pub sync_timeout: Duration,
    pub execution_timeout: Duration,
    pub text_limit: usize,
    pub upload_limit: usize,
}

impl Settings {
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
             execution_id after {}s: poll get_execution_status / get_execution_result. Files \
             live under the notebook root (list_files, read_file, upload_file). Default \
             namespace: {}. Resource profiles: {profiles}. Call shutdown_session when done.",
            self.sync_timeout.as_secs(),
            self.default_namespace
        )
    }
}

/// Shared by all connections.
pub struct GatewayState {
    pub access: KubeAccess,
    pub sessions: Sessions,
    pub live: LiveSessions,
    pub executions: Executions,
    pub metrics: Arc<GatewayMetrics>,
    pub settings: Settings,
}

impl GatewayState {
    pub fn new(access: KubeAccess, defaults: SessionDefaults, settings: Settings) -> Self {
        let metrics = Arc::new(GatewayMetrics::default());
        Self {
            sessions: Sessions::new(access.own(), defaults),
            live: LiveSessions::new(access.own()),
            executions: Executions::new(metrics.clone(), settings.text_limit),
            access,
            metrics,
            settings,
        }
    }
}
