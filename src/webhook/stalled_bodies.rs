//! The large bodies holding a share of the budget, with their connections, so that one whose
//! bytes have stopped coming can make room for another: a client that declares large bodies and
//! sends nothing (or trickles them) would otherwise hold its shares until the bodies' deadline,
//! and from two addresses the whole budget, refusing every other large review meanwhile.
//!
//! The addresses that lately sent a large body that fell behind its course (whether it was
//! dropped, cut or completed late) are remembered: their bodies are judged after a short grace
//! ([`body_wait::GRACE_WHEN_REMEMBERED`]), so that a client replacing each stalled body before its
//! grace ends, or completing it just in time, cannot keep the budget either.

use super::body_wait;
use super::header_deadline::HeaderDeadline;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// How long an address that sent a body behind its course keeps the short grace.
const REMEMBERED_FOR: Duration = Duration::from_secs(10);

/// The most addresses remembered at once; past it, those that come next keep the full grace
/// (the memory stays bounded whatever number of addresses a client has).
const MOST_REMEMBERED: usize = 4096;

/// The large bodies holding shares.
#[derive(Default)]
pub struct LargeBodies(Arc<Mutex<Holding>>);

#[derive(Default)]
struct Holding {
    next: u64,
    /// Each body's number, client address, connection and share (bytes).
    bodies: Vec<(u64, IpAddr, Weak<HeaderDeadline>, usize)>,
    /// When each address last gave up a share held by a body that fell behind its course, within
    /// [`REMEMBERED_FOR`].
    abandoned: HashMap<IpAddr, Instant>,
}

/// A body's place among those holding shares, given up when dropped (with its share).
pub struct Held {
    holding: Arc<Mutex<Holding>>,
    id: u64,
    address: IpAddr,
    /// Set by the body's reader once the body has fallen behind its course.
    lagged: Arc<AtomicBool>,
}

/// What a search for room in the budget came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Search {
    /// A stalled body's connection was closed.
    Evicted,
    /// None now; one could be judged stalled after this long, if its bytes do not come.
    NotYet(Duration),
    /// None, nor any that could be soon.
    Nothing,
}

impl std::fmt::Debug for LargeBodies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let holding = self.0.lock().unwrap_or_else(|e| e.into_inner());
        write!(f, "LargeBodies({})", holding.bodies.len())
    }
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Held({})", self.id)
    }
}

impl LargeBodies {
    /// Records a body from `address`, read on the connection of `deadline`, holding a share of
    /// `size` bytes.
    pub fn hold(&self, address: IpAddr, deadline: Weak<HeaderDeadline>, size: usize) -> Held {
        let address = address.to_canonical();
        let mut holding = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let id = holding.next;
        holding.next += 1;
        holding.bodies.push((id, address, deadline, size));
        Held {
            holding: Arc::clone(&self.0),
            id,
            address,
            lagged: Arc::default(),
        }
    }

    /// Closes the connection of a stalled body ([`HeaderDeadline::evictable`], judged after the
    /// short grace if its address is remembered) whose share is at least `missing` bytes, of the
    /// address holding the most of the budget (`held`) among those that have one, and only of an
    /// address holding more than `at_least` (its fair share, and what the newcomer's address
    /// holds). Its share comes back once its connection's task has ended.
    pub fn evict_one(
        &self,
        held: impl Fn(IpAddr) -> usize,
        at_least: usize,
        missing: usize,
    ) -> Search {
        let holding = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let grace = |address: &IpAddr| match holding.abandoned.get(address) {
            Some(at) if remembered(now, *at) => body_wait::GRACE_WHEN_REMEMBERED,
            _ => body_wait::GRACE,
        };
        let mut soonest: Option<Duration> = None;
        let mut stalled: Vec<(usize, Arc<HeaderDeadline>, Duration)> = Vec::new();
        for (_, address, deadline, size) in &holding.bodies {
            let held = held(*address);
            if *size < missing || held <= at_least {
                continue;
            }
            let Some(deadline) = deadline.upgrade() else {
                continue;
            };
            let grace = grace(address);
            match deadline.body_stalls_in(grace) {
                Some(Duration::ZERO) => stalled.push((held, deadline, grace)),
                Some(after) => soonest = Some(soonest.map_or(after, |s| s.min(after))),
                None => {}
            }
        }
        // The busiest first; among bodies of as busy addresses, the newest.
        stalled.reverse();
        stalled.sort_by_key(|(held, _, _)| std::cmp::Reverse(*held));
        if stalled.iter().any(|(_, d, grace)| d.evict_within(*grace)) {
            return Search::Evicted;
        }
        soonest.map_or(Search::Nothing, Search::NotYet)
    }
}

