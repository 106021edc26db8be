//! The controller against the real API server, real Slurm 24.11 and 26.05 and real
//! Jupyter servers in batch jobs: SlurmCluster reachability, ComputeAllocations becoming
//! Ready, deletion, out-of-band cancels, restarts, crash adoption, orphans, refusals,
//! and queueing.

mod common;

use std::time::Duration;

use common::controller::{ControllerProcess, Scope, job_id, metric_sum, phase, wait_alloc};
use common::{Env, RawSlurm, User, slurm_client};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;
use slurmlab::api::{AllocationPhase, ComputeAllocation, SlurmCluster};
use slurmlab::slurm::{BaseState, SlurmApi};

#[tokio::test]
async fn cluster_reachability_follows_its_secret() {
    let env = Env::load();
    let client = env.client(User::Admin).await;
    common::install_crds(&client).await;
    let scope = Scope::create(&client, &env.slurm_cluster("trixie"), "ctl-cluster").await;
    let ctl = ControllerProcess::start(&env, &scope, &[]);
    let clusters: Api<SlurmCluster> = Api::all(client.clone());
    let reachable = |want: &'static str| {
        let clusters = clusters.clone();
        let name = scope.cluster.clone();
        async move {
            common::wait_until_ok(Duration::from_secs(60), || async {
                let c = clusters.get(&name).await.ok()?;
                let status = c.status.clone()?;
                let cond = status.conditions.iter().find(|c| c.type_ == "Reachable")?;
                (cond.status == want).then_some(status)
            })
            .await
        }
    };
    let status = reachable("True")
        .await
        .unwrap_or_else(|| panic!("never Reachable:\n{}", ctl.log_tail()));
    assert_eq!(status.api_version.as_deref(), Some("v0.0.42"));
    assert!(
        status
            .slurm_version
            .as_deref()
            .is_some_and(|v| v.starts_with("24.11")),
        "{status:?}"
    );
    assert!(status.last_ping.is_some());

    // A key that is not the cluster's: NotReachable, with a message saying what to check.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &scope.ns);
    let wrong = json!({"data": {"jwt_hs256.key": "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXkhIQ=="}});
    secrets
        .patch("slurm-jwt", &PatchParams::default(), &Patch::Merge(&wrong))
        .await
        .unwrap();
    let status = reachable("False")
        .await
        .unwrap_or_else(|| panic!("a wrong key went unnoticed:\n{}", ctl.log_tail()));
    let message = status.message.unwrap_or_default();
    assert!(message.contains("auth Secret"), "{message}");

    // Fixing the Secret recovers without a restart.
    let key = std::fs::read(&scope.slurm.jwt_key).unwrap();
    let right = json!({"data": {"jwt_hs256.key": base64_of(&key)}});
    secrets
        .patch("slurm-jwt", &PatchParams::default(), &Patch::Merge(&right))
        .await
        .unwrap();
    reachable("True")
        .await
        .unwrap_or_else(|| panic!("did not recover:\n{}", ctl.log_tail()));

    // Events are listed for the cluster-scoped object too.
    let (ok, out, err) = env.kubectl(User::Admin, &["describe", "slurmcluster", &scope.cluster]);
    assert!(ok, "{err}");
    assert!(
        out.contains("Reachable") && out.contains("AuthRefused"),
        "{out}"
    );
    scope.cleanup(&client).await;
}

