//! One object nobody can decode must not stop anyone else. Objects of each kind are
//! written that the controller and the gateway cannot read (a field beyond what the code
//! holds, a field of another type — what an older or newer schema, or a hand edit,
//! leaves behind), through CRD schemas loosened for a moment; then the rest of the
//! system must keep working and the bad objects be reported, once, naming the field.
//!
//! This binary runs alone: while the schemas are loosened nothing else may rely on the
//! API server refusing such objects.

mod common;

use std::time::Duration;

use common::controller::{
    ControllerProcess, Scope, create_session, job_id, metric_sum, phase, session_phase, wait_alloc,
    wait_session,
};
use common::gateway::{GatewayProcess, Mcp, grant_sessions, text, user_token};
use common::{Env, User};
use k8s_openapi::api::core::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::DeserializeGuard;
use kube::discovery::ApiResource;
use serde_json::{Value, json};
use slurmlab::api::{
    AllocationPhase, ComputeAllocation, JupyterSession, SessionPhase, SlurmCluster,
};

/// A value no i32 holds.
const TOO_BIG: i64 = 99_999_999_999;
/// Written into a bad object's environment: it must never appear in a log.
const PRIVATE_VALUE: &str = "do-not-log-7f3a91";

/// The generated CRDs with some fields' schemas replaced, applied by the same field
/// manager as `install_crds`, so applying the generated ones again restores them whole.
/// Dropping it restores them too (also when the test fails).
struct LoosenedCrds {
    restored: bool,
}

impl LoosenedCrds {
    async fn apply(client: &kube::Client) -> Self {
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        let loosen: [(&str, &[&str], Value); 3] = [
            (
                "computeallocations.slurmlab.io",
                &["spec", "cpus"],
                json!({"type": "integer"}),
            ),
            (
                "jupytersessions.slurmlab.io",
                &["spec", "kernel"],
                json!({"x-kubernetes-int-or-string": true}),
            ),
            (
                "slurmclusters.slurmlab.io",
                &["spec", "limits", "maxAllocationsPerNamespace"],
                json!({"type": "integer"}),
            ),
        ];
        for crd in slurmlab::api::all_crds() {
            let name = crd.metadata.name.clone().unwrap();
            let Some((_, path, schema)) = loosen.iter().find(|(n, _, _)| *n == name) else {
                continue;
            };
            let mut crd = serde_json::to_value(&crd).unwrap();
            let mut at = &mut crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
            for field in *path {
                at = &mut at["properties"][*field];
            }
            assert!(at.is_object(), "{name}: no schema at {path:?}");
            *at = schema.clone();
            crds.patch(
                &name,
                &PatchParams::apply("slurmlab-tests").force(),
                &Patch::Apply(&crd),
            )
            .await
            .unwrap_or_else(|e| panic!("loosening {name}: {e}"));
        }
        // The API server takes a moment to serve a changed schema.
        tokio::time::sleep(Duration::from_secs(2)).await;
        Self { restored: false }
    }

    async fn restore(mut self, client: &kube::Client) {
        common::install_crds(client).await;
        self.restored = true;
    }
}

impl Drop for LoosenedCrds {
    fn drop(&mut self) {
        if !self.restored {
            let dir = common::repo_path("crds");
            let (ok, _, err) = Env::load().kubectl(
                User::Admin,
                &[
                    "apply",
                    "--server-side",
                    "--force-conflicts",
                    "--field-manager=slurmlab-tests",
                    "-k",
                    dir.to_str().unwrap(),
                ],
            );
            assert!(ok || std::thread::panicking(), "restoring the CRDs: {err}");
        }
    }
}

