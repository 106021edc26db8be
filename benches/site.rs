//! `make bench` (site part): what other people's jobs cost the controller. A busy site
//! holds tens of thousands of jobs that are not ours; the controller's cost must follow
//! the allocations it tracks, not that number. With ALLOCATIONS allocations tracked on
//! the sid site (some running Jupyter, the rest queued), and 0 / 5,000 / 20,000 foreign
//! jobs kept by `hack/foreign-jobs.sh` (held, waiting, and one short job per second
//! starting and ending), it measures over WINDOW: bytes and requests the controller got
//! from slurmrestd, its CPU time and RSS, and slurmrestd's RSS. The floor next to it, measured in the same run:
//! one `GET /jobs/?update_time=T` (what the poller used to fetch every round, since
//! slurmctld answers it with the whole table whenever anything changed).

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::controller::{ControllerProcess, Scope, metric_sum};
use common::{Env, RawSlurm, User};
use serde_json::json;
use slurmlab::api::AllocationPhase;

const ALLOCATIONS: usize = 30;
const READY_AT_LEAST: usize = 12;
const WINDOW: Duration = Duration::from_secs(30);
const FOREIGN: [usize; 3] = [0, 5_000, 20_000];

fn foreign_jobs(site: &str, args: &[&str]) {
    let status = Command::new(common::repo_path("hack/foreign-jobs.sh"))
        .arg(site)
        .args(args)
        .status()
        .expect("running hack/foreign-jobs.sh");
    assert!(status.success(), "foreign-jobs.sh {args:?} failed");
}

/// User + system CPU seconds and RSS (MiB) of a process.
fn cpu_and_rss(pid: u32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // After the command name: state is field 0, utime 11, stime 12 (clock ticks of 1/100 s).
    let cpu = (ticks(11) + ticks(12)) / 100.0;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    (cpu, rss_kib / 1024.0)
}

/// The slurmrestd of `site`: the process named so under the PID its start recorded.
fn slurmrestd_pid(site: &str) -> u32 {
    let state = std::env::var("SLURMLAB_STATE").unwrap_or_else(|_| "/tmp/slurmlab".into());
    let file = format!("{state}/slurm-{site}/pids/slurmrestd.pid");
    let root: u32 = std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("reading {file}: {e}"))
        .trim()
        .parse()
        .expect("a PID");
    // The recorded PID may be a wrapper (unshare, chroot): follow children to the daemon.
    let mut pid = root;
    for _ in 0..5 {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim() == "slurmrestd" {
            return pid;
        }
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        match children
            .split_whitespace()
            .next()
            .and_then(|c| c.parse().ok())
        {
            Some(child) => pid = child,
            None => break,
        }
    }
    root
}

