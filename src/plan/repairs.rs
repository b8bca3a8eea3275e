//! Repairs the reconciler makes besides copies: backing namespaces for projects without one
//! (`--manage-backing-namespaces`), and the labels the mutators would have set on objects written
//! while the webhook was down.

use super::{Action, BackingRefusal};
use crate::keys::{self, ProjectId};
use crate::world::{self, NamespaceState, World};

/// Backing namespaces (docs/SPEC.md §3, `--manage-backing-namespaces`): projects without
/// `status.backingNamespace` get one, and every project learns (through its BackingNamespaceReady
/// condition, written only when it changes) whether it owns one.
///
/// A project without status gets its legacy backing namespace (its own name) only when that namespace
/// is marked as its own, else the generated one, created and marked for it. An existing namespace is
/// never adopted unless it is marked for that very project: otherwise a Project named after someone
/// else's backing namespace would take it over. A namespace two projects claim is neither's (see
/// [`World::claims`]); a project whose name is no namespace name is skipped, with its condition.
///
/// A project on its way out (its object or its cluster's namespace being deleted) gets nothing: a
/// backing namespace created, or created again after it was deleted with the project, would
/// outlive the project.
pub fn backing_namespace_actions(world: &World) -> Vec<Action> {
    world
        .projects()
        .filter(|(id, state)| {
            !state.deleting
                && !world
                    .namespace(&id.cluster)
                    .is_some_and(|ns| ns.terminating)
        })
        .filter_map(|(id, state)| {
            let (backing_namespace, create_namespace, refusal) = if state.has_backing_status {
                let rivals = world.rivals(id).map(|(_, rivals)| BackingRefusal::Claimed {
                    rivals: rivals.into_iter().cloned().collect(),
                });
                match rivals {
                    Some(refusal) => (state.backing_namespace.clone(), false, Some(refusal)),
                    None if world.backing_needs_marks() => recorded_backing_namespace(world, id),
                    None => (state.backing_namespace.clone(), false, None),
                }
            } else {
                match choose_backing_namespace(world, id) {
                    Ok((namespace, create)) => (namespace, create, None),
                    Err((namespace, refusal)) => (namespace, false, Some(refusal)),
                }
            };
            // Written once: a refusal already recorded, or a ready project, needs nothing.
            let wanted = match &refusal {
                Some(refusal) => state.backing_not_ready.as_deref() != Some(refusal.reason()),
                None => {
                    create_namespace
                        || !state.has_backing_status
                        || state.backing_not_ready.is_some()
                }
            };
            wanted.then(|| Action::SetBackingNamespace {
                project: id.clone(),
                backing_namespace,
                create_namespace,
                refusal,
            })
        })
        .collect()
}

/// A recorded backing namespace where only marked ones count: kept while marked for the project;
/// once deleted, created again (marked) when it is the name the reconciler gives (any other was
/// chosen by whoever wrote the status, and is not the reconciler's to take), so that its name is
/// the project's again at once; one that exists unmarked (someone else made it after the
/// project's was deleted) is never adopted.
fn recorded_backing_namespace(
    world: &World,
    id: &ProjectId,
) -> (String, bool, Option<BackingRefusal>) {
    let Some(state) = world.project(id) else {
        return (String::new(), false, None);
    };
    let namespace = state.backing_namespace.clone();
    match world.namespace(&namespace) {
        Some(ns) if ns.is_marked_for(id, &state.uid) => (namespace, false, None),
        Some(_) => (namespace, false, Some(BackingRefusal::Taken)),
        None if namespace == id.generated_backing_namespace() => (namespace, true, None),
        None => (namespace, false, Some(BackingRefusal::Missing)),
    }
}

/// The backing namespace a project without one gets, and whether to create it; or why it cannot.
fn choose_backing_namespace(
    world: &World,
    id: &ProjectId,
) -> Result<(String, bool), (String, BackingRefusal)> {
    if !keys::is_namespace_name(&id.project) {
        return Err((String::new(), BackingRefusal::InvalidName));
    }
    let uid = world.project(id).map_or("", |p| p.uid.as_str());
    let legacy = id.legacy_backing_namespace();
    if world
        .namespace(legacy)
        .is_some_and(|ns| ns.is_marked_for(id, uid))
    {
        return Ok((legacy.to_owned(), false));
    }
    let generated = id.generated_backing_namespace();
    let rivals: Vec<ProjectId> = world
        .claims(&generated)
        .into_iter()
        .filter(|claimant| *claimant != id)
        .cloned()
        .collect();
    if !rivals.is_empty() {
        return Err((generated, BackingRefusal::Claimed { rivals }));
    }
    match world.namespace(&generated) {
        None => Ok((generated, true)),
        Some(ns) if ns.is_marked_for(id, uid) => Ok((generated, false)),
        Some(_) => Err((generated, BackingRefusal::Taken)),
    }
}

