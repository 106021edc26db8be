//! The slurmrestd client against real Slurm 24.11 and 26.05, on every REST version each
//! one serves: ping, submit → run → complete with the exit code, cancel, comments,
//! typed errors (unknown job, bad token, invalid partition), version negotiation, and
//! the batched poller's request count.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::{Env, SlurmCluster, job_spec, slurm_client};
use slurmlab::slurm::poller::{JobEvent, Poller, PollerConfig};
use slurmlab::slurm::{
    BaseState, CancelOutcome, ClientConfig, RestClient, SlurmApi, SlurmError, SlurmMetrics,
    TokenSource,
};

/// Every (cluster, served version) pair of the environment.
fn every_version(env: &Env) -> Vec<(SlurmCluster, String)> {
    let pairs: Vec<_> = env
        .slurm_clusters()
        .into_iter()
        .flat_map(|c| c.versions.clone().into_iter().map(move |v| (c.clone(), v)))
        .collect();
    assert_eq!(
        pairs.len(),
        7,
        "24.11 serves 3 versions and 26.05 four: {pairs:?}"
    );
    pairs
}

async fn wait_for_state(
    client: &RestClient,
    id: u64,
    want: BaseState,
    finished: bool,
) -> slurmlab::slurm::JobInfo {
    common::wait_until(
        Duration::from_secs(60),
        &format!("job {id} to be {want:?}"),
        || async {
            let job = client.job(id).await.expect("job is readable");
            (job.state.base == want && (!finished || job.state.is_finished())).then_some(job)
        },
    )
    .await
}

#[tokio::test]
async fn ping_and_version_negotiation() {
    let env = Env::load();
    for (cluster, version) in every_version(&env) {
        let client = slurm_client(&cluster, Some(&version));
        let ping = client
            .ping()
            .await
            .unwrap_or_else(|e| panic!("{} {version}: {e}", cluster.name));
        assert!(ping.responding, "{} {version}", cluster.name);
        assert!(
            cluster.slurm_version.starts_with(&ping.release),
            "{} vs {}",
            cluster.slurm_version,
            ping.release
        );
        assert_eq!(client.api_version().await.unwrap().as_str(), version);
    }
    for cluster in env.slurm_clusters() {
        let auto = slurm_client(&cluster, None);
        assert_eq!(
            auto.api_version().await.unwrap().as_str(),
            cluster.newest_version(),
            "auto picks the newest"
        );
        assert_eq!(auto.served_versions().await.unwrap(), cluster.versions);
        // A version the server lacks: a clear error naming what it has.
        let missing = if cluster.versions.contains(&"v0.0.40".to_owned()) {
            "v0.0.45"
        } else {
            "v0.0.40"
        };
        let err = slurm_client(&cluster, Some(missing))
            .ping()
            .await
            .unwrap_err();
        assert!(matches!(err, SlurmError::Version(_)), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains(missing) && msg.contains(&cluster.versions.join(", ")),
            "{msg}"
        );
    }
}

#[tokio::test]
async fn submit_runs_to_completion_with_the_exit_code() {
    let env = Env::load();
    for (cluster, version) in every_version(&env) {
        let client = slurm_client(&cluster, Some(&version));
        let spec = job_spec(
            &cluster,
            &format!("slurmlab-it-exit-{version}"),
            "#!/bin/bash\nsleep 1\nexit 3\n",
        );
        let id = client
            .submit(&cluster.user, &spec)
            .await
            .unwrap_or_else(|e| panic!("{} {version}: {e}", cluster.name));
        let first = client.job(id).await.unwrap();
        assert!(
            matches!(first.state.base, BaseState::Pending | BaseState::Running),
            "{} {version}: {}",
            cluster.name,
            first.state
        );
        assert_eq!(first.name, spec.name);
        assert_eq!(first.comment, spec.comment);
        assert_eq!(first.time_limit_minutes, Some(5));
        let done = wait_for_state(&client, id, BaseState::Failed, true).await;
        assert_eq!(
            done.exit.unwrap().return_code,
            Some(3),
            "{} {version}",
            cluster.name
        );
        let host = done.batch_host.clone().unwrap_or_default();
        assert!(
            cluster.nodes.contains(&host),
            "{host:?} vs {:?}",
            cluster.nodes
        );
        let ok = client
            .submit(
                &cluster.user,
                &job_spec(&cluster, "slurmlab-it-ok", "#!/bin/bash\ntrue\n"),
            )
            .await
            .unwrap();
        let done = wait_for_state(&client, ok, BaseState::Completed, true).await;
        assert_eq!(done.exit.unwrap().return_code, Some(0));
    }
}

