//! The large bodies holding a share of the budget, with their connections, so that one whose
//! bytes have stopped coming can make room for another: a client that declares large bodies and
//! sends nothing (or trickles them) would otherwise hold its shares until the bodies' deadline,
//! and from two addresses the whole budget, refusing every other large review meanwhile.

use super::header_deadline::HeaderDeadline;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, Weak};

/// The large bodies holding shares.
#[derive(Default)]
pub struct LargeBodies(Arc<Mutex<Holding>>);

#[derive(Default)]
struct Holding {
    next: u64,
    /// Each body's number, client address, connection and share (bytes).
    bodies: Vec<(u64, IpAddr, Weak<HeaderDeadline>, usize)>,
}

/// A body's place among those holding shares, given up when dropped (with its share).
pub struct Held {
    holding: Arc<Mutex<Holding>>,
    id: u64,
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
        let mut holding = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let id = holding.next;
        holding.next += 1;
        holding
            .bodies
            .push((id, address.to_canonical(), deadline, size));
        Held {
            holding: Arc::clone(&self.0),
            id,
        }
    }

    /// Closes the connection of a body whose bytes the handler has awaited, still missing, for a
    /// second ([`HeaderDeadline::evictable`]) and whose share is at least `missing` bytes, of the
    /// address holding the most of the budget (`held`) among those that have one, and only of an
    /// address holding more than `at_least` (its fair share, and what the newcomer's address
    /// holds); whether one was closed. Its share comes back once its connection's task has ended.
    pub fn evict_one(
        &self,
        held: impl Fn(IpAddr) -> usize,
        at_least: usize,
        missing: usize,
    ) -> bool {
        let holding = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut stalled: Vec<(usize, &Weak<HeaderDeadline>)> = holding
            .bodies
            .iter()
            .filter(|(_, _, _, size)| *size >= missing)
            .filter(|(_, _, d, _)| d.upgrade().is_some_and(|d| d.evictable()))
            .map(|(_, address, d, _)| (held(*address), d))
            .filter(|(held, _)| *held > at_least)
            .collect();
        // The busiest first; among bodies of as busy addresses, the newest.
        stalled.reverse();
        stalled.sort_by_key(|(held, _)| std::cmp::Reverse(*held));
        stalled
            .into_iter()
            .any(|(_, d)| d.upgrade().is_some_and(|d| d.evict()))
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut holding = self.holding.lock().unwrap_or_else(|e| e.into_inner());
        holding.bodies.retain(|(id, _, _, _)| *id != self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    const ONE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const TWO: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    /// A connection whose request body has been awaited since `since` ago (`None`: has arrived).
    fn body_awaited(since: Option<Duration>) -> Arc<HeaderDeadline> {
        let hour = Duration::from_secs(3600);
        let deadline = HeaderDeadline::opened_at(Instant::now() - hour, hour, hour);
        deadline.serving();
        deadline.awaiting_body(since.map(|ago| Instant::now() - ago));
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
            !bodies.evict_one(held, 7, 1),
            "the stalled body's address holds no more than the newcomer's or its share"
        );
        assert!(
            !bodies.evict_one(held, 0, 8),
            "its share would not make room enough"
        );
        assert!(bodies.evict_one(held, 0, 7));
        assert!(stalled.was_evicted());
        assert!(!arrived.was_evicted() && !fresh.was_evicted());
        assert!(!bodies.evict_one(held, 0, 1), "nothing else may be closed");
    }

    #[test]
    fn a_body_given_back_is_no_longer_held() {
        let bodies = LargeBodies::default();
        let stalled = body_awaited(Some(Duration::from_secs(2)));
        drop(bodies.hold(ONE, Arc::downgrade(&stalled), 7));
        assert!(!bodies.evict_one(|_| 7, 0, 1));
        assert!(!stalled.was_evicted());
    }
}