#[tokio::main]
async fn main() {
    let env = Env::load();
    let client = env.client(User::Admin).await;
    common::install_crds(&client).await;
    let slurm = env.slurm_cluster("sid");
    println!(
        "\nsite bench: Slurm {} ({}), {} compute hosts, {ALLOCATIONS} allocations tracked",
        slurm.slurm_version,
        slurm.url,
        slurm.nodes.len()
    );
    let scope = Scope::create(&client, &slurm, "bench-site").await;
    // Every sweep through accounting: the window must see no whole-table read at all.
    let ctl = ControllerProcess::start(&env, &scope, &[("SLURMLAB_ORPHAN_FULL_SWEEP_EVERY", "0")]);
    let pid = ctl.pid().expect("controller running");
    for i in 0..ALLOCATIONS {
        scope
            .allocation(
                &client,
                &format!("a{i}"),
                json!({"cpus": 1, "timeLimit": "30m"}),
            )
            .await;
    }
    // Settled: every allocation Ready or Queued.
    let api = scope.allocations(&client);
    let settled = common::wait_until_ok(Duration::from_secs(300), || async {
        let list = api.list(&Default::default()).await.ok()?;
        let phases: Vec<_> = list
            .items
            .iter()
            .map(|a| a.status.as_ref().map(|s| s.phase).unwrap_or_default())
            .collect();
        // As many running as the two hosts hold (8 CPUs each), the rest queued.
        let ready = phases
            .iter()
            .filter(|p| **p == AllocationPhase::Ready)
            .count();
        let queued = phases
            .iter()
            .filter(|p| **p == AllocationPhase::Queued)
            .count();
        (ready >= READY_AT_LEAST && ready + queued == ALLOCATIONS).then_some(ready)
    })
    .await
    .expect("the allocations settle within 5 minutes");
    println!("{settled} Ready, {} queued", ALLOCATIONS - settled);

    let operator = RawSlurm::new(&slurm, slurm.newest_version());
    let restd = slurmrestd_pid(&slurm.name);
    println!(
        "\n{:>8} {:>12} {:>12} {:>8} {:>9} {:>8} {:>11} {:>20} {:>12} {:>8}",
        "foreign",
        "bytes/min",
        "of it: acct",
        "req/min",
        "CPU s/min",
        "RSS MiB",
        "restd MiB",
        "whole table (floor)",
        "full/h B/min",
        "ratio"
    );
    let cluster = format!("cluster=\"{}\"", scope.cluster);
    for n in FOREIGN {
        let churn = (WINDOW.as_secs() + 20).to_string();
        foreign_jobs(&slurm.name, &["stop"]);
        foreign_jobs(&slurm.name, &["start", &n.to_string(), &churn]);
        tokio::time::sleep(Duration::from_secs(5)).await;
        // Everything the controller got: the poller and the orphan sweeps, which this
        // controller runs every 10 s (30 times the production rate) through accounting.
        let sample = |text: &str| {
            let all = |m: &str| metric_sum(text, m, &[&cluster]);
            let op =
                |m: &str, o: &str| metric_sum(text, m, &[&cluster, &format!("operation=\"{o}\"")]);
            (
                all("slurmlab_slurm_response_bytes_total"),
                op("slurmlab_slurm_response_bytes_total", "accounted_jobs"),
                all("slurmlab_slurm_requests_total"),
                op("slurmlab_slurm_requests_total", "jobs_all"),
            )
        };
        let (b0, a0, r0, w0) = sample(&ctl.metrics().await);
        let (c0, _) = cpu_and_rss(pid);
        let started = Instant::now();
        tokio::time::sleep(WINDOW).await;
        let (b1, a1, r1, w1) = sample(&ctl.metrics().await);
        let (c1, rss) = cpu_and_rss(pid);
        assert_eq!(w1 - w0, 0.0, "the controller read the whole job table");
        let per_min = 60.0 / started.elapsed().as_secs_f64();
        // The floor: one whole-table answer, what the old poller got every round and
        // what a full sweep reads once an hour at the defaults. Bytes as slurmrestd sends
        // them (it indents its JSON), like the metric counts.
        let since = common::unix_now() - 5;
        let t = Instant::now();
        let table = reqwest::Client::new()
            .get(format!(
                "{}/slurm/{}/jobs/?update_time={since}",
                slurm.url, operator.version
            ))
            .header("X-SLURM-USER-NAME", &operator.user)
            .header("X-SLURM-USER-TOKEN", slurm.token())
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .expect("listing the job table");
        let table_bytes = table.bytes().await.expect("the job table").len() as f64;
        let table_secs = t.elapsed().as_secs_f64();
        let (_, restd_rss) = cpu_and_rss(restd);
        let bytes_min = (b1 - b0) * per_min;
        println!(
            "{:>8} {:>12.0} {:>12.0} {:>8.0} {:>9.2} {:>8.0} {:>11.0} {:>13.0} B {:>4.1}s {:>12.0} {:>8.4}",
            n,
            bytes_min,
            (a1 - a0) * per_min,
            (r1 - r0) * per_min,
            (c1 - c0) * per_min,
            rss,
            restd_rss,
            table_bytes,
            table_secs,
            table_bytes / 60.0,
            bytes_min / table_bytes.max(1.0)
        );
    }
    println!(
        "(bytes/min: everything the controller received, its sweeps every 10 s through \
         accounting included; full/h: the hourly whole-table sweep at the defaults, per \
         minute; ratio: bytes/min over ONE whole-table answer, which the old poller \
         fetched every 1-10 s round; restd: slurmrestd's RSS after the floor's listing)"
    );
    foreign_jobs(&slurm.name, &["stop"]);
    scope.cleanup(&client).await;
}
