//! Whether the controller's service user can see the jobs it submits for other SLURM
//! users. The poller reads job states and records as the service user; under
//! `PrivateData=jobs` a user that is not a SLURM operator sees only its own jobs, so the
//! controller would take every tenant job for vanished and, looking for a job whose
//! status write was lost, find nothing and submit again. A cluster is therefore probed
//! once per configuration (and again every [`RECHECK`] while the answer is not "yes"): a
//! held one-minute job is submitted as a tenant, looked up as the service user, and
//! cancelled. Allocations of other users are not submitted while the answer is "no".

use std::time::{Duration, Instant};

use tracing::warn;

use crate::api::SlurmClusterSpec;
use crate::slurm::{AccountingQuery, JobSpec, SlurmApi, SlurmError};

/// How often a cluster whose jobs are hidden (or whose probe failed) is probed again, so
/// an admin's fix (an operator level, a new PrivateData) is seen without a spec change.
pub const RECHECK: Duration = Duration::from_secs(120);

/// The probe job's name for one SlurmCluster (found and cancelled again if a crash left
/// one behind; several SlurmClusters may point at one SLURM cluster).
pub fn probe_job_name(cluster: &str) -> String {
    format!("slurmlab-visibility-probe-{cluster}")
}

/// What is known about the service user's view of other users' jobs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Visibility {
    /// Not probed yet.
    Unknown,
    /// Every job the controller submits is visible (why, for the condition).
    Visible(String),
    /// Jobs of other users are hidden: the message says what to configure.
    Hidden(String),
    /// The probe itself failed (e.g. the tenant may not submit): not a verdict.
    ProbeFailed(String),
}

impl Visibility {
    /// (condition status, reason, message) of the SlurmCluster's JobsVisible condition.
    pub fn condition(&self) -> (&'static str, &'static str, String) {
        use crate::api::conditions::{FALSE, TRUE, UNKNOWN};
        match self {
            Visibility::Unknown => (UNKNOWN, "NotProbed", "not probed yet".to_owned()),
            Visibility::Visible(why) => (TRUE, "Visible", why.clone()),
            Visibility::Hidden(m) => (FALSE, "ServiceUserCannotSeeJobs", m.clone()),
            Visibility::ProbeFailed(m) => (UNKNOWN, "ProbeFailed", m.clone()),
        }
    }
}

/// The probe's state in a cluster handle.
#[derive(Debug)]
pub struct VisibilityState {
    pub verdict: Visibility,
    pub probed: Option<Instant>,
}

impl Default for VisibilityState {
    fn default() -> Self {
        VisibilityState {
            verdict: Visibility::Unknown,
            probed: None,
        }
    }
}

impl VisibilityState {
    /// Whether a probe is due now (pure in `now`).
    pub fn due(&self, now: Instant) -> bool {
        match (&self.verdict, self.probed) {
            (Visibility::Visible(_), _) => false,
            (_, None) => true,
            (_, Some(at)) => now.saturating_duration_since(at) >= RECHECK,
        }
    }
}

/// The SLURM user to probe as: a user the mapping can give jobs to that is not the
/// service user. None when every job runs as the service user (a static token acts as
/// one user only; a mapping may name no other), which always sees its own jobs.
pub fn probe_user(
    spec: &SlurmClusterSpec,
    service_user: &str,
    token_user: Option<&str>,
) -> Option<String> {
    if token_user.is_some() {
        return None;
    }
    let m = &spec.user_mapping;
    let mut users: Vec<&String> = m
        .namespaces
        .values()
        .chain(m.allowed_users.iter())
        .chain(m.default_user.iter())
        .filter(|u| u.as_str() != service_user)
        .collect();
    users.sort();
    users.first().map(|u| (*u).clone())
}

/// What an admin does about hidden jobs.
fn fix(service_user: &str, tenant: &str) -> String {
    format!(
        "the service user {service_user} cannot see jobs of {tenant} (slurm.conf PrivateData=jobs): \
         make it an operator (sacctmgr modify user {service_user} set AdminLevel=Operator) or set \
         userMapping.defaultUser to a user that is one. Until then allocations of other users \
         are not submitted: the controller could not follow their jobs and might submit twice"
    )
}

