//! A token bucket capping requests per second to one slurmrestd.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Allows `rate` requests per second on average, with bursts of up to `burst`.
#[derive(Debug)]
pub struct RateLimiter {
    state: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    /// Takes a token if there is one; otherwise reserves the next and says how long to wait.
    fn take(&mut self, now: Instant) -> Option<Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last = now;
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            None
        } else {
            Some(Duration::from_secs_f64(-self.tokens / self.rate))
        }
    }
}

impl RateLimiter {
    pub fn new(rate_per_second: u32, burst: u32) -> Self {
        let rate = f64::from(rate_per_second.max(1));
        let burst = f64::from(burst.max(1));
        Self {
            state: Mutex::new(Bucket {
                rate,
                burst,
                tokens: burst,
                last: Instant::now(),
            }),
        }
    }

    /// Waits until a request may be sent.
    pub async fn acquire(&self) {
        let wait = self
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take(Instant::now());
        if let Some(wait) = wait {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_spaces_requests_at_the_rate() {
        let t0 = Instant::now();
        let mut b = Bucket {
            rate: 5.0,
            burst: 2.0,
            tokens: 2.0,
            last: t0,
        };
        assert_eq!(b.take(t0), None);
        assert_eq!(b.take(t0), None);
        let w = b.take(t0).expect("third request waits");
        assert!((w.as_secs_f64() - 0.2).abs() < 1e-9, "{w:?}");
        let w = b.take(t0).expect("fourth waits longer");
        assert!((w.as_secs_f64() - 0.4).abs() < 1e-9, "{w:?}");
        // A second later the debt is repaid and the bucket refilled up to the burst.
        assert_eq!(b.take(t0 + Duration::from_secs(2)), None);
    }

    #[tokio::test(start_paused = true)]
    async fn acquire_waits_on_the_clock() {
        let limiter = RateLimiter::new(10, 1);
        let t0 = Instant::now();
        for _ in 0..5 {
            limiter.acquire().await;
        }
        let waited = t0.elapsed();
        assert!(
            waited >= Duration::from_millis(400) && waited < Duration::from_millis(500),
            "{waited:?}"
        );
    }
}
