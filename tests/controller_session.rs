//! JupyterSessions against the real stack: kernels started on Jupyter servers inside
//! SLURM jobs, notebooks created, forked and restored, capacity, idle culling, loss, and
//! cleanup.

mod common;

use std::time::Duration;

use common::controller::{
    ControllerProcess, Scope, create_session, session_phase as phase, wait_session,
};
use common::{Env, User, slurm_client};
use kube::Client;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;
use slurmlab::api::{AllocationPhase, ComputeAllocation, JupyterSession, SessionPhase};
use slurmlab::jupyter::{JupyterServer, KernelChannel, Output, notebook};
use slurmlab::slurm::{BaseState, SlurmApi};

const TIMEOUT: Duration = Duration::from_secs(120);

async fn ready_allocation(
    client: &Client,
    scope: &Scope,
    ctl: &ControllerProcess,
    name: &str,
    spec: serde_json::Value,
) -> ComputeAllocation {
    scope.allocation(client, name, spec).await;
    let api = scope.allocations(client);
    let found = common::wait_until_ok(TIMEOUT, || async {
        api.get(name).await.ok().filter(|a| {
            a.status
                .as_ref()
                .is_some_and(|s| s.phase == AllocationPhase::Ready)
        })
    })
    .await;
    found.unwrap_or_else(|| panic!("allocation {name} never Ready:\n{}", ctl.log_tail()))
}

async fn run(server: &JupyterServer, kernel: &str, code: &str) -> Vec<Output> {
    let mut channel = KernelChannel::connect(server, kernel, None).await.unwrap();
    channel
        .execute(code, Duration::from_secs(60))
        .await
        .unwrap()
        .outputs
}

