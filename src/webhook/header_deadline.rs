//! A connection's header-read deadline: each request's head must arrive within the timeout of the
//! connection opening or of the previous answer, so that a client trickling a head, or holding an
//! idle keep-alive connection, cannot keep a connection (and its TLS and HTTP buffers) for ever.
//!
//! hyper enforces this itself with `header_read_timeout`, but arms a timer for every request: a
//! boxed sleep registered with the runtime's timer and cancelled once the head has arrived, which
//! measured ~2 µs of a review's ~24 µs of CPU. Here a connection has one timer, re-armed only when
//! it fires; a request only marks when it began and when it was answered.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// `waiting_since` while a request is being answered.
const SERVING: u64 = u64::MAX;

pub struct HeaderDeadline {
    opened: Instant,
    timeout: Duration,
    /// Nanoseconds from `opened` to the moment the connection began waiting for a request head,
    /// or [`SERVING`].
    waiting_since: AtomicU64,
}

impl HeaderDeadline {
    /// A connection that opened now and is waiting for its first request head.
    pub fn new(timeout: Duration) -> Arc<Self> {
        Arc::new(Self {
            opened: Instant::now(),
            timeout,
            waiting_since: AtomicU64::new(0),
        })
    }

    /// A request's head has arrived: the deadline is off until it is answered.
    pub fn serving(&self) {
        self.waiting_since.store(SERVING, Ordering::Relaxed);
    }

    /// The request has been answered: the next head is awaited from now.
    pub fn answered(&self) {
        self.answered_at(Instant::now());
    }

    fn answered_at(&self, at: Instant) {
        let since = at.saturating_duration_since(self.opened).as_nanos();
        let since = u64::try_from(since).unwrap_or(SERVING - 1);
        self.waiting_since.store(since, Ordering::Relaxed);
    }

    /// When the deadline passes if nothing changes; `None` while a request is being answered
    /// (answering takes as long as it takes: the body and the look-ups have deadlines of their own).
    fn due(&self) -> Option<Instant> {
        match self.waiting_since.load(Ordering::Relaxed) {
            SERVING => None,
            since => Some(self.opened + Duration::from_nanos(since) + self.timeout),
        }
    }

    /// Resolves once the connection has waited longer than the timeout for a request head.
    pub async fn passed(&self) {
        loop {
            let now = Instant::now();
            // While serving, look again a timeout later.
            let due = self.due().unwrap_or(now + self.timeout);
            if now >= due {
                return;
            }
            // The connection's one timer; it is re-armed only here, when it has fired.
            tokio::time::sleep_until(due.into()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Real time, kept short: the deadline reads the clock itself.
    const TIMEOUT: Duration = Duration::from_millis(50);

    #[tokio::test]
    async fn passes_the_timeout_after_the_connection_opened() {
        let started = Instant::now();
        let deadline = HeaderDeadline::new(TIMEOUT);
        deadline.passed().await;
        assert!(started.elapsed() >= TIMEOUT);
    }

    #[tokio::test]
    async fn never_passes_while_a_request_is_being_answered() {
        let deadline = HeaderDeadline::new(TIMEOUT);
        deadline.serving();
        let waited = tokio::time::timeout(TIMEOUT * 4, deadline.passed()).await;
        assert!(
            waited.is_err(),
            "the deadline passed while a request was served"
        );
    }

    #[test]
    fn an_answer_starts_the_wait_for_the_next_head_again() {
        let deadline = HeaderDeadline::new(TIMEOUT);
        assert_eq!(deadline.due(), Some(deadline.opened + TIMEOUT));
        deadline.serving();
        assert_eq!(
            deadline.due(),
            None,
            "no deadline while a request is answered"
        );
        // Answered long after the connection's first due time: the next head is due a timeout
        // after the answer, not after the connection opened.
        let answered = deadline.opened + TIMEOUT * 3;
        deadline.answered_at(answered);
        assert_eq!(deadline.due(), Some(answered + TIMEOUT));
    }
}
