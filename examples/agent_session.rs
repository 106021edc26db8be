//! An example agent session through the MCP gateway, as `make demo` runs it: survey the
//! partitions, start a session on a SLURM job (an MCP task: the client declares the tasks
//! extension), check what the job has, run a numpy computation, draw a plot (saved as
//! PNG), run a long cell that becomes a task and poll it, then show the notebook that
//! recorded it all.
//!
//! ```sh
//! cargo run --example agent_session -- --url http://127.0.0.1:18000/mcp \
//!     --token "$TOKEN" --out /tmp/slurmlab/demo/output
//! ```

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ClientCapabilities, ClientConfig,
    GetTaskParams, ProgressNotificationParam, TaskPayload,
};
use rmcp::service::{NotificationContext, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use serde_json::{Value, json};

/// Declares the MCP tasks extension (long calls come back as tasks to poll) and prints
/// progress notifications as they arrive.
#[derive(Clone, Default)]
struct Agent;

impl ClientHandler for Agent {
    fn get_info(&self) -> ClientConfig {
        let mut info = ClientConfig::default();
        info.capabilities = ClientCapabilities::builder().enable_tasks().build();
        info
    }

    async fn on_progress(&self, p: ProgressNotificationParam, _: NotificationContext<RoleClient>) {
        if let Some(m) = p.message {
            println!("    … {m}");
        }
    }
}

struct Args {
    url: String,
    token: String,
    out: PathBuf,
}

fn args() -> Result<Args, String> {
    let mut url =
        std::env::var("SLURMLAB_MCP_URL").unwrap_or_else(|_| "http://127.0.0.1:18000/mcp".into());
    let mut token = std::env::var("SLURMLAB_TOKEN").unwrap_or_default();
    let mut out = PathBuf::from("agent-output");
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--url" => url = value()?,
            "--token" => token = value()?,
            "--out" => out = PathBuf::from(value()?),
            other => {
                return Err(format!(
                    "unknown argument {other}; use --url, --token, --out"
                ));
            }
        }
    }
    if token.is_empty() {
        return Err("a bearer token is needed: --token or SLURMLAB_TOKEN".into());
    }
    Ok(Args { url, token, out })
}

fn texts(r: &CallToolResult) -> String {
    r.content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("")
}

type Client = RunningService<RoleClient, Agent>;

