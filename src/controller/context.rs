//! State shared by the reconcilers: the Kubernetes client, events, metrics, and one
//! slurmrestd client + batched poller per SlurmCluster.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use futures::channel::mpsc::UnboundedSender;
use kube::runtime::reflector::ObjectRef;
use tokio::task::JoinHandle;

use crate::api::{ComputeAllocation, SlurmClusterSpec};
use crate::slurm::RestClient;
use crate::slurm::poller::Poller;

use super::error::ReconcileError;
use super::events::Events;
use super::invalid::Reported;
use super::metrics::Metrics;
use super::retry::Retries;
use super::stores::Stores;
use super::tokens::Tokens;
use super::{read_jupyter_token, token_key};

/// Settings of this controller process.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Only ComputeAllocations in this namespace (all when `None`).
    pub namespace: Option<String>,
    /// Only SlurmClusters matching this label selector (all when `None`).
    pub cluster_selector: Option<String>,
    /// How long deletion waits for SLURM to confirm a cancelled job ended.
    pub cancel_wait: std::time::Duration,
    /// How often a reachable cluster is pinged again.
    pub cluster_recheck: std::time::Duration,
    /// How often each cluster is swept for orphaned jobs.
    pub orphan_sweep: std::time::Duration,
    /// One sweep in this many reads the whole job table (0: never).
    pub orphan_full_sweep_every: u64,
    pub stray_grace: std::time::Duration,
}

/// Held while a namespace's quota (or an allocation's places) is counted and a claim
/// written (see `Context`). It holds `true` while the cache may not show the last claim
/// written under it (the watch lagged): the next count then reads the API server.
pub type QuotaLock = Arc<tokio::sync::Mutex<bool>>;

/// Locks kept before the ones nobody holds are dropped.
const LOCKS_KEPT: usize = 1024;

/// The lock of `(a, b)` in `locks`, made on first use; locks nobody holds are dropped
/// once there are many (a lock only matters while held).
fn lock_of(locks: &Mutex<HashMap<(String, String), QuotaLock>>, a: &str, b: &str) -> QuotaLock {
    let mut locks = locks.lock().unwrap_or_else(|p| p.into_inner());
    if locks.len() > LOCKS_KEPT {
        locks.retain(|_, l| Arc::strong_count(l) > 1);
    }
    locks
        .entry((a.to_owned(), b.to_owned()))
        .or_default()
        .clone()
}

/// Everything a reconcile needs.
pub struct Context {
    pub client: kube::Client,
    pub events: Events,
    pub metrics: Arc<Metrics>,
    pub clusters: ClusterRegistry,
    pub settings: Settings,
    /// Wakes the allocation controller when the poller sees a job change.
    pub allocation_trigger: UnboundedSender<ObjectRef<ComputeAllocation>>,
    /// (cluster, job id) → the allocation that owns the job.
    pub job_owners: Mutex<HashMap<(String, u64), ObjectRef<ComputeAllocation>>>,
    /// Signs and verifies job tags.
    pub tag_key: super::identity::TagKey,
    /// One lock per (namespace, cluster) with a quota: counting the namespace's claimed
    /// submissions and writing a new claim happen under it, so concurrent reconciles
    /// cannot each see room for one more.
    pub quota_locks: Mutex<HashMap<(String, String), QuotaLock>>,
    /// One lock per (namespace, allocation): counting its places and writing a session's
    /// admission happen under it, as for quotas.
    pub admission_locks: Mutex<HashMap<(String, String), QuotaLock>>,
    /// The watched allocations and sessions.
    pub stores: Stores,
    /// Objects that did not decode, already reported at their current version.
    pub invalid: Reported,
    /// Consecutive failures per object, for the error policy's backoff.
    pub retries: Retries,
    /// Jupyter tokens read lately.
    pub tokens: Tokens,
}

impl Context {
    /// The quota lock of `namespace` on `cluster`.
    pub fn quota_lock(&self, namespace: &str, cluster: &str) -> QuotaLock {
        lock_of(&self.quota_locks, namespace, cluster)
    }

    /// The Jupyter token of `allocation` (uid `uid`), kept in Secret `ns/secret` (read at
    /// most every 10 minutes).
    pub async fn jupyter_token(
        &self,
        ns: &str,
        secret: &str,
        allocation: &str,
        uid: &str,
    ) -> Result<String, ReconcileError> {
        if let Some(token) = self.tokens.get(uid, secret) {
            return Ok(token);
        }
        let token = read_jupyter_token(&self.client, ns, secret, allocation)
            .await?
            .ok_or_else(|| {
                ReconcileError::Other(format!(
                    "Secret {secret} has no key {}",
                    token_key(secret, allocation)
                ))
            })?;
        self.tokens.put(uid, secret, &token);
        Ok(token)
    }

    /// The admission lock of allocation `namespace/allocation`.
    pub fn admission_lock(&self, namespace: &str, allocation: &str) -> QuotaLock {
        lock_of(&self.admission_locks, namespace, allocation)
    }

