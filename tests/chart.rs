//! The Helm chart through a real Helm engine (helm-python-sdk: Helm v4's Go SDK), installed
//! into the real API server, and its RBAC proven by running the real controller and gateway
//! under the chart's ServiceAccounts (tokens from the TokenRequest API) through a whole
//! agent session — and refused what they must not do.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::controller::{ControllerProcess, Scope};
use common::gateway::{GatewayProcess, Mcp, text, user_token};
use common::{Env, User};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, ServiceAccount};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::json;
use slurmlab::api::JupyterSession;

/// `python hack/chart.py <args>` with the host tools' Python (it has helm-python-sdk).
fn chart_py(env: &Env, args: &[&str]) -> (bool, String, String) {
    let python = PathBuf::from(env.get("KUBECTL")).with_file_name("python");
    let out = Command::new(python)
        .arg(common::repo_path("hack/chart.py"))
        .args(args)
        .output()
        .expect("running hack/chart.py");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_chart_lints_and_deploy_is_rendered_from_it() {
    let env = Env::load();
    let (ok, out, err) = chart_py(&env, &["lint"]);
    assert!(ok, "helm lint failed:\n{out}{err}");
    let (ok, _, err) = chart_py(&env, &["deploy", "--check"]);
    assert!(ok, "{err}");
}

/// A kubeconfig for a ServiceAccount token, next to the test logs.
fn token_kubeconfig(env: &Env, name: &str, token: &str) -> String {
    let path = PathBuf::from(env.get("SLURMLAB_STATE"))
        .join("test-logs")
        .join(format!("{name}.kubeconfig"));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n    server: {}\n    certificate-authority: {}\nusers:\n- name: sa\n  user:\n    token: {token}\ncontexts:\n- name: sa\n  context: {{cluster: local, user: sa}}\ncurrent-context: sa\n",
        env.get("KUBE_URL"),
        env.get("KUBE_CA"),
    );
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

/// A token of service account `ns/sa` for the API server (the binaries' own identity).
async fn service_account_token(admin: &kube::Client, ns: &str, sa: &str) -> String {
    common::gateway::service_account_token(admin, ns, sa, common::gateway::API_AUDIENCE).await
}

/// Binds the chart's user ClusterRole to `user` in `ns`.
async fn grant_user_role(admin: &kube::Client, ns: &str, release: &str, user: &str) {
    let role = format!("{release}-slurmlab-user");
    common::gateway::bind_user(admin, ns, "slurmlab-users", "ClusterRole", &role, user).await;
}

async fn client_from(path: &str) -> kube::Client {
    kube::Client::try_from(config_from(path).await).unwrap()
}

async fn config_from(path: &str) -> kube::Config {
    let kc = Kubeconfig::read_from(path).unwrap();
    kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap()
}

fn forbidden<T: std::fmt::Debug>(r: Result<T, kube::Error>, what: &str) {
    match r {
        Err(kube::Error::Api(s)) if s.code == 403 => {}
        other => panic!("{what} should be forbidden, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_charts_rbac_runs_the_whole_flow_and_denies_the_rest() {
    let env = Env::load();
    let admin = env.client(User::Admin).await;
    common::install_crds(&admin).await;
    let release_ns = format!("chart-{}", common::random_suffix());
    let release = format!("r{}", common::random_suffix());

    // A real Helm install (Helm v4's engine) into the API server, as the admin. Its pods
    // must not run: this test runs the binaries on the host under the chart's identities
    // (the_chart_runs_as_pods... runs them as pods).
    let values = std::env::temp_dir().join(format!("slurmlab-values-{release}.json"));
    let nowhere = json!({"slurmlab.io/no-such-node": "true"});
    std::fs::write(
        &values,
        json!({
            "controller": {"nodeSelector": nowhere, "uninstallCleanup": {"enabled": false}},
            "gateway": {"nodeSelector": nowhere}
        })
        .to_string(),
    )
    .unwrap();
    let (ok, out, err) = chart_py(
        &env,
        &[
            "install",
            &release,
            &release_ns,
            env.kubeconfig(User::Admin),
            &values.to_string_lossy(),
        ],
    );
    let _ = std::fs::remove_file(&values);
    assert!(ok, "helm install failed:\n{out}{err}");
    assert!(out.contains(": deployed"), "{out}");
    // The plain manifests (and the example overlay) are accepted by the API server too.
    let _ = Api::<Namespace>::all(admin.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "slurmlab-system"}})).unwrap(),
        )
        .await;
    for dir in ["deploy/base", "deploy/overlays/example"] {
        let path = common::repo_path(dir).to_string_lossy().into_owned();
        let (ok, out, err) = env.kubectl(
            User::Admin,
            &[
                "apply",
                "--server-side",
                "--force-conflicts",
                "--dry-run=server",
                "-k",
                &path,
            ],
        );
        assert!(ok, "{dir} is not accepted:\n{out}{err}");
    }

    let controller_sa = format!("{release}-slurmlab-controller");
    let gateway_sa = format!("{release}-slurmlab-gateway");
    let controller_kc = token_kubeconfig(
        &env,
        &controller_sa,
        &service_account_token(&admin, &release_ns, &controller_sa).await,
    );
    let gateway_kc = token_kubeconfig(
        &env,
        &gateway_sa,
        &service_account_token(&admin, &release_ns, &gateway_sa).await,
    );

    // Users get the chart's user role in their namespace.
    let scope = Scope::create(&admin, &env.slurm_clusters()[0], "chart-use").await;
    grant_user_role(&admin, &scope.ns, &release, "alice").await;

    // The binaries under the chart's identities: a whole agent session works.
    let ctl = ControllerProcess::start_as(
        &env,
        &scope,
        &controller_kc,
        (&release_ns, &controller_sa),
        &[],
    );
    let gw = GatewayProcess::start_as(
        &env,
        &scope,
        &gateway_kc,
        &["--state-namespace", &release_ns],
    )
    .await;
    let alice = Mcp::http(&gw.url, Some(&user_token(&env, "alice")))
        .await
        .unwrap();
    let started = alice
        .call(
            "start_new_session",
            json!({"experiment_name": "chart rbac"}),
        )
        .await;
    assert_ne!(
        started.is_error,
        Some(true),
        "{}\ncontroller:\n{}\ngateway:\n{}",
        text(&started),
        ctl.log_tail(),
        gw.log_tail()
    );
    let sid = started.structured_content.unwrap()["session_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = alice
        .call("execute_code", json!({"session_id": sid, "code": "6 * 7"}))
        .await;
    assert_eq!(text(&r), "42\n");
    alice
        .ok("shutdown_session", json!({"session_id": sid}))
        .await;
    let controller_log = std::fs::read_to_string(&ctl.log).unwrap();
    assert!(
        !controller_log.contains("forbidden"),
        "the controller was refused something:\n{}",
        ctl.log_tail()
    );

    // ...and what they must not do is refused. The gateway reads the namespace's token
    // Secret and no other: never the SLURM JWT key (a root credential for SLURM).
    let gateway = client_from(&gateway_kc).await;
    let secrets = Api::<Secret>::namespaced(gateway.clone(), &scope.ns);
    secrets
        .get(slurmlab::controller::TOKEN_SECRET)
        .await
        .expect("the gateway reads the token Secret");
    forbidden(
        secrets.get("slurm-jwt").await,
        "the gateway reading the JWT key",
    );
    forbidden(
        secrets.delete("slurm-jwt", &DeleteParams::default()).await,
        "the gateway deleting a Secret",
    );
    // Its own state is one ConfigMap in its namespace: that one it writes, no other it
    // reads, and none at all in a tenant's namespace.
    let registry = slurmlab::gateway::journal::Registry::new(gateway.clone(), &release_ns);
    let record = slurmlab::gateway::journal::RunRecord {
        id: "ex-test-0123456789".into(),
        session: format!("{}/s", scope.ns),
        owner: slurmlab::gateway::identity::Caller::Local {
            name: "alice".into(),
        },
        kernel_id: "k".into(),
        msg_id: "m".into(),
        placement: slurmlab::gateway::executions::Placement::Append,
        created_at: "2026-12-03T00:00:00Z".into(),
        started_unix_ms: 0,
        timeout_seconds: 1,
        notebook_path: "n.ipynb".into(),
    };
    registry
        .add(&record)
        .await
        .expect("the gateway records a run");
    let (records, _) = registry
        .list()
        .await
        .expect("the gateway reads its run records");
    assert_eq!(records, vec![record.clone()]);
    registry.remove(&record.id).await.expect("and forgets it");
    assert!(registry.list().await.unwrap().0.is_empty());
    let configmaps = Api::<ConfigMap>::namespaced(gateway.clone(), &release_ns);
    forbidden(
        configmaps.get("kube-root-ca.crt").await,
        "the gateway reading another ConfigMap",
    );
    forbidden(
        Api::<ConfigMap>::namespaced(gateway.clone(), &scope.ns)
            .get(slurmlab::gateway::journal::REGISTRY)
            .await,
        "the gateway reading a ConfigMap in a tenant's namespace",
    );
    // Its impersonation reaches users (alice lists her sessions through it), never a
    // group: not system:masters, not even alice's own unless the admin lists it.
    let as_alice = |groups: Option<Vec<String>>| {
        let (gateway_kc, ns) = (gateway_kc.clone(), scope.ns.clone());
        async move {
            let mut config = config_from(&gateway_kc).await;
            config.auth_info.impersonate = Some("alice".into());
            config.auth_info.impersonate_groups = groups;
            Api::<JupyterSession>::namespaced(kube::Client::try_from(config).unwrap(), &ns)
                .list(&ListParams::default())
                .await
        }
    };
    as_alice(None).await.expect("the gateway acts as alice");
    for group in ["system:masters", "slurmlab:users"] {
        match as_alice(Some(vec![group.to_owned()])).await {
            Err(kube::Error::Api(s)) if s.code == 403 && s.message.contains("impersonate") => {}
            other => panic!("the gateway impersonated group {group}: {other:?}"),
        }
    }
    forbidden(
        Api::<Secret>::namespaced(gateway.clone(), &scope.ns)
            .list(&ListParams::default())
            .await,
        "the gateway listing Secrets",
    );
    forbidden(
        Api::<JupyterSession>::namespaced(gateway.clone(), &scope.ns)
            .list(&ListParams::default())
            .await,
        "the gateway reading sessions as itself (it must impersonate)",
    );
    let controller = client_from(&controller_kc).await;
    forbidden(
        Api::<Secret>::namespaced(controller.clone(), &scope.ns)
            .list(&ListParams::default())
            .await,
        "the controller listing Secrets",
    );
    forbidden(
        Api::<Namespace>::all(controller.clone())
            .delete(&scope.ns, &DeleteParams::default())
            .await,
        "the controller deleting a namespace",
    );
    forbidden(
        Api::<ServiceAccount>::namespaced(controller.clone(), &release_ns)
            .list(&ListParams::default())
            .await,
        "the controller listing ServiceAccounts",
    );

    drop(alice);
    drop(gw);
    scope.cleanup(&admin).await;
    drop(ctl);
    let (ok, out, err) = chart_py(
        &env,
        &[
            "uninstall",
            &release,
            &release_ns,
            env.kubeconfig(User::Admin),
        ],
    );
    assert!(ok, "helm uninstall failed:\n{out}{err}");
    common::delete_namespace(&admin, &release_ns).await;
}

