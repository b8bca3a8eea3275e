//! The level-triggered loop: whenever the index changes (debounced), or periodically, plan from the
//! whole world and execute the actions, while this instance leads. A converged world plans nothing,
//! so it costs no writes.
//!
//! An action that fails, is put off, or waits for a deletion backs off on its own ([`Backoffs`]):
//! later rounds (woken by any change) skip it until it is due, and every other action goes on.

use super::apply::{Applier, Outcome, Requeue};
use super::backoff::Backoffs;
use super::events::{self, Events, Tally, Trouble};
use super::metrics::ReconcilerMetrics;
use super::{Config, Error, lease, revocation};
use crate::clusters::condition::{Condition, Served, condition};
use crate::clusters::placement::Placement;
use crate::clusters::worker::Shared;
use crate::index::Index;
use crate::plan::{self, Action, ActionKind, Settings};
use crate::world::{self, World};
use futures::StreamExt;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Everything a round needs, shared by the concurrent actions.
pub(crate) struct Context {
    /// The management cluster (Projects are proven deleted there).
    client: kube::Client,
    /// The cluster the copies are written in: the management cluster's own id, or a downstream one.
    cluster: String,
    /// Whether `cluster` is a downstream cluster: its world is composed, and only the actions that
    /// write in it are executed ([`plan::downstream_actions`]).
    downstream: bool,
    /// Which projects are served where: the management cluster lets go of those in place in their
    /// own cluster; a downstream cluster reports its progress.
    placement: Arc<Placement>,
    applier: Applier,
    events: Events,
    metrics: ReconcilerMetrics,
    cfg: Config,
    /// Conflicts already announced, so a lasting conflict makes one Event, not one per round.
    announced_conflicts: Mutex<HashSet<ConflictKey>>,
    /// The ignore list the last copy write's re-check read ([`still_wanted`]).
    ignore_lists: LastIgnoreList,
    /// Actions that failed or wait, and when each is due again.
    backoffs: Mutex<Backoffs>,
    /// The `CopiesInPlace` condition last written on each Project, so that one is written only
    /// when it changes.
    conditions: Mutex<std::collections::HashMap<crate::keys::ProjectId, Condition>>,
    /// Not before then are unproven project deletions read again (a CRD being deleted would
    /// otherwise cost a GET per project in every round).
    revocation_due: Mutex<Option<Instant>>,
    /// Projects suspected deleted from their copies that a read found existing, until the
    /// projects watch has them (see `revocation::suspect_unseen_deletions`).
    found_projects: Mutex<std::collections::BTreeSet<crate::keys::ProjectId>>,
    /// A downstream cluster's context: the management cluster's index, where its rounds prove the
    /// deletions of that cluster's projects (its composed world follows). The management round,
    /// which proves every deletion, runs on the leader only, and the cluster's writer may be
    /// another replica.
    management_index: Option<Arc<Index>>,
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
    let placement = cfg.placement.clone();
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
    let (registered_tx, registered) = watch::channel(Default::default());
    let (owned_tx, owned) = watch::channel(Default::default());
    let ownership = tokio::spawn(crate::clusters::ownership::run(
        client.clone(),
        cfg.ownership.clone(),
        registered,
        owned_tx,
        metrics.ownership.clone(),
        shutdown.clone(),
    ));
    let connections = tokio::spawn(crate::clusters::connections::run(
        Shared {
            management: client.clone(),
            index: index.clone(),
            cfg: cfg.clone(),
            metrics: metrics.clone(),
            placement: placement.clone(),
        },
        leading.clone(),
        registered_tx,
        owned,
        shutdown.clone(),
    ));
    let ctx = Context::new(
        client.clone(),
        client,
        cfg.clusters.local_cluster_id.clone(),
        leading.clone(),
        cfg,
        metrics,
        placement,
    );
    reconcile_until_shutdown(&ctx, &index, leading, shutdown).await;
    // The round in flight has ended: the lease may go to a successor.
    let _ = done_tx.send(true);
    let _ = connections.await;
    let _ = ownership.await;
    elector
        .await
        .map_err(|e| anyhow::anyhow!("the leader election task failed: {e}"))
}

