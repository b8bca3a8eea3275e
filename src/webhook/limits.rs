//! Caps on what the webhook holds at once, so a burst of reviews (or a hostile client on the port)
//! costs bounded memory instead of an OOM kill that fails every `failurePolicy: Fail` entry:
//! bytes of large bodies being buffered (reserved from the headers, before any of the body is
//! read), and reviews being decided (taken once the body has arrived, so a client trickling its
//! bodies holds no review's slot: only a connection, which the listener caps, see
//! [`crate::webhook::server::Limits`]; while other addresses hold some, one holds at most its fair share of them). Past a cap a review is refused with HTTP 429 and a `Status`
//! body; the apiserver then applies the entry's failurePolicy. One client address holds at most half
//! the large bodies' budget (never less than one body of the maximum size): a client that sends
//! headers declaring 7 MiB and then nothing holds its reservation until the body's deadline, and
//! from one address it could otherwise keep the apiserver's large reviews out for as long as it
//! liked.
//!
//! The bytes of a body past its first [`ORDINARY_BODY_BYTES`] are also read at a bounded rate
//! ([`BodyPace`]): TLS decryption, copying and decoding cost CPU in proportion to the bytes, and a
//! client posting large bodies back to back (7 MiB ones, or many just under any threshold) would
//! otherwise take cores that the apiserver's ordinary reviews wait for.

use super::connection;
use super::peers::{PeerSlot, PeerSlots};
use super::stalled_bodies::{Held, LargeBodies, Search};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The largest body accepted: the apiserver sends up to ~3 MiB each for object and oldObject.
pub const MAX_BODY_BYTES: usize = 7 * 1024 * 1024;

/// Far more than an ordinary review (a Secret's review is a few KiB; one holding a certificate
/// chain, tens). A body up to this size needs no share of the body budget: the connections cap
/// bounds them (256 connections × 64 KiB: 16 MiB). A larger one, or one of unknown length, draws
/// from the budget; its bytes past this are read at the large bodies' pace, and it is decoded off
/// the webhook's threads.
pub const ORDINARY_BODY_BYTES: usize = 64 * 1024;

/// Default cap on reviews being decided or answered at once (their bodies read).
pub const DEFAULT_MAX_IN_FLIGHT: usize = 64;
/// Default budget for large bodies being buffered at once: two bodies of the maximum size.
pub const DEFAULT_LARGE_BODY_BUDGET: usize = 2 * MAX_BODY_BYTES;
/// Default rate at which the bytes of bodies past their first [`ORDINARY_BODY_BYTES`] are read,
/// all together: 16 MiB/s, a few of the largest reviews a second. A large review that arrives alone
/// is read at once (the pace allows a burst of one body of the maximum size); only a stream of them
/// is slowed. Measured in the soak (`benches/soak.rs`, two clients posting 7 MiB bodies back to
/// back): at 32 MiB/s the ordinary reviews' p99 was 5.7 ms, at 16 MiB/s 3.5–4.3 ms, against 3.4 ms
/// without those clients.
pub const DEFAULT_LARGE_BODY_RATE: usize = 16 * 1024 * 1024;
/// How long a body of the maximum size arriving alone may take at the slowest pace allowed: half
/// the shortest `timeoutSeconds` of the webhook entries (2 s), so pacing alone does not make a lone
/// review time out. Bodies arriving together share the pace.
const SLOWEST_MAX_BODY_READ: Duration = Duration::from_secs(1);

/// The body budget is counted in KiB, so that it fits a semaphore's permits.
const UNIT: usize = 1024;

/// The budget's units a body of `size` bytes takes.
fn units_of(size: usize) -> u32 {
    u32::try_from(size.div_ceil(UNIT)).unwrap_or(u32::MAX)
}

/// How long a large body that made room waits for the share of the body it closed (its
/// connection's task gives it back at once; this only bounds the wait).
const ROOM_WAIT: Duration = Duration::from_millis(50);

