//! Per-action backoff: a write that keeps failing, or keeps waiting for something (a deletion held by
//! finalizers), is tried again later and later, doubling up to a cap, while every other action goes on
//! at once. An action that changes (its original was edited, the target was replaced) starts afresh,
//! and an action no longer planned is forgotten.

use crate::plan::{Action, ActionKind};
use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

/// The wait after the `failures`-th failure in a row: `base`, doubling with every failure, at most `cap`.
pub fn delay(base: Duration, failures: u32, cap: Duration) -> Duration {
    let doublings = failures.saturating_sub(1).min(31);
    base.saturating_mul(1 << doublings).min(cap)
}

/// What an action writes: its kind and target.
type Key = (ActionKind, String, String);

#[derive(Debug)]
struct Entry {
    fingerprint: u64,
    failures: u32,
    retry_at: Instant,
}

/// The actions in backoff.
#[derive(Debug, Default)]
pub struct Backoffs {
    entries: HashMap<Key, Entry>,
}

impl Backoffs {
    /// The planned actions that are due at `now`; the others are still backing off. Entries of
    /// actions no longer planned, or planned differently, are dropped.
    pub fn due(&mut self, planned: Vec<Action>, now: Instant) -> Vec<Action> {
        if self.entries.is_empty() {
            // The usual round: nothing backs off, and 100,000 planned actions need no keys.
            return planned;
        }
        let mut still_planned = HashSet::new();
        let due = planned
            .into_iter()
            .filter(|action| {
                let key = key(action);
                let Some(entry) = self.entries.get(&key) else {
                    return true;
                };
                if entry.fingerprint != fingerprint(action) {
                    self.entries.remove(&key);
                    return true;
                }
                let waiting = entry.retry_at > now;
                still_planned.insert(key);
                !waiting
            })
            .collect();
        self.entries.retain(|key, _| still_planned.contains(key));
        due
    }

    /// Records one more failure of `action`; returns how long it now waits.
    pub fn failed(
        &mut self,
        action: &Action,
        base: Duration,
        cap: Duration,
        now: Instant,
    ) -> Duration {
        let fingerprint = fingerprint(action);
        let entry = self.entries.entry(key(action)).or_insert(Entry {
            fingerprint,
            failures: 0,
            retry_at: now,
        });
        if entry.fingerprint != fingerprint {
            entry.fingerprint = fingerprint;
            entry.failures = 0;
        }
        entry.failures = entry.failures.saturating_add(1);
        let wait = delay(base, entry.failures, cap);
        entry.retry_at = now + wait;
        wait
    }

    /// `action` went through: it starts afresh if it is ever needed again.
    pub fn succeeded(&mut self, action: &Action) {
        self.entries.remove(&key(action));
    }

    /// When the first action in backoff is due again.
    pub fn next_retry(&self) -> Option<Instant> {
        self.entries.values().map(|e| e.retry_at).min()
    }

    /// How many actions are backing off.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn key(action: &Action) -> Key {
    (
        action.kind(),
        action.namespace().to_owned(),
        action.name().to_owned(),
    )
}

