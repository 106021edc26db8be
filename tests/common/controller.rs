//! Running the real `slurmlab controller` binary in a test, scoped to the test's own
//! namespace and SlurmCluster so tests run side by side.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;
use slurmlab::api::{
    AllocationPhase, ComputeAllocation, JupyterSession, SessionPhase, SlurmCluster,
};

use super::{Env, SlurmCluster as EnvCluster};

/// A test's namespace, with its own SlurmCluster pointing at one local SLURM cluster.
/// If the test fails before `cleanup`, dropping the scope still cancels its SLURM jobs,
/// so one failure does not fill the node for the tests after it.
pub struct Scope {
    pub ns: String,
    /// Label value selecting this test's SlurmCluster.
    pub id: String,
    /// Name of the SlurmCluster object.
    pub cluster: String,
    pub slurm: EnvCluster,
    cleaned: std::sync::atomic::AtomicBool,
}

impl Drop for Scope {
    fn drop(&mut self) {
        if self.cleaned.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        // Every job this scope's allocations submitted is named slurmlab-<ns>-<name>.
        let script = format!(
            "squeue -h -o '%i %j' | awk '$2 ~ /^slurmlab-{}-/ {{print $1}}' | xargs -r scancel",
            self.ns
        );
        let _ = Command::new("chroot")
            .arg(&self.slurm.chroot)
            .args([
                "env",
                &format!("SLURM_CONF={}", self.slurm.conf),
                "bash",
                "-c",
                &script,
            ])
            .status();
    }
}

