//! What slurmrestd sends and expects on the wire, for v0.0.40 to v0.0.45, and the
//! mapping to the domain model. The job fields slurmlab uses have the same shape in all
//! six versions; where a version differs (ping, cancel status, string job ids in
//! `/jobs/state/`) the types accept every form.

use serde::Deserialize;
use serde_json::{Value, json};

use super::model::{ExitStatus, JobInfo, JobSpec, JobState, JobStateEntry, PingInfo};
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
