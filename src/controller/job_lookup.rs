//! Finding slurmlab's own jobs without downloading the cluster's job table.
//!
//! slurmctld has no filtered listing: `GET /jobs/` returns every job on the cluster
//! (tens of megabytes on a busy site). slurmdbd does: its accounting records can be asked
//! for by user, name and state, and it answers with the matching rows only. So a lookup
//! asks accounting which unfinished jobs of our users carry our names, then reads just
//! those records from slurmctld, which has the live state and the comment (accounting may
//! lag slurmctld by a moment, and stores comments only with
//! `AccountingStoreFlags=job_comment`). Accounting does not see every unfinished job:
//! slurmctld records a job there once it is eligible, so a held job or one waiting for
//! its `--begin` time is missing (seen on 24.11). Callers that must not miss one read the
//! whole table when accounting names nothing ([`find_attempt`]) or now and then (the
//! orphan sweep's full sweeps).
//!
//! Where accounting cannot answer (no slurmdbd, no `openapi/slurmdbd` plugin) the whole
//! table is read, and the `listing` label of `slurmlab_job_lookups_total` says so.

use std::collections::BTreeSet;

use crate::slurm::{AccountingQuery, JobInfo, SlurmApi, SlurmError};

use super::identity::JOB_NAME_PREFIX;

/// Most slurmctld records one accounting-led lookup reads; the rest wait for the next.
pub const MAX_RECORDS_PER_LOOKUP: usize = 200;

/// How a lookup found its jobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listing {
    /// Accounting named the candidates; only their records were read.
    Accounting,
    /// The whole job table was read.
    WholeTable,
}

impl Listing {
    pub fn label(self) -> &'static str {
        match self {
            Self::Accounting => "accounting",
            Self::WholeTable => "whole_table",
        }
    }
}

/// Which ids accounting named that are worth reading now: ours by name, not already
/// followed by the poller (`known`), capped (pure; unit-tested).
pub fn candidates(
    accounted: &[(u64, String)],
    names: &[String],
    known: &(dyn Fn(u64) -> bool + Sync),
) -> Vec<u64> {
    let ids: BTreeSet<u64> = accounted
        .iter()
        .filter(|(_, name)| {
            if names.is_empty() {
                name.starts_with(JOB_NAME_PREFIX)
            } else {
                names.contains(name)
            }
        })
        .map(|(id, _)| *id)
        .filter(|id| !known(*id))
        .collect();
    ids.into_iter().take(MAX_RECORDS_PER_LOOKUP).collect()
}

