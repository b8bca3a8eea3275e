//! How a request's body is coming, as its handler waits for it: enough to tell a body that is on
//! its way, however slowly, from one whose sender holds a connection (and a share of the large
//! bodies' budget) without sending it. Such a body may be closed to make room at the caps.

use std::time::{Duration, Instant};

/// How long the handler must have waited for a body's bytes, in all, before the body may be
/// judged stalled: the apiserver writes a review's body with its head, so by then a body that is
/// coming at all has shown its pace.
pub const GRACE: Duration = Duration::from_secs(1);

/// The grace of a body whose address lately sent a large body that fell behind its course
/// ([`crate::webhook::stalled_bodies`]): a client that replaces its stalled bodies before their
/// grace ends, or completes them late, would otherwise never be judged. Long enough for a body on
/// its way over a slow path to show its pace (its first TCP windows), short enough for a
/// newcomer's search for room to find it.
pub const GRACE_WHEN_REMEMBERED: Duration = Duration::from_millis(100);

/// A body is on course when, at the pace its bytes have come while the handler waited for them,
/// all of it arrives within this much waiting: the shortest `timeoutSeconds` of the webhook
/// entries. The apiserver gives up on a review by then, so a body slower than that is worth
/// nothing to it, while one faster is never cut, however slow its path (a body of the maximum
/// size at 3.5 MiB/s is on course).
pub const ON_COURSE_WITHIN: Duration = Duration::from_secs(2);

/// The slowest pace at which a body is on course, whatever its size (bytes a second): a small body
/// whose bytes come slower than this is not on its way, only kept open. A body of a few KiB on
/// course arrives within milliseconds; the apiserver sends it with its head.
pub const SLOWEST_ON_COURSE: usize = 1024 * 1024;

/// A body being read, as far as its handler has waited for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyWait {
    /// The bytes it is expected to have: as declared, or the most a body may have.
    pub expected: usize,
    /// The bytes that have come.
    pub received: usize,
    /// How long the handler waited for its bytes before the current wait.
    pub waited: Duration,
    /// When the handler began waiting for bytes that have not come yet; `None` while it is not
    /// waiting (bytes came and are being handled, or the large bodies' pace paused the reading).
    pub waiting_since: Option<Instant>,
}

impl BodyWait {
    /// Nothing of a body of `expected` bytes has come, and it has not been waited for.
    pub fn new(expected: usize) -> Self {
        Self {
            expected,
            received: 0,
            waited: Duration::ZERO,
            waiting_since: None,
        }
    }

    /// How long the handler has waited for the body's bytes, in all, by `now`.
    pub fn waited_by(&self, now: Instant) -> Duration {
        let current = self
            .waiting_since
            .map_or(Duration::ZERO, |since| now.saturating_duration_since(since));
        self.waited + current
    }

    /// Whether the bytes that have come are too few for `waited` (the time waited for them): at
    /// that pace the body would not be whole within [`ON_COURSE_WITHIN`] of waiting, or they came
    /// slower than [`SLOWEST_ON_COURSE`].
    pub fn behind(&self, waited: Duration) -> bool {
        waited > self.behind_after()
    }

    /// The waiting after which the bytes that have come are too few ([`Self::behind`]).
    fn behind_after(&self) -> Duration {
        let received = self.received as u128;
        let course = ON_COURSE_WITHIN.as_nanos() * received / self.expected.max(1) as u128;
        let crawl = received * 1_000_000_000 / SLOWEST_ON_COURSE as u128;
        Duration::from_nanos(u64::try_from(course.min(crawl)).unwrap_or(u64::MAX))
    }

    /// Whether the body is stalled at `now`: the handler is waiting for its bytes, has waited
    /// for them at least `grace` in all, and they are [`Self::behind`].
    pub fn stalled(&self, now: Instant, grace: Duration) -> bool {
        self.stalls_in(now, grace) == Some(Duration::ZERO)
    }

