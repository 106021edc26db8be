//! Batched job-state polling: one poller per SLURM cluster keeps the latest record of
//! every tracked job and publishes changes, with a request count per interval that does
//! not grow with the number of jobs.
//!
//! Each round makes (at most) two requests, whatever the number of tracked jobs:
//! 1. `GET /jobs/?update_time=T`: full records of the jobs that changed since slurmctld's
//!    time `T` of the previous round (state, reason, node, comment, times, exit code). An
//!    empty answer means "nothing changed", never "no jobs".
//! 2. `GET /jobs/state/?job_id=..`: the states of exactly the tracked jobs, to notice
//!    jobs that are gone from slurmctld (purged after MinJobAge, or lost). A job that
//!    vanishes after it was seen finished is fine; one that vanishes while it was
//!    pending or running is reported as [`JobEvent::Vanished`], never as completed.
//!
//! Rounds come every `interval`, or every `active_interval` while a tracked job is
//! pending or changed recently (a Jupyter server is starting and about to report its
//! endpoint).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, broadcast};
use tokio::time::Instant;
use tracing::{debug, warn};

use super::{JobInfo, SlurmApi, SlurmError};

/// Poll intervals.
#[derive(Clone, Copy, Debug)]
pub struct PollerConfig {
    /// Between rounds while nothing is happening.
    pub interval: Duration,
    /// Between rounds while some job is pending or changed within `active_window`.
    pub active_interval: Duration,
    pub active_window: Duration,
}

impl Default for PollerConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(10),
            active_interval: Duration::from_secs(1),
            active_window: Duration::from_secs(30),
        }
    }
}

/// A change the poller saw.
#[derive(Clone, Debug, PartialEq)]
pub enum JobEvent {
    /// The job's record changed (or was seen for the first time).
    Updated(JobInfo),
    /// slurmctld no longer knows a job that had not finished: it was lost (or purged
    /// while the poller could not see it). `last` is the last record seen.
    Vanished { id: u64, last: Option<JobInfo> },
}

impl JobEvent {
    pub fn job_id(&self) -> u64 {
        match self {
            Self::Updated(info) => info.id,
            Self::Vanished { id, .. } => *id,
        }
    }
}

#[derive(Default)]
struct Tracked {
    last: Option<JobInfo>,
    changed_at: Option<Instant>,
    vanished: bool,
}

#[derive(Default)]
struct State {
    jobs: BTreeMap<u64, Tracked>,
    /// slurmctld's time of the previous `/jobs/` answer.
    last_update: Option<i64>,
    last_error: Option<String>,
    rounds: u64,
}

/// The poller of one cluster (see the module docs).
pub struct Poller {
    api: Arc<dyn SlurmApi>,
    config: PollerConfig,
    metrics: Option<super::SlurmMetrics>,
    state: Mutex<State>,
    events: broadcast::Sender<JobEvent>,
    wake: Notify,
}

impl Poller {
    pub fn new(api: Arc<dyn SlurmApi>, config: PollerConfig) -> Arc<Self> {
        Self::with_metrics(api, config, None)
    }

