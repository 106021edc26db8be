//! From what SLURM and the Jupyter server say to what a ComputeAllocation's status shows:
//! the phase, a reason (for conditions and events) and a message a person can act on.
//! Pure logic, so every transition is unit-tested without servers.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::api::{AllocationPhase, ComputeAllocationStatus, SlurmJobStatus};
use crate::slurm::{BaseState, JobInfo};

use super::endpoint::{EndpointChoice, EndpointPolicy, choose_endpoint};
use super::identity::parse_comment;

/// The allocation's view of its job at one moment.
#[derive(Clone, Debug, PartialEq)]
pub struct Observation {
    pub phase: AllocationPhase,
    /// CamelCase reason for conditions and events.
    pub reason: String,
    pub message: String,
    /// `host:port` the server reported, when running.
    pub endpoint: Option<String>,
}

/// Whether the Jupyter server answered `/api/status` with the token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    NotTried,
    Answered,
    Failed(String),
}

/// Consecutive failed probes after which a Ready server is no longer Ready.
pub const PROBES_MISSED_BEFORE_NOT_READY: i32 = 3;

/// A Ready server that misses a probe stays Ready (its sessions with it) until it has
/// missed [`PROBES_MISSED_BEFORE_NOT_READY`] in a row: one slow answer or a brief network
/// blip must not drop every session. Returns the observation to report and the new count.
pub fn hold_ready(was: AllocationPhase, obs: Observation, missed: i32) -> (Observation, i32) {
    let failed_probe = obs.phase == AllocationPhase::Starting && obs.reason == "ServerNotAnswering";
    if obs.phase == AllocationPhase::Ready || !failed_probe {
        return (obs, 0);
    }
    let missed = missed.saturating_add(1);
    if was != AllocationPhase::Ready || missed >= PROBES_MISSED_BEFORE_NOT_READY {
        return (obs, missed);
    }
    let held = Observation {
        phase: AllocationPhase::Ready,
        reason: "ProbeMissed".to_owned(),
        message: format!(
            "{} (missed {missed} of {PROBES_MISSED_BEFORE_NOT_READY} probes in a row; still Ready)",
            obs.message
        ),
        endpoint: obs.endpoint,
    };
    (held, missed)
}

/// Maps the latest job record to a phase. `cancelled_by_us` says whether the controller
/// itself cancelled the job (idle timeout, deletion), which makes CANCELLED a normal end.
pub fn observe(
    job_id: u64,
    job: Option<&JobInfo>,
    vanished: bool,
    probe: &Probe,
    policy: &EndpointPolicy,
    cancelled_by_us: bool,
) -> Observation {
    let obs = |phase, reason: &str, message: String, endpoint: Option<String>| Observation {
        phase,
        reason: reason.to_owned(),
        message,
        endpoint,
    };
    if vanished {
        let last = job
            .map(|j| j.state.to_string())
            .unwrap_or_else(|| "unknown".into());
        return obs(
            AllocationPhase::Failed,
            "JobVanished",
            format!(
                "SLURM no longer knows job {job_id}, last seen {last}: it was lost (node failure or slurmctld state loss)"
            ),
            None,
        );
    }
    let Some(job) = job else {
        return obs(
            AllocationPhase::Queued,
            "Submitted",
            format!("job {job_id} submitted; waiting for SLURM's first report"),
            None,
        );
    };
    let state = &job.state;
    if state.is_finished() {
        return finished(job_id, job, cancelled_by_us);
    }
    if cancelled_by_us {
        // Polled states may predate our cancel: never go back to Starting or Ready.
        return obs(
            AllocationPhase::Terminating,
            "Cancelling",
            format!("job {job_id} is being cancelled by slurmlab (SLURM still says {state})"),
            None,
        );
    }
    if state.base.is_terminal() || state.has_flag(crate::slurm::FLAG_COMPLETING) {
        return obs(
            AllocationPhase::Terminating,
            "Completing",
            format!("job {job_id} is ending ({state})"),
            None,
        );
    }
    match state.base {
        BaseState::Pending => {
            let reason = job.reason.clone().unwrap_or_else(|| "Pending".into());
            obs(
                AllocationPhase::Queued,
                &reason,
                format!("job {job_id} pending: {reason}"),
                None,
            )
        }
        BaseState::Suspended => obs(
            AllocationPhase::Queued,
            "Suspended",
            format!("job {job_id} is suspended by SLURM"),
            None,
        ),
        BaseState::Running => {
            let node = job.batch_host.clone().unwrap_or_else(|| "?".into());
            let reported = job
                .comment
                .as_deref()
                .and_then(|c| parse_comment(c).endpoint);
            let endpoint = match choose_endpoint(reported.as_deref(), job, policy) {
                EndpointChoice::Trusted(e) => e,
                EndpointChoice::Missing => {
                    return obs(
                        AllocationPhase::Starting,
                        "ServerStarting",
                        format!(
                            "job {job_id} running on {node}; waiting for the Jupyter server to report its address"
                        ),
                        None,
                    );
                }
                EndpointChoice::Refused(why) => {
                    return obs(AllocationPhase::Starting, "EndpointMismatch", why, None);
                }
            };
            match probe {
                Probe::Answered => obs(
                    AllocationPhase::Ready,
                    "Ready",
                    format!("Jupyter server ready at {endpoint} on {node}"),
                    Some(endpoint),
                ),
                Probe::NotTried => obs(
                    AllocationPhase::Starting,
                    "ServerStarting",
                    format!(
                        "job {job_id} running on {node}; Jupyter server at {endpoint} not checked yet"
                    ),
                    Some(endpoint),
                ),
                Probe::Failed(why) => obs(
                    AllocationPhase::Starting,
                    "ServerNotAnswering",
                    format!(
                        "job {job_id} running on {node}; Jupyter server at {endpoint} does not answer yet: {why}"
                    ),
                    Some(endpoint),
                ),
            }
        }
        _ => obs(
            AllocationPhase::Queued,
            state.base.as_str(),
            format!("job {job_id} is {state}"),
            None,
        ),
    }
}

