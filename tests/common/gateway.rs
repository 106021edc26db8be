//! Running the real `slurmlab gateway` binary in a test and talking to it with rmcp's
//! MCP client, over Streamable HTTP (with a user's bearer token) or stdio.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::Client;
use kube::api::{Api, PostParams};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ClientCapabilities, ClientConfig,
    ProgressNotificationParam,
};
use rmcp::service::{NotificationContext, RunningService};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{ConfigureCommandExt, StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use serde_json::{Value, json};

use super::controller::{Scope, free_port};
use super::{Env, User};

/// A `slurmlab gateway --transport http` process; killed when dropped.
pub struct GatewayProcess {
    child: Option<Child>,
    /// `http://127.0.0.1:<port>/mcp`
    pub url: String,
    pub health: String,
    pub log: PathBuf,
}

impl GatewayProcess {
    /// Starts the gateway (as the admin identity, standing in for its service account)
    /// for `scope`'s namespace and cluster, its own state (runs that may outlive it) in
    /// that namespace too, and waits until it answers.
    pub async fn start(env: &Env, scope: &Scope, extra_args: &[&str]) -> Self {
        let mut args = vec!["--state-namespace", scope.ns.as_str()];
        args.extend_from_slice(extra_args);
        Self::start_as(env, scope, env.kubeconfig(User::Admin), &args).await
    }

    /// Starts the gateway with another identity (e.g. the chart's service account).
    pub async fn start_as(env: &Env, scope: &Scope, kubeconfig: &str, extra_args: &[&str]) -> Self {
        let (port, health_port) = (free_port(), free_port());
        let log = PathBuf::from(env.get("SLURMLAB_STATE"))
            .join("test-logs")
            .join(format!("gateway-{}.log", scope.ns));
        std::fs::create_dir_all(log.parent().unwrap()).unwrap();
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_slurmlab"))
            .arg("gateway")
            .args(gateway_args(scope, kubeconfig))
            .args(["--transport", "http"])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--health-addr", &format!("127.0.0.1:{health_port}")])
            .args(extra_args)
            .env("RUST_LOG", "info,slurmlab=debug,kube=warn")
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .expect("starting slurmlab gateway");
        let g = Self {
            child: Some(child),
            url: format!("http://127.0.0.1:{port}/mcp"),
            health: format!("http://127.0.0.1:{health_port}"),
            log,
        };
        let ready = format!("{}/readyz", g.health);
        super::wait_until_ok(Duration::from_secs(30), || async {
            reqwest::get(&ready)
                .await
                .ok()
                .filter(|r| r.status().is_success())
        })
        .await
        .unwrap_or_else(|| panic!("the gateway did not start:\n{}", g.log_tail()));
        g
    }

    pub async fn metrics(&self) -> String {
        super::http_text(&format!("{}/metrics", self.health)).await
    }

    /// The process's peak resident memory so far (VmHWM), in bytes.
    pub fn peak_rss(&self) -> u64 {
        let pid = self.child.as_ref().expect("the gateway runs").id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .expect("VmHWM in /proc/PID/status")
            * 1024
    }

    /// Sends SIGTERM (a pod being stopped) without waiting.
    pub fn terminate(&self) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
        }
    }

    /// SIGKILL (an OOM kill, a lost node): no drain, nothing written on the way out.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits for the process to exit; its exit status, or None if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        super::wait_child_exit(&mut self.child, timeout)
    }

    pub fn log_tail(&self) -> String {
        super::log_tail(&self.log)
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Arguments every test gateway gets: the scope's namespace and cluster, short timeouts.
fn gateway_args(scope: &Scope, kubeconfig: &str) -> Vec<String> {
    vec![
        "--kubeconfig".into(),
        kubeconfig.into(),
        "--namespace".into(),
        scope.ns.clone(),
        "--cluster".into(),
        scope.cluster.clone(),
        "--start-timeout-seconds".into(),
        "180".into(),
    ]
}

/// A test user's bearer token (from the API server's static token file).
pub fn user_token(env: &Env, user: &str) -> String {
    let text = std::fs::read_to_string(env.get("KUBE_TOKENS")).unwrap();
    text.lines()
        .find_map(|l| {
            let mut f = l.split(',');
            let token = f.next()?;
            (f.next()? == user).then(|| token.to_owned())
        })
        .unwrap_or_else(|| panic!("no token for {user}"))
}

/// The API server's own audience (its service-account issuer).
pub const API_AUDIENCE: &str = "https://kubernetes.default.svc";

/// A token of service account `ns/sa` (created if missing) for `audience`.
pub async fn service_account_token(admin: &Client, ns: &str, sa: &str, audience: &str) -> String {
    use k8s_openapi::api::authentication::v1::TokenRequest;
    use k8s_openapi::api::core::v1::ServiceAccount;
    let accounts = Api::<ServiceAccount>::namespaced(admin.clone(), ns);
    let _ = accounts
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": sa}})).unwrap(),
        )
        .await;
    let request: TokenRequest = serde_json::from_value(json!({
        "spec": {"audiences": [audience], "expirationSeconds": 3600}
    }))
    .unwrap();
    accounts
        .create_token_request(sa, &PostParams::default(), &request)
        .await
        .unwrap_or_else(|e| panic!("TokenRequest for {ns}/{sa}: {e}"))
        .status
        .expect("a token")
        .token
}

