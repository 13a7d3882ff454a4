//! What the owner means with the reset button: the press patterns, as a
//! state machine fed with the line's edges and the passing of time, so the
//! same logic serves a GPIO button (held down) and a PC's power button
//! (pressed several times: its presses are all the kernel reports).
//!
//! - A GPIO button held 5 s asks for a soft reset (admin password and
//!   network settings cleared, apps and data kept), held 15 s for a factory
//!   reset. The LED blinks as each threshold is crossed, so the owner knows
//!   when to let go; what happens is decided on release.
//! - The power button pressed 5 times within 10 s asks for a soft reset,
//!   10 times within 20 s for a factory reset. The decision waits until no
//!   press has come for [`PATTERN_SETTLE`], to tell 5 from 10. One lone
//!   press is the ordinary "shut down".
//!
//! Bounces shorter than [`DEBOUNCE`] are ignored. Times are `Duration`s
//! since any fixed start (a monotonic clock), which keeps the logic free of
//! clocks and testable.

use std::time::Duration;

/// Changes shorter than this are contact bounce.
pub const DEBOUNCE: Duration = Duration::from_millis(50);
/// Held this long: soft reset.
pub const SOFT_HOLD: Duration = Duration::from_secs(5);
/// Held this long: factory reset.
pub const FACTORY_HOLD: Duration = Duration::from_secs(15);
/// Presses for a soft reset, and the window they must fall in.
pub const SOFT_PRESSES: usize = 5;
pub const SOFT_WINDOW: Duration = Duration::from_secs(10);
/// Presses for a factory reset, and their window.
pub const FACTORY_PRESSES: usize = 10;
pub const FACTORY_WINDOW: Duration = Duration::from_secs(20);
/// Quiet time after the last press before a press pattern is decided.
pub const PATTERN_SETTLE: Duration = Duration::from_secs(3);

/// What the owner asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// Admin password and network settings cleared; apps and data kept.
    SoftReset,
    /// Everything under `/data` wiped except `/data/disks`.
    FactoryReset,
    /// One press of a PC's power button: shut down cleanly.
    PowerOff,
}

/// What the watcher should do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// A threshold was crossed while held: blink the LED to confirm it.
    Armed(Request),
    /// The pattern is complete: act on it.
    Act(Request),
}

/// How the button reports itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A GPIO line: both edges, so holds can be timed.
    Held,
    /// A power button: presses only.
    Presses,
}

/// The state machine. Feed it [`Self::edge`] on every change of the line
/// and [`Self::tick`] at least every 100 ms; each returns what to do.
#[derive(Debug, Clone)]
pub struct PressPattern {
    kind: Kind,
    /// The debounced level and since when.
    pressed: bool,
    since: Duration,
    /// A change not yet lasted [`DEBOUNCE`].
    pending: Option<(bool, Duration)>,
    /// Thresholds already signalled during this hold.
    armed: Option<Request>,
    /// Power button: the times of recent presses.
    presses: Vec<Duration>,
}

impl PressPattern {
    pub fn new(kind: Kind) -> Self {
        Self {
            kind,
            pressed: false,
            since: Duration::ZERO,
            pending: None,
            armed: None,
            presses: Vec::new(),
        }
    }

    /// The line changed to `pressed` at `at`.
    pub fn edge(&mut self, pressed: bool, at: Duration) -> Option<Signal> {
        // The pending change (if any) settles first, at its own time.
        let settled = self.settle(at);
        match self.kind {
            Kind::Presses => {
                // A power button reports presses; the release is implied.
                if pressed {
                    self.presses.push(at);
                }
                settled
            }
            Kind::Held => {
                if pressed == self.pressed {
                    // A bounce back before the change settled.
                    self.pending = None;
                } else {
                    self.pending = Some((pressed, at));
                }
                settled
            }
        }
    }

    /// Time passed to `now` with no change of the line.
    pub fn tick(&mut self, now: Duration) -> Option<Signal> {
        if let Some(signal) = self.settle(now) {
            return Some(signal);
        }
        match self.kind {
            Kind::Held => self.while_held(now),
            Kind::Presses => self.decide_presses(now),
        }
    }

    /// Applies a pending change that has lasted [`DEBOUNCE`] by `now`.
    fn settle(&mut self, now: Duration) -> Option<Signal> {
        let (level, at) = self.pending?;
        if now.saturating_sub(at) < DEBOUNCE {
            return None;
        }
        self.pending = None;
        let held = at.saturating_sub(self.since);
        let was_pressed = self.pressed;
        self.pressed = level;
        self.since = at;
        if !was_pressed || level {
            return None;
        }
        // Released: what the hold meant is decided now.
        self.armed = None;
        hold_request(held).map(Signal::Act)
    }

    fn while_held(&mut self, now: Duration) -> Option<Signal> {
        if !self.pressed {
            return None;
        }
        let reached = hold_request(now.saturating_sub(self.since))?;
        self.arm(reached)
    }

    /// Signals a threshold once per hold or pattern.
    fn arm(&mut self, reached: Request) -> Option<Signal> {
        if self.armed == Some(reached) {
            return None;
        }
        self.armed = Some(reached);
        Some(Signal::Armed(reached))
    }

    fn decide_presses(&mut self, now: Duration) -> Option<Signal> {
        let last = *self.presses.last()?;
        if now.saturating_sub(last) < PATTERN_SETTLE {
            // Say as soon as a pattern is reached, so the LED can confirm.
            let reached = self.pattern(last)?;
            return self.arm(reached);
        }
        let request = self
            .pattern(last)
            .or((self.presses.len() == 1).then_some(Request::PowerOff));
        // Decided, or a few presses that make no pattern: nothing, on purpose.
        self.presses.clear();
        self.armed = None;
        request.map(Signal::Act)
    }

