//! A budget of log lines for what anyone who reaches the webhook port can cause (undecodable
//! bodies, denials of forged reviews, failed look-ups): without one, a client could write log
//! lines as fast as it sends reviews and bury what an operator needs in them. Every such event
//! is still counted in the metrics; the log keeps a few a second and says how many it left out.

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};

/// Lines a second a budget lets through, after a burst of as many.
pub const LINES_PER_SECOND: u32 = 20;

/// Log lines of one kind: [`LINES_PER_SECOND`] a second at most.
pub struct LogBudget<C: Clock = DefaultClock> {
    lines: RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<C::Instant>>,
    /// Lines left out since the last one logged.
    left_out: AtomicU64,
}

impl LogBudget {
    pub fn new() -> Self {
        Self::with_clock(DefaultClock::default())
    }
}

impl Default for LogBudget {
    fn default() -> Self {
        Self::new()
    }
}

impl<C: Clock> LogBudget<C> {
    fn with_clock(clock: C) -> Self {
        let rate = NonZeroU32::new(LINES_PER_SECOND).unwrap_or(NonZeroU32::MIN);
        Self {
            lines: RateLimiter::direct_with_clock(Quota::per_second(rate), clock),
            left_out: AtomicU64::new(0),
        }
    }

    /// Whether a line may be logged now: `Some(n)` with the `n` lines left out since the last one
    /// (to log with it), or `None` (this one is left out).
    pub fn line(&self) -> Option<u64> {
        match self.lines.check() {
            Ok(()) => Some(self.left_out.swap(0, Ordering::Relaxed)),
            Err(_) => {
                self.left_out.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;
    use std::time::Duration;

    #[test]
    fn a_burst_is_cut_to_the_budget_and_the_next_line_says_how_many_were_left_out() {
        let clock = FakeRelativeClock::default();
        let budget = LogBudget::with_clock(clock.clone());
        let logged = (0..100).filter_map(|_| budget.line()).collect::<Vec<_>>();
        assert_eq!(logged, vec![0; LINES_PER_SECOND as usize]);

        clock.advance(Duration::from_secs(1));
        assert_eq!(budget.line(), Some(100 - u64::from(LINES_PER_SECOND)));
        assert_eq!(budget.line(), Some(0), "counted once");
    }
}
