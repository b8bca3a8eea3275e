//! A connection's header-read deadline: each request's head must arrive within the timeout of the
//! connection opening, or of its first byte, so that a client trickling a head cannot keep a
//! connection (and its TLS and HTTP buffers) for ever; and a keep-alive connection that sends
//! nothing is closed once it has been idle for the idle timeout after its last answer.
//!
//! The idle timeout is longer than the client's own (the apiserver's is Go's 90 s), so that the
//! client closes an idle connection first: a server that closes first races the client's next
//! request, which then fails with EOF (Go does not resend a POST), and the review fails with it.
//!
//! hyper enforces a header timeout itself with `header_read_timeout`, but arms a timer for every
//! request: a boxed sleep registered with the runtime's timer and cancelled once the head has
//! arrived, which measured ~2 µs of a review's ~24 µs of CPU. Here a connection has one timer,
//! re-armed only when it fires; a request only marks when it began and when it was answered, and
//! the connection's reads mark when the next head's first bytes came ([`Watched`]).

use super::body_wait::{self, BodyWait};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// `waiting_since` while a request is being answered.
const SERVING: u64 = u64::MAX;
/// `waiting_since` once the connection is evicted ([`HeaderDeadline::evict`]).
const EVICTED: u64 = u64::MAX - 1;

/// How long a connection must have waited for a request before it may be evicted: by then its
/// last answer has been written out, and a head that follows an answer at once is never cut.
pub const EVICTABLE_AFTER: Duration = Duration::from_millis(100);

pub struct HeaderDeadline {
    opened: Instant,
    timeout: Duration,
    idle_timeout: Duration,
    /// Nanoseconds from `opened` to the moment the connection began waiting for a request head
    /// (or, when idle, for its first byte), or [`SERVING`], or [`EVICTED`]: one state, so that an
    /// eviction and a request's head cannot both win.
    waiting_since: AtomicU64,
    /// Answered, and no byte of the next request has come since.
    idle: AtomicBool,
    /// To close after its answer, or as soon as it waits for a request ([`Self::retire`]).
    retiring: AtomicBool,
    /// The request body being read, once the handler has had to wait for its bytes: whether it
    /// has stalled. Locked by an eviction while it decides, so that bytes that come meanwhile
    /// cannot be missed (a body that has come is never cut).
    body: Mutex<Option<BodyWait>>,
    /// Wakes [`Self::passed`] on an eviction.
    wake: tokio::sync::Notify,
}

impl HeaderDeadline {
    /// A connection that opened now and is waiting for its first request head (within `timeout`);
    /// between requests it may stay idle for `idle_timeout`.
    pub fn new(timeout: Duration, idle_timeout: Duration) -> Arc<Self> {
        Self::opened_at(Instant::now(), timeout, idle_timeout)
    }

    pub(crate) fn opened_at(
        opened: Instant,
        timeout: Duration,
        idle_timeout: Duration,
    ) -> Arc<Self> {
        Arc::new(Self {
            opened,
            timeout,
            idle_timeout,
            waiting_since: AtomicU64::new(0),
            idle: AtomicBool::new(false),
            retiring: AtomicBool::new(false),
            body: Mutex::new(None),
            wake: tokio::sync::Notify::new(),
        })
    }

    /// Closes the connection now if it may make room for a new one at the connection cap
    /// ([`Self::evictable`]); says whether it did. A head that arrives first wins.
    pub fn evict(&self) -> bool {
        self.evict_within(body_wait::GRACE)
    }

