//! A listener's open connections by address, and how a new connection finds room at the
//! connection cap: by closing one that holds a slot without using it (a handshake under way, a
//! connection waiting for a request, a stalled body), else by having a busy one close after its
//! answer, always of an address holding more than its fair share and than the newcomer's. The
//! slots such busy connections give back are owed, for a while, to newcomers under their share:
//! otherwise the client that kept them busy would take them back at once.

use super::handshakes::Handshakes;
use super::header_deadline::HeaderDeadline;
use super::peers::PeerSlots;
use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long a new connection at the cap waits for the slot of the connection closed for it (an
/// evicted one lets go of it at once, a retired one after its answer; this bounds a pause of the
/// accept loop).
const ROOM_WAIT: Duration = Duration::from_millis(50);

/// How long a slot given back by a retired connection stays owed to newcomers under their fair
/// share, when the newcomer it was retired for could not wait for it.
const OWED_FOR: Duration = Duration::from_secs(5);

/// Open connections (on the webhook port, those past their handshake) and their addresses, oldest
/// first, and the slots owed.
#[derive(Clone, Default)]
pub struct Established(Arc<Inner>);

#[derive(Default)]
struct Inner {
    open: Mutex<VecDeque<Entry>>,
    /// Until when each owed slot is owed, soonest first.
    owed: Mutex<VecDeque<Instant>>,
}

/// A connection's address and deadline.
type Entry = (IpAddr, Weak<HeaderDeadline>);

/// A new connection asking for a slot, and what its room is weighed against.
pub struct Newcomer<'a> {
    pub address: IpAddr,
    /// The connections each address holds, the newcomer's own included.
    pub peers: &'a PeerSlots,
    /// The handshakes under way, on a TLS port.
    pub handshakes: Option<&'a Handshakes>,
    /// The connection cap.
    pub capacity: usize,
}

impl Newcomer<'_> {
    /// The connections `at` holds, besides the newcomer (whose slot of its address is taken).
    fn held(&self, at: IpAddr) -> usize {
        let newcomer = at == self.address.to_canonical();
        self.peers.held(at).saturating_sub(usize::from(newcomer))
    }

    /// The capacity over the addresses holding connections.
    fn fair_share(&self) -> usize {
        self.capacity / self.peers.holders().max(1)
    }

    /// Whether its address holds less than its fair share besides it.
    fn under_its_share(&self) -> bool {
        self.held(self.address.to_canonical()) < self.fair_share()
    }
}

/// What was done to make room.
enum Room {
    Nothing,
    /// A connection was closed; its slot comes back at once.
    Evicted,
    /// A busy connection closes after its answer.
    Retired,
    /// A busy connection retired earlier has not closed yet: its slot is coming.
    Coming,
}

impl Established {
    pub fn add(&self, peer: IpAddr, deadline: &Arc<HeaderDeadline>) {
        let mut open = self.0.open.lock().unwrap_or_else(|e| e.into_inner());
        // Connections that ended leave their entries behind; drop them before they pile up.
        if open.len() >= 64 && open.len().is_power_of_two() {
            open.retain(|(_, d)| d.strong_count() > 0);
        }
        open.push_back((peer.to_canonical(), Arc::downgrade(deadline)));
    }

    /// A slot of `connections` for `newcomer`: at once if there is one (unless the free slots are
    /// owed to newcomers under their share and it is not one); at the cap, once a connection has
    /// been closed for it ([`Self::make_room`]); `None` when none could be. A newcomer under its
    /// share that could not wait for the slot of a retired connection is owed it.
    pub async fn slot(
        &self,
        connections: &Arc<Semaphore>,
        newcomer: Newcomer<'_>,
    ) -> Option<OwnedSemaphorePermit> {
        let under_its_share = newcomer.under_its_share();
        let owed = self.owed();
        if !under_its_share && owed > 0 && connections.available_permits() <= owed {
            return None;
        }
        if let Ok(open) = connections.clone().try_acquire_owned() {
            if under_its_share {
                self.repaid();
            }
            return Some(open);
        }
        let room = self.make_room(&newcomer, under_its_share);
        if matches!(room, Room::Nothing) {
            return None;
        }
        let freed = connections.clone().acquire_owned();
        match tokio::time::timeout(ROOM_WAIT, freed).await {
            Ok(Ok(open)) => {
                if under_its_share {
                    self.repaid();
                }
                Some(open)
            }
            _ => {
                if matches!(room, Room::Retired) {
                    self.owe(newcomer.capacity);
                }
                None
            }
        }
    }

