//! Per-client limit on wrong passwords.
//!
//! A client may get the password wrong `MAX_FAILURES` times in a sliding
//! window; after that every attempt is refused, without checking the
//! password, until the oldest failure leaves the window. A correct password
//! clears the client's record.
//!
//! An attempt is booked as a failure *before* its password is checked
//! (`begin`), so a flood of parallel attempts cannot all slip past the check
//! while the hashes run, and an attempt whose client hangs up still counts.
//! IPv6 clients are counted per /64, the block one home network hands out,
//! so hopping addresses within it gains nothing.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Wrong passwords allowed per window.
pub const MAX_FAILURES: usize = 5;
/// The sliding window.
pub const WINDOW: Duration = Duration::from_secs(60);
/// At most this many clients are tracked; beyond it the quietest are forgotten.
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
    /// Books an attempt by `client` at `now` as a failure, or refuses it if
    /// the client has used up its attempts. Call `succeeded` when the
    /// password turns out right.
    pub fn begin(&self, client: IpAddr, now: Instant) -> Result<(), RateLimited> {
        let key = limit_key(client);
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if !map.contains_key(&key) && map.len() >= MAX_TRACKED {
            evict(&mut map, now);
        }
        let times = map.entry(key).or_default();
        prune(times, now);
        if times.len() >= MAX_FAILURES {
            let oldest = times.front().copied().unwrap_or(now);
            let wait = (oldest + WINDOW).saturating_duration_since(now);
            return Err(RateLimited {
                retry_after_secs: (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1),
            });
        }
        times.push_back(now);
        Ok(())
    }

    /// Forgets `client`'s failures after a correct password.
    pub fn succeeded(&self, client: IpAddr) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(&limit_key(client));
    }
}

/// IPv4 addresses count alone, IPv6 addresses by their /64.
fn limit_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let mut segments = v6.segments();
            segments[4..].fill(0);
            IpAddr::V6(segments.into())
        }
    }
}

/// Makes room: drops stale clients, then, if still full, the one whose last
/// failure is oldest.
fn evict(map: &mut HashMap<IpAddr, VecDeque<Instant>>, now: Instant) {
    map.retain(|_, times| {
        prune(times, now);
        !times.is_empty()
    });
    if map.len() >= MAX_TRACKED
        && let Some(quietest) = map
            .iter()
            .min_by_key(|(_, times)| times.back().copied())
            .map(|(ip, _)| *ip)
    {
        map.remove(&quietest);
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
            assert!(limiter.begin(A, now).is_ok(), "attempt {i}");
        }
        let now = t0 + Duration::from_secs(10);
        let refused = limiter.begin(A, now).expect_err("sixth is refused");
        assert_eq!(refused.retry_after_secs, 50);
        assert!(
            limiter.begin(B, now).is_ok(),
            "other clients are not affected"
        );
        let later = t0 + WINDOW;
        assert!(
            limiter.begin(A, later).is_ok(),
            "the oldest failure has left the window"
        );
    }

    #[test]
    fn success_clears_the_record() {
        let limiter = LoginLimiter::default();
        let now = Instant::now();
        for _ in 0..MAX_FAILURES {
            limiter.begin(A, now).expect("allowed");
        }
        assert!(limiter.begin(A, now).is_err());
        limiter.succeeded(A);
        assert!(limiter.begin(A, now).is_ok());
    }

    #[test]
    fn ipv6_clients_are_counted_per_64() {
        let limiter = LoginLimiter::default();
        let now = Instant::now();
        for i in 0..MAX_FAILURES as u16 {
            let ip = IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 1, 2, i, i, i, i));
            limiter.begin(ip, now).expect("allowed");
        }
        let hopper = IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 9, 9, 9, 9));
        assert!(
            limiter.begin(hopper, now).is_err(),
            "a new address in the same /64 is still limited"
        );
        let neighbour = IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 1, 3, 0, 0, 0, 1));
        assert!(limiter.begin(neighbour, now).is_ok());
    }

    #[test]
    fn the_table_never_grows_past_its_cap() {
        let limiter = LoginLimiter::default();
        let now = Instant::now();
        for i in 0..(MAX_TRACKED as u32 + 50) {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            let _ = limiter.begin(ip, now);
        }
        let len = limiter.failures.lock().map(|m| m.len()).unwrap_or(0);
        assert!(len <= MAX_TRACKED, "{len}");
    }
}