impl Context {
    /// The management cluster's context: copies written through `client`, which reaches the
    /// originals too.
    fn new(
        management: kube::Client,
        client: kube::Client,
        cluster: String,
        leading: watch::Receiver<bool>,
        cfg: Config,
        metrics: ReconcilerMetrics,
        placement: Arc<Placement>,
    ) -> Self {
        Self {
            applier: Applier::new(client, leading, cfg.copies.clone())
                .with_origins(management.clone()),
            events: Events::new(management.clone(), &cfg.lease.identity),
            client: management,
            downstream: false,
            cluster,
            placement,
            metrics,
            cfg,
            announced_conflicts: Mutex::default(),
            ignore_lists: LastIgnoreList::default(),
            backoffs: Mutex::default(),
            conditions: Mutex::default(),
            revocation_due: Mutex::default(),
            found_projects: Mutex::default(),
            management_index: None,
        }
    }

    /// A downstream cluster's context: copies written through `client` (that cluster) while
    /// `writer` is true; originals read, Events published and Projects proven deleted through the
    /// management cluster's.
    pub(crate) fn downstream(
        shared: &Shared,
        client: kube::Client,
        cluster: &str,
        writer: watch::Receiver<bool>,
    ) -> Self {
        let mut ctx = Self::new(
            shared.management.clone(),
            client,
            cluster.to_owned(),
            writer,
            shared.cfg.clone(),
            shared.metrics.clone(),
            shared.placement.clone(),
        );
        ctx.events = ctx.events.in_cluster(cluster);
        ctx.downstream = true;
        ctx.management_index = Some(shared.index.clone());
        ctx
    }

    /// The world a round plans from: a downstream cluster's composed index as it is; the
    /// management cluster's without the projects their own clusters serve.
    fn world(&self, index: &Index) -> Arc<World> {
        let world = index.read();
        if self.downstream {
            return world;
        }
        let elsewhere = self.placement.in_place();
        if elsewhere.is_empty() {
            return world;
        }
        let mut world = World::clone(&world);
        world.serve_elsewhere(elsewhere);
        Arc::new(world)
    }

    /// Every action the world needs that this context writes.
    fn plan(&self, world: &World) -> Vec<Action> {
        if self.downstream {
            plan::downstream_actions(world, &self.cfg.copies)
        } else {
            plan::planned(world, &self.cfg.copies, self.cfg.manage_backing_namespaces)
        }
    }
}

/// Plans and writes while leading, until shutdown: one round after every (debounced) change of the
/// index, or of where projects are served, or when an action is due again.
pub(crate) async fn reconcile_until_shutdown(
    ctx: &Context,
    index: &Index,
    mut leading: watch::Receiver<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut changes = index.subscribe();
    // The management cluster re-plans when a project's own cluster has its copies in place.
    let mut placement = ctx.placement.subscribe();
    tokio::select! {
        () = index.wait_synced() => {}
        () = super::stopped(&mut shutdown) => return,
    }
    tracing::info!("reconciler: index synced");
    if !ctx.downstream {
        settle_placement(ctx, &mut placement, &mut shutdown).await;
    }
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
        placement.borrow_and_update();
        let wait = round(ctx, index).await;
        tokio::select! {
            () = super::stopped(&mut shutdown) => return,
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
                // Let a burst of events (a namespace with many secrets, a re-list) settle.
                tokio::time::sleep(ctx.cfg.debounce).await;
            }
            changed = placement.changed(), if !ctx.downstream => {
                if changed.is_err() {
                    return;
                }
                // Downstream progress changes with every round there: let it settle too.
                tokio::time::sleep(ctx.cfg.debounce).await;
            }
            () = tokio::time::sleep(wait) => {}
            changed = leading.changed() => if changed.is_err() { return },
        }
    }
}

