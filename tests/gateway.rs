//! The MCP gateway against the real stack: rmcp's client over Streamable HTTP (with the
//! test users' bearer tokens) and stdio, a real controller, SLURM jobs running Jupyter,
//! and real kernels. Every step an agent takes must land in the session's notebook.

mod common;

use std::time::Duration;

use base64::Engine;
use common::controller::{ControllerProcess, Scope, allocation_server, metric_sum};
use common::gateway::{GatewayProcess, Mcp, grant_sessions, grant_token_secrets, text, user_token};
use common::{Env, User};
use kube::api::Api;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, CancelTaskParams, ClientRequest,
    GetTaskParams, GetTaskResult, Request, Task, TaskPayload, TaskStatus,
};
use rmcp::service::PeerRequestOptions;
use serde_json::{Value, json};
use slurmlab::api::{ComputeAllocation, JupyterSession};

/// A scope with a controller and a gateway, where alice may use sessions.
async fn setup(
    env: &Env,
    slurm: &str,
    prefix: &str,
) -> (kube::Client, Scope, ControllerProcess, GatewayProcess) {
    let admin = env.client(User::Admin).await;
    common::install_crds(&admin).await;
    let scope = Scope::create(&admin, &env.slurm_cluster(slurm), prefix).await;
    grant_sessions(&admin, &scope.ns, "alice").await;
    let ctl = ControllerProcess::start(env, &scope, &[]);
    let gw = GatewayProcess::start(env, &scope, &["--sync-timeout-seconds", "20"]).await;
    (admin, scope, ctl, gw)
}

/// The notebook as the Jupyter server has it (read with the admin's access).
async fn notebook_on_server(admin: &kube::Client, ns: &str, session: &str) -> Value {
    let s = Api::<JupyterSession>::namespaced(admin.clone(), ns)
        .get(session)
        .await
        .unwrap();
    let st = s.status.unwrap();
    let alloc = Api::<ComputeAllocation>::namespaced(admin.clone(), ns)
        .get(st.allocation.as_deref().unwrap())
        .await
        .unwrap();
    let server = allocation_server(admin, &alloc).await;
    server
        .get(st.notebook_path.as_deref().unwrap(), true)
        .await
        .unwrap()
        .content
}