/// Whether an address remembered `at` is still remembered `now`.
fn remembered(now: Instant, at: Instant) -> bool {
    now.saturating_duration_since(at) < REMEMBERED_FOR
}

impl Held {
    /// The flag the body's reader sets once the body has fallen behind its course: its address is
    /// then remembered when the share is given up.
    pub fn lagged(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.lagged)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut holding = self.holding.lock().unwrap_or_else(|e| e.into_inner());
        holding.bodies.retain(|(id, _, _, _)| *id != self.id);
        if !self.lagged.load(Ordering::Relaxed) {
            return;
        }
        let now = Instant::now();
        if holding.abandoned.len() >= MOST_REMEMBERED {
            holding.abandoned.retain(|_, at| remembered(now, *at));
        }
        if holding.abandoned.len() < MOST_REMEMBERED
            || holding.abandoned.contains_key(&self.address)
        {
            holding.abandoned.insert(self.address, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    const ONE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const TWO: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    /// A connection whose request body of 7 bytes, none of which has come, has been awaited
    /// since `since` ago (`None`: has arrived).
    fn body_awaited(since: Option<Duration>) -> Arc<HeaderDeadline> {
        let hour = Duration::from_secs(3600);
        let deadline = HeaderDeadline::opened_at(Instant::now() - hour, hour, hour);
        deadline.serving();
        deadline.body_wait(since.map(|ago| body_wait::BodyWait {
            waiting_since: Some(Instant::now() - ago),
            ..body_wait::BodyWait::new(7)
        }));
        deadline
    }

    #[test]
    fn a_stalled_body_of_an_address_holding_more_makes_room_and_no_other() {
        let bodies = LargeBodies::default();
        let arrived = body_awaited(None);
        let fresh = body_awaited(Some(Duration::ZERO));
        let stalled = body_awaited(Some(Duration::from_secs(2)));
        let _held = [
            bodies.hold(ONE, Arc::downgrade(&arrived), 7),
            bodies.hold(ONE, Arc::downgrade(&fresh), 7),
            bodies.hold(TWO, Arc::downgrade(&stalled), 7),
        ];
        let held = |a: IpAddr| if a == TWO { 7 } else { 14 };
        assert!(
            matches!(
                bodies.evict_one(held, 7, 1),
                Search::NotYet(after) if after > body_wait::GRACE * 9 / 10
            ),
            "the stalled body's address holds no more than the newcomer's or its share; the fresh one's grace ends in a second"
        );
        assert_eq!(
            bodies.evict_one(held, 14, 8),
            Search::Nothing,
            "no share would make room enough"
        );
        assert_eq!(bodies.evict_one(held, 0, 7), Search::Evicted);
        assert!(stalled.was_evicted());
        assert!(!arrived.was_evicted() && !fresh.was_evicted());
        assert!(
            matches!(bodies.evict_one(held, 0, 1), Search::NotYet(_)),
            "nothing else may be closed now"
        );
    }

    #[test]
    fn a_body_given_back_is_no_longer_held() {
        let bodies = LargeBodies::default();
        let stalled = body_awaited(Some(Duration::from_secs(2)));
        drop(bodies.hold(ONE, Arc::downgrade(&stalled), 7));
        assert_eq!(bodies.evict_one(|_| 7, 0, 1), Search::Nothing);
        assert!(!stalled.was_evicted());
    }

    #[test]
    fn an_address_that_sent_a_body_behind_its_course_is_judged_after_the_short_grace() {
        let bodies = LargeBodies::default();
        // Each address's earlier body: ONE's kept its course, TWO's fell behind.
        drop(bodies.hold(ONE, Weak::new(), 7));
        let behind = bodies.hold(TWO, Weak::new(), 7);
        behind.lagged().store(true, Ordering::Relaxed);
        drop(behind);
        let young = body_wait::GRACE_WHEN_REMEMBERED * 2;
        let (one, two) = (body_awaited(Some(young)), body_awaited(Some(young)));
        let _held = [
            bodies.hold(ONE, Arc::downgrade(&one), 7),
            bodies.hold(TWO, Arc::downgrade(&two), 7),
        ];
        assert_eq!(bodies.evict_one(|_| 7, 0, 7), Search::Evicted);
        assert!(two.was_evicted(), "past the short grace");
        assert!(!one.was_evicted(), "within the full grace");
    }
}