/// How long a large body that finds the budget full looks for a stalled body to make room: past
/// the short grace of a remembered address (a body just declared in place of a stalled one is
/// judged within it). It looks again only when a body could be judged stalled within the search,
/// 5 ms to [`ROOM_RETRY`] later (each look goes through every body holding a share).
const ROOM_SEARCH: Duration = Duration::from_millis(150);
const ROOM_RETRY: Duration = Duration::from_millis(25);

/// The shared caps of one webhook server.
#[derive(Debug)]
pub struct ReviewLimits {
    in_flight: Arc<Semaphore>,
    max_in_flight: usize,
    /// Reviews in flight from each client address, at most its fair share of them.
    in_flight_by_address: PeerSlots,
    large_bodies: Arc<Semaphore>,
    budget: usize,
    /// Bytes of the budget each client address holds, at most half of it.
    by_address: PeerSlots,
    /// The bodies holding shares, so that a stalled one can make room.
    large: LargeBodies,
    pace: Option<BodyPace>,
}

impl Default for ReviewLimits {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_IN_FLIGHT, DEFAULT_LARGE_BODY_BUDGET)
    }
}

/// Held while a body is read and its review served: its share of the large bodies' budget, if it
/// needs one. Dropping it gives the share back.
#[derive(Debug)]
pub struct BodyRoom {
    _share: Option<OwnedSemaphorePermit>,
    _address: Option<PeerSlot>,
    held: Option<Held>,
}

impl BodyRoom {
    /// The flag the body's reader sets once the body falls behind its course (see
    /// [`Held::lagged`]); `None` for a body that needs no share.
    pub fn lagged(&self) -> Option<Arc<AtomicBool>> {
        self.held.as_ref().map(Held::lagged)
    }
}

/// Held while a review whose body has arrived is decided and answered: its slot among the reviews
/// in flight, and of its client address's share of them.
#[derive(Debug)]
pub struct InFlight {
    _slot: OwnedSemaphorePermit,
    _address: Option<PeerSlot>,
}

/// Why a review was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("Content-Type must be application/json")]
    NotJson,
    #[error(
        "the request body declares {declared} bytes; AdmissionReview bodies are limited to {MAX_BODY_BYTES} bytes"
    )]
    TooLarge { declared: u64 },
    #[error("{0} reviews are in flight, the most this webhook serves at once; retry")]
    Busy(usize),
    #[error(
        "{0} reviews from this address are in flight, its fair share of those this webhook serves at once while other addresses have some in flight; retry"
    )]
    AddressBusy(usize),
    #[error("large request bodies being read already fill the budget of {0} bytes; retry")]
    BodyBudget(usize),
    #[error(
        "large request bodies from this address being read already hold {0} bytes, its share of the budget; retry"
    )]
    AddressBodyBudget(usize),
}

impl ReviewLimits {
    /// `max_in_flight` reviews at once (at least 1), and large bodies totalling `large_body_budget`
    /// bytes (at least one body of [`MAX_BODY_BYTES`], so that any valid review can get through),
    /// half of it at most from one address (at least one body of the maximum size), read at
    /// [`DEFAULT_LARGE_BODY_RATE`] (see [`Self::with_large_body_rate`]).
    pub fn new(max_in_flight: usize, large_body_budget: usize) -> Self {
        let max_in_flight = max_in_flight.max(1);
        let budget = large_body_budget.max(MAX_BODY_BYTES);
        Self {
            in_flight: Arc::new(Semaphore::new(max_in_flight)),
            max_in_flight,
            in_flight_by_address: PeerSlots::new(max_in_flight),
            large_bodies: Arc::new(Semaphore::new(budget.div_ceil(UNIT))),
            budget,
            by_address: PeerSlots::new((budget / 2).max(MAX_BODY_BYTES)),
            large: LargeBodies::default(),
            pace: Some(BodyPace::new(DEFAULT_LARGE_BODY_RATE)),
        }
    }

