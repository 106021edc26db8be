//! The MCP gateway (`slurmlab gateway`): agents start sessions on SLURM, execute code,
//! get text and images back, run long jobs asynchronously, and keep every step in a
//! notebook — as themselves, under Kubernetes RBAC.
//!
//! - [`identity`]: callers (stdio: the kubeconfig user; HTTP: TokenReview'd tokens).
//! - [`access`]: Kubernetes clients impersonating callers.
//! - [`sessions`]: allocations and sessions through the API server.
//! - [`live`]: Ready sessions: Jupyter server, kernel channel, notebook lock.
//! - [`executions`]: runs, sync or async, recorded in the notebook ([`record`]); runs
//!   that may outlive the process are written down ([`journal`]) and taken over by the
//!   next one ([`reattach`]).
//! - [`render`]: outputs as MCP content; [`summary`], [`files`], [`workspace`].
//! - [`tools`]: the MCP tools and resources; [`tasks`]: long calls as MCP Tasks;
//!   [`http`]: transports, auth, health, metrics.

pub mod access;
mod error;
pub mod executions;
pub mod files;
pub mod http;
pub mod identity;
pub mod journal;
pub mod live;
pub mod metrics;
pub mod names;
pub mod params;
pub mod reattach;
pub mod record;
pub mod render;
pub mod reply;
pub mod sessions;
pub mod spill;
pub mod state;
pub mod summary;
pub mod tasks;
pub mod tools;
pub mod workspace;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rmcp::ServiceExt;
use tokio_util::sync::CancellationToken;

pub use error::GatewayError;

use self::access::KubeAccess;
use self::identity::Authenticator;
use self::sessions::{ResourceRequest, SessionDefaults};
use self::state::{GatewayState, Settings};
use self::tools::SlurmlabMcp;

/// How long a starting gateway spends taking over the previous process's runs.
const TAKE_OVER_LIMIT: Duration = Duration::from_secs(60);

/// The audience bearer tokens are minted for by default.
pub const DEFAULT_TOKEN_AUDIENCE: &str = "slurmlab";

/// How agents reach the gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    /// MCP over stdin/stdout for a local agent, as the local kubeconfig user.
    Stdio,
    /// Streamable HTTP at `/mcp`, bearer tokens verified by TokenReview, callers impersonated.
    Http,
}

/// `slurmlab gateway` options.
#[derive(Clone, Debug, clap::Args)]
pub struct GatewayArgs {
    /// stdio (local agent) or http (shared deployment).
    #[arg(long, value_enum, default_value = "http", env = "SLURMLAB_TRANSPORT")]
    pub transport: Transport,
    /// HTTP: where `/mcp` listens.
    #[arg(long, default_value = "0.0.0.0:8000", env = "SLURMLAB_LISTEN")]
    pub listen: SocketAddr,
    /// `/healthz`, `/readyz`, `/metrics` (HTTP default 0.0.0.0:8081; stdio: off unless set).
    #[arg(long, env = "SLURMLAB_HEALTH_ADDR")]
    pub health_addr: Option<SocketAddr>,
    /// Kubeconfig (default: in-cluster, then $KUBECONFIG, then ~/.kube/config).
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Namespace of tool calls that name none.
    #[arg(long, default_value = "default", env = "SLURMLAB_NAMESPACE")]
    pub namespace: String,
    /// The SlurmCluster new allocations use (default: the only one there is).
    #[arg(long, env = "SLURMLAB_CLUSTER")]
    pub cluster: Option<String>,
    /// YAML map of profile name to resources (partition, cpus, memory, gpus, timeLimit, account, qos).
    #[arg(long, env = "SLURMLAB_PROFILES_FILE")]
    pub profiles_file: Option<PathBuf>,
    /// Idle timeout of allocations the gateway creates.
    #[arg(long, default_value = "30m")]
    pub allocation_idle_timeout: String,
    /// Idle timeout of the kernels of sessions the gateway creates: a forgotten session
    /// must not hold its SLURM job (often GPUs) until walltime. Empty: never.
    #[arg(long, default_value = "2h")]
    pub session_idle_timeout: String,
    /// How long a session start waits for Ready before it reports where the job stands.
    #[arg(long, default_value_t = 600)]
    pub start_timeout_seconds: u64,
    /// execute_code returns an execution id after this long (per call: `sync_timeout`).
    #[arg(long, default_value_t = 30)]
    pub sync_timeout_seconds: u64,
    /// Runs are interrupted after this long (per call: `timeout`).
    #[arg(long, default_value_t = 86_400)]
    pub execution_timeout_seconds: u64,
    /// Text returned per execution before it is cut (the rest is saved to a file).
    #[arg(long, default_value_t = 50 * 1024)]
    pub output_limit_bytes: usize,
    /// Largest file upload_file accepts.
    #[arg(long, default_value_t = 10 * 1024 * 1024)]
    pub upload_limit_bytes: usize,
    /// Largest tool reply, in bytes of JSON. The default stays under the 1 MiB that the
    /// official Python SDK accepts per event: JSON sent twice is sent once, then images
    /// are left out and texts cut, each with a note.
    #[arg(long, default_value_t = reply::DEFAULT_REPLY_LIMIT)]
    pub reply_limit_bytes: usize,
    /// On SIGTERM, wait this long for running executions to end and be written into
    /// their notebooks before exiting (new runs are refused meanwhile); a run still going
    /// then is handed over to the next gateway process (with a state namespace), else
    /// recorded as it stands, with a note. Keep it under the pod's
    /// terminationGracePeriodSeconds (less 10 s for the hand-over).
    #[arg(long, default_value_t = 25)]
    pub drain_seconds: u64,
    /// Namespace of the gateway's own state: the ConfigMap `slurmlab-gateway-runs`
    /// recording runs that may outlive this process (longer than 2 s), so a restarted
    /// gateway (SIGKILL, or a drain that ended with runs going) goes on with them under
    /// their ids. In a pod, its own namespace (the chart sets it); empty: runs end with
    /// the process.
    #[arg(long, env = "SLURMLAB_STATE_NAMESPACE", default_value = "")]
    pub state_namespace: String,
    /// HTTP: audiences a bearer token must be valid for (TokenReview). The default is the
    /// gateway's own, so a token minted for the API server or another service is refused
    /// (agents use `kubectl create token <sa> --audience slurmlab`); an empty value
    /// accepts the API server's audiences instead.
    #[arg(
        long = "token-audience",
        env = "SLURMLAB_TOKEN_AUDIENCES",
        value_delimiter = ',',
        default_value = DEFAULT_TOKEN_AUDIENCE
    )]
    pub token_audiences: Vec<String>,
    /// HTTP: the callers' groups the gateway impersonates (and which its RBAC names), so
    /// RoleBindings to these groups apply to callers; any other group, and every group
    /// under `system:`, is dropped. Default: none (RoleBindings to users and service
    /// accounts apply).
    #[arg(
        long = "impersonate-group",
        env = "SLURMLAB_IMPERSONATE_GROUPS",
        value_delimiter = ','
    )]
    pub impersonate_groups: Vec<String>,
    /// HTTP: accepted Host headers (default: any when listening beyond loopback, else loopback names).
    #[arg(long = "allowed-host", value_delimiter = ',')]
    pub allowed_hosts: Vec<String>,
    /// HTTP: accepted browser Origins (default: not checked).
    #[arg(long = "allowed-origin", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,
}