/// Waits (at most [`SETTLE_TIMEOUT`]) until where every project is served is known, so that the
/// management cluster's first round does not serve a project its own cluster has in place.
async fn settle_placement(
    ctx: &Context,
    placement: &mut watch::Receiver<u64>,
    shutdown: &mut watch::Receiver<bool>,
) {
    let settled = async {
        while !ctx.placement.settled() {
            if placement.changed().await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        () = settled => {}
        () = tokio::time::sleep(SETTLE_TIMEOUT) => {
            tracing::warn!("reconciler: not every downstream cluster listed in time; planning the management cluster anyway");
        }
        () = super::stopped(shutdown) => {}
    }
}

/// How long the management cluster's first round waits for the downstream clusters to be listed.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

/// One round: prove pending project deletions, plan from one snapshot of the index (watch events
/// go on meanwhile, into later snapshots), then execute the actions that are due with bounded
/// concurrency. Returns how long to wait for the next round if nothing changes meanwhile.
async fn round(ctx: &Context, index: &Index) -> Duration {
    let revocation_due = prove_deletions(ctx, index).await;
    let world = ctx.world(index);
    let planning = Instant::now();
    let actions = ctx.plan(&world);
    tracing::debug!(
        cluster = %ctx.cluster,
        actions = actions.len(),
        namespaces = world.namespaces().count(),
        plan_ms = planning.elapsed().as_secs_f64() * 1000.0,
        "reconciler: planned"
    );
    if !ctx.downstream && ctx.cfg.manage_backing_namespaces {
        set_conditions(ctx, &world, &actions).await;
    }
    let _timer = ctx.metrics.round(actions.len());
    let mut writes = actions;
    let conflicts: Vec<Action> = writes
        .extract_if(.., |a| a.kind() == ActionKind::Conflict)
        .collect();
    announce_new_conflicts(ctx, &conflicts).await;
    let due = lock(&ctx.backoffs).due(writes, Instant::now());
    if !due.is_empty() {
        tracing::debug!(actions = due.len(), "reconciler: executing");
    }
    // Only a delete's re-check reads the snapshot planned from. A round without deletes lets go
    // of it now: held while 100,000 copies land, it kept every namespace map the live index copies
    // on write, a second index (+46 MiB in the scale bench's rounds planned after a partial index).
    let planned_from = due
        .iter()
        .any(|a| a.kind() == ActionKind::Delete)
        .then_some(world);
    // Each outcome is settled as it arrives and then dropped: a round of 100,000 writes never
    // holds 100,000 outcomes at once.
    let mut tally = Tally::default();
    let mut failed = false;
    let mut outcomes = futures::stream::iter(due)
        .map(|action| execute(ctx, index, action, planned_from.as_deref()))
        .buffer_unordered(ctx.cfg.concurrency.max(1));
    while let Some((action, outcome)) = outcomes.next().await {
        failed |= outcome.is_err();
        settle(ctx, &action, &outcome, &mut tally);
    }
    drop(outcomes);
    let next_retry = {
        let backoffs = lock(&ctx.backoffs);
        ctx.metrics.set_in_backoff(backoffs.len());
        backoffs.next_retry()
    };
    if !failed {
        ctx.metrics.clusters.synced(&ctx.cluster);
    }
    ctx.events.announce(tally).await;
    let mut wait = ctx.cfg.resync_every;
    if let Some(at) = next_retry {
        wait = wait.min(at.saturating_duration_since(Instant::now()));
    }
    if let Some(at) = revocation_due {
        wait = wait.min(at.saturating_duration_since(Instant::now()));
    }
    wait
}

/// Writes each Project's `CopiesInPlace` condition that changed (the product's own Project CRD only:
/// beside Rancher, its Project status is never written). A write that fails is tried next round.
async fn set_conditions(ctx: &Context, world: &World, actions: &[Action]) {
    let here = plan::progress(world, actions);
    let mut wanted = Vec::new();
    // Each cluster's state read once per round, not once per project.
    let mut clusters: std::collections::HashMap<&str, Option<_>> = std::collections::HashMap::new();
    for (project, _) in world.projects() {
        let state = clusters
            .entry(project.cluster.as_str())
            .or_insert_with(|| ctx.placement.cluster(&project.cluster));
        let served = match &*state {
            Some(state) => Served::Downstream {
                cluster: &project.cluster,
                state,
                progress: state.projects.get(project).copied(),
            },
            None => Served::Here {
                cluster: &ctx.cluster,
                progress: here.get(project).copied().unwrap_or_default(),
            },
        };
        let condition = condition(served);
        if lock(&ctx.conditions).get(project) != Some(&condition) {
            wanted.push((project.clone(), condition));
        }
    }
    for (project, condition) in wanted {
        match ctx.applier.set_copies_condition(&project, &condition).await {
            Ok(()) => {
                lock(&ctx.conditions).insert(project, condition);
            }
            Err(error) => {
                tracing::debug!(%project, %error, "could not set the CopiesInPlace condition");
            }
        }
    }
}

/// Proves the project deletions the watch has seen, unless an earlier pass left some unproven less
/// than the error backoff ago. Returns when to look again, if some are still unproven.
///
/// The management round proves every deletion in the index it plans from; a downstream cluster's
/// proves its own projects' in the management cluster's index, which its composed world follows
/// (a later round plans their removal).
async fn prove_deletions(ctx: &Context, index: &Index) -> Option<Instant> {
    let due = *lock(&ctx.revocation_due);
    if due.is_some_and(|at| Instant::now() < at) {
        return due;
    }
    let copies = index;
    let (index, in_cluster) = match &ctx.management_index {
        Some(management) => (&**management, Some(ctx.cluster.as_str())),
        None => (index, None),
    };
    let suspects = {
        let mut found = lock(&ctx.found_projects);
        revocation::suspect_unseen_deletions(copies, index, in_cluster, &mut found)
    };
    let unproven = revocation::confirm_deleted_projects(&ctx.client, index, in_cluster).await;
    revocation::note_found(index, suspects, &mut lock(&ctx.found_projects));
    // A deletion could not be proven (read failed, CRD not served or terminating): look again later.
    let next = (unproven > 0).then(|| Instant::now() + ctx.cfg.error_backoff);
    *lock(&ctx.revocation_due) = next;
    next
}

/// Records one outcome: in the backoff table (a success forgets the action, anything else backs it
/// off) and in the round's tally of Events.
fn settle(ctx: &Context, action: &Action, outcome: &Result<Outcome, Error>, tally: &mut Tally) {
    if matches!(outcome, Ok(Outcome::Written)) {
        tally.written(action);
    }
    if let Some(trouble) = trouble(outcome) {
        tally.trouble(action, trouble);
    }
    let Some(base) = backoff_base(&ctx.cfg, outcome) else {
        lock(&ctx.backoffs).succeeded(action);
        return;
    };
    let wait = lock(&ctx.backoffs).failed(action, base, ctx.cfg.max_backoff, Instant::now());
    tracing::debug!(
        kind = action.kind().as_str(),
        namespace = action.namespace(),
        name = action.name(),
        wait_seconds = wait.as_secs_f64(),
        "reconciler: backing off"
    );
}

/// The first wait of an action after this outcome; `None` when it went through (or only lost the
/// lease, which the loop waits for anyway).
fn backoff_base(cfg: &Config, outcome: &Result<Outcome, Error>) -> Option<Duration> {
    match outcome {
        Ok(Outcome::Written | Outcome::Unchanged | Outcome::Refused)
        | Ok(Outcome::Requeue(Requeue::NotLeading)) => None,
        Ok(Outcome::Requeue(_)) => Some(cfg.requeue_after),
        Ok(Outcome::Waiting { .. }) | Err(_) => Some(cfg.error_backoff),
    }
}

/// What an outcome warns the original's owner about: a permanent refusal, or a wait for finalizers.
fn trouble(outcome: &Result<Outcome, Error>) -> Option<Trouble> {
    match outcome {
        Ok(Outcome::Waiting { finalizers }) => Some(Trouble::Waiting {
            finalizers: finalizers.clone(),
        }),
        Err(Error::Refused {
            code,
            reason,
            message,
        }) => Some(Trouble::Refused {
            code: *code,
            reason: reason.clone(),
            message: message.clone(),
        }),
        Err(Error::Altered { what }) => Some(Trouble::Altered { what }),
        _ => None,
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether a copy write the round planned is still wanted by the index as it is now. A round
/// writes from one snapshot, and 100,000 writes take a minute: a namespace that left the project
/// (or began terminating, or that the original's ignore list now excludes) meanwhile, or an
/// original deleted or replaced (another uid) meanwhile, would still get its copy until the next
/// round removed it. Only what the fresh index says puts a write off (the next round plans from
/// it); writes of other kinds, and deletes (re-checked at the apiserver), pass.
fn still_wanted(
    index: &Index,
    settings: &Settings,
    ignore_lists: &LastIgnoreList,
    action: &Action,
) -> bool {
    let Some(copy) = action.copy() else {
        return true;
    };
    let Some((namespace, name)) = action.origin().and_then(crate::keys::parse_origin) else {
        return true;
    };
    let world = index.read();
    let Some(original) = world.original_at(namespace, name) else {
        return false;
    };
    let planned_from = world::annotation(&copy.secret.metadata, crate::keys::ORIGIN_UID_ANNOTATION);
    if planned_from.is_some_and(|uid| Some(uid) != original.secret.metadata.uid.as_deref()) {
        return false;
    }
    let ignore = ignore_lists.of(&original.secret.metadata);
    world.namespace(action.namespace()).is_some_and(|state| {
        world.is_member_of(state, original.project)
            && plan::wants_copy(
                &original,
                &ignore,
                action.namespace(),
                state.terminating,
                settings,
            )
    })
}

/// The ignore list last parsed for a copy write's re-check, by the annotation's text: a round's
/// writes come original after original, and compiling a list of patterns again for each of
/// 100,000 writes would cost more than the check saves.
#[derive(Default)]
struct LastIgnoreList(Mutex<Option<(String, Arc<plan::IgnoreList>)>>);

impl LastIgnoreList {
    fn of(&self, meta: &kube::api::ObjectMeta) -> Arc<plan::IgnoreList> {
        let Some(text) = world::annotation(meta, crate::keys::IGNORE_NAMESPACES_ANNOTATION) else {
            return Arc::default();
        };
        let mut last = lock(&self.0);
        if let Some((parsed, list)) = last.as_ref()
            && parsed == text
        {
            return Arc::clone(list);
        }
        let list = Arc::new(plan::IgnoreList::of(meta));
        *last = Some((text.to_owned(), Arc::clone(&list)));
        list
    }
}

/// Executes one action, logs and counts what became of it.
async fn execute(
    ctx: &Context,
    index: &Index,
    action: Action,
    world: Option<&World>,
) -> (Action, Result<Outcome, Error>) {
    let kind = action.kind().as_str();
    let result = if still_wanted(index, &ctx.cfg.copies, &ctx.ignore_lists, &action) {
        ctx.applier.apply(&action, world).await
    } else {
        tracing::info!(
            cluster = %ctx.cluster,
            kind,
            namespace = action.namespace(),
            name = action.name(),
            "reconciler: no longer wanted since the round was planned; not writing it"
        );
        Ok(Outcome::Requeue(Requeue::Stale))
    };
    match &result {
        Ok(Outcome::Written) => {
            ctx.metrics.written(kind);
            ctx.metrics.clusters.written(&ctx.cluster, kind);
            tracing::info!(
                cluster = %ctx.cluster,
                kind,
                namespace = action.namespace(),
                name = action.name(),
                origin = action.origin(),
                "reconciler: wrote"
            );
        }
        Ok(Outcome::Unchanged | Outcome::Refused) => {}
        Ok(Outcome::Requeue(reason)) => {
            ctx.metrics.requeued(reason.as_str());
            tracing::debug!(
                kind,
                namespace = action.namespace(),
                name = action.name(),
                reason = reason.as_str(),
                "reconciler: requeued"
            );
        }
        Ok(Outcome::Waiting { finalizers }) => {
            ctx.metrics.requeued("waiting_for_deletion");
            tracing::info!(
                kind,
                namespace = action.namespace(),
                name = action.name(),
                finalizers = finalizers.join(","),
                "reconciler: waiting for a deletion held by finalizers"
            );
        }
        Err(error) => {
            ctx.metrics.failed(error);
            ctx.metrics.clusters.failed(&ctx.cluster);
            if action.origin().is_some() {
                ctx.metrics.copy_failed(&error.failure_reason());
            }
            tracing::warn!(
                cluster = %ctx.cluster,
                kind,
                namespace = action.namespace(),
                name = action.name(),
                %error,
                "reconciler: action failed"
            );
        }
    }
    (action, result)
}

/// What tells a lasting conflict from a new one: where it is, and which original wants the name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ConflictKey {
    namespace: String,
    name: String,
    origin: Option<String>,
}

impl ConflictKey {
    fn of(conflict: &Action) -> Self {
        Self {
            namespace: conflict.namespace().to_owned(),
            name: conflict.name().to_owned(),
            origin: conflict.origin().map(str::to_owned),
        }
    }
}

/// The conflicts not announced last round; `announced` becomes this round's, so a resolved conflict
/// that comes back is announced again.
fn fresh_conflicts<'a>(
    announced: &mut HashSet<ConflictKey>,
    conflicts: &'a [Action],
) -> Vec<&'a Action> {
    let current: HashSet<ConflictKey> = conflicts.iter().map(ConflictKey::of).collect();
    let fresh = conflicts
        .iter()
        .filter(|c| !announced.contains(&ConflictKey::of(c)))
        .collect();
    *announced = current;
    fresh
}