    /// The bytes of bodies past their first [`ORDINARY_BODY_BYTES`] are read at `bytes_per_second`
    /// at most, all together (0: unpaced). Raised to the slowest pace at which a body of the
    /// maximum size still arrives within [`SLOWEST_MAX_BODY_READ`].
    pub fn with_large_body_rate(mut self, bytes_per_second: usize) -> Self {
        if bytes_per_second > 0 && bytes_per_second < slowest_rate() {
            tracing::warn!(
                asked = bytes_per_second,
                used = slowest_rate(),
                "the large bodies' pace is raised to the slowest allowed (a body of the maximum size in {SLOWEST_MAX_BODY_READ:?})"
            );
        }
        self.pace = (bytes_per_second > 0).then(|| BodyPace::new(bytes_per_second));
        self
    }

    /// The pace the bytes of large bodies are read at, if any.
    pub fn large_body_pace(&self) -> Option<&BodyPace> {
        self.pace.as_ref()
    }

    /// Room for a body that declares `declared` bytes (`None`: unknown, as when chunked), from its
    /// headers alone, sent from `address` (`None`: unknown, held to the whole budget alone), or why
    /// not. Never waits.
    pub fn admit_body(
        &self,
        declared: Option<u64>,
        address: Option<IpAddr>,
    ) -> Result<BodyRoom, Refusal> {
        if !Self::needs_a_share(declared) {
            return Ok(BodyRoom {
                _share: None,
                _address: None,
                held: None,
            });
        }
        let size = match declared {
            Some(n) if n > MAX_BODY_BYTES as u64 => return Err(Refusal::TooLarge { declared: n }),
            Some(n) => n as usize,
            None => MAX_BODY_BYTES,
        };
        // The address's share first: a refusal there leaves the budget untouched.
        let address_share = address
            .map(|a| {
                let share = self.by_address.take_many(a, size);
                share.ok_or(Refusal::AddressBodyBudget(self.by_address.per_address()))
            })
            .transpose()?;
        let permit = self
            .large_bodies
            .clone()
            .try_acquire_many_owned(units_of(size));
        let share = permit.map_err(|_| Refusal::BodyBudget(self.budget))?;
        // Known by its connection (when served by the listener), so that it can make room if its
        // bytes stop coming.
        let held = address
            .zip(connection::deadline())
            .map(|(address, deadline)| {
                let share = units_of(size) as usize * UNIT;
                self.large.hold(address, deadline, share)
            });
        Ok(BodyRoom {
            _share: Some(share),
            _address: address_share,
            held,
        })
    }