    /// A poller that counts its rounds in `slurmlab_slurm_poll_rounds_total`.
    pub fn with_metrics(
        api: Arc<dyn SlurmApi>,
        config: PollerConfig,
        metrics: Option<super::SlurmMetrics>,
    ) -> Arc<Self> {
        let (events, _) = broadcast::channel(1024);
        Arc::new(Self {
            api,
            config,
            metrics,
            state: Mutex::new(State::default()),
            events,
            wake: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts tracking a job (idempotent); the next round comes soon.
    pub fn track(&self, job_id: u64) {
        let added = {
            let mut st = self.lock();
            let new = !st.jobs.contains_key(&job_id);
            st.jobs.entry(job_id).or_insert_with(|| Tracked {
                changed_at: Some(Instant::now()),
                ..Default::default()
            });
            new
        };
        if added {
            self.wake.notify_one();
        }
    }

    pub fn untrack(&self, job_id: u64) {
        self.lock().jobs.remove(&job_id);
    }

    pub fn tracked(&self) -> Vec<u64> {
        self.lock().jobs.keys().copied().collect()
    }

    /// The latest record of a tracked job, if one was seen.
    pub fn latest(&self, job_id: u64) -> Option<JobInfo> {
        self.lock().jobs.get(&job_id).and_then(|t| t.last.clone())
    }

    /// True when a tracked job is gone from slurmctld without having finished.
    pub fn vanished(&self, job_id: u64) -> bool {
        self.lock().jobs.get(&job_id).is_some_and(|t| t.vanished)
    }

    /// Changes from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<JobEvent> {
        self.events.subscribe()
    }

    /// The error of the last round, if it failed.
    pub fn last_error(&self) -> Option<String> {
        self.lock().last_error.clone()
    }

    /// Rounds completed so far.
    pub fn rounds(&self) -> u64 {
        self.lock().rounds
    }

    /// Asks for a round now (e.g. right after a submit).
    pub fn poke(&self) {
        self.wake.notify_one();
    }

    /// How long to wait before the next round.
    pub fn next_delay(&self) -> Duration {
        let st = self.lock();
        let now = Instant::now();
        let active = st.jobs.values().any(|t| {
            t.last.as_ref().is_none_or(|j| j.state.is_pending())
                || t.changed_at
                    .is_some_and(|c| now.duration_since(c) < self.config.active_window)
        });
        if active {
            self.config.active_interval
        } else {
            self.config.interval
        }
    }

    /// Polls until `shutdown` resolves.
    pub async fn run(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            if let Err(e) = self.poll_once().await {
                warn!(cluster = self.api.cluster(), error = %e, "polling SLURM job states failed");
            }
            let delay = self.next_delay();
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(delay) => {}
                _ = self.wake.notified() => {}
            }
        }
    }

    /// One round (see the module docs). Returns the number of events published.
    pub async fn poll_once(&self) -> Result<usize, SlurmError> {
        let (ids, since) = {
            let st = self.lock();
            (st.jobs.keys().copied().collect::<Vec<_>>(), st.last_update)
        };
        if ids.is_empty() {
            return Ok(0);
        }
        let result = self.round(&ids, since).await;
        if let Some(m) = &self.metrics {
            m.poll_round(self.api.cluster());
        }
        let mut st = self.lock();
        st.rounds += 1;
        st.last_error = result.as_ref().err().map(ToString::to_string);
        result
    }

