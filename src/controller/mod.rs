//! `slurmlab controller`: reconciles SlurmClusters and ComputeAllocations (and, later,
//! JupyterSessions) with leader election, health and metrics endpoints, and graceful
//! shutdown.

mod allocation;
pub mod allocation_state;
mod cluster;
pub mod context;
pub mod endpoint;
mod error;
mod events;
mod http;
pub mod identity;
mod invalid;
mod job_lookup;
pub mod metrics;
mod orphans;
pub mod request;
mod retry;
pub mod script;
mod session;
pub mod stores;
pub mod tag_key;
mod tokens;
pub mod uninstall;
mod visibility;
mod writes;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::ResourceExt;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use crate::api::membership::owned_allocation_name;
pub use allocation::{FINALIZER, TOKEN_SECRET, read_jupyter_token, token_key};
pub use error::ReconcileError;
pub use session::{SESSION_FINALIZER, continued_name};

use crate::api::{ComputeAllocation, SlurmCluster, membership};
use context::{ClusterRegistry, Context, Settings};
use kube::core::DeserializeGuard;
use stores::{GuardedAllocation, GuardedSession};

/// Field manager of everything the controller writes.
pub const FIELD_MANAGER: &str = "slurmlab-controller";

/// Options of `slurmlab controller`.
#[derive(clap::Args, Debug, Clone)]
pub struct ControllerArgs {
    /// Kubeconfig to use (default: in-cluster config, then $KUBECONFIG, then ~/.kube/config).
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, env = "SLURMLAB_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// Only reconcile ComputeAllocations and JupyterSessions in this namespace.
    #[arg(long, env = "SLURMLAB_WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,
    /// Only reconcile SlurmClusters matching this label selector.
    #[arg(long, env = "SLURMLAB_CLUSTER_SELECTOR")]
    pub cluster_selector: Option<String>,
    /// Take the leader Lease before acting, so only one replica acts at a time.
    #[arg(long, env = "SLURMLAB_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,
    /// Namespace of the leader Lease (default: the pod's namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "slurmlab-system")]
    pub lease_namespace: String,
    /// Secret (in the lease namespace, the controller's own) holding the key that signs
    /// job tags; made on first start.
    #[arg(
        long,
        env = "SLURMLAB_TAG_KEY_SECRET",
        default_value = "slurmlab-job-tag-key"
    )]
    pub tag_key_secret: String,
    /// Name of the leader Lease.
    #[arg(
        long,
        env = "SLURMLAB_LEASE_NAME",
        default_value = "slurmlab-controller"
    )]
    pub lease_name: String,
    /// Seconds a deletion waits for SLURM to confirm a cancelled job ended.
    #[arg(long, default_value_t = 60)]
    pub cancel_wait_seconds: u64,
    /// Seconds between pings of a reachable slurmrestd (and re-reads of its auth Secret).
    #[arg(long, default_value_t = 30)]
    pub cluster_recheck_seconds: u64,
    /// Seconds between sweeps for orphaned jobs (jobs whose allocation is gone).
    #[arg(long, default_value_t = 300)]
    pub orphan_sweep_seconds: u64,
    /// One orphan sweep in this many (and the first after start) reads the whole job
    /// table; the others ask accounting for our users' jobs only. 0: never the whole
    /// table (where every job is accounted and user mappings do not change).
    #[arg(
        long,
        env = "SLURMLAB_ORPHAN_FULL_SWEEP_EVERY",
        default_value_t = orphans::FULL_SWEEP_EVERY
    )]
    pub orphan_full_sweep_every: u64,
    /// A job of an existing allocation that is neither its current job nor its claimed
    /// submission (a second job from a failure window) is cancelled by the sweep once it
    /// is older than this.
    #[arg(long, env = "SLURMLAB_STRAY_GRACE_SECONDS", default_value_t = orphans::STRAY_GRACE.as_secs())]
    pub stray_grace_seconds: u64,
}

/// Why the controller could not run.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("cannot build a Kubernetes client: {0} (set --kubeconfig or run in a pod)")]
    Client(String),
    #[error("cannot serve health and metrics on {addr}: {source}")]
    Http {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(
        "leader election failed: {0} (the controller needs get/create/update on leases in {1})"
    )]
    Lease(String, String),
    #[error("{0}")]
    TagKey(#[from] tag_key::TagKeyError),
}