/// The last lines of every controller pod's log, for failure messages.
fn controller_logs(env: &Env, ns: &str) -> String {
    let (_, out, err) = env.kubectl(
        User::Admin,
        &[
            "logs",
            "-n",
            ns,
            "-l",
            "app.kubernetes.io/component=controller",
            "--tail=40",
            "--prefix",
        ],
    );
    format!("{out}{err}")
}

/// Live (not yet finished) SLURM jobs whose name is `name`, as the operator sees them.
/// Waits until the allocation is Ready; fails with its status and the controllers' logs.
async fn ready_allocation(
    env: &Env,
    admin: &kube::Client,
    scope: &Scope,
    release_ns: &str,
    name: &str,
) -> slurmlab::api::ComputeAllocation {
    let api = scope.allocations(admin);
    let found = common::wait_until_ok(std::time::Duration::from_secs(180), || async {
        let a = api.get(name).await.ok()?;
        (common::controller::phase(&a) == slurmlab::api::AllocationPhase::Ready).then_some(a)
    })
    .await;
    found.unwrap_or_else(|| {
        panic!(
            "{name} never became Ready:\n{}\ncontrollers:\n{}",
            scope.describe(env, "computeallocation", name),
            controller_logs(env, release_ns)
        )
    })
}

/// alice's MCP client through the gateway Service at `ip`, and a session it started
/// (failing with the controllers' logs from `ns` if it did not start).
async fn session_through_service(env: &Env, ip: &str, experiment: &str, ns: &str) -> (Mcp, String) {
    let alice = Mcp::http(
        &format!("http://{ip}:8000/mcp"),
        Some(&user_token(env, "alice")),
    )
    .await
    .unwrap();
    let started = alice
        .call("start_new_session", json!({"experiment_name": experiment}))
        .await;
    assert_ne!(
        started.is_error,
        Some(true),
        "{}\n{}",
        text(&started),
        controller_logs(env, ns)
    );
    let sid = started.structured_content.unwrap()["session_id"]
        .as_str()
        .unwrap()
        .to_owned();
    (alice, sid)
}