    /// [`Self::admit_body`], and when the budget is full, room made by closing the connection of a
    /// large body that has stalled (see [`LargeBodies::evict_one`]) and whose share makes room
    /// enough, of an address holding more of the budget than its fair share (the budget over the
    /// addresses holding some) and than `address`: looked for again while one could be judged
    /// stalled within [`ROOM_SEARCH`] (room may come free meanwhile too), then waits at most
    /// [`ROOM_WAIT`] for the closed body's share to come back.
    pub async fn admit_body_making_room(
        &self,
        declared: Option<u64>,
        address: Option<IpAddr>,
    ) -> Result<BodyRoom, Refusal> {
        let searching = tokio::time::Instant::now();
        loop {
            let refused = match self.admit_body(declared, address) {
                Err(refused @ Refusal::BodyBudget(_)) => refused,
                other => return other,
            };
            match self.make_room(declared, address) {
                Search::Evicted => break,
                Search::NotYet(after) if searching.elapsed() + after <= ROOM_SEARCH => {
                    // Not more often than every 5 ms: each look goes through every body held.
                    let look_again = after.clamp(Duration::from_millis(5), ROOM_RETRY);
                    tokio::time::sleep(look_again).await;
                }
                _ => return Err(refused),
            }
        }
        // Tried again until the closed body's share is back (its connection's task lets go of it
        // at once), without queueing on the budget: a waiter there would take every share given
        // back meanwhile, the apiserver's bodies' too.
        let started = tokio::time::Instant::now();
        loop {
            match self.admit_body(declared, address) {
                Err(Refusal::BodyBudget(_)) if started.elapsed() < ROOM_WAIT => {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                other => return other,
            }
        }
    }

    /// Closes a stalled large body's connection to make room for a body declaring `declared`
    /// bytes from `address` (see [`Self::admit_body_making_room`]).
    fn make_room(&self, declared: Option<u64>, address: Option<IpAddr>) -> Search {
        let newcomers = address.map_or(0, |a| self.by_address.held(a));
        let holders = self.by_address.holders() + usize::from(newcomers == 0);
        let at_least = newcomers.max(self.budget / holders.max(1));
        let size = declared.map_or(MAX_BODY_BYTES, |n| n as usize);
        let free = self.large_bodies.available_permits() * UNIT;
        let missing = size.saturating_sub(free);
        self.large
            .evict_one(|a| self.by_address.held(a), at_least, missing)
    }

    /// Whether a body that declares `declared` bytes needs a share of the large bodies' budget.
    pub fn needs_a_share(declared: Option<u64>) -> bool {
        declared.is_none_or(|n| n > ORDINARY_BODY_BYTES as u64)
    }

    /// A slot for a review whose body has arrived, sent from `address` (`None`: unknown, held to
    /// no share), or why not. Never waits. An address alone may take every slot; while others
    /// hold some, one holds at most its fair share (the slots over the addresses holding some):
    /// reviews that wait on look-ups hold theirs for up to the look-ups' deadline, and one client
    /// sending many such reviews would otherwise take every slot the apiserver's need.
    pub fn admit_review(&self, address: Option<IpAddr>) -> Result<InFlight, Refusal> {
        let permit = self.in_flight.clone().try_acquire_owned();
        let slot = permit.map_err(|_| Refusal::Busy(self.max_in_flight))?;
        let address = address
            .map(|a| {
                let share = self.in_flight_by_address.take_fair(a, self.max_in_flight);
                share.map_err(Refusal::AddressBusy)
            })
            .transpose()?;
        Ok(InFlight {
            _slot: slot,
            _address: address,
        })
    }
}

/// The pace at which large bodies are read: a shared budget of bytes per second that every body
/// draws from, as it arrives, for its bytes past [`ORDINARY_BODY_BYTES`]. A body that waits stops
/// being read, so its sender's TCP window fills and the sender slows down too; no CPU is spent on
/// it meanwhile.
#[derive(Debug)]
pub struct BodyPace {
    limiter: DefaultDirectRateLimiter,
    /// Bodies take their turns in the order they asked: without it, a body asking for a few bytes
    /// at a time would always find room before one asking for a whole frame.
    turn: tokio::sync::Mutex<()>,
}

impl BodyPace {
    /// Paces at `bytes_per_second`, at least [`slowest_rate`], at most 1 GB/s (governor's
    /// resolution is a nanosecond per byte).
    fn new(bytes_per_second: usize) -> Self {
        let rate = bytes_per_second.clamp(slowest_rate(), 1_000_000_000);
        let rate =
            NonZeroU32::new(u32::try_from(rate).unwrap_or(u32::MAX)).unwrap_or(NonZeroU32::MIN);
        // One body of the maximum size may arrive at full speed after a quiet spell.
        let burst = NonZeroU32::new(u32::try_from(MAX_BODY_BYTES).unwrap_or(u32::MAX))
            .unwrap_or(NonZeroU32::MIN);
        Self {
            limiter: RateLimiter::direct(Quota::per_second(rate).allow_burst(burst)),
            turn: tokio::sync::Mutex::new(()),
        }
    }