    /// [`Self::evict`], a stalled body judged after `body_grace` of waiting for it.
    pub fn evict_within(&self, body_grace: Duration) -> bool {
        // Held until the state is swapped: the body's bytes and the eviction cannot cross.
        let body = self.body.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let evicted = self
            .waiting_since
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |since| {
                self.evictable_in(since, body.as_ref(), now, body_grace)
                    .then_some(EVICTED)
            })
            .is_ok();
        drop(body);
        if evicted {
            self.wake.notify_one();
        }
        evicted
    }

    /// Whether the connection could be evicted now: it has waited for a request (idle, or its head
    /// not complete) for at least [`EVICTABLE_AFTER`], or the request's body has stalled
    /// ([`BodyWait::stalled`] after [`body_wait::GRACE`]). A request whose body has come (being
    /// decided, awaiting look-ups), is on course or is paused by the pace is never cut.
    pub fn evictable(&self) -> bool {
        self.evictable_within(body_wait::GRACE)
    }

    /// [`Self::evictable`], a stalled body judged after `body_grace` of waiting for it.
    pub fn evictable_within(&self, body_grace: Duration) -> bool {
        let body = self.body.lock().unwrap_or_else(|e| e.into_inner());
        let since = self.waiting_since.load(Ordering::Relaxed);
        self.evictable_in(since, body.as_ref(), Instant::now(), body_grace)
    }

    fn evictable_in(
        &self,
        waiting_since: u64,
        body: Option<&BodyWait>,
        now: Instant,
        body_grace: Duration,
    ) -> bool {
        match waiting_since {
            EVICTED => false,
            SERVING => body.is_some_and(|body| body.stalled(now, body_grace)),
            since => {
                let at_least = u64::try_from(EVICTABLE_AFTER.as_nanos()).unwrap_or(u64::MAX);
                self.nanos(now).saturating_sub(since) >= at_least
            }
        }
    }

    /// How long until the request's body is stalled (judged after `body_grace`) if no more of its
    /// bytes come: zero if it is; `None` when the connection is not waiting for a body.
    pub fn body_stalls_in(&self, body_grace: Duration) -> Option<Duration> {
        let body = self.body.lock().unwrap_or_else(|e| e.into_inner());
        if self.waiting_since.load(Ordering::Relaxed) != SERVING {
            return None;
        }
        body.as_ref()?.stalls_in(Instant::now(), body_grace)
    }

    /// How the request's body is coming, once the handler has had to wait for it; `None` once it
    /// has come or been dropped.
    pub(crate) fn body_wait(&self, wait: Option<BodyWait>) {
        *self.body.lock().unwrap_or_else(|e| e.into_inner()) = wait;
    }

    #[cfg(test)]
    pub(crate) fn awaits_body(&self) -> bool {
        let body = self.body.lock().unwrap_or_else(|e| e.into_inner());
        body.is_some_and(|b| b.waiting_since.is_some())
    }

    /// A request's head has arrived: the deadline is off until it is answered. It wins over an
    /// eviction not yet acted on: a request is never cut.
    pub fn serving(&self) {
        self.idle.store(false, Ordering::Relaxed);
        self.waiting_since.store(SERVING, Ordering::Relaxed);
    }

    /// The request has been answered: the connection is idle from now.
    pub fn answered(&self) {
        self.answered_at(Instant::now());
    }

    fn answered_at(&self, at: Instant) {
        let at = self.nanos(at);
        // An eviction decided while the request was served (its body stalled) stands: the slot was
        // promised to a new connection.
        let _ = self
            .waiting_since
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |since| {
                (since != EVICTED).then_some(at)
            });
        self.idle.store(true, Ordering::Relaxed);
    }

    /// Bytes arrived: on an idle connection, the next head has begun and is due within the
    /// header timeout from now.
    fn bytes_arrived(&self) {
        // A plain load first: every read of a busy connection comes here, and it is rarely idle.
        if self.idle.load(Ordering::Relaxed) && self.idle.swap(false, Ordering::Relaxed) {
            let now = self.nanos(Instant::now());
            // An eviction already decided stands: the slot was promised to a new connection.
            let _ =
                self.waiting_since
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |since| {
                        (since != EVICTED).then_some(now)
                    });
        }
    }

    fn nanos(&self, at: Instant) -> u64 {
        let since = at.saturating_duration_since(self.opened).as_nanos();
        u64::try_from(since).unwrap_or(EVICTED - 1)
    }

    /// When the deadline passes if nothing changes; `None` while a request is being answered
    /// (answering takes as long as it takes: the body and the look-ups have deadlines of their own).
    fn due(&self) -> Option<Instant> {
        match self.waiting_since.load(Ordering::Relaxed) {
            SERVING => None,
            EVICTED => Some(self.opened),
            since if self.retiring() => {
                Some(self.opened + Duration::from_nanos(since) + EVICTABLE_AFTER)
            }
            since => {
                let allowed = if self.idle.load(Ordering::Relaxed) {
                    self.idle_timeout
                } else {
                    self.timeout
                };
                Some(self.opened + Duration::from_nanos(since) + allowed)
            }
        }
    }

    /// Resolves once the connection has waited longer than allowed for a request head, or has
    /// been evicted.
    pub async fn passed(&self) {
        loop {
            let now = Instant::now();
            // While serving, look again a timeout later.
            let due = self.due().unwrap_or(now + self.timeout);
            if now >= due {
                return;
            }
            // The connection's one timer; it is re-armed only here, when it has fired. It fires at
            // least every header timeout: an idle connection's next head may begin at any time,
            // and is then due a header timeout after its first byte, sooner than the idle end.
            tokio::select! {
                () = tokio::time::sleep_until(due.min(now + self.timeout).into()) => {}
                () = self.wake.notified() => {}
            }
        }
    }

    /// Has a connection that cannot be evicted (busy) close after the answer it is making, or
    /// once it has waited [`EVICTABLE_AFTER`] for a request: a request is never cut. Whether it was
    /// not closing already.
    pub fn retire(&self) -> bool {
        if self.was_evicted() || self.retiring.swap(true, Ordering::Relaxed) {
            return false;
        }
        // Its deadline comes sooner now.
        self.wake.notify_one();
        true
    }

    /// Whether the connection is in use: answering a request, or between two (answered, the
    /// next not begun), as a client's pooled connection is. One that has not had a request yet is
    /// not: it may be evicted once it has waited [`EVICTABLE_AFTER`] for one.
    pub fn busy(&self) -> bool {
        self.waiting_since.load(Ordering::Relaxed) == SERVING || self.idle.load(Ordering::Relaxed)
    }

    /// Whether the connection is to close after its answer ([`Self::retire`]).
    pub fn retiring(&self) -> bool {
        self.retiring.load(Ordering::Relaxed)
    }

    /// Whether the connection was evicted (rather than its deadline passing).
    pub fn was_evicted(&self) -> bool {
        self.waiting_since.load(Ordering::Relaxed) == EVICTED
    }
}

