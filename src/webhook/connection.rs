//! What a request's handler knows of the connection it came on: the client's address (for its
//! shares of the review slots and of the large bodies' budget) and the connection's deadline (told
//! how the request's body is coming while the handler waits for it, so that a connection whose
//! body has stalled can make room at the caps). The listener sets it for each request as a
//! task-local, which costs no allocation per request (an extension in the request would).

use super::body_wait::{self, BodyWait};
use super::header_deadline::HeaderDeadline;
use hyper::body::{Body, Buf, Frame, SizeHint};
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// The connection a request came on.
pub(crate) struct Connection {
    pub address: IpAddr,
    pub deadline: Arc<HeaderDeadline>,
}

tokio::task_local! {
    static CONNECTION: Connection;
}

/// Serves `answer` (a request's answer) knowing `connection`.
pub(crate) fn serving<F: Future>(
    connection: Connection,
    answer: F,
) -> impl Future<Output = F::Output> {
    CONNECTION.scope(connection, answer)
}

/// The address of the client whose request is being answered; `None` outside the listener (the
/// handler called directly, as in tests of the pipeline).
pub fn client_address() -> Option<IpAddr> {
    CONNECTION.try_with(|c| c.address).ok()
}

/// The deadline of the connection whose request is being answered (see [`client_address`]).
pub(crate) fn deadline() -> Option<Weak<HeaderDeadline>> {
    CONNECTION.try_with(|c| Arc::downgrade(&c.deadline)).ok()
}

/// `body`, telling the connection's deadline how it is coming ([`BodyWait`]) once the handler has
/// had to wait for its bytes: from then on, when it waits for bytes that have not come, and when
/// it is not waiting (bytes came; the handler paused reading, as the large bodies' pace does; the
/// body ended or was dropped). A body that is whole before the handler ever waits (an ordinary
/// review, sent with its head) tells nothing and reads no clock. A large body's `lagged` flag is
/// set when, at the end of a wait, it has been waited for at least
/// [`body_wait::GRACE_WHEN_REMEMBERED`] and is behind its course, or when it is dropped unfinished
/// behind its course: its address is then remembered ([`crate::webhook::stalled_bodies`]).
pub struct WatchedBody<B> {
    body: B,
    wait: BodyWait,
    /// Whether the deadline has been told of this body (it has been waited for).
    told: bool,
    lagged: Option<Arc<AtomicBool>>,
    /// Whether the body has ended whole.
    ended: bool,
}

impl<B> WatchedBody<B> {
    /// `body`, expected to have `expected` bytes (declared, or the most allowed).
    pub fn new(body: B, expected: usize, lagged: Option<Arc<AtomicBool>>) -> Self {
        Self {
            body,
            wait: BodyWait::new(expected),
            told: false,
            lagged,
            ended: false,
        }
    }

    fn tell(&mut self, wait: Option<BodyWait>) {
        self.told = wait.is_some();
        let _ = CONNECTION.try_with(|c| c.deadline.body_wait(wait));
    }

    /// Sets the `lagged` flag if the body has been waited for `waited`, at least `judged_after`,
    /// and is behind its course.
    fn judge(&self, waited: Duration, judged_after: Duration) {
        if let Some(lagged) = &self.lagged
            && waited >= judged_after
            && self.wait.behind(waited)
        {
            lagged.store(true, Ordering::Relaxed);
        }
    }
}