fn finished(job_id: u64, job: &JobInfo, cancelled_by_us: bool) -> Observation {
    let exit = job.exit.as_ref();
    let code = exit.and_then(|e| e.return_code);
    let signal = exit.and_then(|e| e.signal);
    let (phase, reason, message) = match &job.state.base {
        BaseState::Completed => (
            AllocationPhase::Completed,
            "JobCompleted",
            format!("job {job_id} completed"),
        ),
        BaseState::Cancelled if cancelled_by_us => (
            AllocationPhase::Completed,
            "Cancelled",
            format!("job {job_id} cancelled by slurmlab"),
        ),
        BaseState::Cancelled => (
            AllocationPhase::Failed,
            "CancelledOutsideSlurmlab",
            format!("job {job_id} was cancelled outside slurmlab (scancel or an administrator)"),
        ),
        BaseState::Timeout => (
            AllocationPhase::Failed,
            "TimeLimit",
            format!(
                "job {job_id} reached its time limit of {} minutes",
                job.time_limit_minutes.unwrap_or(0)
            ),
        ),
        BaseState::NodeFail => (
            AllocationPhase::Failed,
            "NodeFail",
            format!(
                "job {job_id} lost its node {}",
                job.nodes.clone().unwrap_or_default()
            ),
        ),
        BaseState::Preempted => (
            AllocationPhase::Failed,
            "Preempted",
            format!("job {job_id} was preempted"),
        ),
        BaseState::OutOfMemory => (
            AllocationPhase::Failed,
            "OutOfMemory",
            format!("job {job_id} ran out of memory: ask for more memory"),
        ),
        BaseState::BootFail => (
            AllocationPhase::Failed,
            "BootFail",
            format!("job {job_id}'s node failed to boot"),
        ),
        BaseState::Deadline => (
            AllocationPhase::Failed,
            "Deadline",
            format!("job {job_id} missed its deadline"),
        ),
        BaseState::Failed => (
            AllocationPhase::Failed,
            "JobFailed",
            format!(
                "job {job_id} failed (exit code {}{}); the job's output file on the cluster says why",
                code.map_or("?".into(), |c| c.to_string()),
                signal.map_or(String::new(), |s| format!(", signal {s}"))
            ),
        ),
        other => (
            AllocationPhase::Failed,
            "JobEnded",
            format!("job {job_id} ended in state {}", other.as_str()),
        ),
    };
    Observation {
        phase,
        reason: reason.to_owned(),
        message,
        endpoint: None,
    }
}

/// The `status.slurm` block for a job record.
pub fn job_status(job_id: u64, job: Option<&JobInfo>, user: &str) -> SlurmJobStatus {
    let time = |t: Option<i64>| t.and_then(|s| Timestamp::from_second(s).ok()).map(Time);
    let mut s = SlurmJobStatus {
        job_id: i64::try_from(job_id).ok(),
        user: Some(user.to_owned()),
        ..Default::default()
    };
    if let Some(job) = job {
        s.state = Some(job.state.base.as_str().to_owned());
        s.reason = job.reason.clone();
        s.node = job.batch_host.clone().or_else(|| job.nodes.clone());
        s.submit_time = time(job.submit_time);
        s.start_time = time(job.start_time.filter(|_| !job.state.is_pending()));
        s.end_time = time(job.end_time.filter(|_| !job.state.is_pending()));
        s.exit_code = job
            .exit
            .as_ref()
            .filter(|_| job.state.is_finished())
            .and_then(|e| e.return_code)
            .and_then(|c| i32::try_from(c).ok());
    }
    s
}