fn session_name(id: &str) -> &str {
    id.split_once('/').map(|(_, n)| n).unwrap_or(id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_runs_code_and_every_step_is_in_the_notebook() {
    let env = Env::load();
    let (admin, scope, ctl, gw) = setup(&env, "trixie", "gw-flow").await;
    let alice = Mcp::http(&gw.url, Some(&user_token(&env, "alice")))
        .await
        .unwrap();

    let tools = alice.service.list_all_tools().await.unwrap();
    for name in [
        "start_new_session",
        "execute_code",
        "get_execution_result",
        "edit_cell",
        "run_cell",
        "insert_cell",
        "delete_cell",
        "move_cell",
        "clear_outputs",
        "read_cell",
        "read_file",
        "list_allocations",
    ] {
        assert!(
            tools.iter().any(|t| t.name == name),
            "tool {name} is missing"
        );
    }
    // Every tool says whether it only reads, and the readers say so.
    for t in &tools {
        let hints = t
            .annotations
            .as_ref()
            .unwrap_or_else(|| panic!("{} has no annotations", t.name));
        let read_only = hints
            .read_only_hint
            .unwrap_or_else(|| panic!("{}: no readOnlyHint", t.name));
        let reader = t.name.starts_with("read_")
            || t.name.starts_with("list_")
            || t.name.starts_with("get_")
            || t.name.starts_with("check_");
        assert_eq!(read_only, reader, "{}", t.name);
    }

    // Before asking for resources, an agent surveys the partitions (the controller reads
    // them into the SlurmCluster's status; the site's debug partition spans both hosts).
    let survey = common::wait_until_ok(Duration::from_secs(60), || async {
        let s = alice.ok("list_partitions", json!({})).await;
        let parts = s["clusters"][0]["partitions"].as_array()?.clone();
        (!parts.is_empty()).then_some(s)
    })
    .await
    .expect("no partitions reported");
    assert_eq!(survey["clusters"][0]["cluster"], scope.cluster, "{survey}");
    assert_eq!(survey["clusters"][0]["reachable"], true, "{survey}");
    let debug = survey["clusters"][0]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "debug")
        .cloned()
        .unwrap_or_else(|| panic!("no debug partition: {survey}"));
    let (nodes, cpus, idle) = (
        debug["nodes"].as_u64().unwrap(),
        debug["cpus"].as_u64().unwrap(),
        debug["idleCpus"].as_u64().unwrap(),
    );
    assert!(nodes >= 2 && cpus >= nodes && idle <= cpus, "{debug}");
    assert_eq!(debug["state"], json!(["UP"]), "{debug}");

    let started = alice
        .ok("start_new_session", json!({"experiment_name": "Fit model"}))
        .await;
    let sid = started["session_id"].as_str().unwrap().to_owned();
    assert!(
        sid.starts_with(&format!("{}/fit-model-", scope.ns)),
        "{started}"
    );
    assert_eq!(started["notebook_path"], "Fit_model.ipynb");
    assert!(
        started["job_id"].as_u64().is_some() && started["node"].is_string(),
        "{started}"
    );
    assert!(
        !alice.progress.messages.lock().unwrap().is_empty(),
        "no progress while the job started"
    );

    let hi = alice
        .call(
            "execute_code",
            json!({"session_id": sid, "code": "print('hi')"}),
        )
        .await;
    assert_eq!(text(&hi), "hi\n");
    let two = alice
        .call(
            "execute_code",
            json!({"session_id": sid, "code": "x = 41\nx + 1"}),
        )
        .await;
    assert_eq!(text(&two), "42\n");
    let plot = alice
        .call(
            "execute_code",
            json!({"session_id": sid, "code": common::gateway::PLOT_CODE}),
        )
        .await;
    let png = common::gateway::assert_png(&plot);
    let boom = alice
        .call(
            "execute_code",
            json!({"session_id": sid, "code": "def f():\n    raise ValueError('bad value')\nf()"}),
        )
        .await;
    assert_eq!(boom.is_error, Some(true));
    let tb = text(&boom);
    assert!(
        tb.starts_with("ValueError: bad value\n") && tb.contains("f()") && !tb.contains('\u{1b}'),
        "{tb}"
    );

    // A long run goes async, is polled, and completes.
    let pending = alice
        .ok("execute_code", json!({"session_id": sid, "code": "import time\nfor i in range(3):\n    print('step', i, flush=True)\n    time.sleep(3)\nprint('done')", "sync_timeout": 2}))
        .await;
    assert_eq!(pending["status"], "pending", "{pending}");
    let exec_id = pending["execution_id"].as_str().unwrap().to_owned();
    let status = alice
        .ok("get_execution_status", json!({"execution_id": exec_id}))
        .await;
    assert_eq!(status["status"], "running", "{status}");
    // What the job has and uses, read from its Jupyter server while the kernel is busy.
    let asked = std::time::Instant::now();
    let res = alice
        .ok("check_resources", json!({"session_id": sid}))
        .await;
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "check_resources waited for the kernel: {:?}",
        asked.elapsed()
    );
    assert_eq!(res["node"], started["node"], "{res}");
    assert_eq!(
        res["slurm"]["SLURM_JOB_ID"],
        started["job_id"].to_string(),
        "{res}"
    );
    let allocated = res["cpus"]["allocated"].as_u64().unwrap();
    assert!(
        allocated >= 1 && allocated <= res["cpus"]["node"].as_u64().unwrap(),
        "{res}"
    );
    assert!(
        res["memory"]["node"]["total_bytes"].as_u64().unwrap() > 0,
        "{res}"
    );
    // The server and at least the busy kernel, which is printing and sleeping.
    assert!(res["processes"]["count"].as_u64().unwrap() >= 2, "{res}");
    let left = res["time_left_seconds"].as_i64().unwrap();
    assert!(left > 0 && left <= 24 * 3600, "{res}");
    assert!(res["gpus"].as_array().unwrap().is_empty(), "{res}");
    let done = common::wait_until_ok(Duration::from_secs(60), || async {
        let s = alice
            .ok("get_execution_status", json!({"execution_id": exec_id}))
            .await;
        (s["status"] == "completed").then_some(s)
    })
    .await
    .expect("the long run completes");
    assert!(done["elapsed_seconds"].as_f64().unwrap() >= 8.0, "{done}");
    let result = alice
        .call("get_execution_result", json!({"execution_id": exec_id}))
        .await;
    assert_eq!(text(&result), "step 0\nstep 1\nstep 2\ndone\n");

    // Cancelling a run interrupts the kernel, which stays usable.
    let spin = alice
        .ok(
            "execute_code",
            json!({"session_id": sid, "code": "while True:\n    pass", "sync_timeout": 1}),
        )
        .await;
    let spin_id = spin["execution_id"].as_str().unwrap().to_owned();
    let cancelled = alice
        .ok("cancel_execution", json!({"execution_id": spin_id}))
        .await;
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    let after = alice
        .call("execute_code", json!({"session_id": sid, "code": "x"}))
        .await;
    assert_eq!(text(&after), "41\n");
    let listed = alice
        .ok("list_executions", json!({"session_id": sid}))
        .await;
    assert_eq!(
        listed["executions"].as_array().unwrap().len(),
        7,
        "{listed}"
    );

    // 5 MB of output: cut for the agent, whole in a file next to the notebook.
    let big = alice
        .call(
            "execute_code",
            json!({"session_id": sid, "code": "print('0123456789' * 500_000)"}),
        )
        .await;
    let cut = text(&big);
    assert!(cut.len() < 60_000, "{} bytes returned", cut.len());
    let path = cut
        .split('`')
        .nth(1)
        .unwrap_or_else(|| panic!("no file named in {}", &cut[cut.len() - 300..]))
        .to_owned();
    assert!(path.starts_with("Fit_model_outputs/ex-"), "{path}");
    let page = alice
        .call(
            "read_file",
            json!({"session_id": sid, "path": path, "offset": 4_999_990, "length": 100}),
        )
        .await;
    assert!(
        text(&page).starts_with("0123456789\n[bytes 4999990..5000001 of 5000001]"),
        "{}",
        text(&page)
    );

    // Notebook editing and reading.
    let edited = alice
        .call(
            "edit_cell",
            json!({"session_id": sid, "cell_index": 1, "code": "x = 1\nx * 100"}),
        )
        .await;
    assert_eq!(text(&edited), "100\n");
    alice
        .ok(
            "add_markdown",
            json!({"session_id": sid, "markdown": "## Notes\nthe fit converged"}),
        )
        .await;
    let nb = alice.ok("read_notebook", json!({"session_id": sid})).await;
    let cells = nb["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 9, "{nb:#}");
    assert_eq!(cells[1]["source"], "x = 1\nx * 100");
    assert_eq!(cells[1]["outputs"][0], "100");
    assert_eq!(cells[2]["outputs"][0], "[image/png]");
    assert_eq!(cells[3]["outputs"][0], "ValueError: bad value");
    assert_eq!(cells[8]["type"], "markdown");
    let bad_edit = alice
        .call(
            "edit_cell",
            json!({"session_id": sid, "cell_index": 40, "code": "1"}),
        )
        .await;
    assert!(
        text(&bad_edit).contains("no cell 40: the notebook has 9 cells"),
        "{}",
        text(&bad_edit)
    );
    // Cells as an agent (or JupyterLab) edits them: insert without running, run as it
    // is, read one, move, clear, delete; the notebook ends as it was.
    let inserted = alice
        .ok(
            "insert_cell",
            json!({"session_id": sid, "index": -1, "source": "y = x + 1\ny"}),
        )
        .await;
    assert_eq!(inserted["cell_index"], 9);
    let ran = alice
        .call("run_cell", json!({"session_id": sid, "cell_index": -1}))
        .await;
    assert_eq!(text(&ran), "2\n");
    let cell = alice
        .ok("read_cell", json!({"session_id": sid, "cell_index": 9}))
        .await;
    assert_eq!(
        (&cell["source"], &cell["outputs"][0]),
        (&json!("y = x + 1\ny"), &json!("2")),
        "{cell}"
    );
    let moved = alice
        .ok(
            "move_cell",
            json!({"session_id": sid, "from_index": 9, "to_index": 0}),
        )
        .await;
    assert_eq!(moved["cell_index"], 0);
    let first = alice
        .ok("read_cell", json!({"session_id": sid, "cell_index": 0}))
        .await;
    assert_eq!(first["source"], "y = x + 1\ny");
    alice
        .ok(
            "move_cell",
            json!({"session_id": sid, "from_index": 0, "to_index": -1}),
        )
        .await;
    let cleared = alice
        .ok(
            "clear_outputs",
            json!({"session_id": sid, "cell_index": -1}),
        )
        .await;
    assert_eq!(cleared["cleared"], 1);
    let last = alice
        .ok("read_cell", json!({"session_id": sid, "cell_index": -1}))
        .await;
    assert_eq!(last["outputs"], json!([]), "{last}");
    alice
        .ok("delete_cell", json!({"session_id": sid, "cell_index": -1}))
        .await;
    let markdown_run = alice
        .call("run_cell", json!({"session_id": sid, "cell_index": 8}))
        .await;
    assert!(
        text(&markdown_run).contains("not a code cell"),
        "{}",
        text(&markdown_run)
    );
    let nb = alice.ok("read_notebook", json!({"session_id": sid})).await;
    assert_eq!(nb["cells"].as_array().unwrap().len(), 9, "{nb:#}");

    // The workspace lists user variables.
    let ws = alice.ok("get_workspace", json!({"session_id": sid})).await;
    let vars = ws["variables"].as_array().unwrap();
    let x = vars
        .iter()
        .find(|v| v["name"] == "x")
        .expect("x in the workspace");
    assert_eq!(
        (x["type"].as_str(), x["preview"].as_str()),
        (Some("int"), Some("1"))
    );

    // Files round trip, confined to the notebook root.
    alice
        .ok(
            "upload_file",
            json!({"session_id": sid, "path": "data/in.csv", "content": "a,b\n1,2\n"}),
        )
        .await;
    let files = alice
        .ok("list_files", json!({"session_id": sid, "path": "data"}))
        .await;
    assert_eq!(files["files"][0]["path"], "data/in.csv");
    let read = alice
        .call(
            "read_file",
            json!({"session_id": sid, "path": "data/in.csv"}),
        )
        .await;
    assert_eq!(text(&read), "a,b\n1,2\n");
    // A binary upload (the plot's PNG, base64) reads back as an image.
    alice
        .ok(
            "upload_file",
            json!({"session_id": sid, "path": "figs/plot.png", "encoding": "base64",
                   "content": base64::engine::general_purpose::STANDARD.encode(&png)}),
        )
        .await;
    let figure = alice
        .call(
            "read_file",
            json!({"session_id": sid, "path": "figs/plot.png"}),
        )
        .await;
    let read_back = figure.content[0].as_image().expect("an image block");
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(&read_back.data)
            .unwrap(),
        png
    );
    let too_big = alice
        .call(
            "upload_file",
            json!({"session_id": sid, "path": "big.txt", "content": "x".repeat(11 * 1024 * 1024)}),
        )
        .await;
    assert!(
        text(&too_big).contains("uploads are limited to"),
        "{}",
        text(&too_big)
    );
    for bad in ["../../etc/passwd", "/etc/passwd"] {
        let r = alice
            .call("read_file", json!({"session_id": sid, "path": bad}))
            .await;
        assert_eq!(r.is_error, Some(true));
        assert!(
            text(&r).contains("outside the notebook root"),
            "{}",
            text(&r)
        );
    }

    // The notebook on the Jupyter server holds every executed cell, with outputs.
    let on_server = notebook_on_server(&admin, &scope.ns, session_name(&sid)).await;
    let cells = on_server["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 9);
    assert_eq!(cells[0]["outputs"][0]["text"], "hi\n");
    assert!(cells[2]["outputs"][0]["data"]["image/png"].is_string());
    assert_eq!(cells[3]["outputs"][0]["output_type"], "error");
    assert_eq!(
        cells[4]["metadata"]["slurmlab"]["execution_id"],
        exec_id.as_str()
    );
    assert_eq!(cells[4]["metadata"]["slurmlab"]["status"], "completed");
    assert_eq!(cells[5]["metadata"]["slurmlab"]["status"], "cancelled");

    // Resume re-runs the notebook (the ValueError cell is reported); Continue forks it
    // with a fresh kernel.
    let resumed = alice
        .call(
            "start_session_resume_notebook",
            json!({"experiment_name": "fit again", "notebook_path": "Fit_model.ipynb"}),
        )
        .await;
    assert_ne!(resumed.is_error, Some(true), "{}", text(&resumed));
    let r = resumed.structured_content.clone().unwrap();
    assert_eq!(r["reused_allocation"], true, "{r}");
    assert!(
        text(&resumed).contains("ValueError: bad value"),
        "{}",
        text(&resumed)
    );
    let rid = r["session_id"].as_str().unwrap().to_owned();
    let x_again = alice
        .call("execute_code", json!({"session_id": rid, "code": "x"}))
        .await;
    assert_eq!(text(&x_again), "1\n");
    // Interrupt is harmless on an idle kernel; a restart forgets every variable.
    alice
        .ok("interrupt_kernel", json!({"session_id": rid}))
        .await;
    alice.ok("restart_kernel", json!({"session_id": rid})).await;
    let forgotten = alice
        .call("execute_code", json!({"session_id": rid, "code": "x"}))
        .await;
    assert!(
        text(&forgotten).starts_with("NameError"),
        "{}",
        text(&forgotten)
    );
    let cont = alice
        .ok(
            "start_session_continue_notebook",
            json!({"experiment_name": "fork", "notebook_path": "Fit_model.ipynb"}),
        )
        .await;
    assert_eq!(cont["notebook_path"], "Fit_model_continued.ipynb");
    let fresh = alice
        .call(
            "execute_code",
            json!({"session_id": cont["session_id"], "code": "x"}),
        )
        .await;
    assert_eq!(fresh.is_error, Some(true));
    assert!(text(&fresh).starts_with("NameError"), "{}", text(&fresh));

    let sessions = alice.ok("list_sessions", json!({})).await;
    assert_eq!(sessions["sessions"].as_array().unwrap().len(), 3);
    let allocs = alice.ok("list_allocations", json!({})).await;
    assert_eq!(
        allocs["allocations"][0]["sessions"].as_i64(),
        Some(3),
        "{allocs}"
    );
    assert!(allocs["allocations"][0]["seconds_left"].as_i64().unwrap() > 0);
    let status = alice
        .service
        .read_resource(rmcp::model::ReadResourceRequestParams::new(
            "slurmlab://status",
        ))
        .await
        .unwrap();
    assert!(format!("{status:?}").contains(&sid));

    alice
        .ok("shutdown_session", json!({"session_id": sid}))
        .await;
    let gone = common::wait_until_ok(Duration::from_secs(60), || async {
        Api::<JupyterSession>::namespaced(admin.clone(), &scope.ns)
            .get_opt(session_name(&sid))
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    assert!(gone.is_some(), "the session was not deleted");
    let after = alice
        .call("execute_code", json!({"session_id": sid, "code": "1"}))
        .await;
    assert!(text(&after).contains("not found"), "{}", text(&after));

    let metrics = gw.metrics().await;
    assert!(
        metric_sum(
            &metrics,
            "slurmlab_gateway_tool_calls_total",
            &["tool=\"execute_code\"", "outcome=\"ok\""]
        ) >= 5.0,
        "{metrics}"
    );
    assert!(
        metric_sum(
            &metrics,
            "slurmlab_gateway_execution_duration_seconds_count",
            &["status=\"cancelled\""]
        ) >= 1.0
    );
    drop(alice);
    scope.cleanup(&admin).await;
    drop(ctl);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_are_authenticated_and_confined_by_rbac() {
    let env = Env::load();
    let (admin, scope, ctl, gw) = setup(&env, "trixie", "gw-rbac").await;

    // No token, or a wrong one: 401 with a challenge, before any MCP.
    let http = reqwest::Client::new();
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
    for auth in [None, Some("Bearer not-a-token")] {
        let mut req = http
            .post(&gw.url)
            .header("accept", "application/json, text/event-stream")
            .json(&init);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 401, "{auth:?}");
        let challenge = resp.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            challenge.starts_with("Bearer realm=\"slurmlab\""),
            "{challenge}"
        );
    }
    assert!(Mcp::http(&gw.url, None).await.is_err());
    // Malformed JSON is a JSON-RPC parse error (400); a body that is not JSON at all keeps
    // 415.
    for (content_type, body, status) in [
        ("application/json", "{\"jsonrpc\": \"2.0\", ", 400),
        ("text/plain", "hello", 415),
    ] {
        let resp = http
            .post(&gw.url)
            .header("accept", "application/json, text/event-stream")
            .header(
                "authorization",
                format!("Bearer {}", user_token(&env, "alice")),
            )
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), status, "{content_type}");
        if status == 400 {
            let answer: Value = resp.json().await.unwrap();
            assert_eq!(answer["error"]["code"], -32700, "{answer}");
        }
    }

    let alice = Mcp::http(&gw.url, Some(&user_token(&env, "alice")))
        .await
        .unwrap();
    let bob = Mcp::http(&gw.url, Some(&user_token(&env, "bob")))
        .await
        .unwrap();
    let started = alice
        .ok("start_new_session", json!({"experiment_name": "private"}))
        .await;
    let sid = started["session_id"].as_str().unwrap().to_owned();
    let long = alice
        .ok(
            "execute_code",
            json!({"session_id": sid, "code": "import time; time.sleep(30)", "sync_timeout": 1}),
        )
        .await;
    let exec_id = long["execution_id"].as_str().unwrap().to_owned();

    // Bob has no access to alice's namespace: her session and run read as not found.
    for (tool, args) in [
        (
            "execute_code",
            json!({"session_id": sid, "code": "print('pwned')"}),
        ),
        ("read_notebook", json!({"session_id": sid})),
        ("get_execution_result", json!({"execution_id": exec_id})),
        ("cancel_execution", json!({"execution_id": exec_id})),
        ("shutdown_session", json!({"session_id": sid})),
    ] {
        let r = bob.call(tool, args).await;
        assert_eq!(r.is_error, Some(true), "{tool}");
        assert!(text(&r).contains("not found"), "{tool}: {}", text(&r));
    }
    let listing = bob
        .call("list_sessions", json!({"namespace": scope.ns}))
        .await;
    assert_eq!(listing.is_error, Some(true));
    assert!(text(&listing).contains("not allowed"), "{}", text(&listing));
    let start = bob
        .call(
            "start_new_session",
            json!({"experiment_name": "intrude", "namespace": scope.ns}),
        )
        .await;
    assert!(text(&start).contains("not allowed"), "{}", text(&start));
    // Bob as a viewer (get, list, watch): he reads alice's session but runs nothing in
    // it, whatever tool he tries; the refusal names the permission.
    common::gateway::grant_viewer(&admin, &scope.ns, "bob").await;
    // The API server's authorizer sees a new binding within moments.
    let mut nb = bob.call("read_notebook", json!({"session_id": sid})).await;
    for _ in 0..50 {
        if nb.is_error != Some(true) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        nb = bob.call("read_notebook", json!({"session_id": sid})).await;
    }
    assert_ne!(nb.is_error, Some(true), "{}", text(&nb));
    assert!(nb.structured_content.unwrap()["cells"].is_array());
    bob.ok("list_sessions", json!({"namespace": scope.ns}))
        .await;
    for (tool, args) in [
        (
            "execute_code",
            json!({"session_id": sid, "code": "open('/tmp/pwned', 'w')"}),
        ),
        (
            "upload_file",
            json!({"session_id": sid, "path": "pwned.txt", "content": "x"}),
        ),
        ("restart_kernel", json!({"session_id": sid})),
        ("interrupt_kernel", json!({"session_id": sid})),
        ("get_workspace", json!({"session_id": sid})),
        (
            "add_markdown",
            json!({"session_id": sid, "markdown": "pwned"}),
        ),
        (
            "edit_cell",
            json!({"session_id": sid, "cell_index": 0, "code": "print('pwned')"}),
        ),
        ("run_cell", json!({"session_id": sid, "cell_index": 0})),
        (
            "insert_cell",
            json!({"session_id": sid, "index": 0, "source": "pwned"}),
        ),
        ("delete_cell", json!({"session_id": sid, "cell_index": 0})),
        (
            "move_cell",
            json!({"session_id": sid, "from_index": 0, "to_index": -1}),
        ),
        ("clear_outputs", json!({"session_id": sid})),
    ] {
        let r = bob.call(tool, args).await;
        assert_eq!(r.is_error, Some(true), "{tool}");
        assert!(
            text(&r).contains("not allowed") && text(&r).contains("jupytersessions/exec"),
            "{tool}: {}",
            text(&r)
        );
    }
    let files = bob
        .ok("list_files", json!({"session_id": sid}))
        .await
        .to_string();
    assert!(!files.contains("pwned"), "{files}");

    // The Jupyter token never reaches a caller.
    let token = common::controller::allocation_token(
        &admin,
        &Api::<ComputeAllocation>::namespaced(admin.clone(), &scope.ns)
            .get(started["allocation"].as_str().unwrap())
            .await
            .unwrap(),
    )
    .await;
    let nb = alice
        .call("read_notebook", json!({"session_id": sid}))
        .await;
    assert!(!text(&nb).contains(&token));
    let log = std::fs::read_to_string(&gw.log).unwrap();
    assert!(
        !log.contains(&token) && !log.contains(&user_token(&env, "alice")),
        "a secret in the gateway log"
    );

    // Alice's run is unaffected and she can cancel it.
    let cancelled = alice
        .ok("cancel_execution", json!({"execution_id": exec_id}))
        .await;
    assert_eq!(cancelled["status"], "cancelled");
    drop((alice, bob));
    scope.cleanup(&admin).await;
    drop(ctl);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_start_reports_progress_and_times_out_clearly() {
    let env = Env::load();
    // sid: the cluster fewer tests use, so the node frees soon after the blocker ends.
    let (admin, scope, ctl, gw) = setup(&env, "sid", "gw-queue").await;
    let alice = Mcp::http(&gw.url, Some(&user_token(&env, "alice")))
        .await
        .unwrap();
    // Take one of each host's 8 CPUs so a job asking for 8 waits for Resources.
    let cluster = env.slurm_cluster("sid");
    let raw = common::RawSlurm::new(&cluster, cluster.newest_version());
    let mut blockers = Vec::new();
    for node in &cluster.nodes {
        blockers.push(
            raw.submit_with(
                &format!("slurmlab-{}-blocker", scope.ns),
                "#!/bin/bash\nsleep 300\n",
                &["PATH=/usr/bin:/bin".into()],
                json!({"required_nodes": [node]}),
            )
            .await,
        );
    }
    let timed_out = alice
        .call(
            "start_new_session",
            json!({"experiment_name": "queued", "wait_seconds": 6, "resources": {"cpus": 8}}),
        )
        .await;
    assert_eq!(timed_out.is_error, Some(true));
    let why = text(&timed_out);
    // Where the job stands: pending (with SLURM's reason once the poller has seen it).
    assert!(
        why.contains("is not Ready after 6s: job ") && why.contains(" pending"),
        "{why}"
    );
    assert!(why.contains("stay"), "{why}");
    // A second start picks up the queued allocation and reports progress while it waits.
    let waiting = tokio::spawn({
        let url = gw.url.clone();
        let token = user_token(&env, "alice");
        async move {
            let again = Mcp::http(&url, Some(&token)).await.unwrap();
            let r = again
                .call(
                    "start_new_session",
                    json!({"experiment_name": "queued", "resources": {"cpus": 8}}),
                )
                .await;
            (r, again.progress.messages.lock().unwrap().clone())
        }
    });
    // Free the node only once SLURM has said why the job waits (its scheduler's verdict).
    let allocs = Api::<ComputeAllocation>::namespaced(admin.clone(), &scope.ns);
    let reason = common::wait_until_ok(Duration::from_secs(90), || async {
        let list = allocs.list(&Default::default()).await.ok()?;
        list.items.iter().find_map(|a| {
            let reason = a.status.as_ref()?.slurm.as_ref()?.reason.clone()?;
            (reason == "Resources" || reason == "Priority").then_some(reason)
        })
    })
    .await;
    assert!(reason.is_some(), "SLURM never gave the queued job a reason");
    tokio::time::sleep(Duration::from_secs(2)).await;
    for blocker in blockers {
        raw.cancel(blocker).await;
    }
    let (r, progress) = waiting.await.unwrap();
    assert_ne!(r.is_error, Some(true), "{}", text(&r));
    assert_eq!(
        r.structured_content.as_ref().unwrap()["reused_allocation"],
        true
    );
    assert!(
        progress
            .iter()
            .any(|m| m.contains("pending: Resources") || m.contains("pending: Priority")),
        "{progress:?}"
    );
    assert!(
        progress
            .iter()
            .any(|m| m.contains("waiting for Jupyter") || m.contains("starting the kernel")),
        "{progress:?}"
    );
    drop(alice);
    scope.cleanup(&admin).await;
    drop(ctl);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_agent_uses_the_gateway_over_stdio() {
    let env = Env::load();
    let admin = env.client(User::Admin).await;
    common::install_crds(&admin).await;
    let scope = Scope::create(&admin, &env.slurm_cluster("trixie"), "gw-stdio").await;
    grant_sessions(&admin, &scope.ns, "alice").await;
    // On stdio the gateway is alice: it reads the Jupyter token Secrets as her.
    grant_token_secrets(&admin, &scope.ns, "alice").await;
    let ctl = ControllerProcess::start(&env, &scope, &[]);
    // As alice, with her kubeconfig: no impersonation, her RBAC applies directly.
    let local = Mcp::stdio(&env, &scope, User::Alice).await;
    let started = local
        .ok("start_new_session", json!({"experiment_name": "local"}))
        .await;
    let sid = started["session_id"].as_str().unwrap();
    // The session is alice's by the name the API server knows her by (SelfSubjectReview),
    // the same owner an HTTP gateway records for her, not an anonymous "local".
    let recorded = Api::<JupyterSession>::namespaced(admin.clone(), &scope.ns)
        .get(session_name(sid))
        .await
        .unwrap();
    let annotations = recorded.metadata.annotations.unwrap_or_default();
    assert_eq!(
        annotations
            .get("slurmlab.io/owner-name")
            .map(String::as_str),
        Some("alice"),
        "{annotations:?}"
    );
    let r = local
        .call(
            "execute_code",
            json!({"session_id": sid, "code": "sum(range(10))"}),
        )
        .await;
    assert_eq!(text(&r), "45\n");
    // The server's token never reaches a kernel's environment (an agent printing
    // os.environ would put it into its transcript), and the job's files (its log among
    // them, wherever SLURM says it is) are private.
    let slurm = env.slurm_cluster("trixie");
    let alloc = Api::<ComputeAllocation>::namespaced(admin.clone(), &scope.ns)
        .get(started["allocation"].as_str().unwrap())
        .await
        .unwrap();
    let job = alloc.status.as_ref().and_then(|s| s.job_id()).unwrap();
    let record = common::RawSlurm::new(&slurm, slurm.newest_version())
        .job(job)
        .await;
    let log = record["standard_output"]
        .as_str()
        .unwrap()
        .replace("%j", &job.to_string());
    let code = format!(
        "import os\nprint(sorted(k for k in os.environ if k in ('JUPYTER_TOKEN', 'SLURMLAB_TOKEN')), oct(os.umask(0o077)), oct(os.stat({log:?}).st_mode & 0o777))"
    );
    let env_check = local
        .call("execute_code", json!({"session_id": sid, "code": code}))
        .await;
    assert_eq!(text(&env_check), "[] 0o77 0o600\n");
    // The kernel runs in the notebook's directory: what upload_file wrote, open() reads.
    local
        .ok(
            "upload_file",
            json!({"session_id": sid, "path": "inputs/cwd.csv", "content": "a,b\n1,2\n"}),
        )
        .await;
    let read_back = local
        .call(
            "execute_code",
            json!({"session_id": sid, "code": "print(open('inputs/cwd.csv').read().splitlines()[1])"}),
        )
        .await;
    assert_eq!(text(&read_back), "1,2\n");
    // MCP cancellation of an in-flight execute_code interrupts the kernel.
    let args = json!({"session_id": sid, "code": "import time\ntime.sleep(600)"});
    let handle = local
        .service
        .send_cancellable_request(
            ClientRequest::CallToolRequest(Request::new(
                CallToolRequestParams::new("execute_code")
                    .with_arguments(args.as_object().unwrap().clone()),
            )),
            PeerRequestOptions::no_options(),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    handle
        .cancel(Some("the agent changed its mind".into()))
        .await
        .unwrap();
    let cancelled = common::wait_until_ok(Duration::from_secs(30), || async {
        let runs = local
            .ok("list_executions", json!({"session_id": sid}))
            .await;
        runs["executions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["status"] == "cancelled")
            .then_some(())
    })
    .await;
    assert!(cancelled.is_some(), "the run was not cancelled");
    let r = local
        .call(
            "execute_code",
            json!({"session_id": sid, "code": "'still alive'"}),
        )
        .await;
    assert_eq!(text(&r), "'still alive'\n");
    local
        .ok("shutdown_session", json!({"session_id": sid}))
        .await;
    local.service.cancel().await.unwrap();
    scope.cleanup(&admin).await;
    drop(ctl);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_python_sdk_is_a_client_too() {
    let env = Env::load();
    let (admin, scope, ctl, gw) = setup(&env, "trixie", "gw-python").await;
    let seen =
        common::gateway::python_sdk_session(&env, &gw.url, &user_token(&env, "alice"), || {
            format!("gateway:\n{}", gw.log_tail())
        })
        .await;
    assert_eq!(seen["server"], "slurmlab-gateway");
    assert_eq!(seen["tools"], 28);
    // The SDK reads the tool annotations: these (and only these) only read.
    assert_eq!(
        seen["read_only"],
        json!([
            "check_resources",
            "get_execution_result",
            "get_execution_status",
            "get_workspace",
            "list_allocations",
            "list_executions",
            "list_files",
            "list_partitions",
            "list_sessions",
            "read_cell",
            "read_file",
            "read_notebook"
        ])
    );
    assert_eq!(seen["two"], "2\n");
    assert_eq!(seen["png"], true, "{seen}");
    // 30 figures of noise: the reply fits the SDK's 1 MiB per event, with as many images
    // as fit and a note for each one left out (the notebook keeps them all).
    let many = &seen["many"];
    assert_eq!(many["error"], false, "{many}");
    let images = many["images"].as_u64().unwrap();
    assert!((1..30).contains(&images), "{many}");
    assert!(many["bytes"].as_u64().unwrap() <= 1_048_576, "{many}");
    let left_out = many["text"].as_str().unwrap().matches("left out").count();
    assert!(left_out >= 1, "{many}");
    eprintln!(
        "30 figures through the Python SDK: {images} images and {left_out} notes in {} bytes",
        many["bytes"]
    );
    // A page of the notebook: cells 1 and 2 of 3 (1+1, the plot, the figures), briefly.
    let page = &seen["page"];
    assert_eq!(page["total_cells"], 3, "{page}");
    assert_eq!(page["next_offset"], serde_json::Value::Null, "{page}");
    assert_eq!(page["cells"][0]["index"], 1, "{page}");
    assert!(page["cells"][0]["outputs"].is_u64(), "{page}");
    // The whole notebook (~9 MB now) as a resource: refused, naming what to use instead.
    let resource = seen["resource"].as_str().unwrap();
    assert!(resource.contains("read_notebook"), "{resource}");
    scope.cleanup(&admin).await;
    drop(ctl);
}

/// The official TypeScript SDK (what Node-based agents and editors use) drives the same
/// session as rmcp: it connects with a bearer token, sees every tool, runs code and ends
/// its MCP session with a DELETE the SDK accepts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_typescript_sdk_is_a_client_too() {
    use common::gateway::{Sdk, SdkRun, sdk_runs};
    let env = Env::load();
    let (admin, scope, ctl, gw) = setup(&env, "trixie", "gw-ts").await;
    let token = user_token(&env, "alice");
    let alice = Mcp::http(&gw.url, Some(&token)).await.unwrap();
    let started = alice
        .ok("start_new_session", json!({"experiment_name": "ts sdk"}))
        .await;
    let sid = started["session_id"].as_str().unwrap().to_owned();
    for sdk in [Sdk::TypeScript, Sdk::Python] {
        let run = SdkRun {
            url: &gw.url,
            token: &token,
            sid: &sid,
            code: "6*7",
            n: 3,
            warmup: 1,
        };
        let seen = sdk_runs(&env, sdk, run).await;
        assert_eq!(seen["server"], "slurmlab-gateway", "{sdk:?}: {seen}");
        assert_eq!(seen["tools"], 28, "{sdk:?}: {seen}");
        assert_eq!(seen["text"], "42\n", "{sdk:?}: {seen}");
        assert_eq!(seen["ms"].as_array().map(Vec::len), Some(3), "{seen}");
    }
    // Both clients' cells are in the session's one notebook, in order.
    let nb = alice.ok("read_notebook", json!({"session_id": sid})).await;
    assert_eq!(nb["total_cells"], 8, "{nb}");
    scope.cleanup(&admin).await;
    drop(ctl);
}

/// A token-guessing loop: distinct bad tokens as fast as the client can send them. Each
/// one is refused, the gateway stops asking the API server after a burst (429 with
/// Retry-After instead of a TokenReview per guess), and a real token works again once
/// the window has passed. A token for another audience is refused too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_guessing_loop_is_refused_without_flooding_token_review() {
    let env = Env::load();
    let admin = env.client(User::Admin).await;
    common::install_crds(&admin).await;
    let scope = Scope::create(&admin, &env.slurm_cluster("trixie"), "gw-guess").await;
    let gw = GatewayProcess::start(&env, &scope, &[]).await;
    let http = reqwest::Client::new();
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
    let started = std::time::Instant::now();
    let (mut reviewed, mut paused) = (0u32, 0u32);
    for i in 0..100 {
        let resp = http
            .post(&gw.url)
            .header("accept", "application/json, text/event-stream")
            .header(
                "authorization",
                format!("Bearer guess-{i}-{}", common::random_suffix()),
            )
            .json(&init)
            .send()
            .await
            .unwrap();
        match resp.status().as_u16() {
            401 => reviewed += 1,
            429 => {
                assert!(resp.headers().contains_key("retry-after"));
                paused += 1;
            }
            other => panic!("guess {i}: status {other}"),
        }
    }
    let windows = started.elapsed().as_secs() / 10 + 1;
    assert!(paused > 0, "no guess was refused unreviewed");
    assert!(
        u64::from(reviewed) <= 20 * windows,
        "{reviewed} TokenReviews for 100 guesses in {windows} window(s)"
    );
    // The budget is the guessing client's: alice, from another address, gets in at once.
    let elsewhere = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    let initialize = |client: &reqwest::Client, url: &str, token: &str| {
        client
            .post(url)
            .header("accept", "application/json, text/event-stream")
            .header("authorization", format!("Bearer {token}"))
            .json(&init)
            .send()
    };
    let alice_token = user_token(&env, "alice");
    let resp = initialize(&elsewhere, &gw.url, &alice_token).await.unwrap();
    assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
    // By default a token must be meant for the gateway (audience slurmlab): a service
    // account's token for the API server is refused, one for the gateway gets in.
    use common::gateway::{API_AUDIENCE, service_account_token};
    for (audience, status) in [(API_AUDIENCE, 401), ("slurmlab", 200)] {
        let token = service_account_token(&admin, &scope.ns, "agent", audience).await;
        let resp = initialize(&elsewhere, &gw.url, &token).await.unwrap();
        assert_eq!(resp.status(), status, "audience {audience}");
    }
    // Once the window has passed a new real token gets in from the guesser's address too.
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert!(
        Mcp::http(&gw.url, Some(&user_token(&env, "bob")))
            .await
            .is_ok()
    );
    drop(gw);

    // A gateway configured for another audience refuses tokens for this one.
    let strict = GatewayProcess::start(&env, &scope, &["--token-audience", "not-this-one"]).await;
    let resp = initialize(&http, &strict.url, &alice_token).await.unwrap();
    assert_eq!(resp.status(), 401);
    scope.cleanup(&admin).await;
}

/// A gateway stopped with SIGTERM while a run goes (a rollout, a node drain): it refuses
/// new runs, waits for the running cell to end and writes it into the notebook, and only
/// then exits. A run longer than the drain is written as it stood, with a note. After the
/// restart an old execution id says it came from the earlier process (so the agent looks
/// at the notebook instead of running the code again), unlike an id that never existed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_runs_into_the_notebook_and_old_ids_say_what_happened() {
    let env = Env::load();
    let admin = env.client(User::Admin).await;
    common::install_crds(&admin).await;
    let scope = Scope::create(&admin, &env.slurm_cluster("trixie"), "gw-drain").await;
    grant_sessions(&admin, &scope.ns, "alice").await;
    let ctl = ControllerProcess::start(&env, &scope, &[]);
    let args = ["--drain-seconds", "8"];
    let token = user_token(&env, "alice");
    let mut gw = GatewayProcess::start(&env, &scope, &args).await;
    let alice = Mcp::http(&gw.url, Some(&token)).await.unwrap();
    let started = alice
        .ok("start_new_session", json!({"experiment_name": "drain"}))
        .await;
    let sid = started["session_id"].as_str().unwrap().to_owned();
    let cells_on_server = || {
        let (admin, ns, sid) = (&admin, &scope.ns, &sid);
        async move {
            let nb = notebook_on_server(admin, ns, session_name(sid)).await;
            nb["cells"].as_array().cloned().unwrap_or_default()
        }
    };

    // A 5 s run, then SIGTERM one second in.
    let code = "import time\nfor i in range(5):\n    print(i, flush=True)\n    time.sleep(1)\nfinished = True";
    let pending = alice
        .ok(
            "execute_code",
            json!({"session_id": sid, "code": code, "sync_timeout": 1}),
        )
        .await;
    let old_id = pending["execution_id"].as_str().unwrap().to_owned();
    let term = std::time::Instant::now();
    gw.terminate();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let refused = alice
        .call("execute_code", json!({"session_id": sid, "code": "1"}))
        .await;
    assert_eq!(refused.is_error, Some(true), "{}", text(&refused));
    assert!(
        text(&refused).contains("shutting down"),
        "{}",
        text(&refused)
    );
    let exit = gw
        .wait_exit(Duration::from_secs(30))
        .expect("the gateway exits");
    let stopped_after = term.elapsed();
    assert!(exit.success(), "{exit:?}\n{}", gw.log_tail());
    assert!(
        stopped_after >= Duration::from_secs(3),
        "exited {stopped_after:?} after SIGTERM, before the run ended"
    );
    let cells = cells_on_server().await;
    let cell = cells
        .iter()
        .find(|c| c["metadata"]["slurmlab"]["execution_id"] == old_id.as_str())
        .unwrap_or_else(|| panic!("the drained run is not in the notebook: {cells:#?}"));
    assert_eq!(cell["metadata"]["slurmlab"]["status"], "completed");
    assert_eq!(cell["outputs"][0]["text"], "0\n1\n2\n3\n4\n", "{cell}");
    drop(alice);

    // The restarted gateway: the old id is told apart from one that never existed.
    let mut gw = GatewayProcess::start(&env, &scope, &args).await;
    let alice = Mcp::http(&gw.url, Some(&token)).await.unwrap();
    let old = alice
        .call("get_execution_result", json!({"execution_id": old_id}))
        .await;
    assert_eq!(old.is_error, Some(true));
    assert!(
        text(&old).contains("earlier gateway process") && text(&old).contains("read_notebook"),
        "{}",
        text(&old)
    );
    let never = alice
        .call("get_execution_result", json!({"execution_id": "ex-never"}))
        .await;
    assert!(text(&never).contains("not found"), "{}", text(&never));
    let vars = alice.ok("get_workspace", json!({"session_id": sid})).await;
    assert!(vars.to_string().contains("finished"), "{vars}");

    // A run longer than the drain is handed over: written down as it stood, and the next
    // gateway process goes on with it under its id (nothing recorded in between).
    let long =
        "import time\nfor i in range(20):\n    print('tick', i, flush=True)\n    time.sleep(1)";
    let sent = std::time::Instant::now();
    let pending = alice
        .ok(
            "execute_code",
            json!({"session_id": sid, "code": long, "sync_timeout": 3}),
        )
        .await;
    let long_id = pending["execution_id"].as_str().unwrap().to_owned();
    // SIGTERM half a second after a line, so the drain (8 s) ends between two lines too.
    tokio::time::sleep(Duration::from_millis(3500).saturating_sub(sent.elapsed())).await;
    let term = std::time::Instant::now();
    gw.terminate();
    let exit = gw
        .wait_exit(Duration::from_secs(25))
        .expect("the gateway exits");
    assert!(exit.success(), "{exit:?}\n{}", gw.log_tail());
    assert!(
        term.elapsed() < Duration::from_secs(20),
        "the drain is bounded: {:?}",
        term.elapsed()
    );
    let cells = cells_on_server().await;
    assert!(
        !cells
            .iter()
            .any(|c| c["metadata"]["slurmlab"]["execution_id"] == long_id.as_str()),
        "a handed-over run was recorded early: {cells:#?}"
    );
    drop(alice);
    let gw = GatewayProcess::start(&env, &scope, &args).await;
    let alice = Mcp::http(&gw.url, Some(&token)).await.unwrap();
    let done = common::wait_until_ok(Duration::from_secs(60), || async {
        let s = alice
            .ok("get_execution_status", json!({"execution_id": long_id}))
            .await;
        (s["status"] == "completed").then_some(s)
    })
    .await
    .unwrap_or_else(|| panic!("the handed-over run did not complete:\n{}", gw.log_tail()));
    assert_eq!(done["execution_id"], long_id.as_str());
    let all: String = (0..20).map(|i| format!("tick {i}\n")).collect();
    let cells = cells_of_run(&admin, &scope.ns, &sid, &long_id).await;
    assert_eq!(cells.len(), 1, "{cells:#?}");
    assert_eq!(cells[0]["metadata"]["slurmlab"]["status"], "completed");
    assert_eq!(
        cells[0]["outputs"][0]["text"],
        all.as_str(),
        "{}",
        gw.log_tail()
    );
    drop(alice);
    scope.cleanup(&admin).await;
    drop(ctl);
}

/// A cell that prints 51 MB as fast as it can: the gateway keeps a head and a tail in
/// memory (its peak RSS barely moves), the agent gets the head with a pointer, the notebook
/// cell keeps the head and the tail with the same pointer, and the whole output is in the
/// file the pointer names, byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_output_stays_out_of_memory_and_is_spilled_whole() {
    let env = Env::load();
    let (admin, scope, ctl, gw) = setup(&env, "trixie", "gw-flood").await;
    let alice = Mcp::http(&gw.url, Some(&user_token(&env, "alice")))
        .await
        .unwrap();
    let started = alice
        .ok("start_new_session", json!({"experiment_name": "flood"}))
        .await;
    let sid = started["session_id"].as_str().unwrap().to_owned();
    alice
        .ok("execute_code", json!({"session_id": sid, "code": "1"}))
        .await;
    let before = gw.peak_rss();
    // 400,000 lines of 128 bytes.
    let lines: usize = std::env::var("FLOOD_LINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400_000);
    let code = format!("for i in range({lines}):\n    print(f'line {{i:07d}} ' + 'x' * 114)");
    let r = alice
        .call(
            "execute_code",
            json!({"session_id": sid, "code": code, "sync_timeout": 600}),
        )
        .await;
    let after = gw.peak_rss();
    let shown = text(&r);
    assert_ne!(r.is_error, Some(true), "{shown}");
    let path = format!(
        "{}_outputs/",
        started["notebook_path"]
            .as_str()
            .unwrap()
            .trim_end_matches(".ipynb")
    );
    // The agent gets the head (its text limit) and where the whole is.
    assert!(
        shown.starts_with("line 0000000"),
        "{}",
        &shown[..200.min(shown.len())]
    );
    assert!(shown.contains(&path), "no pointer to {path}");
    let grown = after.saturating_sub(before);
    eprintln!(
        "{} MB of output: gateway peak RSS {} MB -> {} MB; the agent got {} KB",
        lines * 128 / 1_000_000,
        before / 1_000_000,
        after / 1_000_000,
        shown.len() / 1000
    );
    // Kept whole (two copies, the upload, the notebook) it would be over 150 MB; what is
    // left is buffers and the allocator, the same at 154 MB of output (measured).
    assert!(grown < 80_000_000, "peak RSS grew by {grown} bytes");

    // The cell is written into the notebook right after the run ends.
    let cell = common::wait_until_ok(Duration::from_secs(60), || async {
        let nb = notebook_on_server(&admin, &scope.ns, session_name(&sid)).await;
        let last = nb["cells"].as_array()?.last()?.clone();
        last["source"]
            .to_string()
            .contains(&format!("range({lines})"))
            .then_some(last)
    })
    .await
    .expect("the flood cell in the notebook");
    let kept = cell["outputs"].to_string();
    assert!(
        kept.len() < 1_100_000,
        "the cell holds {} bytes",
        kept.len()
    );
    assert!(
        kept.contains("bytes left out here")
            && kept.contains(&path)
            && kept.contains(&format!("line {:07}", lines - 1)),
        "{}",
        &kept[..300.min(kept.len())]
    );
    let file = kept
        .split("the whole text output is in ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .unwrap()
        .to_owned();
    let s = Api::<JupyterSession>::namespaced(admin.clone(), &scope.ns)
        .get(session_name(&sid))
        .await
        .unwrap();
    let alloc = Api::<ComputeAllocation>::namespaced(admin.clone(), &scope.ns)
        .get(s.status.unwrap().allocation.as_deref().unwrap())
        .await
        .unwrap();
    let server = allocation_server(&admin, &alloc).await;
    let whole = server.get(&file, true).await.unwrap();
    let whole = whole.content.as_str().unwrap();
    assert_eq!(
        whole.len(),
        lines * 128,
        "the spill file is the whole output"
    );
    assert!(
        whole.starts_with("line 0000000 x")
            && whole.ends_with(&format!("line {:07} {}\n", lines - 1, "x".repeat(114)))
    );
    alice
        .ok("shutdown_session", json!({"session_id": sid}))
        .await;
    scope.cleanup(&admin).await;
    drop(ctl);
}

/// A session whose SLURM job is close to its time limit says so in every result, so an
/// agent saves its work before the kernel ends with the job; one with time left does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_warn_when_the_jobs_walltime_is_close() {
    let env = Env::load();
    let (admin, scope, ctl, gw) = setup(&env, "trixie", "gw-walltime").await;
    let alice = Mcp::http(&gw.url, Some(&user_token(&env, "alice")))
        .await
        .unwrap();
    let short = alice
        .ok(
            "start_new_session",
            json!({"experiment_name": "short", "resources": {"timeLimit": "10m"}}),
        )
        .await;
    let sid = short["session_id"].as_str().unwrap().to_owned();
    let r = alice
        .call("execute_code", json!({"session_id": sid, "code": "6*7"}))
        .await;
    let said = text(&r);
    assert!(said.starts_with("42\n"), "{said}");
    assert!(
        said.contains("[walltime: the SLURM job ends in 10 min") || said.contains("ends in 9 min"),
        "{said}"
    );
    // The scope's default time limit is 30 minutes: no warning.
    let long = alice
        .ok(
            "start_new_session",
            json!({"experiment_name": "long", "resources": {"timeLimit": "30m"}}),
        )
        .await;
    let lid = long["session_id"].as_str().unwrap().to_owned();
    let r = alice
        .call("execute_code", json!({"session_id": lid, "code": "6*7"}))
        .await;
    assert_eq!(text(&r), "42\n");
    scope.cleanup(&admin).await;
    drop(ctl);
}

/// Polls a task until it is terminal (a protocol error fails the test).
async fn task_until_done(mcp: &Mcp, id: &str, within: Duration) -> (GetTaskResult, Vec<String>) {
    let deadline = std::time::Instant::now() + within;
    let mut messages = vec![];
    loop {
        let t = mcp
            .service
            .peer()
            .get_task(GetTaskParams::new(id))
            .await
            .unwrap_or_else(|e| panic!("tasks/get {id}: {e}"));
        if let Some(m) = &t.task.task.status_message {
            messages.push(m.clone());
        }
        if t.task.status().is_terminal() {
            return (t, messages);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "task {id} still {:?} after {within:?}: {messages:?}",
            t.task.status()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Calls a tool once; the answer must be a task (its seed is returned).
async fn as_task(mcp: &Mcp, tool: &str, args: Value) -> Task {
    match mcp.once(tool, args).await {
        CallToolResponse::Task(t) => t.task,
        other => panic!("{tool} answered without a task: {other:?}"),
    }
}

fn completed(t: &GetTaskResult) -> CallToolResult {
    match &t.task.payload {
        TaskPayload::Completed { result } => {
            serde_json::from_value(Value::Object(result.clone())).expect("a tool result")
        }
        other => panic!("not completed: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_runs_and_session_starts_are_mcp_tasks_for_clients_that_take_them() {
    let env = Env::load();
    let (admin, scope, ctl, gw) = setup(&env, "trixie", "gw-tasks").await;
    let token = user_token(&env, "alice");
    let alice = Mcp::http_with_tasks(&gw.url, Some(&token)).await.unwrap();
    let info = alice
        .service
        .peer_info()
        .expect("the server's initialize answer");
    assert!(
        info.capabilities.supports_tasks(),
        "{:?}",
        info.capabilities
    );

    // A start is a task at once: it reports where it stands, then its result.
    let start = as_task(
        &alice,
        "start_new_session",
        json!({"experiment_name": "tasks"}),
    )
    .await;
    assert_eq!(start.status, TaskStatus::Working);
    let (done, messages) = task_until_done(&alice, &start.task_id, Duration::from_secs(240)).await;
    let started = completed(&done);
    assert_ne!(started.is_error, Some(true), "{}", text(&started));
    assert!(!messages.is_empty(), "a start task reports progress");
    let sid = started.structured_content.as_ref().unwrap()["session_id"]
        .as_str()
        .unwrap()
        .to_owned();

    // A quick run is answered at once, even to a client that takes tasks.
    let quick = alice
        .complete("execute_code", json!({"session_id": sid, "code": "1+1"}))
        .await;
    assert_eq!(text(&quick).trim(), "2");

    // A run longer than its sync wait is a task whose id is the execution id.
    let code =
        "import time\nfor i in range(6):\n    print('step', i, flush=True)\n    time.sleep(1)";
    let run = as_task(
        &alice,
        "execute_code",
        json!({"session_id": sid, "code": code, "sync_timeout": 1}),
    )
    .await;
    assert!(run.task_id.starts_with("ex-"), "{run:?}");
    let (done, messages) = task_until_done(&alice, &run.task_id, Duration::from_secs(60)).await;
    assert_eq!(done.task.status(), TaskStatus::Completed);
    assert!(
        messages.iter().any(|m| m.contains("last output: step")),
        "{messages:?}"
    );
    let result = completed(&done);
    assert_eq!(
        text(&result).trim(),
        "step 0\nstep 1\nstep 2\nstep 3\nstep 4\nstep 5"
    );
    // The same run through the execution-id tools.
    let same = alice
        .call("get_execution_result", json!({"execution_id": run.task_id}))
        .await;
    assert_eq!(text(&same), text(&result));

    // A cell that raises is a completed task whose result is an error.
    let raise = as_task(
        &alice,
        "execute_code",
        json!({"session_id": sid, "code": "import time\ntime.sleep(3)\n1/0", "sync_timeout": 1}),
    )
    .await;
    let (done, _) = task_until_done(&alice, &raise.task_id, Duration::from_secs(60)).await;
    let raised = completed(&done);
    assert_eq!(raised.is_error, Some(true));
    assert!(
        text(&raised).contains("ZeroDivisionError"),
        "{}",
        text(&raised)
    );

    // Someone else cannot read or cancel alice's tasks: they read as unknown.
    let sleep = as_task(
        &alice,
        "execute_code",
        json!({"session_id": sid, "code": "import time\ntime.sleep(120)", "sync_timeout": 1}),
    )
    .await;
    let bob = Mcp::http_with_tasks(&gw.url, Some(&user_token(&env, "bob")))
        .await
        .unwrap();
    for id in [&sleep.task_id, &start.task_id] {
        let denied = bob
            .service
            .peer()
            .get_task(GetTaskParams::new(id.as_str()))
            .await;
        assert!(
            matches!(&denied, Err(e) if e.to_string().contains("unknown task")),
            "{denied:?}"
        );
        let denied = bob
            .service
            .peer()
            .cancel_task(CancelTaskParams::new(id.as_str()))
            .await;
        assert!(denied.is_err(), "bob cancelled alice's task {id}");
    }

    // tasks/cancel interrupts the kernel; the session stays usable.
    let cancelled_at = std::time::Instant::now();
    alice
        .service
        .peer()
        .cancel_task(CancelTaskParams::new(sleep.task_id.as_str()))
        .await
        .unwrap();
    let (done, _) = task_until_done(&alice, &sleep.task_id, Duration::from_secs(30)).await;
    assert_eq!(done.task.status(), TaskStatus::Cancelled);
    assert!(cancelled_at.elapsed() < Duration::from_secs(30));
    let after = alice
        .complete("execute_code", json!({"session_id": sid, "code": "40+2"}))
        .await;
    assert_eq!(text(&after).trim(), "42");

    // A start cancelled while it waits ends cancelled; what it created stays.
    let second = as_task(
        &alice,
        "start_new_session",
        json!({"experiment_name": "cancel me"}),
    )
    .await;
    alice
        .service
        .peer()
        .cancel_task(CancelTaskParams::new(second.task_id.as_str()))
        .await
        .unwrap();
    let (done, _) = task_until_done(&alice, &second.task_id, Duration::from_secs(30)).await;
    assert_eq!(done.task.status(), TaskStatus::Cancelled);

    // The official Python SDK's client extension interface takes the same tasks.
    let seen = common::gateway::python_sdk_script(
        &env,
        "tests/python/mcp_tasks.py",
        &gw.url,
        &token,
        || gw.log_tail(),
    )
    .await;
    assert_eq!(seen["protocol"], "2026-07-28", "{seen}");
    let tools: Vec<&str> = seen["created"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["tool"].as_str().unwrap())
        .collect();
    assert_eq!(tools, ["start_new_session", "execute_code"], "{seen}");
    assert_eq!(
        seen["long"].as_str().unwrap().trim(),
        "tick 0\ntick 1\ntick 2\ntick 3\ntick 4",
        "{seen}"
    );
    assert_eq!(seen["quick"].as_str().unwrap().trim(), "2", "{seen}");
    assert!(
        seen["polled"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["status"] == "working" && p["task_id"].as_str().unwrap().starts_with("ex-")),
        "{seen}"
    );

    // A client without the extension keeps the execution-id flow.
    let plain = Mcp::http(&gw.url, Some(&token)).await.unwrap();
    let pending = plain
        .ok(
            "execute_code",
            json!({"session_id": sid, "code": "import time\ntime.sleep(3)", "sync_timeout": 1}),
        )
        .await;
    assert_eq!(pending["status"], "pending", "{pending}");
    assert!(pending["execution_id"].as_str().unwrap().starts_with("ex-"));

    drop((alice, bob, plain));
    scope.cleanup(&admin).await;
    drop((ctl, gw));
}

/// The cells of `sid`'s notebook recorded for execution `id`, as the Jupyter server has
/// them once there is one (a finished run's cell is written moments after it reads as
/// finished; reads through the gateway see it at once); empty after 10 s without.
async fn cells_of_run(admin: &kube::Client, ns: &str, sid: &str, id: &str) -> Vec<Value> {
    let found = common::wait_until_ok(Duration::from_secs(10), || async {
        let nb = notebook_on_server(admin, ns, session_name(sid)).await;
        let cells: Vec<Value> = nb["cells"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c["metadata"]["slurmlab"]["execution_id"] == id)
            .collect();
        (!cells.is_empty()).then_some(cells)
    })
    .await;
    found.unwrap_or_default()
}

/// The records of runs a gateway keeps in its state namespace.
async fn run_records(admin: &kube::Client, ns: &str) -> Vec<String> {
    Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(admin.clone(), ns)
        .get_opt(slurmlab::gateway::journal::REGISTRY)
        .await
        .unwrap()
        .and_then(|cm| cm.data)
        .map(|d| d.into_keys().collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_killed_mid_run_goes_on_with_it_after_a_restart() {
    let env = Env::load();
    let (admin, scope, ctl, mut gw) = setup(&env, "trixie", "gw-kill").await;
    let token = user_token(&env, "alice");
    let alice = Mcp::http_with_tasks(&gw.url, Some(&token)).await.unwrap();
    let started = as_task(
        &alice,
        "start_new_session",
        json!({"experiment_name": "kill"}),
    )
    .await;
    let (done, _) = task_until_done(&alice, &started.task_id, Duration::from_secs(240)).await;
    let sid = completed(&done).structured_content.unwrap()["session_id"]
        .as_str()
        .unwrap()
        .to_owned();

    // A 20 s cell printing every second; SIGKILL half a second after its sixth line,
    // once it is written down (runs going for 2 s are).
    let code = "import time\nfor i in range(20):\n    print('tick', i, flush=True)\n    time.sleep(1)\nfinished = True";
    let sent = std::time::Instant::now();
    let run = as_task(
        &alice,
        "execute_code",
        json!({"session_id": sid, "code": code, "sync_timeout": 1}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(5500).saturating_sub(sent.elapsed())).await;
    assert_eq!(
        run_records(&admin, &scope.ns).await,
        vec![run.task_id.clone()]
    );
    drop(alice);
    gw.kill();
    // The kernel goes on printing with no gateway listening.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let gw = GatewayProcess::start(&env, &scope, &["--sync-timeout-seconds", "20"]).await;
    let alice = Mcp::http_with_tasks(&gw.url, Some(&token)).await.unwrap();
    let (done, _) = task_until_done(&alice, &run.task_id, Duration::from_secs(60)).await;
    assert_eq!(
        done.task.status(),
        TaskStatus::Completed,
        "{}",
        gw.log_tail()
    );
    let all: String = (0..20).map(|i| format!("tick {i}\n")).collect();
    let result = completed(&done);
    assert_eq!(text(&result).trim(), all.trim(), "{}", gw.log_tail());
    let same = alice
        .call("get_execution_result", json!({"execution_id": run.task_id}))
        .await;
    assert_eq!(text(&same), text(&result));
    // One cell, with every line, and nothing left behind.
    let cells = cells_of_run(&admin, &scope.ns, &sid, &run.task_id).await;
    assert_eq!(cells.len(), 1, "{cells:#?}");
    assert_eq!(cells[0]["metadata"]["slurmlab"]["status"], "completed");
    assert_eq!(cells[0]["outputs"][0]["text"], all.as_str());
    assert!(run_records(&admin, &scope.ns).await.is_empty());
    let files = alice
        .ok(
            "list_files",
            json!({"session_id": sid, "path": "kill_outputs"}),
        )
        .await
        .to_string();
    assert!(!files.contains(".run.json"), "{files}");
    // The session goes on as before.
    let next = alice
        .complete(
            "execute_code",
            json!({"session_id": sid, "code": "finished"}),
        )
        .await;
    assert_eq!(text(&next).trim(), "True");
    drop(alice);
    scope.cleanup(&admin).await;
    drop((ctl, gw));
}
