//! Talking to SLURM through slurmrestd: every REST version from v0.0.40 (Slurm 23.11) to
//! v0.0.45 (Slurm 26.05), JWT auth, gentle on slurmctld (rate cap, few connections,
//! batched state queries), errors that say what to fix.
//!
//! - [`SlurmApi`]: the operations, as a trait so reconcilers can be tested with a fake.
//! - [`RestClient`]: the implementation over HTTP.
//! - [`poller::Poller`]: one batched state query per interval per cluster.

mod auth;
mod client;
mod error;
pub mod jwt;
mod metrics;
mod model;
pub mod poller;
mod ratelimit;
pub mod version;
pub mod wire;

use async_trait::async_trait;

pub use auth::{DEFAULT_TOKEN_LIFETIME, TokenSource};
pub use client::{ClientConfig, RestClient, SharedClient};
pub use error::SlurmError;
pub use metrics::SlurmMetrics;
pub use model::{
    BaseState, ExitStatus, FLAG_COMPLETING, JobInfo, JobSpec, JobState, JobStateEntry,
    PartitionInfo, PingInfo,
};
pub use version::{ApiVersion, VersionChoice};

/// Jobs from `GET /jobs/`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JobsPage {
    pub jobs: Vec<JobInfo>,
    /// slurmctld's time of this answer: pass it as `changed_since` next time.
    pub last_update: Option<i64>,
}

/// A job as slurmdbd's accounting records have it: enough to choose which records to
/// read from slurmctld (accounting may lag slurmctld, and keeps comments only with
/// `AccountingStoreFlags=job_comment`, so the live record decides).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountedJob {
    pub id: u64,
    pub name: String,
    pub user: Option<String>,
    pub state: JobState,
}

/// Which accounting records to ask slurmdbd for: the unfinished jobs of `users`, named
/// `names` exactly (all names when empty), asked as `as_user` (default: the service
/// user). Under `PrivateData=jobs` a user that is not an operator sees its own jobs only,
/// so asking as the job's own user is always complete.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccountingQuery {
    pub users: Vec<String>,
    pub names: Vec<String>,
    pub as_user: Option<String>,
}

/// What a cancel did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The job was signalled (it ends shortly).
    Signalled,
    /// It had already finished.
    AlreadyFinished,
    /// SLURM does not know the job (finished long ago, or never existed).
    Unknown,
}

/// Operations on one SLURM cluster.
#[async_trait]
pub trait SlurmApi: Send + Sync {
    /// Name of the cluster (for logs and metrics).
    fn cluster(&self) -> &str;

    /// Checks that slurmctld answers and accepts our credentials; returns its release.
    async fn ping(&self) -> Result<PingInfo, SlurmError>;

    /// Submits a batch job as `user`; returns its id.
    async fn submit(&self, user: &str, spec: &JobSpec) -> Result<u64, SlurmError>;

    /// One job's full record.
    async fn job(&self, job_id: u64) -> Result<JobInfo, SlurmError>;

    /// States of many jobs in as few requests as possible. Jobs SLURM no longer knows
    /// (finished more than MinJobAge ago) are simply absent.
    async fn job_states(&self, job_ids: &[u64]) -> Result<Vec<JobStateEntry>, SlurmError>;

    /// All jobs, or only those changed since a time slurmctld gave earlier. An empty list
    /// with `changed_since` means "nothing changed", never "no jobs".
    async fn jobs(&self, changed_since: Option<i64>) -> Result<JobsPage, SlurmError>;

    /// Sets a job's comment, as `user` (the job's owner or an operator).
    async fn update_comment(
        &self,
        user: &str,
        job_id: u64,
        comment: &str,
    ) -> Result<(), SlurmError>;

    /// Cancels a job, as `user`.
    async fn cancel(&self, user: &str, job_id: u64) -> Result<CancelOutcome, SlurmError>;

    /// Unfinished jobs matching `query` from slurmdbd (`GET /slurmdb/.../jobs/` with
    /// `users`, `job_name` and `state` filters): slurmdbd answers with the matching rows
    /// only, so the cost follows our users' jobs, not the cluster's. Fails on sites
    /// without accounting or without slurmrestd's `openapi/slurmdbd` plugin.
    async fn accounted_jobs(
        &self,
        query: &AccountingQuery,
    ) -> Result<Vec<AccountedJob>, SlurmError>;

    /// Partitions with their free nodes and CPUs (`GET /partitions` and `GET /nodes`,
    /// both in proportion to the cluster's nodes, not its jobs). Nothing by default
    /// (test doubles).
    async fn partitions(&self) -> Result<Vec<PartitionInfo>, SlurmError> {
        Ok(vec![])
    }

    /// Jobs whose name starts with `name_prefix`: one `GET /jobs/` of the WHOLE job table,
    /// filtered here. Costs in proportion to every job on the cluster; only for rare
    /// paths and as the fallback where accounting cannot answer.
    async fn find_jobs(&self, name_prefix: &str) -> Result<Vec<JobInfo>, SlurmError> {
        let page = self.jobs(None).await?;
        Ok(page
            .jobs
            .into_iter()
            .filter(|j| j.name.starts_with(name_prefix))
            .collect())
    }
}