impl<B: Body + Unpin> Body for WatchedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        // A wait that ends is judged as the body stood at its end, before what came.
        if polled.is_ready()
            && let Some(since) = self.wait.waiting_since.take()
        {
            self.wait.waited += since.elapsed();
            self.judge(self.wait.waited, body_wait::GRACE_WHEN_REMEMBERED);
        }
        match &polled {
            Poll::Pending => {
                if self.wait.waiting_since.is_none() {
                    self.wait.waiting_since = Some(Instant::now());
                    let wait = self.wait;
                    self.tell(Some(wait));
                }
            }
            Poll::Ready(Some(Ok(frame))) => {
                let bytes = frame.data_ref().map_or(0, Buf::remaining);
                self.wait.received = self.wait.received.saturating_add(bytes);
                if self.told {
                    let wait = self.wait;
                    self.tell(Some(wait));
                }
            }
            Poll::Ready(ended) => {
                // An error (the connection closed mid-body) leaves it unfinished.
                self.ended = ended.is_none();
                if self.told {
                    self.tell(None);
                }
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl<B> Drop for WatchedBody<B> {
    fn drop(&mut self) {
        if !self.ended {
            // Dropped unfinished (closed, cut, past its deadline): however short its wait.
            self.judge(self.wait.waited_by(Instant::now()), Duration::ZERO);
        }
        if self.told {
            self.tell(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body that has nothing yet, then one frame, then ends.
    struct Slow(u8);

    impl Body for Slow {
        type Data = hyper::body::Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
            self.0 += 1;
            match self.0 {
                1 => Poll::Pending,
                2 => Poll::Ready(Some(Ok(Frame::data(hyper::body::Bytes::from_static(
                    b"{}",
                ))))),
                _ => Poll::Ready(None),
            }
        }
    }

    fn from_ten_0_0_1(deadline: &Arc<HeaderDeadline>) -> Connection {
        Connection {
            address: IpAddr::from([10, 0, 0, 1]),
            deadline: Arc::clone(deadline),
        }
    }

    #[tokio::test]
    async fn the_deadline_hears_while_the_handler_waits_for_body_bytes() {
        let deadline = HeaderDeadline::new(Duration::from_secs(10), Duration::from_secs(10));
        let connection = from_ten_0_0_1(&deadline);
        serving(connection, async {
            assert_eq!(client_address(), Some(IpAddr::from([10, 0, 0, 1])));
            deadline.serving();
            let mut body = WatchedBody::new(Slow(0), 2, None);
            let waker = futures::task::noop_waker();
            let mut cx = Context::from_waker(&waker);
            assert!(Pin::new(&mut body).poll_frame(&mut cx).is_pending());
            assert!(deadline.awaits_body(), "waiting for bytes");
            assert!(Pin::new(&mut body).poll_frame(&mut cx).is_ready());
            assert!(!deadline.awaits_body(), "bytes came");
            drop(body);
            assert!(!deadline.awaits_body());
        })
        .await;
        assert_eq!(client_address(), None, "outside a request");
    }

    #[tokio::test]
    async fn a_body_dropped_while_waiting_is_no_longer_awaited() {
        let deadline = HeaderDeadline::new(Duration::from_secs(10), Duration::from_secs(10));
        let connection = from_ten_0_0_1(&deadline);
        serving(connection, async {
            deadline.serving();
            let mut body = WatchedBody::new(Slow(0), 2, None);
            let waker = futures::task::noop_waker();
            assert!(
                Pin::new(&mut body)
                    .poll_frame(&mut Context::from_waker(&waker))
                    .is_pending()
            );
            drop(body);
            assert!(!deadline.awaits_body());
        })
        .await;
    }

    #[tokio::test]
    async fn a_body_dropped_behind_its_course_is_marked_and_one_whole_at_once_is_not() {
        let deadline = HeaderDeadline::new(Duration::from_secs(10), Duration::from_secs(10));
        serving(from_ten_0_0_1(&deadline), async {
            deadline.serving();
            let waker = futures::task::noop_waker();
            let mut cx = Context::from_waker(&waker);
            let lagged = Arc::new(AtomicBool::new(false));
            let mut body = WatchedBody::new(Slow(0), 2, Some(Arc::clone(&lagged)));
            assert!(Pin::new(&mut body).poll_frame(&mut cx).is_pending());
            // Some time waited, nothing came: behind its course however short the wait.
            tokio::time::sleep(Duration::from_millis(2)).await;
            drop(body);
            assert!(lagged.load(Ordering::Relaxed), "dropped unfinished, behind");
            let whole = Arc::new(AtomicBool::new(false));
            let mut body = WatchedBody::new(Slow(1), 2, Some(Arc::clone(&whole)));
            while let Poll::Ready(Some(_)) = Pin::new(&mut body).poll_frame(&mut cx) {}
            drop(body);
            assert!(
                !whole.load(Ordering::Relaxed),
                "whole before it was waited for"
            );
        })
        .await;
    }
}
