//! Readiness (kubert's `initialized`): each watch holds a [`ReadyHandle`] until its first complete
//! list; the index is ready once none is held. A handle dropped unreleased (its watch ended before
//! listing) keeps the index unready: readiness means every watch has listed, never that one gave up.

use super::Watch;
use std::collections::BTreeSet;
use std::sync::Arc;
use tokio::sync::watch;

/// The watches still to deliver their first list.
#[derive(Debug)]
pub struct Readiness {
    pending: watch::Sender<BTreeSet<Watch>>,
}

impl Readiness {
    /// Not ready until each of `watches` has released its handle.
    pub fn new(watches: impl IntoIterator<Item = Watch>) -> Arc<Self> {
        Arc::new(Self {
            pending: watch::channel(watches.into_iter().collect()).0,
        })
    }

    /// The handle `watch` releases on its first list.
    pub fn handle(self: &Arc<Self>, watch: Watch) -> ReadyHandle {
        ReadyHandle {
            watch,
            readiness: self.clone(),
        }
    }

    pub fn is_ready(&self) -> bool {
        self.pending.borrow().is_empty()
    }

    /// The watches not listed yet, in [`Watch`] order.
    pub fn pending(&self) -> Vec<Watch> {
        self.pending.borrow().iter().copied().collect()
    }

    /// Resolves once every watch has listed.
    pub async fn wait(&self) {
        let mut rx = self.pending.subscribe();
        // The sender lives as long as `self`, so this cannot fail while we are borrowed.
        let _ = rx.wait_for(BTreeSet::is_empty).await;
    }
}

/// One watch's hold on readiness.
#[derive(Debug)]
#[must_use = "the index stays unready until the handle is released"]
pub struct ReadyHandle {
    watch: Watch,
    readiness: Arc<Readiness>,
}

impl ReadyHandle {
    pub fn watch(&self) -> Watch {
        self.watch
    }

    /// The watch has listed: it no longer holds readiness back.
    pub fn release(self) {
        self.readiness
            .pending
            .send_if_modified(|pending| pending.remove(&self.watch));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn waiters_wake_when_the_last_watch_lists() {
        let readiness = Readiness::new([Watch::Projects, Watch::Namespaces]);
        let projects = readiness.handle(Watch::Projects);
        let namespaces = readiness.handle(Watch::Namespaces);
        let waiter = tokio::spawn({
            let readiness = readiness.clone();
            async move { readiness.wait().await }
        });
        projects.release();
        assert_eq!(readiness.pending(), [Watch::Namespaces]);
        assert!(!readiness.is_ready());
        namespaces.release();
        assert!(readiness.is_ready());
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .expect("joined");
    }

    #[test]
    fn a_handle_dropped_unreleased_keeps_the_index_unready() {
        let readiness = Readiness::new([Watch::Projects]);
        drop(readiness.handle(Watch::Projects));
        assert!(!readiness.is_ready());
        assert_eq!(readiness.pending(), [Watch::Projects]);
    }

    #[test]
    fn releasing_twice_or_a_watch_not_waited_for_changes_nothing() {
        let readiness = Readiness::new([Watch::Projects, Watch::Namespaces]);
        readiness.handle(Watch::Projects).release();
        readiness.handle(Watch::Projects).release();
        readiness.handle(Watch::SecretNames).release();
        assert_eq!(readiness.pending(), [Watch::Namespaces]);
    }
}
