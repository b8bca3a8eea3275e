//! A listener's open connections by address, and how a new connection finds room at the
//! connection cap: by closing one that holds a slot without using it (a handshake under way, a
//! connection waiting for a request, a stalled body), else by having a busy one close after its
//! answer, always of an address holding more than its fair share and than the newcomer's. The
//! slots such busy connections give back are owed, for a while, to newcomers under their share:
//! otherwise the client that kept them busy would take them back at once. The accept loop never
//! waits for a busy connection's answer: the newcomer that retired one is refused, and the slot
//! is owed to the next newcomer under its share.

use super::handshakes::Handshakes;
use super::header_deadline::HeaderDeadline;
use super::peers::PeerSlots;
use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long a new connection at the cap waits for the slot of the connection evicted for it (its
/// task lets go of it at once; this only bounds a pause of the accept loop).
const ROOM_WAIT: Duration = Duration::from_millis(50);

/// How long a slot given back by a retired connection stays owed to newcomers under their fair
/// share.
const OWED_FOR: Duration = Duration::from_secs(5);

/// Up to this many connections, an address is never over its share where busy connections are
/// concerned (retired for others, or refused an owed slot): an apiserver's webhook client keeps up
/// to 25 idle connections per host, and clients coming from many addresses, each a holder, must
/// not shrink its share below its pool.
const BUSY_SHARE_FLOOR: usize = 32;

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

    /// The share below which busy connections are left alone: the fair share, but never less
    /// than [`BUSY_SHARE_FLOOR`] (nor, under a small cap, than a quarter of it; nor, where one
    /// address may hold fewer, than all it may hold but one).
    fn busy_share(&self) -> usize {
        let floor = BUSY_SHARE_FLOOR
            .min(self.capacity / 4)
            .min(self.peers.per_address().saturating_sub(1));
        self.fair_share().max(floor)
    }

    /// Whether its address holds less than its share of busy connections besides it.
    fn under_its_share(&self) -> bool {
        self.held(self.address.to_canonical()) < self.busy_share()
    }
}

/// What was done to make room.
enum Room {
    Nothing,
    /// A connection was closed; its slot comes back at once.
    Evicted,
    /// A busy connection closes after its answer.
    Retired,
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
    /// been evicted for it ([`Self::make_room`]); `None` when none could be, or when a busy one
    /// was retired for it (its slot is then owed to the next newcomer under its share).
    pub async fn slot(
        &self,
        connections: &Arc<Semaphore>,
        newcomer: Newcomer<'_>,
    ) -> Option<OwnedSemaphorePermit> {
        let under_its_share = newcomer.under_its_share();
        let owed = self.owed();
        // A free slot that is owed is not for an address at or over its share.
        if (under_its_share || connections.available_permits() > owed)
            && let Ok(open) = connections.clone().try_acquire_owned()
        {
            if under_its_share {
                self.repaid();
            }
            return Some(open);
        }
        match self.make_room(&newcomer, under_its_share) {
            Room::Nothing => None,
            Room::Retired => {
                self.owe(newcomer.capacity);
                None
            }
            Room::Evicted => {
                let freed = connections.clone().acquire_owned();
                let open = tokio::time::timeout(ROOM_WAIT, freed).await.ok()?.ok()?;
                if under_its_share {
                    self.repaid();
                }
                Some(open)
            }
        }
    }