/// A hash of everything the action would write, so that a changed action is not held back. It never
/// leaves this process (it covers the copy's data).
fn fingerprint(action: &Action) -> u64 {
    let mut hasher = DefaultHasher::new();
    format!("{action:?}").hash(&mut hasher);
    match action {
        // Not the resourceVersion of an update, nor the uid of the secret a recreate or an
        // overwrite replaces: each write that a mutating webhook alters (a stamp that changes every
        // time, or a type or immutability the copy cannot keep) makes a new one, a recreate a new
        // uid too, and the backoff of that copy must hold all the same (else it is deleted and
        // created again every round). A stale version or uid is the precondition's to catch.
        Action::Create { copy }
        | Action::Overwrite { copy, .. }
        | Action::Recreate { copy, .. }
        | Action::Update { copy, .. } => serde_json::to_vec(&*copy.secret).ok().hash(&mut hasher),
        Action::Delete { uid, .. } => uid.hash(&mut hasher),
        Action::SetBackingNamespace {
            backing_namespace,
            create_namespace,
            ..
        } => (backing_namespace, create_namespace).hash(&mut hasher),
        Action::FixNamespaceLabel { label, .. } => label.hash(&mut hasher),
        Action::AddClusterLabel { cluster, .. } => cluster.hash(&mut hasher),
        Action::Conflict { .. } => {}
    }
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: Duration = Duration::from_secs(10);
    const CAP: Duration = Duration::from_secs(300);

    fn delete(uid: &str) -> Action {
        Action::Delete {
            namespace: "team-a".to_owned(),
            name: "db".to_owned(),
            uid: uid.to_owned(),
            origin: None,
        }
    }

    #[test]
    fn the_schedule_doubles_up_to_the_cap() {
        let secs: Vec<u64> = (1..=8).map(|n| delay(BASE, n, CAP).as_secs()).collect();
        assert_eq!(secs, [10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(delay(BASE, u32::MAX, CAP), CAP);
        assert_eq!(
            delay(Duration::from_secs(1), 1, CAP),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn a_failing_action_waits_and_others_do_not() {
        let now = Instant::now();
        let mut backoffs = Backoffs::default();
        assert_eq!(backoffs.failed(&delete("u1"), BASE, CAP, now), BASE);
        let other = Action::Delete {
            namespace: "team-b".to_owned(),
            name: "db".to_owned(),
            uid: "u2".to_owned(),
            origin: None,
        };
        let due = backoffs.due(vec![delete("u1"), other.clone()], now);
        assert_eq!(due, vec![other.clone()]);
        assert_eq!(backoffs.len(), 1);
        assert_eq!(backoffs.next_retry(), Some(now + BASE));
        // Due again once its time has come; a second failure doubles the wait.
        let later = now + BASE;
        assert_eq!(backoffs.due(vec![delete("u1")], later), vec![delete("u1")]);
        assert_eq!(backoffs.failed(&delete("u1"), BASE, CAP, later), 2 * BASE);
        // Success forgets it.
        backoffs.succeeded(&delete("u1"));
        assert!(backoffs.is_empty());
    }

    #[test]
    fn a_changed_or_unplanned_action_starts_afresh() {
        let now = Instant::now();
        let mut backoffs = Backoffs::default();
        backoffs.failed(&delete("u1"), BASE, CAP, now);
        // The target was replaced (another uid): the new action is due at once.
        assert_eq!(backoffs.due(vec![delete("u2")], now), vec![delete("u2")]);
        assert!(backoffs.is_empty());
        backoffs.failed(&delete("u2"), BASE, CAP, now);
        assert!(backoffs.due(Vec::new(), now).is_empty());
        assert!(
            backoffs.is_empty(),
            "an action no longer planned is forgotten"
        );
    }

    #[test]
    fn an_update_waits_whatever_version_the_copy_has_reached() {
        // A mutating webhook that stamps a new value on each write gives the copy a new
        // resourceVersion each time: the same update must still wait, or it loops.
        let update = |version: &str| {
            let mut copy = k8s_openapi::api::core::v1::Secret::default();
            copy.metadata.name = Some("db".to_owned());
            Action::Update {
                copy: crate::plan::PlacedCopy::new("team-a", std::sync::Arc::new(copy)),
                resource_version: version.to_owned(),
            }
        };
        let now = Instant::now();
        let mut backoffs = Backoffs::default();
        backoffs.failed(&update("41"), BASE, CAP, now);
        assert!(backoffs.due(vec![update("42")], now).is_empty());
    }

    #[test]
    fn a_recreate_or_overwrite_waits_whatever_uid_it_replaces() {
        // A copy the apiserver stores otherwise (a mutating policy sets `immutable`) is recreated:
        // each recreate gives it a new uid, and the next round's recreate of it must still wait,
        // or it is deleted and created again every round.
        let copy = || {
            let mut copy = k8s_openapi::api::core::v1::Secret::default();
            copy.metadata.name = Some("db".to_owned());
            crate::plan::PlacedCopy::new("team-a", std::sync::Arc::new(copy))
        };
        let recreate = |uid: &str| Action::Recreate {
            copy: copy(),
            existing_uid: uid.to_owned(),
        };
        let overwrite = |uid: &str| Action::Overwrite {
            copy: copy(),
            existing_uid: uid.to_owned(),
            label: None,
        };
        let now = Instant::now();
        let mut backoffs = Backoffs::default();
        backoffs.failed(&recreate("u1"), BASE, CAP, now);
        backoffs.failed(&overwrite("u1"), BASE, CAP, now);
        assert!(
            backoffs
                .due(vec![recreate("u2"), overwrite("u2")], now)
                .is_empty()
        );
        assert_eq!(
            backoffs.failed(&recreate("u2"), BASE, CAP, now + BASE),
            2 * BASE
        );
    }
}
