//! Batched job-state polling: one poller per SLURM cluster keeps the latest record of
//! every tracked job and publishes changes. A round costs in proportion to the jobs
//! slurmlab tracks, never to the cluster's job table (a busy site has tens of thousands
//! of other people's jobs; slurmctld answers `GET /jobs/?update_time=T` with the WHOLE
//! table whenever anything changed, so that query is not used here).
//!
//! Each round:
//! 1. `GET /jobs/state/?job_id=..`: the states of exactly the tracked jobs (one request
//!    per 200 ids). A job that vanishes after it was seen finished is fine; one that
//!    vanishes while it was pending or running is reported as [`JobEvent::Vanished`],
//!    never as completed.
//! 2. `GET /job/{id}` for the few jobs whose full record is worth reading now (see
//!    [`records_to_read`]): never seen, state changed, running for less than
//!    `startup_window` without the record showing it started (its batch script is about
//!    to write the endpoint into the comment), pending without a reason yet, or last
//!    read longer ago than
//!    `running_refresh`/`pending_refresh`. At most
//!    `max_records_per_round`; the rest wait for the next round.
//!
//! Rounds come every `interval`, or every `active_interval` while a tracked job changed
//! within `active_window` or has not been read yet. A job that waits in the queue for
//! hours does not keep the poller fast.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, broadcast};
use tokio::time::Instant;
use tracing::{debug, warn};

use super::{JobInfo, JobState, SlurmApi, SlurmError};

/// Poll intervals and per-round bounds.
#[derive(Clone, Copy, Debug)]
pub struct PollerConfig {
    /// Between rounds while nothing is happening.
    pub interval: Duration,
    /// Between rounds while some job changed within `active_window`.
    pub active_interval: Duration,
    pub active_window: Duration,
    /// How long after a job starts running its record is read every round.
    pub startup_window: Duration,
    /// Re-read the record of a running job at least this often (comment changes).
    pub running_refresh: Duration,
    /// Re-read the record of a pending job at least this often (its reason).
    pub pending_refresh: Duration,
    /// Most `GET /job/{id}` per round.
    pub max_records_per_round: usize,
    /// Whether a running job's record shows it has started (the controller: its
    /// endpoint is in the comment); until then it is read every round of the startup
    /// window.
    pub started: fn(&JobInfo) -> bool,
}

impl Default for PollerConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(10),
            active_interval: Duration::from_secs(1),
            active_window: Duration::from_secs(30),
            startup_window: Duration::from_secs(120),
            running_refresh: Duration::from_secs(60),
            pending_refresh: Duration::from_secs(1800),
            max_records_per_round: 50,
            started: |_| false,
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
    /// When `last` was read.
    read_at: Option<Instant>,
    /// When the job was first seen running.
    running_since: Option<Instant>,
    vanished: bool,
}

#[derive(Default)]
struct State {
    jobs: BTreeMap<u64, Tracked>,
    last_error: Option<String>,
    rounds: u64,
}

/// What the planner knows of one tracked job.
#[derive(Clone, Copy, Debug)]
pub struct Seen<'a> {
    pub id: u64,
    /// The last record read, if any.
    pub last: Option<&'a JobState>,
    /// The state this round's batched query reported.
    pub now: &'a JobState,
    pub read_ago: Option<Duration>,
    /// Running for this long without its record showing it started
    /// ([`PollerConfig::started`]).
    pub starting_for: Option<Duration>,
    /// Pending without a reason yet: slurmctld sets one (Priority, Resources, ...) at its
    /// next scheduling pass, seconds after the submit.
    pub awaiting_reason: bool,
}

