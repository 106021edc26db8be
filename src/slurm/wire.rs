//! What slurmrestd sends and expects on the wire, for v0.0.40 to v0.0.45, and the
//! mapping to the domain model. The job fields slurmlab uses have the same shape in all
//! six versions; where a version differs (ping, cancel status, string job ids in
//! `/jobs/state/`) the types accept every form.

use serde::Deserialize;
use serde_json::{Value, json};

use super::model::{
    ExitStatus, JobInfo, JobSpec, JobState, JobStateEntry, PartitionInfo, PingInfo,
};
use super::version::ApiVersion;

/// `{set, infinite, number}` (v0.0.40+) or a plain number (older fields).
#[derive(Deserialize, Debug, Clone, Copy)]
#[serde(untagged)]
pub enum NoVal {
    Plain(i64),
    Struct {
        #[serde(default)]
        set: bool,
        #[serde(default)]
        infinite: bool,
        #[serde(default)]
        number: i64,
    },
}

impl NoVal {
    /// The number, if set and finite.
    pub fn value(self) -> Option<i64> {
        match self {
            Self::Plain(n) => Some(n),
            Self::Struct {
                set: true,
                infinite: false,
                number,
            } => Some(number),
            Self::Struct { .. } => None,
        }
    }
}

/// Times of 0 mean "not known".
fn time(v: Option<NoVal>) -> Option<i64> {
    v.and_then(NoVal::value).filter(|t| *t > 0)
}

/// A state list, or a single string in older parsers.
#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
pub enum StateList {
    List(Vec<String>),
    One(String),
}

impl StateList {
    pub fn to_state(&self) -> JobState {
        match self {
            Self::List(l) => JobState::from_list(l),
            Self::One(s) => JobState::from_list(&[s]),
        }
    }
}

/// A job id as a number, or as a string (`/jobs/state/` on 26.05).
#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
pub enum JobId {
    Number(u64),
    Text(String),
}

impl JobId {
    pub fn value(&self) -> Option<u64> {
        match self {
            Self::Number(n) => Some(*n),
            Self::Text(s) => s.parse().ok(),
        }
    }
}

/// One entry of `errors` or `warnings`.
#[derive(Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct Problem {
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub error_number: i64,
    #[serde(default)]
    pub error: String,
    #[serde(default)]
    pub source: String,
}

#[derive(Deserialize, Debug, Clone, Default)]
pub struct Meta {
    #[serde(default)]
    pub slurm: Option<MetaSlurm>,
}

#[derive(Deserialize, Debug, Clone, Default)]
pub struct MetaSlurm {
    #[serde(default)]
    pub release: String,
}

/// Fields every response has.
#[derive(Deserialize, Debug, Clone, Default)]
pub struct Envelope {
    #[serde(default)]
    pub errors: Vec<Problem>,
    #[serde(default)]
    pub warnings: Vec<Problem>,
    #[serde(default)]
    pub meta: Meta,
}

#[derive(Deserialize, Debug, Clone)]
pub struct ExitCode {
    #[serde(default)]
    pub return_code: Option<NoVal>,
    #[serde(default)]
    pub signal: Option<Signal>,
}

#[derive(Deserialize, Debug, Clone)]
pub struct Signal {
    #[serde(default)]
    pub id: Option<NoVal>,
}

/// `exit_code`: the verbose object of v0.0.40+, or a plain number.
#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
pub enum ExitField {
    Plain(i64),
    Verbose(ExitCode),
}