    /// How long from `now` until the body is stalled if no more of its bytes come (zero: it is);
    /// `None` while the handler is not waiting for it.
    pub fn stalls_in(&self, now: Instant, grace: Duration) -> Option<Duration> {
        self.waiting_since?;
        let waited = self.waited_by(now);
        if waited >= grace && self.behind(waited) {
            return Some(Duration::ZERO);
        }
        let stalled_at = grace.max(self.behind_after() + Duration::from_nanos(1));
        Some(stalled_at.saturating_sub(waited))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1024 * 1024;

    fn waiting(expected: usize, received: usize, waited: Duration) -> BodyWait {
        BodyWait {
            expected,
            received,
            waited,
            waiting_since: Some(Instant::now()),
        }
    }

    #[test]
    fn a_body_waited_for_past_its_grace_and_behind_its_course_is_stalled() {
        let now = Instant::now();
        let second = Duration::from_secs(1);
        assert!(
            waiting(7 * MIB, 0, second).stalled(now, GRACE),
            "nothing came"
        );
        assert!(
            waiting(7 * MIB, 3 * MIB, second).stalled(now, GRACE),
            "3 MiB a second: 7 MiB in over two seconds"
        );
        assert!(
            !waiting(7 * MIB, 4 * MIB, second).stalled(now, GRACE),
            "4 MiB a second: on course"
        );
        assert!(
            !waiting(7 * MIB, 0, second / 2).stalled(now, GRACE),
            "within its grace"
        );
        assert!(
            waiting(7 * MIB, 0, Duration::from_millis(100)).stalled(now, GRACE_WHEN_REMEMBERED),
            "the short grace of an address remembered"
        );
        assert!(
            waiting(7 * MIB, 7 * MIB - 1, ON_COURSE_WITHIN * 2).stalled(now, GRACE),
            "waited for longer than a body may take, and still missing"
        );
    }

    #[test]
    fn a_small_body_trickled_is_stalled_however_close_to_whole() {
        let now = Instant::now();
        let second = Duration::from_secs(1);
        assert!(
            waiting(10 * 1024, 9 * 1024, second).stalled(now, GRACE),
            "9 KiB in a second is on course for 10 KiB in two, but crawling"
        );
        assert!(!waiting(10 * 1024, 9 * 1024, second / 2).stalled(now, GRACE));
        assert!(!waiting(2 * MIB, MIB + 1, second).stalled(now, GRACE));
    }

    #[test]
    fn a_body_not_waited_for_now_is_never_stalled() {
        let paused = BodyWait {
            waiting_since: None,
            ..waiting(7 * MIB, 0, Duration::from_secs(60))
        };
        assert!(!paused.stalled(Instant::now(), Duration::ZERO));
    }

    #[test]
    fn the_current_wait_counts_up_to_now() {
        let started = Instant::now();
        let body = BodyWait {
            waiting_since: Some(started),
            ..BodyWait::new(7 * MIB)
        };
        assert!(!body.stalled(started, GRACE));
        assert!(body.stalled(started + GRACE, GRACE));
    }

    #[test]
    fn a_body_tells_when_it_would_stall_if_nothing_more_came() {
        let now = Instant::now();
        let second = Duration::from_secs(1);
        assert_eq!(
            waiting(7 * MIB, 0, second / 4).stalls_in(now, GRACE),
            Some(second * 3 / 4),
            "at the end of its grace"
        );
        assert_eq!(
            waiting(7 * MIB, 0, second * 2).stalls_in(now, GRACE),
            Some(Duration::ZERO)
        );
        // 7 MiB in 2 s needs 3.5 MiB a second: 5.25 MiB last it 1.5 s of waiting in all.
        let stalls_in = waiting(7 * MIB, 21 * MIB / 4, second)
            .stalls_in(now, GRACE)
            .expect("waiting");
        assert!(stalls_in > second * 499 / 1000 && stalls_in < second * 501 / 1000);
        let paused = BodyWait {
            waiting_since: None,
            ..BodyWait::new(7 * MIB)
        };
        assert_eq!(paused.stalls_in(now, GRACE), None);
    }

    #[test]
    fn a_body_declared_empty_is_judged_by_the_floor() {
        let body = waiting(0, 0, Duration::from_secs(2));
        assert!(body.stalled(Instant::now(), GRACE));
    }
}
