//! The domain model of SLURM jobs, independent of the REST API version.

use std::collections::BTreeMap;
use std::fmt;

/// What to submit: one batch job.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JobSpec {
    /// Job name (visible in squeue).
    pub name: String,
    /// The batch script, starting with `#!`.
    pub script: String,
    pub partition: Option<String>,
    pub account: Option<String>,
    pub qos: Option<String>,
    /// Number of nodes (at least 1).
    pub nodes: u32,
    /// CPUs for the one task of the job.
    pub cpus: u32,
    /// Memory per node in MiB (SLURM's "MB").
    pub memory_mb: Option<u64>,
    /// Generic resources per node, e.g. `gpu:2` or `gpu:a100:1,shard:2`.
    pub gres: Option<String>,
    /// Wall time in minutes.
    pub time_limit_minutes: Option<u64>,
    pub constraint: Option<String>,
    pub reservation: Option<String>,
    /// Absolute working directory on the node.
    pub working_directory: String,
    /// The job's complete environment (SLURM adds its own `SLURM_*` variables).
    pub environment: BTreeMap<String, String>,
    /// stdout path (SLURM patterns such as `%j` work).
    pub standard_output: Option<String>,
    /// stderr path; stdout's when absent.
    pub standard_error: Option<String>,
    /// Free text stored with the job (slurmlab puts the owner's identity here).
    pub comment: Option<String>,
    /// Submitted held: it waits until released (or cancelled) and never runs by itself.
    pub hold: bool,
}

/// A job's state: the base state and its flags (`["CANCELLED", "COMPLETING"]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobState {
    pub base: BaseState,
    pub flags: Vec<String>,
}

/// SLURM's base job states.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum BaseState {
    Pending,
    Running,
    Suspended,
    Completed,
    Cancelled,
    Failed,
    Timeout,
    NodeFail,
    Preempted,
    BootFail,
    Deadline,
    OutOfMemory,
    /// A state this client does not know (kept verbatim).
    Other(String),
}

impl BaseState {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "PENDING" => Self::Pending,
            "RUNNING" => Self::Running,
            "SUSPENDED" => Self::Suspended,
            "COMPLETED" => Self::Completed,
            "CANCELLED" => Self::Cancelled,
            "FAILED" => Self::Failed,
            "TIMEOUT" => Self::Timeout,
            "NODE_FAIL" => Self::NodeFail,
            "PREEMPTED" => Self::Preempted,
            "BOOT_FAIL" => Self::BootFail,
            "DEADLINE" => Self::Deadline,
            "OUT_OF_MEMORY" => Self::OutOfMemory,
            _ => return None,
        })
    }

    /// SLURM's spelling.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Pending => "PENDING",
            Self::Running => "RUNNING",
            Self::Suspended => "SUSPENDED",
            Self::Completed => "COMPLETED",
            Self::Cancelled => "CANCELLED",
            Self::Failed => "FAILED",
            Self::Timeout => "TIMEOUT",
            Self::NodeFail => "NODE_FAIL",
            Self::Preempted => "PREEMPTED",
            Self::BootFail => "BOOT_FAIL",
            Self::Deadline => "DEADLINE",
            Self::OutOfMemory => "OUT_OF_MEMORY",
            Self::Other(s) => s,
        }
    }

    /// States a job never leaves (unless requeued).
    pub fn is_terminal(&self) -> bool {
        !matches!(
            self,
            Self::Pending | Self::Running | Self::Suspended | Self::Other(_)
        )
    }
}

/// Flag: the job's processes are still being cleaned up on its nodes.
pub const FLAG_COMPLETING: &str = "COMPLETING";

impl JobState {
    /// Reads SLURM's state list: the first known base state, the rest are flags. An
    /// empty or all-unknown list gives `Other` with the first entry.
    pub fn from_list<S: AsRef<str>>(list: &[S]) -> Self {
        let mut base = None;
        let mut flags = Vec::new();
        for s in list {
            let s = s.as_ref();
            match (base.is_none(), BaseState::parse(s)) {
                (true, Some(b)) => base = Some(b),
                _ => flags.push(s.to_owned()),
            }
        }
        let base = base.unwrap_or_else(|| {
            if flags.is_empty() {
                BaseState::Other("UNKNOWN".into())
            } else {
                BaseState::Other(flags.remove(0))
            }
        });
        Self { base, flags }
    }

    pub fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }

    /// Finished for good: a terminal base state whose processes are gone. A job that is
    /// `["CANCELLED", "COMPLETING"]` still holds its node and may still be running code.
    pub fn is_finished(&self) -> bool {
        self.base.is_terminal() && !self.has_flag(FLAG_COMPLETING)
    }

    /// Pending, or being requeued/held.
    pub fn is_pending(&self) -> bool {
        self.base == BaseState::Pending
    }

    pub fn is_running(&self) -> bool {
        self.base == BaseState::Running && !self.has_flag(FLAG_COMPLETING)
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.base.as_str())?;
        for flag in &self.flags {
            write!(f, "+{flag}")?;
        }
        Ok(())
    }
}

