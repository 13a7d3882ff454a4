//! Per-client limit on wrong passwords.
//!
//! A client may get the password wrong `MAX_FAILURES` times in a sliding
//! window; after that every attempt is refused, without checking the
//! password, until the oldest failure leaves the window. A correct password
//! clears the client's record.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Wrong passwords allowed per window.
pub const MAX_FAILURES: usize = 5;
/// The sliding window.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Above this many tracked clients, stale ones are dropped first.
const MAX_TRACKED: usize = 10_000;

/// A refusal: the client must wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimited {
    /// Whole seconds until an attempt is accepted again (at least 1).
    pub retry_after_secs: u64,
}

/// Tracks failed logins per client address.
#[derive(Debug, Default)]
pub struct LoginLimiter {
    failures: Mutex<HashMap<IpAddr, VecDeque<Instant>>>,
}

impl LoginLimiter {
    /// Refuses if `client` has used up its attempts at `now`.
    pub fn check(&self, client: IpAddr, now: Instant) -> Result<(), RateLimited> {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let Some(times) = map.get_mut(&client) else {
            return Ok(());
        };
        prune(times, now);
        if times.len() < MAX_FAILURES {
            return Ok(());
        }
        let oldest = times.front().copied().unwrap_or(now);
        let wait = (oldest + WINDOW).saturating_duration_since(now);
        Err(RateLimited {
            retry_after_secs: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
        })
    }

    /// Records a wrong password from `client`.
    pub fn record_failure(&self, client: IpAddr, now: Instant) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_TRACKED {
            map.retain(|_, times| {
                prune(times, now);
                !times.is_empty()
            });
        }
        let times = map.entry(client).or_default();
        prune(times, now);
        times.push_back(now);
        while times.len() > MAX_FAILURES {
            times.pop_front();
        }
    }

    /// Forgets `client`'s failures after a correct password.
    pub fn record_success(&self, client: IpAddr) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(&client);
    }
}

fn prune(times: &mut VecDeque<Instant>, now: Instant) {
    while times
        .front()
        .is_some_and(|t| now.saturating_duration_since(*t) >= WINDOW)
    {
        times.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 168, 1, 20));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 168, 1, 21));

    #[test]
    fn sixth_attempt_within_the_window_is_refused_with_the_wait() {
        let limiter = LoginLimiter::default();
        let t0 = Instant::now();
        for i in 0..MAX_FAILURES {
            let now = t0 + Duration::from_secs(i as u64);
            assert!(limiter.check(A, now).is_ok(), "attempt {i}");
            limiter.record_failure(A, now);
        }
        let now = t0 + Duration::from_secs(10);
        let refused = limiter.check(A, now).expect_err("sixth is refused");
        assert_eq!(refused.retry_after_secs, 50);
        assert!(
            limiter.check(B, now).is_ok(),
            "other clients are not affected"
        );
        let later = t0 + WINDOW;
        assert!(
            limiter.check(A, later).is_ok(),
            "the oldest failure has left the window"
        );
    }

    #[test]
    fn success_clears_the_record() {
        let limiter = LoginLimiter::default();
        let now = Instant::now();
        for _ in 0..MAX_FAILURES {
            limiter.record_failure(A, now);
        }
        assert!(limiter.check(A, now).is_err());
        limiter.record_success(A);
        assert!(limiter.check(A, now).is_ok());
    }
}
