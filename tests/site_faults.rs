//! What a real site does to running allocations, done for real on the test site: a compute
//! host dies (SIGKILL of everything on it), a compute host is cut off from the Kubernetes
//! side, slurmctld and slurmrestd restart. Each test holds the site alone: `make test`
//! runs this binary after all others, one test at a time (every test name starts with
//! `fault_`; the other run skips them).

mod common;

use std::time::Duration;

use common::controller::{
    ControllerProcess, Scope, allocation_server, create_session, job_id, phase, session_phase,
    wait_alloc, wait_session,
};
use common::{Env, SlurmCluster as Site, User, slurm_client};
use serde_json::json;
use slurmlab::api::{AllocationPhase, ComputeAllocation, SessionPhase};
use slurmlab::jupyter::{KernelChannel, Output, notebook};
use slurmlab::slurm::SlurmApi;

/// Puts the site back as it was (every daemon running, every host reachable and idle),
/// also when the test fails half-way.
struct Heal<'a> {
    site: &'a Site,
}

impl Drop for Heal<'_> {
    fn drop(&mut self) {
        for node in &self.site.nodes {
            self.site.fault(&["heal", node]);
        }
        self.site.fault(&["revive"]);
        // A node that was DOWN returns by itself (ReturnToService=2) once slurmd is back.
        let deadline = std::time::Instant::now() + Duration::from_secs(90);
        while self
            .site
            .nodes
            .iter()
            .any(|n| !["idle", "mixed", "allocated"].contains(&self.site.node_state(n).as_str()))
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the site did not recover: {:?}",
                self.site
                    .nodes
                    .iter()
                    .map(|n| (n, self.site.node_state(n)))
                    .collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

fn node_of(a: &ComputeAllocation) -> String {
    a.status
        .as_ref()
        .and_then(|s| s.slurm.as_ref())
        .and_then(|j| j.node.clone())
        .expect("a running allocation names its node")
}

fn ready(a: &ComputeAllocation) -> bool {
    phase(a) == AllocationPhase::Ready
}

#[tokio::test]
async fn fault_a_dead_compute_host_fails_its_job_and_on_failure_resubmits_elsewhere_restoring_sessions()
 {
    let env = Env::load();
    let client = env.client(User::Admin).await;
    common::install_crds(&client).await;
    let site = env.slurm_cluster("trixie");
    let _heal = Heal { site: &site };
    let scope = Scope::create(&client, &site, "fault-node").await;
    let ctl = ControllerProcess::start(&env, &scope, &[]);
    scope
        .allocation(
            &client,
            "survivor",
            json!({"cpus": 1, "restartPolicy": "OnFailure", "maxRestarts": 2}),
        )
        .await;
    let first = wait_alloc(&client, &scope, "survivor", &ctl, "Ready", ready).await;
    let (dead, first_job) = (node_of(&first), job_id(&first));
    // A session whose notebook holds one executed cell (what the gateway records): after
    // the node dies it must come back on the new job with that cell's state replayed.
    create_session(
        &client,
        &scope,
        "keeper",
        json!({"allocationRef": "survivor", "notebook": {"path": "keeper.ipynb"}}),
    )
    .await;
    let s = wait_session(&client, &scope, "keeper", &ctl, "Ready", |s| {
        session_phase(s) == SessionPhase::Ready
    })
    .await;
    let first_kernel = s.status.and_then(|st| st.kernel_id).expect("a kernel");
    let server = allocation_server(&client, &first).await;
    let mut nb =
        notebook::from_json(&server.get("keeper.ipynb", true).await.unwrap().content).unwrap();
    notebook::append_code(&mut nb, "answer = 6 * 7", &[], Some(1), json!(null)).unwrap();
    server
        .put_notebook("keeper.ipynb", &notebook::to_json(&nb).unwrap())
        .await
        .unwrap();

    let killed = std::time::Instant::now();
    site.fault(&["kill-node", &dead]);

    // slurmctld notices after SlurmdTimeout (20 s) and fails the job (NODE_FAIL); the
    // controller resubmits, and the new job can only run on the host that is left.
    let again = wait_alloc(
        &client,
        &scope,
        "survivor",
        &ctl,
        "Ready on another host",
        |a| ready(a) && a.status.as_ref().is_some_and(|s| s.restarts == 1),
    )
    .await;
    assert_ne!(job_id(&again), first_job, "a new job");
    assert_ne!(node_of(&again), dead, "the new job runs on a live host");
    // Not responding ("*": e.g. mixed* while its killed job is cleaned up) or DOWN.
    let state = site.node_state(&dead);
    assert!(
        state.ends_with('*') || state.starts_with("down"),
        "{dead}: {state}"
    );
    let rest = slurm_client(&site, None);
    let old = rest.job(first_job).await.unwrap();
    assert!(
        old.state.is_finished(),
        "the job on the dead host is over: {old:?}"
    );
    // SLURM did not requeue it behind our back: one live job for the allocation.
    let live: Vec<_> = rest
        .find_jobs(&format!("slurmlab-{}-survivor", scope.ns))
        .await
        .unwrap()
        .into_iter()
        .filter(|j| !j.state.is_finished())
        .collect();
    assert_eq!(live.len(), 1, "{live:?}");
    let out = scope.describe(&env, "computeallocation", "survivor");
    assert!(out.contains("resubmitting"), "{out}");

    // The session was restored on the new job by replaying its notebook: the variable
    // set before the node died is back, in a new kernel on the live host.
    let restored = wait_session(&client, &scope, "keeper", &ctl, "restored", |s| {
        session_phase(s) == SessionPhase::Ready
            && s.status.as_ref().and_then(|st| st.kernel_id.as_deref())
                != Some(first_kernel.as_str())
    })
    .await;
    let recovered_in = killed.elapsed();
    let st = restored.status.expect("a status");
    assert_eq!(
        st.restore.map(|r| (r.executed, r.total, r.errors.len())),
        Some((1, 1, 0))
    );
    assert_eq!(st.node.as_deref(), Some(node_of(&again).as_str()));
    let server = allocation_server(&client, &again).await;
    let mut channel = KernelChannel::connect(&server, st.kernel_id.as_deref().unwrap(), None)
        .await
        .unwrap();
    let out = channel
        .execute("answer", Duration::from_secs(60))
        .await
        .unwrap()
        .outputs;
    assert!(
        matches!(&out[..], [Output::Result { data, .. }] if data["text/plain"] == "42"),
        "{out:?}"
    );
    // End to end: host killed → job failed → resubmitted → server up → notebook replayed.
    eprintln!(
        "node failure → session restored by replay on {}: {:.1} s",
        node_of(&again),
        recovered_in.as_secs_f64()
    );
    scope.cleanup(&client).await;
}

#[tokio::test]
async fn fault_a_host_cut_off_from_kubernetes_is_unreachable_not_failed() {
    let env = Env::load();
    let client = env.client(User::Admin).await;
    common::install_crds(&client).await;
    let site = env.slurm_cluster("sid");
    let _heal = Heal { site: &site };
    let scope = Scope::create(&client, &site, "fault-cut").await;
    let ctl = ControllerProcess::start(&env, &scope, &[]);
    scope
        .allocation(&client, "far", json!({"cpus": 1, "timeLimit": "20m"}))
        .await;
    let before = wait_alloc(&client, &scope, "far", &ctl, "Ready", ready).await;
    let node = node_of(&before);
    site.fault(&["partition", &node]);
    let lost = wait_alloc(&client, &scope, "far", &ctl, "not Ready", |a| !ready(a)).await;
    assert_eq!(
        phase(&lost),
        AllocationPhase::Starting,
        "an unreachable server is not a failed job: {:?}",
        lost.status
    );
    // SLURM still runs it: nothing was cancelled.
    let rest = slurm_client(&site, None);
    let job = rest.job(job_id(&before)).await.unwrap();
    assert!(job.state.is_running(), "{job:?}");
    site.fault(&["heal", &node]);
    let back = wait_alloc(&client, &scope, "far", &ctl, "Ready again", ready).await;
    assert_eq!(job_id(&back), job_id(&before), "the same job");
    assert_eq!(back.status.as_ref().unwrap().restarts, 0);
    assert_eq!(
        back.status.as_ref().unwrap().endpoint,
        before.status.as_ref().unwrap().endpoint
    );
    scope.cleanup(&client).await;
}

#[tokio::test]
async fn fault_slurmctld_and_slurmrestd_restarts_lose_and_duplicate_nothing() {
    let env = Env::load();
    let client = env.client(User::Admin).await;
    common::install_crds(&client).await;
    let site = env.slurm_cluster("trixie");
    let _heal = Heal { site: &site };
    let scope = Scope::create(&client, &site, "fault-restart").await;
    let ctl = ControllerProcess::start(&env, &scope, &[]);
    scope
        .allocation(&client, "steady", json!({"cpus": 1, "timeLimit": "20m"}))
        .await;
    let before = wait_alloc(&client, &scope, "steady", &ctl, "Ready", ready).await;
    for daemon in ["slurmctld", "slurmrestd"] {
        site.fault(&["restart", daemon]);
        // A few poll rounds against the restarted daemon.
        tokio::time::sleep(Duration::from_secs(6)).await;
        let now = wait_alloc(&client, &scope, "steady", &ctl, "Ready", ready).await;
        assert_eq!(job_id(&now), job_id(&before), "after restarting {daemon}");
        assert_eq!(now.status.as_ref().unwrap().restarts, 0, "{daemon}");
    }
    let rest = slurm_client(&site, None);
    let jobs = rest
        .find_jobs(&format!("slurmlab-{}-steady", scope.ns))
        .await
        .unwrap();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    scope.cleanup(&client).await;
}
