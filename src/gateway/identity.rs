//! Who is calling: the local kubeconfig's user, as the API server names it in a
//! SelfSubjectReview (stdio), or a bearer token verified with a Kubernetes TokenReview
//! (HTTP), whose user the gateway then impersonates.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{SelfSubjectReview, TokenReview, TokenReviewSpec};
use kube::api::{Api, PostParams};
use sha2::{Digest, Sha256};

/// The identity a tool call runs as (serialised in the records of runs a restarted
/// gateway takes over: `journal`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Caller {
    /// stdio: the gateway's own kubeconfig identity (no impersonation), named as the API
    /// server knows it, so sessions started over stdio and over HTTP by the same
    /// Kubernetes user are that user's alike.
    Local { name: String },
    /// HTTP: a user authenticated by TokenReview, impersonated on every call.
    User { name: String, groups: Vec<String> },
}

impl Caller {
    /// A stable key (cache keys, ownership of executions).
    pub fn key(&self) -> String {
        match self {
            Self::Local { name } => format!("local:{name}"),
            Self::User { name, groups } => format!("user:{name}|{}", groups.join(",")),
        }
    }

    /// The user name, for annotations and logs.
    pub fn name(&self) -> &str {
        match self {
            Self::Local { name } | Self::User { name, .. } => name,
        }
    }

    /// A label value naming the caller (label values cannot hold every user name).
    pub fn owner_label(&self) -> String {
        super::names::digest(self.name(), 10)
    }
}

/// Who the gateway's own credentials are: one SelfSubjectReview (every authenticated user
/// may create one, through the built-in `system:basic-user` role).
pub async fn whoami(client: kube::Client) -> Result<Caller, kube::Error> {
    let api: Api<SelfSubjectReview> = Api::all(client);
    let answer = api
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await?;
    let name = answer
        .status
        .and_then(|s| s.user_info)
        .and_then(|u| u.username)
        .filter(|n| !n.is_empty())
        // An anonymous or unnamed identity still gets a stable key of its own.
        .unwrap_or_else(|| "system:anonymous".to_owned());
    Ok(Caller::Local { name })
}

/// Why a bearer token was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("the bearer token is not valid{0}")]
    Rejected(String),
    #[error("cannot verify the token right now (TokenReview failed: {0})")]
    Unavailable(String),
    #[error("too many invalid tokens were presented; retry in {0} s")]
    TooManyFailures(u64),
}

/// How long a verified token is trusted before it is reviewed again.
const REVIEW_TTL: Duration = Duration::from_secs(60);
/// Bound on remembered tokens (a flood of distinct tokens must not grow memory).
const MAX_CACHED: usize = 10_000;
/// How long a rejected token is answered from memory.
const REJECTED_TTL: Duration = Duration::from_secs(10);
/// Failed reviews allowed per client address and window before that client's unknown
/// tokens are refused unreviewed, so a token-guessing loop cannot turn the gateway into a
/// TokenReview flood, nor lock everyone else out.
const FAILURES_PER_CLIENT: u32 = 20;
/// The same for all clients together: a bound on TokenReview load from many addresses.
const FAILURES_OVERALL: u32 = 200;
const FAILURE_WINDOW: Duration = Duration::from_secs(10);
/// Bound on client addresses remembered (beyond it, stale ones are dropped first).
const MAX_CLIENTS: usize = 10_000;

/// Counts failed reviews in fixed windows (pure; unit-tested).
#[derive(Debug)]
pub struct FailureBudget {
    window_start: Instant,
    failures: u32,
    limit: u32,
}

impl FailureBudget {
    pub fn new(now: Instant, limit: u32) -> Self {
        Self {
            window_start: now,
            failures: 0,
            limit,
        }
    }

