//! Properties over generated worlds: the webhook announces what the reconciler then does, and the
//! plan is safe and converges. Worlds are small (two projects, a handful of namespaces, three
//! secret names) so that every interesting collision is generated often.

use super::namespaces::join_fates;
use super::testing::{admission, config, request};
use super::{Config, Facts, OverwritePolicy, validate};
use crate::keys::{self, ProjectId};
use crate::plan::{self, Action, ConflictReason, ProtectedNamespaces, Settings};
use crate::world::fixtures::{add_secret, edit_namespace, project, secret};
use crate::world::{NamespaceState, World};
use proptest::prelude::*;
use std::collections::BTreeSet;

const NAMES: [&str; 3] = ["a", "b", "c"];
/// Two backing namespaces, four ordinary ones; `n3` is protected.
const NAMESPACES: [&str; 6] = ["b0", "b1", "n0", "n1", "n2", "n3"];
const PROTECTED: &str = "n3";

/// What holds a name in a namespace before the reconciler acts.
#[derive(Debug, Clone)]
enum Holder {
    /// A secret that is not a copy.
    Plain,
    /// A copy of project `p`'s original of that name.
    Copy(usize),
    /// A copy marker without the label (the name index only).
    StrayCopy,
    /// A non-copy carrying project `p`'s label outside a backing namespace.
    Labelled(usize),
}

#[derive(Debug, Clone)]
struct Original {
    project: usize,
    name: usize,
    consents: bool,
    ignores: Option<usize>,
    /// An ignore list that cannot be read (written past the webhook): the original is held back.
    unreadable: bool,
    token: bool,
}

#[derive(Debug, Clone)]
struct Scenario {
    /// Per namespace of [`NAMESPACES`]: the project it belongs to, and whether it is terminating.
    members: Vec<(Option<usize>, bool)>,
    originals: Vec<Original>,
    others: Vec<(usize, usize, Holder)>,
    deny: bool,
}

fn holder() -> impl Strategy<Value = Holder> {
    prop_oneof![
        Just(Holder::Plain),
        (0..2usize).prop_map(Holder::Copy),
        Just(Holder::StrayCopy),
        (0..2usize).prop_map(Holder::Labelled),
    ]
}

fn scenario() -> impl Strategy<Value = Scenario> {
    let members = prop::collection::vec(
        (prop::option::of(0..2usize), prop::bool::weighted(0.15)),
        NAMESPACES.len(),
    );
    let original = (
        0..2usize,
        0..NAMES.len(),
        any::<bool>(),
        prop::option::of(0..NAMESPACES.len()),
        prop::bool::weighted(0.15),
        prop::bool::weighted(0.1),
    )
        .prop_map(
            |(project, name, consents, ignores, unreadable, token)| Original {
                project,
                name,
                consents,
                ignores,
                unreadable,
                token,
            },
        );
    let other = (0..NAMESPACES.len(), 0..NAMES.len(), holder());
    (
        members,
        prop::collection::vec(original, 0..5),
        prop::collection::vec(other, 0..10),
        any::<bool>(),
    )
        .prop_map(|(members, originals, others, deny)| Scenario {
            members,
            originals,
            others,
            deny,
        })
}

fn project_id(p: usize) -> ProjectId {
    ProjectId::new("local", format!("p{p}"))
}

fn settings(deny: bool) -> Settings {
    Settings {
        overwrite_policy: if deny {
            OverwritePolicy::Deny
        } else {
            OverwritePolicy::Warn
        },
        protected: ProtectedNamespaces::new(&[PROTECTED], ""),
    }
}

fn member_state(project: Option<usize>, terminating: bool) -> NamespaceState {
    NamespaceState {
        project_annotation: project.map(|p| project_id(p).to_string()),
        project_label: project.map(|p| format!("p{p}")),
        terminating,
        ..NamespaceState::default()
    }
}

