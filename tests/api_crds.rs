//! The project's Kubernetes API against a real kube-apiserver: the generated CRDs install
//! and become Established, the examples are accepted, every class of invalid spec is
//! refused with a message naming the field, and kubectl shows the printer columns.

mod common;

use common::{Env, User};
use kube::Client;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, Resource};
use serde_json::{Value, json};
use slurmlab::api::{ComputeAllocation, JupyterSession, SlurmCluster};

fn resource_of(kind: &str) -> ApiResource {
    match kind {
        "SlurmCluster" => ApiResource::erase::<SlurmCluster>(&()),
        "ComputeAllocation" => ApiResource::erase::<ComputeAllocation>(&()),
        "JupyterSession" => ApiResource::erase::<JupyterSession>(&()),
        other => panic!("unknown kind {other}"),
    }
}

fn api_for(client: &Client, kind: &str, namespace: &str) -> Api<DynamicObject> {
    let ar = resource_of(kind);
    if kind == "SlurmCluster" {
        Api::all_with(client.clone(), &ar)
    } else {
        Api::namespaced_with(client.clone(), namespace, &ar)
    }
}

/// Creates `obj` (a JSON manifest); Ok or the API server's message.
async fn create(client: &Client, namespace: &str, obj: Value) -> Result<DynamicObject, String> {
    let kind = obj["kind"]
        .as_str()
        .expect("manifest has a kind")
        .to_owned();
    let dynamic: DynamicObject = serde_json::from_value(obj).expect("manifest is an object");
    api_for(client, &kind, namespace)
        .create(&PostParams::default(), &dynamic)
        .await
        .map_err(|e| match e {
            kube::Error::Api(status) => status.message.clone(),
            other => panic!("unexpected client error: {other}"),
        })
}