/// Lets `user` manage sessions and allocations in `ns` and run code in them (the chart's
/// user role).
pub async fn grant_sessions(admin: &Client, ns: &str, user: &str) {
    grant(
        admin,
        ns,
        user,
        "slurmlab-user",
        json!([{
            "apiGroups": ["slurmlab.io"], "resources": ["jupytersessions", "computeallocations"],
            "verbs": ["get", "list", "watch", "create", "delete", "patch", "update"]
        }, {
            "apiGroups": ["slurmlab.io"], "resources": ["jupytersessions/exec"], "verbs": ["create"]
        }]),
    )
    .await;
}

/// Lets `user` read sessions and allocations in `ns`, nothing more (the chart's viewer role).
pub async fn grant_viewer(admin: &Client, ns: &str, user: &str) {
    grant(
        admin,
        ns,
        user,
        "slurmlab-viewer",
        json!([{
            "apiGroups": ["slurmlab.io"], "resources": ["jupytersessions", "computeallocations"],
            "verbs": ["get", "list", "watch"]
        }]),
    )
    .await;
}

/// Lets `user` read Secrets in `ns` (a stdio gateway reads Jupyter tokens as its user).
pub async fn grant_token_secrets(admin: &Client, ns: &str, user: &str) {
    grant(
        admin,
        ns,
        user,
        "slurmlab-token-reader",
        json!([{
            "apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]
        }]),
    )
    .await;
}

async fn grant(admin: &Client, ns: &str, user: &str, role_name: &str, rules: Value) {
    let role: Role = serde_json::from_value(json!({
        "metadata": {"name": role_name, "namespace": ns},
        "rules": rules
    }))
    .unwrap();
    let _ = Api::<Role>::namespaced(admin.clone(), ns)
        .create(&PostParams::default(), &role)
        .await;
    bind_user(
        admin,
        ns,
        &format!("{role_name}-{user}"),
        "Role",
        role_name,
        user,
    )
    .await;
}

/// A RoleBinding `name` in `ns` giving `user` the `kind` (Role or ClusterRole) `role`.
pub async fn bind_user(admin: &Client, ns: &str, name: &str, kind: &str, role: &str, user: &str) {
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]
    }))
    .unwrap();
    Api::<RoleBinding>::namespaced(admin.clone(), ns)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
}