/// Which tracked jobs' full records to read this round, most urgent first, at most
/// `cfg.max_records_per_round`: never read or state changed; then running within the
/// startup window, or pending without a reason yet; then records older than their
/// refresh interval, oldest first.
/// Finished jobs whose final record was read are never read again.
pub fn records_to_read(seen: &[Seen<'_>], cfg: &PollerConfig) -> Vec<u64> {
    let mut urgent = Vec::new();
    let mut starting = Vec::new();
    let mut stale = Vec::new();
    for s in seen {
        match (s.last, s.read_ago) {
            (Some(last), Some(ago)) if last == s.now => {
                if s.now.is_finished() {
                    continue;
                }
                let is_starting =
                    s.now.is_running() && s.starting_for.is_some_and(|r| r < cfg.startup_window);
                if is_starting || (s.now.is_pending() && s.awaiting_reason) {
                    starting.push(s.id);
                    continue;
                }
                let refresh = if s.now.is_running() {
                    cfg.running_refresh
                } else {
                    cfg.pending_refresh
                };
                if ago >= refresh {
                    stale.push((ago, s.id));
                }
            }
            _ => urgent.push(s.id),
        }
    }
    stale.sort_by_key(|s| std::cmp::Reverse(s.0));
    urgent
        .into_iter()
        .chain(starting)
        .chain(stale.into_iter().map(|(_, id)| id))
        .take(cfg.max_records_per_round)
        .collect()
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

    pub fn is_tracked(&self, job_id: u64) -> bool {
        self.lock().jobs.contains_key(&job_id)
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
            t.last.is_none()
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
        let ids = self.tracked();
        if ids.is_empty() {
            return Ok(0);
        }
        let result = self.round(&ids).await;
        if let Some(m) = &self.metrics {
            m.poll_round(self.api.cluster());
        }
        let mut st = self.lock();
        st.rounds += 1;
        st.last_error = result.as_ref().err().map(ToString::to_string);
        result
    }

    async fn round(&self, ids: &[u64]) -> Result<usize, SlurmError> {
        let states: BTreeMap<u64, JobState> = self
            .api
            .job_states(ids)
            .await?
            .into_iter()
            .map(|s| (s.id, s.state))
            .collect();
        let now = Instant::now();
        let mut events = Vec::new();
        let wanted = {
            let mut st = self.lock();
            for (&id, t) in st.jobs.iter_mut() {
                if states.contains_key(&id) || !ids.contains(&id) {
                    continue;
                }
                let finished = t.last.as_ref().is_some_and(|j| j.state.is_finished());
                if !finished && !t.vanished {
                    t.vanished = true;
                    t.changed_at = Some(now);
                    events.push(JobEvent::Vanished {
                        id,
                        last: t.last.clone(),
                    });
                }
            }
            let seen: Vec<Seen<'_>> = st
                .jobs
                .iter()
                .filter_map(|(&id, t)| {
                    Some(Seen {
                        id,
                        last: t.last.as_ref().map(|j| &j.state),
                        now: states.get(&id)?,
                        read_ago: t.read_at.map(|r| now.duration_since(r)),
                        starting_for: t
                            .running_since
                            .filter(|_| !t.last.as_ref().is_some_and(self.config.started))
                            .map(|r| now.duration_since(r)),
                        awaiting_reason: t.last.as_ref().is_some_and(|j| j.reason.is_none()),
                    })
                })
                .collect();
            records_to_read(&seen, &self.config)
        };
        // Records one at a time (the client's rate cap spaces them); a failure ends the
        // round but keeps what was read.
        let mut failure = None;
        let mut records = Vec::with_capacity(wanted.len());
        for id in &wanted {
            match self.api.job(*id).await {
                Ok(info) => records.push(info),
                // Purged between the two queries: the next state query says so.
                Err(SlurmError::UnknownJob { .. }) => {}
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        {
            let now = Instant::now();
            let mut st = self.lock();
            for info in records {
                let Some(t) = st.jobs.get_mut(&info.id) else {
                    continue;
                };
                t.read_at = Some(now);
                if info.state.is_running() {
                    t.running_since.get_or_insert(now);
                }
                if t.last.as_ref() != Some(&info) {
                    t.changed_at = Some(now);
                    t.vanished = false;
                    t.last = Some(info.clone());
                    events.push(JobEvent::Updated(info));
                }
            }
        }
        debug!(
            cluster = self.api.cluster(),
            jobs = ids.len(),
            records = wanted.len(),
            events = events.len(),
            "polled SLURM"
        );
        let n = events.len();
        for e in events {
            // No subscriber is fine: `latest` still has the record.
            let _ = self.events.send(e);
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slurm::{CancelOutcome, JobSpec, JobStateEntry, JobsPage, PingInfo};
    use async_trait::async_trait;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// A cluster in memory: `jobs` is what slurmctld knows. `state_calls` counts the
    /// batched state queries, `record_calls` the single-job reads.
    #[derive(Default)]
    struct Fake {
        jobs: Mutex<BTreeMap<u64, JobInfo>>,
        state_calls: AtomicU64,
        record_calls: AtomicU64,
    }

    /// A job as slurmctld reports it after its first scheduling pass (with a reason).
    fn job(id: u64, state: &[&str], comment: Option<&str>) -> JobInfo {
        JobInfo {
            comment: comment.map(str::to_owned),
            reason: Some("Priority".to_owned()),
            ..JobInfo::sample(id, state)
        }
    }

    impl Fake {
        fn set(&self, info: JobInfo) {
            self.jobs.lock().unwrap().insert(info.id, info);
        }
        fn purge(&self, id: u64) {
            self.jobs.lock().unwrap().remove(&id);
        }
        fn calls(&self) -> (u64, u64) {
            (
                self.state_calls.load(Ordering::SeqCst),
                self.record_calls.load(Ordering::SeqCst),
            )
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
        async fn job(&self, id: u64) -> Result<JobInfo, SlurmError> {
            self.record_calls.fetch_add(1, Ordering::SeqCst);
            let jobs = self.jobs.lock().unwrap();
            jobs.get(&id)
                .cloned()
                .ok_or(SlurmError::UnknownJob { job_id: id })
        }
        async fn job_states(&self, ids: &[u64]) -> Result<Vec<JobStateEntry>, SlurmError> {
            self.state_calls.fetch_add(1, Ordering::SeqCst);
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
        async fn jobs(&self, _: Option<i64>) -> Result<JobsPage, SlurmError> {
            panic!("the poller never lists the whole job table")
        }
        async fn accounted_jobs(
            &self,
            _: &crate::slurm::AccountingQuery,
        ) -> Result<Vec<crate::slurm::AccountedJob>, SlurmError> {
            panic!("the poller never asks accounting")
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

    /// Settings under which only state changes cause reads (no startup window, no refresh).
    fn quiet() -> PollerConfig {
        PollerConfig {
            startup_window: Duration::ZERO,
            running_refresh: Duration::from_secs(3600),
            pending_refresh: Duration::from_secs(3600),
            max_records_per_round: 1000,
            ..PollerConfig::default()
        }
    }

    #[tokio::test]
    async fn a_round_reads_states_in_one_request_and_records_only_of_changed_jobs() {
        for n in [1u64, 10, 100] {
            let fake = Arc::new(Fake::default());
            let poller = Poller::new(fake.clone(), quiet());
            for id in 1..=n {
                fake.set(job(id, &["PENDING"], None));
                poller.track(id);
            }
            poller.poll_once().await.unwrap();
            assert_eq!(fake.calls(), (1, n), "first round: every record once");
            for _ in 0..4 {
                poller.poll_once().await.unwrap();
            }
            assert_eq!(fake.calls(), (5, n), "{n} unchanged jobs: states only");
            fake.set(job(n, &["RUNNING"], None));
            poller.poll_once().await.unwrap();
            assert_eq!(fake.calls(), (6, n + 1), "one job changed: one record");
            assert!(poller.latest(n).unwrap().state.is_running());
        }
    }

    #[tokio::test]
    async fn reports_every_transition_and_the_comment_a_starting_job_writes() {
        let fake = Arc::new(Fake::default());
        let cfg = PollerConfig {
            started: |j| j.comment.as_deref().is_some_and(|c| c.contains("jupyter=")),
            ..PollerConfig::default()
        };
        let poller = Poller::new(fake.clone(), cfg);
        let mut rx = poller.subscribe();
        fake.set(job(7, &["PENDING"], None));
        poller.track(7);
        poller.poll_once().await.unwrap();
        fake.set(job(7, &["RUNNING"], None));
        poller.poll_once().await.unwrap();
        poller.poll_once().await.unwrap(); // nothing changed: no event
        // Same state, new comment: read because the job started within the startup window.
        fake.set(job(7, &["RUNNING"], Some("jupyter=127.0.0.1:9")));
        poller.poll_once().await.unwrap();
        // It reported where it runs: no longer starting, so no more reads every round.
        let (_, records) = fake.calls();
        poller.poll_once().await.unwrap();
        assert_eq!(fake.calls().1, records);
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
        // Finished and read: never read again.
        let (_, records) = fake.calls();
        poller.poll_once().await.unwrap();
        assert_eq!(fake.calls().1, records);
    }

    #[tokio::test]
    async fn a_queued_job_is_read_until_slurm_gives_its_reason() {
        let fake = Arc::new(Fake::default());
        let poller = Poller::new(fake.clone(), quiet());
        fake.set(JobInfo::sample(4, &["PENDING"])); // just submitted: no reason yet
        poller.track(4);
        poller.poll_once().await.unwrap();
        poller.poll_once().await.unwrap();
        assert_eq!(fake.calls(), (2, 2), "read again while it has no reason");
        fake.set(job(4, &["PENDING"], None));
        poller.poll_once().await.unwrap();
        assert_eq!(
            poller.latest(4).unwrap().reason.as_deref(),
            Some("Priority")
        );
        poller.poll_once().await.unwrap();
        assert_eq!(fake.calls(), (4, 3), "then only on changes");
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
    async fn a_long_running_job_is_re_read_only_after_its_refresh_interval() {
        let cfg = PollerConfig {
            startup_window: Duration::ZERO,
            running_refresh: Duration::from_millis(80),
            ..PollerConfig::default()
        };
        let fake = Arc::new(Fake::default());
        let poller = Poller::new(fake.clone(), cfg);
        fake.set(job(3, &["RUNNING"], Some("a")));
        poller.track(3);
        poller.poll_once().await.unwrap();
        fake.set(job(3, &["RUNNING"], Some("rewritten")));
        poller.poll_once().await.unwrap();
        assert_eq!(poller.latest(3).unwrap().comment.as_deref(), Some("a"));
        tokio::time::sleep(Duration::from_millis(90)).await;
        poller.poll_once().await.unwrap();
        assert_eq!(
            poller.latest(3).unwrap().comment.as_deref(),
            Some("rewritten")
        );
    }

    #[tokio::test]
    async fn records_per_round_are_capped_and_the_rest_come_next_round() {
        let cfg = PollerConfig {
            max_records_per_round: 3,
            ..quiet()
        };
        let fake = Arc::new(Fake::default());
        let poller = Poller::new(fake.clone(), cfg);
        for id in 1..=7 {
            fake.set(job(id, &["PENDING"], None));
            poller.track(id);
        }
        poller.poll_once().await.unwrap();
        assert_eq!(fake.calls(), (1, 3));
        poller.poll_once().await.unwrap();
        poller.poll_once().await.unwrap();
        assert_eq!(fake.calls(), (3, 7));
        assert!((1..=7).all(|id| poller.latest(id).is_some()));
    }

    #[test]
    fn the_planner_puts_changes_first_then_startups_then_the_stalest() {
        let (pending, running, done) = (
            JobState::from_list(&["PENDING"]),
            JobState::from_list(&["RUNNING"]),
            JobState::from_list(&["COMPLETED"]),
        );
        let cfg = PollerConfig {
            running_refresh: Duration::from_secs(60),
            pending_refresh: Duration::from_secs(600),
            startup_window: Duration::from_secs(120),
            max_records_per_round: 10,
            ..PollerConfig::default()
        };
        let s = |id, last, now, read: u64, starting: Option<u64>| Seen {
            id,
            last,
            now,
            read_ago: Some(Duration::from_secs(read)),
            starting_for: starting.map(Duration::from_secs),
            awaiting_reason: false,
        };
        let seen = [
            s(1, Some(&pending), &pending, 100, None), // fresh enough: no
            s(2, Some(&running), &running, 70, None),  // stale running
            s(3, Some(&pending), &running, 1, None),   // changed
            s(4, Some(&running), &running, 1, Some(10)), // starting
            s(5, Some(&done), &done, 9999, None),      // finished: never
            s(6, Some(&pending), &pending, 700, None), // stale pending
            s(7, Some(&running), &running, 90, Some(500)), // staler, no endpoint yet
            Seen {
                read_ago: None,
                ..s(8, None, &pending, 0, None)
            }, // never read
            Seen {
                awaiting_reason: true,
                ..s(9, Some(&pending), &pending, 1, None)
            }, // queued, no reason yet
        ];
        assert_eq!(records_to_read(&seen, &cfg), [3, 8, 4, 9, 6, 7, 2]);
        let capped = PollerConfig {
            max_records_per_round: 2,
            ..cfg
        };
        assert_eq!(records_to_read(&seen, &capped), [3, 8]);
    }

    #[tokio::test]
    async fn polls_fast_only_while_something_changes_not_while_jobs_wait() {
        let cfg = PollerConfig {
            interval: Duration::from_secs(10),
            active_interval: Duration::from_secs(1),
            active_window: Duration::from_millis(50),
            ..PollerConfig::default()
        };
        let fake = Arc::new(Fake::default());
        let poller = Poller::new(fake.clone(), cfg);
        assert_eq!(poller.next_delay(), cfg.interval);
        fake.set(job(1, &["PENDING"], None));
        poller.track(1);
        assert_eq!(poller.next_delay(), cfg.active_interval, "not read yet");
        poller.poll_once().await.unwrap();
        assert_eq!(poller.next_delay(), cfg.active_interval, "just seen");
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(poller.next_delay(), cfg.interval, "waiting in the queue");
        fake.set(job(1, &["RUNNING"], None));
        poller.poll_once().await.unwrap();
        assert_eq!(poller.next_delay(), cfg.active_interval, "just changed");
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(poller.next_delay(), cfg.interval);
    }
}
