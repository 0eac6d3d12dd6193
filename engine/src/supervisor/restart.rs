//! [`RestartLimits`]: how hard a service task tries to keep a crashing service up — at most
//! [`MAX_RESTARTS`] restarts in a row, with exponential backoff between them, the count starting over once a run
//! lasted long enough. Users get [`RestartLimits::default`]; tests of the supervisor shrink the pauses and lift the
//! cap to restart a service hundreds of times in a second or two.

use std::time::Duration;

/// Consecutive restarts before a crashing service is given up on.
pub const MAX_RESTARTS: u32 = 10;

/// The restart policy's numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartLimits {
    /// Consecutive restarts before the service is given up on.
    pub max_restarts: u32,
    /// The pause before the first restart; each further one doubles it.
    pub first_pause: Duration,
    /// The longest pause.
    pub max_pause: Duration,
    /// A run at least this long starts the count over.
    pub stable_after: Duration,
}

impl Default for RestartLimits {
    fn default() -> Self {
        Self {
            max_restarts: MAX_RESTARTS,
            first_pause: Duration::from_millis(100),
            max_pause: Duration::from_secs(30),
            stable_after: Duration::from_secs(30),
        }
    }
}

impl RestartLimits {
    /// The pause before restart number `n` (counted from 1): it doubles up to the ninth and stays there, never above
    /// `max_pause` (100 ms, 200 ms, 400 ms, … 25.6 s by default).
    pub fn pause(&self, n: u32) -> Duration {
        (self.first_pause * 2u32.pow(n.clamp(1, 9) - 1)).min(self.max_pause)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_pauses_double_from_100_ms_nine_times_and_ten_restarts_are_allowed() {
        let limits = RestartLimits::default();
        let pauses: Vec<u128> = (1..=11).map(|n| limits.pause(n).as_millis()).collect();
        assert_eq!(pauses, [100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 25600, 25600]);
        assert_eq!(limits.max_restarts, 10);
    }
}