/// Whether SLURM reports job `id` cancelled within `limit`.
async fn cancelled_within(rest: &slurmlab::slurm::RestClient, id: u64, limit: Duration) -> bool {
    common::wait_until_ok(limit, || async {
        rest.job(id)
            .await
            .ok()
            .filter(|j| j.state.base == BaseState::Cancelled)
    })
    .await
    .is_some()
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[tokio::test]
async fn allocations_become_ready_and_deletion_cancels_the_job() {
    let env = Env::load();
    let client = env.client(User::Admin).await;
    common::install_crds(&client).await;
    for name in ["trixie", "sid"] {
        let slurm = env.slurm_cluster(name);
        let scope = Scope::create(&client, &slurm, &format!("ctl-ready-{name}")).await;
        let ctl = ControllerProcess::start(&env, &scope, &[]);
        scope
            .allocation(&client, "box", json!({"cpus": 1, "timeLimit": "20m"}))
            .await;
        let alloc = wait_alloc(&client, &scope, "box", &ctl, "Ready", |a| {
            phase(a) == AllocationPhase::Ready
        })
        .await;
        let status = alloc.status.clone().unwrap();
        let endpoint = status
            .endpoint
            .clone()
            .expect("a Ready allocation has an endpoint");
        let id = job_id(&alloc);
        let node = status
            .slurm
            .as_ref()
            .and_then(|j| j.node.clone())
            .expect("a running job names its node");
        assert!(slurm.nodes.contains(&node), "{node} vs {:?}", slurm.nodes);
        // The endpoint is the job's own compute host, reached over the site's network.
        assert!(endpoint.contains(&format!("//{node}:")), "{endpoint}");

        // The endpoint answers with the Secret's token, and only with it.
        let token = common::controller::allocation_token(&client, &alloc).await;
        let http = reqwest::Client::new();
        let url = format!("{endpoint}/api/status");
        let with = http
            .get(&url)
            .header("Authorization", format!("token {token}"))
            .send()
            .await
            .unwrap();
        assert_eq!(with.status(), 200, "{name}");
        assert_eq!(http.get(&url).send().await.unwrap().status(), 403, "{name}");

        // kubectl shows what it is doing; describe lists the events.
        let (ok, out, err) =
            env.kubectl(User::Admin, &["get", "computeallocations", "-n", &scope.ns]);
        assert!(ok, "{err}");
        let line = out
            .lines()
            .find(|l| l.starts_with("box"))
            .unwrap_or_else(|| panic!("{out}"));
        for want in ["Ready", &id.to_string(), "RUNNING", node.as_str()] {
            assert!(line.contains(want), "{want} missing from {line:?}");
        }
        let out = scope.describe(&env, "computeallocation", "box");
        for event in ["Submitted", "Ready"] {
            assert!(
                out.contains(event),
                "event {event} missing from describe:\n{out}"
            );
        }
        assert!(
            !out.contains(&token),
            "the token must never appear in the object"
        );

        // Delete: the job is cancelled and the object goes away.
        scope
            .allocations(&client)
            .delete("box", &DeleteParams::default())
            .await
            .unwrap();
        common::wait_until(
            Duration::from_secs(60),
            "the allocation to be gone",
            || async {
                scope
                    .allocations(&client)
                    .get_opt("box")
                    .await
                    .ok()
                    .flatten()
                    .is_none()
                    .then_some(())
            },
        )
        .await;
        let job = slurm_client(&slurm, None).job(id).await.unwrap();
        assert_eq!(
            job.state.base,
            BaseState::Cancelled,
            "{name}: {}",
            job.state
        );
        scope.cleanup(&client).await;
    }
}

#[tokio::test]
async fn out_of_band_cancel_fails_and_on_failure_resubmits() {
    let env = Env::load();
    let client = env.client(User::Admin).await;
    common::install_crds(&client).await;
    let slurm = env.slurm_cluster("sid");
    let scope = Scope::create(&client, &slurm, "ctl-scancel").await;
    let ctl = ControllerProcess::start(&env, &scope, &[]);
    scope.allocation(&client, "never", json!({"cpus": 1})).await;
    scope
        .allocation(
            &client,
            "again",
            json!({"cpus": 1, "restartPolicy": "OnFailure", "maxRestarts": 2}),
        )
        .await;
    let never = wait_alloc(&client, &scope, "never", &ctl, "Ready", |a| {
        phase(a) == AllocationPhase::Ready
    })
    .await;
    let again = wait_alloc(&client, &scope, "again", &ctl, "Ready", |a| {
        phase(a) == AllocationPhase::Ready
    })
    .await;
    let rest = slurm_client(&slurm, None);
    rest.cancel(&slurm.user, job_id(&never)).await.unwrap();
    let first = job_id(&again);
    rest.cancel(&slurm.user, first).await.unwrap();

    let failed = wait_alloc(&client, &scope, "never", &ctl, "Failed", |a| {
        phase(a) == AllocationPhase::Failed
    })
    .await;
    let message = failed.status.unwrap().message.unwrap_or_default();
    assert!(message.contains("cancelled outside slurmlab"), "{message}");
    let restarted = wait_alloc(&client, &scope, "again", &ctl, "Ready again", |a| {
        phase(a) == AllocationPhase::Ready && a.status.as_ref().is_some_and(|s| s.restarts == 1)
    })
    .await;
    assert_ne!(job_id(&restarted), first, "a new job");
    let out = scope.describe(&env, "computeallocation", "again");
    assert!(out.contains("resubmitting"), "{out}");
    scope.cleanup(&client).await;
}

/// Creates allocation `name` under a controller that aborts at crash point `point`
/// (`SLURMLAB_CRASH_AT`), and waits until it did.
async fn crash_while_creating(
    env: &Env,
    client: &kube::Client,
    scope: &Scope,
    point: &str,
    name: &str,
) {
    let mut crashing = ControllerProcess::start(env, scope, &[("SLURMLAB_CRASH_AT", point)]);
    scope.allocation(client, name, json!({"cpus": 1})).await;
    let exit = crashing.wait_exit(Duration::from_secs(60));
    assert!(
        exit.is_some_and(|s| !s.success()),
        "the controller should have crashed at {point}:\n{}",
        crashing.log_tail()
    );
}

#[tokio::test]
async fn a_crash_after_submit_leaves_one_adopted_job_and_orphans_are_cancelled() {
    let env = Env::load();
    let client = env.client(User::Admin).await;
    common::install_crds(&client).await;
    let slurm = env.slurm_cluster("trixie");
    let scope = Scope::create(&client, &slurm, "ctl-crash").await;
    crash_while_creating(&env, &client, &scope, "after-submit", "survivor").await;
    let before = scope.allocations(&client).get("survivor").await.unwrap();
    assert!(
        before
            .status
            .as_ref()
            .and_then(|s| s.slurm.as_ref())
            .and_then(|j| j.job_id)
            .is_none(),
        "the crash came before the status update"
    );

    let ctl = ControllerProcess::start(&env, &scope, &[]);
    let alloc = wait_alloc(&client, &scope, "survivor", &ctl, "Ready", |a| {
        phase(a) == AllocationPhase::Ready
    })
    .await;
    let rest = slurm_client(&slurm, None);
    let jobs: Vec<_> = rest
        .find_jobs(&format!("slurmlab-{}-survivor", scope.ns))
        .await
        .unwrap()
        .into_iter()
        .filter(|j| !j.state.is_finished())
        .collect();
    assert_eq!(jobs.len(), 1, "exactly one job: {jobs:?}");
    assert_eq!(
        jobs[0].id,
        job_id(&alloc),
        "the allocation adopted the job submitted before the crash"
    );
    let out = scope.describe(&env, "computeallocation", "survivor");
    assert!(out.contains("Adopted"), "{out}");
    // Found through accounting (our user's rows), not by reading the whole job table.
    let text = ctl.metrics().await;
    let adoption = |listing: &str| {
        metric_sum(
            &text,
            "slurmlab_job_lookups_total",
            &["purpose=\"adoption\"", &format!("listing=\"{listing}\"")],
        )
    };
    assert_eq!(
        (adoption("accounting"), adoption("whole_table")),
        (1.0, 0.0),
        "{text}"
    );

    // Orphan: the allocation disappears while the controller is down (finalizer removed
    // by hand); the restarted controller cancels its job.
    let mut ctl = ctl;
    assert!(
        ctl.stop(),
        "graceful shutdown on SIGTERM:\n{}",
        ctl.log_tail()
    );
    let api = scope.allocations(&client);
    api.patch(
        "survivor",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    api.delete("survivor", &DeleteParams::default())
        .await
        .unwrap();
    let orphan = jobs[0].id;
    // Never the whole table: accounting (slurmdbd) must find the orphan by its user.
    let ctl = ControllerProcess::start(&env, &scope, &[("SLURMLAB_ORPHAN_FULL_SWEEP_EVERY", "0")]);
    assert!(
        cancelled_within(&rest, orphan, Duration::from_secs(60)).await,
        "orphan job {orphan} was not cancelled:\n{}",
        ctl.log_tail()
    );
    let text = ctl.metrics().await;
    let cluster = format!("cluster=\"{}\"", scope.cluster);
    let lookups = |listing: &str| {
        metric_sum(
            &text,
            "slurmlab_job_lookups_total",
            &[
                &cluster,
                "purpose=\"orphan_sweep\"",
                &format!("listing=\"{listing}\""),
            ],
        )
    };
    assert!(lookups("accounting") >= 1.0, "{text}");
    assert_eq!(lookups("whole_table"), 0.0, "{text}");
    let whole = metric_sum(
        &text,
        "slurmlab_slurm_requests_total",
        &[&cluster, "operation=\"jobs_all\""],
    );
    assert_eq!(whole, 0.0, "the sweep read the whole job table");
    scope.cleanup(&client).await;
}

#[tokio::test]
async fn invalid_requests_are_refused_before_anything_is_submitted() {
    let env = Env::load();
    let client = env.client(User::Admin).await;
    common::install_crds(&client).await;
    for name in ["trixie", "sid"] {
        let slurm = env.slurm_cluster(name);
        let scope = Scope::create(&client, &slurm, &format!("ctl-invalid-{name}")).await;
        let ctl = ControllerProcess::start(&env, &scope, &[]);
        scope
            .allocation(&client, "badpart", json!({"partition": "nosuchpartition"}))
            .await;
        scope
            .allocation(&client, "toolong", json!({"timeLimit": "5h"}))
            .await;
        scope.allocation(&client, "nocluster", json!({})).await;
        scope
            .allocations(&client)
            .patch(
                "nocluster",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"clusterRef": "no-such-cluster"}})),
            )
            .await
            .unwrap();
        let failed = |a: &ComputeAllocation| phase(a) == AllocationPhase::Failed;
        let badpart = wait_alloc(&client, &scope, "badpart", &ctl, "Failed", failed).await;
        let m = badpart.status.unwrap().message.unwrap_or_default();
        assert!(
            m.to_lowercase().contains("invalid partition"),
            "{name}: SLURM's own reason: {m}"
        );
        let toolong = wait_alloc(&client, &scope, "toolong", &ctl, "Failed", failed).await;
        let m = toolong.status.unwrap().message.unwrap_or_default();
        assert!(
            m.contains("at most 2h") && m.contains("spec.timeLimit"),
            "{m}"
        );
        let nocluster = wait_alloc(&client, &scope, "nocluster", &ctl, "refused", |a| {
            a.status.as_ref().is_some_and(|s| {
                s.message
                    .as_deref()
                    .is_some_and(|m| m.contains("does not exist"))
            })
        })
        .await;
        assert!(nocluster.status.unwrap().slurm.is_none());
        // Nothing reached SLURM for the refused ones.
        let rest = slurm_client(&slurm, None);
        for alloc in ["badpart", "toolong", "nocluster"] {
            let jobs = rest
                .find_jobs(&format!("slurmlab-{}-{alloc}", scope.ns))
                .await
                .unwrap();
            assert!(jobs.is_empty(), "{name}: {alloc} submitted {jobs:?}");
        }
        scope.cleanup(&client).await;
    }
}