    /// Whether the window this budget counts in is over.
    fn stale(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.window_start) >= FAILURE_WINDOW
    }

    /// `Err(seconds to wait)` while the window's failures are spent.
    pub fn check(&mut self, now: Instant) -> Result<(), u64> {
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed >= FAILURE_WINDOW {
            self.window_start = now;
            self.failures = 0;
        }
        if self.failures >= self.limit {
            let left = FAILURE_WINDOW.saturating_sub(elapsed);
            return Err(left.as_secs().max(1));
        }
        Ok(())
    }

    pub fn record_failure(&mut self) {
        self.failures = self.failures.saturating_add(1);
    }
}

/// What is remembered about a token digest.
#[derive(Clone, Debug)]
enum Verdict {
    Accepted(Caller),
    Rejected(String),
}

struct Memory {
    verdicts: HashMap<[u8; 32], (Instant, Verdict)>,
    overall: FailureBudget,
    per_client: HashMap<IpAddr, FailureBudget>,
}

impl Memory {
    /// Whether `client` (and everyone together) may still have a token reviewed.
    fn check(&mut self, client: Option<IpAddr>, now: Instant) -> Result<(), u64> {
        if let Some(ip) = client {
            if self.per_client.len() >= MAX_CLIENTS {
                self.per_client.retain(|_, b| !b.stale(now));
                if self.per_client.len() >= MAX_CLIENTS {
                    self.per_client.clear();
                }
            }
            self.per_client
                .entry(ip)
                .or_insert_with(|| FailureBudget::new(now, FAILURES_PER_CLIENT))
                .check(now)?;
        }
        self.overall.check(now)
    }

    fn record_failure(&mut self, client: Option<IpAddr>) {
        self.overall.record_failure();
        if let Some(b) = client.and_then(|ip| self.per_client.get_mut(&ip)) {
            b.record_failure();
        }
    }
}

/// Verifies bearer tokens with TokenReview, remembering answers for a minute (rejections
/// for 10 s) and refusing a client's unknown tokens unreviewed after a burst of its
/// failures (and everyone's after a larger burst of all).
pub struct Authenticator {
    client: kube::Client,
    audiences: Vec<String>,
    memory: Mutex<Memory>,
}

impl Authenticator {
    pub fn new(client: kube::Client, audiences: Vec<String>) -> Self {
        Self {
            client,
            audiences,
            memory: Mutex::new(Memory {
                verdicts: HashMap::new(),
                overall: FailureBudget::new(Instant::now(), FAILURES_OVERALL),
                per_client: HashMap::new(),
            }),
        }
    }

    /// The caller a token belongs to; `client` is the address it came from (its budget of
    /// failed reviews; behind a proxy that is the proxy's).
    pub async fn review(&self, token: &str, client: Option<IpAddr>) -> Result<Caller, AuthError> {
        // Only a digest of the token is kept in memory.
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        {
            let mut memory = self.lock();
            match memory.verdicts.get(&key) {
                Some((at, Verdict::Accepted(caller))) if at.elapsed() < REVIEW_TTL => {
                    return Ok(caller.clone());
                }
                Some((at, Verdict::Rejected(why))) if at.elapsed() < REJECTED_TTL => {
                    return Err(AuthError::Rejected(why.clone()));
                }
                _ => {}
            }
            memory
                .check(client, Instant::now())
                .map_err(AuthError::TooManyFailures)?;
        }
        let verdict = self.ask(token).await?;
        let mut memory = self.lock();
        if let Verdict::Rejected(_) = verdict {
            memory.record_failure(client);
        }
        let verdicts = &mut memory.verdicts;
        if verdicts.len() >= MAX_CACHED {
            verdicts.retain(|_, (at, _)| at.elapsed() < REVIEW_TTL);
            if verdicts.len() >= MAX_CACHED {
                verdicts.clear();
            }
        }
        verdicts.insert(key, (Instant::now(), verdict.clone()));
        match verdict {
            Verdict::Accepted(caller) => Ok(caller),
            Verdict::Rejected(why) => Err(AuthError::Rejected(why)),
        }
    }

