//! Prometheus metrics of slurmrestd requests.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub cluster: String,
    pub operation: String,
    /// `ok` or a [`super::SlurmError::kind`].
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    pub cluster: String,
    pub operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterLabels {
    pub cluster: String,
}

/// `slurmlab_slurm_requests_total`, `slurmlab_slurm_request_duration_seconds`,
/// `slurmlab_slurm_response_bytes_total` and `slurmlab_slurm_poll_rounds_total`.
#[derive(Clone, Debug)]
pub struct SlurmMetrics {
    requests: Family<RequestLabels, Counter>,
    duration: Family<OperationLabels, Histogram>,
    response_bytes: Family<OperationLabels, Counter>,
    rounds: Family<ClusterLabels, Counter>,
}

impl Default for SlurmMetrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.002, 2.0, 14))
            }),
            response_bytes: Family::default(),
            rounds: Family::default(),
        }
    }
}

impl SlurmMetrics {
    /// Creates the metrics and registers them.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "slurmlab_slurm_requests",
            "Requests to slurmrestd by cluster, operation and outcome (one per HTTP request, retries included)",
            m.requests.clone(),
        );
        registry.register(
            "slurmlab_slurm_request_duration_seconds",
            "Duration of slurmrestd requests",
            m.duration.clone(),
        );
        registry.register(
            "slurmlab_slurm_response_bytes",
            "Bytes of slurmrestd answer bodies by cluster and operation",
            m.response_bytes.clone(),
        );
        registry.register(
            "slurmlab_slurm_poll_rounds",
            "Rounds of the job-state poller (one batched state query per 200 tracked jobs, plus records of changed jobs)",
            m.rounds.clone(),
        );
        m
    }

    pub fn observe(&self, cluster: &str, operation: &str, outcome: &str, elapsed: Duration) {
        let labels = RequestLabels {
            cluster: cluster.to_owned(),
            operation: operation.to_owned(),
            outcome: outcome.to_owned(),
        };
        self.requests.get_or_create(&labels).inc();
        let labels = OperationLabels {
            cluster: cluster.to_owned(),
            operation: operation.to_owned(),
        };
        self.duration
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }

    pub fn received(&self, cluster: &str, operation: &str, bytes: usize) {
        self.response_bytes
            .get_or_create(&OperationLabels {
                cluster: cluster.to_owned(),
                operation: operation.to_owned(),
            })
            .inc_by(bytes as u64);
    }

    pub fn poll_round(&self, cluster: &str) {
        self.rounds
            .get_or_create(&ClusterLabels {
                cluster: cluster.to_owned(),
            })
            .inc();
    }
}