    async fn round(&self, ids: &[u64], since: Option<i64>) -> Result<usize, SlurmError> {
        let page = self.api.jobs(since).await?;
        let states = self.api.job_states(ids).await?;
        let now = Instant::now();
        let mut events = Vec::new();
        {
            let mut st = self.lock();
            for info in page.jobs {
                let Some(t) = st.jobs.get_mut(&info.id) else {
                    continue;
                };
                if t.last.as_ref() != Some(&info) {
                    t.changed_at = Some(now);
                    t.vanished = false;
                    t.last = Some(info.clone());
                    events.push(JobEvent::Updated(info));
                }
            }
            let present: std::collections::BTreeSet<u64> = states.iter().map(|s| s.id).collect();
            let mut missing_records = false;
            for (&id, t) in st.jobs.iter_mut() {
                if present.contains(&id) {
                    // A state the incremental query has not shown yet (e.g. a job tracked
                    // after it last changed): fetch everything next round.
                    let state = states.iter().find(|s| s.id == id).map(|s| &s.state);
                    if t.last.as_ref().map(|j| &j.state) != state {
                        missing_records = true;
                    }
                    continue;
                }
                let finished = t.last.as_ref().is_some_and(|j| j.state.is_finished());
                if !finished && !t.vanished && ids.contains(&id) {
                    t.vanished = true;
                    t.changed_at = Some(now);
                    events.push(JobEvent::Vanished {
                        id,
                        last: t.last.clone(),
                    });
                }
            }
            st.last_update = if missing_records {
                None
            } else {
                page.last_update.or(since)
            };
        }
        debug!(
            cluster = self.api.cluster(),
            jobs = ids.len(),
            events = events.len(),
            "polled SLURM"
        );
        let n = events.len();
        for e in events {
            // No subscriber is fine: `latest` still has the record.
            let _ = self.events.send(e);
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slurm::{CancelOutcome, JobSpec, JobStateEntry, JobsPage, PingInfo};
    use async_trait::async_trait;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// A cluster in memory: `jobs` is what slurmctld knows, `changed` the jobs changed
    /// since the last `jobs(Some(_))` call.
    #[derive(Default)]
    struct Fake {
        jobs: Mutex<BTreeMap<u64, JobInfo>>,
        changed: Mutex<Vec<u64>>,
        calls: AtomicU64,
        clock: AtomicU64,
    }

    fn job(id: u64, state: &[&str], comment: Option<&str>) -> JobInfo {
        JobInfo {
            comment: comment.map(str::to_owned),
            ..JobInfo::sample(id, state)
        }
    }

    impl Fake {
        fn set(&self, info: JobInfo) {
            self.changed.lock().unwrap().push(info.id);
            self.jobs.lock().unwrap().insert(info.id, info);
        }
        fn purge(&self, id: u64) {
            self.jobs.lock().unwrap().remove(&id);
        }
    }

    #[async_trait]
    impl SlurmApi for Fake {
        fn cluster(&self) -> &str {
            "fake"
        }
        async fn ping(&self) -> Result<PingInfo, SlurmError> {
            unimplemented!()
        }
        async fn submit(&self, _: &str, _: &JobSpec) -> Result<u64, SlurmError> {
            unimplemented!()
        }
        async fn job(&self, _: u64) -> Result<JobInfo, SlurmError> {
            unimplemented!()
        }
        async fn job_states(&self, ids: &[u64]) -> Result<Vec<JobStateEntry>, SlurmError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let jobs = self.jobs.lock().unwrap();
            Ok(ids
                .iter()
                .filter_map(|id| jobs.get(id))
                .map(|j| JobStateEntry {
                    id: j.id,
                    state: j.state.clone(),
                })
                .collect())
        }
        async fn jobs(&self, since: Option<i64>) -> Result<JobsPage, SlurmError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let t = self.clock.fetch_add(1, Ordering::SeqCst) as i64 + 1;
            let changed: Vec<u64> = std::mem::take(&mut *self.changed.lock().unwrap());
            let jobs = self.jobs.lock().unwrap();
            let list = match since {
                None => jobs.values().cloned().collect(),
                Some(_) => changed
                    .iter()
                    .filter_map(|id| jobs.get(id))
                    .cloned()
                    .collect(),
            };
            Ok(JobsPage {
                jobs: list,
                last_update: Some(t),
            })
        }
        async fn update_comment(&self, _: &str, _: u64, _: &str) -> Result<(), SlurmError> {
            unimplemented!()
        }
        async fn cancel(&self, _: &str, _: u64) -> Result<CancelOutcome, SlurmError> {
            unimplemented!()
        }
    }

    fn updated(events: &mut broadcast::Receiver<JobEvent>) -> Vec<JobEvent> {
        std::iter::from_fn(|| events.try_recv().ok()).collect()
    }

    #[tokio::test]
    async fn two_requests_per_round_whatever_the_number_of_jobs() {
        for n in [1u64, 10, 100] {
            let fake = Arc::new(Fake::default());
            let poller = Poller::new(fake.clone(), PollerConfig::default());
            for id in 1..=n {
                fake.set(job(id, &["PENDING"], None));
                poller.track(id);
            }
            for _ in 0..5 {
                poller.poll_once().await.unwrap();
            }
            assert_eq!(fake.calls.load(Ordering::SeqCst), 10, "{n} jobs");
            assert!(poller.latest(n).is_some());
        }
    }