/// A connection's stream that tells its [`HeaderDeadline`] when bytes arrive, so that an idle
/// connection's next head is held to the header timeout from its first byte.
pub struct Watched<T> {
    inner: T,
    deadline: Arc<HeaderDeadline>,
}

impl<T> Watched<T> {
    pub fn new(inner: T, deadline: Arc<HeaderDeadline>) -> Self {
        Self { inner, deadline }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.deadline.bytes_arrived();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Real time, kept short: the deadline reads the clock itself.
    const TIMEOUT: Duration = Duration::from_millis(50);
    const IDLE: Duration = Duration::from_millis(200);

    #[tokio::test]
    async fn passes_the_timeout_after_the_connection_opened() {
        let started = Instant::now();
        let deadline = HeaderDeadline::new(TIMEOUT, IDLE);
        deadline.passed().await;
        assert!(started.elapsed() >= TIMEOUT);
    }

    #[tokio::test]
    async fn never_passes_while_a_request_is_being_answered() {
        let deadline = HeaderDeadline::new(TIMEOUT, IDLE);
        deadline.serving();
        let waited = tokio::time::timeout(TIMEOUT * 4, deadline.passed()).await;
        assert!(
            waited.is_err(),
            "the deadline passed while a request was served"
        );
    }

    #[tokio::test]
    async fn an_evicted_connection_passes_at_once_unless_it_is_being_answered() {
        let hour = Duration::from_secs(3600);
        let deadline = HeaderDeadline::opened_at(Instant::now() - EVICTABLE_AFTER * 2, hour, IDLE);
        deadline.serving();
        assert!(!deadline.evict(), "a connection being answered is kept");
        deadline.answered();
        assert!(
            !deadline.evict(),
            "just answered: its answer may not be written out yet"
        );
        deadline.answered_at(Instant::now() - EVICTABLE_AFTER);
        assert!(deadline.evict());
        tokio::time::timeout(Duration::from_secs(5), deadline.passed())
            .await
            .expect("passed at once, not after an hour");
        assert!(deadline.was_evicted());
    }

    /// A body of 7 MiB, nothing of which has come, awaited since `ago`.
    fn awaited_since(ago: Duration) -> Option<BodyWait> {
        Some(BodyWait {
            waiting_since: Some(Instant::now() - ago),
            ..BodyWait::new(7 << 20)
        })
    }

    #[test]
    fn a_stalled_body_may_make_room_and_one_arrived_or_paused_never() {
        let hour = Duration::from_secs(3600);
        let deadline = HeaderDeadline::opened_at(Instant::now() - hour, hour, IDLE);
        deadline.serving();
        assert!(!deadline.evictable(), "a request being answered");
        deadline.body_wait(awaited_since(Duration::ZERO));
        assert!(!deadline.evictable(), "its bytes may be on their way");
        deadline.body_wait(awaited_since(body_wait::GRACE));
        assert!(deadline.evictable(), "awaited for a second, still missing");
        assert!(
            deadline.evictable_within(Duration::ZERO),
            "judged sooner after a short grace"
        );
        // Bytes came, or the pace paused the reading: the handler is not waiting for the client.
        deadline.body_wait(None);
        assert!(!deadline.evict());
        deadline.body_wait(awaited_since(body_wait::GRACE));
        assert!(deadline.evict());
        assert!(deadline.was_evicted());
        assert!(!deadline.evictable(), "evicted once");
        // The body arrives and the review is answered before the connection is closed: the
        // eviction stands.
        deadline.body_wait(None);
        deadline.answered();
        assert!(deadline.was_evicted());
    }

    #[test]
    fn a_retired_connection_closes_once_it_waits_for_a_request_never_while_serving() {
        let hour = Duration::from_secs(3600);
        let deadline = HeaderDeadline::opened_at(Instant::now(), hour, hour);
        assert!(!deadline.busy(), "no request yet");
        deadline.serving();
        assert!(deadline.busy(), "answering");
        assert!(deadline.retire());
        assert!(!deadline.retire(), "once");
        assert_eq!(deadline.due(), None, "its request is answered whole");
        let answered = deadline.opened + Duration::from_secs(1);
        deadline.answered_at(answered);
        assert!(deadline.busy(), "between two requests");
        assert_eq!(
            deadline.due(),
            Some(answered + EVICTABLE_AFTER),
            "not after the idle timeout"
        );
        let evicted = HeaderDeadline::opened_at(Instant::now() - hour, hour, hour);
        evicted.answered_at(Instant::now() - EVICTABLE_AFTER);
        assert!(evicted.evict());
        assert!(
            !evicted.retire(),
            "an evicted connection is closing already"
        );
    }

    #[tokio::test]
    async fn a_head_that_arrives_before_the_eviction_is_acted_on_wins() {
        let hour = Duration::from_secs(3600);
        let deadline = HeaderDeadline::opened_at(Instant::now() - EVICTABLE_AFTER * 2, hour, IDLE);
        deadline.answered_at(Instant::now() - EVICTABLE_AFTER);
        assert!(deadline.evict());
        deadline.serving();
        assert!(!deadline.was_evicted());
        let cut = tokio::time::timeout(Duration::from_millis(100), deadline.passed()).await;
        assert!(cut.is_err(), "a request being answered was cut");
    }

    #[test]
    fn an_answer_starts_the_wait_for_the_next_head_again() {
        let deadline = HeaderDeadline::new(TIMEOUT, IDLE);
        assert_eq!(deadline.due(), Some(deadline.opened + TIMEOUT));
        deadline.serving();
        assert_eq!(
            deadline.due(),
            None,
            "no deadline while a request is answered"
        );
        // Answered long after the connection's first due time: the connection may stay idle for
        // the idle timeout after the answer, not after it opened.
        let answered = deadline.opened + TIMEOUT * 3;
        deadline.answered_at(answered);
        assert_eq!(deadline.due(), Some(answered + IDLE));
        // Once the next head's first bytes come, it is held to the header timeout from then.
        let before = Instant::now();
        deadline.bytes_arrived();
        let due = deadline.due().expect("waiting for the head");
        assert!(due >= before + TIMEOUT && due <= Instant::now() + TIMEOUT);
        // Further bytes of the same head do not push it back.
        deadline.bytes_arrived();
        assert_eq!(deadline.due(), Some(due));
    }
}