fn build(s: &Scenario) -> World {
    let mut world = World::default();
    for p in 0..2 {
        project(&mut world, "local", &format!("p{p}"), &format!("b{p}"));
    }
    for (ns, (member, terminating)) in NAMESPACES.iter().zip(&s.members) {
        let mut state = member_state(*member, *terminating);
        // Keep what the fixture put there (a backing namespace's mark, if any).
        if let Some(existing) = world.namespace(ns) {
            state = NamespaceState {
                project_annotation: state.project_annotation,
                project_label: state.project_label,
                terminating: state.terminating,
                ..existing.clone()
            };
        }
        world.upsert_namespace((*ns).to_owned(), state);
    }
    let mut taken = BTreeSet::new();
    for o in &s.originals {
        let (ns, name) = (format!("b{}", o.project), NAMES[o.name]);
        if !taken.insert((ns.clone(), name)) {
            continue;
        }
        let label = format!("p{}", o.project);
        let labels = [
            (keys::PROJECT_SCOPED_LABEL, label.as_str()),
            (keys::PROJECT_SCOPED_CLUSTER_LABEL, "local"),
        ];
        let mut annotations = Vec::new();
        if o.consents {
            annotations.push((keys::ALLOW_OVERWRITE_ANNOTATION, keys::TRUE));
        }
        if o.unreadable {
            annotations.push((keys::IGNORE_NAMESPACES_ANNOTATION, "n0-("));
        } else if let Some(i) = o.ignores {
            annotations.push((keys::IGNORE_NAMESPACES_ANNOTATION, NAMESPACES[i]));
        }
        let mut original = secret(&ns, name, &labels, &annotations);
        if o.token {
            original.type_ = Some(keys::SERVICE_ACCOUNT_TOKEN_TYPE.to_owned());
        }
        add_secret(&mut world, original);
    }
    for (ns, name, holder) in &s.others {
        let (ns, name) = (NAMESPACES[*ns], NAMES[*name]);
        if !taken.insert((ns.to_owned(), name)) {
            continue;
        }
        let (label, origin);
        let held = match holder {
            Holder::Plain => secret(ns, name, &[], &[]),
            Holder::Copy(p) => {
                label = format!("p{p}");
                origin = keys::origin_value(&format!("b{p}"), name);
                secret(
                    ns,
                    name,
                    &[(keys::PROJECT_SCOPED_LABEL, label.as_str())],
                    &[
                        (keys::COPY_ANNOTATION, keys::TRUE),
                        (keys::ORIGIN_ANNOTATION, origin.as_str()),
                    ],
                )
            }
            Holder::StrayCopy => secret(ns, name, &[], &[(keys::COPY_ANNOTATION, keys::TRUE)]),
            Holder::Labelled(p) => {
                label = format!("p{p}");
                secret(
                    ns,
                    name,
                    &[(keys::PROJECT_SCOPED_LABEL, label.as_str())],
                    &[],
                )
            }
        };
        add_secret(&mut world, held);
    }
    world
}

/// What the webhook or the plan says happens to the names of a project's originals in one
/// namespace: (overwritten, refused, held by another project's original).
type Outcome = (BTreeSet<String>, BTreeSet<String>, BTreeSet<String>);

fn announced(world: &World, ns: &str, p: usize, cfg: &Config) -> Outcome {
    let terminating = world.namespace(ns).is_some_and(|n| n.terminating);
    let project = project_id(p);
    let fates = join_fates(world, ns, terminating, &project, cfg);
    let set = |names: &[&str]| names.iter().map(|n| (*n).to_owned()).collect();
    (
        set(&fates.overwritten),
        set(&fates.refused),
        set(&fates.held),
    )
}

fn planned(world: &World, ns: &str, p: usize, settings: &Settings) -> Outcome {
    let backing = format!("b{p}/");
    let mut outcome = Outcome::default();
    for action in plan::actions(world, settings) {
        if action.namespace() != ns || !action.origin().is_some_and(|o| o.starts_with(&backing)) {
            continue;
        }
        let name = action.name().to_owned();
        match action {
            // Replacing a copy (one that lost its label) loses nobody's data: not an overwrite.
            Action::Overwrite { .. }
                if !world.secret_meta(ns, &name).is_some_and(|m| m.is_copy()) =>
            {
                outcome.0.insert(name);
            }
            Action::Conflict {
                reason: ConflictReason::NoConsent,
                ..
            } => {
                outcome.1.insert(name);
            }
            Action::Conflict {
                reason: ConflictReason::HeldByOriginal,
                ..
            } => {
                outcome.2.insert(name);
            }
            _ => {}
        }
    }
    outcome
}

