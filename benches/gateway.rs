//! `make bench` (gateway part), against the real local environment. In one run, on the
//! same kernel of the same Jupyter server, each figure next to its floor:
//!
//! 1. `execute_code("1+1")` through the gateway, over Streamable HTTP and over stdio, vs
//!    an `execute_request` sent directly on the kernel's websocket (stdio drives a second
//!    session's kernel on the same server: each notebook has one writing gateway).
//! 2. The same for a matplotlib figure (a PNG comes back).
//! 3. `execute_code("1+1")` through each MCP client library (rmcp, the official Python
//!    and TypeScript SDKs) over Streamable HTTP, each against a floor block just before.
//! 4. `start_new_session` on a warm (Ready) allocation vs starting a kernel directly and
//!    getting its first reply.
//! 5. `execute_code("1+1")` at notebook cell ~10 vs cell ~1,000 vs a 10 MB notebook, how
//!    far the record on the server lags behind, and the gateway's peak RSS over it.
//!
//! Calls alternate between the paths so each sees the same machine load (including the
//! Jupyter server saving the notebooks the gateway records); the floor is also measured
//! alone first, to show what that recording costs the server. The goal is a
//! gateway overhead within 2 ms or 10% of the floor, whichever is larger; the figures are
//! printed, not asserted.

#[path = "../tests/common/mod.rs"]
mod common;

use common::bench::{median, ms, p90};

use std::time::{Duration, Instant};

use common::controller::{ControllerProcess, Scope, allocation_server};
use common::gateway::{
    GatewayProcess, Mcp, Sdk, SdkRun, grant_sessions, grant_token_secrets, sdk_runs, text,
    user_token,
};
use common::{Env, User};
use kube::api::Api;
use serde_json::json;
use slurmlab::api::{ComputeAllocation, JupyterSession};
use slurmlab::jupyter::KernelChannel;

const CALLS: usize = 200;
const FIGURES: usize = 30;
const STARTS: usize = 5;
const SDK_CALLS: usize = 100;
const SIZE_CALLS: usize = 30;
const FIGURE: &str = "import matplotlib\nmatplotlib.use('agg')\nimport matplotlib.pyplot as plt\n%matplotlib inline\nplt.plot([1, 2, 3], [1, 4, 9])\nplt.show()";