    /// At the cap, makes room for `newcomer`: closes a handshake under way (the oldest), else a
    /// connection that may be evicted ([`HeaderDeadline::evictable`]: waiting for a request, or
    /// stalled on a body; the newest), of the address holding the most connections among those
    /// that have one, and only of an address holding more than its fair share (the capacity over
    /// the addresses holding connections) and than the newcomer's does besides it. Else, for a
    /// newcomer under its share, has the newest busy connection of the busiest address holding
    /// more than its share of busy connections ([`Newcomer::busy_share`]) close after its answer
    /// ([`HeaderDeadline::retire`]: a request is never cut), its connections retiring already
    /// not counted. A connection retiring already that may be evicted is evicted first.
    /// So a client cannot take the pool of an apiserver that holds no more than its share,
    /// however busy it keeps its own connections and however many newcomers it sends at once, and
    /// a busy address with nothing to evict does not stop the search among the others over their
    /// share.
    fn make_room(&self, newcomer: &Newcomer<'_>, under_its_share: bool) -> Room {
        let newcomers = newcomer.held(newcomer.address.to_canonical());
        // What each address holds, less `closing` (in the busy step, its connections retiring
        // already: they keep their slots until they have answered, then give them back).
        let busiest = |addresses: Vec<IpAddr>, share: usize, closing: &[IpAddr]| {
            let at_least = newcomers.max(share);
            let staying = |address: IpAddr| {
                let leaving = closing.iter().filter(|a| **a == address).count();
                newcomer.held(address).saturating_sub(leaving)
            };
            let held: Vec<(usize, IpAddr)> = addresses
                .into_iter()
                .map(|address| (staying(address), address))
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
        let closable = busiest(closable, newcomer.fair_share(), &[]);
        // A connection retiring already goes first: one newcomer's retries must not close one
        // connection after another.
        if !closable.is_empty()
            && (newcomer
                .handshakes
                .is_some_and(|h| h.evict_oldest_of(&closable))
                || self.newest_of(&closable, |d| d.retiring() && d.evict())
                || self.newest_of(&closable, |d| d.evict()))
        {
            return Room::Evicted;
        }
        if !under_its_share {
            return Room::Nothing;
        }
        let busy = self.addresses_where(|d| d.busy() && !d.retiring() && !d.was_evicted());
        let busy = busiest(busy, newcomer.busy_share(), &self.retiring_addresses());
        if !busy.is_empty() && self.newest_of(&busy, HeaderDeadline::retire) {
            return Room::Retired;
        }
        Room::Nothing
    }

    /// The address of each live connection retiring (once per connection).
    fn retiring_addresses(&self) -> Vec<IpAddr> {
        let open = self.0.open.lock().unwrap_or_else(|e| e.into_inner());
        open.iter()
            .filter(|(_, d)| d.upgrade().is_some_and(|d| d.retiring()))
            .map(|(address, _)| *address)
            .collect()
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
        // 64 slots: the busy address holds 40, over its share (32, with another holding one); the
        // one free slot was given back by a connection retired for a newcomer that was refused,
        // and is owed.
        let connections = Arc::new(Semaphore::new(1));
        let peers = PeerSlots::new(usize::MAX);
        let established = Established::default();
        established.owe(64);
        let _held: Vec<_> = (0..40)
            .map(|_| peers.take(BUSY))
            .chain([peers.take(OTHER)])
            .collect();
        let busy = peers.take(BUSY);
        let newcomer = |address| Newcomer {
            address,
            peers: &peers,
            handshakes: None,
            capacity: 64,
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
    fn an_address_within_the_floor_is_never_over_its_share_of_busy_connections() {
        let peers = PeerSlots::new(usize::MAX);
        // Forty addresses of one connection each: a fair share of 6 of 256.
        let _many: Vec<_> = (0..40u8)
            .map(|n| peers.take(IpAddr::from([10, 1, 0, n])))
            .collect();
        // Its pool of 32, and the newcomer's own.
        let _pool: Vec<_> = (0..=BUSY_SHARE_FLOOR)
            .map(|_| peers.take(APISERVER))
            .collect();
        let apiserver = Newcomer {
            address: APISERVER,
            peers: &peers,
            handshakes: None,
            capacity: 256,
        };
        assert_eq!(apiserver.fair_share(), 6);
        assert_eq!(apiserver.busy_share(), BUSY_SHARE_FLOOR);
        assert!(
            !apiserver.under_its_share(),
            "a 33rd connection is over the floor"
        );
        let _pool_of_thirty_one: Vec<_> =
            (0..BUSY_SHARE_FLOOR).map(|_| peers.take(OTHER)).collect();
        let other = Newcomer {
            address: OTHER,
            ..apiserver
        };
        assert!(other.under_its_share(), "a 32nd is within it");
    }

    #[tokio::test]
    async fn at_the_cap_a_busy_connection_over_its_share_retires_and_its_slot_is_owed() {
        // Four slots, all taken: the busy address holds three, busy answering; the apiserver one.
        let connections = Arc::new(Semaphore::new(0));
        let peers = PeerSlots::new(usize::MAX);
        let established = Established::default();
        let hour = Duration::from_secs(3600);
        let busy: Vec<_> = (0..3)
            .map(|_| {
                let deadline = HeaderDeadline::new(hour, hour);
                deadline.serving();
                established.add(BUSY, &deadline);
                (peers.take(BUSY), deadline)
            })
            .collect();
        let _pooled = peers.take(APISERVER);
        let _newcomer = peers.take(APISERVER);
        let newcomer = || Newcomer {
            address: APISERVER,
            peers: &peers,
            handshakes: None,
            capacity: 4,
        };
        assert!(established.slot(&connections, newcomer()).await.is_none());
        let retiring = || busy.iter().filter(|(_, d)| d.retiring()).count();
        assert_eq!(
            retiring(),
            1,
            "the newest busy connection closes after its answer"
        );
        assert!(busy[2].1.retiring(), "the newest");
        assert_eq!(established.owed(), 1, "and its slot is owed");
        // Those retiring do not count: the busy address now stays with its share (two of four,
        // with another address holding some), however many newcomers come.
        for _ in 0..3 {
            assert!(established.slot(&connections, newcomer()).await.is_none());
        }
        assert_eq!(retiring(), 1, "no more than down to its share");
        assert_eq!(established.owed(), 1);
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