/// Why the gateway could not run.
#[derive(Debug, thiserror::Error)]
pub enum GatewayRunError {
    #[error("cannot build a Kubernetes client: {0} (set --kubeconfig or run in a pod)")]
    Client(String),
    #[error(
        "cannot learn who the kubeconfig's user is (SelfSubjectReview failed: {0}); check \
         that the API server answers and is v1.28 or newer"
    )]
    WhoAmI(String),
    #[error("invalid setting: {0}")]
    Setting(String),
    #[error("cannot read the profiles file {0}: {1}")]
    Profiles(String, String),
    #[error("cannot listen on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
    #[error("the MCP stdio transport failed: {0}")]
    Stdio(String),
}

/// Reads profiles: `{name: {partition: ..., cpus: ...}}`.
pub fn load_profiles(
    path: &std::path::Path,
) -> Result<BTreeMap<String, ResourceRequest>, GatewayRunError> {
    let show = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| GatewayRunError::Profiles(show.clone(), e.to_string()))?;
    serde_yaml_ng::from_str(&text).map_err(|e| GatewayRunError::Profiles(show, e.to_string()))
}

/// Runs the gateway until SIGTERM/Ctrl-C (or, on stdio, until the client leaves).
pub async fn run(args: GatewayArgs) -> Result<(), GatewayRunError> {
    let config = crate::process::kube_config(args.kubeconfig.as_deref())
        .await
        .map_err(GatewayRunError::Client)?;
    let access = KubeAccess::new(config, args.impersonate_groups.clone()).map_err(|e| match e {
        GatewayError::Invalid(m) => GatewayRunError::Setting(m),
        e => GatewayRunError::Client(e.to_string()),
    })?;
    let profiles = match &args.profiles_file {
        Some(p) => load_profiles(p)?,
        None => BTreeMap::new(),
    };
    let local_caller = match args.transport {
        Transport::Http => None,
        Transport::Stdio => Some(
            identity::whoami(access.own())
                .await
                .map_err(|e| GatewayRunError::WhoAmI(e.to_string()))?,
        ),
    };
    let settings = Settings {
        default_namespace: args.namespace.clone(),
        local_caller,
        sync_timeout: Duration::from_secs(args.sync_timeout_seconds),
        execution_timeout: Duration::from_secs(args.execution_timeout_seconds),
        text_limit: args.output_limit_bytes,
        upload_limit: args.upload_limit_bytes,
        reply_limit: args.reply_limit_bytes,
    };
    let defaults = SessionDefaults {
        cluster: args.cluster.clone(),
        profiles,
        allocation_idle_timeout: Some(args.allocation_idle_timeout.clone()),
        session_idle_timeout: Some(args.session_idle_timeout.clone()).filter(|t| !t.is_empty()),
        start_timeout: Duration::from_secs(args.start_timeout_seconds),
    };
    let audiences = args
        .token_audiences
        .iter()
        .filter(|a| !a.is_empty())
        .cloned()
        .collect();
    let auth = Arc::new(Authenticator::new(access.own(), audiences));
    let registry = (!args.state_namespace.is_empty())
        .then(|| Arc::new(journal::Registry::new(access.own(), &args.state_namespace)));
    let state = Arc::new(GatewayState::new(access, defaults, settings, registry));
    // Before serving: runs a previous process left are taken over first, so no new run
    // reaches a kernel's channel ahead of the messages Jupyter kept for them.
    // Bounded: an unreachable Jupyter server must not keep the gateway from serving.
    match tokio::time::timeout(TAKE_OVER_LIMIT, reattach::take_over(&state)).await {
        Ok(taken) if taken.total() > 0 => tracing::info!(
            resumed = taken.resumed,
            recorded = taken.already_recorded,
            lost = taken.lost,
            "runs of the previous gateway process taken over"
        ),
        Ok(_) => {}
        Err(_) => tracing::warn!(
            "taking over the previous process's runs took over {TAKE_OVER_LIMIT:?}; serving \
             (runs not reached stay recorded for the next start)"
        ),
    }
    let drain_limit = Duration::from_secs(args.drain_seconds);
    let shutdown = CancellationToken::new();
    let health_addr = args.health_addr.or(match args.transport {
        Transport::Http => Some(SocketAddr::from(([0, 0, 0, 0], 8081))),
        Transport::Stdio => None,
    });
    let mut tasks = vec![];
    // Sessions nobody used for an hour (deleted ones among them) and runs finished an
    // hour ago are let go.
    tasks.push(tokio::spawn({
        let state = state.clone();
        let shutdown = shutdown.clone();
        async move {
            let mut tick = tokio::time::interval(Duration::from_secs(300));
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        state.executions.prune();
                        let dropped = state.live.prune(Duration::from_secs(3600));
                        if dropped > 0 {
                            tracing::debug!(dropped, "let go of idle sessions");
                        }
                    }
                    _ = shutdown.cancelled() => break,
                }
            }
        }
    }));
    if let Some(addr) = health_addr {
        let (bound, task) =
            crate::process::serve_http(addr, http::health_router(state.clone()), shutdown.clone())
                .await
                .map_err(|e| GatewayRunError::Listen(addr, e))?;
        tracing::info!(addr = %bound, "health and metrics listening");
        tasks.push(task);
    }
    match args.transport {
        Transport::Stdio => {
            tracing::info!(
                namespace = %args.namespace,
                user = state.settings.local_caller.as_ref().map_or("", |c| c.name()),
                "MCP gateway on stdio"
            );
            let service = SlurmlabMcp::new(state.clone())
                .serve(rmcp::transport::stdio())
                .await
                .map_err(|e| GatewayRunError::Stdio(e.to_string()))?;
            tokio::select! {
                r = service.waiting() => { r.map_err(|e| GatewayRunError::Stdio(e.to_string()))?; }
                _ = crate::process::shutdown_signal() => {}
            }
        }
        Transport::Http => {
            let allowed_hosts = if args.allowed_hosts.is_empty() && args.listen.ip().is_loopback() {
                vec!["localhost".into(), "127.0.0.1".into(), "::1".into()]
            } else {
                args.allowed_hosts.clone()
            };
            let policy = http::HttpPolicy {
                allowed_hosts,
                allowed_origins: args.allowed_origins.clone(),
                // Room for the largest upload in base64 plus the JSON around it, so an
                // oversized file gets upload_file's own error, not a dropped connection.
                max_body_bytes: args.upload_limit_bytes / 3 * 4 + (1 << 20),
            };
            let router = http::mcp_router(state.clone(), auth, &policy, shutdown.clone());
            let (bound, task) = crate::process::serve_http(args.listen, router, shutdown.clone())
                .await
                .map_err(|e| GatewayRunError::Listen(args.listen, e))?;
            tracing::info!(addr = %bound, namespace = %args.namespace, "MCP gateway listening at /mcp");
            tasks.push(task);
            crate::process::shutdown_signal().await;
            tracing::info!("shutting down");
        }
    }
    // Still serving: in-flight calls finish and runs end and are recorded first.
    let drained = state.executions.drain(drain_limit).await;
    tracing::info!(
        finished = drained.finished,
        left_running = drained.left_running,
        "runs drained"
    );
    shutdown.cancel();
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
    }
    Ok(())
}