/// Submits a held job as `tenant`, looks it up (its state and its record) as the
/// service user, and cancels it.
pub async fn probe(
    api: &dyn SlurmApi,
    spec: &SlurmClusterSpec,
    service_user: &str,
    tenant: &str,
) -> Visibility {
    let name = probe_job_name(api.cluster());
    cancel_leftovers(api, tenant, &name).await;
    let job = JobSpec {
        name,
        script: "#!/bin/sh\n# slurmlab: may the controller see this user's jobs? Held, never runs.\nexit 0\n"
            .to_owned(),
        partition: spec.defaults.partition.clone(),
        nodes: 1,
        cpus: 1,
        time_limit_minutes: Some(1),
        working_directory: "/tmp".to_owned(),
        environment: [("PATH".to_owned(), "/usr/bin:/bin".to_owned())].into(),
        standard_output: Some("/dev/null".to_owned()),
        hold: true,
        ..JobSpec::default()
    };
    let id = match api.submit(tenant, &job).await {
        Ok(id) => id,
        Err(e) => {
            return Visibility::ProbeFailed(format!(
                "cannot submit a held probe job as {tenant} to see whether {service_user} sees it: {e}"
            ));
        }
    };
    let verdict = match looked_up(api, id).await {
        Ok(true) => Visibility::Visible(format!(
            "the service user {service_user} sees jobs of other users (probed as {tenant})"
        )),
        Ok(false) => Visibility::Hidden(fix(service_user, tenant)),
        Err(e) => {
            Visibility::ProbeFailed(format!("cannot read probe job {id} as {service_user}: {e}"))
        }
    };
    if let Err(e) = api.cancel(tenant, id).await {
        warn!(cluster = api.cluster(), job_id = id, error = %e, "cannot cancel the visibility probe; it is held and is cancelled at the next probe");
    }
    verdict
}

/// Whether the service user sees job `id` through both reads the controller relies on.
async fn looked_up(api: &dyn SlurmApi, id: u64) -> Result<bool, SlurmError> {
    let states = api.job_states(&[id]).await?;
    if !states.iter().any(|s| s.id == id) {
        return Ok(false);
    }
    match api.job(id).await {
        Ok(job) => Ok(job.id == id),
        Err(SlurmError::UnknownJob { .. }) | Err(SlurmError::Rejected { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Cancels probe jobs an earlier controller left (it crashed between submit and cancel);
/// asked as the tenant, who always sees its own jobs. Best effort.
async fn cancel_leftovers(api: &dyn SlurmApi, tenant: &str, name: &str) {
    let query = AccountingQuery {
        users: vec![tenant.to_owned()],
        names: vec![name.to_owned()],
        as_user: Some(tenant.to_owned()),
    };
    match api.accounted_jobs(&query).await {
        Ok(jobs) => {
            for j in jobs.iter().filter(|j| !j.state.is_finished()) {
                let _ = api.cancel(tenant, j.id).await;
            }
        }
        Err(e) => {
            tracing::debug!(cluster = api.cluster(), error = %e, "cannot list leftover probes")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value) -> SlurmClusterSpec {
        serde_json::from_value(serde_json::json!({
            "restApi": {"url": "http://slurm:6820"},
            "auth": {"jwtKeySecretRef": {"namespace": "n", "name": "s", "key": "k"}},
            "userMapping": json,
            "jobTemplate": {"serverCommand": "jupyter-server", "notebookRoot": "$HOME"},
        }))
        .unwrap()
    }

    #[test]
    fn probes_as_another_mapped_user_only_when_there_is_one() {
        let s = spec(serde_json::json!({
            "defaultUser": "svc", "allowedUsers": ["svc", "bob"], "namespaces": {"lab": "alice"}
        }));
        assert_eq!(probe_user(&s, "svc", None).as_deref(), Some("alice"));
        // A static token acts as one user: every job is the service user's own.
        assert_eq!(probe_user(&s, "svc", Some("svc")), None);
        let alone = spec(serde_json::json!({"defaultUser": "svc"}));
        assert_eq!(probe_user(&alone, "svc", None), None);
    }

    #[test]
    fn a_hidden_or_failed_verdict_is_rechecked_a_visible_one_is_not() {
        let now = Instant::now();
        let mut st = VisibilityState::default();
        assert!(st.due(now));
        st.probed = Some(now);
        st.verdict = Visibility::Hidden("x".into());
        assert!(!st.due(now));
        assert!(st.due(now + RECHECK));
        st.verdict = Visibility::Visible("y".into());
        assert!(!st.due(now + RECHECK * 10));
    }

    #[test]
    fn the_hidden_message_says_what_to_configure() {
        let (status, reason, message) = Visibility::Hidden(fix("carol", "alice")).condition();
        assert_eq!((status, reason), ("False", "ServiceUserCannotSeeJobs"));
        assert!(message.contains("sacctmgr modify user carol set AdminLevel=Operator"));
        assert!(message.contains("PrivateData=jobs"));
    }
}
