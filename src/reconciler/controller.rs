//! The level-triggered loop: whenever the index changes (debounced), or periodically, plan from the
//! whole world and execute the actions, while this instance leads. A converged world plans nothing,
//! so it costs no writes.

use super::apply::{Applier, Outcome};
use super::events::Events;
use super::metrics::ReconcilerMetrics;
use super::{Config, lease};
use crate::plan::{self, Action, ActionKind};
use crate::watch::Index;
use crate::world::World;
use futures::StreamExt;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// Everything a round needs, shared by the concurrent actions.
struct Context {
    applier: Applier,
    events: Events,
    metrics: ReconcilerMetrics,
    cfg: Config,
    /// Conflicts already announced, so a lasting conflict makes one Event, not one per round.
    announced_conflicts: Mutex<HashSet<String>>,
}

/// When to plan again after a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Next {
    /// On the next change, or at the periodic resync.
    Idle,
    /// After an error: not before the backoff.
    Backoff,
    /// Soon: an action was put off (stale cache, lost race).
    Soon,
}

/// Runs the reconciler until `shutdown` turns true: leader election, then the loop while leading.
/// On shutdown it stops writing, and the lease is released before this returns.
pub async fn run(
    client: kube::Client,
    index: Arc<Index>,
    cfg: Config,
    metrics: ReconcilerMetrics,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let (leading_tx, leading) = watch::channel(false);
    let (done_tx, mut done) = watch::channel(false);
    let writes_done = async move {
        // Also resolves if the loop is gone (sender dropped).
        let _ = done.wait_for(|done| *done).await;
    };
    let elector = tokio::spawn(lease::run(
        client.clone(),
        cfg.lease.clone(),
        leading_tx,
        shutdown.clone(),
        writes_done,
        metrics.clone(),
    ));
    let ctx = Context {
        applier: Applier::new(client.clone(), leading.clone()),
        events: Events::new(client, &cfg.lease.identity),
        metrics,
        cfg,
        announced_conflicts: Mutex::default(),
    };
    reconcile_until_shutdown(&ctx, &index, leading, shutdown).await;
    // The round in flight has ended: the lease may go to a successor.
    let _ = done_tx.send(true);
    elector
        .await
        .map_err(|e| anyhow::anyhow!("the leader election task failed: {e}"))
}

async fn reconcile_until_shutdown(
    ctx: &Context,
    index: &Index,
    mut leading: watch::Receiver<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut changes = index.subscribe();
    tokio::select! {
        () = index.wait_synced() => {}
        () = super::stopped(&mut shutdown) => return,
    }
    tracing::info!("reconciler: index synced");
    loop {
        if !*leading.borrow_and_update() {
            tokio::select! {
                changed = leading.changed() => if changed.is_err() { return },
                () = super::stopped(&mut shutdown) => return,
            }
            continue;
        }
        // Every change seen so far is in the world the round reads; later ones wake the next round.
        changes.borrow_and_update();
        let next = round(ctx, index).await;
        let wait = match next {
            Next::Idle => ctx.cfg.resync_every,
            Next::Backoff => ctx.cfg.error_backoff,
            Next::Soon => ctx.cfg.requeue_after,
        };
        tokio::select! {
            () = super::stopped(&mut shutdown) => return,
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
                // Let a burst of events (a namespace with many secrets, a re-list) settle.
                tokio::time::sleep(ctx.cfg.debounce).await;
            }
            () = tokio::time::sleep(wait) => {}
            changed = leading.changed() => if changed.is_err() { return },
        }
    }
}

/// Every action the world needs under this configuration (backing namespaces only when managed).
pub fn planned(world: &World, cfg: &Config) -> Vec<Action> {
    let mut actions = if cfg.manage_backing_namespaces {
        plan::backing_namespace_actions(world)
    } else {
        Vec::new()
    };
    actions.extend(plan::actions(world, &cfg.copies));
    actions
}

