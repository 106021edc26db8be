//! The Jupyter tokens of allocations, read from their Secret once and kept for a while:
//! probing a server and watching a kernel happen every few seconds per object, and a
//! Secret GET each time would make the API server's load grow with every session.
//! A token is made once per allocation; keeping it 10 minutes bounds how long a token
//! changed by hand goes unseen.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const KEEP: Duration = Duration::from_secs(600);
/// Entries kept before expired ones are dropped.
const PRUNE_AT: usize = 4096;

/// (allocation uid, Secret) → the token and when it was read. By uid: an allocation
/// deleted and made again under its name has a token of its own.
#[derive(Default)]
pub struct Tokens(Mutex<HashMap<(String, String), (String, Instant)>>);

impl Tokens {
    /// The kept token of the allocation `uid`, if read less than 10 minutes ago.
    pub fn get(&self, uid: &str, secret: &str) -> Option<String> {
        let tokens = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let key = (uid.to_owned(), secret.to_owned());
        tokens
            .get(&key)
            .filter(|(_, at)| at.elapsed() < KEEP)
            .map(|(t, _)| t.clone())
    }

    pub fn put(&self, uid: &str, secret: &str, token: &str) {
        let mut tokens = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if tokens.len() >= PRUNE_AT {
            tokens.retain(|_, (_, at)| at.elapsed() < KEEP);
        }
        tokens.insert(
            (uid.to_owned(), secret.to_owned()),
            (token.to_owned(), Instant::now()),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_kept_per_allocation_uid_and_secret() {
        let t = Tokens::default();
        assert_eq!(t.get("uid-1", "s"), None);
        t.put("uid-1", "s", "tok");
        assert_eq!(t.get("uid-1", "s").as_deref(), Some("tok"));
        assert_eq!(t.get("uid-2", "s"), None);
        assert_eq!(t.get("uid-1", "other"), None);
    }
}