    /// One TokenReview.
    async fn ask(&self, token: &str) -> Result<Verdict, AuthError> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                audiences: (!self.audiences.is_empty()).then(|| self.audiences.clone()),
            },
            ..Default::default()
        };
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let answer = api
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| AuthError::Unavailable(e.to_string()))?;
        let status = answer.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            let why = status.error.map(|e| format!(": {e}")).unwrap_or_default();
            return Ok(Verdict::Rejected(why));
        }
        // A token valid for other audiences only is not one for us.
        if !self.audiences.is_empty() {
            let granted = status.audiences.unwrap_or_default();
            if !self.audiences.iter().any(|a| granted.contains(a)) {
                return Ok(Verdict::Rejected(format!(
                    ": it is not meant for this gateway (audiences {})",
                    self.audiences.join(", ")
                )));
            }
        }
        let user = status.user.unwrap_or_default();
        let Some(name) = user.username.filter(|n| !n.is_empty()) else {
            return Ok(Verdict::Rejected(": the token has no user name".into()));
        };
        Ok(Verdict::Accepted(Caller::User {
            name,
            groups: user.groups.unwrap_or_default(),
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Memory> {
        self.memory.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The token in an `Authorization: Bearer <token>` header value.
pub fn bearer_token(header: Option<&str>) -> Option<&str> {
    let value = header?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_read_from_the_header() {
        assert_eq!(bearer_token(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer_token(Some("bearer  abc ")), Some("abc"));
        assert_eq!(bearer_token(Some("Basic abc")), None);
        assert_eq!(bearer_token(Some("Bearer ")), None);
        assert_eq!(bearer_token(None), None);
    }

    #[test]
    fn a_burst_of_failures_pauses_reviews_for_the_window() {
        let t0 = Instant::now();
        let mut budget = FailureBudget::new(t0, FAILURES_PER_CLIENT);
        for _ in 0..FAILURES_PER_CLIENT {
            assert_eq!(budget.check(t0), Ok(()));
            budget.record_failure();
        }
        let wait = budget.check(t0 + Duration::from_secs(3)).unwrap_err();
        assert!((1..=7).contains(&wait), "{wait}");
        assert_eq!(budget.check(t0 + FAILURE_WINDOW), Ok(()), "a new window");
    }

    #[test]
    fn one_guessing_client_does_not_lock_out_the_others() {
        let t0 = Instant::now();
        let mut memory = Memory {
            verdicts: HashMap::new(),
            overall: FailureBudget::new(t0, FAILURES_OVERALL),
            per_client: HashMap::new(),
        };
        let (guesser, other) = (
            Some(IpAddr::from([10, 0, 0, 1])),
            Some(IpAddr::from([10, 0, 0, 2])),
        );
        for _ in 0..FAILURES_PER_CLIENT {
            assert_eq!(memory.check(guesser, t0), Ok(()));
            memory.record_failure(guesser);
        }
        assert!(memory.check(guesser, t0).is_err());
        assert_eq!(memory.check(other, t0), Ok(()));
        // Many addresses together still meet the overall bound.
        for i in 0..FAILURES_OVERALL {
            let ip = Some(IpAddr::from(i.wrapping_add(0x0b00_0000).to_be_bytes()));
            if memory.check(ip, t0).is_ok() {
                memory.record_failure(ip);
            }
        }
        assert!(memory.check(other, t0).is_err());
    }

    #[test]
    fn owner_labels_are_valid_label_values() {
        let c = Caller::User {
            name: "system:serviceaccount:team-a:agent".into(),
            groups: vec![],
        };
        let label = c.owner_label();
        assert_eq!(label.len(), 20);
        assert!(label.chars().all(|ch| ch.is_ascii_hexdigit()));
        // The same Kubernetes user owns the same sessions over stdio and HTTP.
        let local = Caller::Local {
            name: "system:serviceaccount:team-a:agent".into(),
        };
        assert_eq!(label, local.owner_label());
    }
}