fn read_examples(file: &str) -> Vec<Value> {
    let path = common::repo_path(&format!("examples/{file}"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| serde::Deserialize::deserialize(doc).expect("example is valid YAML"))
        .collect()
}

fn alloc(spec: Value) -> Value {
    json!({"apiVersion": "slurmlab.io/v1alpha1", "kind": "ComputeAllocation",
           "metadata": {"generateName": "bad-"}, "spec": spec})
}

fn session(spec: Value) -> Value {
    json!({"apiVersion": "slurmlab.io/v1alpha1", "kind": "JupyterSession",
           "metadata": {"generateName": "bad-"}, "spec": spec})
}

fn cluster(auth: Value) -> Value {
    json!({"apiVersion": "slurmlab.io/v1alpha1", "kind": "SlurmCluster",
           "metadata": {"generateName": "bad-"},
           "spec": {"restApi": {"url": "http://127.0.0.1:6820"}, "auth": auth,
                    "jobTemplate": {"serverCommand": "jupyter server"}}})
}

#[tokio::test]
async fn crds_install_and_become_established() {
    let env = Env::load();
    let client = env.client(User::Admin).await;
    common::install_crds(&client).await;
    // Applying again changes nothing and still succeeds (idempotent install).
    common::install_crds(&client).await;
}

#[tokio::test]
async fn examples_are_accepted() {
    let env = Env::load();
    let client = env.client(User::Admin).await;
    common::install_crds(&client).await;
    let ns = common::create_namespace(&client, "examples").await;
    for file in [
        "slurmcluster-local.yaml",
        "computeallocation.yaml",
        "jupytersession.yaml",
        "jupytersession-resume.yaml",
    ] {
        for mut obj in read_examples(file) {
            let kind = obj["kind"].as_str().unwrap().to_owned();
            if kind == "SlurmCluster" {
                // Cluster-scoped and used by the demo: create it under a test name.
                obj["metadata"]["name"] = json!(format!("{ns}-local"));
            }
            let created = create(&client, &ns, obj)
                .await
                .unwrap_or_else(|msg| panic!("example {file} ({kind}) was refused: {msg}"));
            if kind == "SlurmCluster" {
                let name = created.meta().name.clone().unwrap();
                api_for(&client, &kind, &ns)
                    .delete(&name, &DeleteParams::default())
                    .await
                    .unwrap();
            }
        }
    }
    common::delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn invalid_specs_are_refused_naming_the_field() {
    let env = Env::load();
    let client = env.client(User::Admin).await;
    common::install_crds(&client).await;
    let ns = common::create_namespace(&client, "invalid").await;
    let ok = json!({"clusterRef": "local"});
    let with = |k: &str, v: Value| {
        let mut spec = ok.clone();
        spec[k] = v;
        spec
    };
    let key = json!({"namespace": "n", "name": "s", "key": "k"});
    // (what is wrong, manifest, text the message must contain)
    let cases: Vec<(&str, Value, Vec<&str>)> = vec![
        (
            "unknown restart policy",
            alloc(with("restartPolicy", json!("Sometimes"))),
            vec!["spec.restartPolicy", "Never", "OnFailure"],
        ),
        (
            "zero cpus",
            alloc(with("cpus", json!(0))),
            vec!["spec.cpus", "greater than or equal to 1"],
        ),
        (
            "zero nodes",
            alloc(with("nodes", json!(0))),
            vec!["spec.nodes", "greater than or equal to 1"],
        ),
        (
            "zero maxSessions",
            alloc(with("maxSessions", json!(0))),
            vec!["spec.maxSessions", "greater than or equal to 1"],
        ),
        (
            "duration in words",
            alloc(with("timeLimit", json!("4 hours"))),
            vec!["spec.timeLimit", "should match"],
        ),
        (
            "idle timeout without unit",
            alloc(with("idleTimeout", json!("30"))),
            vec!["spec.idleTimeout"],
        ),
        (
            "memory in GB",
            alloc(with("memory", json!("16GB"))),
            vec!["spec.memory", "should match"],
        ),
        (
            "cpus beyond what the field holds",
            alloc(with("cpus", json!(99_999_999_999_i64))),
            vec!["spec.cpus", "less than or equal to 100000"],
        ),
        (
            "zero memory (SLURM reads it as the whole node)",
            alloc(with("memory", json!("0"))),
            vec!["spec.memory", "should match"],
        ),
        (
            "a partition name longer than any SLURM allows",
            alloc(with("partition", json!("p".repeat(300)))),
            vec!["spec.partition", "256"],
        ),
        (
            "Resume without a source",
            session(json!({"allocationRef": "a", "notebook": {"mode": "Resume"}})),
            vec![
                "spec.notebook.source",
                "required for mode Resume and Continue",
            ],
        ),
        (
            "Continue without a source",
            session(json!({"allocationRef": "a", "notebook": {"mode": "Continue"}})),
            vec![
                "spec.notebook.source",
                "required for mode Resume and Continue",
            ],
        ),
        (
            "missing clusterRef",
            alloc(json!({"cpus": 1})),
            vec!["spec.clusterRef", "Required value"],
        ),
        (
            "session with both allocationRef and allocationTemplate",
            session(json!({"allocationRef": "a", "allocationTemplate": {"clusterRef": "local"}})),
            vec!["spec", "exactly one of spec.allocationRef"],
        ),
        (
            "session with neither allocationRef nor allocationTemplate",
            session(json!({"kernel": "python3"})),
            vec!["spec", "exactly one of spec.allocationRef"],
        ),
        (
            "unknown notebook mode",
            session(json!({"allocationRef": "a", "notebook": {"mode": "Fork"}})),
            vec!["spec.notebook.mode", "New", "Resume", "Continue"],
        ),
        (
            "notebook path leaving the root",
            session(json!({"allocationRef": "a", "notebook": {"path": "../../etc/passwd.ipynb"}})),
            vec!["spec.notebook.path", "should match"],
        ),
        (
            "source path leaving the root",
            session(
                json!({"allocationRef": "a", "notebook": {"mode": "Resume", "source": "a/../../b.ipynb"}}),
            ),
            vec!["spec.notebook.source", "should match"],
        ),
        (
            "notebook path that is not a notebook",
            session(json!({"allocationRef": "a", "notebook": {"path": "notes.txt"}})),
            vec!["spec.notebook.path", ".ipynb"],
        ),
        (
            "absolute notebook path",
            session(json!({"allocationRef": "a", "notebook": {"path": "/etc/x.ipynb"}})),
            vec!["spec.notebook.path", "should match"],
        ),
        (
            "bad template inside a session",
            session(json!({"allocationTemplate": {"clusterRef": "local", "cpus": 0}})),
            vec!["spec.allocationTemplate.cpus"],
        ),
        (
            "cluster with both auth methods",
            cluster(json!({"jwtKeySecretRef": key, "tokenSecretRef": key})),
            vec!["spec.auth", "exactly one of auth.jwtKeySecretRef"],
        ),
        (
            "cluster with no auth method",
            cluster(json!({})),
            vec!["spec.auth", "exactly one of auth.jwtKeySecretRef"],
        ),
        (
            "cluster with an unknown API version",
            {
                let mut c = cluster(json!({"tokenSecretRef": key}));
                c["spec"]["restApi"]["version"] = json!("v0.0.39");
                c
            },
            vec!["spec.restApi.version", "should match"],
        ),
        (
            "cluster whose default CPUs exceed its limit",
            {
                let mut c = cluster(json!({"tokenSecretRef": key}));
                c["spec"]["defaults"] = json!({"cpus": 8, "memory": "32Gi"});
                c["spec"]["limits"] = json!({"maxCpus": 4, "maxMemory": "16Gi"});
                c
            },
            vec![
                "spec.defaults.cpus",
                "defaults.cpus must not exceed limits.maxCpus",
                "spec.defaults.memory",
                "defaults.memory must not exceed limits.maxMemory",
            ],
        ),
        (
            "cluster whose default partition is not an allowed one",
            {
                let mut c = cluster(json!({"tokenSecretRef": key}));
                c["spec"]["defaults"] = json!({"partition": "debug"});
                c["spec"]["limits"] = json!({"partitions": ["batch", "gpu"]});
                c
            },
            vec![
                "spec.defaults.partition",
                "defaults.partition must be one of limits.partitions",
            ],
        ),
    ];
    let mut failures = vec![];
    for (what, manifest, needles) in cases {
        match create(&client, &ns, manifest).await {
            Ok(obj) => failures.push(format!("{what}: accepted as {:?}", obj.meta().name)),
            Err(msg) => {
                if let Some(missing) = needles.iter().find(|n| !msg.contains(**n)) {
                    failures.push(format!("{what}: message lacks {missing:?}: {msg}"));
                }
            }
        }
    }
    common::delete_namespace(&client, &ns).await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn kubectl_shows_printer_columns_and_the_category() {
    let env = Env::load();
    let client = env.client(User::Admin).await;
    common::install_crds(&client).await;
    let ns = common::create_namespace(&client, "columns").await;
    for file in ["computeallocation.yaml", "jupytersession.yaml"] {
        for obj in read_examples(file) {
            create(&client, &ns, obj)
                .await
                .unwrap_or_else(|m| panic!("{file}: {m}"));
        }
    }
    // What the controller would report, written through the status subresource.
    let allocs: Api<ComputeAllocation> = Api::namespaced(client.clone(), &ns);
    let status = json!({"status": {"phase": "Queued", "sessions": 1,
        "slurm": {"jobId": 4242, "state": "PENDING", "reason": "Resources", "node": "vm"}}});
    allocs
        .patch_status("demo", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("status subresource accepts the status");
    let sessions: Api<JupyterSession> = Api::namespaced(client.clone(), &ns);
    let status = json!({"status": {"phase": "Pending", "allocation": "demo"}});
    sessions
        .patch_status("analysis", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();

    let (ok, out, err) = env.kubectl(
        User::Admin,
        &["get", "computeallocations,jupytersessions", "-n", &ns],
    );
    assert!(ok, "kubectl failed: {err}");
    for header in [
        "PHASE",
        "JOB",
        "STATE",
        "REASON",
        "NODE",
        "SESSIONS",
        "ALLOCATION",
        "NOTEBOOK",
        "AGE",
    ] {
        assert!(out.contains(header), "column {header} missing from:\n{out}");
    }
    let alloc_line = out
        .lines()
        .find(|l| l.contains("computeallocation.slurmlab.io/demo"))
        .unwrap_or_else(|| panic!("{out}"));
    for value in ["Queued", "4242", "PENDING", "Resources", "vm"] {
        assert!(
            alloc_line.contains(value),
            "{value} missing from {alloc_line:?}"
        );
    }

    let (ok, out, err) = env.kubectl(User::Admin, &["get", "slurmlab", "-n", &ns]);
    assert!(ok, "kubectl get slurmlab failed: {err}");
    assert!(out.contains("computeallocation.slurmlab.io/demo"), "{out}");
    assert!(out.contains("jupytersession.slurmlab.io/analysis"), "{out}");

    // Short names work.
    let (ok, out, err) = env.kubectl(
        User::Admin,
        &["get", "alloc,jsess", "-n", &ns, "-o", "name"],
    );
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 2, "{out}");
    common::delete_namespace(&client, &ns).await;
}
