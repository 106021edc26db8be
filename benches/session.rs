//! `make bench` (session part), against the real local environment, each next to its
//! floor measured in the same run on the same Jupyter server:
//!
//! 1. A JupyterSession on a Ready allocation, from creation until Ready, vs a direct
//!    `POST /api/kernels` plus the first `1+1` reply over the kernel websocket.
//! 2. A Resume of a 50-cell notebook, from creation until Ready, vs starting a kernel and
//!    executing the same 50 cells directly.

#[path = "../tests/common/mod.rs"]
mod common;

use common::bench::{median, ms};

use std::time::{Duration, Instant};

use common::controller::{ControllerProcess, Scope};
use common::{Env, User};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;
use slurmlab::api::{AllocationPhase, ComputeAllocation, JupyterSession, SessionPhase};
use slurmlab::jupyter::{KernelChannel, notebook};

const RUNS: usize = 5;
const CELLS: usize = 50;

#[tokio::main]
async fn main() {
    let env = Env::load();
    let client = env.client(User::Admin).await;
    common::install_crds(&client).await;
    let slurm = env.slurm_cluster("trixie");
    let scope = Scope::create(&client, &slurm, "bench-session").await;
    let _ctl = ControllerProcess::start(&env, &scope, &[]);
    scope
        .allocation(&client, "box", json!({"cpus": 2, "maxSessions": 64}))
        .await;
    let allocs = scope.allocations(&client);
    let alloc: ComputeAllocation = common::poll_every(
        Duration::from_millis(100),
        Duration::from_secs(120),
        || async {
            allocs.get("box").await.ok().filter(|a| {
                a.status
                    .as_ref()
                    .is_some_and(|s| s.phase == AllocationPhase::Ready)
            })
        },
    )
    .await
    .expect("the allocation becomes Ready");
    let server = common::controller::allocation_server(&client, &alloc).await;
    let sessions: Api<JupyterSession> = Api::namespaced(client.clone(), &scope.ns);
    println!(
        "session bench: Slurm {}, one allocation's Jupyter server",
        slurm.slurm_version
    );

    // 1. Session start vs kernel start + first reply.
    let (mut floor, mut ours) = (vec![], vec![]);
    for run in 0..RUNS {
        floor.push(common::bench::kernel_start_floor(&server).await);
        let name = format!("s{run}");
        ours.push(time_session(&sessions, &scope.ns, &name, json!({"allocationRef": "box"})).await);
        sessions
            .delete(&name, &DeleteParams::default())
            .await
            .unwrap();
    }
    let (f, o) = (median(&mut floor), median(&mut ours));
    println!("\nsession start, median of {RUNS}:");
    println!(
        "  POST /api/kernels + first 1+1 reply (floor)  {:>7.0} ms",
        ms(f)
    );
    println!(
        "  JupyterSession created -> Ready              {:>7.0} ms",
        ms(o)
    );
    println!(
        "  ratio                                        {:>7.2}x",
        o.as_secs_f64() / f.as_secs_f64()
    );

    // 2. Resume of 50 small cells vs executing them directly.
    let mut nb = notebook::new_notebook("python3", "Python 3", "python");
    let codes: Vec<String> = (0..CELLS).map(|i| format!("v{i} = {i} * 2")).collect();
    for code in &codes {
        notebook::append_code(&mut nb, code, &[], None, serde_json::Value::Null).unwrap();
    }
    server
        .put_notebook("bench/fifty.ipynb", &notebook::to_json(&nb).unwrap())
        .await
        .unwrap();
    let (mut floor, mut ours) = (vec![], vec![]);
    for run in 0..RUNS {
        let t = Instant::now();
        let kernel = server.start_kernel("python3", None).await.unwrap();
        let mut channel = KernelChannel::connect(&server, &kernel.id, None)
            .await
            .unwrap();
        for code in &codes {
            channel
                .execute(code, Duration::from_secs(60))
                .await
                .unwrap();
        }
        floor.push(t.elapsed());
        server.shutdown(&kernel.id).await.unwrap();
        let name = format!("r{run}");
        let spec = json!({"allocationRef": "box", "notebook": {"mode": "Resume", "source": "bench/fifty.ipynb"}});
        ours.push(time_session(&sessions, &scope.ns, &name, spec).await);
        sessions
            .delete(&name, &DeleteParams::default())
            .await
            .unwrap();
    }
    let (f, o) = (median(&mut floor), median(&mut ours));
    println!("\nResume of a {CELLS}-cell notebook, median of {RUNS}:");
    println!(
        "  kernel start + {CELLS} cells executed directly (floor) {:>7.0} ms",
        ms(f)
    );
    println!(
        "  JupyterSession Resume created -> Ready         {:>7.0} ms",
        ms(o)
    );
    println!(
        "  ratio                                          {:>7.2}x",
        o.as_secs_f64() / f.as_secs_f64()
    );
    scope.cleanup(&client).await;
}

/// Creates a session and measures until it is Ready (observed every 20 ms).
async fn time_session(
    api: &Api<JupyterSession>,
    ns: &str,
    name: &str,
    spec: serde_json::Value,
) -> Duration {
    let obj: JupyterSession = serde_json::from_value(json!({
        "apiVersion": "slurmlab.io/v1alpha1", "kind": "JupyterSession",
        "metadata": {"name": name, "namespace": ns}, "spec": spec
    }))
    .unwrap();
    let t = Instant::now();
    api.create(&PostParams::default(), &obj).await.unwrap();
    common::poll_every(
        Duration::from_millis(20),
        Duration::from_secs(120),
        || async {
            api.get(name).await.ok().filter(|s| {
                s.status
                    .as_ref()
                    .is_some_and(|st| st.phase == SessionPhase::Ready)
            })
        },
    )
    .await
    .expect("the session becomes Ready");
    t.elapsed()
}
