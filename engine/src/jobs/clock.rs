//! Time as the job stores see it: every lease, schedule, backoff, timestamp and staleness check a store makes
//! reads its [`Clock`]. Production stores use [`SystemClock`]; tests hand a store a [`ManualClock`] and
//! [`advance`](ManualClock::advance) it instead of sleeping.
//!
//! The Redis store keeps the server's clock (`TIME` in its scripts) unless its clock
//! [overrides](Clock::overrides_server_clock) it, so in production leases never depend on the workers' clocks.

use std::fmt::Debug;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// A source of the current time.
pub trait Clock: Send + Sync + Debug {
    /// Milliseconds since the epoch.
    fn now_ms(&self) -> i64;

    /// Whether a store that has a clock of its own (a Redis server's `TIME`) should use this one instead. Only
    /// a test clock does.
    fn overrides_server_clock(&self) -> bool {
        false
    }
}

/// The machine's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }
}

/// A clock that stands still until told to move, for tests.
#[derive(Debug)]
pub struct ManualClock {
    now_ms: AtomicI64,
}

impl ManualClock {
    /// A clock reading `start_ms` (milliseconds since the epoch).
    pub fn at(start_ms: i64) -> Self {
        Self { now_ms: AtomicI64::new(start_ms) }
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.now_ms.fetch_add(i64::try_from(by.as_millis()).unwrap_or(i64::MAX), Ordering::SeqCst);
    }
}

impl Default for ManualClock {
    /// 2023-11-14T22:13:20Z: a fixed, realistic instant.
    fn default() -> Self {
        Self::at(1_700_000_000_000)
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.now_ms.load(Ordering::SeqCst)
    }

    fn overrides_server_clock(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_advanced() {
        let clock = ManualClock::at(1_000);
        assert_eq!(clock.now_ms(), 1_000);
        clock.advance(Duration::from_millis(350));
        assert_eq!(clock.now_ms(), 1_350);
        assert!(clock.overrides_server_clock());
        assert!(!SystemClock.overrides_server_clock());
        assert!(SystemClock.now_ms() > 1_700_000_000_000);
    }
}