/// How the batch script ended.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExitStatus {
    /// The script's exit code, when it exited.
    pub return_code: Option<i64>,
    /// The signal that ended it, when signalled.
    pub signal: Option<i64>,
}

/// One job as SLURM reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobInfo {
    pub id: u64,
    pub name: String,
    pub state: JobState,
    /// SLURM's reason for the state (`None` means no reason).
    pub reason: Option<String>,
    /// Node list (e.g. `node[01-02]`), once allocated.
    pub nodes: Option<String>,
    /// The node running the batch script.
    pub batch_host: Option<String>,
    pub comment: Option<String>,
    pub user: Option<String>,
    pub partition: Option<String>,
    /// Unix seconds.
    pub submit_time: Option<i64>,
    /// Unix seconds (for pending jobs: the expected start, if SLURM has one).
    pub start_time: Option<i64>,
    /// Unix seconds (for running jobs: the expected end).
    pub end_time: Option<i64>,
    pub time_limit_minutes: Option<u64>,
    pub exit: Option<ExitStatus>,
}

#[cfg(test)]
impl JobInfo {
    /// A job with an id, a name and states and nothing else (unit tests add what they need).
    pub fn sample(id: u64, states: &[&str]) -> Self {
        JobInfo {
            id,
            name: format!("j{id}"),
            state: JobState::from_list(states),
            reason: None,
            nodes: None,
            batch_host: None,
            comment: None,
            user: None,
            partition: None,
            submit_time: None,
            start_time: None,
            end_time: None,
            time_limit_minutes: None,
            exit: None,
        }
    }
}

/// The state of one job from the batched state query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobStateEntry {
    pub id: u64,
    pub state: JobState,
}

/// A partition as an agent picks one: its size, what is free now, its time limit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartitionInfo {
    pub name: String,
    /// SLURM's state words, e.g. `UP`.
    pub state: Vec<String>,
    pub nodes: u32,
    pub cpus: u32,
    /// Nodes of the partition that are IDLE now (not DOWN, DRAINED or allocated).
    pub idle_nodes: u32,
    /// CPUs not allocated on nodes of the partition that can take jobs.
    pub idle_cpus: u32,
    /// The partition's MaxTime in minutes (`None`: unlimited).
    pub max_time_minutes: Option<i64>,
    /// Generic resources its nodes offer (e.g. `gpu:a100:4`), distinct.
    pub gres: Vec<String>,
}

/// What a ping learned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PingInfo {
    /// SLURM release, e.g. `24.11.5`.
    pub release: String,
    /// Whether slurmctld answered (and accepted our credentials).
    pub responding: bool,
    /// slurmctld's own status text when it gives one (v0.0.45).
    pub status: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_lists_split_into_base_and_flags() {
        let s = JobState::from_list(&["CANCELLED", "COMPLETING"]);
        assert_eq!(s.base, BaseState::Cancelled);
        assert_eq!(s.flags, ["COMPLETING"]);
        assert!(!s.is_finished(), "still completing");
        assert!(JobState::from_list(&["CANCELLED"]).is_finished());
        assert!(JobState::from_list(&["PENDING", "REQUEUED"]).is_pending());
        assert!(JobState::from_list(&["RUNNING"]).is_running());
        assert!(!JobState::from_list(&["RUNNING", "COMPLETING"]).is_running());
        assert_eq!(
            JobState::from_list(&["COMPLETING", "TIMEOUT"]).base,
            BaseState::Timeout
        );
        let odd = JobState::from_list(&["RESV_DEL_HOLD"]);
        assert_eq!(odd.base, BaseState::Other("RESV_DEL_HOLD".into()));
        assert!(!odd.is_finished());
        assert_eq!(
            JobState::from_list::<&str>(&[]).base,
            BaseState::Other("UNKNOWN".into())
        );
        assert_eq!(s.to_string(), "CANCELLED+COMPLETING");
    }

    #[test]
    fn every_terminal_state_is_finished_without_completing() {
        for st in [
            "COMPLETED",
            "CANCELLED",
            "FAILED",
            "TIMEOUT",
            "NODE_FAIL",
            "PREEMPTED",
            "BOOT_FAIL",
            "DEADLINE",
            "OUT_OF_MEMORY",
        ] {
            assert!(JobState::from_list(&[st]).is_finished(), "{st}");
            assert!(
                !JobState::from_list(&[st, "COMPLETING"]).is_finished(),
                "{st}+COMPLETING"
            );
        }
        for st in ["PENDING", "RUNNING", "SUSPENDED"] {
            assert!(!JobState::from_list(&[st]).is_finished(), "{st}");
        }
    }
}