/// The subset of a job record slurmlab reads.
#[derive(Deserialize, Debug, Clone)]
pub struct Job {
    pub job_id: u64,
    #[serde(default)]
    pub name: String,
    pub job_state: StateList,
    #[serde(default)]
    pub state_reason: Option<String>,
    #[serde(default)]
    pub nodes: Option<String>,
    #[serde(default)]
    pub batch_host: Option<String>,
    #[serde(default)]
    pub comment: Option<String>,
    #[serde(default)]
    pub user_name: Option<String>,
    #[serde(default)]
    pub partition: Option<String>,
    #[serde(default)]
    pub submit_time: Option<NoVal>,
    #[serde(default)]
    pub start_time: Option<NoVal>,
    #[serde(default)]
    pub end_time: Option<NoVal>,
    #[serde(default)]
    pub time_limit: Option<NoVal>,
    #[serde(default)]
    pub exit_code: Option<ExitField>,
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

impl Job {
    pub fn into_info(self) -> JobInfo {
        let state = self.job_state.to_state();
        let exit = self.exit_code.map(|e| match e {
            ExitField::Plain(n) => ExitStatus {
                return_code: Some(n),
                signal: None,
            },
            ExitField::Verbose(v) => ExitStatus {
                return_code: v.return_code.and_then(NoVal::value),
                signal: v.signal.and_then(|s| s.id).and_then(NoVal::value),
            },
        });
        JobInfo {
            id: self.job_id,
            name: self.name,
            state,
            reason: non_empty(self.state_reason).filter(|r| r != "None"),
            nodes: non_empty(self.nodes),
            batch_host: non_empty(self.batch_host),
            comment: non_empty(self.comment),
            user: non_empty(self.user_name),
            partition: non_empty(self.partition),
            submit_time: time(self.submit_time),
            start_time: time(self.start_time),
            end_time: time(self.end_time),
            time_limit_minutes: self
                .time_limit
                .and_then(NoVal::value)
                .and_then(|m| u64::try_from(m).ok()),
            exit,
        }
    }
}

/// `GET /job/{id}` and `GET /jobs/`.
#[derive(Deserialize, Debug, Clone)]
pub struct JobsResponse {
    #[serde(default)]
    pub jobs: Vec<Job>,
    #[serde(default)]
    pub last_update: Option<NoVal>,
    #[serde(flatten)]
    pub envelope: Envelope,
}

/// `GET /slurmdb/.../jobs/`: accounting records (a different shape from slurmctld's).
#[derive(Deserialize, Debug, Clone)]
pub struct AccountedJobsResponse {
    #[serde(default)]
    pub jobs: Vec<AccountedJobRecord>,
    #[serde(flatten)]
    pub envelope: Envelope,
}

#[derive(Deserialize, Debug, Clone)]
pub struct AccountedJobRecord {
    pub job_id: u64,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub user: Option<String>,
    pub state: AccountedState,
}

#[derive(Deserialize, Debug, Clone)]
pub struct AccountedState {
    pub current: StateList,
}

impl AccountedJobsResponse {
    pub fn into_jobs(self) -> Vec<super::AccountedJob> {
        self.jobs
            .into_iter()
            .map(|j| super::AccountedJob {
                id: j.job_id,
                name: j.name,
                user: non_empty(j.user),
                state: j.state.current.to_state(),
            })
            .collect()
    }
}

/// The query string of an accounting lookup: jobs pending, running or suspended now
/// (with states and no time window slurmdbd looks at the present). Lists are repeated
/// parameters: slurmrestd 24.11 and 26.05 refuse commas there ("Unable to parse query")
/// and read an escaped comma as one unknown value. Values outside the characters of
/// SLURM user and slurmlab job names are left out rather than escaped: they cannot name
/// a job of ours.
pub fn accounting_query(query: &super::AccountingQuery) -> String {
    let plain = |v: &&String| {
        !v.is_empty()
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    };
    let mut q = vec![
        "state=PENDING".to_owned(),
        "state=RUNNING".to_owned(),
        "state=SUSPENDED".to_owned(),
        "skip_steps=true".to_owned(),
    ];
    q.extend(
        query
            .users
            .iter()
            .filter(plain)
            .map(|u| format!("users={u}")),
    );
    q.extend(
        query
            .names
            .iter()
            .filter(plain)
            .map(|n| format!("job_name={n}")),
    );
    q.join("&")
}

/// `GET /jobs/state/`: the spec declares full job records, the servers send `{job_id, state}`.
#[derive(Deserialize, Debug, Clone)]
pub struct StatesResponse {
    #[serde(default)]
    pub jobs: Vec<StateEntry>,
    #[serde(flatten)]
    pub envelope: Envelope,
}

#[derive(Deserialize, Debug, Clone)]
pub struct StateEntry {
    pub job_id: JobId,
    pub state: StateList,
}

impl StatesResponse {
    pub fn into_entries(self) -> Vec<JobStateEntry> {
        self.jobs
            .into_iter()
            .filter_map(|e| {
                Some(JobStateEntry {
                    id: e.job_id.value()?,
                    state: e.state.to_state(),
                })
            })
            .collect()
    }
}

/// `POST /job/submit`.
#[derive(Deserialize, Debug, Clone)]
pub struct SubmitResponse {
    #[serde(default)]
    pub job_id: Option<u64>,
    #[serde(default)]
    pub job_submit_user_msg: Option<String>,
    #[serde(flatten)]
    pub envelope: Envelope,
}

/// `GET /ping`.
#[derive(Deserialize, Debug, Clone)]
pub struct PingResponse {
    #[serde(default)]
    pub pings: Vec<Ping>,
    #[serde(flatten)]
    pub envelope: Envelope,
}

#[derive(Deserialize, Debug, Clone)]
pub struct Ping {
    /// v0.0.40 to v0.0.44: "UP" or "DOWN".
    #[serde(default)]
    pub pinged: Option<String>,
    /// v0.0.41 and newer.
    #[serde(default)]
    pub responding: Option<bool>,
    /// v0.0.45: slurmctld's status text, e.g. "Protocol authentication error".
    #[serde(default)]
    pub status: Option<String>,
}

impl PingResponse {
    /// Reads the ping. A bad token still gets HTTP 200 here, with the controller "down":
    /// `responding` (or `pinged`) is the truth.
    pub fn into_info(self) -> PingInfo {
        let release = self
            .envelope
            .meta
            .slurm
            .map(|s| s.release)
            .unwrap_or_default();
        let first = self.pings.into_iter().next();
        let responding =
            first
                .as_ref()
                .is_some_and(|p| match (p.responding, p.pinged.as_deref()) {
                    (Some(r), _) => r,
                    (None, Some(pinged)) => pinged == "UP",
                    (None, None) => false,
                });
        PingInfo {
            release,
            responding,
            status: first.and_then(|p| p.status).filter(|s| s != "No error"),
        }
    }
}

/// `DELETE /job/{id}` (v0.0.42+ list per-job results in `status`).
#[derive(Deserialize, Debug, Clone)]
pub struct CancelResponse {
    #[serde(default)]
    pub status: Vec<CancelStatus>,
    #[serde(flatten)]
    pub envelope: Envelope,
}

#[derive(Deserialize, Debug, Clone)]
pub struct CancelStatus {
    #[serde(default)]
    pub error: Option<CancelError>,
}

#[derive(Deserialize, Debug, Clone)]
pub struct CancelError {
    #[serde(default)]
    pub code: i64,
    #[serde(default)]
    pub message: String,
}

/// SLURM error numbers slurmlab tells apart.
pub mod errno {
    /// Invalid job id specified.
    pub const INVALID_JOB_ID: i64 = 2017;
    /// Job/step already completing or completed (cancel of a finished job).
    pub const ALREADY_DONE: i64 = 2021;
    /// Authentication failure (e.g. bad token).
    pub const AUTH: i64 = 1007;
}

/// The JSON body of `POST /job/submit` for `version`. All of v0.0.40 to v0.0.45 take
/// the same shape: environment as `["K=V"]`, numbers as `{set, number}`.
pub fn submit_body(_version: ApiVersion, spec: &JobSpec) -> Value {
    let number = |n: u64| json!({"set": true, "infinite": false, "number": n});
    let mut job = serde_json::Map::new();
    let mut put = |k: &str, v: Value| {
        job.insert(k.to_owned(), v);
    };
    put("name", json!(spec.name));
    put("current_working_directory", json!(spec.working_directory));
    put(
        "environment",
        json!(
            spec.environment
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
        ),
    );
    put("minimum_nodes", json!(spec.nodes.max(1)));
    put("maximum_nodes", json!(spec.nodes.max(1)));
    put("tasks", json!(1));
    put("cpus_per_task", json!(spec.cpus.max(1)));
    // Never requeued by SLURM (JobRequeue=1 is its default): a requeued job keeps its id
    // and its old comment, so it would come back as the same allocation on another
    // host with a stale endpoint. The controller decides about restarts
    // (restartPolicy), each a new job.
    put("requeue", json!(false));
    if spec.hold {
        put("hold", json!(true));
    }
    let optional = [
        ("partition", &spec.partition),
        ("account", &spec.account),
        ("qos", &spec.qos),
        ("constraints", &spec.constraint),
        ("reservation", &spec.reservation),
        ("standard_output", &spec.standard_output),
        ("standard_error", &spec.standard_error),
        ("comment", &spec.comment),
    ];
    for (key, value) in optional {
        if let Some(v) = value {
            put(key, json!(v));
        }
    }
    if let Some(mb) = spec.memory_mb {
        put("memory_per_node", number(mb));
    }
    if let Some(minutes) = spec.time_limit_minutes {
        put("time_limit", number(minutes));
    }
    if let Some(gres) = &spec.gres {
        // "gpu:2,shard:1" -> "gres/gpu:2,gres/shard:1" (TRES syntax).
        let tres: Vec<String> = gres
            .split(',')
            .filter(|g| !g.is_empty())
            .map(|g| {
                if g.starts_with("gres/") {
                    g.to_owned()
                } else {
                    format!("gres/{g}")
                }
            })
            .collect();
        put("tres_per_node", json!(tres.join(",")));
    }
    json!({"script": spec.script, "job": job})
}

/// The JSON body of `POST /job/{id}` that sets the comment.
pub fn comment_update_body(comment: &str) -> Value {
    json!({"comment": comment})
}

/// `GET /partitions` (the same shape in v0.0.40 to v0.0.45).
#[derive(Deserialize, Debug, Default)]
pub struct PartitionsResponse {
    #[serde(default)]
    pub partitions: Vec<WirePartition>,
}

#[derive(Deserialize, Debug, Default)]
pub struct WirePartition {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub nodes: WirePartitionNodes,
    #[serde(default)]
    pub cpus: WirePartitionCpus,
    #[serde(default)]
    pub maximums: WirePartitionMaximums,
    #[serde(default)]
    pub partition: WirePartitionState,
}

#[derive(Deserialize, Debug, Default)]
pub struct WirePartitionNodes {
    #[serde(default)]
    pub total: i64,
}

#[derive(Deserialize, Debug, Default)]
pub struct WirePartitionCpus {
    #[serde(default)]
    pub total: i64,
}

#[derive(Deserialize, Debug, Default)]
pub struct WirePartitionMaximums {
    #[serde(default)]
    pub time: Option<NoVal>,
}

#[derive(Deserialize, Debug, Default)]
pub struct WirePartitionState {
    #[serde(default)]
    pub state: Vec<String>,
}

/// `GET /nodes` (the fields used have one shape in v0.0.40 to v0.0.45).
#[derive(Deserialize, Debug, Default)]
pub struct NodesResponse {
    #[serde(default)]
    pub nodes: Vec<WireNode>,
}

#[derive(Deserialize, Debug, Default)]
pub struct WireNode {
    #[serde(default)]
    pub state: Vec<String>,
    #[serde(default)]
    pub cpus: i64,
    #[serde(default)]
    pub alloc_cpus: i64,
    #[serde(default)]
    pub partitions: Vec<String>,
    #[serde(default)]
    pub gres: String,
}

/// Node states that take no new job.
const UNAVAILABLE: &[&str] = &[
    "DOWN",
    "DRAIN",
    "DRAINED",
    "DRAINING",
    "FAIL",
    "FUTURE",
    "MAINTENANCE",
    "NOT_RESPONDING",
    "POWERED_DOWN",
    "RESERVED",
];

fn count(n: i64) -> u32 {
    u32::try_from(n.max(0)).unwrap_or(u32::MAX)
}

/// Partitions with what their nodes have free now (pure; unit-tested).
pub fn partition_summary(
    partitions: PartitionsResponse,
    nodes: NodesResponse,
) -> Vec<PartitionInfo> {
    partitions
        .partitions
        .into_iter()
        .map(|p| {
            let mut info = PartitionInfo {
                nodes: count(p.nodes.total),
                cpus: count(p.cpus.total),
                max_time_minutes: p.maximums.time.and_then(NoVal::value),
                state: p.partition.state,
                ..Default::default()
            };
            for n in nodes
                .nodes
                .iter()
                .filter(|n| n.partitions.contains(&p.name))
            {
                let usable = !n.state.iter().any(|s| UNAVAILABLE.contains(&s.as_str()));
                if !usable {
                    continue;
                }
                let free = n.cpus.saturating_sub(n.alloc_cpus);
                info.idle_cpus = info.idle_cpus.saturating_add(count(free));
                if n.state.iter().any(|s| s == "IDLE") && n.alloc_cpus == 0 {
                    info.idle_nodes = info.idle_nodes.saturating_add(1);
                }
                for g in n.gres.split(',').map(str::trim).filter(|g| !g.is_empty()) {
                    // "gpu:a100:4(S:0-1)": the socket binding is not a resource.
                    let g = g.split('(').next().unwrap_or(g).to_owned();
                    if !info.gres.contains(&g) {
                        info.gres.push(g);
                    }
                }
            }
            info.name = p.name;
            info
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use super::*;
    use crate::slurm::BaseState;

    fn fixtures() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/slurm/fixtures")
    }

    /// Every recorded fixture directory: v0.0.40..v0.0.45 and 26.05's v0.0.42.
    fn version_dirs() -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(fixtures())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        dirs.sort();
        assert_eq!(dirs.len(), 7, "{dirs:?}");
        dirs
    }

    fn read<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> T {
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
        let de = &mut serde_json::Deserializer::from_str(&text);
        serde_path_to_error::deserialize(de)
            .unwrap_or_else(|e| panic!("{path:?} at {}: {}", e.path(), e.inner()))
    }

    #[test]
    fn job_records_of_every_version_map_to_the_model() {
        let mut seen = 0;
        for dir in version_dirs() {
            for (file, base, completing) in [
                ("job-get-pending.json", BaseState::Pending, false),
                ("job-get-running.json", BaseState::Running, false),
                ("job-get-with-comment.json", BaseState::Running, false),
                ("job-get-completed.json", BaseState::Completed, false),
                ("job-get-cancelled.json", BaseState::Cancelled, false),
            ] {
                let path = dir.join(file);
                if !path.exists() {
                    continue;
                }
                let resp: JobsResponse = read(&path);
                assert!(resp.envelope.errors.is_empty(), "{path:?}");
                let job = resp.jobs.into_iter().next().unwrap().into_info();
                assert_eq!(job.state.base, base, "{path:?}");
                assert_eq!(job.state.has_flag("COMPLETING"), completing, "{path:?}");
                assert_eq!(job.user.as_deref(), Some("slurmjob"), "{path:?}");
                assert!(
                    job.submit_time.is_some() && job.time_limit_minutes.is_some(),
                    "{path:?}"
                );
                match base {
                    BaseState::Pending => {
                        assert_eq!(job.reason.as_deref(), Some("Resources"), "{path:?}");
                        assert!(job.batch_host.is_none(), "{path:?}");
                    }
                    BaseState::Running => {
                        assert_eq!(job.batch_host.as_deref(), Some("vm"), "{path:?}")
                    }
                    BaseState::Completed => {
                        assert_eq!(
                            job.exit,
                            Some(ExitStatus {
                                return_code: Some(0),
                                signal: None
                            }),
                            "{path:?}"
                        )
                    }
                    BaseState::Cancelled => {
                        assert_eq!(job.comment.as_deref(), Some("jupyter=vm:8888"), "{path:?}");
                        assert_eq!(
                            job.exit.as_ref().unwrap().signal,
                            Some(15),
                            "SIGTERM: {path:?}"
                        );
                        assert_eq!(job.exit.as_ref().unwrap().return_code, None, "{path:?}");
                    }
                    _ => unreachable!(),
                }
                if file == "job-get-with-comment.json" {
                    assert_eq!(job.comment.as_deref(), Some("jupyter=vm:8888"), "{path:?}");
                }
                assert_ne!(
                    job.reason.as_deref(),
                    Some("None"),
                    "'None' means no reason"
                );
                seen += 1;
            }
        }
        assert!(seen >= 30, "only {seen} records checked");
    }

    #[test]
    fn cancelling_is_not_finished_yet() {
        let mut seen = 0;
        for dir in version_dirs() {
            let path = dir.join("job-get-cancelling.json");
            if !path.exists() {
                continue;
            }
            let resp: JobsResponse = read(&path);
            let job = resp.jobs.into_iter().next().unwrap().into_info();
            assert_eq!(job.state.base, BaseState::Cancelled);
            // Recorded mid-cancel on most versions (v0.0.45's recording was already done).
            assert_eq!(
                job.state.is_finished(),
                !job.state.has_flag(FLAG),
                "{path:?}"
            );
            seen += 1;
        }
        assert!(seen >= 4);
    }
    const FLAG: &str = crate::slurm::FLAG_COMPLETING;

    #[test]
    fn unknown_job_answers_carry_error_2017() {
        for dir in version_dirs() {
            let env: Envelope = read(&dir.join("job-get-unknown.json"));
            assert!(
                env.errors
                    .iter()
                    .any(|p| p.error_number == errno::INVALID_JOB_ID),
                "{dir:?}"
            );
        }
    }

    #[test]
    fn batched_state_answers_with_string_ids() {
        let mut seen = 0;
        for dir in version_dirs() {
            let path = dir.join("jobs-state.json");
            if !path.exists() {
                continue;
            }
            let entries = read::<StatesResponse>(&path).into_entries();
            assert!(!entries.is_empty(), "{path:?}");
            assert!(entries.iter().all(|e| e.id > 0));
            seen += 1;
        }
        assert!(seen >= 4);
        // 24.11 sent numbers in some versions: both forms are read.
        let mixed: StatesResponse =
            serde_json::from_str(r#"{"jobs":[{"job_id":"3","state":["PENDING"]},{"job_id":4,"state":["RUNNING","COMPLETING"]}]}"#)
                .unwrap();
        let e = mixed.into_entries();
        assert_eq!((e[0].id, e[1].id), (3, 4));
        assert!(!e[1].state.is_running());
    }

    #[test]
    fn pings_of_every_version_and_a_refused_token() {
        for dir in version_dirs() {
            let info = read::<PingResponse>(&dir.join("ping.json")).into_info();
            assert!(info.responding, "{dir:?}");
            assert!(
                info.release.starts_with("24.11") || info.release.starts_with("26.05"),
                "{dir:?}: {}",
                info.release
            );
            let bad = dir.join("auth-bad-token-ping.json");
            if bad.exists() {
                let info = read::<PingResponse>(&bad).into_info();
                assert!(!info.responding, "{bad:?}");
            }
        }
        let v45 =
            read::<PingResponse>(&fixtures().join("v0.0.45/auth-bad-token-ping.json")).into_info();
        assert_eq!(v45.status.as_deref(), Some("Protocol authentication error"));
    }

    #[test]
    fn cancel_answers_tell_unknown_jobs_apart() {
        for dir in version_dirs() {
            let unknown: CancelResponse = read(&dir.join("cancel-unknown.json"));
            let codes: Vec<i64> = unknown
                .status
                .iter()
                .filter_map(|s| s.error.as_ref().map(|e| e.code))
                .collect();
            // v0.0.40/41 on 24.11 say nothing at all for an unknown job; later ones say 2017.
            assert!(
                codes.is_empty() || codes == [errno::INVALID_JOB_ID],
                "{dir:?}: {codes:?}"
            );
            let ok: CancelResponse = read(&dir.join("cancel-response.json"));
            assert!(ok.envelope.errors.is_empty());
        }
    }

    #[test]
    fn rejected_submissions_carry_slurms_reason() {
        let resp: SubmitResponse = read(&fixtures().join("v0.0.45/submit-no-env-response.json"));
        assert_eq!(resp.job_id, None);
        assert_eq!(resp.envelope.errors[0].error_number, 2127);
        assert_eq!(
            resp.envelope.errors[0].error,
            "Environment is missing in job"
        );
        let ok: SubmitResponse = read(&fixtures().join("v0.0.40/submit-response.json"));
        assert_eq!(ok.job_id, Some(1));
    }

    fn full_spec() -> JobSpec {
        JobSpec {
            name: "slurmlab-ns-name".into(),
            script: "#!/bin/bash\ntrue\n".into(),
            partition: Some("debug".into()),
            account: Some("acct".into()),
            qos: Some("normal".into()),
            nodes: 2,
            cpus: 4,
            memory_mb: Some(16384),
            gres: Some("gpu:a100:2,shard:1".into()),
            time_limit_minutes: Some(90),
            constraint: Some("skylake&ib".into()),
            reservation: Some("maint".into()),
            working_directory: "/tmp".into(),
            environment: BTreeMap::from([
                ("HOME".into(), "/home/u".into()),
                ("PATH".into(), "/usr/bin:/bin".into()),
            ]),
            standard_output: Some("/tmp/o-%j".into()),
            standard_error: Some("/tmp/e-%j".into()),
            comment: Some("slurmlab:ns/name/uid".into()),
            hold: true,
        }
    }

    #[test]
    fn submit_bodies_use_only_fields_each_versions_spec_declares() {
        let specs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/slurm/openapi");
        for v in ApiVersion::ALL {
            let doc: Value = read(&specs.join(format!("slurmrestd-{v}.json")));
            let schemas = &doc["components"]["schemas"];
            let desc = &schemas[format!("{v}_job_desc_msg")]["properties"];
            assert!(desc.is_object(), "{v}: no job_desc_msg in the spec");
            let body = submit_body(v, &full_spec());
            for key in body["job"].as_object().unwrap().keys() {
                assert!(
                    desc.get(key).is_some(),
                    "{v}: the spec has no job field {key}"
                );
            }
            let req = &schemas[format!("{v}_job_submit_req")]["properties"];
            for key in body.as_object().unwrap().keys() {
                assert!(
                    req.get(key).is_some(),
                    "{v}: the spec has no submit field {key}"
                );
            }
        }
    }

    #[test]
    fn submit_body_maps_resources_to_slurm_fields() {
        let body = submit_body(ApiVersion::V0_0_42, &full_spec());
        let job = &body["job"];
        assert_eq!(
            job["environment"],
            json!(["HOME=/home/u", "PATH=/usr/bin:/bin"])
        );
        assert_eq!(
            job["time_limit"],
            json!({"set": true, "infinite": false, "number": 90})
        );
        assert_eq!(job["memory_per_node"]["number"], 16384);
        assert_eq!(job["tres_per_node"], "gres/gpu:a100:2,gres/shard:1");
        assert_eq!(
            (job["minimum_nodes"].clone(), job["cpus_per_task"].clone()),
            (json!(2), json!(4))
        );
        assert_eq!(job["constraints"], "skylake&ib");
        assert_eq!(job["requeue"], false, "restarts are the controller's");
        assert_eq!(body["script"], "#!/bin/bash\ntrue\n");
        // What the recorded real submit of that version looked like, field by field.
        let recorded: Value = read(&fixtures().join("v0.0.42/submit-request.json"));
        for key in [
            "environment",
            "time_limit",
            "current_working_directory",
            "partition",
        ] {
            assert!(
                recorded["job"].get(key).is_some(),
                "the recorded request has {key}"
            );
        }
    }

    #[test]
    fn accounting_queries_filter_by_user_name_and_unfinished_state() {
        let q = crate::slurm::AccountingQuery {
            users: vec!["alice".into(), "bob,root".into(), "carol".into()],
            names: vec!["slurmlab-ns-a".into()],
            as_user: None,
        };
        assert_eq!(
            accounting_query(&q),
            "state=PENDING&state=RUNNING&state=SUSPENDED&skip_steps=true\
             &users=alice&users=carol&job_name=slurmlab-ns-a"
        );
        let none = crate::slurm::AccountingQuery::default();
        assert!(!accounting_query(&none).contains("users="));
    }

    #[test]
    fn accounting_records_map_to_jobs() {
        let body = r#"{"jobs": [
            {"job_id": 7, "name": "slurmlab-a-b", "user": "alice", "state": {"current": ["RUNNING"], "reason": "None"}},
            {"job_id": 8, "name": "x", "user": "", "state": {"current": ["COMPLETED"]}}
        ], "errors": [], "warnings": []}"#;
        let r: AccountedJobsResponse = serde_json::from_str(body).unwrap();
        let jobs = r.into_jobs();
        assert_eq!(jobs[0].id, 7);
        assert_eq!(jobs[0].user.as_deref(), Some("alice"));
        assert!(!jobs[0].state.is_finished());
        assert_eq!(jobs[1].user, None);
        assert!(jobs[1].state.is_finished());
    }

    #[test]
    fn novals_and_unset_times() {
        let n: NoVal =
            serde_json::from_str(r#"{"set":false,"infinite":false,"number":7}"#).unwrap();
        assert_eq!(n.value(), None);
        let n: NoVal = serde_json::from_str(r#"{"set":true,"infinite":true,"number":0}"#).unwrap();
        assert_eq!(n.value(), None);
        let n: NoVal = serde_json::from_str("12").unwrap();
        assert_eq!(n.value(), Some(12));
        assert_eq!(time(Some(NoVal::Plain(0))), None);
    }
}