#[tokio::test]
async fn new_sessions_get_kernels_and_notebooks_within_capacity() {
    let env = Env::load();
    let client = env.client(User::Admin).await;
    common::install_crds(&client).await;
    let scope = Scope::create(&client, &env.slurm_cluster("trixie"), "sess-new").await;
    let ctl = ControllerProcess::start(&env, &scope, &[]);
    let alloc = ready_allocation(
        &client,
        &scope,
        &ctl,
        "box",
        json!({"cpus": 1, "maxSessions": 2}),
    )
    .await;
    let server = common::controller::allocation_server(&client, &alloc).await;
    create_session(
        &client,
        &scope,
        "s1",
        json!({"allocationRef": "box", "notebook": {"path": "exp/run.ipynb"}}),
    )
    .await;
    let s1 = wait_session(&client, &scope, "s1", &ctl, "Ready", |s| {
        phase(s) == SessionPhase::Ready
    })
    .await;
    let st = s1.status.clone().unwrap();
    assert_eq!(st.notebook_path.as_deref(), Some("exp/run.ipynb"));
    assert_eq!(st.allocation.as_deref(), Some("box"));
    assert!(st.node.is_some() && st.endpoint.is_some() && st.token_secret.is_some());
    let kernel = st.kernel_id.clone().unwrap();
    assert!(
        server.kernel(&kernel).await.unwrap().is_some(),
        "the kernel exists on the server"
    );
    let nb = server.get("exp/run.ipynb", true).await.unwrap();
    assert_eq!(nb.kind, "notebook");

    // The same path again: a new name, nothing overwritten.
    create_session(
        &client,
        &scope,
        "s2",
        json!({"allocationRef": "box", "notebook": {"path": "exp/run.ipynb"}}),
    )
    .await;
    let s2 = wait_session(&client, &scope, "s2", &ctl, "Ready", |s| {
        phase(s) == SessionPhase::Ready
    })
    .await;
    assert_eq!(
        s2.status.unwrap().notebook_path.as_deref(),
        Some("exp/run-1.ipynb")
    );
    // Full: the third waits, saying why.
    create_session(&client, &scope, "s3", json!({"allocationRef": "box"})).await;
    let s3 = wait_session(&client, &scope, "s3", &ctl, "Pending (full)", |s| {
        s.status.as_ref().is_some_and(|st| {
            st.message
                .as_deref()
                .is_some_and(|m| m.contains("maxSessions"))
        })
    })
    .await;
    assert_eq!(phase(&s3), SessionPhase::Pending);
    let counted = common::wait_until_ok(TIMEOUT, || async {
        scope
            .allocations(&client)
            .get("box")
            .await
            .ok()
            .filter(|a| a.status.as_ref().is_some_and(|s| s.sessions == 2))
    })
    .await;
    assert!(counted.is_some(), "the allocation counts its two sessions");
    let (ok, out, err) = env.kubectl(User::Admin, &["get", "jupytersessions", "-n", &scope.ns]);
    assert!(ok, "{err}");
    let line = out
        .lines()
        .find(|l| l.starts_with("s1"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        line.contains("Ready") && line.contains("box") && line.contains("exp/run.ipynb"),
        "{line}"
    );

    // Deleting a session shuts its kernel down and frees its place.
    Api::<JupyterSession>::namespaced(client.clone(), &scope.ns)
        .delete("s1", &DeleteParams::default())
        .await
        .unwrap();
    common::wait_until(TIMEOUT, "the kernel to be shut down", || async {
        server
            .kernel(&kernel)
            .await
            .ok()
            .flatten()
            .is_none()
            .then_some(())
    })
    .await;
    wait_session(
        &client,
        &scope,
        "s3",
        &ctl,
        "Ready once a place is free",
        |s| phase(s) == SessionPhase::Ready,
    )
    .await;
    scope.cleanup(&client).await;
}

#[tokio::test]
async fn resume_restores_state_and_continue_forks_with_a_fresh_kernel() {
    let env = Env::load();
    let client = env.client(User::Admin).await;
    common::install_crds(&client).await;
    let scope = Scope::create(&client, &env.slurm_cluster("sid"), "sess-resume").await;
    let ctl = ControllerProcess::start(&env, &scope, &[]);
    let alloc = ready_allocation(&client, &scope, &ctl, "box", json!({"cpus": 1})).await;
    let server = common::controller::allocation_server(&client, &alloc).await;
    let mut nb = notebook::new_notebook("python3", "Python 3", "python");
    for code in [
        "x = 41",
        "y = x + 1",
        "raise ValueError('expected')",
        "z = y * 2",
    ] {
        notebook::append_code(&mut nb, code, &[], None, serde_json::Value::Null).unwrap();
    }
    notebook::append_markdown(&mut nb, "# not executed");
    server
        .put_notebook("work/src.ipynb", &notebook::to_json(&nb).unwrap())
        .await
        .unwrap();

    create_session(
        &client,
        &scope,
        "resumed",
        json!({"allocationRef": "box", "notebook": {"mode": "Resume", "source": "work/src.ipynb"}}),
    )
    .await;
    let s = wait_session(&client, &scope, "resumed", &ctl, "Ready", |s| {
        phase(s) == SessionPhase::Ready
    })
    .await;
    let st = s.status.unwrap();
    let restore = st.restore.unwrap();
    assert_eq!((restore.executed, restore.total), (4, 4));
    assert_eq!(restore.errors.len(), 1);
    assert_eq!(
        (restore.errors[0].cell, restore.errors[0].ename.as_str()),
        (2, "ValueError")
    );
    assert_eq!(
        st.notebook_path.as_deref(),
        Some("work/src.ipynb"),
        "a resumed session keeps writing into its notebook"
    );
    let out = run(&server, st.kernel_id.as_deref().unwrap(), "(y, z)").await;
    assert!(
        matches!(&out[..], [Output::Result { data, .. }] if data["text/plain"] == "(42, 84)"),
        "{out:?}"
    );

    create_session(&client, &scope, "forked", json!({"allocationRef": "box", "notebook": {"mode": "Continue", "source": "work/src.ipynb"}})).await;
    let f = wait_session(&client, &scope, "forked", &ctl, "Ready", |s| {
        phase(s) == SessionPhase::Ready
    })
    .await;
    let st = f.status.unwrap();
    assert_eq!(
        st.notebook_path.as_deref(),
        Some("work/src_continued.ipynb")
    );
    let copy = notebook::from_json(
        &server
            .get("work/src_continued.ipynb", true)
            .await
            .unwrap()
            .content,
    )
    .unwrap();
    assert_eq!(notebook::code_cells(&copy), notebook::code_cells(&nb));
    let original =
        notebook::from_json(&server.get("work/src.ipynb", true).await.unwrap().content).unwrap();
    assert_eq!(
        original.cells.len(),
        nb.cells.len(),
        "the original is untouched"
    );
    let out = run(&server, st.kernel_id.as_deref().unwrap(), "x").await;
    assert!(
        matches!(&out[..], [Output::Error { ename, .. }] if ename == "NameError"),
        "a fresh kernel: {out:?}"
    );

    // Resume without a source is refused by the API server (a CEL rule), naming the field.
    let nosource: JupyterSession = serde_json::from_value(json!({
        "apiVersion": "slurmlab.io/v1alpha1", "kind": "JupyterSession",
        "metadata": {"name": "nosource", "namespace": scope.ns},
        "spec": {"allocationRef": "box", "notebook": {"mode": "Resume"}}
    }))
    .unwrap();
    let refused = Api::<JupyterSession>::namespaced(client.clone(), &scope.ns)
        .create(&PostParams::default(), &nosource)
        .await
        .expect_err("the API server refuses it");
    let msg = refused.to_string();
    assert!(
        msg.contains("spec.notebook.source") && msg.contains("required for mode Resume"),
        "{msg}"
    );
    scope.cleanup(&client).await;
}

#[tokio::test]
async fn a_template_session_owns_its_allocation_and_takes_it_along() {
    let env = Env::load();
    let client = env.client(User::Admin).await;
    common::install_crds(&client).await;
    let slurm = env.slurm_cluster("trixie");
    let scope = Scope::create(&client, &slurm, "sess-template").await;
    let ctl = ControllerProcess::start(&env, &scope, &[]);
    create_session(
        &client,
        &scope,
        "solo",
        json!({"allocationTemplate": {"clusterRef": scope.cluster, "cpus": 1}}),
    )
    .await;
    let s = wait_session(&client, &scope, "solo", &ctl, "Ready", |s| {
        phase(s) == SessionPhase::Ready
    })
    .await;
    assert_eq!(s.status.unwrap().allocation.as_deref(), Some("solo-alloc"));
    let alloc = scope.allocations(&client).get("solo-alloc").await.unwrap();
    let owner = &alloc.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("JupyterSession", "solo")
    );
    let job = alloc.status.unwrap().slurm.unwrap().job_id.unwrap() as u64;

    Api::<JupyterSession>::namespaced(client.clone(), &scope.ns)
        .delete("solo", &DeleteParams::default())
        .await
        .unwrap();
    common::wait_until(TIMEOUT, "the owned allocation to be collected", || async {
        scope
            .allocations(&client)
            .get_opt("solo-alloc")
            .await
            .ok()
            .flatten()
            .is_none()
            .then_some(())
    })
    .await;
    let rest = slurm_client(&slurm, None);
    let state = common::wait_until(
        Duration::from_secs(30),
        "the job to be cancelled",
        || async {
            rest.job(job)
                .await
                .ok()
                .filter(|j| j.state.base == BaseState::Cancelled)
        },
    )
    .await;
    assert!(state.state.is_finished() || state.state.base == BaseState::Cancelled);
    scope.cleanup(&client).await;
}