/// The world after the reconciler executed `actions` (uids and versions made up).
fn apply(world: &mut World, actions: &[Action]) {
    for action in actions {
        match action {
            Action::Create { copy }
            | Action::Overwrite { copy, .. }
            | Action::Update { copy, .. }
            | Action::Recreate { copy, .. } => {
                let mut copy = copy.placed();
                let (ns, name) = (action.namespace(), action.name());
                copy.metadata.uid = Some(format!("uid-written-{ns}-{name}"));
                copy.metadata.resource_version = Some("1".to_owned());
                add_secret(world, copy);
            }
            Action::Delete {
                namespace, name, ..
            } => {
                world.remove_secret_meta(namespace, name);
                world.remove_scoped(namespace, name);
            }
            Action::FixNamespaceLabel { namespace, label } => {
                edit_namespace(world, namespace, |state| {
                    state.project_label = label.clone()
                });
            }
            Action::AddClusterLabel {
                namespace,
                name,
                cluster,
            } => {
                if let Some(original) = world.scoped(namespace, name).and_then(|s| s.whole()) {
                    let mut original = original.clone();
                    original.metadata.labels.get_or_insert_default().insert(
                        keys::PROJECT_SCOPED_CLUSTER_LABEL.to_owned(),
                        cluster.clone(),
                    );
                    add_secret(world, original);
                }
            }
            _ => {}
        }
    }
}