/// Calls a tool; a task it answers with is polled (printing its status as it changes)
/// until it ends.
async fn call(client: &Client, tool: &str, args: Value) -> Result<CallToolResult, String> {
    let args = args.as_object().cloned().unwrap_or_default();
    let answer = client
        .call_tool_once(CallToolRequestParams::new(tool.to_owned()).with_arguments(args))
        .await
        .map_err(|e| format!("{tool}: {e}"))?;
    let r = match answer {
        CallToolResponse::Complete(r) => r,
        CallToolResponse::Task(created) => {
            let id = created.task.task_id;
            println!("    task {id}");
            let mut last = None;
            loop {
                let t = client
                    .get_task(GetTaskParams::new(id.clone()))
                    .await
                    .map_err(|e| format!("tasks/get {id}: {e}"))?;
                if t.task.task.status_message != last {
                    last = t.task.task.status_message.clone();
                    if let Some(m) = &last {
                        println!("    … {m}");
                    }
                }
                match t.task.payload {
                    TaskPayload::Completed { result } => {
                        break serde_json::from_value(Value::Object(result))
                            .map_err(|e| format!("task {id}'s result: {e}"))?;
                    }
                    TaskPayload::Working | TaskPayload::InputRequired { .. } => {}
                    other => return Err(format!("{tool}: task {id} ended {other:?}")),
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        other => return Err(format!("{tool}: unexpected answer {other:?}")),
    };
    if r.is_error == Some(true) {
        return Err(format!("{tool} failed: {}", texts(&r)));
    }
    Ok(r)
}

fn structured(r: &CallToolResult) -> Value {
    r.structured_content.clone().unwrap_or(Value::Null)
}

fn indent(s: &str) -> String {
    s.trim_end().lines().map(|l| format!("    {l}\n")).collect()
}

async fn run(a: Args) -> Result<(), String> {
    // rustls needs one crypto provider per process (reqwest is built without a default).
    let _ = rustls::crypto::ring::default_provider().install_default();
    std::fs::create_dir_all(&a.out).map_err(|e| format!("{}: {e}", a.out.display()))?;
    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(a.url.clone()).auth_header(a.token.clone()),
    );
    let client = Agent
        .serve(transport)
        .await
        .map_err(|e| format!("connecting to {}: {e}", a.url))?;
    let tools = client.list_all_tools().await.map_err(|e| e.to_string())?;
    println!("connected to {} ({} tools)", a.url, tools.len());

    println!("\n0. list_partitions: where there is room");
    let survey = structured(&call(&client, "list_partitions", json!({})).await?);
    for cluster in survey["clusters"].as_array().into_iter().flatten() {
        for p in cluster["partitions"].as_array().into_iter().flatten() {
            println!(
                "    {}/{}: {} nodes, {} of {} CPUs idle",
                cluster["cluster"].as_str().unwrap_or("?"),
                p["name"].as_str().unwrap_or("?"),
                p["nodes"],
                p["idleCpus"],
                p["cpus"]
            );
        }
    }

    println!("\n1. start_new_session: a Jupyter kernel inside a SLURM job (a task)");
    let s = structured(
        &call(
            &client,
            "start_new_session",
            json!({"experiment_name": "demo analysis"}),
        )
        .await?,
    );
    let sid = s["session_id"].as_str().unwrap_or_default().to_owned();
    println!(
        "    session {sid}: SLURM job {} on node {}, allocation {}, notebook {}",
        s["job_id"],
        s["node"].as_str().unwrap_or("?"),
        s["allocation"].as_str().unwrap_or("?"),
        s["notebook_path"].as_str().unwrap_or("?")
    );

    let r = structured(&call(&client, "check_resources", json!({"session_id": sid})).await?);
    println!(
        "    the job has {} CPU(s) on {}, {} s left",
        r["cpus"]["allocated"],
        r["node"].as_str().unwrap_or("?"),
        r["time_left_seconds"]
    );

    println!("\n2. execute_code: a numpy computation");
    let code = "import numpy as np\nrng = np.random.default_rng(0)\nx = rng.normal(size=1_000_000)\nprint(f'mean={x.mean():.4f} std={x.std():.4f}')";
    print!(
        "{}",
        indent(&texts(
            &call(
                &client,
                "execute_code",
                json!({"session_id": sid, "code": code})
            )
            .await?
        ))
    );

    println!("\n3. execute_code: a matplotlib plot, returned as an image");
    let code = "import matplotlib\nmatplotlib.use('agg')\nimport matplotlib.pyplot as plt\n%matplotlib inline\nplt.hist(x, bins=60)\nplt.title('1,000,000 normal samples, computed in a SLURM job')\nplt.show()";
    let plot = call(
        &client,
        "execute_code",
        json!({"session_id": sid, "code": code}),
    )
    .await?;
    let image = plot
        .content
        .iter()
        .find_map(|c| c.as_image())
        .ok_or("the plot came back without an image")?;
    let png = base64::engine::general_purpose::STANDARD
        .decode(&image.data)
        .map_err(|e| e.to_string())?;
    let path = a.out.join("plot.png");
    std::fs::write(&path, &png).map_err(|e| e.to_string())?;
    println!(
        "    {} ({} bytes) saved to {}",
        image.mime_type,
        png.len(),
        path.display()
    );

    println!("\n4. execute_code: a long cell becomes a task (sync_timeout 3 s) and is polled");
    let code = "import time\nfor epoch in range(4):\n    time.sleep(2)\n    print(f'epoch {epoch}: loss {1 / (epoch + 1):.3f}', flush=True)";
    let done = call(
        &client,
        "execute_code",
        json!({"session_id": sid, "code": code, "sync_timeout": 3}),
    )
    .await?;
    print!("{}", indent(&texts(&done)));

    println!("\n5. read_notebook: every step is recorded");
    let nb = structured(&call(&client, "read_notebook", json!({"session_id": sid})).await?);
    for cell in nb["cells"].as_array().into_iter().flatten() {
        let first = cell["source"]
            .as_str()
            .unwrap_or_default()
            .lines()
            .next()
            .unwrap_or_default();
        println!("    [{}] {first} …", cell["index"]);
    }
    println!(
        "    notebook: {} (on the allocation's Jupyter server)",
        nb["notebook_path"].as_str().unwrap_or("?")
    );
    println!(
        "\nThe session stays up for you to explore; end it with the shutdown_session tool or kubectl delete jupytersession."
    );
    let _ = client.cancel().await;
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let result = match args() {
        Ok(a) => run(a).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("agent_session: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