impl Scope {
    /// Creates the namespace, the JWT key Secret and the SlurmCluster.
    pub async fn create(client: &Client, slurm: &EnvCluster, prefix: &str) -> Scope {
        let ns = super::create_namespace(client, prefix).await;
        let id = ns.clone();
        let key = std::fs::read(&slurm.jwt_key).expect("the cluster's JWT key");
        let secret: Secret = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "slurm-jwt", "namespace": ns},
            "data": {"jwt_hs256.key": base64_encode(&key)}
        }))
        .unwrap();
        Api::<Secret>::namespaced(client.clone(), &ns)
            .create(&PostParams::default(), &secret)
            .await
            .unwrap();
        let cluster: SlurmCluster = serde_json::from_value(json!({
            "apiVersion": "slurmlab.io/v1alpha1", "kind": "SlurmCluster",
            "metadata": {"name": format!("{ns}-slurm"), "labels": {"slurmlab.io/test": id}},
            "spec": {
                "restApi": {"url": slurm.url},
                "auth": {"jwtKeySecretRef": {"namespace": ns, "name": "slurm-jwt", "key": "jwt_hs256.key"}},
                "userMapping": {"defaultUser": slurm.user, "allowedUsers": [slurm.user, "alice", "bob"]},
                "defaults": {"partition": "debug", "timeLimit": "30m", "memory": "512Mi"},
                "limits": {"maxTimeLimit": "2h"},
                "jobTemplate": {
                    "serverCommand": format!("{}/bin/jupyter-server", slurm.jupyter_venv),
                    // Each test its own notebook root: files of earlier runs never collide.
                    "notebookRoot": format!("$HOME/notebooks/{ns}")
                },
                "polling": {"interval": "2s", "activeInterval": "1s", "runningRefresh": "5s", "requestsPerSecond": 20}
            }
        }))
        .unwrap();
        Api::<SlurmCluster>::all(client.clone())
            .create(&PostParams::default(), &cluster)
            .await
            .unwrap();
        Scope {
            cluster: format!("{ns}-slurm"),
            ns,
            id,
            slurm: slurm.clone(),
            cleaned: Default::default(),
        }
    }

    /// `kubectl describe KIND NAME` in the scope's namespace, as the admin (events included).
    pub fn describe(&self, env: &Env, kind: &str, name: &str) -> String {
        let (_, out, _) = env.kubectl(
            super::User::Admin,
            &["describe", kind, name, "-n", &self.ns],
        );
        out
    }

    pub fn allocations(&self, client: &Client) -> Api<ComputeAllocation> {
        Api::namespaced(client.clone(), &self.ns)
    }

    /// Creates an allocation on the scope's cluster; `spec` adds to `{clusterRef}`.
    pub async fn allocation(
        &self,
        client: &Client,
        name: &str,
        mut spec: serde_json::Value,
    ) -> ComputeAllocation {
        spec["clusterRef"] = json!(self.cluster);
        let obj: ComputeAllocation = serde_json::from_value(json!({
            "apiVersion": "slurmlab.io/v1alpha1", "kind": "ComputeAllocation",
            "metadata": {"name": name, "namespace": self.ns}, "spec": spec
        }))
        .unwrap();
        self.allocations(client)
            .create(&PostParams::default(), &obj)
            .await
            .unwrap()
    }

    /// Deletes every allocation (while the controller still runs, so jobs are cancelled),
    /// then the SlurmCluster and the namespace.
    pub async fn cleanup(&self, client: &Client) {
        let api = self.allocations(client);
        let _ = api
            .delete_collection(&DeleteParams::default(), &Default::default())
            .await;
        let _ = super::wait_until_ok(Duration::from_secs(60), || async {
            api.list(&Default::default())
                .await
                .ok()
                .filter(|l| l.items.is_empty())
        })
        .await;
        let _ = Api::<SlurmCluster>::all(client.clone())
            .delete(&self.cluster, &DeleteParams::default())
            .await;
        super::delete_namespace(client, &self.ns).await;
        self.cleaned
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A `slurmlab controller` process; killed when dropped.
pub struct ControllerProcess {
    child: Option<Child>,
    pub metrics_addr: String,
    pub log: PathBuf,
}

impl ControllerProcess {
    /// The controller's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts the controller scoped to `scope`, with extra environment variables.
    pub fn start(env: &Env, scope: &Scope, extra_env: &[(&str, &str)]) -> Self {
        Self::start_as(
            env,
            scope,
            env.kubeconfig(super::User::Admin),
            (&scope.ns, "controller"),
            extra_env,
        )
    }

    /// Starts the controller with another identity (`kubeconfig`) and leader Lease.
    pub fn start_as(
        env: &Env,
        scope: &Scope,
        kubeconfig: &str,
        (lease_ns, lease_name): (&str, &str),
        extra_env: &[(&str, &str)],
    ) -> Self {
        let port = free_port();
        let metrics_addr = format!("127.0.0.1:{port}");
        let log_dir = PathBuf::from(env.get("SLURMLAB_STATE")).join("test-logs");
        std::fs::create_dir_all(&log_dir).unwrap();
        let log = log_dir.join(format!("controller-{}.log", scope.ns));
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_slurmlab"));
        cmd.arg("controller")
            .args(["--kubeconfig", kubeconfig])
            .args(["--metrics-addr", &metrics_addr])
            .args(["--watch-namespace", &scope.ns])
            .args([
                "--cluster-selector",
                &format!("slurmlab.io/test={}", scope.id),
            ])
            .args(["--lease-namespace", lease_ns, "--lease-name", lease_name])
            .args([
                "--cancel-wait-seconds",
                "30",
                "--cluster-recheck-seconds",
                "2",
                "--orphan-sweep-seconds",
                "10",
            ])
            .env("RUST_LOG", "info,slurmlab=debug,kube=warn")
            .stdout(Stdio::null())
            .stderr(out);
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("starting slurmlab controller");
        Self {
            child: Some(child),
            metrics_addr,
            log,
        }
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a graceful exit; returns whether it exited by itself.
    pub fn stop(&mut self) -> bool {
        let Some(mut c) = self.child.take() else {
            return true;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        for _ in 0..100 {
            if let Ok(Some(status)) = c.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = c.kill();
        let _ = c.wait();
        false
    }

    /// Waits for the process to exit by itself (e.g. at a crash point).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        super::wait_child_exit(&mut self.child, timeout)
    }

    /// The controller's /metrics text.
    pub async fn metrics(&self) -> String {
        super::http_text(&format!("http://{}/metrics", self.metrics_addr)).await
    }

    /// The controller's log so far (for failure messages).
    pub fn log_tail(&self) -> String {
        super::log_tail(&self.log)
    }
}

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port free right now on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The sum of a counter family's samples whose labels contain every `needle`.
pub fn metric_sum(text: &str, name: &str, needles: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && needles.iter().all(|n| l.contains(n)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The Jupyter token of an allocation, from the Secret its status names.
pub async fn allocation_token(client: &Client, alloc: &ComputeAllocation) -> String {
    let ns = alloc
        .metadata
        .namespace
        .clone()
        .expect("allocations are namespaced");
    let name = alloc
        .status
        .as_ref()
        .and_then(|s| s.token_secret.clone())
        .expect("status names the token Secret");
    slurmlab::controller::read_jupyter_token(
        client,
        &ns,
        &name,
        &kube::ResourceExt::name_any(alloc),
    )
    .await
    .unwrap()
    .expect("the token Secret has the allocation's key")
}

/// A client for a Ready allocation's Jupyter server.
pub async fn allocation_server(
    client: &Client,
    alloc: &ComputeAllocation,
) -> slurmlab::jupyter::JupyterServer {
    let endpoint = alloc
        .status
        .as_ref()
        .and_then(|s| s.endpoint.clone())
        .expect("a Ready allocation has an endpoint");
    let token = allocation_token(client, alloc).await;
    slurmlab::jupyter::JupyterServer::new(endpoint, token, Duration::from_secs(60)).unwrap()
}

pub const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// Waits until the allocation satisfies `check`; fails with its status and the log.
pub async fn wait_alloc(
    client: &Client,
    scope: &Scope,
    name: &str,
    ctl: &ControllerProcess,
    what: &str,
    check: impl Fn(&ComputeAllocation) -> bool,
) -> ComputeAllocation {
    let api = scope.allocations(client);
    let found = super::wait_until_ok(READY_TIMEOUT, || async {
        let a = api.get(name).await.ok()?;
        check(&a).then_some(a)
    })
    .await;
    match found {
        Some(a) => a,
        None => {
            let now = api.get(name).await.ok().and_then(|a| a.status);
            panic!(
                "{name} never became {what}; status: {now:#?}\ncontroller log:\n{}",
                ctl.log_tail()
            )
        }
    }
}

pub fn phase(a: &ComputeAllocation) -> AllocationPhase {
    a.status.as_ref().map(|s| s.phase).unwrap_or_default()
}

pub fn job_id(a: &ComputeAllocation) -> u64 {
    a.status
        .as_ref()
        .and_then(|s| s.slurm.as_ref())
        .and_then(|j| j.job_id)
        .expect("a job id") as u64
}

/// Creates a JupyterSession in the scope's namespace.
pub async fn create_session(client: &Client, scope: &Scope, name: &str, spec: serde_json::Value) {
    let obj: JupyterSession = serde_json::from_value(json!({
        "apiVersion": "slurmlab.io/v1alpha1", "kind": "JupyterSession",
        "metadata": {"name": name, "namespace": scope.ns}, "spec": spec
    }))
    .unwrap();
    Api::<JupyterSession>::namespaced(client.clone(), &scope.ns)
        .create(&PostParams::default(), &obj)
        .await
        .unwrap();
}

/// Waits until the session satisfies `check`; fails with its status and the log.
pub async fn wait_session(
    client: &Client,
    scope: &Scope,
    name: &str,
    ctl: &ControllerProcess,
    what: &str,
    check: impl Fn(&JupyterSession) -> bool,
) -> JupyterSession {
    let api: Api<JupyterSession> = Api::namespaced(client.clone(), &scope.ns);
    match super::wait_until_ok(READY_TIMEOUT, || async {
        api.get(name).await.ok().filter(|s| check(s))
    })
    .await
    {
        Some(s) => s,
        None => {
            let now = api.get(name).await.ok().and_then(|s| s.status);
            panic!(
                "session {name} never became {what}: {now:#?}\ncontroller log:\n{}",
                ctl.log_tail()
            )
        }
    }
}

pub fn session_phase(s: &JupyterSession) -> SessionPhase {
    s.status.as_ref().map(|st| st.phase).unwrap_or_default()
}
