//! How a SLURM job carries the identity of the ComputeAllocation that owns it, so the
//! controller can find its own jobs again (after a crash between submit and status
//! update) and recognise orphans (jobs whose owner is gone).
//!
//! The job name is `slurmlab-<namespace>-<name>` (what `squeue` shows) and the comment
//! starts with `slurmlab owner=<namespace>/<name> uid=<uid> attempt=<n> cluster=<uid>
//! nonce=<hex> mac=<hex>` (`cluster` is the SlurmCluster's UID: a controller only ever
//! touches jobs submitted through its own SlurmCluster objects, even when several
//! Kubernetes clusters share one SLURM cluster). The batch script keeps that prefix when
//! it appends `jupyter=<host>:<port>` (no secret ever goes there).
//!
//! Anyone on the SLURM cluster can submit a job with any name and comment, so the tag is
//! authenticated: `mac` is an HMAC-SHA256 (first 128 bits) over the other fields under a
//! key only the controller holds ([`TagKey`], kept in a Secret), and `nonce` is fresh per
//! submission and recorded in the allocation's claim before the submit. A tag without a
//! valid MAC is never adopted and never cancelled.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

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
    /// Fresh per submission (empty in tags of releases before 0.2).
    pub nonce: String,
}

impl JobOwner {
    /// The job name for this owner.
    pub fn job_name(&self) -> String {
        format!("{JOB_NAME_PREFIX}{}-{}", self.namespace, self.name)
    }

    /// The comment the job is submitted with, signed with `key`.
    pub fn comment(&self, key: &TagKey) -> String {
        format!(
            "{COMMENT_TAG} owner={}/{} uid={} attempt={} cluster={} nonce={} mac={}",
            self.namespace,
            self.name,
            self.uid,
            self.attempt,
            self.cluster_uid,
            self.nonce,
            key.sign(self)
        )
    }

    /// What the MAC covers: every field, each on its own line (no field holds a newline:
    /// they come from whitespace-split words).
    fn signed_text(&self) -> String {
        format!(
            "slurmlab-tag-v1\n{}\n{}\n{}\n{}\n{}\n{}",
            self.namespace, self.name, self.uid, self.attempt, self.cluster_uid, self.nonce
        )
    }

    /// Same allocation object (name and UID), whatever the attempt.
    pub fn same_object(&self, other: &JobOwner) -> bool {
        self.namespace == other.namespace && self.name == other.name && self.uid == other.uid
    }
}

/// Bytes of the MAC kept in a tag (128 bits).
const MAC_BYTES: usize = 16;

/// The controller's key for job tags.
#[derive(Clone)]
pub struct TagKey(Vec<u8>);

impl std::fmt::Debug for TagKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TagKey(..)")
    }
}

impl TagKey {
    /// Shortest key accepted (a random 32-byte key is what the controller makes).
    pub const MIN_BYTES: usize = 16;

    pub fn new(bytes: Vec<u8>) -> Result<Self, String> {
        if bytes.len() < Self::MIN_BYTES {
            return Err(format!(
                "the job tag key has {} bytes; at least {} are needed",
                bytes.len(),
                Self::MIN_BYTES
            ));
        }
        Ok(Self(bytes))
    }

    fn mac(&self, owner: &JobOwner) -> Hmac<Sha256> {
        // HMAC accepts keys of any length, so this cannot fail.
        let mut mac =
            <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(owner.signed_text().as_bytes());
        mac
    }

    /// The MAC of `owner`'s tag, hex.
    pub fn sign(&self, owner: &JobOwner) -> String {
        hex(&self.mac(owner).finalize().into_bytes()[..MAC_BYTES])
    }

    /// Whether `mac` (hex) is `owner`'s tag's MAC (compared in constant time).
    pub fn verify(&self, owner: &JobOwner, mac: &str) -> bool {
        match unhex(mac) {
            Some(bytes) if bytes.len() == MAC_BYTES => {
                self.mac(owner).verify_truncated_left(&bytes).is_ok()
            }
            _ => false,
        }
    }

