//! `make bench` (controller part), against the real local environment:
//!
//! 1. Time from a job turning RUNNING to its ComputeAllocation being Ready, next to the
//!    floor measured in the same run: a bare Jupyter server started by a plain batch job
//!    on the same node answering `/api/status` (time from RUNNING, both observed by this
//!    bench at 50 ms resolution). Ratio over several runs.
//! 2. slurmrestd requests per minute made by the controller while tracking 1, 10 and 50
//!    allocations (the goal: the same for all three).

#[path = "../tests/common/mod.rs"]
mod common;

use common::bench::{median, ms};

use std::time::{Duration, Instant};

use common::controller::{ControllerProcess, Scope, metric_sum};
use common::{Env, RawSlurm, User};
use kube::api::DeleteParams;
use serde_json::json;
use slurmlab::api::AllocationPhase;

const RUNS: usize = 5;

#[tokio::main]
async fn main() {
    let env = Env::load();
    let client = env.client(User::Admin).await;
    common::install_crds(&client).await;
    let slurm = env.slurm_cluster("sid");
    println!(
        "controller bench: Slurm {} ({}), Jupyter in batch jobs on one node",
        slurm.slurm_version, slurm.url
    );

    // 1. RUNNING -> Ready.
    let scope = Scope::create(&client, &slurm, "bench-ready").await;
    let ctl = ControllerProcess::start(&env, &scope, &[]);
    let raw = RawSlurm::new(&slurm, slurm.newest_version());
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let (mut floor, mut ours) = (Vec::new(), Vec::new());
    for run in 0..RUNS {
        floor.push(bare_server(&raw, &slurm, &http).await);
        let name = format!("r{run}");
        scope.allocation(&client, &name, json!({"cpus": 1})).await;
        let api = scope.allocations(&client);
        // When the job starts, as SLURM says, then when the allocation is Ready.
        let id = poll(Duration::from_secs(60), || async {
            api.get(&name).await.ok()?.status?.slurm?.job_id
        })
        .await as u64;
        let running = running_at(&raw, id).await;
        let ready = poll(Duration::from_secs(60), || async {
            (api.get(&name).await.ok()?.status?.phase == AllocationPhase::Ready).then(Instant::now)
        })
        .await;
        ours.push(ready.saturating_duration_since(running));
        api.delete(&name, &DeleteParams::default()).await.unwrap();
    }
    println!("\nRUNNING -> ready, {RUNS} runs each (median):");
    let (f, o) = (median(&mut floor), median(&mut ours));
    println!(
        "  bare jupyter server answers /api/status   {:>7.0} ms  (floor)",
        ms(f)
    );
    println!(
        "  ComputeAllocation phase Ready             {:>7.0} ms",
        ms(o)
    );
    println!(
        "  ratio                                     {:>7.2}x",
        o.as_secs_f64() / f.as_secs_f64()
    );
    scope.cleanup(&client).await;
    drop(ctl);

    // 2. Requests per minute by the number of tracked allocations.
    println!("\nslurmrestd requests per minute while tracking N allocations (20 s window each):");
    println!("  {:>5} {:>14} {:>12}", "N", "requests/min", "poll rounds");
    for n in [1usize, 10, 50] {
        let scope = Scope::create(&client, &slurm, &format!("bench-rate-{n}")).await;
        let ctl = ControllerProcess::start(&env, &scope, &[]);
        for i in 0..n {
            scope
                .allocation(
                    &client,
                    &format!("a{i:02}"),
                    json!({"cpus": 1, "memory": "128Mi"}),
                )
                .await;
        }
        let api = scope.allocations(&client);
        poll(Duration::from_secs(300), || async {
            let list = api.list(&Default::default()).await.ok()?;
            let with_job = list.items.iter().filter(|a| {
                a.status
                    .as_ref()
                    .and_then(|s| s.slurm.as_ref())
                    .and_then(|j| j.job_id)
                    .is_some()
            });
            (with_job.count() == n).then_some(())
        })
        .await;
        let cluster = format!("cluster=\"{}\"", scope.cluster);
        let sample = |t: &str| {
            (
                metric_sum(t, "slurmlab_slurm_requests_total", &[&cluster]),
                metric_sum(t, "slurmlab_slurm_poll_rounds_total", &[&cluster]),
            )
        };
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (r0, p0) = sample(&ctl.metrics().await);
        tokio::time::sleep(Duration::from_secs(20)).await;
        let (r1, p1) = sample(&ctl.metrics().await);
        println!("  {n:>5} {:>14.0} {:>12.0}", (r1 - r0) * 3.0, p1 - p0);
        scope.cleanup(&client).await;
    }
}

/// A plain batch job starting a bare Jupyter server: time from RUNNING to /api/status.
async fn bare_server(
    raw: &RawSlurm,
    slurm: &common::SlurmCluster,
    http: &reqwest::Client,
) -> Duration {
    const SCRIPT: &str = r#"#!/bin/bash
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
scontrol update JobId="$SLURM_JOB_ID" Comment="jupyter=127.0.0.1:$PORT"
exec "$JUPYTER_VENV/bin/jupyter-server" --no-browser --ip=127.0.0.1 --port="$PORT" --ServerApp.port_retries=0 --ServerApp.root_dir="$HOME"
"#;
    let token = format!("b{}", common::random_suffix());
    let env = [
        "PATH=/usr/bin:/bin".to_owned(),
        format!("HOME=/home/{}", slurm.user),
        format!("JUPYTER_TOKEN={token}"),
        format!("JUPYTER_VENV={}", slurm.jupyter_venv),
    ];
    let id = raw.submit("slurmlab-bench-floor", SCRIPT, &env).await;
    let running = running_at(raw, id).await;
    let endpoint = poll(Duration::from_secs(60), || async {
        raw.job(id).await["comment"]
            .as_str()?
            .strip_prefix("jupyter=")
            .map(str::to_owned)
    })
    .await;
    let answered = poll(Duration::from_secs(60), || async {
        let r = http
            .get(format!("http://{endpoint}/api/status"))
            .header("Authorization", format!("token {token}"))
            .send()
            .await
            .ok()?;
        (r.status() == 200).then(Instant::now)
    })
    .await;
    raw.cancel(id).await;
    answered.saturating_duration_since(running)
}

/// Polls at 50 ms: the resolution of every time this bench reports.
async fn poll<T, F, Fut>(timeout: Duration, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    common::poll_every(Duration::from_millis(50), timeout, f)
        .await
        .expect("timed out")
}

/// When SLURM first reports the job RUNNING (as seen at 50 ms resolution).
async fn running_at(raw: &RawSlurm, id: u64) -> Instant {
    poll(Duration::from_secs(60), || async {
        let job = raw.job(id).await;
        job["job_state"]
            .as_array()?
            .iter()
            .any(|s| s == "RUNNING")
            .then(Instant::now)
    })
    .await
}
