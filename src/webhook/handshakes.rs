//! Connections still in their TLS handshake, at most so many at once: past that, the oldest of
//! the address with the most under way is closed to make room. A client that opens connections
//! and never finishes a handshake (it needs no certificate for that, nor to speak TLS at all)
//! then holds at most this many of the connection slots, from however many addresses, and never
//! makes the apiserver's handshakes, which take milliseconds, wait for a slot.

use super::peers::busiest;
use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// The handshakes under way, oldest first.
#[derive(Debug, Clone)]
pub struct Handshakes {
    pending: Arc<Mutex<Pending>>,
    max: usize,
}

#[derive(Debug, Default)]
struct Pending {
    next: u64,
    /// Each handshake's number, address and the sender that closes it.
    queue: VecDeque<(u64, IpAddr, oneshot::Sender<()>)>,
}

/// A handshake's place among those under way, given up when dropped (the handshake ended).
#[derive(Debug)]
pub struct Turn {
    pending: Arc<Mutex<Pending>>,
    id: u64,
}

/// Resolves with `Ok(())` when the handshake is closed to make room for a newer one.
pub type Evicted = oneshot::Receiver<()>;

impl Handshakes {
    /// At most `max` handshakes at once (at least 1).
    pub fn new(max: usize) -> Self {
        Self {
            pending: Arc::default(),
            max: max.max(1),
        }
    }

    /// A new handshake's turn, for a connection from `peer`, closing one under way when there are
    /// `max` already.
    pub fn begin(&self, peer: IpAddr) -> (Turn, Evicted) {
        let (evict, evicted) = oneshot::channel();
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if pending.queue.len() >= self.max {
            evict_one(&mut pending);
        }
        let id = pending.next;
        pending.next += 1;
        pending.queue.push_back((id, peer.to_canonical(), evict));
        let turn = Turn {
            pending: Arc::clone(&self.pending),
            id,
        };
        (turn, evicted)
    }

    /// The addresses with a handshake under way.
    pub fn addresses(&self) -> Vec<IpAddr> {
        let pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let mut addresses: Vec<IpAddr> = pending.queue.iter().map(|(_, peer, _)| *peer).collect();
        addresses.sort_unstable();
        addresses.dedup();
        addresses
    }

    /// Closes the oldest handshake under way of `addresses`, if there is one: room for a new
    /// connection at the connection cap.
    pub fn evict_oldest_of(&self, addresses: &[IpAddr]) -> bool {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        evict_oldest_of(&mut pending, addresses)
    }
}

/// Closes the oldest handshake of the address with the most under way (so that one client's
/// flood of connections never closes the apiserver's handshake, however fast it opens them);
/// whether there was one.
fn evict_one(pending: &mut Pending) -> bool {
    let busiest = busiest(pending.queue.iter().map(|(_, peer, _)| *peer));
    evict_oldest_of(pending, &busiest)
}

/// Closes the oldest handshake of `addresses`; whether there was one.
fn evict_oldest_of(pending: &mut Pending, addresses: &[IpAddr]) -> bool {
    loop {
        let Some(at) = pending
            .queue
            .iter()
            .position(|(_, peer, _)| addresses.contains(peer))
        else {
            return false;
        };
        let Some((_, _, oldest)) = pending.queue.remove(at) else {
            return false;
        };
        // Its connection may have ended without giving its turn back yet: try another.
        if oldest.send(()).is_ok() {
            return true;
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(at) = pending.queue.iter().position(|(id, _, _)| *id == self.id) {
            pending.queue.remove(at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const TWO: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn past_the_cap_the_oldest_handshake_is_closed() {
        let handshakes = Handshakes::new(2);
        let (_a, mut a_evicted) = handshakes.begin(ONE);
        let (b, mut b_evicted) = handshakes.begin(ONE);
        assert!(a_evicted.try_recv().is_err(), "room for two");
        let (_c, mut c_evicted) = handshakes.begin(ONE);
        assert_eq!(a_evicted.try_recv(), Ok(()), "the oldest made room");
        assert!(b_evicted.try_recv().is_err());
        // A handshake that ended gives its place back: the next one evicts nobody.
        drop(b);
        let (_d, mut d_evicted) = handshakes.begin(ONE);
        assert!(c_evicted.try_recv().is_err());
        let (_e, _) = handshakes.begin(ONE);
        assert_eq!(c_evicted.try_recv(), Ok(()), "then the oldest again");
        assert!(d_evicted.try_recv().is_err());
    }

    #[test]
    fn the_address_with_the_most_handshakes_makes_room() {
        let handshakes = Handshakes::new(3);
        let (_apiserver, mut apiserver_evicted) = handshakes.begin(ONE);
        let (_first, mut first_evicted) = handshakes.begin(TWO);
        let _second = handshakes.begin(TWO);
        let flood: Vec<_> = (0..10).map(|_| handshakes.begin(TWO)).collect();
        assert!(
            apiserver_evicted.try_recv().is_err(),
            "the oldest, but not the busiest"
        );
        assert_eq!(first_evicted.try_recv(), Ok(()));
        assert_eq!(handshakes.addresses(), vec![ONE, TWO]);
        assert!(handshakes.evict_oldest_of(&[TWO]));
        assert!(apiserver_evicted.try_recv().is_err());
        assert!(handshakes.evict_oldest_of(&[ONE]));
        assert_eq!(apiserver_evicted.try_recv(), Ok(()));
        assert!(!handshakes.evict_oldest_of(&[ONE]), "none left there");
        drop(flood);
    }
}
