//! Where each project's copies are kept, and how far they are: shared by the workers that keep
//! them (one per cluster) and the readers that act on it. The management cluster's round lets go of
//! a project only once its own cluster reports the copies in place ([`Placement::in_place`]); the
//! Project's condition and `plan` say the same.

use crate::index::Index;
use crate::keys::ProjectId;
use crate::plan::Progress;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// A downstream cluster as its worker last saw it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClusterState {
    /// `None` while connected; else why not, and since when (RFC 3339).
    pub down: Option<Down>,
    /// The progress of each of its projects at its last round (kept while it is down: the copies
    /// written then are still there).
    pub projects: BTreeMap<ProjectId, Progress>,
    /// Whether it has been listed once (its progress is known).
    pub listed: bool,
}

/// Why a cluster is not served right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Down {
    /// `ClusterUnreachable` or `ClusterCredentialsRefused`.
    pub reason: &'static str,
    pub message: String,
    pub since: String,
}

/// The clusters' states, with a change counter the management cluster's round wakes on.
pub struct Placement {
    clusters: Mutex<BTreeMap<String, ClusterState>>,
    /// Whether the registrations have been read once.
    registrations_read: std::sync::atomic::AtomicBool,
    /// Each listed, answering cluster's composed world (see [`crate::index::compose`]).
    worlds: Mutex<BTreeMap<String, Arc<Index>>>,
    changes: watch::Sender<u64>,
}

impl std::fmt::Debug for Placement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Placement")
            .field("clusters", &*lock(&self.clusters))
            .finish_non_exhaustive()
    }
}

impl Default for Placement {
    fn default() -> Self {
        Self {
            clusters: Mutex::default(),
            registrations_read: Default::default(),
            worlds: Mutex::default(),
            changes: watch::channel(0).0,
        }
    }
}

