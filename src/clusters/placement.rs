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

/// A registered cluster: the seat of its current worker, and its state.
#[derive(Debug)]
struct Registered {
    seat: Seat,
    state: ClusterState,
}

/// Which of a cluster's workers is its current one: a worker reports, and publishes its world,
/// under the seat [`Placement::register`] gave it, and is not heard once it is no longer the
/// cluster's. An aborted worker in the middle of a poll on another thread still finishes that
/// poll: its last report or world must neither bring a forgotten cluster back (keeping its
/// projects "in place", never served in the management cluster again) nor overwrite what the
/// worker that replaced it (rotated credentials) says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seat(u64);

/// The clusters' states, with a change counter the management cluster's round wakes on.
pub struct Placement {
    clusters: Mutex<BTreeMap<String, Registered>>,
    seats: std::sync::atomic::AtomicU64,
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
            seats: Default::default(),
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
    /// (their condition says it is being listed). The worker's seat is returned: only it is heard
    /// from now on. A cluster registered again (rotated credentials) keeps what is known of it,
    /// but not its world, which the new worker publishes once it has listed the cluster (one a
    /// replaced worker published on its way out would never change again).
    pub fn register(&self, cluster: &str) -> Seat {
        use std::sync::atomic::Ordering;
        let seat = Seat(self.seats.fetch_add(1, Ordering::Relaxed));
        let new = {
            let mut clusters = lock(&self.clusters);
            match clusters.get_mut(cluster) {
                Some(registered) => {
                    registered.seat = seat;
                    lock(&self.worlds).remove(cluster);
                    false
                }
                None => {
                    let state = ClusterState::default();
                    clusters.insert(cluster.to_owned(), Registered { seat, state });
                    true
                }
            }
        };
        if new {
            self.changes.send_modify(|n| *n = n.wrapping_add(1));
        }
        seat
    }

    /// A round of `cluster`'s worker ended with this progress.
    pub fn report(&self, cluster: &str, seat: Seat, projects: BTreeMap<ProjectId, Progress>) {
        self.change(cluster, seat, |state| {
            state.down = None;
            state.listed = true;
            state.projects = projects;
        });
    }

