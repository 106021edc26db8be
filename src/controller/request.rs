//! What an allocation asks SLURM for, after the cluster's defaults and limits are
//! applied, and which SLURM user runs it. Pure logic: every refusal is unit-tested.

use std::collections::BTreeMap;

use crate::api::{ComputeAllocationSpec, DEFAULT_USER_ANNOTATION, SlurmClusterSpec};
use crate::slurm::JobSpec;

/// Default wall time when neither the allocation nor the cluster sets one.
pub const DEFAULT_TIME_LIMIT_MINUTES: u64 = 60;

/// The resources of a valid request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    pub partition: Option<String>,
    pub account: Option<String>,
    pub qos: Option<String>,
    pub nodes: u32,
    pub cpus: u32,
    pub memory_mb: Option<u64>,
    pub gres: Option<String>,
    pub time_limit_minutes: u64,
}

/// Applies defaults and checks limits; the error says what to change.
pub fn resolve(
    spec: &ComputeAllocationSpec,
    cluster: &SlurmClusterSpec,
) -> Result<Resolved, String> {
    let d = &cluster.defaults;
    let l = &cluster.limits;
    let partition = spec.partition.clone().or_else(|| d.partition.clone());
    if !l.partitions.is_empty() {
        match &partition {
            Some(p) if l.partitions.contains(p) => {}
            Some(p) => {
                return Err(format!(
                    "partition {p:?} is not allowed on this cluster; use one of: {}",
                    l.partitions.join(", ")
                ));
            }
            None => {
                return Err(format!(
                    "set spec.partition to one of: {}",
                    l.partitions.join(", ")
                ));
            }
        }
    }
    let time_limit_minutes = match spec.time_limit.as_ref().or(d.time_limit.as_ref()) {
        Some(t) => t.to_minutes_ceil().map_err(|e| e.to_string())?.max(1),
        None => DEFAULT_TIME_LIMIT_MINUTES,
    };
    if let Some(max) = &l.max_time_limit {
        let max_minutes = max.to_minutes_ceil().map_err(|e| e.to_string())?;
        if time_limit_minutes > max_minutes {
            return Err(format!(
                "spec.timeLimit asks for {time_limit_minutes} minutes but this cluster allows at most {max} ({max_minutes} minutes): lower spec.timeLimit"
            ));
        }
    }
    let cpus = spec.cpus.or(d.cpus).unwrap_or(1).max(1) as u32;
    if let Some(max) = l.max_cpus
        && cpus > max as u32
    {
        return Err(format!(
            "spec.cpus asks for {cpus} CPUs but this cluster allows at most {max}: lower spec.cpus"
        ));
    }
    let memory = spec.memory.as_ref().or(d.memory.as_ref());
    let memory_mb = memory
        .map(|m| m.to_slurm_mb())
        .transpose()
        .map_err(|e| e.to_string())?;
    if let (Some(asked), Some(max)) = (memory_mb, &l.max_memory) {
        let max_mb = max.to_slurm_mb().map_err(|e| e.to_string())?;
        if asked > max_mb {
            return Err(format!(
                "spec.memory asks for {} but this cluster allows at most {max}: lower spec.memory",
                memory.map(ToString::to_string).unwrap_or_default()
            ));
        }
    }
    let mut gres: Vec<String> = Vec::new();
    if let Some(gpus) = spec.gpus.filter(|g| *g > 0) {
        gres.push(format!("gpu:{gpus}"));
    }
    if let Some(g) = spec.gres.as_ref().filter(|g| !g.trim().is_empty()) {
        gres.push(g.trim().to_owned());
    }
    Ok(Resolved {
        partition,
        account: spec.account.clone().or_else(|| d.account.clone()),
        qos: spec.qos.clone().or_else(|| d.qos.clone()),
        nodes: spec.nodes.unwrap_or(1).max(1) as u32,
        cpus,
        memory_mb,
        gres: (!gres.is_empty()).then(|| gres.join(",")),
        time_limit_minutes,
    })
}

/// SLURM users no namespace may ever map to, whatever the SlurmCluster says: root and
/// SLURM's own account (a job as either owns the cluster).
const NEVER_MAPPED: &[&str] = &["root", "slurm"];

