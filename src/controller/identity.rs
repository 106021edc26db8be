//! How a SLURM job carries the identity of the ComputeAllocation that owns it, so the
//! controller can find its own jobs again (after a crash between submit and status
//! update) and recognise orphans (jobs whose owner is gone).
//!
//! The job name is `slurmlab-<namespace>-<name>` (what `squeue` shows) and the comment
//! starts with `slurmlab owner=<namespace>/<name> uid=<uid> attempt=<n> cluster=<uid>`
//! (the last is the SlurmCluster's UID: a controller only ever touches jobs submitted
//! through its own SlurmCluster objects, even when several Kubernetes clusters share one
//! SLURM cluster). The batch script
//! keeps that prefix when it appends `jupyter=<host>:<port>` (no secret ever goes there).

/// Prefix of every job name slurmlab submits.
pub const JOB_NAME_PREFIX: &str = "slurmlab-";
const COMMENT_TAG: &str = "slurmlab";

/// The owner of a job, as written into its comment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobOwner {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// 0 for the first submission, +1 per restart.
    pub attempt: u32,
    /// UID of the SlurmCluster the job was submitted through.
    pub cluster_uid: String,
}

impl JobOwner {
    /// The job name for this owner.
    pub fn job_name(&self) -> String {
        format!("{JOB_NAME_PREFIX}{}-{}", self.namespace, self.name)
    }

    /// The comment the job is submitted with.
    pub fn comment(&self) -> String {
        format!(
            "{COMMENT_TAG} owner={}/{} uid={} attempt={} cluster={}",
            self.namespace, self.name, self.uid, self.attempt, self.cluster_uid
        )
    }

    /// Same allocation object (name and UID), whatever the attempt.
    pub fn same_object(&self, other: &JobOwner) -> bool {
        self.namespace == other.namespace && self.name == other.name && self.uid == other.uid
    }
}

/// What a job's comment says: its owner (if slurmlab submitted it) and the Jupyter
/// endpoint (once the server reported it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParsedComment {
    pub owner: Option<JobOwner>,
    /// `host:port`.
    pub endpoint: Option<String>,
}

/// Reads a job comment written by [`JobOwner::comment`] and the batch script.
pub fn parse_comment(comment: &str) -> ParsedComment {
    let mut words = comment.split_whitespace();
    let mut parsed = ParsedComment::default();
    let tagged = words.next() == Some(COMMENT_TAG);
    let (mut owner, mut uid, mut attempt, mut cluster) = (None, None, None, String::new());
    for word in comment.split_whitespace() {
        if let Some((key, value)) = word.split_once('=') {
            match key {
                "owner" => {
                    owner = value
                        .split_once('/')
                        .map(|(n, m)| (n.to_owned(), m.to_owned()))
                }
                "uid" => uid = Some(value.to_owned()),
                "attempt" => attempt = value.parse().ok(),
                "cluster" => cluster = value.to_owned(),
                "jupyter" if value.contains(':') => parsed.endpoint = Some(value.to_owned()),
                _ => {}
            }
        }
    }
    if let (true, Some((namespace, name)), Some(uid)) = (tagged, owner, uid) {
        parsed.owner = Some(JobOwner {
            namespace,
            name,
            uid,
            attempt: attempt.unwrap_or(0),
            cluster_uid: cluster,
        });
    }
    parsed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner() -> JobOwner {
        JobOwner {
            namespace: "team-a".into(),
            name: "gpu-box".into(),
            uid: "7b0c-11".into(),
            attempt: 2,
            cluster_uid: "c-9".into(),
        }
    }

    #[test]
    fn comments_round_trip_with_and_without_the_endpoint() {
        let o = owner();
        assert_eq!(
            o.comment(),
            "slurmlab owner=team-a/gpu-box uid=7b0c-11 attempt=2 cluster=c-9"
        );
        assert_eq!(o.job_name(), "slurmlab-team-a-gpu-box");
        assert_eq!(
            parse_comment(&o.comment()),
            ParsedComment {
                owner: Some(o.clone()),
                endpoint: None
            }
        );
        let with = format!("{} jupyter=node17.cluster:43121", o.comment());
        let parsed = parse_comment(&with);
        assert_eq!(parsed.owner, Some(o));
        assert_eq!(parsed.endpoint.as_deref(), Some("node17.cluster:43121"));
    }

    #[test]
    fn foreign_comments_have_no_owner() {
        assert_eq!(parse_comment("").owner, None);
        assert_eq!(
            parse_comment("my own notes owner=x/y uid=1").owner,
            None,
            "not tagged by slurmlab"
        );
        assert_eq!(
            parse_comment("slurmlab owner=x uid=1").owner,
            None,
            "owner needs ns/name"
        );
        assert_eq!(
            parse_comment("jupyter=vm:8888").endpoint.as_deref(),
            Some("vm:8888")
        );
    }

    #[test]
    fn attempts_do_not_change_the_object() {
        let a = owner();
        let b = JobOwner {
            attempt: 0,
            ..owner()
        };
        assert!(a.same_object(&b));
        assert!(!a.same_object(&JobOwner {
            uid: "other".into(),
            ..owner()
        }));
    }
}
