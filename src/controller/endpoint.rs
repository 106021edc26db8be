//! Which Jupyter endpoint the controller may send an allocation's token to.
//!
//! The endpoint comes from the job's comment, which the job's SLURM user (and, on a
//! careless site, an operator or a compromised node) can rewrite at any time, so it is
//! untrusted input: parsed strictly (`host:port`, nothing else), accepted only for the
//! job's own batch host (or that host under the admin's node domain, or the admin's bind
//! address), checked before any request carries the token, and pinned once the server
//! answered: a later rewrite of the comment is ignored until the job itself changes.
//! Pure logic, unit-tested below.

use crate::slurm::JobInfo;

/// What the cluster admin configured about endpoints, and what is already pinned.
#[derive(Clone, Copy, Debug, Default)]
pub struct EndpointPolicy<'a> {
    /// `jobTemplate.bindAddress`: every server binds to and reports this address.
    pub bind_address: Option<&'a str>,
    /// `jobTemplate.nodeDomain`: servers report `<batch host>.<nodeDomain>`.
    pub node_domain: Option<&'a str>,
    /// The endpoint pinned when this job's server first answered (`host:port`).
    pub pinned: Option<&'a str>,
}

/// The endpoint to use for a running job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EndpointChoice {
    /// The job has not reported one yet.
    Missing,
    /// Reported, but not acceptable; says why (for the status message and an event).
    Refused(String),
    /// Safe to probe with the token: `host:port`.
    Trusted(String),
}

/// Parses `host:port` strictly: a DNS name or IPv4 address (letters, digits, `-` and
/// `.`; no userinfo, path, query or brackets) and a decimal port 1–65535. Returns the
/// canonical form (host in lower case).
pub fn parse_endpoint(s: &str) -> Option<String> {
    let (host, port) = s.rsplit_once(':')?;
    let port_ok = !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit());
    let port: u16 = port.parse().ok().filter(|p| port_ok && *p != 0)?;
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    (host.len() <= 253 && host.split('.').all(label_ok))
        .then(|| format!("{}:{port}", host.to_ascii_lowercase()))
}

/// Decides which endpoint of a running job may receive the token. `reported` is the
/// raw `jupyter=` value of the job's comment.
pub fn choose_endpoint(
    reported: Option<&str>,
    job: &JobInfo,
    policy: &EndpointPolicy,
) -> EndpointChoice {
    if let Some(pinned) = policy.pinned {
        return EndpointChoice::Trusted(pinned.to_owned());
    }
    let Some(raw) = reported else {
        return EndpointChoice::Missing;
    };
    let Some(endpoint) = parse_endpoint(raw) else {
        return EndpointChoice::Refused(format!(
            "the job reported {raw:?}, which is not a plain host:port; not trusting it"
        ));
    };
    let host = endpoint.rsplit_once(':').map_or("", |(h, _)| h);
    let node = job.batch_host.as_deref().unwrap_or("?");
    if host_allowed(host, job, policy) {
        EndpointChoice::Trusted(endpoint)
    } else {
        EndpointChoice::Refused(format!(
            "the job reported {endpoint}, which is not its node {node}; not trusting it"
        ))
    }
}

/// A reported endpoint that differs from the pinned one (to report, never to use).
pub fn moved_endpoint(reported: Option<&str>, policy: &EndpointPolicy) -> Option<String> {
    let pinned = policy.pinned?;
    let reported = reported?;
    (parse_endpoint(reported).as_deref() != Some(pinned)).then(|| reported.to_owned())
}