    /// The reset the presses up to `last` make, if any.
    fn pattern(&self, last: Duration) -> Option<Request> {
        if self.count_within(last, FACTORY_WINDOW) >= FACTORY_PRESSES {
            Some(Request::FactoryReset)
        } else if self.count_within(last, SOFT_WINDOW) >= SOFT_PRESSES {
            Some(Request::SoftReset)
        } else {
            None
        }
    }

    /// Presses in the `window` that ends at `last`.
    fn count_within(&self, last: Duration, window: Duration) -> usize {
        self.presses
            .iter()
            .filter(|&&t| last.saturating_sub(t) < window)
            .count()
    }
}

/// The reset a hold of `held` asks for, if any.
fn hold_request(held: Duration) -> Option<Request> {
    if held >= FACTORY_HOLD {
        Some(Request::FactoryReset)
    } else if held >= SOFT_HOLD {
        Some(Request::SoftReset)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Runs a script of (time in ms, pressed) edges, ticking every 100 ms
    /// until `end_ms`; returns every signal with its time.
    fn run(kind: Kind, edges: &[(u64, bool)], end_ms: u64) -> Vec<(u64, Signal)> {
        let mut p = PressPattern::new(kind);
        let mut out = Vec::new();
        let mut edges = edges.iter().peekable();
        let mut t = 0;
        while t <= end_ms {
            while let Some(&&(at, level)) = edges.peek() {
                if at > t {
                    break;
                }
                if let Some(s) = p.edge(level, ms(at)) {
                    out.push((at, s));
                }
                edges.next();
            }
            if let Some(s) = p.tick(ms(t)) {
                out.push((t, s));
            }
            t += 100;
        }
        out
    }

    fn acts(signals: &[(u64, Signal)]) -> Vec<Request> {
        signals
            .iter()
            .filter_map(|(_, s)| match s {
                Signal::Act(r) => Some(*r),
                Signal::Armed(_) => None,
            })
            .collect()
    }

    #[test]
    fn a_short_press_does_nothing() {
        let s = run(Kind::Held, &[(1000, true), (3000, false)], 10_000);
        assert!(s.is_empty(), "{s:?}");
    }

    #[test]
    fn held_five_seconds_arms_then_soft_resets_on_release() {
        let s = run(Kind::Held, &[(1000, true), (7000, false)], 10_000);
        assert_eq!(
            s,
            [
                (6000, Signal::Armed(Request::SoftReset)),
                (7100, Signal::Act(Request::SoftReset))
            ],
            "armed when 5 s are reached, acted on once the release has settled"
        );
    }

    #[test]
    fn held_fifteen_seconds_blinks_twice_and_factory_resets() {
        let s = run(Kind::Held, &[(0, true), (16_000, false)], 20_000);
        let armed: Vec<Request> = s
            .iter()
            .filter_map(|(_, s)| match s {
                Signal::Armed(r) => Some(*r),
                Signal::Act(_) => None,
            })
            .collect();
        assert_eq!(armed, [Request::SoftReset, Request::FactoryReset]);
        assert_eq!(acts(&s), [Request::FactoryReset]);
    }

    #[test]
    fn bounces_do_not_cut_a_hold_short() {
        // Contact bounce at the press and twice during the hold (20 ms each).
        let s = run(
            Kind::Held,
            &[
                (1000, true),
                (1010, false),
                (1020, true),
                (3000, false),
                (3020, true),
                (5000, false),
                (5020, true),
                (7000, false),
            ],
            10_000,
        );
        assert_eq!(acts(&s), [Request::SoftReset], "{s:?}");
    }

    #[test]
    fn a_release_that_lasts_is_a_release() {
        // Released for 300 ms in the middle: two 3 s presses, no reset.
        let s = run(
            Kind::Held,
            &[(1000, true), (4000, false), (4300, true), (7300, false)],
            10_000,
        );
        assert!(acts(&s).is_empty(), "{s:?}");
    }

    #[test]
    fn one_power_button_press_is_shut_down() {
        let s = run(Kind::Presses, &[(1000, true)], 10_000);
        assert_eq!(acts(&s), [Request::PowerOff]);
    }

    #[test]
    fn five_power_button_presses_within_ten_seconds_are_a_soft_reset() {
        let presses: Vec<(u64, bool)> = (0..5).map(|i| (1000 + i * 1500, true)).collect();
        let s = run(Kind::Presses, &presses, 20_000);
        assert_eq!(acts(&s), [Request::SoftReset], "{s:?}");
        assert!(
            s.contains(&(7000, Signal::Armed(Request::SoftReset))),
            "{s:?}"
        );
    }

    #[test]
    fn ten_presses_within_twenty_seconds_are_a_factory_reset_not_two_soft_ones() {
        let presses: Vec<(u64, bool)> = (0..10).map(|i| (1000 + i * 1500, true)).collect();
        let s = run(Kind::Presses, &presses, 30_000);
        assert_eq!(acts(&s), [Request::FactoryReset], "{s:?}");
    }

    #[test]
    fn presses_spread_too_thin_make_no_pattern() {
        // Five presses, but over 12 s: neither a reset nor a shut-down.
        let presses: Vec<(u64, bool)> = (0..5).map(|i| (1000 + i * 2900, true)).collect();
        let s = run(Kind::Presses, &presses, 30_000);
        assert!(acts(&s).is_empty(), "{s:?}");
    }
}
