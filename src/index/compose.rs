//! The world of a downstream cluster, live: an [`Index`] kept as [`World::for_cluster`] of the
//! management cluster's index and the downstream cluster's own. Everything that reads an index (the
//! reconciler's rounds, the webhook) reads it unchanged. It is ready once both are.

use super::{Index, Watch};
use crate::world::World;
use std::sync::Arc;

/// Starts keeping `composed` as the world of `cluster`; the task ends when either source index is
/// gone, and is stopped by aborting it.
pub fn spawn(
    management: Arc<Index>,
    own: Arc<Index>,
    cluster: String,
) -> (Arc<Index>, tokio::task::JoinHandle<()>) {
    let composed = Arc::new(Index::default());
    let task = tokio::spawn(keep(management, own, cluster, composed.clone()));
    (composed, task)
}

async fn keep(management: Arc<Index>, own: Arc<Index>, cluster: String, composed: Arc<Index>) {
    let (mut management_changes, mut own_changes) = (management.subscribe(), own.subscribe());
    management.wait_synced().await;
    own.wait_synced().await;
    let mut unready: Vec<_> = Watch::ALL
        .into_iter()
        .map(|watch| composed.ready_handle(watch))
        .collect();
    loop {
        // Marked seen before reading, so that a change made meanwhile wakes the next pass.
        management_changes.borrow_and_update();
        own_changes.borrow_and_update();
        let (m, o) = (management.read(), own.read());
        composed.update(|world| *world = World::for_cluster(&m, &o, &cluster));
        unready.drain(..).for_each(|handle| handle.release());
        let changed = tokio::select! {
            changed = management_changes.changed() => changed,
            changed = own_changes.changed() => changed,
        };
        if changed.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{self, ProjectId};
    use crate::world::fixtures::*;
    use std::time::Duration;

    #[tokio::test]
    async fn the_composed_world_follows_both_sources_once_both_are_synced() {
        let (management, own) = (Arc::new(Index::default()), Arc::new(Index::default()));
        let (composed, _task) = spawn(management.clone(), own.clone(), "c-abc123".to_owned());
        management.update(|w| {
            project(w, "c-abc123", "p-vwxyz", "c-abc123-p-vwxyz");
        });
        management.mark_all_synced_for_tests();
        tokio::task::yield_now().await;
        assert!(!composed.is_synced(), "not before the downstream index is");
        own.mark_all_synced_for_tests();
        tokio::time::timeout(Duration::from_secs(5), composed.wait_synced())
            .await
            .expect("ready once both are");
        let project = ProjectId::new("c-abc123", "p-vwxyz");
        own.update(|w| namespace_in(w, "team-a", &project));
        management.update(|w| {
            add_secret(
                w,
                secret(
                    "c-abc123-p-vwxyz",
                    "test-secret",
                    &[(keys::PROJECT_SCOPED_LABEL, "p-vwxyz")],
                    &[],
                ),
            )
        });
        let mut changes = composed.subscribe();
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                let world = composed.read();
                if world.originals().count() == 1 && world.project_namespaces(&project).count() == 1
                {
                    break;
                }
                let _ = changes.changed().await;
            }
        })
        .await
        .expect("both changes composed");
    }
}
