//! `make bench` (slurmrestd part): how gentle and how fast the SLURM client is, against
//! the real Slurm 24.11 cluster of the local environment.
//!
//! 1. Requests per minute the batched poller sends while tracking 1, 10 and 100 jobs
//!    (the goal is the same number for all three).
//! 2. Latency of submit, of one job's record, and of the batched state query for 1 and
//!    100 jobs, each as a ratio to the cheapest round trip to slurmrestd (ping) measured
//!    in the same run.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use slurmlab::slurm::SlurmApi;
use slurmlab::slurm::poller::{Poller, PollerConfig};

const WINDOW: Duration = Duration::from_secs(15);

#[tokio::main]
async fn main() {
    let env = common::Env::load();
    let cluster = env
        .slurm_clusters()
        .into_iter()
        .find(|c| c.slurm_version.starts_with("24.11"))
        .expect("the Slurm 24.11 cluster");
    let client = Arc::new(common::slurm_client(&cluster, None));
    let version = client.api_version().await.expect("slurmrestd answers");
    println!(
        "slurmrestd bench: Slurm {} at {}, REST {version}",
        cluster.slurm_version, cluster.url
    );

    // Jobs that stay queued or running for the whole bench (the node has 8 CPUs).
    let mut ids = Vec::new();
    for i in 0..100 {
        let spec = common::job_spec(
            &cluster,
            &format!("slurmlab-bench-{i}"),
            "#!/bin/bash\nsleep 600\n",
        );
        ids.push(client.submit(&cluster.user, &spec).await.expect("submit"));
    }

    println!("\npoller requests per minute (1 s interval while jobs are pending or starting):");
    println!("{:>8} {:>12} {:>10}", "jobs", "requests/min", "rounds");
    let mut per_minute = Vec::new();
    for n in [1usize, 10, 100] {
        let cfg = PollerConfig {
            interval: Duration::from_secs(1),
            active_interval: Duration::from_secs(1),
            active_window: Duration::from_secs(30),
            ..PollerConfig::default()
        };
        let poller = Poller::new(client.clone(), cfg);
        for id in &ids[..n] {
            poller.track(*id);
        }
        let before = client.requests_sent();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(poller.clone().run(async move {
            let _ = rx.await;
        }));
        tokio::time::sleep(WINDOW).await;
        let _ = tx.send(());
        task.await.expect("poller task");
        let sent = client.requests_sent() - before;
        let rate = sent as f64 * 60.0 / WINDOW.as_secs_f64();
        per_minute.push(rate);
        println!("{n:>8} {rate:>12.0} {:>10}", poller.rounds());
    }
    println!(
        "ratio 100 jobs / 1 job: {:.2} (1.00 = flat in the number of jobs)",
        per_minute[2] / per_minute[0]
    );

    println!("\nlatency (median of 20, ratio to ping in the same run):");
    let ping = median(20, || async { client.ping().await.map(|_| ()) }).await;
    let row = |name: &str, d: Duration| {
        println!(
            "{name:<28} {:>8.2} ms {:>6.1}x",
            d.as_secs_f64() * 1000.0,
            d.as_secs_f64() / ping.as_secs_f64()
        );
    };
    row("ping (baseline)", ping);
    row(
        "job record (GET /job/{id})",
        median(20, || async { client.job(ids[0]).await.map(|_| ()) }).await,
    );
    row(
        "state of 1 job",
        median(20, || async {
            client.job_states(&ids[..1]).await.map(|_| ())
        })
        .await,
    );
    row(
        "state of 100 jobs (batched)",
        median(20, || async { client.job_states(&ids).await.map(|_| ()) }).await,
    );
    let submit = median(20, || async {
        let spec = common::job_spec(&cluster, "slurmlab-bench-submit", "#!/bin/bash\ntrue\n");
        client.submit(&cluster.user, &spec).await.map(|_| ())
    })
    .await;
    row("submit", submit);

    for id in &ids {
        let _ = client.cancel(&cluster.user, *id).await;
    }
}

async fn median<F, Fut>(n: usize, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), slurmlab::slurm::SlurmError>>,
{
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        f().await.expect("request succeeds");
        times.push(t.elapsed());
    }
    times.sort();
    times[n / 2]
}