/// The projectId label a namespace should carry (`Some(None)`: none at all), mirroring its annotation
/// (an empty one names no project); `None` when the annotation is malformed, which is the webhook's
/// to refuse: its label is left alone.
pub fn wanted_project_label(ns: &NamespaceState) -> Option<Option<String>> {
    match ns.project_annotation.as_deref() {
        None => Some(None),
        Some(value) => Some(Some(ProjectId::parse(value).ok()?.project)),
    }
}

/// The reconciler's twin of the mutators (M1, M2) for objects written while the webhook was down.
pub(super) fn label_repairs(world: &World) -> Vec<Action> {
    let namespaces = world.namespaces().filter_map(|(name, ns)| {
        if ns.terminating {
            return None;
        }
        let wanted = wanted_project_label(ns)?;
        (ns.project_label != wanted).then(|| Action::FixNamespaceLabel {
            namespace: name.to_owned(),
            label: wanted,
        })
    });
    let originals = world.originals().filter_map(|original| {
        world::label(
            &original.secret.metadata,
            keys::PROJECT_SCOPED_CLUSTER_LABEL,
        )
        .is_none()
        .then(|| Action::AddClusterLabel {
            namespace: original.namespace().to_owned(),
            name: original.name().to_owned(),
            cluster: original.project.cluster.clone(),
        })
    });
    namespaces.chain(originals).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::fixtures::*;
    use crate::world::ProjectState;
    use crate::world::fixtures::*;

    #[test]
    fn label_repairs_table() {
        let cases: Vec<(&str, Setup, Vec<&str>)> = vec![
            (
                "a stale namespace label is corrected",
                |w| {
                    edit_namespace(w, "team-a", |ns| {
                        ns.project_label = Some("p-old".to_owned())
                    });
                },
                vec!["fix_namespace_label /team-a"],
            ),
            (
                "a missing namespace label is added",
                |w| {
                    edit_namespace(w, "team-a", |ns| ns.project_label = None);
                },
                vec!["fix_namespace_label /team-a"],
            ),
            (
                "a malformed annotation is left to the webhook",
                |w| {
                    w.upsert_namespace(
                        "odd".to_owned(),
                        NamespaceState {
                            project_annotation: Some("nonsense".to_owned()),
                            project_label: Some("x".to_owned()),
                            ..NamespaceState::default()
                        },
                    )
                },
                vec![],
            ),
            (
                "an original without its cluster label gets it",
                |w| {
                    let label = [(keys::PROJECT_SCOPED_LABEL, "p-vwxyz")];
                    add_secret(w, secret(BACKING, "db", &label, &[]));
                    put_copy(w, "team-a");
                    put_copy(w, "team-b");
                },
                vec!["add_cluster_label local-p-vwxyz/db"],
            ),
        ];
        for (name, setup, expected) in cases {
            let mut world = converged();
            setup(&mut world);
            assert_eq!(describe(&world, WARN), expected, "{name}");
        }

        let mut world = converged();
        world.upsert_namespace(
            "left".to_owned(),
            NamespaceState {
                project_label: Some("p-vwxyz".to_owned()),
                ..NamespaceState::default()
            },
        );
        assert_eq!(
            actions(&world, WARN),
            vec![Action::FixNamespaceLabel {
                namespace: "left".to_owned(),
                label: None
            }]
        );
    }

    #[test]
    fn the_label_of_a_namespace_whose_annotation_is_empty_is_removed() {
        // An empty annotation names no project; read as malformed, it left a label a user set
        // beside it for good.
        let mut ns = k8s_openapi::api::core::v1::Namespace::default();
        ns.metadata.annotations = Some([(keys::PROJECT_ID_KEY.to_owned(), String::new())].into());
        ns.metadata.labels = Some([(keys::PROJECT_ID_KEY.to_owned(), "p-vwxyz".to_owned())].into());
        let mut world = converged();
        world.upsert_namespace("spoofed".to_owned(), NamespaceState::from_namespace(&ns));
        assert_eq!(
            actions(&world, WARN),
            vec![Action::FixNamespaceLabel {
                namespace: "spoofed".to_owned(),
                label: None
            }]
        );
    }

    fn bare(world: &mut World, cluster: &str, name: &str) -> ProjectId {
        let id = ProjectId::new(cluster, name);
        world.upsert_project(
            id.clone(),
            ProjectState {
                uid: format!("uid-{id}"),
                backing_namespace: name.to_owned(),
                ..ProjectState::default()
            },
        );
        id
    }

    /// Marked for `owner`, as the reconciler marks what it creates: the project and its uid.
    fn marked(world: &mut World, namespace: &str, owner: &ProjectId) {
        world.upsert_namespace(
            namespace.to_owned(),
            NamespaceState {
                backing_of: Some(owner.to_string()),
                backing_uid: Some(format!("uid-{owner}")),
                ..NamespaceState::default()
            },
        );
    }

    /// A project re-created under a deleted one's name has another uid: the namespace marked for
    /// the deleted one (with the originals left there) is not its own.
    #[test]
    fn a_namespace_marked_for_a_deleted_namesake_is_not_adopted() {
        let mut world = converged();
        let id = bare(&mut world, "local", "p-again");
        world.upsert_namespace(
            "local-p-again".to_owned(),
            NamespaceState {
                backing_of: Some(id.to_string()),
                backing_uid: Some("uid-of-the-deleted-project".to_owned()),
                ..NamespaceState::default()
            },
        );
        let actions = backing_namespace_actions(&world);
        assert!(
            matches!(
                actions.as_slice(),
                [Action::SetBackingNamespace {
                    refusal: Some(BackingRefusal::Taken),
                    ..
                }]
            ),
            "{actions:?}"
        );
    }

    /// Deleting a cluster's namespace deletes its Projects, and their backing namespaces are often
    /// deleted alongside: none is created again for a project on its way out, where it would stay.
    #[test]
    fn a_project_being_deleted_gets_no_backing_namespace() {
        // The reconciler's own backing namespaces (as with --manage-backing-namespaces).
        let mut world = World::default().require_marked_backing_namespaces();
        let id = bare(&mut world, "c-gone", "p-going");
        let generated = id.generated_backing_namespace();
        assert_eq!(
            backing_namespace_actions(&world),
            vec![set(&id, &generated, true)]
        );
        world.upsert_namespace(
            "c-gone".to_owned(),
            NamespaceState {
                terminating: true,
                ..NamespaceState::default()
            },
        );
        assert_eq!(backing_namespace_actions(&world), vec![]);
        world.upsert_namespace("c-gone".to_owned(), NamespaceState::default());
        let mut state = world.project(&id).cloned().unwrap_or_default();
        state.deleting = true;
        // Its recorded backing namespace deleted too: not created again.
        state.has_backing_status = true;
        state.backing_namespace = generated.clone();
        world.upsert_project(id.clone(), state.clone());
        assert_eq!(backing_namespace_actions(&world), vec![]);
        state.deleting = false;
        world.upsert_project(id.clone(), state);
        assert_eq!(
            backing_namespace_actions(&world),
            vec![set(&id, &generated, true)]
        );
    }

    fn set(id: &ProjectId, namespace: &str, create: bool) -> Action {
        Action::SetBackingNamespace {
            project: id.clone(),
            backing_namespace: namespace.to_owned(),
            create_namespace: create,
            refusal: None,
        }
    }

    #[test]
    fn projects_without_backing_status_get_one() {
        let mut world = converged();
        assert!(backing_namespace_actions(&world).is_empty());
        let id = bare(&mut world, "local", "p-new");
        assert_eq!(
            backing_namespace_actions(&world),
            vec![set(&id, "local-p-new", true)]
        );
        // Created and marked for it (a round ago): recorded, not created again.
        marked(&mut world, "local-p-new", &id);
        assert_eq!(
            backing_namespace_actions(&world),
            vec![set(&id, "local-p-new", false)]
        );
        // A legacy backing namespace marked as the project's own is kept.
        marked(&mut world, "p-new", &id);
        assert_eq!(
            backing_namespace_actions(&world),
            vec![set(&id, "p-new", false)]
        );
    }

    #[test]
    fn an_existing_namespace_is_never_adopted_unless_marked_for_the_project() {
        let mut world = World::default();
        let id = bare(&mut world, "local", "p-old");
        // The legacy name exists (even holding a labelled secret) but is not marked: not adopted.
        world.upsert_namespace("p-old".to_owned(), NamespaceState::default());
        add_secret(
            &mut world,
            secret("p-old", "db", &[(keys::PROJECT_SCOPED_LABEL, "p-old")], &[]),
        );
        assert_eq!(
            backing_namespace_actions(&world),
            vec![set(&id, "local-p-old", true)]
        );
        // The generated name exists, unmarked: refused, once.
        world.upsert_namespace("local-p-old".to_owned(), NamespaceState::default());
        let refused = backing_namespace_actions(&world);
        assert!(
            matches!(&refused[..], [Action::SetBackingNamespace { refusal: Some(BackingRefusal::Taken), backing_namespace, .. }] if backing_namespace == "local-p-old"),
            "{refused:?}"
        );
        let mut state = world.project(&id).cloned().unwrap_or_default();
        state.backing_not_ready = Some(keys::BACKING_NAMESPACE_TAKEN.to_owned());
        world.upsert_project(id.clone(), state);
        assert!(backing_namespace_actions(&world).is_empty());
        // Marked for another project: still not adopted.
        marked(&mut world, "local-p-old", &ProjectId::new("local", "other"));
        assert!(backing_namespace_actions(&world).is_empty());
    }

    #[test]
    fn a_project_named_like_another_backing_namespace_takes_nothing() {
        // Hijack (a): Project `local-a-team` in `local`, beside `local:a-team` (backing
        // `local-a-team`, created and marked for it).
        let mut world = base();
        let victim = p();
        marked(&mut world, BACKING, &victim);
        put_copy(&mut world, "team-a");
        put_copy(&mut world, "team-b");
        let attacker = bare(&mut world, "local", BACKING);
        assert_eq!(world.backing_project(BACKING), Some(&victim));
        assert_eq!(world.originals().count(), 1);
        assert!(actions(&world, WARN).is_empty());
        assert_eq!(
            backing_namespace_actions(&world),
            vec![set(&attacker, "local-local-p-vwxyz", true)]
        );
    }

    #[test]
    fn a_namespace_two_projects_claim_is_neither_and_nothing_is_deleted() {
        let mut world = converged();
        // A Rancher-style copy (marker, no origin) too: it must stay as well.
        add_secret(
            &mut world,
            secret(
                "team-a",
                "legacy",
                &[(keys::PROJECT_SCOPED_LABEL, "p-vwxyz")],
                &[(keys::COPY_ANNOTATION, keys::TRUE)],
            ),
        );
        let rival = ProjectId::new("local-p", "vwxyz");
        world.upsert_project(
            rival.clone(),
            ProjectState {
                uid: String::new(),
                backing_namespace: BACKING.to_owned(),
                has_backing_status: true,
                backing_not_ready: None,
                deleting: false,
            },
        );
        assert_eq!(world.backing_project(BACKING), None);
        assert_eq!(world.claims(BACKING).len(), 2);
        assert_eq!(world.originals().count(), 0);
        assert!(
            actions(&world, WARN).is_empty(),
            "{:?}",
            actions(&world, WARN)
        );
        let refusals = backing_namespace_actions(&world);
        assert_eq!(refusals.len(), 2, "{refusals:?}");
        for action in &refusals {
            assert!(matches!(
                action,
                Action::SetBackingNamespace {
                    refusal: Some(BackingRefusal::Claimed { rivals }),
                    ..
                } if rivals.len() == 1
            ));
        }
        // Once recorded, not again; when the rival lets go, the owner is ready again and copies
        // flow as before.
        for id in [p(), rival.clone()] {
            let mut state = world.project(&id).cloned().unwrap_or_default();
            state.backing_not_ready = Some(keys::BACKING_NAMESPACE_CLAIMED.to_owned());
            world.upsert_project(id, state);
        }
        assert!(backing_namespace_actions(&world).is_empty());
        world.remove_project(&rival);
        assert_eq!(world.backing_project(BACKING), Some(&p()));
        assert_eq!(
            backing_namespace_actions(&world),
            vec![set(&p(), BACKING, false)]
        );
    }

    #[test]
    fn where_backing_namespaces_are_the_reconcilers_a_recorded_one_counts_only_marked() {
        let id = ProjectId::new("local", "p-vwxyz");
        let uid = "uid-1";
        let mut world = World::default().require_marked_backing_namespaces();
        world.upsert_project(
            id.clone(),
            ProjectState {
                uid: uid.to_owned(),
                backing_namespace: BACKING.to_owned(),
                has_backing_status: true,
                backing_not_ready: None,
                deleting: false,
            },
        );
        // Deleted (or never made): made again, marked, so that its name is not left to others.
        assert_eq!(world.backing_project(BACKING), None);
        assert_eq!(
            backing_namespace_actions(&world),
            vec![set(&id, BACKING, true)]
        );
        // Made again by someone else, unmarked: not the project's, and the project is told.
        world.upsert_namespace(BACKING.to_owned(), NamespaceState::default());
        add_secret(
            &mut world,
            secret(
                BACKING,
                "db",
                &[(keys::PROJECT_SCOPED_LABEL, "p-vwxyz")],
                &[],
            ),
        );
        assert_eq!(world.backing_project(BACKING), None);
        assert_eq!(world.originals().count(), 0);
        assert_eq!(
            backing_namespace_actions(&world),
            vec![Action::SetBackingNamespace {
                project: id.clone(),
                backing_namespace: BACKING.to_owned(),
                create_namespace: false,
                refusal: Some(BackingRefusal::Taken),
            }]
        );
        // Marked for it (as the reconciler makes it): the project's, nothing to do.
        world.upsert_namespace(
            BACKING.to_owned(),
            NamespaceState {
                backing_of: Some(id.to_string()),
                backing_uid: Some(uid.to_owned()),
                ..NamespaceState::default()
            },
        );
        assert_eq!(world.backing_project(BACKING), Some(&id));
        assert_eq!(world.originals().count(), 1);
        assert!(backing_namespace_actions(&world).is_empty());

        // A recorded name the reconciler does not give, missing: not made (whoever wrote the
        // status chose it), and the project is told.
        let chosen = ProjectId::new("local", "p-chosen");
        world.upsert_project(
            chosen.clone(),
            ProjectState {
                uid: "uid-2".to_owned(),
                backing_namespace: "payments".to_owned(),
                has_backing_status: true,
                backing_not_ready: None,
                deleting: false,
            },
        );
        assert_eq!(
            backing_namespace_actions(&world),
            vec![Action::SetBackingNamespace {
                project: chosen,
                backing_namespace: "payments".to_owned(),
                create_namespace: false,
                refusal: Some(BackingRefusal::Missing),
            }]
        );
    }

    #[test]
    fn beside_rancher_a_recorded_backing_namespace_counts_as_it_is() {
        let mut world = World::default();
        let id = ProjectId::new("local", "p-vwxyz");
        world.upsert_project(
            id.clone(),
            ProjectState {
                uid: "uid-1".to_owned(),
                backing_namespace: BACKING.to_owned(),
                has_backing_status: true,
                backing_not_ready: None,
                deleting: false,
            },
        );
        world.upsert_namespace(BACKING.to_owned(), NamespaceState::default());
        assert_eq!(world.backing_project(BACKING), Some(&id));
        assert!(backing_namespace_actions(&world).is_empty());
    }

    #[test]
    fn a_generated_name_another_project_claims_is_refused() {
        let mut world = World::default();
        // A Rancher project whose status names `local-p-x`, and a bare `local:p-x`.
        let rancher = ProjectId::new("c-1", "p-y");
        world.upsert_project(
            rancher.clone(),
            ProjectState {
                uid: String::new(),
                backing_namespace: "local-p-x".to_owned(),
                has_backing_status: true,
                backing_not_ready: None,
                deleting: false,
            },
        );
        bare(&mut world, "local", "p-x");
        let got = backing_namespace_actions(&world);
        assert!(
            matches!(&got[..], [Action::SetBackingNamespace { refusal: Some(BackingRefusal::Claimed { rivals }), .. }] if rivals == &[rancher]),
            "{got:?}"
        );
    }

    #[test]
    fn a_project_whose_name_is_no_namespace_name_is_skipped_once() {
        let mut world = World::default();
        let id = bare(&mut world, "local", "p.dotted");
        let got = backing_namespace_actions(&world);
        assert!(
            matches!(
                &got[..],
                [Action::SetBackingNamespace {
                    refusal: Some(BackingRefusal::InvalidName),
                    create_namespace: false,
                    ..
                }]
            ),
            "{got:?}"
        );
        let mut state = world.project(&id).cloned().unwrap_or_default();
        state.backing_not_ready = Some(keys::INVALID_PROJECT_NAME.to_owned());
        world.upsert_project(id, state);
        assert!(backing_namespace_actions(&world).is_empty());
    }
}