#[tokio::test]
async fn cancel_and_the_unknown_job() {
    let env = Env::load();
    for (cluster, version) in every_version(&env) {
        let client = slurm_client(&cluster, Some(&version));
        let id = client
            .submit(
                &cluster.user,
                &job_spec(&cluster, "slurmlab-it-sleep", "#!/bin/bash\nsleep 600\n"),
            )
            .await
            .unwrap();
        wait_for_state(&client, id, BaseState::Running, false).await;
        assert_eq!(
            client.cancel(&cluster.user, id).await.unwrap(),
            CancelOutcome::Signalled
        );
        let job = wait_for_state(&client, id, BaseState::Cancelled, true).await;
        // (The signal is not always recorded when the cancel races the script's start.)
        assert!(
            job.state.is_finished(),
            "{} {version}: {}",
            cluster.name,
            job.state
        );
        let again = client.cancel(&cluster.user, id).await.unwrap();
        assert!(
            matches!(
                again,
                CancelOutcome::AlreadyFinished | CancelOutcome::Signalled
            ),
            "{again:?}"
        );
        match client.job(99_999_999).await {
            Err(SlurmError::UnknownJob { job_id: 99_999_999 }) => {}
            other => panic!(
                "{} {version}: expected UnknownJob, got {other:?}",
                cluster.name
            ),
        }
        let unknown = client.cancel(&cluster.user, 99_999_999).await.unwrap();
        // 24.11's v0.0.40/41 say nothing about an unknown job on DELETE.
        assert!(
            matches!(unknown, CancelOutcome::Unknown | CancelOutcome::Signalled),
            "{unknown:?}"
        );
    }
}

#[tokio::test]
async fn comments_written_by_the_job_and_over_rest() {
    let env = Env::load();
    for (cluster, version) in every_version(&env) {
        let client = slurm_client(&cluster, Some(&version));
        let script = "#!/bin/bash\nscontrol update JobId=$SLURM_JOB_ID Comment=\"jupyter=$(hostname -s):4321\"\nsleep 30\n";
        let id = client
            .submit(
                &cluster.user,
                &job_spec(&cluster, "slurmlab-it-comment", script),
            )
            .await
            .unwrap();
        let comment =
            common::wait_until(Duration::from_secs(60), "the job's own comment", || async {
                let c = client.job(id).await.ok()?.comment?;
                c.starts_with("jupyter=").then_some(c)
            })
            .await;
        assert!(comment.ends_with(":4321"), "{comment}");
        client
            .update_comment(&cluster.user, id, "slurmlab:updated")
            .await
            .unwrap();
        assert_eq!(
            client.job(id).await.unwrap().comment.as_deref(),
            Some("slurmlab:updated")
        );
        let found = client.find_jobs("slurmlab-it-comment").await.unwrap();
        assert!(
            found.iter().any(|j| j.id == id),
            "{} {version}: find_jobs misses {id}",
            cluster.name
        );
        client.cancel(&cluster.user, id).await.unwrap();
    }
}

#[tokio::test]
async fn bad_credentials_and_bad_partitions_are_typed_errors() {
    let env = Env::load();
    for (cluster, version) in every_version(&env) {
        let mut cfg = ClientConfig::new(
            &cluster.name,
            &cluster.url,
            TokenSource::fixed(&cluster.user, "not-a-token"),
            &cluster.user,
        );
        cfg.version = slurmlab::slurm::VersionChoice::Pinned(version.parse().unwrap());
        let bad = RestClient::new(cfg, SlurmMetrics::default()).unwrap();
        for result in [
            bad.ping().await.map(|_| ()),
            bad.job_states(&[1]).await.map(|_| ()),
        ] {
            match result {
                Err(SlurmError::AuthRefused { user, .. }) => assert_eq!(user, cluster.user),
                other => panic!(
                    "{} {version}: expected AuthRefused, got {other:?}",
                    cluster.name
                ),
            }
        }
        // A token of the right form signed with another key.
        let forged =
            TokenSource::jwt_key(b"not the cluster key".to_vec(), Duration::from_secs(600));
        let mut cfg = ClientConfig::new(&cluster.name, &cluster.url, forged, &cluster.user);
        cfg.version = slurmlab::slurm::VersionChoice::Pinned(version.parse().unwrap());
        let err = RestClient::new(cfg, SlurmMetrics::default())
            .unwrap()
            .ping()
            .await
            .unwrap_err();
        assert!(matches!(err, SlurmError::AuthRefused { .. }), "{err:?}");
        assert!(
            err.to_string().contains("auth Secret"),
            "says what to check: {err}"
        );

        let client = slurm_client(&cluster, Some(&version));
        let mut spec = job_spec(&cluster, "slurmlab-it-badpart", "#!/bin/bash\ntrue\n");
        spec.partition = Some("nosuchpartition".into());
        match client.submit(&cluster.user, &spec).await {
            Err(e @ SlurmError::Rejected { .. }) => {
                assert!(
                    e.to_string().to_lowercase().contains("partition"),
                    "{} {version}: {e}",
                    cluster.name
                );
                assert!(!e.slurm_error_numbers().is_empty());
            }
            other => panic!(
                "{} {version}: expected Rejected, got {other:?}",
                cluster.name
            ),
        }
    }
}

#[tokio::test]
async fn unreachable_slurmrestd_is_a_clear_error() {
    let _env = Env::load();
    let cfg = ClientConfig::new(
        "nowhere",
        "http://127.0.0.1:9",
        TokenSource::fixed("u", "t"),
        "u",
    );
    let client = RestClient::new(cfg, SlurmMetrics::default()).unwrap();
    let err = client.ping().await.unwrap_err();
    assert!(matches!(err, SlurmError::Unreachable { .. }), "{err:?}");
    assert!(err.to_string().contains("127.0.0.1:9"), "{err}");
    assert!(client.requests_sent() > 1, "connect errors are retried");
    assert!(client.requests_sent() <= 4, "but only a few times");
}