    /// `cluster` cannot be served; its copies stay where they are.
    pub fn report_down(&self, cluster: &str, seat: Seat, reason: &'static str, message: String) {
        self.change(cluster, seat, |state| {
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
    /// Taken only from the cluster's current worker.
    pub fn set_world(&self, cluster: &str, seat: Seat, world: Option<Arc<Index>>) {
        let clusters = lock(&self.clusters);
        if clusters.get(cluster).is_none_or(|r| r.seat != seat) {
            return;
        }
        let mut worlds = lock(&self.worlds);
        match world {
            Some(world) => worlds.insert(cluster.to_owned(), world),
            None => worlds.remove(cluster),
        };
    }

    /// `cluster`'s worker is stopped: nobody may read its world as current.
    pub fn drop_world(&self, cluster: &str) {
        let _clusters = lock(&self.clusters);
        lock(&self.worlds).remove(cluster);
    }

    /// The composed world of `cluster`, if it answers and has been listed.
    pub fn world(&self, cluster: &str) -> Option<Arc<Index>> {
        lock(&self.worlds).get(cluster).cloned()
    }

    /// `cluster` is no longer registered: its projects are served in the management cluster again.
    pub fn forget(&self, cluster: &str) {
        let removed = {
            let mut clusters = lock(&self.clusters);
            lock(&self.worlds).remove(cluster);
            clusters.remove(cluster).is_some()
        };
        if removed {
            self.changes.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// Changes a registered cluster's state, when `seat` is still its worker's ([`Seat`]).
    fn change(&self, cluster: &str, seat: Seat, change: impl FnOnce(&mut ClusterState)) {
        let changed = {
            let mut clusters = lock(&self.clusters);
            let Some(registered) = clusters.get_mut(cluster).filter(|r| r.seat == seat) else {
                return;
            };
            let before = registered.state.clone();
            change(&mut registered.state);
            registered.state != before
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
                .all(|r| r.state.listed || r.state.down.is_some())
    }

    /// The projects whose copies their own cluster has in place: the management cluster lets go of
    /// them. A project stays in place while its cluster is down (its copies are still there).
    pub fn in_place(&self) -> Arc<BTreeSet<ProjectId>> {
        Arc::new(
            lock(&self.clusters)
                .values()
                .flat_map(|r| r.state.projects.iter())
                .filter(|(_, progress)| progress.in_place())
                .map(|(id, _)| id.clone())
                .collect(),
        )
    }

    /// Whether `project` is one of [`Placement::in_place`], without collecting them all (asked per
    /// review by the webhook).
    pub fn is_in_place(&self, project: &ProjectId) -> bool {
        lock(&self.clusters).values().any(|r| {
            r.state
                .projects
                .get(project)
                .is_some_and(Progress::in_place)
        })
    }

    /// What is known of `cluster`, if it is registered and its worker has started.
    pub fn cluster(&self, cluster: &str) -> Option<ClusterState> {
        lock(&self.clusters).get(cluster).map(|r| r.state.clone())
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
        let seat = placement.register("c-abc123");
        placement.report("c-abc123", seat, BTreeMap::from([(p.clone(), progress(2))]));
        assert!(placement.in_place().is_empty());
        placement.report("c-abc123", seat, BTreeMap::from([(p.clone(), progress(0))]));
        assert!(placement.in_place().contains(&p));
        assert!(placement.is_in_place(&p));
        assert!(changes.has_changed().expect("alive"));
        changes.borrow_and_update();
        // Down: the copies are still there, and saying so twice is no change.
        placement.report_down(
            "c-abc123",
            seat,
            "ClusterUnreachable",
            "no answer".to_owned(),
        );
        assert!(changes.has_changed().expect("alive"));
        changes.borrow_and_update();
        placement.report_down(
            "c-abc123",
            seat,
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
    /// thread still ends it: its report and world, come after `forget`, are not taken; nor are an
    /// replaced worker's (rotated credentials), which would overwrite its successor's.
    #[test]
    fn only_the_current_worker_of_a_registered_cluster_is_heard() {
        let placement = Placement::default();
        let p = ProjectId::new("c-abc123", "p-vwxyz");
        let world = || Some(Arc::new(Index::default()));
        let first = placement.register("c-abc123");
        placement.report(
            "c-abc123",
            first,
            BTreeMap::from([(p.clone(), progress(0))]),
        );
        placement.set_world("c-abc123", first, world());
        assert!(placement.world("c-abc123").is_some());

        // Rotated credentials: the old worker is stopped and its world dropped, but it publishes
        // one more before the new worker is registered: not kept either.
        placement.drop_world("c-abc123");
        placement.set_world("c-abc123", first, world());
        let second = placement.register("c-abc123");
        assert!(placement.world("c-abc123").is_none());
        placement.set_world("c-abc123", second, world());
        // The old one's last words change nothing.
        assert!(placement.in_place().contains(&p), "what is known is kept");
        placement.report(
            "c-abc123",
            first,
            BTreeMap::from([(p.clone(), progress(3))]),
        );
        placement.report_down("c-abc123", first, "ClusterUnreachable", "old".to_owned());
        placement.set_world("c-abc123", first, None);
        assert!(placement.in_place().contains(&p));
        assert_eq!(placement.cluster("c-abc123").and_then(|c| c.down), None);
        assert!(placement.world("c-abc123").is_some());
        placement.report(
            "c-abc123",
            second,
            BTreeMap::from([(p.clone(), progress(1))]),
        );
        assert!(
            placement.in_place().is_empty(),
            "the current worker is heard"
        );

        // Removed: neither worker brings it back.
        placement.forget("c-abc123");
        for seat in [first, second] {
            placement.report("c-abc123", seat, BTreeMap::from([(p.clone(), progress(0))]));
            placement.report_down("c-abc123", seat, "ClusterUnreachable", "late".to_owned());
            placement.set_world("c-abc123", seat, world());
        }
        assert!(placement.in_place().is_empty());
        assert_eq!(placement.cluster("c-abc123"), None);
        assert!(placement.world("c-abc123").is_none());
    }

    #[test]
    fn settled_once_the_registrations_are_read_and_every_cluster_listed_or_down() {
        let placement = Placement::default();
        assert!(!placement.settled(), "registrations not read yet");
        let one = placement.register("c-one");
        let two = placement.register("c-two");
        placement.registrations_read();
        assert!(!placement.settled(), "neither listed");
        placement.report("c-one", one, BTreeMap::new());
        assert!(!placement.settled(), "c-two still being listed");
        placement.report_down("c-two", two, "ClusterUnreachable", "no answer".to_owned());
        assert!(placement.settled());
    }
}