    /// Waits until the `bytes` just read fit the pace (at once while the budget lasts), and adds
    /// them, and the time they waited if they had to, to `paced`: a wait counts even when it is
    /// cut short (the body's deadline drops this future).
    pub async fn after_read(&self, bytes: usize, paced: &mut Paced) {
        // A frame is never larger than the burst (hyper reads at most a few hundred KiB at once);
        // clamped all the same, so that the check below can always succeed.
        let bytes = bytes.min(MAX_BODY_BYTES);
        let Some(cells) = NonZeroU32::new(u32::try_from(bytes).unwrap_or(u32::MAX)) else {
            return;
        };
        paced.bytes += bytes;
        let mut waiting = Waiting {
            since: Instant::now(),
            blocked: false,
            waited: &mut paced.waited,
        };
        // Bodies take their turns in the order they asked; one behind another's turn waits.
        let _turn = match self.turn.try_lock() {
            Ok(turn) => turn,
            Err(_) => {
                waiting.blocked = true;
                self.turn.lock().await
            }
        };
        // Each check either takes the bytes or says when they will be there.
        while let Ok(Err(not_until)) = self.limiter.check_n(cells) {
            waiting.blocked = true;
            tokio::time::sleep(not_until.wait_time_from(DefaultClock::default().now())).await;
        }
    }
}

/// What one body drew from the large bodies' pace: its bytes read at the pace, and how long they
/// waited for their turn and the budget (each body's own wait: the waits of bodies queued at the
/// same time add up).
#[derive(Debug, Default, Clone, Copy)]
pub struct Paced {
    pub bytes: usize,
    pub waited: Duration,
}

/// Adds the time since `since` to `waited` when dropped, however the wait ends, if the bytes had
/// to wait at all (bytes that pass at once add nothing).
struct Waiting<'a> {
    since: Instant,
    blocked: bool,
    waited: &'a mut Duration,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.blocked {
            *self.waited += self.since.elapsed();
        }
    }
}

/// The slowest pace allowed: a body of the maximum size in [`SLOWEST_MAX_BODY_READ`].
fn slowest_rate() -> usize {
    let seconds = usize::try_from(SLOWEST_MAX_BODY_READ.as_secs())
        .unwrap_or(1)
        .max(1);
    MAX_BODY_BYTES.div_ceil(seconds)
}

impl IntoResponse for Refusal {
    /// 415 for a body that is not JSON, 413 for a body that is too large, 429 (with `Retry-After`) for a full server, each with a
    /// Kubernetes `Status` body that the apiserver quotes in its error.
    fn into_response(self) -> Response {
        let (code, reason) = match self {
            Self::NotJson => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "UnsupportedMediaType"),
            Self::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "RequestEntityTooLarge"),
            Self::Busy(_)
            | Self::AddressBusy(_)
            | Self::BodyBudget(_)
            | Self::AddressBodyBudget(_) => (StatusCode::TOO_MANY_REQUESTS, "TooManyRequests"),
        };
        let body = status_body(code, reason, &self.to_string());
        let mut response = (code, axum::Json(body)).into_response();
        if code == StatusCode::TOO_MANY_REQUESTS {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        response
    }
}