#[tokio::test]
async fn a_full_node_queues_with_slurms_reason_then_runs() {
    let env = Env::load();
    let client = env.client(User::Admin).await;
    common::install_crds(&client).await;
    let slurm = env.slurm_cluster("sid");
    let scope = Scope::create(&client, &slurm, "ctl-queue").await;
    let ctl = ControllerProcess::start(&env, &scope, &[]);
    // One big allocation per compute host (8 CPUs each) leaves no host with 3 free CPUs.
    let bigs: Vec<String> = (1..=slurm.nodes.len()).map(|i| format!("big{i}")).collect();
    for big in &bigs {
        scope.allocation(&client, big, json!({"cpus": 6})).await;
    }
    for big in &bigs {
        wait_alloc(&client, &scope, big, &ctl, "Ready", |a| {
            phase(a) == AllocationPhase::Ready
        })
        .await;
    }
    scope.allocation(&client, "small", json!({"cpus": 3})).await;
    let queued = wait_alloc(
        &client,
        &scope,
        "small",
        &ctl,
        "Queued for resources",
        |a| {
            phase(a) == AllocationPhase::Queued
                && a.status
                    .as_ref()
                    .and_then(|s| s.slurm.as_ref())
                    .and_then(|j| j.reason.as_deref())
                    .is_some_and(|r| r == "Resources" || r == "Priority")
        },
    )
    .await;
    assert!(
        queued
            .status
            .unwrap()
            .message
            .unwrap_or_default()
            .contains("pending")
    );
    let (_, out, _) = env.kubectl(
        User::Admin,
        &["get", "computeallocation", "small", "-n", &scope.ns],
    );
    assert!(out.contains("Queued") && out.contains("PENDING"), "{out}");
    for big in &bigs {
        scope
            .allocations(&client)
            .delete(big, &DeleteParams::default())
            .await
            .unwrap();
    }
    wait_alloc(
        &client,
        &scope,
        "small",
        &ctl,
        "Ready once a host has room",
        |a| phase(a) == AllocationPhase::Ready,
    )
    .await;
    scope.cleanup(&client).await;
}

#[tokio::test]
async fn an_idle_allocation_is_cancelled_after_its_idle_timeout() {
    let env = Env::load();
    let client = env.client(User::Admin).await;
    common::install_crds(&client).await;
    let slurm = env.slurm_cluster("trixie");
    let scope = Scope::create(&client, &slurm, "ctl-idle").await;
    let ctl = ControllerProcess::start(&env, &scope, &[]);
    scope
        .allocation(&client, "idle", json!({"cpus": 1, "idleTimeout": "5s"}))
        .await;
    let ready = wait_alloc(&client, &scope, "idle", &ctl, "Ready", |a| {
        phase(a) == AllocationPhase::Ready
    })
    .await;
    let done = wait_alloc(&client, &scope, "idle", &ctl, "Completed", |a| {
        phase(a) == AllocationPhase::Completed
    })
    .await;
    let status = done.status.unwrap();
    assert!(
        status
            .message
            .unwrap_or_default()
            .contains("cancelled by slurmlab")
    );
    let job = slurm_client(&slurm, None)
        .job(job_id(&ready))
        .await
        .unwrap();
    assert_eq!(job.state.base, BaseState::Cancelled);
    let out = scope.describe(&env, "computeallocation", "idle");
    assert!(out.contains("IdleTimeout"), "{out}");
    scope.cleanup(&client).await;
}

