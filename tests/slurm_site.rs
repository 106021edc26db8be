//! The test SLURM sites are shaped like a shared production cluster, or the trust and
//! scale tests that run on them prove nothing: several compute hosts with their own names
//! and addresses, jobs that really run as their SLURM user on them, PrivateData that hides
//! one tenant's jobs from another, and enforced accounting.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{Env, RawSlurm};
use reqwest::Method;
use serde_json::{Value, json};

/// The job reports who and where it runs in its own comment.
const WHOAMI: &str = r#"#!/bin/bash
other=$(ls /home/slurmjob >/dev/null 2>&1 && echo readable || echo denied)
scontrol update JobId="$SLURM_JOB_ID" Comment="$(id -un) $(id -u) $(hostname -s) $(hostname -I | cut -d' ' -f1) $other"
"#;

fn job_env(user: &str) -> Vec<String> {
    vec![
        "PATH=/usr/bin:/bin".to_owned(),
        format!("HOME=/home/{user}"),
    ]
}

#[tokio::test]
async fn jobs_run_as_their_user_on_compute_hosts_of_their_own() {
    let env = Env::load();
    for cluster in env.slurm_clusters() {
        assert!(
            cluster.nodes.len() >= 2,
            "{}: {:?}",
            cluster.name,
            cluster.nodes
        );
        let mut seen = BTreeSet::new();
        for (user, node) in cluster.tenants.iter().zip(cluster.nodes.iter().cycle()) {
            let slurm = RawSlurm::as_user(&cluster, cluster.newest_version(), user);
            let id = slurm
                .submit_with(
                    "slurmlab-site-whoami",
                    WHOAMI,
                    &job_env(user),
                    json!({"required_nodes": [node]}),
                )
                .await;
            let job = slurm
                .wait_state(id, "COMPLETED", Duration::from_secs(60))
                .await;
            let comment = job["comment"].as_str().unwrap_or_default().to_owned();
            let fields: Vec<&str> = comment.split(' ').collect();
            let [name, uid, host, ip, other_home] = fields[..] else {
                panic!("{}: comment {comment:?} of {job}", cluster.name);
            };
            assert_eq!(name, user, "{}: {comment}", cluster.name);
            assert_ne!(uid, "0", "{}: {comment}", cluster.name);
            assert_eq!(host, node, "{}: {comment}", cluster.name);
            assert_eq!(job["batch_host"], node.as_str(), "{}: {job}", cluster.name);
            // The host's own address, not the Kubernetes side's loopback.
            let resolved = tokio::net::lookup_host(format!("{node}:1"))
                .await
                .unwrap_or_else(|e| panic!("{node} does not resolve here: {e}"))
                .map(|a| a.ip().to_string())
                .collect::<Vec<_>>();
            assert!(
                resolved.contains(&ip.to_owned()),
                "{node}: {ip} vs {resolved:?}"
            );
            assert!(!ip.starts_with("127."), "{node}: {ip}");
            assert_eq!(other_home, "denied", "{user} read another user's home");
            seen.insert((user.clone(), uid.to_owned(), ip.to_owned()));
        }
        let uids: BTreeSet<_> = seen.iter().map(|(_, uid, _)| uid).collect();
        let ips: BTreeSet<_> = seen.iter().map(|(_, _, ip)| ip).collect();
        assert_eq!(
            uids.len(),
            cluster.tenants.len(),
            "{}: {seen:?}",
            cluster.name
        );
        assert!(
            ips.len() >= 2,
            "{}: every job on one host: {seen:?}",
            cluster.name
        );
    }
}

/// Every job id in a `GET jobs` answer.
async fn listed_ids(slurm: &RawSlurm) -> BTreeSet<u64> {
    let (status, json) = slurm.call(Method::GET, "jobs", None).await;
    assert_eq!(
        status, 200,
        "{} as {}: {json}",
        slurm.cluster.name, slurm.user
    );
    json["jobs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|j| j["job_id"].as_u64())
        .collect()
}

#[tokio::test]
async fn private_data_hides_one_tenants_jobs_from_another_but_not_from_the_operator() {
    let env = Env::load();
    for cluster in env.slurm_clusters() {
        let version = cluster.newest_version();
        let (a, b) = (&cluster.tenants[0], &cluster.tenants[1]);
        let alice = RawSlurm::as_user(&cluster, version, a);
        let bob = RawSlurm::as_user(&cluster, version, b);
        let operator = RawSlurm::new(&cluster, version);
        let held = bob
            .submit_with(
                "slurmlab-site-private",
                "#!/bin/bash\nsleep 60\n",
                &job_env(b),
                json!({"hold": true}),
            )
            .await;
        assert!(listed_ids(&bob).await.contains(&held), "{}", cluster.name);
        assert!(
            listed_ids(&operator).await.contains(&held),
            "{}: the operator must see every tenant's jobs",
            cluster.name
        );
        assert!(
            !listed_ids(&alice).await.contains(&held),
            "{}: {a} sees {b}'s job {held}",
            cluster.name
        );
        let (_, direct) = alice.call(Method::GET, &format!("job/{held}"), None).await;
        let leaked = direct["jobs"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|j| j["job_id"] == held);
        assert!(
            !leaked,
            "{}: {a} read {b}'s job record: {direct}",
            cluster.name
        );
        // Nor may alice cancel it.
        let (_, cancel) = alice
            .call(Method::DELETE, &format!("job/{held}"), None)
            .await;
        let job = operator.job(held).await;
        assert!(
            job["job_state"]
                .as_array()
                .is_some_and(|s| s.iter().any(|s| s == "PENDING")),
            "{}: {a} cancelled {b}'s job ({cancel}): {job}",
            cluster.name
        );
        bob.cancel(held).await;
    }
}

#[tokio::test]
async fn accounting_is_enforced_and_its_rest_endpoints_answer() {
    let env = Env::load();
    for cluster in env.slurm_clusters() {
        let version = cluster.newest_version();
        // eve has a UNIX account but no association: slurmctld refuses her job.
        let eve = RawSlurm::as_user(&cluster, version, "eve");
        let body = json!({
            "script": "#!/bin/bash\ntrue\n",
            "job": {"name": "slurmlab-site-eve", "partition": "debug",
                    "current_working_directory": "/tmp", "environment": job_env("eve")}
        });
        let (status, json) = eve.call(Method::POST, "job/submit", Some(body)).await;
        let text = json.to_string().to_lowercase();
        assert!(
            status != 200 || json["job_id"].is_null(),
            "{}: eve submitted without an association: {json}",
            cluster.name
        );
        assert!(
            text.contains("account") || text.contains("association"),
            "{}: {status} {json}",
            cluster.name
        );
        // The slurmdbd side of the REST API is real: the tenants' associations are there.
        let http = reqwest::Client::new();
        let resp: Value = http
            .get(format!(
                "{}/slurmdb/{version}/associations?cluster={}",
                cluster.url, cluster.name
            ))
            .header("X-SLURM-USER-NAME", &cluster.user)
            .header("X-SLURM-USER-TOKEN", cluster.token())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let pairs: BTreeSet<(String, String)> = resp["associations"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| {
                Some((
                    a["user"].as_str()?.to_owned(),
                    a["account"].as_str()?.to_owned(),
                ))
            })
            .collect();
        for (user, account) in [
            (&cluster.tenants[0], "tenant-a"),
            (&cluster.tenants[1], "tenant-b"),
        ] {
            assert!(
                pairs.contains(&(user.clone(), account.to_owned())),
                "{}: no association {user}/{account} in {pairs:?}",
                cluster.name
            );
        }
    }
}