fn host_allowed(host: &str, job: &JobInfo, policy: &EndpointPolicy) -> bool {
    if policy
        .bind_address
        .is_some_and(|b| b.eq_ignore_ascii_case(host))
    {
        return true;
    }
    let Some(batch) = job.batch_host.as_deref() else {
        return false;
    };
    batch.eq_ignore_ascii_case(host)
        || policy
            .node_domain
            .is_some_and(|d| host.eq_ignore_ascii_case(&format!("{batch}.{}", d.trim_matches('.'))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job_on(host: &str) -> JobInfo {
        JobInfo {
            nodes: Some(host.into()),
            batch_host: Some(host.into()),
            ..JobInfo::sample(9, &["RUNNING"])
        }
    }

    #[test]
    fn only_plain_host_port_parses() {
        assert_eq!(
            parse_endpoint("node17:4000").as_deref(),
            Some("node17:4000")
        );
        assert_eq!(
            parse_endpoint("Node17.Cluster.Example:4000").as_deref(),
            Some("node17.cluster.example:4000")
        );
        assert_eq!(
            parse_endpoint("10.1.2.3:80").as_deref(),
            Some("10.1.2.3:80")
        );
        for bad in [
            "node17.x@evil.example:80",
            "user:pw@node17:80",
            "node17:80/path",
            "node17:80?x=1",
            "node17:+80",
            "node17:0",
            "node17:65536",
            "node17:",
            ":80",
            "node17",
            "[::1]:80",
            "node17 :80",
            "-node17:80",
            "node17..x:80",
            "http://node17:80",
        ] {
            assert_eq!(parse_endpoint(bad), None, "{bad}");
        }
    }

    #[test]
    fn only_the_jobs_own_node_is_trusted() {
        let job = job_on("node17");
        let none = EndpointPolicy::default();
        assert_eq!(
            choose_endpoint(Some("node17:4000"), &job, &none),
            EndpointChoice::Trusted("node17:4000".into())
        );
        assert_eq!(choose_endpoint(None, &job, &none), EndpointChoice::Missing);
        // The first label is not enough: these were accepted before.
        for evil in [
            "node17.evil.example:80",
            "node17.x@evil.example:80",
            "node1:80",
        ] {
            assert!(
                matches!(
                    choose_endpoint(Some(evil), &job, &none),
                    EndpointChoice::Refused(_)
                ),
                "{evil}"
            );
        }
        // The node under the admin's domain, and nothing else under it.
        let domain = EndpointPolicy {
            node_domain: Some("cluster.example"),
            ..Default::default()
        };
        assert_eq!(
            choose_endpoint(Some("node17.cluster.example:4000"), &job, &domain),
            EndpointChoice::Trusted("node17.cluster.example:4000".into())
        );
        for evil in [
            "node18.cluster.example:4000",
            "node17.cluster.example.evil:4000",
            "node17xcluster.example:4000",
        ] {
            assert!(
                matches!(
                    choose_endpoint(Some(evil), &job, &domain),
                    EndpointChoice::Refused(_)
                ),
                "{evil}"
            );
        }
        // The admin's bind address.
        let bind = EndpointPolicy {
            bind_address: Some("127.0.0.1"),
            ..Default::default()
        };
        assert_eq!(
            choose_endpoint(Some("127.0.0.1:4000"), &job, &bind),
            EndpointChoice::Trusted("127.0.0.1:4000".into())
        );
        // No batch host yet: nothing but the bind address is trusted.
        let mut no_host = job.clone();
        no_host.batch_host = None;
        assert!(matches!(
            choose_endpoint(Some("node17:4000"), &no_host, &none),
            EndpointChoice::Refused(_)
        ));
    }

    #[test]
    fn a_pinned_endpoint_does_not_move() {
        let job = job_on("node17");
        let pinned = EndpointPolicy {
            pinned: Some("node17:4000"),
            ..Default::default()
        };
        assert_eq!(
            choose_endpoint(Some("node17:5000"), &job, &pinned),
            EndpointChoice::Trusted("node17:4000".into())
        );
        assert_eq!(
            moved_endpoint(Some("node17:5000"), &pinned).as_deref(),
            Some("node17:5000")
        );
        assert_eq!(moved_endpoint(Some("node17:4000"), &pinned), None);
        assert_eq!(moved_endpoint(None, &pinned), None);
    }
}