#[tokio::test]
async fn idle_kernels_are_culled_and_ended_allocations_lose_their_sessions() {
    let env = Env::load();
    let client = env.client(User::Admin).await;
    common::install_crds(&client).await;
    let slurm = env.slurm_cluster("sid");
    let scope = Scope::create(&client, &slurm, "sess-idle").await;
    let ctl = ControllerProcess::start(&env, &scope, &[]);
    let alloc = ready_allocation(&client, &scope, &ctl, "box", json!({"cpus": 1})).await;
    let server = common::controller::allocation_server(&client, &alloc).await;
    create_session(
        &client,
        &scope,
        "sleepy",
        json!({"allocationRef": "box", "idleTimeout": "5s"}),
    )
    .await;
    create_session(&client, &scope, "doomed", json!({"allocationRef": "box"})).await;
    let sleepy = wait_session(&client, &scope, "sleepy", &ctl, "Ready", |s| {
        phase(s) == SessionPhase::Ready
    })
    .await;
    let kernel = sleepy.status.unwrap().kernel_id.unwrap();
    let culled = wait_session(&client, &scope, "sleepy", &ctl, "Terminated", |s| {
        phase(s) == SessionPhase::Terminated
    })
    .await;
    assert!(
        culled
            .status
            .unwrap()
            .message
            .unwrap_or_default()
            .contains("idleTimeout")
    );
    assert!(
        server.kernel(&kernel).await.unwrap().is_none(),
        "the idle kernel was shut down"
    );
    let (_, out, _) = env.kubectl(
        User::Admin,
        &["describe", "jupytersession", "sleepy", "-n", &scope.ns],
    );
    assert!(out.contains("Terminated"), "{out}");

    wait_session(&client, &scope, "doomed", &ctl, "Ready", |s| {
        phase(s) == SessionPhase::Ready
    })
    .await;
    let job = alloc.status.unwrap().slurm.unwrap().job_id.unwrap() as u64;
    slurm_client(&slurm, None)
        .cancel(&slurm.user, job)
        .await
        .unwrap();
    let lost = wait_session(&client, &scope, "doomed", &ctl, "Lost", |s| {
        phase(s) == SessionPhase::Lost
    })
    .await;
    let message = lost.status.unwrap().message.unwrap_or_default();
    assert!(message.contains("allocation box"), "{message}");
    scope.cleanup(&client).await;
}