#[tokio::main]
async fn main() {
    let env = Env::load();
    let admin = env.client(User::Admin).await;
    common::install_crds(&admin).await;
    let slurm = env.slurm_cluster("trixie");
    let scope = Scope::create(&admin, &slurm, "bench-gateway").await;
    grant_sessions(&admin, &scope.ns, "alice").await;
    grant_token_secrets(&admin, &scope.ns, "alice").await;
    let _ctl = ControllerProcess::start(&env, &scope, &[]);
    let gw = GatewayProcess::start(&env, &scope, &[]).await;
    let http = Mcp::http(&gw.url, Some(&user_token(&env, "alice")))
        .await
        .unwrap();
    let stdio = Mcp::stdio(&env, &scope, User::Alice).await;

    let started = http
        .ok("start_new_session", json!({"experiment_name": "bench"}))
        .await;
    let sid = started["session_id"].as_str().unwrap().to_owned();
    // stdio gets its own session on the same server: a notebook has one writer (gateway).
    let stdio_started = http
        .ok(
            "start_new_session",
            json!({"experiment_name": "bench stdio"}),
        )
        .await;
    assert_eq!(stdio_started["allocation"], started["allocation"]);
    let stdio_sid = stdio_started["session_id"].as_str().unwrap().to_owned();
    let name = sid.split_once('/').unwrap().1.to_owned();
    let session = Api::<JupyterSession>::namespaced(admin.clone(), &scope.ns)
        .get(&name)
        .await
        .unwrap();
    let st = session.status.unwrap();
    let alloc = Api::<ComputeAllocation>::namespaced(admin.clone(), &scope.ns)
        .get(st.allocation.as_deref().unwrap())
        .await
        .unwrap();
    let server = allocation_server(&admin, &alloc).await;
    let mut direct = KernelChannel::connect(&server, st.kernel_id.as_deref().unwrap(), None)
        .await
        .unwrap();
    println!(
        "gateway bench: Slurm {}, one session's kernel",
        slurm.slurm_version
    );

    // Warm every path (connections, imports) before timing.
    for _ in 0..5 {
        direct
            .execute("1+1", Duration::from_secs(60))
            .await
            .unwrap();
        exec(&http, &sid, "1+1").await;
        exec(&stdio, &stdio_sid, "1+1").await;
    }
    exec(&http, &sid, FIGURE).await;
    exec(&stdio, &stdio_sid, FIGURE).await;

    // The floor alone, with no gateway (and so no notebook recording) running beside it.
    let mut quiet = vec![];
    for _ in 0..50 {
        let t = Instant::now();
        direct
            .execute("1+1", Duration::from_secs(60))
            .await
            .unwrap();
        quiet.push(t.elapsed());
    }
    println!(
        "\ndirect execute_request \"1+1\" alone (nothing recorded beside it), median of 50: {:.2} ms",
        ms(median(&mut quiet))
    );

    for (label, code, n) in [
        ("execute_code(\"1+1\")", "1+1", CALLS),
        ("matplotlib figure", FIGURE, FIGURES),
    ] {
        let (mut floor, mut over_http, mut over_stdio) = (vec![], vec![], vec![]);
        for _ in 0..n {
            let t = Instant::now();
            let e = direct.execute(code, Duration::from_secs(60)).await.unwrap();
            floor.push(t.elapsed());
            assert_eq!(e.status, "ok");
            let t = Instant::now();
            exec(&http, &sid, code).await;
            over_http.push(t.elapsed());
            let t = Instant::now();
            exec(&stdio, &stdio_sid, code).await;
            over_stdio.push(t.elapsed());
        }
        let f = median(&mut floor);
        println!("\n{label}, median of {n} (p90 in brackets):");
        println!(
            "  direct kernel websocket (floor): {:8.2} ms [{:.2}]",
            ms(f),
            ms(p90(&floor))
        );
        for (path, v) in [
            ("gateway, Streamable HTTP", &mut over_http),
            ("gateway, stdio", &mut over_stdio),
        ] {
            let m = median(v);
            println!(
                "  {path:<31} {:8.2} ms [{:.2}]  ratio {:.2}x  overhead {:+.2} ms",
                ms(m),
                ms(p90(v)),
                ms(m) / ms(f),
                ms(m) - ms(f)
            );
        }
        println!("  goal: overhead within {:.2} ms", (ms(f) * 0.1).max(2.0));
    }

    // Each MCP client library in a block of its own (the SDKs run as processes), after a
    // floor block measured just before it on the same kernel.
    println!(
        "\nexecute_code(\"1+1\") per MCP client library over Streamable HTTP, median of {SDK_CALLS} (p90), each against a floor block measured just before it:"
    );
    let token = user_token(&env, "alice");
    for client in ["rmcp (Rust)", "Python SDK", "TypeScript SDK"] {
        let mut floor = vec![];
        for _ in 0..SDK_CALLS {
            let t = Instant::now();
            direct
                .execute("1+1", Duration::from_secs(60))
                .await
                .unwrap();
            floor.push(t.elapsed());
        }
        let mut calls: Vec<Duration> = match client {
            "rmcp (Rust)" => {
                let mut v = vec![];
                for _ in 0..SDK_CALLS {
                    let t = Instant::now();
                    exec(&http, &sid, "1+1").await;
                    v.push(t.elapsed());
                }
                v
            }
            sdk => {
                let which = if sdk == "Python SDK" {
                    Sdk::Python
                } else {
                    Sdk::TypeScript
                };
                let run = SdkRun {
                    url: &gw.url,
                    token: &token,
                    sid: &sid,
                    code: "1+1",
                    n: SDK_CALLS,
                    warmup: 5,
                };
                let seen = sdk_runs(&env, which, run).await;
                seen["ms"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|m| Duration::from_secs_f64(m.as_f64().unwrap() / 1000.0))
                    .collect()
            }
        };
        let (f, m) = (median(&mut floor), median(&mut calls));
        println!(
            "  {client:<15} {:7.2} ms [{:.2}]  floor {:6.2} ms  ratio {:.2}x  overhead {:+.2} ms",
            ms(m),
            ms(p90(&calls)),
            ms(f),
            ms(m) / ms(f),
            ms(m) - ms(f)
        );
    }

    // Session start on the warm allocation vs kernel start + first reply.
    let (mut floor, mut ours) = (vec![], vec![]);
    for _ in 0..STARTS {
        floor.push(common::bench::kernel_start_floor(&server).await);
        let t = Instant::now();
        let s = http
            .ok(
                "start_new_session",
                json!({"experiment_name": "bench start"}),
            )
            .await;
        ours.push(t.elapsed());
        assert_eq!(s["reused_allocation"], true, "{s}");
        let id = s["session_id"].as_str().unwrap().to_owned();
        http.ok("shutdown_session", json!({"session_id": id})).await;
        let api = Api::<JupyterSession>::namespaced(admin.clone(), &scope.ns);
        let short = id.split_once('/').unwrap().1.to_owned();
        common::wait_until_ok(Duration::from_secs(60), || async {
            api.get_opt(&short).await.unwrap().is_none().then_some(())
        })
        .await
        .expect("the session is deleted");
    }
    let (f, o) = (median(&mut floor), median(&mut ours));
    println!("\nstart_new_session on a Ready allocation, median of {STARTS}:");
    println!("  kernel start + first reply (floor): {:8.1} ms", ms(f));
    println!(
        "  start_new_session (HTTP):           {:8.1} ms  ratio {:.2}x",
        ms(o),
        ms(o) / ms(f)
    );

    // What the notebook's size costs a cell: a fresh session's notebook at cell ~10, at
    // cell ~1,000, and holding 10 MB of figures; and how far the record lags behind.
    let size_sid = http
        .ok(
            "start_new_session",
            json!({"experiment_name": "bench size"}),
        )
        .await["session_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let rss_before = gw.peak_rss();
    let block = |label: &'static str| {
        let (http, sid) = (&http, size_sid.clone());
        async move {
            let mut v = vec![];
            for _ in 0..SIZE_CALLS {
                let t = Instant::now();
                exec(http, &sid, "1+1").await;
                v.push(t.elapsed());
            }
            let m = median(&mut v);
            (label, m, p90(&v))
        }
    };
    for _ in 0..10 {
        exec(&http, &size_sid, "1+1").await;
    }
    let small = block("cell ~10").await;
    for _ in 0..(1000 - 10 - SIZE_CALLS) {
        exec(&http, &size_sid, "1+1").await;
    }
    let thousand = block("cell ~1,000").await;
    let big = "import base64, os\nfor i in range(10):\n    display({'image/png': base64.b64encode(os.urandom(750_000)).decode()}, raw=True)";
    let r = http
        .call(
            "execute_code",
            json!({"session_id": size_sid, "code": big, "sync_timeout": 300}),
        )
        .await;
    assert_ne!(r.is_error, Some(true), "{}", text(&r));
    let ten_mb = block("10 MB notebook").await;
    let last = Instant::now();
    let size_name = size_sid.split_once('/').unwrap().1.to_owned();
    let size_path = Api::<JupyterSession>::namespaced(admin.clone(), &scope.ns)
        .get(&size_name)
        .await
        .unwrap()
        .status
        .unwrap()
        .notebook_path
        .unwrap();
    let cells_now = 10 + (1000 - 10 - SIZE_CALLS) + 2 * SIZE_CALLS + 1 + SIZE_CALLS;
    let (lag, bytes) = loop {
        let nb = server.get(&size_path, true).await.unwrap().content;
        if nb["cells"].as_array().map_or(0, Vec::len) >= cells_now {
            break (last.elapsed(), nb.to_string().len());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    println!("\nexecute_code(\"1+1\") by notebook size, median of {SIZE_CALLS} (p90):");
    for (label, m, p) in [&small, &thousand, &ten_mb] {
        println!(
            "  {label:<16} {:7.2} ms ({:7.2})  ratio to cell ~10 {:.2}x",
            ms(*m),
            ms(*p),
            ms(*m) / ms(small.1)
        );
    }
    println!(
        "  the record on the server has every cell {:.2} s after the last call ({cells_now} cells, {:.1} MB; the read included)",
        lag.as_secs_f64(),
        bytes as f64 / 1e6
    );
    println!(
        "  gateway peak RSS {:.0} MB before these {cells_now} calls, {:.0} MB after",
        rss_before as f64 / 1e6,
        gw.peak_rss() as f64 / 1e6
    );

    let metrics = gw.metrics().await;
    let calls = common::controller::metric_sum(
        &metrics,
        "slurmlab_gateway_tool_calls_total",
        &["execute_code"],
    );
    println!("\ngateway metrics: {calls} execute_code calls recorded");
    drop(stdio);
    drop(http);
    scope.cleanup(&admin).await;
}

async fn exec(mcp: &Mcp, sid: &str, code: &str) {
    let r = mcp
        .call("execute_code", json!({"session_id": sid, "code": code}))
        .await;
    assert_ne!(r.is_error, Some(true), "{}", text(&r));
}