/// One round: plan under a short read lock, then execute with bounded concurrency.
async fn round(ctx: &Context, index: &Index) -> Next {
    let actions = {
        let world = index.read();
        planned(&world, &ctx.cfg)
    };
    let _timer = ctx.metrics.round(actions.len());
    let (conflicts, writes): (Vec<_>, Vec<_>) = actions
        .into_iter()
        .partition(|a| a.kind() == ActionKind::Conflict);
    announce_new_conflicts(ctx, &conflicts).await;
    if writes.is_empty() {
        return Next::Idle;
    }
    tracing::debug!(actions = writes.len(), "reconciler: executing");
    let outcomes: Vec<(Next, Option<Action>)> = futures::stream::iter(writes)
        .map(|action| execute(ctx, action))
        .buffer_unordered(ctx.cfg.concurrency.max(1))
        .collect()
        .await;
    let written: Vec<&Action> = outcomes.iter().filter_map(|(_, a)| a.as_ref()).collect();
    ctx.events.announce(&written).await;
    outcomes
        .iter()
        .fold(Next::Idle, |next, (one, _)| next.max(*one))
}

/// Executes one action; returns what to do next and the action if it was written.
async fn execute(ctx: &Context, action: Action) -> (Next, Option<Action>) {
    let kind = action.kind().as_str();
    match ctx.applier.apply(&action).await {
        Ok(Outcome::Written) => {
            ctx.metrics.written(kind);
            tracing::info!(
                kind,
                namespace = action.namespace(),
                name = action.name(),
                origin = action.origin(),
                "reconciler: wrote"
            );
            (Next::Idle, Some(action))
        }
        Ok(Outcome::Unchanged | Outcome::Refused) => (Next::Idle, None),
        Ok(Outcome::Requeue(reason)) => {
            ctx.metrics.requeued(reason.as_str());
            tracing::debug!(
                kind,
                namespace = action.namespace(),
                name = action.name(),
                reason = reason.as_str(),
                "reconciler: requeued"
            );
            (Next::Soon, None)
        }
        Err(error) => {
            ctx.metrics.failed(&error);
            tracing::warn!(
                kind,
                namespace = action.namespace(),
                name = action.name(),
                %error,
                "reconciler: action failed"
            );
            (Next::Backoff, None)
        }
    }
}

/// Logs and publishes conflicts that are new since the last round; forgets resolved ones.
async fn announce_new_conflicts(ctx: &Context, conflicts: &[Action]) {
    ctx.metrics
        .set_conflicts(i64::try_from(conflicts.len()).unwrap_or(i64::MAX));
    let fresh: Vec<&Action> = {
        let mut announced = ctx
            .announced_conflicts
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let current: HashSet<String> = conflicts.iter().map(|c| format!("{c:?}")).collect();
        let fresh = conflicts
            .iter()
            .filter(|c| !announced.contains(&format!("{c:?}")))
            .collect();
        *announced = current;
        fresh
    };
    for conflict in &fresh {
        tracing::warn!(
            namespace = conflict.namespace(),
            name = conflict.name(),
            origin = conflict.origin(),
            "reconciler: conflict, not overwriting a secret that is not a copy"
        );
    }
    ctx.events.announce(&fresh).await;
}

/// How long `Next::Backoff` waits by default.
pub const ERROR_BACKOFF: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::ProjectId;
    use crate::plan::Settings;
    use crate::world::ProjectState;

    fn world_with_bare_project() -> World {
        let mut world = World::default();
        world.upsert_project(
            ProjectId::new("local", "p-new"),
            ProjectState {
                backing_namespace: "p-new".to_owned(),
                has_backing_status: false,
                backing_not_ready: None,
            },
        );
        world
    }

    #[test]
    fn backing_namespaces_are_planned_only_when_managed() {
        let world = world_with_bare_project();
        let managed = Config::new(Settings::default(), true, "ns", "me");
        let kinds: Vec<_> = planned(&world, &managed).iter().map(Action::kind).collect();
        assert_eq!(kinds, [ActionKind::SetBackingNamespace]);
        let beside_rancher = Config::new(Settings::default(), false, "ns", "me");
        assert!(planned(&world, &beside_rancher).is_empty());
    }

    /// `serve` spawns the reconciler on a multi-threaded runtime: its future must be `Send`.
    #[allow(dead_code)]
    fn run_is_send(
        client: kube::Client,
        index: Arc<Index>,
        cfg: Config,
        metrics: ReconcilerMetrics,
        shutdown: watch::Receiver<bool>,
    ) {
        fn send<T: Send>(_: &T) {}
        send(&run(client, index, cfg, metrics, shutdown));
    }

    #[test]
    fn the_most_urgent_wait_wins() {
        assert_eq!(Next::Idle.max(Next::Backoff), Next::Backoff);
        assert_eq!(Next::Backoff.max(Next::Soon), Next::Soon);
    }
}