#[tokio::test]
async fn a_second_replica_waits_for_the_lease_and_takes_over() {
    let env = Env::load();
    let client = env.client(User::Admin).await;
    common::install_crds(&client).await;
    let slurm = env.slurm_cluster("trixie");
    let scope = Scope::create(&client, &slurm, "ctl-leader").await;
    let mut first = ControllerProcess::start(&env, &scope, &[]);
    let clusters: Api<SlurmCluster> = Api::all(client.clone());
    common::wait_until(
        Duration::from_secs(60),
        "the first replica to act",
        || async { clusters.get(&scope.cluster).await.ok()?.status.map(|_| ()) },
    )
    .await;
    let second = ControllerProcess::start(&env, &scope, &[]);
    let readyz = |addr: String| async move {
        let resp = reqwest::get(format!("http://{addr}/readyz")).await.ok()?;
        Some((resp.status().as_u16(), resp.text().await.ok()?))
    };
    let standby = common::wait_until(
        Duration::from_secs(30),
        "the second replica to answer",
        || readyz(second.metrics_addr.clone()),
    )
    .await;
    assert_eq!(standby.0, 200);
    assert!(standby.1.contains("standby"), "{standby:?}");
    let leading = readyz(first.metrics_addr.clone()).await.unwrap();
    assert!(leading.1.contains("leading"), "{leading:?}");
    assert!(
        second.metrics().await.contains("slurmlab_leader 0"),
        "the standby does nothing"
    );

    // The leader stops gracefully and hands over the lease: the standby acts at once.
    assert!(first.stop(), "graceful shutdown:\n{}", first.log_tail());
    common::wait_until(
        Duration::from_secs(30),
        "the second replica to lead",
        || async {
            readyz(second.metrics_addr.clone())
                .await
                .filter(|(_, body)| body.contains("leading"))
        },
    )
    .await;
    scope.allocation(&client, "after", json!({"cpus": 1})).await;
    wait_alloc(&client, &scope, "after", &second, "Ready", |a| {
        phase(a) == AllocationPhase::Ready
    })
    .await;
    scope.cleanup(&client).await;
}

#[tokio::test]
async fn twenty_allocations_poll_with_one_state_query_per_round() {
    let env = Env::load();
    let client = env.client(User::Admin).await;
    common::install_crds(&client).await;
    let slurm = env.slurm_cluster("trixie");
    let scope = Scope::create(&client, &slurm, "ctl-twenty").await;
    let ctl = ControllerProcess::start(&env, &scope, &[]);
    for i in 0..20 {
        scope
            .allocation(
                &client,
                &format!("a{i:02}"),
                json!({"cpus": 1, "memory": "256Mi"}),
            )
            .await;
    }
    // Wait until every allocation has a job (8 run on the 8-CPU node, the rest queue).
    common::wait_until(Duration::from_secs(120), "20 submitted jobs", || async {
        let list = scope
            .allocations(&client)
            .list(&Default::default())
            .await
            .ok()?;
        let with_job = list
            .items
            .iter()
            .filter(|a| {
                a.status
                    .as_ref()
                    .and_then(|s| s.slurm.as_ref())
                    .and_then(|j| j.job_id)
                    .is_some()
            })
            .count();
        (with_job == 20).then_some(())
    })
    .await;
    let sample = |text: &str| {
        let cluster = format!("cluster=\"{}\"", scope.cluster);
        let op = |name: &str| {
            metric_sum(
                text,
                "slurmlab_slurm_requests_total",
                &[&cluster, &format!("operation=\"{name}\"")],
            )
        };
        let polls = op("job_states");
        let incremental = op("jobs");
        let listings = op("jobs_all");
        let records = op("job");
        let accounted = op("accounted_jobs");
        let rounds = metric_sum(text, "slurmlab_slurm_poll_rounds_total", &[&cluster]);
        let all = metric_sum(text, "slurmlab_slurm_requests_total", &[&cluster]) - accounted;
        (
            polls,
            incremental,
            listings,
            records,
            rounds,
            all,
            accounted,
        )
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (p0, i0, l0, j0, r0, a0, c0) = sample(&ctl.metrics().await);
    tokio::time::sleep(Duration::from_secs(20)).await;
    let (p1, i1, l1, j1, r1, a1, c1) = sample(&ctl.metrics().await);
    let (polls, incremental, listings, records, rounds, all, accounted) = (
        p1 - p0,
        i1 - i0,
        l1 - l0,
        j1 - j0,
        r1 - r0,
        a1 - a0,
        c1 - c0,
    );
    // Steady running jobs are re-read once per runningRefresh (5 s here), not per round.
    assert!(
        records <= 20.0 * 5.0,
        "{records} record reads in 20 s for 20 steady jobs"
    );
    // One state query per round whatever the number of jobs, at most one round per
    // second (the active interval), no listing of the whole job table, and little else
    // besides (pings; record reads only for jobs that change; probes are not SLURM).
    assert!((3.0..=22.0).contains(&rounds), "{rounds} rounds in 20 s");
    // (A round may be in flight at either sample: allow one round's requests each side.)
    assert!(
        (polls - rounds).abs() <= 2.0,
        "{polls} state queries in {rounds} rounds"
    );
    // The poller never lists. The orphan sweep (every 10 s here) asks accounting, one
    // query per mapped user (3 here); only its first run after start reads the whole
    // table, and that came before this window.
    assert_eq!(incremental, 0.0, "the poller listed the job table");
    assert!(listings <= 1.0, "{listings} full listings in 20 s");
    assert!(accounted <= 9.0, "{accounted} accounting queries in 20 s");
    assert!(
        all - polls - records - listings <= 25.0,
        "{} other requests in 20 s for 20 steady allocations",
        all - polls - records - listings
    );
    scope.cleanup(&client).await;
}

#[tokio::test]
async fn a_slurmrestd_outage_keeps_the_last_state_and_recovers() {
    let env = Env::load();
    let client = env.client(User::Admin).await;
    common::install_crds(&client).await;
    let slurm = env.slurm_cluster("sid");
    let scope = Scope::create(&client, &slurm, "ctl-outage").await;
    let ctl = ControllerProcess::start(&env, &scope, &[]);
    scope
        .allocation(&client, "steady", json!({"cpus": 1}))
        .await;
    let ready = wait_alloc(&client, &scope, "steady", &ctl, "Ready", |a| {
        phase(a) == AllocationPhase::Ready
    })
    .await;

    // slurmrestd "goes away": the cluster now points at a port nobody listens on.
    let clusters: Api<SlurmCluster> = Api::all(client.clone());
    let dead = format!("http://127.0.0.1:{}", common::controller::free_port());
    let point = |url: String| json!({"spec": {"restApi": {"url": url}}});
    clusters
        .patch(
            &scope.cluster,
            &PatchParams::default(),
            &Patch::Merge(point(dead)),
        )
        .await
        .unwrap();
    let during = wait_alloc(
        &client,
        &scope,
        "steady",
        &ctl,
        "aware of the outage",
        |a| {
            a.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "SlurmReachable" && c.status == "False")
            })
        },
    )
    .await;
    let status = during.status.unwrap();
    assert_eq!(
        status.phase,
        AllocationPhase::Ready,
        "an outage must not fail or change the allocation"
    );
    assert_eq!(
        status.slurm.as_ref().and_then(|j| j.job_id),
        ready
            .status
            .as_ref()
            .and_then(|s| s.slurm.as_ref())
            .and_then(|j| j.job_id)
    );
    let cond = status
        .conditions
        .iter()
        .find(|c| c.type_ == "SlurmReachable")
        .unwrap();
    assert!(
        cond.message.contains("cannot reach slurmrestd"),
        "{}",
        cond.message
    );

    // It comes back: the condition recovers, nothing was resubmitted.
    clusters
        .patch(
            &scope.cluster,
            &PatchParams::default(),
            &Patch::Merge(point(slurm.url.clone())),
        )
        .await
        .unwrap();
    let after = wait_alloc(&client, &scope, "steady", &ctl, "recovered", |a| {
        a.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "SlurmReachable" && c.status == "True")
        })
    })
    .await;
    assert_eq!(phase(&after), AllocationPhase::Ready);
    assert_eq!(job_id(&after), job_id(&ready));
    scope.cleanup(&client).await;
}