/// An MCP client that keeps every progress message it receives and, when `takes_tasks`,
/// declares the MCP tasks extension (so long calls may come back as tasks).
#[derive(Clone, Default)]
pub struct ProgressLog {
    pub messages: Arc<Mutex<Vec<String>>>,
    pub takes_tasks: bool,
}

impl ClientHandler for ProgressLog {
    fn get_info(&self) -> ClientConfig {
        let mut info = ClientConfig::default();
        if self.takes_tasks {
            info.capabilities = ClientCapabilities::builder().enable_tasks().build();
        }
        info
    }

    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        if let Some(m) = params.message {
            self.messages.lock().unwrap().push(m);
        }
    }
}

/// A connected MCP client.
pub struct Mcp {
    pub service: RunningService<RoleClient, ProgressLog>,
    pub progress: ProgressLog,
}

impl Mcp {
    /// Connects over Streamable HTTP with `token` (none: no Authorization header).
    pub async fn http(url: &str, token: Option<&str>) -> Result<Self, String> {
        Self::http_as(url, token, ProgressLog::default()).await
    }

    /// Connects like [`Self::http`], declaring the MCP tasks extension.
    pub async fn http_with_tasks(url: &str, token: Option<&str>) -> Result<Self, String> {
        let client = ProgressLog {
            takes_tasks: true,
            ..Default::default()
        };
        Self::http_as(url, token, client).await
    }

    async fn http_as(
        url: &str,
        token: Option<&str>,
        progress: ProgressLog,
    ) -> Result<Self, String> {
        let mut config = StreamableHttpClientTransportConfig::with_uri(url);
        if let Some(t) = token {
            config = config.auth_header(t);
        }
        let transport = StreamableHttpClientTransport::from_config(config);
        let service = progress
            .clone()
            .serve(transport)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Self { service, progress })
    }

    /// Spawns `slurmlab gateway --transport stdio` as `user` and connects to it.
    pub async fn stdio(env: &Env, scope: &Scope, user: User) -> Self {
        let args = gateway_args(scope, env.kubeconfig(user));
        let transport = TokioChildProcess::new(
            tokio::process::Command::new(env!("CARGO_BIN_EXE_slurmlab")).configure(|cmd| {
                cmd.arg("gateway")
                    .args(&args)
                    .args(["--transport", "stdio"]);
                cmd.env("RUST_LOG", "warn");
            }),
        )
        .expect("spawning the stdio gateway");
        let progress = ProgressLog::default();
        let service = progress
            .clone()
            .serve(transport)
            .await
            .expect("MCP handshake over stdio");
        Self { service, progress }
    }

    /// Calls a tool; a protocol failure fails the test.
    pub async fn call(&self, tool: &str, args: Value) -> CallToolResult {
        let args = args.as_object().cloned().unwrap_or_default();
        self.service
            .call_tool(CallToolRequestParams::new(tool.to_owned()).with_arguments(args))
            .await
            .unwrap_or_else(|e| panic!("{tool}: {e}"))
    }

    /// Calls a tool once, as a client that takes tasks does: the answer may be a task.
    pub async fn once(&self, tool: &str, args: Value) -> CallToolResponse {
        let args = args.as_object().cloned().unwrap_or_default();
        self.service
            .peer()
            .call_tool_once(CallToolRequestParams::new(tool.to_owned()).with_arguments(args))
            .await
            .unwrap_or_else(|e| panic!("{tool}: {e}"))
    }

    /// [`Self::once`] for a call that must be answered at once (no task).
    pub async fn complete(&self, tool: &str, args: Value) -> CallToolResult {
        match self.once(tool, args).await {
            CallToolResponse::Complete(r) => r,
            other => panic!("{tool} was not answered at once: {other:?}"),
        }
    }

    /// Calls a tool that must succeed; returns its structured result (or its text).
    pub async fn ok(&self, tool: &str, args: Value) -> Value {
        let r = self.call(tool, args).await;
        assert_ne!(r.is_error, Some(true), "{tool} failed: {}", text(&r));
        r.structured_content
            .clone()
            .unwrap_or_else(|| Value::String(text(&r)))
    }
}

