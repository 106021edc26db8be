//! Who is calling: the local kubeconfig's user (stdio) or a bearer token verified with a
//! Kubernetes TokenReview (HTTP), whose user the gateway then impersonates.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::{Api, PostParams};
use sha2::{Digest, Sha256};

/// The identity a tool call runs as.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Caller {
    /// stdio: the gateway's own kubeconfig identity.
    Local,
    /// HTTP: a user authenticated by TokenReview, impersonated on every call.
    User { name: String, groups: Vec<String> },
}

impl Caller {
    /// A stable key (cache keys, ownership of executions).
    pub fn key(&self) -> String {
        match self {
            Self::Local => "local".to_owned(),
            Self::User { name, groups } => format!("user:{name}|{}", groups.join(",")),
        }
    }

    /// The user name, for annotations and logs.
    pub fn name(&self) -> &str {
        match self {
            Self::Local => "local",
            Self::User { name, .. } => name,
        }
    }

    /// A label value naming the caller (label values cannot hold every user name).
    pub fn owner_label(&self) -> String {
        super::names::digest(self.name(), 10)
    }
}

/// Why a bearer token was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("the bearer token is not valid{0}")]
    Rejected(String),
    #[error("cannot verify the token right now (TokenReview failed: {0})")]
    Unavailable(String),
}

/// How long a verified token is trusted before it is reviewed again.
const REVIEW_TTL: Duration = Duration::from_secs(60);
/// Bound on remembered tokens (a flood of distinct tokens must not grow memory).
const MAX_CACHED: usize = 10_000;

/// Verifies bearer tokens with TokenReview, remembering answers for a minute.
pub struct Authenticator {
    client: kube::Client,
    audiences: Vec<String>,
    cache: Mutex<HashMap<[u8; 32], (Instant, Caller)>>,
}

impl Authenticator {
    pub fn new(client: kube::Client, audiences: Vec<String>) -> Self {
        Self {
            client,
            audiences,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The caller a token belongs to.
    pub async fn review(&self, token: &str) -> Result<Caller, AuthError> {
        // Only a digest of the token is kept in memory.
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some((at, caller)) = self.lock().get(&key)
            && at.elapsed() < REVIEW_TTL
        {
            return Ok(caller.clone());
        }
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
            return Err(AuthError::Rejected(why));
        }
        let user = status.user.unwrap_or_default();
        let name = user
            .username
            .filter(|n| !n.is_empty())
            .ok_or_else(|| AuthError::Rejected(": the token has no user name".into()))?;
        let caller = Caller::User {
            name,
            groups: user.groups.unwrap_or_default(),
        };
        let mut cache = self.lock();
        if cache.len() >= MAX_CACHED {
            cache.retain(|_, (at, _)| at.elapsed() < REVIEW_TTL);
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
        }
        cache.insert(key, (Instant::now(), caller.clone()));
        Ok(caller)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], (Instant, Caller)>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
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
    fn owner_labels_are_valid_label_values() {
        let c = Caller::User {
            name: "system:serviceaccount:team-a:agent".into(),
            groups: vec![],
        };
        let label = c.owner_label();
        assert_eq!(label.len(), 20);
        assert!(label.chars().all(|ch| ch.is_ascii_hexdigit()));
        assert_ne!(label, Caller::Local.owner_label());
    }
}
