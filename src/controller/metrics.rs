//! The controller's Prometheus metrics, all in one registry served at `/metrics`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::slurm::SlurmMetrics;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    pub kind: String,
    /// `ok` or `error`.
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LookupLabels {
    pub cluster: String,
    /// `adoption` or `orphan_sweep`.
    pub purpose: String,
    /// `accounting` or `whole_table`.
    pub listing: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ForgedLabels {
    pub cluster: String,
    /// `adoption` or `orphan_sweep`.
    pub purpose: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SweptLabels {
    pub cluster: String,
    /// `orphan` (its allocation is gone) or `stray` (not its allocation's current job).
    pub reason: String,
}

/// Everything the controller exports.
pub struct Metrics {
    pub registry: Registry,
    pub slurm: SlurmMetrics,
    reconciles: Family<ReconcileLabels, Counter>,
    errors: Family<KindLabels, Counter>,
    durations: Family<KindLabels, Histogram>,
    allocations: Family<PhaseLabels, Gauge>,
    phases: Mutex<HashMap<String, String>>,
    leader: Gauge,
    lookups: Family<LookupLabels, Counter>,
    forged: Family<ForgedLabels, Counter>,
    swept: Family<SweptLabels, Counter>,
    invalid: Family<KindLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let slurm = SlurmMetrics::register(&mut registry);
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        let errors = Family::<KindLabels, Counter>::default();
        let durations = Family::<KindLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 16))
        });
        let allocations = Family::<PhaseLabels, Gauge>::default();
        let leader = Gauge::default();
        let lookups = Family::<LookupLabels, Counter>::default();
        let forged = Family::<ForgedLabels, Counter>::default();
        let swept = Family::<SweptLabels, Counter>::default();
        let invalid = Family::<KindLabels, Gauge>::default();
        registry.register(
            "slurmlab_invalid_objects",
            "Objects the controller cannot decode (left alone, reported by an InvalidObject event on each)",
            invalid.clone(),
        );
        registry.register(
            "slurmlab_swept_jobs",
            "Jobs of ours the sweep cancelled: orphans (their allocation is gone) and strays (not their allocation's current job)",
            swept.clone(),
        );
        registry.register(
            "slurmlab_forged_jobs",
            "Jobs carrying a slurmlab tag under a SLURM user other than the one the owner maps to: ignored, never adopted or cancelled",
            forged.clone(),
        );
        registry.register(
            "slurmlab_job_lookups",
            "Searches for our own jobs (adoption, orphan sweep) by how they listed them: accounting (our users' rows only) or the whole job table",
            lookups.clone(),
        );
        registry.register(
            "slurmlab_reconciles",
            "Reconciliations by kind and result",
            reconciles.clone(),
        );
        registry.register(
            "slurmlab_reconcile_errors",
            "Failed reconciliations by kind",
            errors.clone(),
        );
        registry.register(
            "slurmlab_reconcile_duration_seconds",
            "Duration of reconciliations",
            durations.clone(),
        );
        registry.register(
            "slurmlab_allocations",
            "ComputeAllocations by phase",
            allocations.clone(),
        );
        registry.register(
            "slurmlab_leader",
            "1 while this replica holds the leader lease",
            leader.clone(),
        );
        Self {
            registry,
            slurm,
            reconciles,
            errors,
            durations,
            allocations,
            phases: Mutex::default(),
            leader,
            lookups,
            forged,
            swept,
            invalid,
        }
    }
}

impl Metrics {
    pub fn reconciled(&self, kind: &str, ok: bool, elapsed: Duration) {
        let result = if ok { "ok" } else { "error" };
        self.reconciles
            .get_or_create(&ReconcileLabels {
                kind: kind.into(),
                result: result.into(),
            })
            .inc();
        if !ok {
            self.errors
                .get_or_create(&KindLabels { kind: kind.into() })
                .inc();
        }
        self.durations
            .get_or_create(&KindLabels { kind: kind.into() })
            .observe(elapsed.as_secs_f64());
    }

    /// Records an allocation's phase (`None` when it is gone) and updates the gauges.
    pub fn allocation_phase(&self, key: &str, phase: Option<&str>) {
        let mut phases = self.phases.lock().unwrap_or_else(|p| p.into_inner());
        match phase {
            Some(p) => phases.insert(key.to_owned(), p.to_owned()),
            None => phases.remove(key),
        };
        let mut counts: HashMap<&str, i64> = HashMap::new();
        for p in phases.values() {
            *counts.entry(p.as_str()).or_default() += 1;
        }
        for p in [
            "Pending",
            "Queued",
            "Starting",
            "Ready",
            "Terminating",
            "Completed",
            "Failed",
        ] {
            self.allocations
                .get_or_create(&PhaseLabels { phase: p.into() })
                .set(counts.get(p).copied().unwrap_or(0));
        }
    }

    pub fn job_lookup(&self, cluster: &str, purpose: &str, listing: &str) {
        self.lookups
            .get_or_create(&LookupLabels {
                cluster: cluster.into(),
                purpose: purpose.into(),
                listing: listing.into(),
            })
            .inc();
    }

    pub fn forged_job(&self, cluster: &str, purpose: &str) {
        self.forged
            .get_or_create(&ForgedLabels {
                cluster: cluster.into(),
                purpose: purpose.into(),
            })
            .inc();
    }

    pub fn swept_job(&self, cluster: &str, reason: &str) {
        self.swept
            .get_or_create(&SweptLabels {
                cluster: cluster.into(),
                reason: reason.into(),
            })
            .inc();
    }

    pub fn invalid_objects(&self, kind: &str, count: i64) {
        self.invalid
            .get_or_create(&KindLabels { kind: kind.into() })
            .set(count);
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }
}