/// Every text block of a result, joined.
/// One agent session through the official MCP Python SDK (tests/python/mcp_client.py):
/// start, `1+1`, a plot, shutdown. Returns what the client saw; `context` is added to a
/// failure message (e.g. the gateway's log).
pub async fn python_sdk_session(
    env: &Env,
    url: &str,
    token: &str,
    context: impl Fn() -> String,
) -> Value {
    python_sdk_script(env, "tests/python/mcp_client.py", url, token, context).await
}

/// Runs a Python SDK client `script URL TOKEN`; returns the one JSON line it prints.
pub async fn python_sdk_script(
    env: &Env,
    script: &str,
    url: &str,
    token: &str,
    context: impl Fn() -> String,
) -> Value {
    let python = std::path::PathBuf::from(env.get("KUBECTL")).with_file_name("python");
    let out = tokio::process::Command::new(python)
        .arg(super::repo_path(script))
        .args([url, token])
        .output()
        .await
        .expect("running the Python MCP client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        context()
    );
    serde_json::from_str(stdout.trim()).expect("one JSON line from the Python client")
}

/// An official MCP SDK driving the gateway (tests/python/mcp_latency.py,
/// tests/node/mcp_latency.mjs).
#[derive(Clone, Copy, Debug)]
pub enum Sdk {
    Python,
    TypeScript,
}

/// What an SDK client runs: `code` on session `sid`, `warmup + n` times.
pub struct SdkRun<'a> {
    pub url: &'a str,
    pub token: &'a str,
    pub sid: &'a str,
    pub code: &'a str,
    pub n: usize,
    pub warmup: usize,
}

/// Runs `run` through `sdk` over Streamable HTTP; returns its JSON line (`server`,
/// `tools`, `text` of the last call, `ms` of the last n).
pub async fn sdk_runs(env: &Env, sdk: Sdk, run: SdkRun<'_>) -> Value {
    let SdkRun {
        url,
        token,
        sid,
        code,
        n,
        warmup,
    } = run;
    let (program, script) = match sdk {
        Sdk::Python => (
            std::path::PathBuf::from(env.get("KUBECTL")).with_file_name("python"),
            "tests/python/mcp_latency.py",
        ),
        Sdk::TypeScript => (
            std::path::PathBuf::from("node"),
            "tests/node/mcp_latency.mjs",
        ),
    };
    let out = tokio::process::Command::new(program)
        .arg(super::repo_path(script))
        .args([url, token, sid, code, &n.to_string(), &warmup.to_string()])
        .env("NODE_MODULES", env.get("NODE_MODULES"))
        .output()
        .await
        .unwrap_or_else(|e| panic!("running the {sdk:?} MCP client: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{sdk:?} client: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).expect("one JSON line from the SDK client")
}

/// A cell that draws a line plot inline (matplotlib, as agents write it).
pub const PLOT_CODE: &str = "import matplotlib\nmatplotlib.use('agg')\nimport matplotlib.pyplot as plt\n%matplotlib inline\nplt.plot([1, 2, 3], [1, 4, 9])\nplt.show()";

/// The PNG image block of a result (checked down to the PNG signature).
pub fn assert_png(r: &CallToolResult) -> Vec<u8> {
    use base64::Engine;
    assert_ne!(r.is_error, Some(true), "{}", text(r));
    let image = r
        .content
        .iter()
        .find_map(|c| c.as_image())
        .expect("an image block");
    assert_eq!(image.mime_type, "image/png");
    let png = base64::engine::general_purpose::STANDARD
        .decode(&image.data)
        .expect("base64 image data");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    png
}

pub fn text(r: &CallToolResult) -> String {
    r.content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("")
}
