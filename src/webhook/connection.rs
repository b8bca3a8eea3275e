//! What a request's handler knows of the connection it came on: the client's address (for its
//! shares of the review slots and of the large bodies' budget) and the connection's deadline (told
//! while the handler waits for body bytes that do not come, so that such a connection can make room
//! at the connection cap). The listener sets it for each request as a task-local, which costs no
//! allocation per request (an extension in the request would).

use super::header_deadline::HeaderDeadline;
use hyper::body::{Body, Frame, SizeHint};
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Instant;

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

/// `body`, telling the connection's deadline from when the handler has been waiting for bytes of
/// it that have not come (from the first such wait on, for as long as it keeps waiting), and when
/// it is not (bytes came; the handler paused reading, as the large bodies' pace does; the body
/// ended or was dropped).
pub struct WatchedBody<B> {
    body: B,
    /// When the handler first waited for bytes of this body.
    first_wait: Option<Instant>,
    waiting: bool,
}

impl<B> WatchedBody<B> {
    pub fn new(body: B) -> Self {
        Self {
            body,
            first_wait: None,
            waiting: false,
        }
    }

    fn tell(&mut self, waiting: bool) {
        if self.waiting == waiting {
            return;
        }
        self.waiting = waiting;
        let since = waiting.then(|| *self.first_wait.get_or_insert_with(Instant::now));
        let _ = CONNECTION.try_with(|c| c.deadline.awaiting_body(since));
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
        self.tell(polled.is_pending());
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
        self.tell(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
            let mut body = WatchedBody::new(Slow(0));
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
            let mut body = WatchedBody::new(Slow(0));
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
}