/// Creates any object of ours as untyped JSON (the typed structs cannot hold the bad
/// values).
async fn create_raw(client: &kube::Client, ns: Option<&str>, plural: &str, kind: &str, obj: Value) {
    let resource = ApiResource {
        group: "slurmlab.io".into(),
        version: "v1alpha1".into(),
        api_version: "slurmlab.io/v1alpha1".into(),
        kind: kind.into(),
        plural: plural.into(),
    };
    let api: Api<DynamicObject> = match ns {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    let obj: DynamicObject = serde_json::from_value(obj).unwrap();
    api.create(&PostParams::default(), &obj)
        .await
        .unwrap_or_else(|e| panic!("creating {kind}: {e}"));
}

/// The (reason, message) of every event about the object named `name` in `ns`.
async fn events_about(client: &kube::Client, ns: &str, name: &str) -> Vec<(String, String)> {
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    let lp = ListParams::default().fields(&format!("involvedObject.name={name}"));
    api.list(&lp)
        .await
        .map(|l| {
            l.items
                .into_iter()
                .map(|e| (e.reason.unwrap_or_default(), e.message.unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default()
}

/// Waits for an event with `reason` about `name` whose message contains `needle`.
async fn wait_event(
    client: &kube::Client,
    ns: &str,
    name: &str,
    reason: &str,
    needle: &str,
    log: impl Fn() -> String,
) -> String {
    common::wait_until_ok(Duration::from_secs(60), || async {
        events_about(client, ns, name)
            .await
            .into_iter()
            .find(|(r, m)| r == reason && m.contains(needle))
            .map(|(_, m)| m)
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "no {reason} event naming {needle:?} about {ns}/{name}: {:?}\n{}",
            futures::executor::block_on(events_about(client, ns, name)),
            log()
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_nobody_can_decode_are_reported_and_everything_else_keeps_working() {
    let env = Env::load();
    let admin = env.client(User::Admin).await;
    common::install_crds(&admin).await;
    let scope = Scope::create(&admin, &env.slurm_cluster("trixie"), "bad-objects").await;
    grant_sessions(&admin, &scope.ns, "alice").await;
    let ctl = ControllerProcess::start(&env, &scope, &[]);
    let gw = GatewayProcess::start(&env, &scope, &["--sync-timeout-seconds", "20"]).await;
    let ns = scope.ns.clone();
    // The typed API cannot read the bad objects back: they are written and deleted
    // through guarded ones.
    let allocs: Api<DeserializeGuard<ComputeAllocation>> = Api::namespaced(admin.clone(), &ns);

    // One allocation gets its job and finalizer first; it turns unreadable later.
    scope.allocation(&admin, "flip", json!({})).await;
    let flip = wait_alloc(&admin, &scope, "flip", &ctl, "Ready", |a| {
        phase(a) == AllocationPhase::Ready
    })
    .await;
    let flip_job = job_id(&flip);

    let loosened = LoosenedCrds::apply(&admin).await;
    create_raw(
        &admin,
        Some(&ns),
        "computeallocations",
        "ComputeAllocation",
        json!({
            "apiVersion": "slurmlab.io/v1alpha1", "kind": "ComputeAllocation",
            "metadata": {"name": "bad", "namespace": ns},
            "spec": {"clusterRef": scope.cluster, "cpus": TOO_BIG,
                     "environment": {"API_KEY": PRIVATE_VALUE}},
        }),
    )
    .await;
    allocs
        .patch(
            "flip",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"cpus": TOO_BIG}})),
        )
        .await
        .unwrap();
    create_raw(
        &admin,
        Some(&ns),
        "jupytersessions",
        "JupyterSession",
        json!({
            "apiVersion": "slurmlab.io/v1alpha1", "kind": "JupyterSession",
            "metadata": {"name": "bad-s", "namespace": ns},
            "spec": {"allocationRef": "good", "kernel": 12345},
        }),
    )
    .await;
    let bad_cluster = format!("{}-bad", scope.cluster);
    let mut cluster_spec = serde_json::to_value(
        Api::<SlurmCluster>::all(admin.clone())
            .get(&scope.cluster)
            .await
            .unwrap()
            .spec,
    )
    .unwrap();
    cluster_spec["limits"]["maxAllocationsPerNamespace"] = json!(TOO_BIG);
    create_raw(
        &admin,
        None,
        "slurmclusters",
        "SlurmCluster",
        json!({
            "apiVersion": "slurmlab.io/v1alpha1", "kind": "SlurmCluster",
            "metadata": {"name": bad_cluster, "labels": {"slurmlab.io/test": scope.id}},
            "spec": cluster_spec,
        }),
    )
    .await;
    // The strict schemas are back; what was stored under the loose ones stays.
    loosened.restore(&admin).await;

    // Everything else goes on: a new allocation and a session on it become Ready...
    scope.allocation(&admin, "good", json!({})).await;
    create_session(
        &admin,
        &scope,
        "good-s",
        json!({"allocationRef": "good", "notebook": {"mode": "New"}}),
    )
    .await;
    wait_session(&admin, &scope, "good-s", &ctl, "Ready", |s| {
        session_phase(s) == SessionPhase::Ready
    })
    .await;
    // ... and an agent lists, starts and runs code in the same namespace.
    let alice = Mcp::http(&gw.url, Some(&user_token(&env, "alice")))
        .await
        .unwrap();
    let listed = alice.ok("list_allocations", json!({})).await;
    let entries = listed["allocations"].as_array().unwrap();
    let entry = |name: &str| {
        entries
            .iter()
            .find(|a| a["allocation"] == format!("{ns}/{name}"))
            .unwrap_or_else(|| panic!("{name} not listed: {listed}"))
    };
    assert_eq!(entry("good")["phase"], "Ready", "{listed}");
    assert_eq!(entry("bad")["phase"], "Unreadable", "{listed}");
    assert_eq!(entry("flip")["phase"], "Unreadable", "{listed}");
    let listed_sessions = alice.ok("list_sessions", json!({})).await;
    assert!(
        listed_sessions["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["session_id"] == format!("{ns}/bad-s") && s["phase"] == "Unreadable"),
        "{listed_sessions}"
    );
    let started = alice
        .ok(
            "start_new_session",
            json!({"experiment_name": "still works"}),
        )
        .await;
    let two = alice
        .call(
            "execute_code",
            json!({"session_id": started["session_id"], "code": "1 + 1"}),
        )
        .await;
    assert_eq!(text(&two), "2\n");

    // Each bad object is reported on itself, naming the field; nothing is submitted for
    // the one that never decoded.
    let log = || ctl.log_tail();
    let m = wait_event(&admin, &ns, "bad", "InvalidObject", "spec.cpus", log).await;
    assert!(m.contains("99999999999") && m.contains("i32"), "{m}");
    wait_event(&admin, &ns, "flip", "InvalidObject", "spec.cpus", log).await;
    wait_event(&admin, &ns, "bad-s", "InvalidObject", "spec.kernel", log).await;
    wait_event(
        &admin,
        "kube-system",
        &bad_cluster,
        "InvalidObject",
        "spec.limits.maxAllocationsPerNamespace",
        log,
    )
    .await;
    assert!(
        scope
            .slurm
            .live_jobs(&format!("slurmlab-{ns}-bad"))
            .is_empty(),
        "a job was submitted for an allocation nobody can read"
    );
    // The unreadable allocation keeps its job: which job is current cannot be read, so
    // neither the allocation nor the sweep touches it.
    assert_eq!(
        scope.slurm.live_jobs(&format!("slurmlab-{ns}-flip")),
        vec![flip_job.to_string()]
    );
    let gauge = |kind: &'static str| {
        let ctl = &ctl;
        async move {
            metric_sum(
                &ctl.metrics().await,
                "slurmlab_invalid_objects",
                &[&format!("kind=\"{kind}\"")],
            )
        }
    };
    common::wait_until_ok(Duration::from_secs(40), || async {
        (gauge("ComputeAllocation").await == 2.0
            && gauge("JupyterSession").await == 1.0
            && gauge("SlurmCluster").await == 1.0)
            .then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("gauges: {}", futures::executor::block_on(ctl.metrics())));

    // A fixed object is taken up again: the session starts on the good allocation, which
    // counts both its sessions.
    Api::<DeserializeGuard<JupyterSession>>::namespaced(admin.clone(), &ns)
        .patch(
            "bad-s",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"kernel": "python3"}})),
        )
        .await
        .unwrap();
    wait_session(&admin, &scope, "bad-s", &ctl, "Ready once fixed", |s| {
        session_phase(s) == SessionPhase::Ready
    })
    .await;
    wait_alloc(&admin, &scope, "good", &ctl, "counting 2 sessions", |a| {
        a.status.as_ref().is_some_and(|s| s.sessions == 2)
    })
    .await;

    // Deleting an unreadable allocation releases it, and the sweep cancels its job.
    allocs
        .delete("flip", &DeleteParams::default())
        .await
        .unwrap();
    common::wait_until_ok(Duration::from_secs(30), || async {
        allocs
            .get_opt("flip")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("flip was not released:\n{}", ctl.log_tail()));
    wait_event(
        &admin,
        &ns,
        "flip",
        "InvalidObjectReleased",
        "orphan sweep",
        log,
    )
    .await;
    common::wait_until_ok(Duration::from_secs(60), || async {
        scope
            .slurm
            .live_jobs(&format!("slurmlab-{ns}-flip"))
            .is_empty()
            .then_some(())
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "job {flip_job} of the released allocation still runs:\n{}",
            ctl.log_tail()
        )
    });
    allocs
        .delete("bad", &DeleteParams::default())
        .await
        .unwrap();
    Api::<SlurmCluster>::all(admin.clone())
        .delete(&bad_cluster, &DeleteParams::default())
        .await
        .unwrap();

    // Reported once per version, never in a loop, and no object's contents in the log.
    let whole_log = std::fs::read_to_string(&ctl.log).unwrap();
    let reports = whole_log
        .lines()
        .filter(|l| l.contains("cannot decode"))
        .count();
    assert_eq!(reports, 4, "{whole_log}");
    assert!(
        !whole_log.contains(PRIVATE_VALUE),
        "a bad object's environment was logged"
    );
    assert!(
        !std::fs::read_to_string(&gw.log)
            .unwrap()
            .contains(PRIVATE_VALUE),
        "the gateway logged a bad object's environment"
    );

    scope.cleanup(&admin).await;
}
