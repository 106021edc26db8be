//! Credentials for slurmrestd: a static token that can be replaced while running, or
//! tokens minted per SLURM user from the cluster's HS256 key and refreshed before expiry.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::jwt;

/// Where tokens come from. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct TokenSource(Arc<Inner>);

enum Inner {
    Static {
        user: String,
        token: RwLock<String>,
    },
    Jwt {
        key: RwLock<Vec<u8>>,
        lifetime: Duration,
        cache: Mutex<HashMap<String, Minted>>,
    },
}

#[derive(Clone)]
struct Minted {
    token: String,
    expires: u64,
}

/// Default lifetime of minted tokens.
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(600);

impl TokenSource {
    /// A fixed token acting as `user` (e.g. from `scontrol token`).
    pub fn fixed(user: impl Into<String>, token: impl Into<String>) -> Self {
        Self(Arc::new(Inner::Static {
            user: user.into(),
            token: RwLock::new(token.into()),
        }))
    }

    /// Tokens minted from the cluster's `jwt_key`, valid for `lifetime`.
    pub fn jwt_key(key: Vec<u8>, lifetime: Duration) -> Self {
        Self(Arc::new(Inner::Jwt {
            key: RwLock::new(key),
            lifetime: lifetime.max(Duration::from_secs(60)),
            cache: Mutex::new(HashMap::new()),
        }))
    }

    /// With a static token, the one user it acts as.
    pub fn fixed_user(&self) -> Option<&str> {
        match &*self.0 {
            Inner::Static { user, .. } => Some(user),
            Inner::Jwt { .. } => None,
        }
    }

    /// Replaces the static token or the key (the Secret changed); minted tokens are dropped.
    pub fn replace(&self, secret: Vec<u8>) {
        match &*self.0 {
            Inner::Static { token, .. } => {
                *token.write().unwrap_or_else(|p| p.into_inner()) =
                    String::from_utf8_lossy(&secret).trim().to_owned();
            }
            Inner::Jwt { key, cache, .. } => {
                *key.write().unwrap_or_else(|p| p.into_inner()) = secret;
                cache.lock().unwrap_or_else(|p| p.into_inner()).clear();
            }
        }
    }

    /// The (user, token) pair to send for a request on behalf of `user`. A static token
    /// always acts as its own user.
    pub fn credentials(&self, user: &str) -> (String, String) {
        self.credentials_at(user, unix_now())
    }

    fn credentials_at(&self, user: &str, now: u64) -> (String, String) {
        match &*self.0 {
            Inner::Static { user, token } => (
                user.clone(),
                token.read().unwrap_or_else(|p| p.into_inner()).clone(),
            ),
            Inner::Jwt {
                key,
                lifetime,
                cache,
            } => {
                let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
                // Refresh once less than a third of the lifetime is left, so a token never
                // expires in flight.
                let margin = lifetime.as_secs() / 3;
                if let Some(m) = cache.get(user)
                    && m.expires > now + margin
                {
                    return (user.to_owned(), m.token.clone());
                }
                let key = key.read().unwrap_or_else(|p| p.into_inner());
                let token = jwt::mint(&key, user, now, lifetime.as_secs());
                cache.insert(
                    user.to_owned(),
                    Minted {
                        token: token.clone(),
                        expires: now + lifetime.as_secs(),
                    },
                );
                (user.to_owned(), token)
            }
        }
    }
}

impl std::fmt::Debug for TokenSource {
    // Never print tokens or keys.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &*self.0 {
            Inner::Static { user, .. } => write!(f, "TokenSource::Static(user={user})"),
            Inner::Jwt { lifetime, .. } => write!(f, "TokenSource::Jwt(lifetime={lifetime:?})"),
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_tokens_are_cached_per_user_and_refreshed_before_expiry() {
        let src = TokenSource::jwt_key(b"key".to_vec(), Duration::from_secs(600));
        let (u, t1) = src.credentials_at("alice", 1000);
        assert_eq!(u, "alice");
        assert_eq!(
            src.credentials_at("alice", 1100).1,
            t1,
            "reused while fresh"
        );
        assert_ne!(src.credentials_at("bob", 1100).1, t1, "one token per user");
        // 600 s lifetime, refreshed when less than 200 s are left: at 1401 it is renewed.
        let t2 = src.credentials_at("alice", 1401).1;
        assert_ne!(t2, t1);
        assert_eq!(t2, jwt::mint(b"key", "alice", 1401, 600));
    }

    #[test]
    fn replacing_the_key_drops_minted_tokens() {
        let src = TokenSource::jwt_key(b"old".to_vec(), Duration::from_secs(600));
        let before = src.credentials_at("alice", 1000).1;
        src.replace(b"new".to_vec());
        let after = src.credentials_at("alice", 1001).1;
        assert_eq!(after, jwt::mint(b"new", "alice", 1001, 600));
        assert_ne!(before, after);
    }

    #[test]
    fn a_static_token_acts_as_its_own_user_and_can_be_replaced() {
        let src = TokenSource::fixed("slurmjob", "t1");
        assert_eq!(
            src.credentials("alice"),
            ("slurmjob".to_owned(), "t1".to_owned())
        );
        src.replace(b"t2\n".to_vec());
        assert_eq!(src.credentials("x").1, "t2");
        assert_eq!(format!("{src:?}"), "TokenSource::Static(user=slurmjob)");
    }
}