#[tokio::test]
async fn the_poller_tracks_twenty_jobs_with_a_flat_request_count() {
    let env = Env::load();
    let cluster = env.slurm_clusters().into_iter().next().expect("a cluster");
    let client = Arc::new(slurm_client(&cluster, None));
    let cfg = PollerConfig {
        interval: Duration::from_millis(500),
        active_interval: Duration::from_millis(500),
        // Only state changes cause record reads (these jobs never write a comment).
        startup_window: Duration::ZERO,
        ..Default::default()
    };
    let poller = Poller::new(client.clone(), cfg);
    let mut events = poller.subscribe();
    let mut ids = Vec::new();
    for i in 0..20 {
        let spec = job_spec(
            &cluster,
            &format!("slurmlab-it-poll-{i}"),
            "#!/bin/bash\nsleep 2\n",
        );
        let id = client.submit(&cluster.user, &spec).await.unwrap();
        poller.track(id);
        ids.push(id);
    }
    let before = client.requests_sent();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(poller.clone().run(async move {
        let _ = stop_rx.await;
    }));
    // Collect transitions until every job is seen finished.
    let mut seen: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while ids
        .iter()
        .any(|id| !poller.latest(*id).is_some_and(|j| j.state.is_finished()))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "jobs did not finish: {seen:?}"
        );
        if let Ok(Ok(JobEvent::Updated(job))) =
            tokio::time::timeout(Duration::from_secs(1), events.recv()).await
        {
            let states = seen.entry(job.id).or_default();
            let s = job.state.base.as_str().to_owned();
            if states.last() != Some(&s) {
                states.push(s);
            }
        }
    }
    let _ = stop_tx.send(());
    task.await.unwrap();
    while let Ok(JobEvent::Updated(job)) = events.try_recv() {
        let states = seen.entry(job.id).or_default();
        if states.last().map(String::as_str) != Some(job.state.base.as_str()) {
            states.push(job.state.base.as_str().to_owned());
        }
    }
    let rounds = poller.rounds();
    let requests = client.requests_sent() - before;
    // One state query per round, whatever the number of jobs, and one record read per
    // job and transition (PENDING, RUNNING, COMPLETING, COMPLETED): never per round.
    let records = requests - rounds;
    assert!(
        (20..=20 * 4).contains(&records),
        "{requests} requests in {rounds} rounds: {records} record reads for 20 jobs"
    );
    for id in &ids {
        let states = seen
            .get(id)
            .unwrap_or_else(|| panic!("no event for job {id}"));
        // Every transition, in order: (PENDING,) RUNNING, COMPLETED.
        let path: Vec<&str> = states.iter().map(String::as_str).collect();
        assert!(
            path == ["PENDING", "RUNNING", "COMPLETED"] || path == ["RUNNING", "COMPLETED"],
            "job {id}: {states:?}"
        );
    }
    assert!(!poller.vanished(ids[0]));
}

/// slurmctld accepts a submit and the answer is lost on the way back (a 502 or 504 from
/// a proxy, a restarting slurmrestd): the client must not submit again by itself, or the
/// site gets two jobs for one request. The next reconcile's lookup adopts the one job.
#[tokio::test]
async fn a_lost_submit_answer_is_never_retried() {
    use common::fault_proxy::{Fault, FaultProxy};
    let env = Env::load();
    for cluster in env.slurm_clusters() {
        for fault in [Fault::BadGateway, Fault::GatewayTimeout] {
            let proxy = FaultProxy::start(&cluster.url, fault).await;
            let mut via_proxy = cluster.clone();
            via_proxy.url = proxy.url.clone();
            let client = slurm_client(&via_proxy, None);
            let name = format!("slurmlab-it-lost-{}", common::random_suffix());
            let spec = job_spec(&cluster, &name, "#!/bin/bash\nsleep 30\n");
            let err = client
                .submit(&cluster.user, &spec)
                .await
                .expect_err("the proxy loses the answer");
            assert!(
                matches!(
                    err,
                    SlurmError::Server {
                        status: 502 | 504,
                        ..
                    }
                ),
                "{} {fault:?}: {err:?}",
                cluster.name
            );
            assert_eq!(
                proxy.submits_forwarded(),
                1,
                "{} {fault:?}: the submit was sent exactly once",
                cluster.name
            );
            // slurmctld did get it: exactly one job of that name exists.
            let direct = slurm_client(&cluster, None);
            let found = direct.find_jobs(&name).await.expect("jobs are listed");
            assert_eq!(found.len(), 1, "{} {fault:?}: {found:?}", cluster.name);
            direct.cancel(&cluster.user, found[0].id).await.unwrap();
            // Reads through the same proxy are not affected.
            proxy.set_fault(Fault::None);
            assert!(client.ping().await.is_ok());
        }
    }
}