/// The job's owner rewrites its comment after Ready to send the controller elsewhere: to
/// another port on an allowed host, through a userinfo trick, or to a foreign host. The
/// pinned endpoint stays, the token never reaches the new place (a listener there counts
/// every connection), and the allocation says why, with an event.
#[tokio::test]
async fn a_job_cannot_move_its_endpoint_after_ready() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let env = Env::load();
    let client = env.client(User::Admin).await;
    common::install_crds(&client).await;
    let slurm = env.slurm_cluster("sid");
    let scope = Scope::create(&client, &slurm, "ctl-pin").await;
    let ctl = ControllerProcess::start(&env, &scope, &[]);
    scope
        .allocation(&client, "box", json!({"cpus": 1, "timeLimit": "20m"}))
        .await;
    let ready = wait_alloc(&client, &scope, "box", &ctl, "Ready", |a| {
        phase(a) == AllocationPhase::Ready
    })
    .await;
    let pinned = ready.status.clone().unwrap().endpoint.unwrap();
    let id = job_id(&ready);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let connections = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = connections.clone();
    let trap = tokio::spawn(async move {
        while let Ok((_sock, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
        }
    });

    let rest = slurm_client(&slurm, None);
    let job = rest.job(id).await.unwrap();
    let owner_part = job
        .comment
        .as_deref()
        .unwrap()
        .split(" jupyter=")
        .next()
        .unwrap()
        .to_owned();
    // The other compute host of the site: a job may not move its server there either.
    let host = pinned
        .trim_start_matches("http://")
        .rsplit_once(':')
        .unwrap()
        .0
        .to_owned();
    let other = slurm.nodes.iter().find(|n| **n != host).unwrap().clone();
    for evil in [
        format!("{other}:{port}"),
        format!("127.0.0.1:{port}"),
        format!("127.0.0.1.x@evil.example:{port}"),
        format!("evil.example:{port}"),
    ] {
        rest.update_comment(&slurm.user, id, &format!("{owner_part} jupyter={evil}"))
            .await
            .unwrap();
        let refused = wait_alloc(&client, &scope, "box", &ctl, "EndpointTrusted=False", |a| {
            a.status.as_ref().is_some_and(|s| {
                s.conditions.iter().any(|c| {
                    c.type_ == "EndpointTrusted" && c.status == "False" && c.message.contains(&evil)
                })
            })
        })
        .await;
        // A few more poll rounds: nothing may follow the rewrite.
        tokio::time::sleep(Duration::from_secs(4)).await;
        let now = scope.allocations(&client).get("box").await.unwrap();
        let status = now.status.unwrap();
        assert_eq!(status.endpoint.as_deref(), Some(pinned.as_str()), "{evil}");
        assert_eq!(
            status.phase,
            AllocationPhase::Ready,
            "{evil}: {:?}",
            status.message
        );
        assert_eq!(
            connections.load(Ordering::SeqCst),
            0,
            "{evil}: the controller connected to the rewritten endpoint"
        );
        drop(refused);
    }
    let out = scope.describe(&env, "computeallocation", "box");
    assert!(out.contains("EndpointChangeRefused"), "{out}");
    trap.abort();
    scope.cleanup(&client).await;
}

/// A tenant annotates its own namespace to run as another tenant's SLURM user: ignored
/// (the default user runs), and the admin's namespace table wins over the annotation.
/// Where the admin lets annotations choose, root and unlisted users are still refused;
/// an admin drops the allow-list of a JWT-key cluster. Nothing forbidden reaches SLURM,
/// and the objects say why.
#[tokio::test]
async fn a_namespace_cannot_choose_root_and_a_jwt_key_needs_an_allow_list() {
    use k8s_openapi::api::core::v1::Namespace;
    let env = Env::load();
    let client = env.client(User::Admin).await;
    common::install_crds(&client).await;
    let slurm = env.slurm_cluster("trixie");
    let scope = Scope::create(&client, &slurm, "ctl-mapping").await;
    let ctl = ControllerProcess::start(&env, &scope, &[]);
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let clusters: Api<SlurmCluster> = Api::all(client.clone());
    let annotate =
        |user: &str| json!({"metadata": {"annotations": {"slurmlab.io/slurm-user": user}}});
    namespaces
        .patch(
            &scope.ns,
            &PatchParams::default(),
            &Patch::Merge(annotate("bob")),
        )
        .await
        .unwrap();
    let submitted_as = |name: &'static str| {
        let (client, scope, ctl) = (&client, &scope, &ctl);
        async move {
            scope.allocation(client, name, json!({"cpus": 1})).await;
            let a = wait_alloc(client, scope, name, ctl, "submitted", |a| {
                a.status.as_ref().and_then(|s| s.slurm_user()).is_some()
            })
            .await;
            a.status.unwrap().slurm_user().unwrap().to_owned()
        }
    };
    assert_eq!(submitted_as("annotated").await, slurm.user);
    clusters
        .patch(
            &scope.cluster,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"userMapping": {"namespaces": {&scope.ns: "alice"}}}})),
        )
        .await
        .unwrap();
    // The controller has the SlurmCluster's new spec once its status says so.
    let settled = || async {
        common::wait_until_ok(Duration::from_secs(60), || async {
            let c = clusters.get(&scope.cluster).await.ok()?;
            (c.status?.observed_generation == c.metadata.generation).then_some(())
        })
        .await
        .expect("the controller never observed the SlurmCluster change");
    };
    settled().await;
    assert_eq!(submitted_as("tabled").await, "alice");
    clusters
        .patch(
            &scope.cluster,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"userMapping": {
                "namespaces": null, "honorNamespaceAnnotation": true
            }}})),
        )
        .await
        .unwrap();
    settled().await;
    let rest = slurm_client(&slurm, None);
    for (user, why) in [("root", "never mapped"), ("mallory", "allowedUsers")] {
        namespaces
            .patch(
                &scope.ns,
                &PatchParams::default(),
                &Patch::Merge(
                    json!({"metadata": {"annotations": {"slurmlab.io/slurm-user": user}}}),
                ),
            )
            .await
            .unwrap();
        let name = format!("as-{user}");
        scope.allocation(&client, &name, json!({"cpus": 1})).await;
        let refused = wait_alloc(&client, &scope, &name, &ctl, "refused", |a| {
            a.status
                .as_ref()
                .and_then(|s| s.message.as_deref())
                .is_some_and(|m| m.contains(why) && m.contains(user))
        })
        .await;
        assert!(refused.status.unwrap().slurm.is_none(), "{user}");
        let jobs = rest
            .find_jobs(&format!("slurmlab-{}-{name}", scope.ns))
            .await
            .unwrap();
        assert!(jobs.is_empty(), "{user}: submitted {jobs:?}");
    }
    // A JWT key without an allow-list: the SlurmCluster is not usable and says why.
    clusters
        .patch(
            &scope.cluster,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"userMapping": {"allowedUsers": null}}})),
        )
        .await
        .unwrap();
    let said = common::wait_until_ok(Duration::from_secs(60), || async {
        let c = clusters.get(&scope.cluster).await.ok()?;
        let cond = c
            .status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Reachable")?;
        (cond.status == "False" && cond.message.contains("allowedUsers")).then_some(cond)
    })
    .await;
    assert!(said.is_some(), "controller log:\n{}", ctl.log_tail());
    scope.cleanup(&client).await;
}

