//! Per-object backoff after failed reconciles: 5 s after the first failure, doubling to
//! 5 minutes, reset by the next success, so one object that keeps failing (a Jupyter
//! server that refuses, a Secret someone deleted) costs a handful of requests an hour
//! instead of one every 5 s, while the others go on at their own pace.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

const FIRST: Duration = Duration::from_secs(5);
const MAX: Duration = Duration::from_secs(300);

/// Consecutive failures per object (its uid).
#[derive(Default)]
pub struct Retries(Mutex<HashMap<String, u32>>);

impl Retries {
    /// Counts one more failure of `uid` and says how long to wait before the next try.
    pub fn failed(&self, uid: &str) -> Duration {
        let mut failures = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = failures.entry(uid.to_owned()).or_default();
        *n = n.saturating_add(1);
        delay(*n)
    }

    /// A success: the next failure starts over at 5 s.
    pub fn succeeded(&self, uid: &str) {
        let mut failures = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if !failures.is_empty() {
            failures.remove(uid);
        }
    }
}

/// The wait after `failures` consecutive failures (1 → 5 s, 2 → 10 s, … capped at 5 min).
pub fn delay(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    FIRST.saturating_mul(1 << doublings).min(MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_doubles_from_five_seconds_to_five_minutes() {
        let waits: Vec<u64> = (1..=9).map(|n| delay(n).as_secs()).collect();
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(delay(u32::MAX), MAX);
        assert_eq!(delay(0), FIRST);
    }

    #[test]
    fn a_success_starts_the_count_over_and_objects_count_apart() {
        let r = Retries::default();
        assert_eq!(r.failed("a"), Duration::from_secs(5));
        assert_eq!(r.failed("a"), Duration::from_secs(10));
        assert_eq!(r.failed("b"), Duration::from_secs(5));
        r.succeeded("a");
        assert_eq!(r.failed("a"), Duration::from_secs(5));
        assert_eq!(r.failed("b"), Duration::from_secs(10));
    }
}
