//! What can go wrong talking to slurmrestd, each error saying what to fix.

use super::version::NegotiationError;
use super::wire::Problem;

/// An error from the slurmrestd client.
#[derive(Debug, thiserror::Error)]
pub enum SlurmError {
    #[error(
        "cannot reach slurmrestd at {url}: {detail}; check restApi.url, that slurmrestd is running, and that this pod may connect to it"
    )]
    Unreachable { url: String, detail: String },

    #[error(
        "slurmrestd at {url} did not answer within {seconds} s; it or slurmctld may be overloaded"
    )]
    Timeout { url: String, seconds: u64 },

    #[error(
        "slurmrestd refused the credentials for SLURM user {user:?} (HTTP {status}{}); check the cluster's auth Secret: the token may be expired or wrong, the jwt_key may not be this cluster's, or SLURM may not know the user",
        detail_suffix(detail)
    )]
    AuthRefused {
        user: String,
        status: u16,
        detail: String,
    },

    #[error("SLURM does not know job {job_id} (it may have finished more than MinJobAge ago)")]
    UnknownJob { job_id: u64 },

    #[error("SLURM rejected the request: {}", describe(problems))]
    Rejected { status: u16, problems: Vec<Problem> },

    #[error("slurmrestd failed (HTTP {status}): {detail}")]
    Server { status: u16, detail: String },

    #[error(transparent)]
    Version(#[from] NegotiationError),

    #[error("slurmrestd answered {what} with a body slurmlab cannot read at `{path}`: {detail}")]
    Malformed {
        what: String,
        path: String,
        detail: String,
    },
}

fn detail_suffix(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(": {detail}")
    }
}

/// "Invalid partition name specified (2000): Batch job submission failed; ..."
pub fn describe(problems: &[Problem]) -> String {
    if problems.is_empty() {
        return "no reason given".to_owned();
    }
    problems
        .iter()
        .map(|p| {
            let mut s = if p.error.is_empty() {
                p.description.clone()
            } else {
                p.error.clone()
            };
            if p.error_number != 0 {
                s.push_str(&format!(" (error {})", p.error_number));
            }
            if !p.error.is_empty() && !p.description.is_empty() && p.description != p.error {
                s.push_str(&format!(": {}", p.description));
            }
            s
        })
        .collect::<Vec<_>>()
        .join("; ")
}

impl SlurmError {
    /// Worth retrying after a short wait: the request may not have reached slurmctld,
    /// or a proxy/slurmrestd was briefly unavailable. Never a 4xx.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Unreachable { .. } => true,
            Self::Server { status, .. } => matches!(status, 502..=504),
            _ => false,
        }
    }

    /// A short label for metrics and conditions.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Unreachable { .. } => "unreachable",
            Self::Timeout { .. } => "timeout",
            Self::AuthRefused { .. } => "auth_refused",
            Self::UnknownJob { .. } => "unknown_job",
            Self::Rejected { .. } => "rejected",
            Self::Server { .. } => "server_error",
            Self::Version(_) => "unsupported_version",
            Self::Malformed { .. } => "malformed",
        }
    }

    /// SLURM's own error numbers, when it gave any.
    pub fn slurm_error_numbers(&self) -> Vec<i64> {
        match self {
            Self::Rejected { problems, .. } => problems.iter().map(|p| p.error_number).collect(),
            _ => vec![],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejection_messages_carry_slurms_words_and_numbers() {
        let e = SlurmError::Rejected {
            status: 500,
            problems: vec![Problem {
                description: "Batch job submission failed".into(),
                error_number: 2000,
                error: "Invalid partition name specified".into(),
                source: "slurm_submit_batch_job()".into(),
            }],
        };
        assert_eq!(
            e.to_string(),
            "SLURM rejected the request: Invalid partition name specified (error 2000): Batch job submission failed"
        );
        assert_eq!(e.slurm_error_numbers(), [2000]);
        assert!(!e.is_retryable());
    }

    #[test]
    fn only_gateway_errors_and_unreachable_are_retried() {
        for (status, retry) in [
            (502, true),
            (503, true),
            (504, true),
            (500, false),
            (404, false),
            (401, false),
        ] {
            let e = SlurmError::Server {
                status,
                detail: String::new(),
            };
            assert_eq!(e.is_retryable(), retry, "{status}");
        }
        assert!(
            SlurmError::Unreachable {
                url: "u".into(),
                detail: "d".into()
            }
            .is_retryable()
        );
        assert!(
            !SlurmError::AuthRefused {
                user: "u".into(),
                status: 401,
                detail: String::new()
            }
            .is_retryable()
        );
    }
}
