//! A real Jupyter server runs as a SLURM batch job in each cluster's "compute node" and
//! answers `/api/status` from the host, with its token and only with it.

mod common;

use std::time::Duration;

use common::Env;

#[tokio::test]
async fn jupyter_server_in_a_batch_job_answers_with_its_token() {
    let env = Env::load();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    for cluster in env.slurm_clusters() {
        let job = common::JupyterJob::start(&cluster).await;
        let url = format!("{}/api/status", job.url);
        let resp = http
            .get(&url)
            .header("Authorization", format!("token {}", job.token))
            .send()
            .await
            .unwrap();
        let status: serde_json::Value = resp.json().await.unwrap();
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
        job.stop().await;
    }
}