    #[tokio::test]
    async fn reports_every_transition_and_the_comment() {
        let fake = Arc::new(Fake::default());
        let poller = Poller::new(fake.clone(), PollerConfig::default());
        let mut rx = poller.subscribe();
        fake.set(job(7, &["PENDING"], None));
        poller.track(7);
        poller.poll_once().await.unwrap();
        fake.set(job(7, &["RUNNING"], None));
        poller.poll_once().await.unwrap();
        poller.poll_once().await.unwrap(); // nothing changed: no event
        fake.set(job(7, &["RUNNING"], Some("jupyter=127.0.0.1:9")));
        poller.poll_once().await.unwrap();
        fake.set(job(7, &["COMPLETED"], Some("jupyter=127.0.0.1:9")));
        poller.poll_once().await.unwrap();
        let states: Vec<String> = updated(&mut rx)
            .into_iter()
            .map(|e| match e {
                JobEvent::Updated(j) => format!("{}:{}", j.state, j.comment.unwrap_or_default()),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            states,
            [
                "PENDING:",
                "RUNNING:",
                "RUNNING:jupyter=127.0.0.1:9",
                "COMPLETED:jupyter=127.0.0.1:9"
            ]
        );
    }

    #[tokio::test]
    async fn a_running_job_that_disappears_is_vanished_not_completed() {
        let fake = Arc::new(Fake::default());
        let poller = Poller::new(fake.clone(), PollerConfig::default());
        let mut rx = poller.subscribe();
        fake.set(job(1, &["RUNNING"], None));
        fake.set(job(2, &["COMPLETED"], None));
        poller.track(1);
        poller.track(2);
        poller.poll_once().await.unwrap();
        updated(&mut rx);
        fake.purge(1);
        fake.purge(2); // finished and purged after MinJobAge: nothing to report
        poller.poll_once().await.unwrap();
        let events = updated(&mut rx);
        assert_eq!(events.len(), 1, "{events:?}");
        assert!(
            matches!(&events[0], JobEvent::Vanished { id: 1, last: Some(j) } if j.state.is_running())
        );
        assert!(poller.vanished(1) && !poller.vanished(2));
        poller.poll_once().await.unwrap();
        assert!(updated(&mut rx).is_empty(), "reported once");
    }

    #[tokio::test]
    async fn an_empty_incremental_answer_means_no_change() {
        let fake = Arc::new(Fake::default());
        let poller = Poller::new(fake.clone(), PollerConfig::default());
        fake.set(job(3, &["RUNNING"], None));
        poller.track(3);
        poller.poll_once().await.unwrap();
        for _ in 0..3 {
            assert_eq!(poller.poll_once().await.unwrap(), 0);
        }
        assert!(poller.latest(3).unwrap().state.is_running());
        assert!(!poller.vanished(3));
    }

    #[tokio::test]
    async fn a_job_tracked_after_it_changed_gets_its_record() {
        let fake = Arc::new(Fake::default());
        let poller = Poller::new(fake.clone(), PollerConfig::default());
        fake.set(job(1, &["RUNNING"], None));
        poller.track(1);
        poller.poll_once().await.unwrap();
        fake.set(job(2, &["RUNNING"], Some("c")));
        poller.poll_once().await.unwrap(); // 2 changed, but is not tracked yet
        poller.track(2); // e.g. adopted after a restart
        poller.poll_once().await.unwrap(); // incremental: nothing; the state query sees it
        poller.poll_once().await.unwrap(); // full listing
        assert_eq!(poller.latest(2).unwrap().comment.as_deref(), Some("c"));
    }

    #[tokio::test]
    async fn polls_fast_only_while_something_is_pending_or_changing() {
        let cfg = PollerConfig {
            interval: Duration::from_secs(10),
            active_interval: Duration::from_secs(1),
            active_window: Duration::from_millis(50),
        };
        let fake = Arc::new(Fake::default());
        let poller = Poller::new(fake.clone(), cfg);
        assert_eq!(poller.next_delay(), cfg.interval);
        fake.set(job(1, &["PENDING"], None));
        poller.track(1);
        poller.poll_once().await.unwrap();
        assert_eq!(poller.next_delay(), cfg.active_interval);
        fake.set(job(1, &["RUNNING"], None));
        poller.poll_once().await.unwrap();
        assert_eq!(poller.next_delay(), cfg.active_interval, "just changed");
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(poller.next_delay(), cfg.interval);
    }
}