    /// At the cap, makes room for `newcomer`: closes a handshake under way (the oldest), else a
    /// connection that may be evicted ([`HeaderDeadline::evictable`]: waiting for a request, or
    /// stalled on a body; the newest), of the address holding the most connections among those
    /// that have one; else, for a newcomer under its share and unless one is closing already, has
    /// the newest busy connection of the busiest address close after its answer
    /// ([`HeaderDeadline::retire`]: a request is never cut). Never of an address holding no more than its fair share (the capacity over the
    /// addresses holding connections) nor than the newcomer's does besides it: a client cannot
    /// take the pool of an apiserver that holds no more than its share, however many fresh
    /// addresses it comes from and however busy it keeps its own connections, and a busy address
    /// with nothing to evict does not stop the search among the others over their share.
    fn make_room(&self, newcomer: &Newcomer<'_>, under_its_share: bool) -> Room {
        let at_least = newcomer
            .held(newcomer.address.to_canonical())
            .max(newcomer.fair_share());
        let busiest = |addresses: Vec<IpAddr>| {
            let held: Vec<(usize, IpAddr)> = addresses
                .into_iter()
                .map(|address| (newcomer.held(address), address))
                .filter(|(held, _)| *held > at_least)
                .collect();
            let most = held.iter().map(|(held, _)| *held).max();
            held.into_iter()
                .filter(|(held, _)| Some(*held) == most)
                .map(|(_, address)| address)
                .collect::<Vec<_>>()
        };
        let closable = newcomer
            .handshakes
            .map(Handshakes::addresses)
            .unwrap_or_default()
            .into_iter()
            .chain(self.addresses_where(|d| d.evictable()))
            .collect();
        let closable = busiest(closable);
        if !closable.is_empty()
            && (newcomer
                .handshakes
                .is_some_and(|h| h.evict_oldest_of(&closable))
                || self.newest_of(&closable, |d| d.evict()))
        {
            return Room::Evicted;
        }
        if !under_its_share {
            return Room::Nothing;
        }
        // One at a time: newcomers come one after another, and each needs one slot.
        if !self.addresses_where(HeaderDeadline::retiring).is_empty() {
            return Room::Coming;
        }
        let busy = busiest(self.addresses_where(|d| !d.was_evicted()));
        if !busy.is_empty() && self.newest_of(&busy, HeaderDeadline::retire) {
            return Room::Retired;
        }
        Room::Nothing
    }

    /// The addresses with a connection for which `what` holds, each once.
    fn addresses_where(&self, what: impl Fn(&HeaderDeadline) -> bool) -> Vec<IpAddr> {
        let mut open = self.0.open.lock().unwrap_or_else(|e| e.into_inner());
        open.retain(|(_, d)| d.strong_count() > 0);
        let mut addresses: Vec<IpAddr> = open
            .iter()
            .filter(|(_, d)| d.upgrade().is_some_and(|d| what(&d)))
            .map(|(peer, _)| *peer)
            .collect();
        addresses.sort_unstable();
        addresses.dedup();
        addresses
    }

    /// Does `what` (evict, retire) to the newest connection of `addresses` it can be done to, so
    /// that a pool's long-lived connections are the last to go; whether there was one.
    fn newest_of(&self, addresses: &[IpAddr], what: impl Fn(&HeaderDeadline) -> bool) -> bool {
        let open = self.0.open.lock().unwrap_or_else(|e| e.into_inner());
        open.iter().rev().any(|(peer, deadline)| {
            addresses.contains(peer) && deadline.upgrade().is_some_and(|d| what(&d))
        })
    }

    /// How many slots are owed now.
    fn owed(&self) -> usize {
        let mut owed = self.0.owed.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        while owed.front().is_some_and(|until| *until <= now) {
            owed.pop_front();
        }
        owed.len()
    }

    /// One more slot owed (at most `capacity`).
    fn owe(&self, capacity: usize) {
        let mut owed = self.0.owed.lock().unwrap_or_else(|e| e.into_inner());
        if owed.len() < capacity {
            owed.push_back(Instant::now() + OWED_FOR);
        }
    }

    /// A newcomer under its share took a slot: one owed fewer.
    fn repaid(&self) {
        let mut owed = self.0.owed.lock().unwrap_or_else(|e| e.into_inner());
        owed.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUSY: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));
    const APISERVER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const OTHER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 3));

    #[tokio::test]
    async fn an_owed_slot_goes_to_a_newcomer_under_its_share_only() {
        // Four slots: the busy address holds two (its fair share, with another holding one),
        // the last was given back by a connection retired for a newcomer that could not wait,
        // and is owed.
        let connections = Arc::new(Semaphore::new(1));
        let peers = PeerSlots::new(usize::MAX);
        let established = Established::default();
        established.owe(4);
        let _held = [peers.take(BUSY), peers.take(BUSY), peers.take(OTHER)];
        let busy = peers.take(BUSY);
        let newcomer = |address| Newcomer {
            address,
            peers: &peers,
            handshakes: None,
            capacity: 4,
        };
        assert!(
            established
                .slot(&connections, newcomer(BUSY))
                .await
                .is_none(),
            "the address over its share took the owed slot"
        );
        drop(busy);
        let _apiserver = peers.take(APISERVER);
        let open = established.slot(&connections, newcomer(APISERVER)).await;
        assert!(open.is_some(), "the newcomer under its share got it");
        assert_eq!(established.owed(), 0, "and the debt is paid");
    }

    #[test]
    fn an_owed_slot_is_owed_for_a_while_and_at_most_capacity_of_them() {
        let established = Established::default();
        (0..5).for_each(|_| established.owe(3));
        assert_eq!(established.owed(), 3);
        established.0.owed.lock().expect("lock")[0] = Instant::now();
        assert_eq!(established.owed(), 2, "one expired");
    }
}
