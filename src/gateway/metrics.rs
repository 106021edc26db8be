//! The gateway's Prometheus metrics, served on the health port at `/metrics`.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ToolLabels {
    pub tool: String,
    /// `ok`, `tool_error` (an isError result, e.g. a raising cell) or an error kind.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    pub status: String,
}

/// Everything the gateway exports.
pub struct GatewayMetrics {
    pub registry: Registry,
    tool_calls: Family<ToolLabels, Counter>,
    tool_durations: Family<ToolLabels, Histogram>,
    executions: Family<StatusLabels, Histogram>,
    /// Ready sessions the gateway holds a handle for.
    pub active_sessions: Gauge,
    /// Executions queued or running.
    pub running_executions: Gauge,
}

impl Default for GatewayMetrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let tool_calls = Family::<ToolLabels, Counter>::default();
        let tool_durations = Family::<ToolLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 18))
        });
        let executions = Family::<StatusLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 22))
        });
        let active_sessions = Gauge::default();
        let running_executions = Gauge::default();
        registry.register(
            "slurmlab_gateway_tool_calls",
            "MCP tool calls by tool and outcome",
            tool_calls.clone(),
        );
        registry.register(
            "slurmlab_gateway_tool_duration_seconds",
            "Duration of MCP tool calls",
            tool_durations.clone(),
        );
        registry.register(
            "slurmlab_gateway_execution_duration_seconds",
            "Duration of code executions on kernels, by final status",
            executions.clone(),
        );
        registry.register(
            "slurmlab_gateway_active_sessions",
            "Ready sessions the gateway drives",
            active_sessions.clone(),
        );
        registry.register(
            "slurmlab_gateway_running_executions",
            "Executions queued or running",
            running_executions.clone(),
        );
        Self {
            registry,
            tool_calls,
            tool_durations,
            executions,
            active_sessions,
            running_executions,
        }
    }
}

impl GatewayMetrics {
    pub fn tool_call(&self, tool: &str, outcome: &str, elapsed: Duration) {
        let labels = ToolLabels {
            tool: tool.into(),
            outcome: outcome.into(),
        };
        self.tool_calls.get_or_create(&labels).inc();
        self.tool_durations
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }

    pub fn execution(&self, status: &str, elapsed: Duration) {
        self.executions
            .get_or_create(&StatusLabels {
                status: status.into(),
            })
            .observe(elapsed.as_secs_f64());
    }
}