impl Placement {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// `cluster` is registered and its worker starting: its projects are served there from now on
    /// (their condition says it is being listed). Only a registered cluster's worker is heard. A
    /// cluster registered again (rotated credentials) keeps what is known of it.
    pub fn register(&self, cluster: &str) {
        let new = {
            let mut clusters = lock(&self.clusters);
            let new = !clusters.contains_key(cluster);
            clusters.entry(cluster.to_owned()).or_default();
            new
        };
        if new {
            self.changes.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// A round of `cluster`'s worker ended with this progress.
    pub fn report(&self, cluster: &str, projects: BTreeMap<ProjectId, Progress>) {
        self.change(cluster, |state| {
            state.down = None;
            state.listed = true;
            state.projects = projects;
        });
    }

    /// `cluster` cannot be served; its copies stay where they are.
    pub fn report_down(&self, cluster: &str, reason: &'static str, message: String) {
        self.change(cluster, |state| {
            if state.down.as_ref().is_some_and(|d| d.reason == reason) {
                return;
            }
            state.down = Some(Down {
                reason,
                message,
                since: now_seconds(),
            });
        });
    }

    /// `cluster`'s composed world while it answers and has been listed; `None` when it does not.
    /// A world of a cluster no longer registered is not taken (see [`Placement::change`]).
    pub fn set_world(&self, cluster: &str, world: Option<Arc<Index>>) {
        let clusters = lock(&self.clusters);
        let mut worlds = lock(&self.worlds);
        match world {
            Some(world) if clusters.contains_key(cluster) => {
                worlds.insert(cluster.to_owned(), world)
            }
            _ => worlds.remove(cluster),
        };
    }

    /// The composed world of `cluster`, if it answers and has been listed.
    pub fn world(&self, cluster: &str) -> Option<Arc<Index>> {
        lock(&self.worlds).get(cluster).cloned()
    }

    /// `cluster` is no longer registered: its projects are served in the management cluster again.
    pub fn forget(&self, cluster: &str) {
        self.set_world(cluster, None);
        let removed = lock(&self.clusters).remove(cluster).is_some();
        if removed {
            self.changes.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// Changes a registered cluster's state. A cluster forgotten is not brought back: its worker is
    /// aborted, but one in the middle of a poll on another thread still finishes it, and its last
    /// report would otherwise keep its projects "in place" (never served here again) until a
    /// restart.
    fn change(&self, cluster: &str, change: impl FnOnce(&mut ClusterState)) {
        let changed = {
            let mut clusters = lock(&self.clusters);
            let Some(state) = clusters.get_mut(cluster) else {
                return;
            };
            let before = state.clone();
            change(state);
            *state != before
        };
        if changed {
            self.changes.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// The registrations have been read once: every registered cluster is [`Placement::register`]ed.
    pub fn registrations_read(&self) {
        use std::sync::atomic::Ordering;
        if !self.registrations_read.swap(true, Ordering::Relaxed) {
            self.changes.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// Whether where every project is served is known: the registrations have been read, and each
    /// registered cluster has been listed or found down. Until then the management cluster's round
    /// waits (bounded), so that a restart does not hand a moved project's copies back to it for the
    /// moment its cluster takes to list.
    pub fn settled(&self) -> bool {
        self.registrations_read
            .load(std::sync::atomic::Ordering::Relaxed)
            && lock(&self.clusters)
                .values()
                .all(|state| state.listed || state.down.is_some())
    }

    /// The projects whose copies their own cluster has in place: the management cluster lets go of
    /// them. A project stays in place while its cluster is down (its copies are still there).
    pub fn in_place(&self) -> Arc<BTreeSet<ProjectId>> {
        Arc::new(
            lock(&self.clusters)
                .values()
                .flat_map(|state| state.projects.iter())
                .filter(|(_, progress)| progress.in_place())
                .map(|(id, _)| id.clone())
                .collect(),
        )
    }

    /// What is known of `cluster`, if it is registered and its worker has started.
    pub fn cluster(&self, cluster: &str) -> Option<ClusterState> {
        lock(&self.clusters).get(cluster).cloned()
    }

    /// Bumped on every change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}

/// Now, in RFC 3339 to the second.
fn now_seconds() -> String {
    use k8s_openapi::jiff::Timestamp;
    let now = Timestamp::now().as_second();
    Timestamp::from_second(now)
        .unwrap_or(Timestamp::UNIX_EPOCH)
        .to_string()
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(pending: usize) -> Progress {
        Progress {
            pending,
            conflicts: 0,
        }
    }

    #[test]
    fn a_project_is_let_go_once_in_place_and_taken_back_when_its_cluster_is_forgotten() {
        let placement = Placement::default();
        let mut changes = placement.subscribe();
        let p = ProjectId::new("c-abc123", "p-vwxyz");
        placement.register("c-abc123");
        placement.report("c-abc123", BTreeMap::from([(p.clone(), progress(2))]));
        assert!(placement.in_place().is_empty());
        placement.report("c-abc123", BTreeMap::from([(p.clone(), progress(0))]));
        assert!(placement.in_place().contains(&p));
        assert!(changes.has_changed().expect("alive"));
        changes.borrow_and_update();
        // Down: the copies are still there, and saying so twice is no change.
        placement.report_down("c-abc123", "ClusterUnreachable", "no answer".to_owned());
        assert!(changes.has_changed().expect("alive"));
        changes.borrow_and_update();
        placement.report_down(
            "c-abc123",
            "ClusterUnreachable",
            "still no answer".to_owned(),
        );
        assert!(!changes.has_changed().expect("alive"));
        assert!(placement.in_place().contains(&p));
        placement.forget("c-abc123");
        assert!(placement.in_place().is_empty());
        assert_eq!(placement.cluster("c-abc123"), None);
    }

    /// A removed registration's worker is aborted, but one in the middle of a round on another
    /// thread still ends it: its report and world, come after `forget`, are not taken.
    #[test]
    fn a_forgotten_clusters_late_report_and_world_are_not_taken() {
        let placement = Placement::default();
        let p = ProjectId::new("c-abc123", "p-vwxyz");
        placement.register("c-abc123");
        placement.report("c-abc123", BTreeMap::from([(p.clone(), progress(0))]));
        placement.forget("c-abc123");
        placement.report("c-abc123", BTreeMap::from([(p.clone(), progress(0))]));
        placement.set_world("c-abc123", Some(Arc::new(Index::default())));
        placement.report_down("c-abc123", "ClusterUnreachable", "no answer".to_owned());
        assert!(placement.in_place().is_empty());
        assert_eq!(placement.cluster("c-abc123"), None);
        assert!(placement.world("c-abc123").is_none());
        // Registered again with rotated credentials: what is known of it is kept.
        placement.register("c-abc123");
        placement.report("c-abc123", BTreeMap::from([(p.clone(), progress(0))]));
        placement.register("c-abc123");
        assert!(placement.in_place().contains(&p));
    }

    #[test]
    fn settled_once_the_registrations_are_read_and_every_cluster_listed_or_down() {
        let placement = Placement::default();
        assert!(!placement.settled(), "registrations not read yet");
        placement.register("c-one");
        placement.register("c-two");
        placement.registrations_read();
        assert!(!placement.settled(), "neither listed");
        placement.report("c-one", BTreeMap::new());
        assert!(!placement.settled(), "c-two still being listed");
        placement.report_down("c-two", "ClusterUnreachable", "no answer".to_owned());
        assert!(placement.settled());
    }
}