/// Whether an allocation takes room under its namespace's quota: it has not ended and
/// holds a job or a claim to submit one (a claim counts from before its submit, so
/// concurrent submissions cannot all fit in the last free place).
pub fn counts_for_quota(s: &ComputeAllocationStatus) -> bool {
    !s.phase.is_final() && (s.job_id().is_some() || s.submit_claim.is_some())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_claim_takes_quota_room_before_its_job_exists() {
        let mut s = ComputeAllocationStatus::default();
        assert!(!counts_for_quota(&s), "nothing claimed, no job");
        s.submit_claim = Some(0);
        assert!(counts_for_quota(&s), "claimed, not yet submitted");
        s.submit_claim = None;
        s.slurm = Some(job_status(7, None, "u"));
        assert!(counts_for_quota(&s), "a job");
        s.phase = AllocationPhase::Failed;
        assert!(!counts_for_quota(&s), "ended");
    }

    use super::*;
    use crate::slurm::ExitStatus;

    fn job(states: &[&str], comment: Option<&str>) -> JobInfo {
        JobInfo {
            name: "slurmlab-ns-a".into(),
            nodes: Some("node17".into()),
            batch_host: Some("node17".into()),
            comment: comment.map(str::to_owned),
            user: Some("u".into()),
            submit_time: Some(1_700_000_000),
            start_time: Some(1_700_000_010),
            end_time: Some(1_700_003_610),
            time_limit_minutes: Some(60),
            ..JobInfo::sample(9, states)
        }
    }

    /// What job 9 looks like with `probe`, no endpoint policy, not cancelled by us.
    fn seen(j: &JobInfo, probe: Probe) -> Observation {
        observe(9, Some(j), false, &probe, &EndpointPolicy::default(), false)
    }

    const OWNER: &str = "slurmlab owner=ns/a uid=u1 attempt=0";

    #[test]
    fn pending_shows_slurms_reason() {
        let mut j = job(&["PENDING"], Some(OWNER));
        j.reason = Some("Resources".into());
        let o = seen(&j, Probe::NotTried);
        assert_eq!(
            (o.phase, o.reason.as_str(), o.message.as_str()),
            (
                AllocationPhase::Queued,
                "Resources",
                "job 9 pending: Resources"
            )
        );
    }

    #[test]
    fn running_goes_ready_only_after_the_endpoint_answers() {
        let j = job(&["RUNNING"], Some(OWNER));
        assert_eq!(seen(&j, Probe::NotTried).phase, AllocationPhase::Starting);
        let comment = format!("{OWNER} jupyter=node17:4000");
        let j = job(&["RUNNING"], Some(&comment));
        let o = seen(&j, Probe::Failed("connection refused".into()));
        assert_eq!(
            (o.phase, o.reason.as_str()),
            (AllocationPhase::Starting, "ServerNotAnswering")
        );
        let o = seen(&j, Probe::Answered);
        assert_eq!(o.phase, AllocationPhase::Ready);
        assert_eq!(o.endpoint.as_deref(), Some("node17:4000"));
    }

    #[test]
    fn a_ready_server_survives_a_missed_probe_but_not_three() {
        let comment = format!("{OWNER} jupyter=node17:4000");
        let j = job(&["RUNNING"], Some(&comment));
        let failed = seen(&j, Probe::Failed("timed out".into()));
        let (o, n) = hold_ready(AllocationPhase::Ready, failed.clone(), 0);
        assert_eq!(
            (o.phase, o.reason.as_str(), n),
            (AllocationPhase::Ready, "ProbeMissed", 1)
        );
        assert_eq!(o.endpoint.as_deref(), Some("node17:4000"));
        let (o, n) = hold_ready(AllocationPhase::Ready, failed.clone(), n);
        assert_eq!((o.phase, n), (AllocationPhase::Ready, 2));
        let (o, n) = hold_ready(AllocationPhase::Ready, failed.clone(), n);
        assert_eq!(
            (o.phase, o.reason.as_str(), n),
            (AllocationPhase::Starting, "ServerNotAnswering", 3)
        );
        // A server that never answered is not held.
        let (o, _) = hold_ready(AllocationPhase::Starting, failed, 0);
        assert_eq!(o.phase, AllocationPhase::Starting);
        // An answer resets the count.
        let ok = seen(&j, Probe::Answered);
        assert_eq!(hold_ready(AllocationPhase::Ready, ok, 2).1, 0);
    }

    #[test]
    fn an_endpoint_on_another_host_is_not_trusted() {
        let comment = format!("{OWNER} jupyter=evil.example:4000");
        let j = job(&["RUNNING"], Some(&comment));
        let o = seen(&j, Probe::Answered);
        assert_eq!(
            (o.phase, o.reason.as_str()),
            (AllocationPhase::Starting, "EndpointMismatch")
        );
        // Unless it is the address the admin configured servers to bind to.
        let comment = format!("{OWNER} jupyter=127.0.0.1:4000");
        let j = job(&["RUNNING"], Some(&comment));
        assert_eq!(
            observe(
                9,
                Some(&j),
                false,
                &Probe::Answered,
                &EndpointPolicy {
                    bind_address: Some("127.0.0.1"),
                    ..Default::default()
                },
                false
            )
            .phase,
            AllocationPhase::Ready
        );
    }

    #[test]
    fn every_ending_has_a_phase_and_a_reason() {
        let cases = [
            (
                &["COMPLETED"][..],
                false,
                AllocationPhase::Completed,
                "JobCompleted",
            ),
            (
                &["CANCELLED"],
                true,
                AllocationPhase::Completed,
                "Cancelled",
            ),
            (
                &["CANCELLED"],
                false,
                AllocationPhase::Failed,
                "CancelledOutsideSlurmlab",
            ),
            (&["TIMEOUT"], false, AllocationPhase::Failed, "TimeLimit"),
            (&["NODE_FAIL"], false, AllocationPhase::Failed, "NodeFail"),
            (&["PREEMPTED"], false, AllocationPhase::Failed, "Preempted"),
            (
                &["OUT_OF_MEMORY"],
                false,
                AllocationPhase::Failed,
                "OutOfMemory",
            ),
            (&["FAILED"], false, AllocationPhase::Failed, "JobFailed"),
            (
                &["CANCELLED", "COMPLETING"],
                false,
                AllocationPhase::Terminating,
                "Completing",
            ),
        ];
        for (states, ours, phase, reason) in cases {
            let mut j = job(states, Some(OWNER));
            j.exit = Some(ExitStatus {
                return_code: Some(1),
                signal: None,
            });
            let o = observe(
                9,
                Some(&j),
                false,
                &Probe::NotTried,
                &EndpointPolicy::default(),
                ours,
            );
            assert_eq!((o.phase, o.reason.as_str()), (phase, reason), "{states:?}");
            assert!(o.endpoint.is_none());
        }
        let o = observe(
            9,
            Some(&job(&["TIMEOUT"], None)),
            false,
            &Probe::NotTried,
            &EndpointPolicy::default(),
            false,
        );
        assert_eq!(o.message, "job 9 reached its time limit of 60 minutes");
    }

    #[test]
    fn after_our_cancel_a_stale_running_state_stays_terminating() {
        let comment = format!("{OWNER} jupyter=127.0.0.1:4000");
        let j = job(&["RUNNING"], Some(&comment));
        let o = observe(
            9,
            Some(&j),
            false,
            &Probe::Answered,
            &EndpointPolicy {
                bind_address: Some("127.0.0.1"),
                ..Default::default()
            },
            true,
        );
        assert_eq!(
            (o.phase, o.reason.as_str()),
            (AllocationPhase::Terminating, "Cancelling")
        );
        let o = observe(
            9,
            Some(&job(&["CANCELLED"], None)),
            false,
            &Probe::NotTried,
            &EndpointPolicy::default(),
            true,
        );
        assert_eq!(o.phase, AllocationPhase::Completed);
    }

    #[test]
    fn a_vanished_job_fails_and_a_missing_record_waits() {
        let j = job(&["RUNNING"], Some(OWNER));
        let o = observe(
            9,
            Some(&j),
            true,
            &Probe::NotTried,
            &EndpointPolicy::default(),
            false,
        );
        assert_eq!(
            (o.phase, o.reason.as_str()),
            (AllocationPhase::Failed, "JobVanished")
        );
        assert!(o.message.contains("last seen RUNNING"), "{}", o.message);
        assert_eq!(
            observe(
                9,
                None,
                false,
                &Probe::NotTried,
                &EndpointPolicy::default(),
                false
            )
            .phase,
            AllocationPhase::Queued
        );
    }

    #[test]
    fn job_status_carries_times_only_when_meaningful() {
        let s = job_status(9, Some(&job(&["PENDING"], None)), "u");
        assert_eq!(s.job_id, Some(9));
        assert!(
            s.start_time.is_none() && s.end_time.is_none(),
            "pending jobs have only estimates"
        );
        let mut done = job(&["COMPLETED"], None);
        done.exit = Some(ExitStatus {
            return_code: Some(0),
            signal: None,
        });
        let s = job_status(9, Some(&done), "u");
        assert_eq!(s.exit_code, Some(0));
        assert_eq!(s.node.as_deref(), Some("node17"));
        assert!(s.end_time.is_some());
    }
}