    /// Remembers who owns a job, so poller events reach its allocation.
    pub fn own_job(&self, cluster: &str, job_id: u64, owner: ObjectRef<ComputeAllocation>) {
        self.job_owners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((cluster.to_owned(), job_id), owner);
    }

    pub fn disown_job(&self, cluster: &str, job_id: u64) {
        self.job_owners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(cluster.to_owned(), job_id));
    }

    /// Stops following every job `owner` had (it is going away unread): the orphan sweep,
    /// which passes over jobs the poller follows, then cancels them.
    pub fn release_jobs_of(&self, owner: &ObjectRef<ComputeAllocation>) {
        let released: Vec<(String, u64)> = {
            let mut owners = self.job_owners.lock().unwrap_or_else(|p| p.into_inner());
            let keys: Vec<_> = owners
                .iter()
                .filter(|(_, o)| *o == owner)
                .map(|(k, _)| k.clone())
                .collect();
            for k in &keys {
                owners.remove(k);
            }
            keys
        };
        for (cluster, job_id) in released {
            if let Some(handle) = self.clusters.get(&cluster) {
                handle.poller.untrack(job_id);
            }
        }
    }

    pub fn job_owner(&self, cluster: &str, job_id: u64) -> Option<ObjectRef<ComputeAllocation>> {
        self.job_owners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(cluster.to_owned(), job_id))
            .cloned()
    }
}

/// One SLURM cluster as the controller uses it.
pub struct ClusterHandle {
    pub name: String,
    /// UID of the SlurmCluster object: jobs submitted through it carry it.
    pub uid: String,
    pub spec: SlurmClusterSpec,
    pub client: Arc<RestClient>,
    pub poller: Arc<Poller>,
    /// The user a static token acts as (None with a JWT key).
    pub token_user: Option<String>,
    /// Hash of everything that needs a new client when it changes.
    pub fingerprint: u64,
    /// Hash of the Secret's bytes.
    pub secret_hash: std::sync::atomic::AtomicU64,
    /// SLURM users this controller's jobs on this cluster run as (seen since start: every
    /// allocation is reconciled at start, so this fills quickly). The orphan sweep asks
    /// accounting for these users' jobs.
    pub users: Mutex<std::collections::BTreeSet<String>>,
    /// When the partitions were last read (they are read at most every
    /// [`PARTITIONS_EVERY`], however often the cluster is pinged).
    pub partitions_read: Mutex<Option<std::time::Instant>>,
    /// The SLURM user job states and records are read as.
    pub service_user: String,
    /// Whether `service_user` sees other users' jobs (probed; see `visibility`).
    pub visibility: Mutex<super::visibility::VisibilityState>,
    pub tasks: Vec<JoinHandle<()>>,
}

/// How often a cluster's partitions are read into its status.
pub const PARTITIONS_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

impl ClusterHandle {
    /// Whether the partitions are due for a read; if so, counts this as the read.
    pub fn partitions_due(&self) -> bool {
        let mut last = self
            .partitions_read
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let due = last.is_none_or(|t| t.elapsed() >= PARTITIONS_EVERY);
        if due {
            *last = Some(std::time::Instant::now());
        }
        due
    }

    /// Why jobs of `user` cannot be followed on this cluster, if they cannot: the service
    /// user was probed and does not see other users' jobs.
    pub fn hidden_jobs_of(&self, user: &str) -> Option<String> {
        if user == self.service_user {
            return None;
        }
        match &self
            .visibility
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .verdict
        {
            super::visibility::Visibility::Hidden(message) => Some(message.clone()),
            _ => None,
        }
    }

    pub fn note_user(&self, user: &str) {
        if user.is_empty() {
            return;
        }
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        if !users.contains(user) {
            users.insert(user.to_owned());
        }
    }

    /// Users to sweep: those seen, plus every user the mapping names.
    pub fn sweep_users(&self) -> Vec<String> {
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mapping = &self.spec.user_mapping;
        users.extend(mapping.default_user.iter().cloned());
        users.extend(mapping.allowed_users.iter().cloned());
        users.extend(mapping.namespaces.values().cloned());
        users.extend(self.token_user.iter().cloned());
        users.into_iter().collect()
    }
}

impl Drop for ClusterHandle {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The SLURM clusters known to this controller, by SlurmCluster name.
#[derive(Default)]
pub struct ClusterRegistry {
    clusters: RwLock<HashMap<String, Arc<ClusterHandle>>>,
}

impl ClusterRegistry {
    pub fn get(&self, name: &str) -> Option<Arc<ClusterHandle>> {
        self.clusters
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    pub fn insert(&self, handle: Arc<ClusterHandle>) -> Option<Arc<ClusterHandle>> {
        self.clusters
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(handle.name.clone(), handle)
    }

    pub fn remove(&self, name: &str) -> Option<Arc<ClusterHandle>> {
        self.clusters
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name)
    }

    pub fn all(&self) -> Vec<Arc<ClusterHandle>> {
        self.clusters
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }
}
