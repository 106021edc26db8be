//! The local SLURM clusters (Slurm 24.11 and 26.05) answer slurmrestd with a JWT minted
//! from their key, on every REST version they serve, and run batch jobs to completion.

mod common;

use std::time::Duration;

use common::{Env, RawSlurm};
use reqwest::Method;

#[tokio::test]
async fn every_served_version_answers_ping_with_a_minted_jwt() {
    let env = Env::load();
    let clusters = env.slurm_clusters();
    assert_eq!(clusters.len(), 2, "expected the 24.11 and 26.05 clusters");
    for cluster in &clusters {
        for version in &cluster.versions {
            let slurm = RawSlurm::new(cluster, version);
            let (status, json) = slurm.call(Method::GET, "ping", None).await;
            assert_eq!(status, 200, "{} {version}: {json}", cluster.name);
            let ping = &json["pings"][0];
            // v0.0.40 has only `pinged`, v0.0.45 only `responding`; v0.0.41-44 both.
            let up = match ping.get("responding") {
                Some(responding) => responding == true,
                None => ping["pinged"] == "UP",
            };
            assert!(up, "{} {version} is not up: {json}", cluster.name);
        }
    }
    let versions: Vec<_> = clusters.iter().map(|c| c.slurm_version.as_str()).collect();
    assert!(
        versions.iter().any(|v| v.starts_with("24.11")),
        "{versions:?}"
    );
    assert!(
        versions.iter().any(|v| v.starts_with("26.05")),
        "{versions:?}"
    );
}

#[tokio::test]
async fn a_trivial_batch_job_completes_on_each_cluster() {
    let env = Env::load();
    for cluster in env.slurm_clusters() {
        let slurm = RawSlurm::new(&cluster, cluster.newest_version());
        let env = ["PATH=/usr/bin:/bin".to_owned(), "HOME=/tmp".to_owned()];
        let id = slurm
            .submit(
                "slurmlab-env-test",
                "#!/bin/bash\necho hello from $SLURM_JOB_ID\n",
                &env,
            )
            .await;
        let job = slurm
            .wait_state(id, "COMPLETED", Duration::from_secs(60))
            .await;
        assert_eq!(
            job["exit_code"]["return_code"]["number"], 0,
            "{}: {job}",
            cluster.name
        );
        assert_eq!(
            job["user_name"],
            cluster.user.as_str(),
            "{}: {job}",
            cluster.name
        );
    }
}
