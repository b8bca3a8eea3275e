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
        let since = u64::try_from(self.opened.elapsed().as_nanos()).unwrap_or(SERVING - 1);
        self.waiting_since.store(since, Ordering::Relaxed);
    }

    /// Resolves once the connection has waited longer than the timeout for a request head.
    pub async fn passed(&self) {
        loop {
            let now = Instant::now();
            let due = match self.waiting_since.load(Ordering::Relaxed) {
                // Answering takes as long as it takes (the body and the look-ups have deadlines of
                // their own): look again later.
                SERVING => now + self.timeout,
                since => self.opened + Duration::from_nanos(since) + self.timeout,
            };
            if now >= due {
                return;
            }
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

    #[tokio::test]
    async fn an_answer_starts_the_wait_for_the_next_head_again() {
        let deadline = HeaderDeadline::new(TIMEOUT);
        let watched = Arc::clone(&deadline);
        let passed = tokio::spawn(async move {
            watched.passed().await;
            Instant::now()
        });
        // A request arrives within the timeout and is answered after it: the watch, asleep
        // until the first due time, must not end the connection then.
        tokio::time::sleep(TIMEOUT / 2).await;
        deadline.serving();
        tokio::time::sleep(TIMEOUT * 2).await;
        deadline.answered();
        let answered = Instant::now();
        let passed_at = passed.await.expect("the watch ends");
        assert!(passed_at >= answered + TIMEOUT);
    }
}
