//! Shared support for integration tests: the environment written by `hack/up.sh`,
//! Kubernetes clients per test user, kubectl, CRD installation and test namespaces.
//!
//! Integration tests never skip: without the environment they fail and say how to start it.
#![allow(dead_code)] // each test binary uses a different part of this module

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

/// The settings `hack/up.sh` writes to `$SLURMLAB_STATE/env`.
pub struct Env {
    vars: BTreeMap<String, String>,
    path: PathBuf,
}

/// The test users of the local API server (see hack/kube-up.sh).
#[derive(Clone, Copy, Debug)]
pub enum User {
    /// system:masters
    Admin,
    /// An unprivileged user (no RBAC bindings unless a test adds them).
    Alice,
    /// Another unprivileged user.
    Bob,
}

impl Env {
    /// Reads the env file, or fails the test saying how to bring the environment up.
    pub fn load() -> Self {
        install_crypto_provider();
        let path = std::env::var_os("SLURMLAB_ENV")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                let state =
                    std::env::var("SLURMLAB_STATE").unwrap_or_else(|_| "/tmp/slurmlab".into());
                Path::new(&state).join("env")
            });
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "the local environment is not up ({}: {e}).\n\
                 Run `make test` (brings it up, runs the tests, stops it) or `make up` first.",
                path.display()
            )
        });
        // hack/image.sh writes the image it pushed next to it (`make image`).
        let image = std::fs::read_to_string(path.with_file_name("image.env")).unwrap_or_default();
        let vars = text
            .lines()
            .chain(image.lines())
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect();
        Self { vars, path }
    }

    /// A setting; a missing one fails the test naming the file.
    pub fn get(&self, key: &str) -> &str {
        self.vars.get(key).map(String::as_str).unwrap_or_else(|| {
            panic!(
                "{key} is missing from {}; re-run `make up`{}",
                self.path.display(),
                if key.starts_with("SLURMLAB_IMAGE") {
                    " and `make image`"
                } else {
                    ""
                }
            )
        })
    }

    pub fn kubeconfig(&self, user: User) -> &str {
        self.get(match user {
            User::Admin => "KUBECONFIG_ADMIN",
            User::Alice => "KUBECONFIG_ALICE",
            User::Bob => "KUBECONFIG_BOB",
        })
    }

    /// A client acting as `user`; fails if the API server does not answer.
    pub async fn client(&self, user: User) -> Client {
        let path = self.kubeconfig(user);
        let kubeconfig =
            Kubeconfig::read_from(path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
        let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .unwrap_or_else(|e| panic!("loading {path}: {e}"));
        let client = Client::try_from(config).expect("building a client");
        client.apiserver_version().await.unwrap_or_else(|e| {
            panic!("the API server does not answer ({e}); is the environment up? Run `make up`.")
        });
        client
    }

    /// Runs the environment's kubectl as `user`; returns (success, stdout, stderr).
    pub fn kubectl(&self, user: User, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(self.get("KUBECTL"))
            .arg("--kubeconfig")
            .arg(self.kubeconfig(user))
            .args(args)
            .output()
            .expect("running kubectl");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// One SLURM cluster by name (`trixie` or `sid`).
    pub fn slurm_cluster(&self, name: &str) -> SlurmCluster {
        self.slurm_clusters()
            .into_iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no SLURM cluster {name} in the environment"))
    }

    /// The SLURM clusters of the environment (trixie: Slurm 24.11, sid: Slurm 26.05).
    pub fn slurm_clusters(&self) -> Vec<SlurmCluster> {
        self.get("SLURM_CLUSTERS")
            .split(',')
            .map(|name| {
                let key = |k: &str| {
                    self.get(&format!("SLURM_{}_{k}", name.to_uppercase()))
                        .to_owned()
                };
                SlurmCluster {
                    name: name.to_owned(),
                    url: key("URL"),
                    versions: key("VERSIONS").split(',').map(str::to_owned).collect(),
                    user: key("USER"),
                    jwt_key: PathBuf::from(key("JWT_KEY")),
                    jupyter_venv: key("JUPYTER_VENV"),
                    chroot: key("CHROOT"),
                    conf: key("CONF"),
                    slurm_version: key("SLURM_VERSION"),
                    tenants: key("TENANTS").split(',').map(str::to_owned).collect(),
                    nodes: key("NODES").split(',').map(str::to_owned).collect(),
                }
            })
            .collect()
    }
}

/// One local SLURM cluster.
#[derive(Clone, Debug)]
pub struct SlurmCluster {
    pub name: String,
    pub url: String,
    /// REST API versions slurmrestd serves, oldest first.
    pub versions: Vec<String>,
    pub user: String,
    pub jwt_key: PathBuf,
    /// Path of the Jupyter venv inside the cluster's "compute node" (the chroot).
    pub jupyter_venv: String,
    /// The chroot holding the cluster's SLURM commands, and its slurm.conf.
    pub chroot: String,
    pub conf: String,
    pub slurm_version: String,
    /// SLURM users of two tenants (accounts tenant-a and tenant-b), not operators.
    pub tenants: Vec<String>,
    /// The compute hosts, each on its own address.
    pub nodes: Vec<String>,
}

impl SlurmCluster {
    /// A fresh 10-minute token for the cluster's job user, minted from its JWT key.
    pub fn token(&self) -> String {
        self.token_for(&self.user)
    }

    /// A fresh 10-minute token for any SLURM user of the cluster.
    pub fn token_for(&self, user: &str) -> String {
        let key = std::fs::read(&self.jwt_key)
            .unwrap_or_else(|e| panic!("reading {:?}: {e}", self.jwt_key));
        slurmlab::slurm::jwt::mint(&key, user, unix_now(), 600)
    }

    /// Runs `hack/site-fault.sh <cluster> ARGS` (kill-node, revive, restart, partition,
    /// heal); fails the test if the script does.
    pub fn fault(&self, args: &[&str]) {
        let out = Command::new(repo_path("hack/site-fault.sh"))
            .arg(&self.name)
            .args(args)
            .output()
            .expect("running hack/site-fault.sh");
        assert!(
            out.status.success(),
            "site-fault.sh {} {args:?} failed:\n{}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs a SLURM command of the cluster (as root, on the Kubernetes side).
    pub fn command(&self, args: &[&str]) -> String {
        let out = Command::new("chroot")
            .arg(&self.chroot)
            .arg("env")
            .arg(format!("SLURM_CONF={}", self.conf))
            .args(args)
            .output()
            .expect("running a SLURM command in the chroot");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The ids of the pending, running or completing jobs named `name`.
    pub fn live_jobs(&self, name: &str) -> Vec<String> {
        self.command(&["squeue", "-h", "-o", "%i %j", "-t", "PD,R,CG"])
            .lines()
            .filter(|l| l.split_whitespace().nth(1) == Some(name))
            .map(|l| l.split_whitespace().next().unwrap_or_default().to_owned())
            .collect()
    }

    /// A compute host's state as `sinfo` says it (idle, mixed, down*, ...).
    pub fn node_state(&self, node: &str) -> String {
        self.command(&["sinfo", "-h", "-n", node, "-o", "%T"])
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned()
    }

    pub fn newest_version(&self) -> &str {
        self.versions.last().expect("at least one REST version")
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// rustls needs one process-wide crypto provider (kube's client needs it too).
pub fn install_crypto_provider() {
    slurmlab::tls::ensure_crypto_provider();
}

/// Applies the generated CRDs with server-side apply and waits until each is Established.
pub async fn install_crds(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply("slurmlab-tests").force();
    for crd in slurmlab::api::all_crds() {
        let name = crd.metadata.name.clone().expect("CRDs are named");
        crds.patch(&name, &params, &Patch::Apply(&crd))
            .await
            .unwrap_or_else(|e| panic!("applying CRD {name}: {e}"));
    }
    for crd in slurmlab::api::all_crds() {
        let name = crd.metadata.name.clone().expect("CRDs are named");
        wait_until(
            Duration::from_secs(30),
            &format!("CRD {name} Established"),
            || {
                let crds = crds.clone();
                let name = name.clone();
                async move {
                    let crd = crds.get(&name).await.ok()?;
                    let established = crd
                        .status?
                        .conditions?
                        .iter()
                        .any(|c| c.type_ == "Established" && c.status == "True");
                    established.then_some(())
                }
            },
        )
        .await;
    }
}

/// Creates a namespace with a unique name starting with `prefix`.
pub async fn create_namespace(client: &Client, prefix: &str) -> String {
    let name = format!("{prefix}-{}", random_suffix());
    let ns: Namespace = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}
    }))
    .expect("namespace object");
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
    name
}

/// Deletes a namespace (its contents go with it, through the namespace controller).
pub async fn delete_namespace(client: &Client, name: &str) {
    let _ = Api::<Namespace>::all(client.clone())
        .delete(name, &Default::default())
        .await;
}

/// Eight random hex digits, for unique names.
pub fn random_suffix() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .subsec_nanos();
    format!("{:08x}", nanos ^ std::process::id().rotate_left(16))
}

/// Polls `check` every 200 ms until it returns Some, or fails the test after `timeout`.
pub async fn wait_until<T, F, Fut>(timeout: Duration, what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    match wait_until_ok(timeout, check).await {
        Some(v) => v,
        None => panic!("timed out after {timeout:?} waiting for {what}"),
    }
}

/// The repository root (for examples/ and crds/).
pub fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// A minimal slurmrestd caller for environment tests (the project's real client lives in
/// `slurmlab::slurm`): JSON in, JSON out, with the cluster's auth headers.
pub struct RawSlurm {
    pub cluster: SlurmCluster,
    pub version: String,
    /// The SLURM user every request acts as.
    pub user: String,
    http: reqwest::Client,
    token: String,
}

impl RawSlurm {
    pub fn new(cluster: &SlurmCluster, version: &str) -> Self {
        Self::as_user(cluster, version, &cluster.user)
    }

    /// Requests acting as `user` (a token minted for them from the cluster's JWT key).
    pub fn as_user(cluster: &SlurmCluster, version: &str, user: &str) -> Self {
        Self {
            token: cluster.token_for(user),
            user: user.to_owned(),
            cluster: cluster.clone(),
            version: version.to_owned(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("http client"),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/slurm/{}/{path}", self.cluster.url, self.version)
    }

    /// Sends a request; returns (HTTP status, JSON body or Null).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let mut req = self
            .http
            .request(method, self.url(path))
            .header("X-SLURM-USER-NAME", &self.user)
            .header("X-SLURM-USER-TOKEN", &self.token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.unwrap_or_else(|e| {
            panic!(
                "slurmrestd of {} at {} does not answer ({e}); run `make up`",
                self.cluster.name, self.cluster.url
            )
        });
        let status = resp.status().as_u16();
        let json = resp.json().await.unwrap_or(serde_json::Value::Null);
        (status, json)
    }

    /// Submits a batch script with the given environment; returns the job id.
    pub async fn submit(&self, name: &str, script: &str, env: &[String]) -> u64 {
        self.submit_with(name, script, env, serde_json::json!({}))
            .await
    }

    /// Like [`Self::submit`], with more job fields (`{"hold": true}`, `required_nodes`).
    pub async fn submit_with(
        &self,
        name: &str,
        script: &str,
        env: &[String],
        extra: serde_json::Value,
    ) -> u64 {
        let mut job = serde_json::json!({
            "name": name,
            "partition": "debug",
            "current_working_directory": "/tmp",
            "standard_output": "/dev/null",
            "environment": env,
            "time_limit": {"set": true, "number": 5},
        });
        if let (Some(job), Some(extra)) = (job.as_object_mut(), extra.as_object()) {
            job.extend(extra.clone());
        }
        let body = serde_json::json!({"script": script, "job": job});
        let (status, json) = self
            .call(reqwest::Method::POST, "job/submit", Some(body))
            .await;
        assert_eq!(status, 200, "submit refused: {json}");
        json["job_id"]
            .as_u64()
            .unwrap_or_else(|| panic!("no job_id in {json}"))
    }

    /// The job's record (`jobs[0]`).
    pub async fn job(&self, id: u64) -> serde_json::Value {
        let (status, json) = self
            .call(reqwest::Method::GET, &format!("job/{id}"), None)
            .await;
        assert_eq!(status, 200, "job {id}: {json}");
        json["jobs"][0].clone()
    }

    /// Waits until the job's state list contains `state`; returns the job record.
    pub async fn wait_state(&self, id: u64, state: &str, timeout: Duration) -> serde_json::Value {
        wait_until(timeout, &format!("job {id} to reach {state}"), || async {
            let job = self.job(id).await;
            let states = job["job_state"].as_array().cloned().unwrap_or_default();
            states.iter().any(|s| s == state).then_some(job)
        })
        .await
    }

    pub async fn cancel(&self, id: u64) {
        let (status, json) = self
            .call(reqwest::Method::DELETE, &format!("job/{id}"), None)
            .await;
        assert_eq!(status, 200, "cancel {id}: {json}");
    }
}

/// The project's slurmrestd client for a local cluster, speaking `version`, minting
/// tokens from the cluster's JWT key.
pub fn slurm_client(cluster: &SlurmCluster, version: Option<&str>) -> slurmlab::slurm::RestClient {
    use slurmlab::slurm::{ClientConfig, RestClient, SlurmMetrics, TokenSource, VersionChoice};
    let key = std::fs::read(&cluster.jwt_key)
        .unwrap_or_else(|e| panic!("reading {:?}: {e}", cluster.jwt_key));
    let auth = TokenSource::jwt_key(key, Duration::from_secs(600));
    let mut cfg = ClientConfig::new(&cluster.name, &cluster.url, auth, &cluster.user);
    cfg.version = match version {
        Some(v) => VersionChoice::Pinned(v.parse().expect("a supported version")),
        None => VersionChoice::Auto,
    };
    cfg.requests_per_second = 50;
    RestClient::new(cfg, SlurmMetrics::default()).expect("client builds")
}

/// A minimal job for `cluster`: runs `script` in /tmp as the cluster's user.
pub fn job_spec(cluster: &SlurmCluster, name: &str, script: &str) -> slurmlab::slurm::JobSpec {
    slurmlab::slurm::JobSpec {
        name: name.to_owned(),
        script: script.to_owned(),
        partition: Some("debug".to_owned()),
        nodes: 1,
        cpus: 1,
        memory_mb: Some(100),
        time_limit_minutes: Some(5),
        working_directory: "/tmp".to_owned(),
        environment: [("PATH", "/usr/bin:/bin"), ("HOME", "/tmp")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        standard_output: Some("/dev/null".to_owned()),
        comment: Some(format!("slurmlab-test user={}", cluster.user)),
        ..Default::default()
    }
}

pub mod bench;
pub mod controller;
pub mod fault_proxy;
pub mod gateway;

/// Like [`wait_until`], but returns None on timeout instead of failing.
pub async fn wait_until_ok<T, F, Fut>(timeout: Duration, check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    poll_every(Duration::from_millis(200), timeout, check).await
}

/// Calls `check` every `interval` until it returns Some; None after `timeout`.
pub async fn poll_every<T, F, Fut>(interval: Duration, timeout: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if tokio::time::Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(interval).await;
    }
}

/// A bare Jupyter server running as a SLURM batch job (no controller involved).
pub struct JupyterJob {
    pub slurm: RawSlurm,
    pub job_id: u64,
    /// `http://host:port`.
    pub url: String,
    pub token: String,
}

impl JupyterJob {
    /// Starts Jupyter on a free port of its compute host with the token from the job environment,
    /// reads host:port from the job comment and waits until `/api/status` answers.
    pub async fn start(cluster: &SlurmCluster) -> JupyterJob {
        const SCRIPT: &str = r#"#!/bin/bash
set -euo pipefail
HOST=$(hostname -s)
PORT=$("$JUPYTER_VENV/bin/python" -c 'import socket, sys; s=socket.socket(); s.bind((sys.argv[1], 0)); print(s.getsockname()[1])' "$HOST")
scontrol update JobId="$SLURM_JOB_ID" Comment="jupyter=$HOST:$PORT"
mkdir -p "$HOME/notebooks"
exec "$JUPYTER_VENV/bin/jupyter-server" --no-browser --ip="$HOST" --port="$PORT" \
  --ServerApp.port_retries=0 --ServerApp.root_dir="$HOME/notebooks"
"#;
        let slurm = RawSlurm::new(cluster, cluster.newest_version());
        let token = format!("t{}", random_suffix());
        let job_env = [
            "PATH=/usr/bin:/bin".to_owned(),
            format!("HOME=/home/{}", cluster.user),
            format!("JUPYTER_TOKEN={token}"),
            format!("JUPYTER_VENV={}", cluster.jupyter_venv),
        ];
        let job_id = slurm
            .submit("slurmlab-jupyter-test", SCRIPT, &job_env)
            .await;
        let endpoint = wait_until(
            Duration::from_secs(60),
            "the job to report its endpoint",
            || async {
                slurm.job(job_id).await["comment"]
                    .as_str()?
                    .strip_prefix("jupyter=")
                    .map(str::to_owned)
            },
        )
        .await;
        let url = format!("http://{endpoint}");
        let http = reqwest::Client::new();
        wait_until(
            Duration::from_secs(60),
            "Jupyter to answer /api/status",
            || async {
                let resp = http
                    .get(format!("{url}/api/status"))
                    .header("Authorization", format!("token {token}"))
                    .send()
                    .await
                    .ok()?;
                (resp.status() == 200).then_some(())
            },
        )
        .await;
        JupyterJob {
            slurm,
            job_id,
            url,
            token,
        }
    }

    /// Cancels the job and waits until SLURM says it is cancelled.
    pub async fn stop(self) {
        self.slurm.cancel(self.job_id).await;
        self.slurm
            .wait_state(self.job_id, "CANCELLED", Duration::from_secs(30))
            .await;
    }
}

/// The last 40 lines of a log file (for failure messages).
pub fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// The body of a GET (e.g. a /metrics page).
pub async fn http_text(url: &str) -> String {
    reqwest::get(url)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .text()
        .await
        .unwrap()
}

/// Waits for a child process (taken out of `child` once it exited) to exit by itself; its
/// exit status, or None if it is still running after `timeout`.
pub fn wait_child_exit(
    child: &mut Option<std::process::Child>,
    timeout: Duration,
) -> Option<std::process::ExitStatus> {
    let c = child.as_mut()?;
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if let Ok(Some(status)) = c.try_wait() {
            *child = None;
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}