/// Why a SlurmCluster's user mapping cannot be used at all, if it cannot. With a JWT key
/// the controller can mint a token for any user (the key is a root credential for the
/// whole SLURM cluster), so the mapping fails closed: an explicit allow-list is required.
pub fn mapping_problem(cluster: &SlurmClusterSpec) -> Option<String> {
    let m = &cluster.user_mapping;
    if cluster.auth.jwt_key_secret_ref.is_some()
        && m.allowed_users.is_empty()
        && m.namespaces.is_empty()
    {
        return Some("userMapping.allowedUsers and userMapping.namespaces are empty: with a jwtKeySecretRef the controller could act as any SLURM user, so nothing is submitted until the mapping names the users namespaces may map to".to_owned());
    }
    m.allowed_users
        .iter()
        .chain(&m.default_user)
        .chain(m.namespaces.values())
        .find_map(|u| refused_user(u).map(|why| format!("userMapping lists {u:?}: {why}")))
}

/// Why `user` may never run a job for a namespace, if so.
fn refused_user(user: &str) -> Option<&'static str> {
    let posix = user.len() <= 32
        && user.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && user.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'.')
        });
    if !posix {
        Some("not a valid POSIX user name")
    } else if NEVER_MAPPED.contains(&user) {
        Some("root and the SLURM account are never mapped")
    } else {
        None
    }
}

/// The SLURM user of a namespace: the admin's `namespaces` table, else (only if the admin
/// allowed it) the namespace's annotation, else the cluster's default; checked against
/// the users never mapped, the allow-list (for annotations and the default; required
/// with a JWT key), and the one user a static token can act as.
pub fn slurm_user(
    namespace: &str,
    annotations: &BTreeMap<String, String>,
    cluster: &SlurmClusterSpec,
    token_user: Option<&str>,
) -> Result<String, String> {
    let m = &cluster.user_mapping;
    let key = m
        .namespace_annotation
        .as_deref()
        .unwrap_or(DEFAULT_USER_ANNOTATION);
    if let Some(problem) = mapping_problem(cluster) {
        return Err(problem);
    }
    let from_table = m.namespaces.get(namespace).cloned();
    let listed = from_table.is_some();
    let user = from_table
        .or_else(|| {
            m.honor_namespace_annotation
                .then(|| annotations.get(key).cloned())
                .flatten()
        })
        .or_else(|| m.default_user.clone())
        .ok_or_else(|| {
            let annotation = if m.honor_namespace_annotation {
                format!(", annotate the namespace with {key}=<user>")
            } else {
                String::new()
            };
            format!("namespace {namespace} has no SLURM user: an administrator must map it in the SlurmCluster's userMapping.namespaces{annotation} or set userMapping.defaultUser")
        })?;
    if let Some(why) = refused_user(&user) {
        return Err(format!(
            "SLURM user {user:?} (from namespace {namespace}) is refused: {why}"
        ));
    }
    let must_be_allowed = !m.allowed_users.is_empty() || cluster.auth.jwt_key_secret_ref.is_some();
    if !listed && must_be_allowed && !m.allowed_users.contains(&user) {
        return Err(format!(
            "SLURM user {user:?} (from namespace {namespace}) is not in the SlurmCluster's userMapping.allowedUsers"
        ));
    }
    if let Some(t) = token_user
        && t != user
    {
        return Err(format!(
            "this SlurmCluster authenticates with a static token for SLURM user {t:?} only, but namespace {namespace} maps to {user:?}: use a jwtKeySecretRef or map the namespace to {t:?}"
        ));
    }
    Ok(user)
}