/// Pod names in `ns` with `component`, and whether every one of them is Ready.
async fn pods(admin: &kube::Client, ns: &str, component: &str) -> (Vec<String>, bool) {
    use k8s_openapi::api::core::v1::Pod;
    let lp = ListParams::default().labels(&format!("app.kubernetes.io/component={component}"));
    let list = Api::<Pod>::namespaced(admin.clone(), ns)
        .list(&lp)
        .await
        .unwrap();
    let ready = list.items.iter().all(|p| {
        p.metadata.deletion_timestamp.is_none()
            && p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    });
    let names = list
        .items
        .iter()
        .map(|p| p.metadata.name.clone().unwrap_or_default())
        .collect();
    (names, ready)
}

/// The chart as an admin installs it: `helm install` of the locally built image (hack/image.sh)
/// onto the real node, the controller (2 replicas, leader election) and the gateway running
/// as pods through their probes, an agent session through the gateway's Service, an
/// upgrade that rolls the pods, the leader killed mid-reconcile, and an uninstall that
/// leaves no SLURM job behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_runs_as_pods_and_an_agent_works_through_its_service() {
    use k8s_openapi::api::coordination::v1::Lease;
    use k8s_openapi::api::core::v1::{Pod, Service};
    use k8s_openapi::api::networking::v1::NetworkPolicy;
    use k8s_openapi::api::policy::v1::PodDisruptionBudget;

    let env = Env::load();
    let admin = env.client(User::Admin).await;
    common::install_crds(&admin).await;
    let slurm = env.slurm_cluster("trixie");
    let scope = Scope::create(&admin, &slurm, "pods").await;
    let suffix = common::random_suffix();
    let release_ns = format!("pods-{suffix}");
    let release = format!("p{suffix}");
    let head = slurm
        .url
        .trim_start_matches("http://")
        .split(':')
        .next()
        .unwrap()
        .to_owned();
    let mut values = json!({
        "image": {"repository": env.get("SLURMLAB_IMAGE_REPOSITORY"), "tag": env.get("SLURMLAB_IMAGE_TAG")},
        "logging": {"format": "text"},
        "controller": {
            "replicas": 2,
            // This release manages the test's namespace and cluster only: other tests run
            // their own controllers beside it.
            "watchNamespace": scope.ns,
            "clusterSelector": format!("slurmlab.io/test={}", scope.id),
        },
        "gateway": {"defaultNamespace": scope.ns, "cluster": scope.cluster},
        "networkPolicy": {
            "enabled": true,
            "apiServerCIDRs": [format!("{}/32", env.get("KUBE_NODE_IP")), "10.0.0.1/32"],
            "slurmrestdCIDRs": [format!("{head}/32")],
            "computeCIDRs": ["172.30.0.0/16"]
        }
    });
    let values_file = std::env::temp_dir().join(format!("slurmlab-values-{suffix}.json"));
    std::fs::write(&values_file, values.to_string()).unwrap();
    let values_path = values_file.to_string_lossy().into_owned();
    let admin_kc = env.kubeconfig(User::Admin).to_owned();

    // helm install --wait: every Deployment rolled out through its real probes.
    let (ok, out, err) = chart_py(
        &env,
        &[
            "install",
            &release,
            &release_ns,
            &admin_kc,
            &values_path,
            "--wait",
        ],
    );
    assert!(
        ok,
        "helm install failed:\n{out}{err}\n{}",
        controller_logs(&env, &release_ns)
    );
    let (controllers, ready) = pods(&admin, &release_ns, "controller").await;
    assert_eq!(controllers.len(), 2, "{controllers:?}");
    assert!(ready, "controller pods not Ready");
    let (gateways, ready) = pods(&admin, &release_ns, "gateway").await;
    assert!(gateways.len() == 1 && ready, "gateway pods {gateways:?}");
    let pdbs = Api::<PodDisruptionBudget>::namespaced(admin.clone(), &release_ns)
        .list(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(pdbs.items.len(), 1, "a PDB for two controller replicas");
    let policies = Api::<NetworkPolicy>::namespaced(admin.clone(), &release_ns)
        .list(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(
        policies.items.len(),
        2,
        "the API server accepts both NetworkPolicies"
    );
    // The image runs as the Containerfile says: non-root, read-only root file system.
    let pod = Api::<Pod>::namespaced(admin.clone(), &release_ns)
        .get(&controllers[0])
        .await
        .unwrap();
    let spec = pod.spec.unwrap();
    assert_eq!(
        spec.security_context.and_then(|s| s.run_as_user),
        Some(65532)
    );
    assert_eq!(
        spec.containers[0]
            .security_context
            .as_ref()
            .and_then(|s| s.read_only_root_filesystem),
        Some(true)
    );

    grant_user_role(&admin, &scope.ns, &release, "alice").await;

    // The controller pod reconciles an allocation into a real SLURM job.
    scope.allocation(&admin, "held", json!({})).await;
    let held = ready_allocation(&env, &admin, &scope, &release_ns, "held").await;
    let held_job = common::controller::job_id(&held);
    let held_name = format!("slurmlab-{}-held", scope.ns);
    assert_eq!(slurm.live_jobs(&held_name), vec![held_job.to_string()]);

    // An agent session from this host through the gateway's Service (kube-proxy).
    let svc = Api::<Service>::namespaced(admin.clone(), &release_ns)
        .get(&format!("{release}-slurmlab-gateway"))
        .await
        .unwrap();
    let ip = svc.spec.and_then(|s| s.cluster_ip).expect("a ClusterIP");
    let (alice, sid) = session_through_service(&env, &ip, "pods", &release_ns).await;
    let r = alice
        .call("execute_code", json!({"session_id": sid, "code": "1+1"}))
        .await;
    assert_eq!(text(&r), "2\n");
    let plot = alice
        .call(
            "execute_code",
            json!({"session_id": sid, "code": common::gateway::PLOT_CODE}),
        )
        .await;
    let _ = common::gateway::assert_png(&plot);
    alice
        .ok("shutdown_session", json!({"session_id": sid}))
        .await;
    drop(alice);
    // ...and the official Python SDK through the same Service.
    let seen = common::gateway::python_sdk_session(
        &env,
        &format!("http://{ip}:8000/mcp"),
        &user_token(&env, "alice"),
        || controller_logs(&env, &release_ns),
    )
    .await;
    assert_eq!(seen["two"], "2\n", "{seen}");
    assert_eq!(seen["png"], true, "{seen}");

    // helm upgrade with a changed value rolls every pod; the allocation keeps its job.
    values["logging"]["level"] = json!("info,slurmlab=debug");
    std::fs::write(&values_file, values.to_string()).unwrap();
    let (ok, out, err) = chart_py(
        &env,
        &[
            "upgrade",
            &release,
            &release_ns,
            &admin_kc,
            &values_path,
            "--wait",
        ],
    );
    assert!(ok, "helm upgrade failed:\n{out}{err}");
    let rolled = common::wait_until_ok(std::time::Duration::from_secs(120), || async {
        let (now, ready) = pods(&admin, &release_ns, "controller").await;
        (ready && now.len() == 2 && now.iter().all(|p| !controllers.contains(p))).then_some(now)
    })
    .await
    .expect("the controller pods were replaced by the upgrade");
    let after = ready_allocation(&env, &admin, &scope, &release_ns, "held").await;
    assert_eq!(
        common::controller::job_id(&after),
        held_job,
        "the upgrade kept the job"
    );
    assert_eq!(after.status.as_ref().unwrap().restarts, 0);
    assert_eq!(
        slurm.live_jobs(&held_name),
        vec![held_job.to_string()],
        "no second job"
    );

    // The leader pod deleted right after a new allocation was created.
    scope.allocation(&admin, "second", json!({})).await;
    // The leader among the new pods (the old one released the lease when it stopped).
    let leases = Api::<Lease>::namespaced(admin.clone(), &release_ns);
    let lease_name = format!("{release}-slurmlab-controller");
    let leader = common::wait_until_ok(std::time::Duration::from_secs(60), || async {
        let holder = leases.get(&lease_name).await.ok()?.spec?.holder_identity?;
        rolled
            .iter()
            .find(|p| holder.starts_with(&format!("{p}-")))
            .cloned()
    })
    .await
    .unwrap_or_else(|| panic!("none of {rolled:?} took the leader lease"));
    Api::<Pod>::namespaced(admin.clone(), &release_ns)
        .delete(&leader, &DeleteParams::default())
        .await
        .unwrap();
    let second = ready_allocation(&env, &admin, &scope, &release_ns, "second").await;
    let second_name = format!("slurmlab-{}-second", scope.ns);
    assert_eq!(
        slurm.live_jobs(&second_name),
        vec![common::controller::job_id(&second).to_string()],
        "one job for the allocation whose reconcile lost its leader"
    );
    assert_eq!(slurm.live_jobs(&held_name), vec![held_job.to_string()]);

    // helm uninstall: the pre-delete hook releases everything; no SLURM job is left.
    let (ok, out, err) = chart_py(&env, &["uninstall", &release, &release_ns, &admin_kc]);
    assert!(
        ok,
        "helm uninstall failed:\n{out}{err}\n{}",
        controller_logs(&env, &release_ns)
    );
    let prefix = format!("slurmlab-{}-", scope.ns);
    let left = common::wait_until_ok(std::time::Duration::from_secs(60), || async {
        let jobs: Vec<String> = slurm
            .command(&["squeue", "-h", "-o", "%j", "-t", "PD,R"])
            .lines()
            .filter(|j| j.starts_with(&prefix))
            .map(str::to_owned)
            .collect();
        jobs.is_empty().then_some(())
    })
    .await;
    assert!(left.is_some(), "SLURM jobs left after helm uninstall");
    let allocations = scope
        .allocations(&admin)
        .list(&ListParams::default())
        .await
        .unwrap();
    assert!(
        allocations.items.is_empty(),
        "allocations left after helm uninstall"
    );

    let _ = std::fs::remove_file(&values_file);
    scope.cleanup(&admin).await;
    common::delete_namespace(&admin, &release_ns).await;
}

/// The plain manifests as an admin without Helm applies them: `kubectl apply -k` of an
/// overlay on `deploy/base` (the local image, this test's namespace and cluster, a name
/// prefix, and the CRDs left out so deleting it cannot touch other tests' objects) runs
/// the controller and gateway as pods; an allocation gets one job and an agent runs code
/// through the gateway's Service; `kubectl delete -k` removes it all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plain_manifests_run_as_pods_with_kubectl_apply_k() {
    use k8s_openapi::api::core::v1::Service;

    let env = Env::load();
    let admin = env.client(User::Admin).await;
    common::install_crds(&admin).await;
    let slurm = env.slurm_cluster("trixie");
    let scope = Scope::create(&admin, &slurm, "kustomize").await;
    let suffix = common::random_suffix();
    let system_ns = format!("kz-{suffix}");
    let prefix = format!("k{suffix}-");
    let overlay = std::env::temp_dir().join(format!("slurmlab-overlay-{suffix}"));
    std::fs::create_dir_all(&overlay).unwrap();
    // kustomize takes bases by relative path only (any depth, outside the root too).
    let base = PathBuf::from(
        std::iter::repeat_n("..", overlay.components().count() - 1)
            .collect::<Vec<_>>()
            .join("/"),
    )
    .join(common::repo_path("deploy/base").strip_prefix("/").unwrap());
    let add_arg = |arg: String| json!({"op": "add", "path": "/spec/template/spec/containers/0/args/-", "value": arg});
    let kustomization = json!({
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": system_ns,
        "namePrefix": prefix,
        "resources": [base.to_string_lossy()],
        "images": [{
            "name": "ghcr.io/slurmlab/slurmlab",
            "newName": env.get("SLURMLAB_IMAGE_REPOSITORY"),
            "newTag": env.get("SLURMLAB_IMAGE_TAG"),
        }],
        "patches": [
            {
                "target": {"kind": "CustomResourceDefinition"},
                "patch": "$patch: delete\napiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: any\n",
            },
            {
                "target": {"kind": "Deployment", "name": "slurmlab-controller"},
                "patch": json!([
                    add_arg(format!("--watch-namespace={}", scope.ns)),
                    add_arg(format!("--cluster-selector=slurmlab.io/test={}", scope.id)),
                ]).to_string(),
            },
            {
                "target": {"kind": "Deployment", "name": "slurmlab-gateway"},
                "patch": json!([
                    {"op": "replace", "path": "/spec/template/spec/containers/0/args/4", "value": format!("--namespace={}", scope.ns)},
                    add_arg(format!("--cluster={}", scope.cluster)),
                ]).to_string(),
            },
        ],
    });
    // JSON is YAML: kustomize reads the file as it is.
    std::fs::write(
        overlay.join("kustomization.yaml"),
        kustomization.to_string(),
    )
    .unwrap();
    let dir = overlay.to_string_lossy().into_owned();

    let (ok, out, err) = env.kubectl(User::Admin, &["apply", "--server-side", "-k", &dir]);
    assert!(ok, "kubectl apply -k failed:\n{out}{err}");
    assert!(
        !out.contains("customresourcedefinition"),
        "the test overlay must leave the CRDs alone:\n{out}"
    );
    for component in ["controller", "gateway"] {
        let ready = common::wait_until_ok(std::time::Duration::from_secs(120), || async {
            let (names, ready) = pods(&admin, &system_ns, component).await;
            (names.len() == 1 && ready).then_some(())
        })
        .await;
        assert!(
            ready.is_some(),
            "the {component} pod never became Ready:\n{}",
            controller_logs(&env, &system_ns)
        );
    }

    common::gateway::bind_user(
        &admin,
        &scope.ns,
        "slurmlab-users",
        "ClusterRole",
        &format!("{prefix}slurmlab-user"),
        "alice",
    )
    .await;
    scope.allocation(&admin, "plain", json!({})).await;
    let plain = ready_allocation(&env, &admin, &scope, &system_ns, "plain").await;
    let job_name = format!("slurmlab-{}-plain", scope.ns);
    assert_eq!(
        slurm.live_jobs(&job_name),
        vec![common::controller::job_id(&plain).to_string()]
    );
    let svc = Api::<Service>::namespaced(admin.clone(), &system_ns)
        .get(&format!("{prefix}slurmlab-gateway"))
        .await
        .unwrap();
    let ip = svc.spec.and_then(|s| s.cluster_ip).expect("a ClusterIP");
    let (alice, sid) = session_through_service(&env, &ip, "plain manifests", &system_ns).await;
    let r = alice
        .call("execute_code", json!({"session_id": sid, "code": "6 * 7"}))
        .await;
    assert_eq!(text(&r), "42\n");
    alice
        .ok("shutdown_session", json!({"session_id": sid}))
        .await;
    drop(alice);

    // Objects first, while the controller runs (it cancels their jobs), then the install.
    scope.cleanup(&admin).await;
    let cancelled = common::wait_until_ok(std::time::Duration::from_secs(60), || async {
        slurm.live_jobs(&job_name).is_empty().then_some(())
    })
    .await;
    assert!(cancelled.is_some(), "the allocation's job outlived it");
    let (ok, out, err) = env.kubectl(User::Admin, &["delete", "-k", &dir, "--wait=true"]);
    assert!(ok, "kubectl delete -k failed:\n{out}{err}");
    let _ = std::fs::remove_dir_all(&overlay);
    let gone = common::wait_until_ok(std::time::Duration::from_secs(120), || async {
        Api::<k8s_openapi::api::core::v1::Namespace>::all(admin.clone())
            .get_opt(&system_ns)
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    assert!(gone.is_some(), "namespace {system_ns} was not removed");
}