/// slurmrestd takes the submit and the answer is lost (a proxy answers 502 after the
/// real server created the job). The controller wrote its claim before submitting, so it
/// looks for the job, adopts it, and never submits a second one, however often it retries.
#[tokio::test]
async fn a_lost_submit_answer_is_adopted_never_submitted_twice() {
    use common::fault_proxy::{Fault, FaultProxy};
    let env = Env::load();
    let client = env.client(User::Admin).await;
    common::install_crds(&client).await;
    let slurm = env.slurm_cluster("trixie");
    let proxy = FaultProxy::start(&slurm.url, Fault::None).await;
    let behind_proxy = common::SlurmCluster {
        url: proxy.url.clone(),
        ..slurm.clone()
    };
    let scope = Scope::create(&client, &behind_proxy, "ctl-lost").await;
    let ctl = ControllerProcess::start(&env, &scope, &[]);
    // The cluster's visibility probe (a held job, cancelled) is a submit too: let it
    // through, then lose the answers of the submits, counting from there.
    let clusters: Api<SlurmCluster> = Api::all(client.clone());
    common::wait_until_ok(Duration::from_secs(60), || async {
        let c = clusters.get(&scope.cluster).await.ok()?;
        c.status?
            .conditions
            .iter()
            .any(|c| c.type_ == "JobsVisible" && c.status == "True")
            .then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("no JobsVisible=True\n{}", ctl.log_tail()));
    let probes = proxy.submits_forwarded();
    proxy.set_fault(Fault::BadGateway);
    scope
        .allocation(&client, "once", json!({"cpus": 1, "timeLimit": "20m"}))
        .await;
    let ready = wait_alloc(&client, &scope, "once", &ctl, "Ready", |a| {
        phase(a) == AllocationPhase::Ready
    })
    .await;
    assert_eq!(proxy.submits_forwarded() - probes, 1, "{}", ctl.log_tail());
    let jobs = slurm_client(&slurm, None)
        .find_jobs(&format!("slurmlab-{}-once", scope.ns))
        .await
        .unwrap();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0].id, job_id(&ready));
    let out = scope.describe(&env, "computeallocation", "once");
    assert!(out.contains("Adopted"), "{out}");
    scope.cleanup(&client).await;
}