/// The batch job for a resolved request.
pub fn job_spec(
    resolved: &Resolved,
    spec: &ComputeAllocationSpec,
    cluster: &SlurmClusterSpec,
    name: String,
    comment: String,
    script: String,
    token: &str,
) -> JobSpec {
    let t = &cluster.job_template;
    let working_directory = t
        .working_directory
        .clone()
        .unwrap_or_else(|| "/tmp".to_owned());
    let mut environment: BTreeMap<String, String> = BTreeMap::new();
    environment.insert("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into());
    environment.extend(t.environment.clone());
    environment.extend(spec.environment.clone());
    // Last, so no spec can override them. slurmstepd creates the job's output file with
    // the umask in SLURM_UMASK: the job's log is its user's alone.
    environment.insert("SLURM_UMASK".into(), "0077".into());
    environment.insert("JUPYTER_TOKEN".into(), token.to_owned());
    JobSpec {
        name,
        script,
        partition: resolved.partition.clone(),
        account: resolved.account.clone(),
        qos: resolved.qos.clone(),
        nodes: resolved.nodes,
        cpus: resolved.cpus,
        memory_mb: resolved.memory_mb,
        gres: resolved.gres.clone(),
        time_limit_minutes: Some(resolved.time_limit_minutes),
        constraint: spec.constraint.clone(),
        reservation: spec.reservation.clone(),
        standard_output: Some(format!("{working_directory}/slurmlab-%j.out")),
        standard_error: None,
        working_directory,
        environment,
        comment: Some(comment),
        hold: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{AllocationDefaults, AllocationLimits, JobTemplate, UserMapping};

    fn cluster() -> SlurmClusterSpec {
        serde_json::from_value(serde_json::json!({
            "restApi": {"url": "http://x"},
            "auth": {"tokenSecretRef": {"namespace": "n", "name": "s", "key": "k"}},
            "jobTemplate": {"serverCommand": "jupyter server"}
        }))
        .unwrap()
    }

    fn alloc() -> ComputeAllocationSpec {
        serde_json::from_value(serde_json::json!({"clusterRef": "c"})).unwrap()
    }

    #[test]
    fn defaults_fill_what_the_allocation_leaves_out() {
        let mut c = cluster();
        c.defaults = AllocationDefaults {
            partition: Some("debug".into()),
            time_limit: Some("2h".into()),
            cpus: Some(2),
            memory: Some("4Gi".into()),
            ..Default::default()
        };
        let r = resolve(&alloc(), &c).unwrap();
        assert_eq!(
            (
                r.partition.as_deref(),
                r.time_limit_minutes,
                r.cpus,
                r.memory_mb
            ),
            (Some("debug"), 120, 2, Some(4096))
        );
        let mut a = alloc();
        a.cpus = Some(8);
        a.time_limit = Some("30m".into());
        a.gpus = Some(2);
        a.gres = Some("shard:1".into());
        let r = resolve(&a, &c).unwrap();
        assert_eq!(
            (r.cpus, r.time_limit_minutes, r.gres.as_deref()),
            (8, 30, Some("gpu:2,shard:1"))
        );
        assert_eq!(
            resolve(&alloc(), &cluster()).unwrap().time_limit_minutes,
            DEFAULT_TIME_LIMIT_MINUTES
        );
    }

    #[test]
    fn limits_refuse_with_what_to_change() {
        let mut c = cluster();
        c.limits = AllocationLimits {
            max_time_limit: Some("4h".into()),
            max_cpus: Some(4),
            max_memory: Some("8Gi".into()),
            partitions: vec!["debug".into(), "gpu".into()],
            ..Default::default()
        };
        let mut a = alloc();
        a.partition = Some("debug".into());
        a.time_limit = Some("5h".into());
        let e = resolve(&a, &c).unwrap_err();
        assert!(
            e.contains("300 minutes")
                && e.contains("at most 4h")
                && e.contains("lower spec.timeLimit"),
            "{e}"
        );
        a.time_limit = None;
        a.cpus = Some(16);
        assert!(resolve(&a, &c).unwrap_err().contains("at most 4"));
        a.cpus = None;
        a.memory = Some("16Gi".into());
        assert!(resolve(&a, &c).unwrap_err().contains("lower spec.memory"));
        a.memory = None;
        a.partition = Some("long".into());
        assert!(
            resolve(&a, &c)
                .unwrap_err()
                .contains("use one of: debug, gpu")
        );
        a.partition = Some("gpu".into());
        assert!(resolve(&a, &c).is_ok());
    }

    #[test]
    fn the_mapping_fails_closed_and_never_reaches_root() {
        let mut c = cluster();
        c.user_mapping.honor_namespace_annotation = true;
        let ns = |u: &str| BTreeMap::from([("slurmlab.io/slurm-user".to_owned(), u.to_owned())]);
        // Even without an allow-list (static token), root and bad names never pass.
        for bad in ["root", "slurm", "Root", "alice;id", "../x", "0day", ""] {
            let err = slurm_user("ns", &ns(bad), &c, None).unwrap_err();
            assert!(err.contains("refused"), "{bad:?}: {err}");
        }
        // With a JWT key an allow-list is required, and the cluster says so.
        c.auth = serde_json::from_value(serde_json::json!(
            {"jwtKeySecretRef": {"namespace": "n", "name": "s", "key": "k"}}
        ))
        .unwrap();
        let problem = mapping_problem(&c).expect("no allow-list with a JWT key");
        assert!(problem.contains("allowedUsers"), "{problem}");
        // The admin's table is an allow-list of its own ...
        c.user_mapping.namespaces = BTreeMap::from([("team-a".to_owned(), "alice".to_owned())]);
        assert_eq!(mapping_problem(&c), None);
        assert_eq!(slurm_user("team-a", &ns("bob"), &c, None).unwrap(), "alice");
        // ... which does not let other namespaces name users by annotation.
        assert!(
            slurm_user("other", &ns("bob"), &c, None)
                .unwrap_err()
                .contains("allowedUsers")
        );
        c.user_mapping.namespaces = BTreeMap::from([("team-a".to_owned(), "root".to_owned())]);
        assert!(mapping_problem(&c).unwrap().contains("\"root\""));
        c.user_mapping.namespaces.clear();
        let problem = mapping_problem(&c).expect("no allow-list with a JWT key");
        assert_eq!(
            slurm_user("ns", &ns("alice"), &c, None).unwrap_err(),
            problem
        );
        c.user_mapping.allowed_users = vec!["alice".into()];
        assert_eq!(mapping_problem(&c), None);
        assert_eq!(slurm_user("ns", &ns("alice"), &c, None).unwrap(), "alice");
        // An admin who lists root by mistake gets the cluster refused, not root jobs.
        c.user_mapping.allowed_users = vec!["alice".into(), "root".into()];
        assert!(mapping_problem(&c).unwrap().contains("\"root\""));
        assert!(slurm_user("ns", &ns("root"), &c, None).is_err());
    }

    #[test]
    fn the_slurm_user_comes_from_the_namespace_never_the_spec() {
        let mut c = cluster();
        let none = BTreeMap::new();
        assert!(
            slurm_user("ns", &none, &c, None)
                .unwrap_err()
                .contains("map it in the SlurmCluster's userMapping.namespaces")
        );
        c.user_mapping = UserMapping {
            default_user: Some("shared".into()),
            allowed_users: vec!["shared".into(), "alice".into()],
            ..Default::default()
        };
        assert_eq!(slurm_user("ns", &none, &c, None).unwrap(), "shared");
        let annotated = BTreeMap::from([("slurmlab.io/slurm-user".to_owned(), "alice".to_owned())]);
        // A tenant who annotates its own namespace changes nothing by default.
        assert_eq!(slurm_user("ns", &annotated, &c, None).unwrap(), "shared");
        c.user_mapping.honor_namespace_annotation = true;
        assert_eq!(slurm_user("ns", &annotated, &c, None).unwrap(), "alice");
        let bad = BTreeMap::from([("slurmlab.io/slurm-user".to_owned(), "mallory".to_owned())]);
        assert!(
            slurm_user("ns", &bad, &c, None)
                .unwrap_err()
                .contains("allowedUsers")
        );
        assert!(
            slurm_user("ns", &annotated, &c, Some("shared"))
                .unwrap_err()
                .contains("static token")
        );
    }

    #[test]
    fn the_job_carries_the_token_only_in_its_environment() {
        let mut c = cluster();
        c.job_template = JobTemplate {
            environment: BTreeMap::from([("JUPYTER_TOKEN".into(), "nope".into())]),
            ..c.job_template
        };
        let r = resolve(&alloc(), &c).unwrap();
        let j = job_spec(
            &r,
            &alloc(),
            &c,
            "n".into(),
            "comment".into(),
            "#!/bin/bash\n".into(),
            "s3cret",
        );
        assert_eq!(j.environment["JUPYTER_TOKEN"], "s3cret");
        assert_eq!(j.environment["SLURM_UMASK"], "0077");
        assert!(
            !j.script.contains("s3cret")
                && !j.name.contains("s3cret")
                && j.comment.as_deref() == Some("comment")
        );
        assert_eq!(j.working_directory, "/tmp");
        assert_eq!(j.standard_output.as_deref(), Some("/tmp/slurmlab-%j.out"));
    }
}
