//! The index: the [`World`] kept current by four watches, published as immutable snapshots.
//!
//! [`World`] is the pure data (what the cluster looks like, as far as we know); [`Index`] is that
//! world live: the current snapshot, a change counter the reconciler wakes on, and the readiness of
//! each [`Watch`]. Readers never wait: a read is an atomic load of the current snapshot, which
//! stays valid as long as the reader holds it. Writers (the watches, revocation) build the next
//! snapshot from the current one and publish it; only they wait for each other. How a watch event
//! changes the world is [`Indexed`], implemented once per watched resource (`resources.rs`); the
//! watches themselves are in `watches.rs`, readiness in `ready.rs`.

pub mod compose;
mod ready;
mod resources;
mod watches;

pub use ready::{Readiness, ReadyHandle};
pub use resources::{Indexed, ScopedSecret, SecretName};
pub use watches::{PROJECTS_MAX_BACKOFF, spawn, spawn_downstream};

use crate::world::World;
use arc_swap::ArcSwap;
use std::fmt;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// The four watches that feed the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Watch {
    /// Projects, when the CRD is served.
    Projects,
    /// Every namespace.
    Namespaces,
    /// The metadata of every secret (the name index; no secret data).
    SecretNames,
    /// Secrets carrying the project-scoped label: originals whole, copies without their data.
    ScopedSecrets,
}

impl Watch {
    pub const ALL: [Watch; 4] = [
        Watch::Projects,
        Watch::Namespaces,
        Watch::SecretNames,
        Watch::ScopedSecrets,
    ];

    /// The name used in logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::Projects => "projects",
            Self::Namespaces => "namespaces",
            Self::SecretNames => "secret-names",
            Self::ScopedSecrets => "scoped-secrets",
        }
    }
}

impl fmt::Display for Watch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The current world snapshot, with a change counter and the readiness of every watch.
pub struct Index {
    world: ArcSwap<World>,
    /// Serialises writers: each builds on the snapshot the previous one published.
    writer: Mutex<()>,
    changes: watch::Sender<u64>,
    readiness: Arc<Readiness>,
}

impl Default for Index {
    fn default() -> Self {
        Self::new(World::default())
    }
}

impl Index {
    /// An index holding `world`, not ready until every watch has released its [`ReadyHandle`].
    pub fn new(world: World) -> Self {
        Self {
            world: ArcSwap::from_pointee(world),
            writer: Mutex::new(()),
            changes: watch::channel(0).0,
            readiness: Readiness::new(Watch::ALL),
        }
    }

    /// The current snapshot: it never changes, never blocks a writer, and is never blocked by one.
    /// Take one per decision (a review, a round) so that every part of it sees the same world.
    pub fn read(&self) -> Arc<World> {
        self.world.load_full()
    }

    /// Applies a change to a copy of the current world (sharing everything it does not touch) and
    /// publishes it, then tells subscribers. Readers keep the snapshot they hold.
    pub fn update(&self, change: impl FnOnce(&mut World)) {
        {
            // A writer that panicked left no half-built snapshot behind: the lock guards nothing
            // but the order of writers.
            let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
            let mut next = World::clone(&self.world.load());
            change(&mut next);
            self.world.store(Arc::new(next));
        }
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Bumped on every applied watch event.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// The hold `watch` has on readiness, for the task that feeds it to release on its first list.
    pub fn ready_handle(&self, watch: Watch) -> ReadyHandle {
        self.readiness.handle(watch)
    }

    /// Whether every watch has delivered its first list.
    pub fn is_synced(&self) -> bool {
        self.readiness.is_ready()
    }

    /// The watches that have not delivered their first list yet.
    pub fn pending(&self) -> Vec<Watch> {
        self.readiness.pending()
    }

    /// Resolves once every watch has delivered its first list.
    pub async fn wait_synced(&self) {
        self.readiness.wait().await;
    }

    #[cfg(test)]
    pub fn mark_all_synced_for_tests(&self) {
        Watch::ALL
            .into_iter()
            .for_each(|w| self.ready_handle(w).release());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_watch_has_its_own_name() {
        let names: std::collections::BTreeSet<_> = Watch::ALL.iter().map(|w| w.name()).collect();
        assert_eq!(names.len(), Watch::ALL.len());
        assert_eq!(Watch::SecretNames.to_string(), "secret-names");
    }

    #[test]
    fn updates_are_counted_for_subscribers() {
        let index = Index::default();
        let mut changes = index.subscribe();
        assert!(!changes.has_changed().expect("sender alive"));
        index.update(|w| w.projects_installed = true);
        assert!(changes.has_changed().expect("sender alive"));
        assert_eq!(*changes.borrow_and_update(), 1);
        assert!(index.read().projects_installed);
    }

    #[test]
    fn a_snapshot_never_changes_and_never_holds_up_a_writer() {
        let index = Index::default();
        let before = index.read();
        // A reader holding a snapshot (a plan in progress) does not block the next update.
        index.update(|w| w.projects_installed = true);
        assert!(!before.projects_installed, "a held snapshot is immutable");
        assert!(index.read().projects_installed);
    }

    #[test]
    fn a_reader_never_waits_for_a_writer() {
        let index = Arc::new(Index::default());
        let (entered, wait_entered) = std::sync::mpsc::channel();
        let (release, wait_release) = std::sync::mpsc::channel::<()>();
        let writer = {
            let index = index.clone();
            std::thread::spawn(move || {
                index.update(|w| {
                    entered.send(()).expect("test alive");
                    // Stands for a long re-list being applied.
                    wait_release.recv().expect("test alive");
                    w.projects_installed = true;
                })
            })
        };
        wait_entered.recv().expect("the writer started");
        // With the writer mid-update, a read answers at once with the previous world.
        assert!(!index.read().projects_installed);
        release.send(()).expect("writer alive");
        writer.join().expect("the writer ends");
        assert!(index.read().projects_installed);
    }

    #[test]
    fn the_index_is_ready_once_every_watch_released_its_handle() {
        let index = Index::default();
        for watch in Watch::ALL {
            assert!(!index.is_synced());
            assert!(index.pending().contains(&watch));
            index.ready_handle(watch).release();
        }
        assert!(index.is_synced());
        assert!(index.pending().is_empty());
    }
}