/// The attack issue 11 describes: another SLURM user predicts an allocation's next
/// attempt (name and comment tag are readable where PrivateData is off) and submits a
/// job carrying it before the controller's own submission. The controller claimed the
/// attempt and died before submitting, so its restart looks for the attempt's job: the
/// forged one runs as the wrong user and is neither adopted nor cancelled. The same
/// user's job with the tag of an allocation that does not exist is not swept either. And
/// the allocation's own SLURM user (another namespace mapped to it, say) forging both
/// gets nowhere: the tags carry no valid signature of the controller's key.
#[tokio::test]
async fn a_forged_job_with_an_allocations_tag_is_never_adopted_or_cancelled() {
    let env = Env::load();
    let client = env.client(User::Admin).await;
    common::install_crds(&client).await;
    let slurm = env.slurm_cluster("trixie");
    let scope = Scope::create(&client, &slurm, "ctl-forged").await;
    crash_while_creating(&env, &client, &scope, "after-claim", "victim").await;
    let victim = scope.allocations(&client).get("victim").await.unwrap();
    let status = victim.status.clone().unwrap_or_default();
    assert_eq!(status.submit_claim, Some(0), "the attempt was claimed");
    assert_eq!(status.job_id(), None, "and nothing was submitted");
    let uid = victim.metadata.uid.clone().unwrap();
    let cluster_uid = Api::<SlurmCluster>::all(client.clone())
        .get(&scope.cluster)
        .await
        .unwrap()
        .metadata
        .uid
        .unwrap();

    // Another tenant's SLURM user forges the attempt, and an orphan-looking job.
    let mallory = slurm.tenants[1].clone();
    assert_ne!(mallory, slurm.user);
    let raw = RawSlurm::as_user(&slurm, slurm.newest_version(), &mallory);
    let env_vars = vec![
        "PATH=/usr/bin:/bin".to_owned(),
        format!("HOME=/home/{mallory}"),
    ];
    let forge = |name: &str, uid: &str| {
        json!({
            "comment": format!(
                "slurmlab owner={}/{name} uid={uid} attempt=0 cluster={cluster_uid} nonce={} mac={}",
                scope.ns,
                status.submit_nonce.clone().unwrap_or_default(),
                "0".repeat(32)
            ),
            "hold": true,
        })
    };
    let ghost_uid = "00000000-0000-0000-0000-000000000000";
    let mut planted = vec![];
    let operator = RawSlurm::as_user(&slurm, slurm.newest_version(), &slurm.user);
    let operator_env = vec![
        "PATH=/usr/bin:/bin".to_owned(),
        format!("HOME=/home/{}", slurm.user),
    ];
    for (who, vars) in [(&raw, &env_vars), (&operator, &operator_env)] {
        for (name, uid) in [("victim", uid.as_str()), ("ghost", ghost_uid)] {
            let id = who
                .submit_with(
                    &format!("slurmlab-{}-{name}", scope.ns),
                    "#!/bin/sh\nsleep 600\n",
                    vars,
                    forge(name, uid),
                )
                .await;
            planted.push(id);
        }
    }

    let ctl = ControllerProcess::start(&env, &scope, &[]);
    let alloc = wait_alloc(&client, &scope, "victim", &ctl, "Ready", |a| {
        phase(a) == AllocationPhase::Ready
    })
    .await;
    let own = job_id(&alloc);
    assert!(!planted.contains(&own), "a forged job was adopted");
    // (Read as the operator: PrivateData hides it from the tenant.)
    let record = RawSlurm::new(&slurm, slurm.newest_version()).job(own).await;
    assert_eq!(
        record["user_name"], slurm.user,
        "the allocation's job runs as the mapped user"
    );
    let out = scope.describe(&env, "computeallocation", "victim");
    assert!(out.contains("ForgedJobIgnored"), "{out}");
    // Sweeps run every 10 s: give them two, then both forged jobs must still be there.
    tokio::time::sleep(Duration::from_secs(25)).await;
    for &id in &planted {
        let states = operator.job(id).await["job_state"].clone();
        assert_eq!(states, json!(["PENDING"]), "job {id} was touched: {states}");
    }
    let text = ctl.metrics().await;
    let cluster = format!("cluster=\"{}\"", scope.cluster);
    let forged_seen = |purpose: &str| {
        metric_sum(
            &text,
            "slurmlab_forged_jobs_total",
            &[&cluster, &format!("purpose=\"{purpose}\"")],
        )
    };
    assert!(forged_seen("adoption") >= 2.0, "{text}");
    assert!(forged_seen("orphan_sweep") >= 2.0, "{text}");
    for (i, &id) in planted.iter().enumerate() {
        if i < 2 {
            raw.cancel(id).await;
        } else {
            operator.cancel(id).await;
        }
    }
    scope.cleanup(&client).await;
}

