//! A real Jupyter server runs as a SLURM batch job in each cluster's "compute node" and
//! answers `/api/status` from the host, with its token and only with it.

mod common;

use std::time::Duration;

use common::{Env, RawSlurm};

/// Starts Jupyter on a free loopback port with the token from the job environment and
/// reports host:port through the job comment (no shared filesystem needed).
const SCRIPT: &str = r#"#!/bin/bash
set -euo pipefail
PORT=$("$JUPYTER_VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
scontrol update JobId="$SLURM_JOB_ID" Comment="jupyter=127.0.0.1:$PORT"
exec "$JUPYTER_VENV/bin/jupyter-server" --no-browser --ip=127.0.0.1 --port="$PORT" \
  --ServerApp.port_retries=0 --IdentityProvider.token="$JUPYTER_TOKEN" --ServerApp.root_dir="$HOME"
"#;

#[tokio::test]
async fn jupyter_server_in_a_batch_job_answers_with_its_token() {
    let env = Env::load();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    for cluster in env.slurm_clusters() {
        let slurm = RawSlurm::new(&cluster, cluster.newest_version());
        let token = format!("t{}", common::random_suffix());
        let job_env = [
            "PATH=/usr/bin:/bin".to_owned(),
            format!("HOME=/home/{}", cluster.user),
            format!("JUPYTER_TOKEN={token}"),
            format!("JUPYTER_VENV={}", cluster.jupyter_venv),
        ];
        let id = slurm
            .submit("slurmlab-jupyter-env-test", SCRIPT, &job_env)
            .await;
        let endpoint = common::wait_until(
            Duration::from_secs(60),
            "the job to report its endpoint",
            || async {
                let job = slurm.job(id).await;
                job["comment"]
                    .as_str()?
                    .strip_prefix("jupyter=")
                    .map(str::to_owned)
            },
        )
        .await;
        let url = format!("http://{endpoint}/api/status");
        let status = common::wait_until(
            Duration::from_secs(60),
            "Jupyter to answer /api/status",
            || async {
                let resp = http
                    .get(&url)
                    .header("Authorization", format!("token {token}"))
                    .send()
                    .await
                    .ok()?;
                if resp.status() != 200 {
                    return None;
                }
                resp.json::<serde_json::Value>().await.ok()
            },
        )
        .await;
        assert!(status["started"].is_string(), "{}: {status}", cluster.name);
        let without = http
            .get(&url)
            .send()
            .await
            .expect("server answers")
            .status();
        assert_eq!(
            without, 403,
            "{}: /api/status without a token must be refused",
            cluster.name
        );
        slurm.cancel(id).await;
        slurm
            .wait_state(id, "CANCELLED", Duration::from_secs(30))
            .await;
    }
}