/// Logs and publishes conflicts that are new since the last round; forgets resolved ones.
async fn announce_new_conflicts(ctx: &Context, conflicts: &[Action]) {
    ctx.metrics
        .set_conflicts(i64::try_from(conflicts.len()).unwrap_or(i64::MAX));
    let fresh = fresh_conflicts(&mut lock(&ctx.announced_conflicts), conflicts);
    for conflict in &fresh {
        tracing::warn!(
            namespace = conflict.namespace(),
            name = conflict.name(),
            origin = conflict.origin(),
            "reconciler: conflict, not overwriting a secret that is not a copy"
        );
    }
    ctx.events.announce(events::summarise(fresh)).await;
}

/// How long an action waits after its first failure (doubling with every further one).
pub const ERROR_BACKOFF: Duration = Duration::from_secs(10);

/// The longest an action ever waits between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Settings;

    fn conflict(namespace: &str, origin: &str) -> Action {
        Action::Conflict {
            namespace: namespace.to_owned(),
            name: "db".to_owned(),
            origin: origin.to_owned(),
            reason: crate::plan::ConflictReason::NoConsent,
        }
    }

    #[test]
    fn a_lasting_conflict_is_announced_once_and_again_after_it_was_resolved() {
        let mut announced = HashSet::new();
        let round = [conflict("team-a", "b/db"), conflict("team-b", "b/db")];
        assert_eq!(fresh_conflicts(&mut announced, &round).len(), 2);
        assert!(fresh_conflicts(&mut announced, &round).is_empty());
        // Another original now wants the name: a new conflict.
        let moved = [conflict("team-a", "c/db"), conflict("team-b", "b/db")];
        assert_eq!(fresh_conflicts(&mut announced, &moved), [&moved[0]]);
        assert!(fresh_conflicts(&mut announced, &[]).is_empty());
        assert_eq!(fresh_conflicts(&mut announced, &round).len(), 2);
    }

    #[test]
    fn a_copy_write_is_put_off_once_the_fresh_index_no_longer_wants_it() {
        use crate::plan::fixtures::{WARN, actions, base};
        use crate::world::fixtures::edit_namespace;
        let world = base();
        let create = actions(&world, WARN)
            .into_iter()
            .find(|a| a.kind() == ActionKind::Create && a.namespace() == "team-a")
            .expect("a create in team-a");
        let settings = Settings::default();
        let lists = LastIgnoreList::default();
        let wanted = |world: &World, action: &Action| {
            still_wanted(&Index::new(world.clone()), &settings, &lists, action)
        };
        assert!(wanted(&world, &create));

        let mut left = world.clone();
        edit_namespace(&mut left, "team-a", |ns| ns.project_annotation = None);
        assert!(!wanted(&left, &create), "the namespace left");

        let mut terminating = world.clone();
        edit_namespace(&mut terminating, "team-a", |ns| ns.terminating = true);
        assert!(!wanted(&terminating, &create), "terminating");

        let mut gone = world.clone();
        crate::plan::fixtures::remove_original(&mut gone);
        assert!(!wanted(&gone, &create), "no original");

        let edit_original = |edit: &dyn Fn(&mut k8s_openapi::api::core::v1::Secret)| {
            let mut world = world.clone();
            let original = world.original_at(crate::plan::fixtures::BACKING, "db");
            let mut secret = original.expect("the original").secret.clone();
            edit(&mut secret);
            world.upsert_scoped(secret);
            world
        };
        let ignoring = edit_original(&|s| {
            let key = crate::keys::IGNORE_NAMESPACES_ANNOTATION.to_owned();
            s.metadata.annotations = Some([(key, "team-a".to_owned())].into());
        });
        assert!(!wanted(&ignoring, &create), "ignored since");
        let replaced = edit_original(&|s| s.metadata.uid = Some("another".to_owned()));
        assert!(!wanted(&replaced, &create), "the original was replaced");

        // A plain secret to overwrite in team-a, and team-a since made another project's backing
        // namespace, that secret its original.
        let mut plain = world.clone();
        crate::plan::fixtures::plain(&mut plain, "team-a");
        let overwrite = actions(&plain, WARN)
            .into_iter()
            .find(|a| a.kind() == ActionKind::Overwrite && a.namespace() == "team-a")
            .expect("an overwrite in team-a");
        assert!(wanted(&plain, &overwrite));
        let mut taken = plain.clone();
        let q = crate::world::fixtures::project(&mut taken, "local", "p-q", "team-a");
        let label = [(crate::keys::PROJECT_SCOPED_LABEL, q.project.as_str())];
        let secret = crate::world::fixtures::secret("team-a", "db", &label, &[]);
        crate::world::fixtures::add_secret(&mut taken, secret);
        assert!(taken.original_at("team-a", "db").is_some(), "the fixture");
        assert!(
            !wanted(&taken, &overwrite),
            "a backing namespace is no member: the target, an original now, is not overwritten"
        );

        // Writes that are not copies are not this check's to put off.
        let label = Action::FixNamespaceLabel {
            namespace: "team-a".to_owned(),
            label: None,
        };
        assert!(wanted(&gone, &label));
    }

    #[test]
    fn refusals_and_finalizers_warn_and_back_off_and_a_lost_lease_does_neither() {
        let cfg = Config::new(Settings::default(), true, "ns", "me");
        let refused: Result<Outcome, Error> = Err(Error::Refused {
            code: 422,
            reason: "Invalid".to_owned(),
            message: "metadata.annotations: Too long".to_owned(),
        });
        assert_eq!(backoff_base(&cfg, &refused), Some(cfg.error_backoff));
        assert!(matches!(
            trouble(&refused),
            Some(Trouble::Refused { code: 422, .. })
        ));
        // Stored other than sent: written, but never exact; rewriting it every round would loop.
        let altered: Result<Outcome, Error> = Err(Error::Altered { what: "labels" });
        assert_eq!(backoff_base(&cfg, &altered), Some(cfg.error_backoff));
        assert_eq!(trouble(&altered), Some(Trouble::Altered { what: "labels" }));
        let waiting = Ok(Outcome::Waiting {
            finalizers: vec!["example.com/hold".to_owned()],
        });
        assert_eq!(backoff_base(&cfg, &waiting), Some(cfg.error_backoff));
        assert!(matches!(trouble(&waiting), Some(Trouble::Waiting { .. })));
        let stale = Ok(Outcome::Requeue(Requeue::Stale));
        assert_eq!(backoff_base(&cfg, &stale), Some(cfg.requeue_after));
        assert_eq!(trouble(&stale), None);
        for quiet in [
            Ok(Outcome::Written),
            Ok(Outcome::Requeue(Requeue::NotLeading)),
        ] {
            assert_eq!(backoff_base(&cfg, &quiet), None);
            assert_eq!(trouble(&quiet), None);
        }
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
}
