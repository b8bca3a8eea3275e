//! How many TLS handshakes one address may begin: a burst of as many as it may hold connections,
//! then a steady rate. A handshake costs the server a key exchange and a signature before any
//! client certificate is checked; the cap on handshakes under way bounds how many run at once, not
//! how many a second, so without a rate a client replaying ClientHellos from one address would take
//! as much of the webhook's CPU as it liked.

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Default handshakes a second one address may begin, past its burst. An apiserver's webhook
/// client keeps at most 25 idle connections per host, so above that many reviews at once it opens
/// a connection for a review and closes it after: a busy apiserver churns connections, and its
/// handshakes must never be refused. A thousand a second is far above that churn, and holds one
/// address to a fraction of a core in key exchanges instead of all of them.
pub const DEFAULT_HANDSHAKES_PER_SECOND: u32 = 1000;

/// Addresses' budgets are pruned of those full again every so many handshakes, so that clients
/// from many addresses leave no state behind.
const PRUNE_EVERY: u64 = 4096;

/// The handshakes each address may begin.
pub struct HandshakeRate<C: Clock = DefaultClock> {
    limiter: RateLimiter<IpAddr, HashMapStateStore<IpAddr>, C, NoOpMiddleware<C::Instant>>,
    checked: AtomicU64,
}

impl HandshakeRate {
    /// `per_second` handshakes a second from one address after a burst of `burst` (each at least
    /// 1).
    pub fn new(per_second: u32, burst: u32) -> Self {
        Self::with_clock(per_second, burst, DefaultClock::default())
    }
}

impl<C: Clock> HandshakeRate<C> {
    fn with_clock(per_second: u32, burst: u32, clock: C) -> Self {
        let interval = Duration::from_secs(1) / per_second.max(1);
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(interval)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
            .allow_burst(burst);
        Self {
            limiter: RateLimiter::hashmap_with_clock(quota, clock),
            checked: AtomicU64::new(0),
        }
    }

    /// Whether `address` may begin a handshake now (one is counted if so).
    pub fn allows(&self, address: IpAddr) -> bool {
        if self.checked.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1 {
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
        }
        self.limiter.check_key(&address.to_canonical()).is_ok()
    }

    #[cfg(test)]
    fn addresses(&self) -> usize {
        self.limiter.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    const ONE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const TWO: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn an_address_gets_its_burst_then_the_rate_and_others_their_own() {
        let clock = FakeRelativeClock::default();
        let rate = HandshakeRate::with_clock(10, 3, clock.clone());
        assert!((0..3).all(|_| rate.allows(ONE)), "the burst");
        assert!(!rate.allows(ONE), "past the burst");
        assert!(rate.allows(TWO), "another address has its own");
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().expect("ip");
        assert!(!rate.allows(mapped), "the same address over IPv6");
        clock.advance(Duration::from_millis(100));
        assert!(rate.allows(ONE), "one more each tenth of a second");
        assert!(!rate.allows(ONE));
    }

    #[test]
    fn addresses_whose_budget_is_full_again_are_forgotten() {
        let clock = FakeRelativeClock::default();
        let rate = HandshakeRate::with_clock(10, 3, clock.clone());
        for n in 0..100u8 {
            assert!(rate.allows(IpAddr::from([10, 1, 0, n])));
        }
        assert_eq!(rate.addresses(), 100);
        clock.advance(Duration::from_secs(1));
        for _ in 0..PRUNE_EVERY {
            rate.allows(ONE);
        }
        assert_eq!(rate.addresses(), 1, "only the address still under its rate");
    }
}