async fn kube_client(kubeconfig: Option<&PathBuf>) -> Result<Client, ControllerError> {
    let config = crate::process::kube_config(kubeconfig.map(PathBuf::as_path))
        .await
        .map_err(ControllerError::Client)?;
    Client::try_from(config).map_err(|e| ControllerError::Client(e.to_string()))
}

/// Runs the controller until SIGTERM/Ctrl-C (or until it loses the leader lease).
pub async fn run(args: ControllerArgs) -> Result<(), ControllerError> {
    let client = kube_client(args.kubeconfig.as_ref()).await?;
    let metrics = Arc::new(metrics::Metrics::default());
    let readiness = Arc::new(http::Readiness::default());
    let shutdown = CancellationToken::new();
    let (addr, http_task) = http::serve(
        args.metrics_addr,
        metrics.clone(),
        readiness.clone(),
        shutdown.clone(),
    )
    .await
    .map_err(|source| ControllerError::Http {
        addr: args.metrics_addr,
        source,
    })?;
    info!(%addr, "serving /healthz, /readyz and /metrics");
    {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            crate::process::shutdown_signal().await;
            info!("shutting down");
            shutdown.cancel();
        });
    }

    let identity = std::env::var("POD_NAME")
        .ok()
        .or_else(|| {
            hostname::get()
                .ok()
                .map(|h| h.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "slurmlab-controller".into());
    let identity = format!("{identity}-{}", std::process::id());
    let mut lease = None;
    if args.leader_election {
        readiness.standby();
        let manager =
            kube_lease_manager::LeaseManagerBuilder::new(client.clone(), &args.lease_name)
                .with_namespace(&args.lease_namespace)
                .with_identity(&identity)
                .with_duration(15)
                .with_grace(5)
                .build()
                .await
                .map_err(|e| ControllerError::Lease(e.to_string(), args.lease_namespace.clone()))?;
        let (mut leader, task) = manager.watch().await;
        info!(lease = %args.lease_name, namespace = %args.lease_namespace, %identity, "waiting for the leader lease");
        while !*leader.borrow_and_update() {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    drop(leader);
                    let _ = task.await;
                    http_task.abort();
                    return Ok(());
                }
                changed = leader.changed() => {
                    if changed.is_err() {
                        return Err(ControllerError::Lease("the lease manager stopped".into(), args.lease_namespace.clone()));
                    }
                }
            }
        }
        info!(%identity, "acquired the leader lease");
        // Losing the lease stops this replica from acting at once.
        let lost = shutdown.clone();
        let mut watch = leader.clone();
        let watcher_task = tokio::spawn(async move {
            while watch.changed().await.is_ok() {
                if !*watch.borrow_and_update() {
                    warn!("lost the leader lease; stopping");
                    lost.cancel();
                    return;
                }
            }
        });
        lease = Some((leader, task, watcher_task));
    }
    let tag_key =
        tag_key::load_or_create(client.clone(), &args.lease_namespace, &args.tag_key_secret)
            .await?;
    readiness.leading();
    metrics.set_leader(true);

    let (trigger_tx, trigger_rx) = futures::channel::mpsc::unbounded();
    let alloc_api: Api<GuardedAllocation> = scoped(&client, args.watch_namespace.as_deref());
    let session_api: Api<GuardedSession> = scoped(&client, args.watch_namespace.as_deref());
    // The two main controllers' caches are the ones every count reads.
    let (stores, feeds) = stores::start(alloc_api.clone(), session_api.clone());
    let alloc_controller = Controller::for_stream(feeds.allocations, stores.allocations.clone());
    let session_controller = Controller::for_stream(feeds.sessions, stores.sessions.clone());
    let ctx = Arc::new(Context {
        client: client.clone(),
        events: events::Events::new(client.clone(), Some(identity.clone())),
        metrics: metrics.clone(),
        clusters: ClusterRegistry::default(),
        settings: Settings {
            namespace: args.watch_namespace.clone(),
            cluster_selector: args.cluster_selector.clone(),
            cancel_wait: Duration::from_secs(args.cancel_wait_seconds),
            cluster_recheck: Duration::from_secs(args.cluster_recheck_seconds.max(1)),
            orphan_sweep: Duration::from_secs(args.orphan_sweep_seconds.max(10)),
            orphan_full_sweep_every: args.orphan_full_sweep_every,
            stray_grace: Duration::from_secs(args.stray_grace_seconds),
        },
        allocation_trigger: trigger_tx,
        job_owners: Default::default(),
        tag_key,
        quota_locks: Default::default(),
        admission_locks: Default::default(),
        stores: stores.clone(),
        invalid: Default::default(),
        retries: Default::default(),
        tokens: Default::default(),
    });

    let mut cluster_watch = watcher::Config::default();
    if let Some(sel) = &args.cluster_selector {
        cluster_watch = cluster_watch.labels(sel);
    }
    let cluster_api: Api<DeserializeGuard<SlurmCluster>> = Api::all(client.clone());
    let cluster_controller = Controller::new(cluster_api, cluster_watch);
    let cluster_store = cluster_controller.store();
    let clusters = cluster_controller
        .graceful_shutdown_on(shutdown.clone().cancelled_owned())
        .run(cluster::reconcile, error_policy, ctx.clone())
        .for_each(|_| futures::future::ready(()));
    let allocations = alloc_controller
        .reconcile_on(trigger_rx.map(|r: ObjectRef<ComputeAllocation>| {
            let guarded = ObjectRef::<GuardedAllocation>::new(&r.name);
            match &r.namespace {
                Some(ns) => guarded.within(ns),
                None => guarded,
            }
        }))
        // Sessions come and go: the allocation counts them (and idles without them).
        .watches(
            session_api,
            watcher::Config::default(),
            |s: GuardedSession| {
                let session = s.0.as_ref().ok()?;
                let ns = session.namespace()?;
                let alloc = session
                    .status
                    .as_ref()
                    .and_then(|st| st.allocation.clone())
                    .or(session.spec.allocation_ref.clone())?;
                Some(ObjectRef::new(&alloc).within(&ns))
            },
        )
        .graceful_shutdown_on(shutdown.clone().cancelled_owned())
        .run(allocation::reconcile, error_policy, ctx.clone())
        .for_each(|_| futures::future::ready(()));
    let session_store = stores.clone();
    let sessions = session_controller
        // An allocation's changes (Ready, ended, restarted) concern the sessions on it.
        .watches(
            alloc_api,
            watcher::Config::default(),
            move |a: GuardedAllocation| {
                let ns = a.namespace().unwrap_or_default();
                let name = a.name_any();
                session_store
                    .sessions_in(&ns)
                    .into_iter()
                    .filter(|s| {
                        s.0.as_ref()
                            .is_ok_and(|s| membership::concerns(s, &s.name_any(), &name))
                    })
                    .map(|s| ObjectRef::from_obj(&*s))
                    .collect::<Vec<_>>()
            },
        )
        .graceful_shutdown_on(shutdown.clone().cancelled_owned())
        .run(session::reconcile, error_policy, ctx.clone())
        .for_each(|_| futures::future::ready(()));
    let gauges = invalid::keep_gauges(stores, cluster_store, metrics.clone());
    info!("controllers running");
    tokio::select! {
        _ = async { tokio::join!(clusters, allocations, sessions) } => {}
        _ = gauges => {}
    }

    metrics.set_leader(false);
    if let Some((leader, task, watcher_task)) = lease {
        // Every receiver must go for the lease manager to release the lease and stop.
        watcher_task.abort();
        let _ = watcher_task.await;
        drop(leader);
        let _ = task.await;
    }
    shutdown.cancel();
    let _ = http_task.await;
    info!("stopped");
    Ok(())
}

/// All namespaces, or only the watched one.
fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope>,
    <K as kube::Resource>::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// A failed reconcile is tried again after a per-object backoff (5 s doubling to 5 min,
/// reset by a success), so one object that keeps failing cannot keep the controller busy.
fn error_policy<K>(obj: Arc<K>, error: &ReconcileError, ctx: Arc<Context>) -> Action
where
    K: kube::Resource,
    K::DynamicType: Default,
{
    let uid = obj.meta().uid.clone().unwrap_or_default();
    let wait = ctx.retries.failed(&uid);
    warn!(
        kind = %K::kind(&Default::default()),
        object = %format!("{}/{}", obj.meta().namespace.as_deref().unwrap_or(""), obj.meta().name.as_deref().unwrap_or("")),
        %error,
        retry_in_seconds = wait.as_secs(),
        "reconcile failed"
    );
    Action::requeue(wait)
}
