//! A review's snapshot of the world, never freed on the webhook's threads.
//!
//! A review holds the world it is decided in ([`crate::index::Index::read`]) until it is answered.
//! When the index has moved on meanwhile, the review may hold the last reference to the world it
//! replaced; after a re-list that is the whole index (100,000 secrets' entries), and freeing it takes
//! milliseconds, which every review queued behind it on that thread would wait for. So the last
//! reference is handed to a blocking thread of low priority to drop.

use super::runtime;
use std::ops::Deref;
use std::sync::Arc;

/// An `Arc` whose last reference, if this one turns out to be it, is dropped off the caller's
/// thread (on the current tokio runtime's blocking pool; outside a runtime, here).
pub struct Released<T: Send + Sync + 'static>(Option<Arc<T>>);

impl<T: Send + Sync + 'static> Released<T> {
    pub fn new(shared: Arc<T>) -> Self {
        Self(Some(shared))
    }
}

impl<T: Send + Sync + 'static> Deref for Released<T> {
    type Target = T;

    fn deref(&self) -> &T {
        // Only `drop` takes it out.
        self.0
            .as_deref()
            .unwrap_or_else(|| unreachable!("taken only when dropped"))
    }
}

impl<T: Send + Sync + 'static> Drop for Released<T> {
    fn drop(&mut self) {
        // `into_inner` is the atomic "was this the last reference?": no other holder can drop
        // theirs in between and leave the freeing here.
        let Some(last) = self.0.take().and_then(Arc::into_inner) else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn_blocking(move || {
                    runtime::yield_to_small_reviews();
                    drop(last);
                });
            }
            Err(_) => drop(last),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::thread::ThreadId;

    /// Says on which thread it was dropped.
    struct Probe(mpsc::Sender<ThreadId>);

    impl Drop for Probe {
        fn drop(&mut self) {
            let _ = self.0.send(std::thread::current().id());
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn the_last_reference_is_dropped_off_the_reviews_thread() {
        let (tx, dropped) = mpsc::channel();
        let shared = Arc::new(Probe(tx));
        let other = Arc::clone(&shared);
        let review = Released::new(shared);

        // Another holder: nothing is freed when the review lets go.
        drop(review);
        assert!(dropped.try_recv().is_err());

        // The index moved on and the review held the last reference: freed, not here.
        let review = Released::new(other);
        let here = std::thread::current().id();
        drop(review);
        let on = tokio::task::spawn_blocking(move || {
            dropped.recv_timeout(std::time::Duration::from_secs(10))
        })
        .await
        .expect("joined")
        .expect("dropped");
        assert_ne!(on, here);
    }

    #[test]
    fn outside_a_runtime_it_is_dropped_where_it_is() {
        let (tx, dropped) = mpsc::channel();
        drop(Released::new(Arc::new(Probe(tx))));
        assert_eq!(dropped.try_recv(), Ok(std::thread::current().id()));
    }
}