/// The controller reads job states as its service user. One that is not a SLURM operator
/// sees only its own jobs under the site's PrivateData=jobs, so it could not follow a
/// tenant's job (and, looking for a job whose status write was lost, would submit again).
/// The SlurmCluster finds out with a probe and says what to configure; nothing of another
/// user is submitted until the admin fixes it, and then it is, without a spec change to
/// the allocation. (Every other test runs with an operator as the service user.)
#[tokio::test]
async fn a_service_user_that_cannot_see_tenant_jobs_is_detected_and_nothing_is_submitted() {
    let env = Env::load();
    let client = env.client(User::Admin).await;
    common::install_crds(&client).await;
    let slurm = env.slurm_cluster("trixie");
    let scope = Scope::create(&client, &slurm, "ctl-privdata").await;
    let clusters: Api<SlurmCluster> = Api::all(client.clone());
    let map_with_service_user = |user: &str| {
        json!({"spec": {"userMapping": {
            "defaultUser": user, "allowedUsers": [user, "alice"], "namespaces": {&scope.ns: "alice"}
        }}})
    };
    // carol: a plain user with an association of her own (account "others").
    clusters
        .patch(
            &scope.cluster,
            &PatchParams::default(),
            &Patch::Merge(map_with_service_user("carol")),
        )
        .await
        .unwrap();
    let ctl = ControllerProcess::start(&env, &scope, &[]);
    let visible = |status: &'static str| {
        let (clusters, name) = (&clusters, &scope.cluster);
        async move {
            common::wait_until_ok(Duration::from_secs(90), || async {
                let c = clusters.get(name).await.ok()?;
                let cond = c
                    .status?
                    .conditions
                    .into_iter()
                    .find(|c| c.type_ == "JobsVisible")?;
                (cond.status == status).then_some(cond)
            })
            .await
        }
    };
    let hidden = visible("False")
        .await
        .unwrap_or_else(|| panic!("no JobsVisible=False\n{}", ctl.log_tail()));
    assert_eq!(hidden.reason, "ServiceUserCannotSeeJobs");
    assert!(
        hidden
            .message
            .contains("sacctmgr modify user carol set AdminLevel=Operator"),
        "{}",
        hidden.message
    );

    scope
        .allocation(&client, "tenant", json!({"cpus": 1}))
        .await;
    let waiting = wait_alloc(&client, &scope, "tenant", &ctl, "held back", |a| {
        a.status
            .as_ref()
            .and_then(|s| s.message.as_deref())
            .is_some_and(|m| m.contains("cannot see jobs of alice"))
    })
    .await;
    let st = waiting.status.unwrap();
    assert_eq!(st.phase, AllocationPhase::Pending);
    assert!(st.slurm.is_none(), "{st:?}");
    // As the operator sees it: no job of the allocation, and the probe was cancelled.
    let rest = slurm_client(&slurm, None);
    let name = format!("slurmlab-{}-tenant", scope.ns);
    assert!(rest.find_jobs(&name).await.unwrap().is_empty());
    let probes: Vec<_> = rest
        .find_jobs(&format!("slurmlab-visibility-probe-{}", scope.cluster))
        .await
        .unwrap()
        .into_iter()
        .filter(|j| !j.state.is_finished())
        .collect();
    assert!(probes.is_empty(), "probe jobs left: {probes:?}");

    // The admin switches to an operator: the same allocation goes through.
    clusters
        .patch(
            &scope.cluster,
            &PatchParams::default(),
            &Patch::Merge(map_with_service_user(&slurm.user)),
        )
        .await
        .unwrap();
    let shown = visible("True").await.expect("JobsVisible=True");
    assert!(shown.message.contains(&slurm.user), "{}", shown.message);
    let ready = wait_alloc(&client, &scope, "tenant", &ctl, "Ready", |a| {
        phase(a) == AllocationPhase::Ready
    })
    .await;
    assert_eq!(
        ready.status.as_ref().and_then(|s| s.slurm_user()),
        Some("alice")
    );
    scope.cleanup(&client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_job_of_a_live_allocation_is_cancelled_as_a_stray() {
    let env = Env::load();
    let client = env.client(User::Admin).await;
    common::install_crds(&client).await;
    let slurm = env.slurm_cluster("trixie");
    let scope = Scope::create(&client, &slurm, "ctl-stray").await;
    let ctl = ControllerProcess::start(&env, &scope, &[("SLURMLAB_STRAY_GRACE_SECONDS", "5")]);
    scope
        .allocation(&client, "keeper", json!({"cpus": 1, "timeLimit": "20m"}))
        .await;
    let alloc = wait_alloc(&client, &scope, "keeper", &ctl, "Ready", |a| {
        phase(a) == AllocationPhase::Ready
    })
    .await;
    let current = job_id(&alloc);
    let cluster_uid = Api::<SlurmCluster>::all(client.clone())
        .get(&scope.cluster)
        .await
        .unwrap()
        .metadata
        .uid
        .unwrap();

    // A job this controller signed for the allocation but does not know of, as a second
    // submission in a failure window (an old leader's, a retried submit) would be: the
    // same owner and attempt under another nonce, run by the allocation's SLURM user.
    let key = slurmlab::controller::tag_key::load_or_create(
        client.clone(),
        &scope.ns,
        "slurmlab-job-tag-key",
    )
    .await
    .unwrap();
    let owner = slurmlab::controller::identity::JobOwner {
        namespace: scope.ns.clone(),
        name: "keeper".into(),
        uid: alloc.metadata.uid.clone().unwrap(),
        attempt: 0,
        cluster_uid,
        nonce: "0123456789abcdef".into(),
    };
    let raw = RawSlurm::as_user(&slurm, slurm.newest_version(), &slurm.user);
    let vars = vec![
        "PATH=/usr/bin:/bin".to_owned(),
        format!("HOME=/home/{}", slurm.user),
    ];
    let stray = raw
        .submit_with(
            &owner.job_name(),
            "#!/bin/sh\nsleep 600\n",
            &vars,
            json!({"comment": owner.comment(&key)}),
        )
        .await;
    assert_ne!(stray, current);

    // The sweep (every 10 s here) cancels it once past its grace; the current job and the
    // allocation are untouched.
    let rest = slurm_client(&slurm, None);
    assert!(
        cancelled_within(&rest, stray, Duration::from_secs(90)).await,
        "stray job {stray} was not cancelled:\n{}",
        ctl.log_tail()
    );
    assert_eq!(
        rest.job(current).await.unwrap().state.base,
        BaseState::Running
    );
    let now = scope.allocations(&client).get("keeper").await.unwrap();
    assert_eq!(phase(&now), AllocationPhase::Ready);
    assert_eq!(job_id(&now), current);
    let out = scope.describe(&env, "computeallocation", "keeper");
    assert!(
        out.contains("StrayJobCancelled") && out.contains(&stray.to_string()),
        "{out}"
    );
    let text = ctl.metrics().await;
    let swept = |reason: &str| {
        metric_sum(
            &text,
            "slurmlab_swept_jobs_total",
            &[&format!("reason=\"{reason}\"")],
        )
    };
    assert_eq!((swept("stray"), swept("orphan")), (1.0, 0.0), "{text}");
    scope.cleanup(&client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_allocations_gets_exactly_its_quota_even_with_the_controller_killed() {
    let env = Env::load();
    let client = env.client(User::Admin).await;
    common::install_crds(&client).await;
    let slurm = env.slurm_cluster("trixie");
    let scope = Scope::create(&client, &slurm, "ctl-quota").await;
    Api::<SlurmCluster>::all(client.clone())
        .patch(
            &scope.cluster,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"limits": {"maxAllocationsPerNamespace": 3}}})),
        )
        .await
        .unwrap();
    let mut ctl = ControllerProcess::start(&env, &scope, &[]);
    // Seven at once (as one multi-document `kubectl apply` makes them), and the controller
    // SIGKILLed twice while it reconciles them.
    futures::future::join_all((0..7).map(|i| {
        let (client, scope) = (&client, &scope);
        async move {
            scope
                .allocation(
                    client,
                    &format!("burst-{i}"),
                    json!({"cpus": 1, "timeLimit": "10m"}),
                )
                .await
        }
    }))
    .await;
    for pause in [1500, 2500] {
        tokio::time::sleep(Duration::from_millis(pause)).await;
        ctl.kill();
        ctl = ControllerProcess::start(&env, &scope, &[]);
    }
    let rest = slurm_client(&slurm, None);
    let jobs_in_slurm = || async {
        rest.find_jobs(&format!("slurmlab-{}-burst-", scope.ns))
            .await
            .unwrap()
            .into_iter()
            .filter(|j| !j.state.is_finished())
            .count()
    };
    let settled = |jobs: usize, waiting: usize| {
        let (client, scope) = (&client, &scope);
        async move {
            common::wait_until_ok(Duration::from_secs(90), || async {
                let all = scope
                    .allocations(client)
                    .list(&Default::default())
                    .await
                    .ok()?;
                let with_job = all
                    .items
                    .iter()
                    .filter(|a| a.status.as_ref().and_then(|s| s.job_id()).is_some());
                let over = all.items.iter().filter(|a| {
                    a.status.as_ref().is_some_and(|s| {
                        s.conditions
                            .iter()
                            .any(|c| c.reason == "QuotaExceeded" && c.status == "False")
                    })
                });
                (with_job.count() == jobs && over.count() == waiting).then_some(())
            })
            .await
        }
    };
    assert!(
        settled(3, 4).await.is_some(),
        "not 3 jobs and 4 waiting:\n{}",
        ctl.log_tail()
    );
    // SLURM's own count agrees, and stays so.
    assert_eq!(jobs_in_slurm().await, 3);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(jobs_in_slurm().await, 3);
    // One ends: exactly one waiting allocation takes its place.
    let all = scope
        .allocations(&client)
        .list(&Default::default())
        .await
        .unwrap();
    let running = all
        .items
        .iter()
        .find(|a| a.status.as_ref().and_then(|s| s.job_id()).is_some())
        .unwrap()
        .metadata
        .name
        .clone()
        .unwrap();
    scope
        .allocations(&client)
        .delete(&running, &DeleteParams::default())
        .await
        .unwrap();
    assert!(
        settled(3, 3).await.is_some(),
        "not 3 jobs and 3 waiting after a deletion:\n{}",
        ctl.log_tail()
    );
    assert_eq!(jobs_in_slurm().await, 3);
    scope.cleanup(&client).await;
}