    /// The owner a comment names, if its tag is authentic under this key.
    pub fn authentic_owner(&self, comment: &str) -> Option<JobOwner> {
        let parsed = parse_comment(comment);
        let owner = parsed.owner?;
        let mac = parsed.mac?;
        self.verify(&owner, &mac).then_some(owner)
    }
}

/// A fresh nonce for one submission: 64 random bits, hex.
pub fn new_nonce() -> Result<String, String> {
    random_hex(8)
}

/// `bytes` random bytes, hex (nonces, Jupyter tokens).
pub fn random_hex(bytes: usize) -> Result<String, String> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| format!("no randomness: {e}"))?;
    Ok(hex(&buf))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// What a job's comment says: its owner (if slurmlab submitted it; authentic only if
/// [`TagKey::verify`] accepts `mac`) and the Jupyter endpoint (once the server reported
/// it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParsedComment {
    pub owner: Option<JobOwner>,
    /// The tag's MAC, hex.
    pub mac: Option<String>,
    /// `host:port`.
    pub endpoint: Option<String>,
}

/// Reads a job comment written by [`JobOwner::comment`] and the batch script.
pub fn parse_comment(comment: &str) -> ParsedComment {
    let mut words = comment.split_whitespace();
    let mut parsed = ParsedComment::default();
    let tagged = words.next() == Some(COMMENT_TAG);
    let (mut owner, mut uid, mut attempt, mut cluster) = (None, None, None, String::new());
    let mut nonce = String::new();
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
                "nonce" => nonce = value.to_owned(),
                "mac" => parsed.mac = Some(value.to_owned()),
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
            nonce,
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
            nonce: "00ff".into(),
        }
    }

    fn key() -> TagKey {
        TagKey::new(vec![7; 32]).unwrap()
    }

    #[test]
    fn comments_round_trip_with_and_without_the_endpoint() {
        let o = owner();
        let comment = o.comment(&key());
        let mac = key().sign(&o);
        assert_eq!(
            comment,
            format!(
                "slurmlab owner=team-a/gpu-box uid=7b0c-11 attempt=2 cluster=c-9 nonce=00ff mac={mac}"
            )
        );
        assert_eq!(mac.len(), 32);
        assert_eq!(o.job_name(), "slurmlab-team-a-gpu-box");
        assert_eq!(
            parse_comment(&comment),
            ParsedComment {
                owner: Some(o.clone()),
                mac: Some(mac),
                endpoint: None
            }
        );
        let with = format!("{comment} jupyter=node17.cluster:43121");
        let parsed = parse_comment(&with);
        assert_eq!(parsed.owner, Some(o.clone()));
        assert_eq!(parsed.endpoint.as_deref(), Some("node17.cluster:43121"));
        assert_eq!(key().authentic_owner(&with), Some(o));
    }

    #[test]
    fn a_forged_or_altered_tag_is_not_authentic() {
        let o = owner();
        let good = o.comment(&key());
        // Made up without the key, or signed with another one.
        let other = TagKey::new(vec![8; 32]).unwrap();
        assert_eq!(key().authentic_owner(&o.comment(&other)), None);
        let unsigned = "slurmlab owner=team-a/gpu-box uid=7b0c-11 attempt=2 cluster=c-9 nonce=00ff";
        assert_eq!(key().authentic_owner(unsigned), None);
        // A valid tag with one field changed (the next attempt, another object, a
        // different nonce), or a mangled MAC.
        for (from, to) in [
            ("attempt=2", "attempt=3"),
            ("uid=7b0c-11", "uid=7b0c-12"),
            ("nonce=00ff", "nonce=00fe"),
            ("owner=team-a/", "owner=team-b/"),
            ("mac=", "mac=0"),
        ] {
            let altered = good.replacen(from, to, 1);
            assert_ne!(altered, good);
            assert_eq!(key().authentic_owner(&altered), None, "{to}");
        }
        let truncated = &good[..good.len() - 2];
        assert_eq!(key().authentic_owner(truncated), None);
        assert!(TagKey::new(vec![1; 8]).is_err(), "short keys are refused");
        assert!(
            !format!("{:?}", key()).contains('7'),
            "the key is never printed"
        );
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