#[tokio::test]
async fn a_restarted_allocation_gets_its_sessions_restored_by_replay() {
    let env = Env::load();
    let client = env.client(User::Admin).await;
    common::install_crds(&client).await;
    let slurm = env.slurm_cluster("trixie");
    let scope = Scope::create(&client, &slurm, "sess-restart").await;
    let ctl = ControllerProcess::start(&env, &scope, &[]);
    let alloc = ready_allocation(
        &client,
        &scope,
        &ctl,
        "box",
        json!({"cpus": 1, "restartPolicy": "OnFailure"}),
    )
    .await;
    let server = common::controller::allocation_server(&client, &alloc).await;
    create_session(
        &client,
        &scope,
        "keeper",
        json!({"allocationRef": "box", "notebook": {"path": "keep.ipynb"}}),
    )
    .await;
    let s = wait_session(&client, &scope, "keeper", &ctl, "Ready", |s| {
        phase(s) == SessionPhase::Ready
    })
    .await;
    let first_kernel = s.status.unwrap().kernel_id.unwrap();
    // What the gateway does: executed cells go into the session's notebook.
    let mut nb =
        notebook::from_json(&server.get("keep.ipynb", true).await.unwrap().content).unwrap();
    notebook::append_code(
        &mut nb,
        "answer = 6 * 7",
        &[],
        Some(1),
        serde_json::Value::Null,
    )
    .unwrap();
    server
        .put_notebook("keep.ipynb", &notebook::to_json(&nb).unwrap())
        .await
        .unwrap();

    let job = alloc.status.unwrap().slurm.unwrap().job_id.unwrap() as u64;
    slurm_client(&slurm, None)
        .cancel(&slurm.user, job)
        .await
        .unwrap();
    let restored = wait_session(
        &client,
        &scope,
        "keeper",
        &ctl,
        "restored on the new job",
        |s| {
            phase(s) == SessionPhase::Ready
                && s.status.as_ref().and_then(|st| st.kernel_id.as_deref())
                    != Some(first_kernel.as_str())
        },
    )
    .await;
    let st = restored.status.unwrap();
    assert!(
        st.message
            .unwrap_or_default()
            .contains("restored on the restarted allocation")
    );
    assert_eq!(st.restore.map(|r| (r.executed, r.total)), Some((1, 1)));
    let alloc = scope.allocations(&client).get("box").await.unwrap();
    assert_eq!(alloc.status.as_ref().map(|s| s.restarts), Some(1));
    let server = common::controller::allocation_server(&client, &alloc).await;
    let out = run(&server, st.kernel_id.as_deref().unwrap(), "answer").await;
    assert!(
        matches!(&out[..], [Output::Result { data, .. }] if data["text/plain"] == "42"),
        "{out:?}"
    );
    scope.cleanup(&client).await;
}