fn is_write(action: &Action) -> bool {
    matches!(
        action,
        Action::Create { .. }
            | Action::Overwrite { .. }
            | Action::Update { .. }
            | Action::Recreate { .. }
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    /// N3: what the webhook announces for a namespace joining a project is exactly what the
    /// reconciler's plan does there once it has joined.
    #[test]
    fn join_warnings_agree_with_the_plan(s in scenario(), ns in 0..NAMESPACES.len(), p in 0..2usize) {
        let world = build(&s);
        let ns = NAMESPACES[ns];
        prop_assume!(world.namespace(ns).and_then(NamespaceState::project) != Some(project_id(p)));
        let cfg = Config { copies: settings(s.deny), ..config() };
        let before = announced(&world, ns, p, &cfg);
        let mut joined = world.clone();
        let terminating = world.namespace(ns).is_some_and(|n| n.terminating);
        edit_namespace(&mut joined, ns, |state| {
            state.project_annotation = Some(project_id(p).to_string());
            state.project_label = Some(format!("p{p}"));
            state.terminating = terminating;
        });
        prop_assert_eq!(before, planned(&joined, ns, p, &cfg.copies));
    }

    /// The plan converges: executing it and planning again leaves only the same conflicts.
    #[test]
    fn the_plan_is_idempotent(s in scenario()) {
        let mut world = build(&s);
        let settings = settings(s.deny);
        let first = plan::actions(&world, &settings);
        apply(&mut world, &first);
        let again = plan::actions(&world, &settings);
        let conflicts = |actions: &[Action]| -> Vec<String> {
            actions.iter().filter(|a| matches!(a, Action::Conflict { .. })).map(|a| format!("{a:?}")).collect()
        };
        prop_assert!(again.iter().all(|a| matches!(a, Action::Conflict { .. })), "{:?}", again);
        prop_assert_eq!(conflicts(&first), conflicts(&again));
    }

    /// The plan never writes into protected or terminating namespaces, never deletes a secret that
    /// is not a copy, and overwrites one only under the warn policy or with the original's consent.
    #[test]
    fn the_plan_touches_only_what_it_may(s in scenario()) {
        let world = build(&s);
        let settings = settings(s.deny);
        for action in plan::actions(&world, &settings) {
            let (ns, name) = (action.namespace(), action.name());
            let state = world.namespace(ns);
            if is_write(&action) {
                prop_assert!(!settings.protected.contains(ns), "{:?}", action);
                prop_assert!(!state.is_some_and(|n| n.terminating), "{:?}", action);
            }
            let existing_is_copy = world.secret_meta(ns, name).is_some_and(|m| m.is_copy());
            match &action {
                Action::Delete { .. } => prop_assert!(existing_is_copy, "{:?}", action),
                Action::Overwrite { .. } if !existing_is_copy => {
                    let origin = action.origin().and_then(keys::parse_origin);
                    let consents = origin
                        .and_then(|(ons, oname)| world.scoped(ons, oname)?.whole())
                        .is_some_and(|o| plan::consents_to_overwrite(&o.metadata));
                    prop_assert!(!s.deny || consents, "{:?}", action);
                }
                _ => {}
            }
        }
    }

    /// The reviews look a project's originals up in its backing namespace; the plan finds them
    /// among every labelled secret (copies and stray labels included). Both find the same ones.
    #[test]
    fn a_projects_originals_looked_up_are_those_found_among_every_labelled_secret(s in scenario()) {
        let mut world = build(&s);
        let actions = plan::actions(&world, &settings(s.deny));
        apply(&mut world, &actions);
        for p in 0..2 {
            let project = project_id(p);
            let scanned: Vec<(String, String)> = world
                .originals()
                .filter(|o| *o.project == project)
                .map(|o| (o.namespace().to_owned(), o.name().to_owned()))
                .collect();
            let looked_up: Vec<(String, String)> = world
                .originals_of(&project)
                .map(|o| (o.namespace().to_owned(), o.name().to_owned()))
                .collect();
            prop_assert_eq!(&looked_up, &scanned);
            for name in NAMES {
                let one = world.original_of(&project, name).map(|o| o.namespace().to_owned());
                let found = scanned.iter().find(|(_, n)| n == name).map(|(ns, _)| ns.clone());
                prop_assert_eq!(one, found, "{} of {}", name, project);
            }
        }
    }

    /// S5: a user's delete of a copy is refused exactly when the reconciler keeps that copy as a
    /// copy of its original (and allowed when it would delete it, or replace it with another
    /// original's copy, anyway).
    #[test]
    fn a_users_delete_of_a_copy_is_refused_exactly_when_the_plan_keeps_it(s in scenario()) {
        let world = build(&s);
        let cfg = Config { copies: settings(s.deny), ..config() };
        let actions = plan::actions(&world, &cfg.copies);
        let gone = |ns: &str, name: &str, origin: &str| {
            actions.iter().any(|a| {
                a.namespace() == ns
                    && a.name() == name
                    && (matches!(a, Action::Delete { .. }) || is_write(a) && a.origin() != Some(origin))
            })
        };
        for (ns, name, copy) in world.copies() {
            let Some(origin) = copy.origin.as_deref() else { continue };
            let old = secret(
                ns,
                name,
                &[(keys::PROJECT_SCOPED_LABEL, copy.project_label.as_str())],
                &[(keys::COPY_ANNOTATION, keys::TRUE), (keys::ORIGIN_ANNOTATION, origin)],
            );
            let old = serde_json::to_value(old).expect("a Secret is JSON");
            let review = admission(request("DELETE", None, Some(old)));
            let refused = validate(&review, &world, &cfg, &Facts::default()).denial.is_some();
            let kept = !gone(ns, name, origin);
            prop_assert_eq!(refused, kept, "{}/{} (a copy of {})", ns, name, origin);
        }
    }

    /// S2, S5, S7 ask [`plan::wanted_namespaces`] and [`plan::kept_namespaces`] one original at a
    /// time; the plan computes the whole world at once. Converged, every namespace that keeps a
    /// copy (wanted, or reached by a held-back original) holds it or reports why not, and no other
    /// namespace holds one.
    #[test]
    fn wanted_namespaces_agree_with_the_converged_world(s in scenario()) {
        let mut world = build(&s);
        let settings = settings(s.deny);
        let first = plan::actions(&world, &settings);
        apply(&mut world, &first);
        let conflicts: BTreeSet<(String, String)> = plan::actions(&world, &settings)
            .iter()
            .map(|a| (a.namespace().to_owned(), a.origin().unwrap_or_default().to_owned()))
            .collect();
        for original in world.originals() {
            let origin = keys::origin_value(original.namespace(), original.name());
            let wanted: BTreeSet<&str> = plan::wanted_namespaces(&world, original.clone(), &settings).collect();
            let kept: BTreeSet<&str> = plan::kept_namespaces(&world, original.clone(), &settings).collect();
            prop_assert!(wanted.is_subset(&kept), "{}: wanted {:?}, kept {:?}", origin, wanted, kept);
            for (ns, _) in world.namespaces() {
                prop_assert_eq!(wanted.contains(ns), plan::wanted_in(&world, &original, ns, &settings), "{} in {}", origin, ns);
                prop_assert_eq!(kept.contains(ns), plan::kept_in(&world, &original, ns, &settings), "{} in {}", origin, ns);
                let holds = world.scoped(ns, original.name()).and_then(|s| s.copy()).is_some_and(|c| {
                    c.origin.as_deref() == Some(origin.as_str())
                });
                let reported = conflicts.contains(&(ns.to_owned(), origin.clone()));
                prop_assert_eq!(kept.contains(ns), holds || reported, "{} in {}", origin, ns);
            }
        }
    }
}