/// Unfinished jobs of ours run by `users` (named `names` exactly, or any slurmlab name
/// when empty), skipping ids `known` says are followed already. Accounting first; the
/// whole table when accounting fails or no user is known.
pub async fn unfinished_jobs(
    api: &dyn SlurmApi,
    users: &[String],
    names: &[String],
    known: &(dyn Fn(u64) -> bool + Sync),
) -> Result<(Vec<JobInfo>, Listing), SlurmError> {
    if !users.is_empty() {
        match accounted(api, users, names).await {
            Ok(pairs) => {
                let mut jobs = vec![];
                for id in candidates(&pairs, names, known) {
                    match api.job(id).await {
                        Ok(job) if !job.state.is_finished() => jobs.push(job),
                        Ok(_) | Err(SlurmError::UnknownJob { .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
                return Ok((jobs, Listing::Accounting));
            }
            Err(e) => tracing::debug!(
                cluster = api.cluster(),
                error = %e,
                "accounting cannot list jobs; reading the whole job table"
            ),
        }
    }
    let prefix = match names {
        [one] => one.as_str(),
        _ => JOB_NAME_PREFIX,
    };
    let jobs = api
        .find_jobs(prefix)
        .await?
        .into_iter()
        .filter(|j| !j.state.is_finished() && !known(j.id))
        .filter(|j| names.is_empty() || names.contains(&j.name))
        .collect();
    Ok((jobs, Listing::WholeTable))
}

/// (id, name) of the unfinished jobs of `users` accounting knows, one query per user asked
/// as that user.
async fn accounted(
    api: &dyn SlurmApi,
    users: &[String],
    names: &[String],
) -> Result<Vec<(u64, String)>, SlurmError> {
    let mut pairs = vec![];
    for user in users {
        let query = AccountingQuery {
            users: vec![user.clone()],
            names: names.to_vec(),
            as_user: Some(user.clone()),
        };
        let jobs = api.accounted_jobs(&query).await?;
        pairs.extend(jobs.into_iter().map(|j| (j.id, j.name)));
    }
    Ok(pairs)
}

/// What a search for an allocation's claimed attempt found.
#[derive(Debug)]
pub struct AttemptSearch {
    /// The attempt's job: its tag is signed with our key and names the allocation, the
    /// attempt and the claimed submission's nonce, AND it runs as the allocation's SLURM
    /// user.
    pub job: Option<JobInfo>,
    /// Jobs that claim the attempt but are not that: forged (any SLURM user can name a
    /// job and write a comment). Never adopted, never cancelled by us.
    pub forged: Vec<JobInfo>,
    pub listing: Listing,
}

/// Splits jobs that claim the attempt (`tagged`) into the one that runs as `user` and
/// whose tag is `genuine` (signed, the claimed submission), and the forged rest (pure;
/// unit-tested).
pub fn split_claims(
    jobs: Vec<JobInfo>,
    user: &str,
    tagged: &dyn Fn(&JobInfo) -> bool,
    genuine: &dyn Fn(&JobInfo) -> bool,
) -> (Option<JobInfo>, Vec<JobInfo>) {
    let (mine, forged): (Vec<JobInfo>, Vec<JobInfo>) = jobs
        .into_iter()
        .filter(|j| tagged(j))
        .partition(|j| j.user.as_deref() == Some(user) && genuine(j));
    (mine.into_iter().next(), forged)
}

/// The unfinished job named `name` of `user` whose tag `tagged` accepts (the claimed
/// attempt of an allocation). Accounting is asked first; when it names no match, the
/// whole table is read, because a job submitted a moment ago may not have reached
/// accounting yet and a miss here means a second submission. This runs only for an
/// attempt claimed but without a known job (a crash or a lost answer), so the
/// whole-table read stays rare.
pub async fn find_attempt(
    api: &dyn SlurmApi,
    user: &str,
    name: &str,
    tagged: &(dyn Fn(&JobInfo) -> bool + Sync),
    genuine: &(dyn Fn(&JobInfo) -> bool + Sync),
) -> Result<AttemptSearch, SlurmError> {
    let names = [name.to_owned()];
    let (jobs, listing) = unfinished_jobs(api, &[user.to_owned()], &names, &|_| false).await?;
    let (job, forged) = split_claims(jobs, user, tagged, genuine);
    if job.is_some() || listing == Listing::WholeTable {
        return Ok(AttemptSearch {
            job,
            forged,
            listing,
        });
    }
    let (jobs, listing) = unfinished_jobs(api, &[], &names, &|_| false).await?;
    let (job, forged) = split_claims(jobs, user, tagged, genuine);
    Ok(AttemptSearch {
        job,
        forged,
        listing,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: u64, user: &str, comment: &str) -> JobInfo {
        JobInfo {
            id,
            user: Some(user.to_owned()),
            comment: Some(comment.to_owned()),
            ..JobInfo::sample(id, &["RUNNING"])
        }
    }

    #[test]
    fn only_the_allocations_own_user_and_signed_tag_is_adopted_the_rest_is_forged() {
        let tagged = |j: &JobInfo| j.comment.as_deref().is_some_and(|c| c.starts_with("tag"));
        let genuine = |j: &JobInfo| j.comment.as_deref() == Some("tag signed");
        let jobs = vec![
            job(1, "mallory", "tag signed"),
            job(2, "slurmjob", "other"),
            job(3, "slurmjob", "tag unsigned"),
            job(4, "slurmjob", "tag signed"),
        ];
        let (mine, forged) = split_claims(jobs, "slurmjob", &tagged, &genuine);
        assert_eq!(mine.map(|j| j.id), Some(4));
        assert_eq!(forged.iter().map(|j| j.id).collect::<Vec<_>>(), vec![1, 3]);
        let (none, forged) = split_claims(
            vec![job(1, "mallory", "tag signed")],
            "slurmjob",
            &tagged,
            &genuine,
        );
        assert!(none.is_none());
        assert_eq!(forged.len(), 1);
    }

    #[test]
    fn candidates_are_our_unfollowed_jobs_capped() {
        let accounted = vec![
            (1, "slurmlab-a-x".to_owned()),
            (2, "someone-else".to_owned()),
            (3, "slurmlab-a-y".to_owned()),
            (3, "slurmlab-a-y".to_owned()),
        ];
        assert_eq!(candidates(&accounted, &[], &|_| false), vec![1, 3]);
        assert_eq!(candidates(&accounted, &[], &|id| id == 1), vec![3]);
        let named = vec!["slurmlab-a-y".to_owned()];
        assert_eq!(candidates(&accounted, &named, &|_| false), vec![3]);
        let many: Vec<(u64, String)> = (0..1000).map(|i| (i, "slurmlab-n-j".into())).collect();
        assert_eq!(
            candidates(&many, &[], &|_| false).len(),
            MAX_RECORDS_PER_LOOKUP
        );
    }
}