/// A Kubernetes `Status` (failure) body.
pub fn status_body(code: StatusCode, reason: &str, message: &str) -> serde_json::Value {
    serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "code": code.as_u16(),
        "reason": reason,
        "message": message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reviews_in_flight_are_capped_and_bodies_being_read_take_no_slot() {
        let limits = ReviewLimits::new(2, MAX_BODY_BYTES);
        let reading: Vec<_> = (0..10)
            .map(|_| limits.admit_body(Some(ORDINARY_BODY_BYTES as u64), None))
            .collect();
        assert!(
            reading.iter().all(Result::is_ok),
            "ordinary bodies need no room"
        );
        let a = limits.admit_review(None).expect("first");
        let _b = limits.admit_review(None).expect("second");
        assert_eq!(limits.admit_review(None).err(), Some(Refusal::Busy(2)));
        drop(a);
        assert!(
            limits.admit_review(None).is_ok(),
            "a freed slot is reusable"
        );
    }

    #[test]
    fn one_address_holds_at_most_its_fair_share_of_the_review_slots() {
        let limits = ReviewLimits::new(4, MAX_BODY_BYTES);
        let flood: IpAddr = "10.0.0.1".parse().expect("ip");
        let apiserver: IpAddr = "10.0.0.2".parse().expect("ip");
        let first = limits.admit_review(Some(apiserver)).expect("first");
        let _second = limits.admit_review(Some(flood)).expect("second");
        let _third = limits.admit_review(Some(flood)).expect("third");
        assert_eq!(
            limits.admit_review(Some(flood)).err(),
            Some(Refusal::AddressBusy(2))
        );
        // The refused review gave back the slot it took: room for two more.
        let _other = limits.admit_review(Some(apiserver)).expect("its share");
        drop(first);
        let _unknown = limits.admit_review(None).expect("no share");
        assert_eq!(
            limits.admit_review(Some(apiserver)).err(),
            Some(Refusal::Busy(4))
        );
    }

    #[test]
    fn an_address_alone_may_take_every_review_slot() {
        let limits = ReviewLimits::new(4, MAX_BODY_BYTES);
        let apiserver: IpAddr = "10.0.0.2".parse().expect("ip");
        let all: Vec<_> = (0..4)
            .map(|_| limits.admit_review(Some(apiserver)).expect("a slot"))
            .collect();
        assert_eq!(
            limits.admit_review(Some(apiserver)).err(),
            Some(Refusal::Busy(4))
        );
        drop(all);
    }

    #[test]
    fn large_bodies_share_the_budget_and_ordinary_ones_still_pass() {
        let limits = ReviewLimits::new(8, MAX_BODY_BYTES);
        let big = limits
            .admit_body(Some(MAX_BODY_BYTES as u64), None)
            .expect("one fits");
        assert_eq!(
            limits
                .admit_body(Some(ORDINARY_BODY_BYTES as u64 + 1), None)
                .err(),
            Some(Refusal::BodyBudget(MAX_BODY_BYTES))
        );
        assert!(
            limits.admit_body(None, None).is_err(),
            "unknown length reserves the maximum"
        );
        assert!(
            limits.admit_body(Some(2048), None).is_ok(),
            "ordinary reviews get through"
        );
        drop(big);
        assert!(limits.admit_body(None, None).is_ok());
    }

    #[test]
    fn one_address_holds_at_most_half_the_large_bodies_budget() {
        let limits = ReviewLimits::new(8, 4 * MAX_BODY_BYTES);
        let (one, other): (IpAddr, IpAddr) = (
            "10.0.0.1".parse().expect("address"),
            "10.0.0.2".parse().expect("address"),
        );
        let size = Some(MAX_BODY_BYTES as u64);
        let first = limits.admit_body(size, Some(one)).expect("a quarter");
        let _second = limits.admit_body(size, Some(one)).expect("half");
        assert_eq!(
            limits.admit_body(size, Some(one)).err(),
            Some(Refusal::AddressBodyBudget(2 * MAX_BODY_BYTES))
        );
        assert!(
            limits.admit_body(Some(2048), Some(one)).is_ok(),
            "ordinary reviews need no share"
        );
        // The same address written as IPv4-mapped IPv6 is the same client.
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().expect("address");
        assert!(limits.admit_body(size, Some(mapped)).is_err());
        let _others = limits
            .admit_body(size, Some(other))
            .expect("another address has its share");
        drop(first);
        let _again = limits
            .admit_body(size, Some(one))
            .expect("a share given back is reusable");
        // The refusals took nothing from the budget: its last quarter is still free.
        let _last = limits.admit_body(size, None).expect("the last quarter");
        assert!(limits.admit_body(size, None).is_err(), "the budget is full");
        assert_eq!(limits.by_address.holders(), 2);
    }

    #[test]
    fn with_the_smallest_budget_one_address_may_take_all_of_it() {
        let limits = ReviewLimits::new(8, MAX_BODY_BYTES);
        let one: IpAddr = "10.0.0.1".parse().expect("address");
        let whole = limits.admit_body(Some(MAX_BODY_BYTES as u64), Some(one));
        assert!(whole.is_ok(), "any valid review can get through");
        drop(whole);
        assert_eq!(limits.by_address.holders(), 0, "nothing left held");
    }

    #[test]
    fn zero_turns_pacing_off() {
        let paced = ReviewLimits::new(8, MAX_BODY_BYTES).with_large_body_rate(1);
        assert!(paced.large_body_pace().is_some());
        let unpaced = ReviewLimits::new(8, MAX_BODY_BYTES).with_large_body_rate(0);
        assert!(unpaced.large_body_pace().is_none());
    }

    #[tokio::test]
    async fn only_real_waits_are_counted_and_one_cut_short_by_the_deadline_too() {
        let limits = ReviewLimits::new(8, MAX_BODY_BYTES).with_large_body_rate(1);
        let pace = limits.large_body_pace().expect("paced");
        let mut paced = Paced::default();
        // The burst is spent at once; the next body of the maximum size waits about a second, and
        // its deadline cuts that short.
        pace.after_read(MAX_BODY_BYTES, &mut paced).await;
        assert_eq!(paced.waited, Duration::ZERO, "the burst passed at once");
        let cut_after = Duration::from_millis(100);
        let waited = tokio::time::timeout(cut_after, pace.after_read(MAX_BODY_BYTES, &mut paced));
        assert!(waited.await.is_err(), "the second body did not wait");
        assert_eq!(paced.bytes, 2 * MAX_BODY_BYTES);
        // Its wait began at its first poll, a little after the deadline was set: half will do (a
        // wait not counted is zero).
        assert!(paced.waited >= cut_after / 2, "counted {:?}", paced.waited);
    }

    #[tokio::test]
    async fn a_body_arriving_alone_passes_at_once_and_a_stream_is_held_to_the_rate() {
        // Asked for 1 byte/s, the pace is raised to the slowest allowed: a body of the maximum
        // size in SLOWEST_MAX_BODY_READ.
        let limits = ReviewLimits::new(8, MAX_BODY_BYTES).with_large_body_rate(1);
        let pace = limits.large_body_pace().expect("paced");
        let slowest_rate = MAX_BODY_BYTES as f64 / SLOWEST_MAX_BODY_READ.as_secs_f64();
        // The burst: one body of the maximum size, in frames as hyper hands them over, at once
        // (no more than half of what the pace would take for it).
        let burst_started = std::time::Instant::now();
        for _ in 0..MAX_BODY_BYTES / (64 * 1024) {
            pace.after_read(64 * 1024, &mut Paced::default()).await;
        }
        assert!(
            burst_started.elapsed() < SLOWEST_MAX_BODY_READ / 2,
            "the burst took {:?}",
            burst_started.elapsed()
        );
        let started = std::time::Instant::now();
        let more = MAX_BODY_BYTES / 4;
        for _ in 0..more / (64 * 1024) {
            pace.after_read(64 * 1024, &mut Paced::default()).await;
        }
        let expected = more as f64 / slowest_rate;
        assert!(
            started.elapsed().as_secs_f64() >= expected * 0.9,
            "{more} bytes past the burst took {:?}, the rate allows them in no less than {expected:.2} s",
            started.elapsed()
        );
    }

    #[test]
    fn oversized_declarations_are_refused_before_anything_is_reserved() {
        let limits = ReviewLimits::new(1, MAX_BODY_BYTES);
        let declared = MAX_BODY_BYTES as u64 + 1;
        assert_eq!(
            limits.admit_body(Some(declared), None).err(),
            Some(Refusal::TooLarge { declared })
        );
        assert!(limits.admit_body(Some(MAX_BODY_BYTES as u64), None).is_ok());
    }
}