/// A reader of a notebook while it is being saved (a Resume, JupyterLab, read_notebook
/// beside the gateway's recording) gets the old notebook or the new one, never half of one:
/// the allocation's Jupyter server replaces files atomically (Jupyter's own "atomic"
/// writing rewrites them in place, and its recovery from a torn read puts a copy back over
/// the file being written).
#[tokio::test]
async fn a_notebook_being_saved_is_never_read_half_written() {
    let env = Env::load();
    let client = env.client(User::Admin).await;
    common::install_crds(&client).await;
    let slurm = env.slurm_cluster("trixie");
    let scope = Scope::create(&client, &slurm, "sess-atomic").await;
    let ctl = ControllerProcess::start(&env, &scope, &[]);
    let alloc = ready_allocation(&client, &scope, &ctl, "box", json!({"cpus": 1})).await;
    let server = common::controller::allocation_server(&client, &alloc).await;
    let mut nb = notebook::new_notebook("python3", "Python 3", "python");
    for i in 0..20 {
        let out = [Output::Stream {
            name: "stdout".into(),
            text: format!("{i}\n{}", "y".repeat(100_000)),
        }];
        notebook::append_code(&mut nb, &format!("x = {i}"), &out, Some(i), json!({})).unwrap();
    }
    let doc = notebook::to_json(&nb).unwrap();
    server.put_notebook("big.ipynb", &doc).await.unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (server, stop) = (server.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut reads, mut torn) = (0, vec![]);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match server.get("big.ipynb", true).await {
                    Ok(m) if m.content["cells"].as_array().map(Vec::len) == Some(20) => reads += 1,
                    Ok(m) => torn.push(format!("{:.200}", m.content.to_string())),
                    Err(e) => torn.push(e.to_string()),
                }
            }
            (reads, torn)
        })
    };
    for _ in 0..30 {
        server.put_notebook("big.ipynb", &doc).await.unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (reads, torn) = reader.await.unwrap();
    assert!(
        torn.is_empty(),
        "{} of {} reads torn: {torn:?}",
        torn.len(),
        reads + torn.len()
    );
    assert!(reads > 0, "no read overlapped the saves");
    // Jupyter's recovery from a torn read leaves a `big-invalid.ipynb` beside it.
    let names: Vec<String> = server
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert_eq!(names, ["big.ipynb"], "{names:?}");
    scope.cleanup(&client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_cut_short_by_a_controller_kill_runs_again_whole() {
    let env = Env::load();
    let client = env.client(User::Admin).await;
    common::install_crds(&client).await;
    let scope = Scope::create(&client, &env.slurm_cluster("sid"), "sess-cut").await;
    let mut ctl = ControllerProcess::start(&env, &scope, &[]);
    let alloc = ready_allocation(&client, &scope, &ctl, "box", json!({"cpus": 1})).await;
    let server = common::controller::allocation_server(&client, &alloc).await;
    // Eight cells: a counter, then seven slow increments. A replay run partly twice
    // would count more than seven; one left half done, fewer.
    let mut nb = notebook::new_notebook("python3", "Python 3", "python");
    notebook::append_code(&mut nb, "n = 0", &[], None, serde_json::Value::Null).unwrap();
    for _ in 0..7 {
        let code = "import time\ntime.sleep(1)\nn += 1";
        notebook::append_code(&mut nb, code, &[], None, serde_json::Value::Null).unwrap();
    }
    server
        .put_notebook("cut.ipynb", &notebook::to_json(&nb).unwrap())
        .await
        .unwrap();
    create_session(
        &client,
        &scope,
        "cut",
        json!({"allocationRef": "box", "notebook": {"mode": "Resume", "source": "cut.ipynb"}}),
    )
    .await;
    // SIGKILL a few cells into the replay (the kernel goes on with the cell it runs).
    wait_session(&client, &scope, "cut", &ctl, "Restoring, 2 cells in", |s| {
        s.status.as_ref().is_some_and(|st| {
            st.phase == SessionPhase::Restoring
                && st.restore.as_ref().is_some_and(|r| r.executed >= 2)
        })
    })
    .await;
    ctl.kill();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ctl = ControllerProcess::start(&env, &scope, &[]);
    let s = wait_session(&client, &scope, "cut", &ctl, "Ready", |s| {
        phase(s) == SessionPhase::Ready
    })
    .await;
    let st = s.status.unwrap();
    let restore = st.restore.unwrap();
    assert_eq!((restore.executed, restore.total), (8, 8), "{restore:?}");
    let out = run(&server, st.kernel_id.as_deref().unwrap(), "n").await;
    assert!(
        matches!(&out[..], [Output::Result { data, .. }] if data["text/plain"] == "7"),
        "the replay ran whole, once: {out:?}"
    );
    scope.cleanup(&client).await;
}
