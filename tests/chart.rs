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
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::RoleBinding;
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

async fn service_account_token(admin: &kube::Client, ns: &str, sa: &str) -> String {
    let request: TokenRequest = serde_json::from_value(json!({
        "spec": {"audiences": ["https://kubernetes.default.svc"], "expirationSeconds": 3600}
    }))
    .unwrap();
    Api::<ServiceAccount>::namespaced(admin.clone(), ns)
        .create_token_request(sa, &PostParams::default(), &request)
        .await
        .unwrap_or_else(|e| panic!("TokenRequest for {ns}/{sa}: {e}"))
        .status
        .expect("a token")
        .token
}

async fn client_from(path: &str) -> kube::Client {
    let kc = Kubeconfig::read_from(path).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
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

    // A real Helm install (Helm v4's engine) into the API server, as the admin.
    let (ok, out, err) = chart_py(
        &env,
        &[
            "install",
            &release,
            &release_ns,
            env.kubeconfig(User::Admin),
        ],
    );
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
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "slurmlab-users", "namespace": scope.ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": format!("{release}-slurmlab-user")},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice"}]
    }))
    .unwrap();
    Api::<RoleBinding>::namespaced(admin.clone(), &scope.ns)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();

    // The binaries under the chart's identities: a whole agent session works.
    let ctl = ControllerProcess::start_as(
        &env,
        &scope,
        &controller_kc,
        (&release_ns, &controller_sa),
        &[],
    );
    let gw = GatewayProcess::start_as(&env, &scope, &gateway_kc, &[]).await;
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

    // ...and what they must not do is refused.
    let gateway = client_from(&gateway_kc).await;
    forbidden(
        Api::<Secret>::namespaced(gateway.clone(), &scope.ns)
            .delete("slurm-jwt", &DeleteParams::default())
            .await,
        "the gateway deleting a Secret",
    );
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
